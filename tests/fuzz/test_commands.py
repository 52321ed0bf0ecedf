"""Hypothesis-driven fuzzing of every command: bad option values, tables, masks, boxes, points,
votes and model folders.

Every run must keep the contract of the command-line interface:

- exit code 0 with a correct result, or exit code 2 with exactly one line ``Error: ...`` that
  names the offending option or file (a value click itself cannot parse gets click's usage
  error, which also names the option);
- never a traceback;
- no output file after an error, and no temporary file left next to an output;
- the input files byte for byte unchanged.

The default setting (a few examples per test, derandomised so CI is reproducible) runs in well
under a minute; the ``slow`` tests run the same properties with many more examples.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from crowdmed.cli import app

FAST = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a failure prints its example; no shrinking
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(FAST, max_examples=300)


def both(
    body: Callable[..., None], *strategies: Any
) -> tuple[Callable[..., None], Callable[..., None]]:
    """The property ``body`` over ``strategies``, with the default and the ``slow`` setting."""
    fast = FAST(given(*strategies)(body))
    slow = pytest.mark.slow(SLOW(given(*strategies)(body)))
    return fast, slow


# ---------------------------------------------------------------------- the contract
def digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        if not root.exists():
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A fresh folder that is also the working directory (no file lands in the repository)."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(before)


def run(args: list[Any], *, inputs: list[Path], outputs: list[Path], names: list[str]) -> Any:
    """Run ``crowdmed ARGS`` and check the contract; returns the result."""
    before = digest(inputs)
    result = CliRunner().invoke(app, [str(a) for a in args])
    text = result.output
    assert "Traceback" not in text, text
    assert result.exit_code in (0, 2), (result.exit_code, text, result.exception)
    assert digest(inputs) == before, "an input file changed"
    for out in outputs:  # no temporary file of an output is left behind
        if out.parent.is_dir():
            stray = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
            assert not stray, stray
    if result.exit_code == 2:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        error = [ln for ln in lines if ln.startswith("Error: ")]
        if error:
            assert len(lines) == 1, result.stderr
            assert any(n in error[0] for n in names), (names, error[0])
        else:  # click's own usage error for a value it cannot parse
            assert "Invalid value for" in result.stderr or "Missing" in result.stderr, text
            assert any(n in result.stderr for n in names), (names, result.stderr)
        for out in outputs:
            assert not out.exists() or out in inputs, f"{out} written by a failing run"
    return result


# ---------------------------------------------------------------------- option values
def _commands() -> list[tuple[list[str], Any]]:
    import typer

    found: list[tuple[list[str], Any]] = []

    def walk(c: Any, path: list[str]) -> None:
        if hasattr(c, "commands"):
            for name, sub in c.commands.items():
                walk(sub, [*path, name])
        else:
            found.append((path, c))

    walk(typer.main.get_command(app), [])
    return found


#: Commands that run without any input file: a valid value would start real work.
_NO_INPUTS = {"demo", "serve run"}


def _numeric_options(*, runnable: bool) -> list[tuple[list[str], Any, Any]]:
    out = []
    for path, cmd in _commands():
        if runnable and " ".join(path) in _NO_INPUTS:
            continue
        for p in cmd.params:
            kind = str(p.type_descriptor.annotation)
            if p.param_type_name == "option" and ("int" in kind or "float" in kind):
                out.append((path, cmd, p))
    return out


#: Every numeric option; those of commands that need an input file (safe to run).
ALL_NUMERIC = _numeric_options(runnable=False)
NUMERIC = _numeric_options(runnable=True)

_RANGE = re.compile(
    r"\((?:an integer|a number) (?:from (?P<lo>\S+) to (?P<hi>\S+)|"
    r"(?P<lop>>=?) (?P<lo2>\S+?)(?: and (?P<hip><=?) (?P<hi2>\S+?))?)\)\.?\s*$"
)


def _range(help_text: str) -> Callable[[float], bool] | None:
    """What the help says the option accepts (``None`` when it states no range)."""
    text = " ".join(help_text.split())
    choices = re.search(r"\((\d+) or (\d+)\)\.?\s*$", text)
    if choices:
        allowed = {int(choices.group(1)), int(choices.group(2))}
        return lambda v: v in allowed
    m = _RANGE.search(text)
    if m is None:
        return None
    if m.group("lo") is not None:
        lo, hi = float(m.group("lo")), float(m.group("hi"))
        return lambda v: lo <= v <= hi
    lo = float(m.group("lo2"))
    lo_ok = (lambda v: v > lo) if m.group("lop") == ">" else (lambda v: v >= lo)
    if m.group("hi2") is None:
        return lo_ok
    hi = float(m.group("hi2"))
    hi_ok = (lambda v: v < hi) if m.group("hip") == "<" else (lambda v: v <= hi)
    return lambda v: lo_ok(v) and hi_ok(v)


def test_every_numeric_option_states_its_range() -> None:
    missing = [
        f"{' '.join(path)} {p.opts[0]}"
        for path, _, p in ALL_NUMERIC
        if _range(p.help or "") is None
    ]
    assert not missing, missing
    assert len(ALL_NUMERIC) > 60


@pytest.mark.parametrize(
    ("path", "param"),
    [(path, p) for path, _, p in ALL_NUMERIC],
    ids=[f"{' '.join(path)} {p.opts[0]}" for path, _, p in ALL_NUMERIC],
)
def test_every_numeric_option_refuses_out_of_range(path: list[str], param: Any) -> None:
    option = param.opts[0]
    value = str(10**30) if "int" in str(param.type_descriptor.annotation) else "nan"
    with workdir():
        result = CliRunner().invoke(app, [*path, option, value])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: `{option}` must be "), lines[0]


def _required_args(cmd: Any, root: Path, skip: str) -> list[str]:
    args: list[str] = []
    for p in cmd.params:
        if not p.required or (p.opts and p.opts[0] == skip):
            continue
        kind = str(p.type_descriptor.annotation)
        value = "1" if "int" in kind else str(root / f"missing_{p.name}")
        if p.param_type_name == "argument":
            args.append(value)
        else:
            args += [p.opts[0], value]
    return args


_VALUES = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["0", "-1", "1e30", "nan", "inf", "-inf", "1e-320", "100000000", "0.5"]),
)


def _option_values(data: st.DataObject) -> None:
    path, cmd, param = data.draw(st.sampled_from(NUMERIC), label="option")
    value = data.draw(_VALUES, label="value")
    text = value if isinstance(value, str) else repr(value)
    text = {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(text, text)
    option = param.opts[0]
    with workdir() as root:
        full = " ".join(path)
        if full == "mitosis synthesize":  # give it an --out it refuses (not empty)
            (root / "busy").mkdir()
            (root / "busy" / "x").write_text("x")
            base = ["--out", str(root / "busy")]
        else:
            base = _required_args(cmd, root, option)
        args = [*path, *base, option, text]
        result = run(args, inputs=[], outputs=[], names=[option, "missing_", "busy", "--"])
        assert result.exit_code == 2, result.output  # every required input is missing
        accepts = _range(param.help or "")
        is_int = "int" in str(param.type_descriptor.annotation)
        try:
            number = float(int(text)) if is_int else float(text)
        except ValueError:
            return  # click's parse error, checked by run()
        assert accepts is not None
        if not (np.isfinite(number) and accepts(number)):
            assert f"`{option}` must be" in result.stderr, result.stderr


test_option_values, test_option_values_slow = both(_option_values, st.data())


# ---------------------------------------------------------------------- label tables
_IDS = st.sampled_from(["007", "7", "1", "01", "1.0", "a", " a", "é", "x,y", '"q"', "-1", "nan"])
_LABELS = st.sampled_from(["0", "1", "2", "-1", "", "cat", "0.5", "inf", "nan", "1.0", "01"])


@st.composite
def label_tables(draw: st.DrawFn) -> tuple[str, list[str]]:
    rows = draw(st.lists(st.tuples(_IDS, _IDS, _LABELS), min_size=0, max_size=12))
    header = draw(
        st.sampled_from(["item,annotator,label", "task,worker,label", "item,annotator", "", "a,b"])
    )
    bom = draw(st.booleans())

    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if ("," in v or '"' in v or " " in v) else v

    lines = [header] + [",".join(cell(v) for v in r) for r in rows]
    text = ("\ufeff" if bom else "") + "\n".join(lines) + ("\n" if draw(st.booleans()) else "")
    return text, [r[0] for r in rows]


def _aggregate(table: tuple[str, list[str]], method: str) -> None:
    text, items = table
    with workdir() as root:
        labels = root / "labels.csv"
        labels.write_text(text, encoding="utf-8")
        out, ann = root / "consensus.csv", root / "annotators.csv"
        result = run(
            ["aggregate", labels, "-o", out, "-a", ann, "-m", method],
            inputs=[labels],
            outputs=[out, ann],
            names=["labels.csv", "--", "`"],
        )
        if result.exit_code == 0:
            got = pd.read_csv(out, dtype=str, keep_default_na=False)
            # every consensus item is an item of the input, written as it was
            assert set(got["item"]) <= {i.strip() for i in items} | set(items), got["item"]
            p_cols = [c for c in got.columns if c.startswith("p_")]
            assert "p_-1" not in p_cols
            if p_cols:
                p = got[p_cols].astype(float).to_numpy()
                assert np.all(np.isfinite(p))
                np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)


test_aggregate_tables, test_aggregate_tables_slow = both(
    _aggregate, label_tables(), st.sampled_from(["majority-vote", "dawid-skene"])
)


# ---------------------------------------------------------------------- masks
_MASK_VALUES = st.sampled_from([0, 1, 2, -1, np.nan, np.inf, 0.5, 255])


@st.composite
def mask_sets(draw: st.DrawFn) -> list[np.ndarray]:
    n = draw(st.integers(1, 4))
    shape = draw(st.sampled_from([(3, 3), (4, 5), (1, 1), (2, 2, 2)]))
    masks = []
    for _ in range(n):
        own = shape if draw(st.integers(0, 9)) else (shape[0] + 1, *shape[1:])
        kind = draw(st.sampled_from(["binary", "odd"]))
        if kind == "binary":
            values = draw(st.lists(st.sampled_from([0, 1]), min_size=1, max_size=4))
        else:
            values = draw(st.lists(_MASK_VALUES, min_size=1, max_size=4))
        flat = np.resize(np.asarray(values, dtype=float), int(np.prod(own)))
        masks.append(flat.reshape(own))
    return masks


def _masks(masks: list[np.ndarray], method: str) -> None:
    with workdir() as root:
        files = []
        for i, m in enumerate(masks):
            files.append(root / f"rater{i}.npy")
            arr = m if not np.all(np.isin(m, (0, 1))) else m.astype(np.uint8)
            np.save(files[-1], arr)
        out = root / "consensus.npy"
        result = run(
            ["masks", "consensus", *files, "-o", out, "-m", method],
            inputs=files,
            outputs=[out],
            names=["rater", "--", "`", "mask"],
        )
        if result.exit_code == 0:
            got = np.load(out)
            assert got.shape == masks[0].shape
            assert np.all(np.isfinite(got.astype(float)))


test_mask_sets, test_mask_sets_slow = both(
    _masks, mask_sets(), st.sampled_from(["staple", "majority", "mean"])
)


# ---------------------------------------------------------------------- boxes
_COORD = st.sampled_from(["0", "1", "5", "10", "-4", "1e9", "nan", "inf", "", "x", "2.5"])


@st.composite
def box_tables(draw: st.DrawFn) -> str:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "007", "7", "b"]),
                st.sampled_from(["r1", "r2", "01", "1"]),
                st.sampled_from(["x", "y", "-1", ""]),
                _COORD,
                _COORD,
                _COORD,
                _COORD,
                st.sampled_from(["0.9", "0.1", "nan", "-0.5", "1.5", ""]),
            ),
            min_size=0,
            max_size=8,
        )
    )
    with_score = draw(st.booleans())
    header = "image,reader,label,xmin,ymin,xmax,ymax" + (",score" if with_score else "")
    lines = [header] + [",".join(r if with_score else r[:-1]) for r in rows]
    return "\n".join(lines) + "\n"


def _boxes(text: str) -> None:
    with workdir() as root:
        boxes = root / "boxes.csv"
        boxes.write_text(text, encoding="utf-8")
        out = root / "fused.csv"
        result = run(
            ["boxes", "fuse", boxes, "-o", out],
            inputs=[boxes],
            outputs=[out],
            names=["boxes.csv", "--", "`"],
        )
        if result.exit_code == 0:
            got = pd.read_csv(out)
            coords = [c for c in ("xmin", "ymin", "xmax", "ymax") if c in got.columns]
            values = got[coords].to_numpy(dtype=float)
            assert np.all(np.isfinite(values))
            if len(values):
                assert np.all(values[:, 2] >= values[:, 0])
                assert np.all(values[:, 3] >= values[:, 1])


test_box_tables, test_box_tables_slow = both(_boxes, box_tables())


# ---------------------------------------------------------------------- points
_POINT = st.sampled_from(["0", "10", "-5", "nan", "", "1e12", "x", "3.5"])


@st.composite
def point_tables(draw: st.DrawFn) -> tuple[str, str]:
    def table(score: bool) -> str:
        rows = draw(
            st.lists(
                st.tuples(st.sampled_from(["f1", "007", "7", ""]), _POINT, _POINT),
                max_size=6,
            )
        )
        head = "image,x,y" + (",score" if score else "")
        extra = "," + draw(st.sampled_from(["0.5", "nan", "2", ""])) if score else ""
        return "\n".join([head] + [",".join(r) + extra for r in rows]) + "\n"

    return table(True), table(False)


def _points(tables: tuple[str, str]) -> None:
    cands_text, points_text = tables
    with workdir() as root:
        cands, points = root / "candidates.csv", root / "points.csv"
        cands.write_text(cands_text, encoding="utf-8")
        points.write_text(points_text, encoding="utf-8")
        out = root / "eval.csv"
        result = run(
            ["mitosis", "evaluate", "--candidates", cands, "--points", points, "-o", out],
            inputs=[cands, points],
            outputs=[out, root / "eval.csv.json"],
            names=["candidates.csv", "points.csv", "--", "`"],
        )
        if result.exit_code == 0:
            record = json.loads((root / "eval.csv.json").read_text())
            assert record["crowdmed_version"]
            assert "Traceback" not in out.read_text()
        gold = root / "gold.csv"
        result = run(
            ["crowd", "gold", "--points", points, "--candidates", cands, "--out", gold],
            inputs=[cands, points],
            outputs=[gold],
            names=["candidates.csv", "points.csv", "--", "`", "gold"],
        )
        if result.exit_code == 0:
            pool = pd.read_csv(gold, dtype=str, keep_default_na=False)
            assert set(pool["label"]) <= {"mitosis", "not mitosis"}
            listed = {r.split(",")[0] for t in tables for r in t.splitlines()[1:]}
            assert set(pool["image"]) <= listed


test_point_tables, test_point_tables_slow = both(_points, point_tables())


# ---------------------------------------------------------------------- votes
_VOTE = st.sampled_from(["mitosis", "not mitosis", "1", "0", "", "maybe", "nan"])


@st.composite
def vote_files(draw: st.DrawFn) -> bytes:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["t1", "t2", "t9", "007"]),
                st.sampled_from(["w1", "01", "1", ""]),
                _VOTE,
            ),
            max_size=8,
        )
    )
    header = draw(st.sampled_from(["task,annotator,label", "task,worker,label", "", "a,b,c"]))
    text = "\n".join([header] + [",".join(r) for r in rows])
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 9)) == 0:
        data = b""
    return data


def _votes(data: bytes) -> None:
    with workdir() as root:
        pkg = root / "pkg"
        pkg.mkdir()
        manifest = "task,image,x,y,kind\nt1,f1,10,10,candidate\nt2,f1,20,20,candidate\n"
        (pkg / "manifest.csv").write_text(manifest, encoding="utf-8")
        votes = root / "votes.csv"
        votes.write_bytes(data)
        out = root / "labels.csv"
        run(
            ["crowd", "import", votes, "--package", pkg, "--out", out],
            inputs=[votes, pkg],
            outputs=[out],
            names=["votes.csv", "manifest.csv", "pkg", "--", "`"],
        )


test_vote_files, test_vote_files_slow = both(_votes, vote_files())


# ---------------------------------------------------------------------- model folders
@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    ids = [f"i{k:02d}" for k in range(30)]
    rows = [(ids[k], f"r{a}", int(x[k, 0] > 0)) for k in range(30) for a in range(2)]
    labels = root / "labels.csv"
    pd.DataFrame(rows, columns=["item", "annotator", "label"]).to_csv(labels, index=False)
    np.save(root / "x.npy", x)
    (root / "ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    model = root / "model"
    args = ["train", "classify", "--labels", labels, "--features", root / "x.npy"]
    args += ["--feature-ids", root / "ids.txt", "--out", model, "--epochs", "1"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return {"model": model, "x": root / "x.npy", "ids": root / "ids.txt"}


_JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "two", "images", "features", "classification"]),
    st.lists(st.sampled_from(["a", "b", 0, 1]), max_size=3),
    st.just({}),
)


def _leaves(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        keys = [k for k in obj if k not in ("tensors", "history", "item_ids")]
        return [prefix] + [p for k in keys for p in _leaves(obj[k], (*prefix, k))]
    return [prefix]


def _edit(obj: Any, where: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not where:
        return value
    target = obj
    for k in where[:-1]:
        target = target[k]
    if delete:
        del target[where[-1]]
    else:
        target[where[-1]] = value
    return obj


def _model_folders(data: st.DataObject, paths: dict[str, Path]) -> None:
    import shutil

    name = data.draw(st.sampled_from(["config.json", "data.json", "model.safetensors"]))
    segmentation = "images" in paths
    with workdir() as root:
        model = root / "model"
        shutil.copytree(paths["model"], model)
        target = model / name
        if name == "model.safetensors":
            raw = target.read_bytes()
            cut = data.draw(st.integers(0, len(raw)))
            flip = data.draw(st.booleans())
            target.write_bytes(raw[:cut] + (b"\x00" * 8 if flip else b""))
        else:
            obj = json.loads(target.read_text())
            where = data.draw(st.sampled_from(_leaves(obj)))
            delete = bool(where) and data.draw(st.booleans())
            value = data.draw(_JSON_VALUES)
            obj = _edit(obj, where, value, delete)
            target.write_text(json.dumps(obj), encoding="utf-8")
        if segmentation:
            out = root / "pred"
            result = run(
                ["predict", model, "--images", paths["images"], "-o", out],
                inputs=[model, paths["images"]],
                outputs=[out],
                names=["model", "--", "`"],
            )
            if result.exit_code == 0:
                maps = sorted(p.name for p in out.iterdir() if p.suffix == ".png")
                assert maps == sorted(p.name for p in paths["images"].iterdir())
            return
        out = root / "pred.csv"
        result = run(
            ["predict", model, "--features", paths["x"], "--feature-ids", paths["ids"], "-o", out],
            inputs=[model, paths["x"], paths["ids"]],
            outputs=[out],
            names=["model", "--", "`"],
        )
        if result.exit_code == 0:
            got = pd.read_csv(out)
            p = got[[c for c in got.columns if c.startswith("p_")]].to_numpy(dtype=float)
            assert np.all(np.isfinite(p))
            np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


@FAST
@given(data=st.data())
def test_model_folders(data: st.DataObject, trained_model: dict[str, Path]) -> None:
    _model_folders(data, trained_model)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_model_folders_slow(data: st.DataObject, trained_model: dict[str, Path]) -> None:
    _model_folders(data, trained_model)


# ---------------------------------------------------------------------- candidates to tasks
def _export(tables: tuple[str, str], threshold: str | None) -> None:
    from PIL import Image

    cands_text, _ = tables
    with workdir() as root:
        images = root / "fields"
        images.mkdir()
        for name in ("f1", "007"):
            Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(images / f"{name}.png")
        cands = root / "candidates.csv"
        cands.write_text(cands_text, encoding="utf-8")
        pkg = root / "pkg"
        extra = ["--gold-rate", "0", "--patch-size", "9"]
        extra += [] if threshold is None else ["--threshold", threshold]
        result = run(
            ["crowd", "export", cands, "--images", images, "--out", pkg, *extra],
            inputs=[cands, images],
            outputs=[pkg],
            names=["candidates.csv", "CANDIDATES", "fields", "--", "`"],
        )
        if result.exit_code == 0:
            manifest = pd.read_csv(pkg / "manifest.csv", dtype=str, keep_default_na=False)
            assert len(manifest) <= max(len(cands_text.splitlines()) - 1, 0)
            assert set(manifest["image"]) <= {"f1", "007"}


test_export_candidates, test_export_candidates_slow = both(
    _export, point_tables(), st.sampled_from([None, "0", "0.5", "1"])
)


# ---------------------------------------------------------------------- what to label next
@st.composite
def probability_tables(draw: st.DrawFn) -> str:
    rows = draw(
        st.lists(
            st.tuples(
                _IDS,
                st.sampled_from(["0.2", "0.8", "0", "1", "nan", "-0.1", "1.5", "", "x"]),
            ),
            max_size=8,
        )
    )
    header = draw(st.sampled_from(["item,p_0,p_1", "item,p_a", "a,b"]))
    lines = [header]
    for item, p in rows:
        q = "" if p in ("", "x", "nan") else str(round(1 - float(p), 3))
        lines.append(f"{item},{p},{q}" if header.count(",") == 2 else f"{item},{p}")
    return "\n".join(lines) + "\n"


def _next(table: tuple[str, list[str]], probs_text: str, budget: int) -> None:
    text, _items = table
    with workdir() as root:
        labels, probs = root / "labels.csv", root / "probs.csv"
        labels.write_text(text, encoding="utf-8")
        probs.write_text(probs_text, encoding="utf-8")
        out = root / "next.csv"
        result = run(
            ["next", labels, "--probs", probs, "--budget", budget, "--out", out],
            inputs=[labels, probs],
            outputs=[out],
            names=["labels.csv", "probs.csv", "--", "`"],
        )
        if result.exit_code == 0:
            got = pd.read_csv(out, dtype=str, keep_default_na=False)
            assert len(got) <= budget
            listed = {ln.split(",")[0] for ln in probs_text.splitlines()[1:]}
            assert set(got["item"]) <= listed


test_next_tables, test_next_tables_slow = both(
    _next, label_tables(), probability_tables(), st.integers(1, 5)
)


@pytest.fixture(scope="module")
def segmentation_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from PIL import Image

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("seg")
    yy, xx = np.mgrid[:16, :16]
    for i in range(4):
        disc = ((yy - 6 - i) ** 2 + (xx - 8) ** 2 <= 16).astype(np.uint8)
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(disc * 180 + 30).save(root / "images" / f"c{i}.png")
        for rater in ("r1", "r2"):
            (root / "masks" / rater).mkdir(parents=True, exist_ok=True)
            Image.fromarray(disc).save(root / "masks" / rater / f"c{i}.png")
    model = root / "model"
    args = ["train", "segment", "--images", root / "images", "--masks", root / "masks"]
    args += ["--out", model, "--epochs", "1", "--batch-size", "2", "--unet-channels", "4,8"]
    args += ["--method", "consensus"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return {"model": model, "images": root / "images"}


@FAST
@given(data=st.data())
def test_segmentation_model_folders(
    data: st.DataObject, segmentation_model: dict[str, Path]
) -> None:
    _model_folders(data, segmentation_model)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_segmentation_model_folders_slow(
    data: st.DataObject, segmentation_model: dict[str, Path]
) -> None:
    _model_folders(data, segmentation_model)
