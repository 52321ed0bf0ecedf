"""Load test of ``crowdmed serve``: concurrent annotators voting over HTTP on loopback.

A study of ``--items`` tiny images (``--labels`` labels wanted each, a 5-question quiz with pass
mark 0 so every simulated annotator passes, 10 % hidden gold) is served by uvicorn in a child
process, exactly as ``crowdmed serve STUDY`` serves it. ``--annotators`` simulated annotators
(one asyncio task and one HTTP connection each, bearer-token API) ask for their next item and
vote until ``--votes`` votes are acknowledged. 2 % of votes are sent twice with the same vote id
(a client retry); a vote whose request fails is retried with the same id until acknowledged.

Checks, on every run: every acknowledged vote is in the database exactly once, the database
holds no vote that was never acknowledged, no annotator labelled an item twice, and each
retried vote was answered ``duplicate``. The crash run kills the server with SIGKILL after
``--kill-after`` acknowledged votes, starts it again on the same study and port, and the
annotators carry on (retrying the votes in flight).

Runs: SQLite (the default storage) and, when ``CROWDMED_TEST_DATABASE_URL`` or ``--database``
names a PostgreSQL database, PostgreSQL; each without and with the SIGKILL restart.

Usage::

    python benchmarks/serve_load.py [--votes 10000] [--annotators 50] [--quick]

Writes the ``serve_load`` section of ``BENCHMARKS.md`` and ``benchmarks/results/serve_load.json``;
``--quick`` (1,000 votes, 20 annotators) only prints. The submission latency is the time of one
``POST /api/votes`` as the client sees it (client and server share the machine's cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

SERVER = (
    "import sys, uvicorn\n"
    "from crowdmed.crowdsourcing.server import create_app, open_study\n"
    "study = open_study(sys.argv[1], database_url=sys.argv[3] or None)\n"
    "uvicorn.run(create_app(study), host='127.0.0.1', port=int(sys.argv[2]),\n"
    "            log_level='error', access_log=False)\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_study(
    folder: Path,
    *,
    n_items: int,
    labels_per_item: int,
    n_annotators: int,
    database_url: str | None,
) -> tuple[Path, list[str]]:
    """A binary study of ``n_items`` 8x8 PNGs (10 % gold); returns its folder and the tokens."""
    import pandas as pd
    from PIL import Image

    from crowdmed.crowdsourcing.server import study_from_images

    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n_items):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            images / f"i{i:05d}.png"
        )
    n_gold = max(5, n_items // 10)
    gold = pd.DataFrame(
        {"item": [f"i{i:05d}" for i in range(n_gold)], "label": np.arange(n_gold) % 2}
    )
    study, _ = study_from_images(
        images,
        folder / "study",
        classes=["no", "yes"],
        kind="binary",
        gold=gold,
        quiz_size=5,
        pass_mark=0.0,
        gold_share=0.1,
        labels_per_item=labels_per_item,
        database_url=database_url,
    )
    tokens = list(study.invite([f"sim-{i:03d}" for i in range(n_annotators)]).values())
    study.close()
    return folder / "study", tokens


class Server:
    """``crowdmed serve`` in a child process (uvicorn, one worker)."""

    def __init__(self, study: Path, port: int, database_url: str | None) -> None:
        self.study, self.port, self.database_url = study, port, database_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(self.study), str(self.port), self.database_url or ""]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    raise RuntimeError(f"the server exited with code {code}") from None
                time.sleep(0.05)
        raise RuntimeError("the server did not start in time")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _load(
    base_url: str,
    tokens: list[str],
    n_votes: int,
    *,
    duplicate_rate: float,
    kill_after: int | None,
    server: Server | None,
    seed: int,
    think: float,
) -> dict[str, Any]:
    import httpx

    acked: dict[str, tuple[str, str, int]] = {}  # vote id -> (token, item key, label)
    latencies: list[float] = []
    claimed = 0
    errors: dict[str, int] = {}
    duplicates_sent = 0
    duplicates_ok = 0
    restart: dict[str, float] = {}
    killing = asyncio.Lock()
    rng = random.Random(seed)

    def note(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def crash_and_restart() -> None:
        async with killing:
            if restart or server is None:
                return
            t0 = time.perf_counter()
            restart["acked_at_kill"] = len(acked)
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            restart["seconds"] = time.perf_counter() - t0

    async def annotator(token: str) -> None:
        nonlocal claimed, duplicates_sent, duplicates_ok
        limits = httpx.Limits(max_connections=1)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=30.0, limits=limits
        ) as client:
            pending: dict[str, Any] | None = None
            item: dict[str, Any] | None = None  # the next item, from the last acknowledgement
            while True:
                try:
                    if pending is None:
                        if think > 0:  # the annotator looks at the image
                            await asyncio.sleep(rng.expovariate(1.0 / think))
                        if claimed >= n_votes:
                            return
                        if item is None:
                            r = await client.get("/api/next")
                            if r.status_code != 200:
                                note(f"next {r.status_code}")
                                await asyncio.sleep(0.05)
                                continue
                            item = r.json()["item"]
                            if item is None:
                                return
                        if claimed >= n_votes:
                            return
                        claimed += 1
                        pending = {
                            "item": item["key"],
                            "label": rng.randrange(2),
                            "vote_id": uuid.uuid4().hex,
                        }
                    t0 = time.perf_counter()
                    r = await client.post("/api/votes", json=pending)
                    dt = time.perf_counter() - t0
                    if r.status_code != 200:
                        note(f"vote {r.status_code}: {r.json().get('detail', '')[:60]}")
                        pending = item = None
                        continue
                    latencies.append(dt)
                    acked[pending["vote_id"]] = (token, pending["item"], pending["label"])
                    item = r.json()["next"]["item"]
                    vote, pending = pending, None
                    if rng.random() < duplicate_rate:
                        duplicates_sent += 1
                        while True:  # a client retry of an acknowledged vote
                            try:
                                again = await client.post("/api/votes", json=vote)
                                break
                            except httpx.TransportError:
                                await asyncio.sleep(0.05)
                        duplicates_ok += again.json().get("status") == "duplicate"
                    if kill_after is not None and len(acked) >= kill_after and not restart:
                        asyncio.get_running_loop().create_task(crash_and_restart())
                    if item is None:
                        return
                except httpx.TransportError:
                    note("connection")  # the server is down: retry the same vote id
                    await asyncio.sleep(0.05)

    t_start = time.perf_counter()
    await asyncio.gather(*(annotator(t) for t in tokens))
    wall = time.perf_counter() - t_start
    lat = np.asarray(latencies) * 1000
    return {
        "acked": acked,
        "wall_seconds": wall,
        "votes_per_second": len(acked) / wall,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        },
        "errors": errors,
        "duplicates_sent": duplicates_sent,
        "duplicates_answered_duplicate": duplicates_ok,
        "restart": restart,
    }


def verify(study_path: Path, result: dict[str, Any], database_url: str | None) -> dict[str, Any]:
    """Compare the acknowledged votes with the database."""
    from crowdmed.crowdsourcing.server import open_study

    study = open_study(study_path, database_url=database_url)
    try:
        stored = study.storage.votes()
    finally:
        study.close()
    ids = [v["vote_id"] for v in stored]
    acked = result["acked"]
    pairs = [(v["annotator"], v["item"]) for v in stored]
    return {
        "acknowledged": len(acked),
        "stored": len(stored),
        "missing": len(set(acked) - set(ids)),
        "unacknowledged_stored": len(set(ids) - set(acked)),
        "stored_twice": len(ids) - len(set(ids)),
        "item_twice_by_annotator": len(pairs) - len(set(pairs)),
    }


def run(
    *,
    n_votes: int,
    n_annotators: int,
    labels_per_item: int = 5,
    database_url: str | None = None,
    kill_after: int | None = None,
    duplicate_rate: float = 0.02,
    think: float = 0.0,
    seed: int = 0,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """One load run; returns the figures and the checks (``ok`` is True when all hold)."""
    n_items = int(np.ceil(n_votes * 1.2 / labels_per_item)) + 10
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        if database_url:
            from crowdmed.crowdsourcing.server.storage import Storage

            s = Storage(database_url)
            s.drop_schema()
            s.close()
        study, tokens = make_study(
            Path(tmp),
            n_items=n_items,
            labels_per_item=labels_per_item,
            n_annotators=n_annotators,
            database_url=database_url,
        )
        server = Server(study, free_port(), database_url)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_before = time.process_time()
        server.start()
        try:
            res = asyncio.run(
                _load(
                    f"http://127.0.0.1:{server.port}",
                    tokens,
                    n_votes,
                    duplicate_rate=duplicate_rate,
                    kill_after=kill_after,
                    server=server,
                    seed=seed,
                    think=think,
                )
            )
        finally:
            server.stop()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        res["server_cpu_seconds"] = (children.ru_utime - children_before.ru_utime) + (
            children.ru_stime - children_before.ru_stime
        )
        res["client_cpu_seconds"] = time.process_time() - client_before
        checks = verify(study, res, database_url)
        if database_url:
            from crowdmed.crowdsourcing.server.storage import Storage

            s = Storage(database_url)
            s.drop_schema()
            s.close()
    res.pop("acked")
    res["checks"] = checks
    res["ok"] = (
        checks["missing"] == 0
        and checks["unacknowledged_stored"] == 0
        and checks["stored_twice"] == 0
        and checks["item_twice_by_annotator"] == 0
        and checks["stored"] == checks["acknowledged"]
        and res["duplicates_sent"] == res["duplicates_answered_duplicate"]
        and (kill_after is None or bool(res["restart"]))
    )
    res.update(
        votes=n_votes,
        annotators=n_annotators,
        items=n_items,
        database="postgresql" if database_url else "sqlite",
        sigkill=kill_after is not None,
        think_seconds=think,
        load_at_start=load_at_start,
    )
    return res


def markdown(runs: list[dict[str, Any]], machine: str) -> str:
    lines = [
        "## Annotation server under load (`crowdmed serve`)",
        "",
        "`python benchmarks/serve_load.py`: simulated annotators vote over HTTP on loopback "
        "against `crowdmed serve` (uvicorn, one process) while the load generator runs on the "
        "same two cores. Each annotator looks at an item for a random time (exponential, mean "
        "*think*) before voting; *think* = 0 is the saturation run (every annotator votes as "
        "fast as the server answers). 2 % of votes are re-sent with the same vote id; in the "
        "SIGKILL runs the server is killed mid-load and restarted on the same study, and the "
        "annotators retry the votes in flight.",
        "",
        "| database | think (s) | SIGKILL + restart | annotators | votes acknowledged | "
        "votes/s | p50 ms | p95 ms | p99 ms | server CPU ms/vote | stored exactly once | "
        "missing after restart |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in runs:
        c = r["checks"]
        kill = (
            f"yes, after {r['restart']['acked_at_kill']:,} ({r['restart']['seconds']:.1f} s down)"
            if r["sigkill"]
            else "no"
        )
        lines.append(
            f"| {r['database']} | {r['think_seconds']:g} | {kill} | {r['annotators']} | "
            f"{c['acknowledged']:,} | {r['votes_per_second']:.0f} | "
            f"{r['latency_ms']['p50']:.1f} | {r['latency_ms']['p95']:.1f} | "
            f"{r['latency_ms']['p99']:.1f} | "
            f"{1000 * r['server_cpu_seconds'] / c['acknowledged']:.2f} | "
            f"{'yes' if r['ok'] else 'NO'} "
            f"({c['stored']:,} stored) | {c['missing']} |"
        )
    lines += [
        "",
        "- Votes/s counts acknowledged votes over the whole run (each vote is one `POST "
        "/api/votes`, whose answer carries the next item). Latency is one `POST /api/votes` "
        "as the client sees it; in the saturation run it is mostly queueing (50 clients wait "
        "on one server process). SQLite runs in WAL mode with `synchronous=NORMAL` (an "
        "acknowledged vote is in the write-ahead log and survives a killed server); "
        "PostgreSQL with its defaults.",
        "- Server CPU is the server process's user + system time per acknowledged vote (both "
        "processes in the SIGKILL runs, start-up included); unlike votes/s it does not depend on "
        "what else the machine runs.",
        "- Checks on every run: each acknowledged vote is stored exactly once, nothing "
        "unacknowledged is stored, no annotator labelled an item twice, every re-sent vote was "
        "answered `duplicate`.",
        "",
        "Load averages (1 min) at the start of the runs, in table order: "
        + ", ".join(f"{r['load_at_start']:.1f}" for r in runs)
        + " (other work shared the two cores).",
        "",
        machine,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=10_000)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--labels", type=int, default=5)
    parser.add_argument("--kill-after", type=float, default=0.4, help="share of --votes")
    parser.add_argument("--think", type=float, default=0.25, help="mean seconds per item")
    parser.add_argument("--database", default=os.environ.get("CROWDMED_TEST_DATABASE_URL"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.votes, args.annotators = 1_000, 20
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import machine_line, update_section, write_json

    runs = []
    plan = [(None, args.think, False), (None, args.think, True)]
    if args.database:
        plan += [(args.database, args.think, False), (args.database, args.think, True)]
    plan.append((None, 0.0, False))
    for url, think, kill in plan:
        r = run(
            n_votes=args.votes,
            n_annotators=args.annotators,
            labels_per_item=args.labels,
            database_url=url,
            kill_after=int(args.votes * args.kill_after) if kill else None,
            think=think,
        )
        print(
            f"{r['database']:10s} think={think:g} kill={kill!s:5s} ok={r['ok']} "
            f"{r['votes_per_second']:.0f} votes/s p95={r['latency_ms']['p95']:.1f} ms "
            f"checks={r['checks']} errors={r['errors']}",
            flush=True,
        )
        runs.append(r)
    md = markdown(runs, machine_line())
    print(md)
    if not args.quick:
        record = {**vars(args), "database": "postgresql" if args.database else None}
        write_json("benchmarks/results/serve_load.json", {"args": record, "runs": runs})
        update_section("serve_load", md)
    if not all(r["ok"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
