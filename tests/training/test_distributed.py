"""The training engine under torchrun: 2 CPU processes with gloo on a tiny crowd problem."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
if not torch.distributed.is_available():  # pragma: no cover - depends on the torch build
    pytest.skip("torch.distributed is not available", allow_module_level=True)

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import numpy as np
    import torch

    from crowdmed.nn import mlp_head
    from crowdmed.training import CrowdClassifier, Engine, TrainTask

    out = Path(sys.argv[1])
    rank = int(os.environ["RANK"])

    # 1) which items each rank trains on in one epoch
    class Record(TrainTask):
        def setup(self, engine):
            self.net = torch.nn.Linear(1, 1)
            self.model = engine.wrap(self.net)
            self.opt = torch.optim.SGD(self.net.parameters(), lr=0.0)
            self.seen = []

        def modules(self):
            return {"network": self.net}

        def optimizer(self):
            return self.opt

        def epoch_items(self, epoch, engine):
            return 101

        def train_batch(self, idx, engine):
            self.seen += idx.tolist()
            return self.model(torch.zeros(len(idx), 1)).sum() * 0.0

    task = Record()
    Engine(epochs=1, batch_size=8, seed=0).fit(task)

    # 2) a crowd-layer classifier on 2-D points with simulated annotators
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    truth = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    acc = np.array([0.9, 0.8, 0.65])
    right = rng.random((400, 3)) < acc
    labels = np.where(right, truth[:, None], 1 - truth[:, None])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = mlp_head(2, 2, hidden=16, dropout=0.1)
    clf = CrowdClassifier(
        net, method="crowd-layer-mw", epochs=6, batch_size=32, lr=0.03, patience=None,
        progress=False, random_state=0, checkpoint_dir=out / "checkpoint",
    )
    clf.fit(x, labels)
    clf.save(out / "model")  # written by rank 0 only
    probe = np.array([[1.0, 1.0], [-1.0, -1.0], [0.5, -0.2]], np.float32)

    # 3) DL-EM: the epoch's M-step gathers the posteriors of both ranks
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = mlp_head(2, 2, hidden=16, dropout=0.1)
    em = CrowdClassifier(
        net, method="dl-em", epochs=3, batch_size=32, lr=0.03, patience=None, progress=False
    ).fit(x, labels)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "em_confusion": em.annotator_confusion_.tolist(),
        "seen": task.seen,
        "world": int(os.environ["WORLD_SIZE"]),
        "history": clf.history_,
        "proba": clf.predict_proba(probe).tolist(),
        "accuracy": float((clf.predict(x) == truth).mean()),
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(script),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    done = all((tmp_path / f"rank{r}.json").is_file() for r in (0, 1))
    if proc.returncode != 0 and done and "terminate called without" in proc.stderr:
        # gloo can abort a rank while the process exits, after the script finished (seen in
        # 1 of 65 runs on 2 cores before the engine met at a barrier before destroying the
        # group, 0 of 100 since). One more run tells that apart from a training failure.
        cmd[cmd.index("--master_port") + 1] = str(_free_port())
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in runs] == [2, 2]

    # every item once, split between the ranks (101 items: one repeated to make 51 + 51)
    seen0, seen1 = runs[0]["seen"], runs[1]["seen"]
    assert len(seen0) == len(seen1) == 51
    assert set(seen0) | set(seen1) == set(range(101))
    assert len(set(seen0) & set(seen1)) <= 1

    # metrics reduced over ranks, weights kept in sync, the loss falls and the model learns
    assert runs[0]["history"] == [
        {**h, "seconds": runs[0]["history"][i]["seconds"]} for i, h in enumerate(runs[1]["history"])
    ]
    np.testing.assert_allclose(runs[0]["proba"], runs[1]["proba"], atol=1e-6)
    losses = [h["loss"] for h in runs[0]["history"]]
    assert losses[-1] < 0.8 * losses[0]
    assert runs[0]["accuracy"] > 0.9
    # the same EM estimate on both ranks, close to the simulated accuracies 0.9, 0.8, 0.65
    np.testing.assert_allclose(runs[0]["em_confusion"], runs[1]["em_confusion"], atol=1e-6)
    diag = np.asarray(runs[0]["em_confusion"])[:, [0, 1], [0, 1]].mean(1)
    np.testing.assert_allclose(diag, [0.9, 0.8, 0.65], atol=0.08)

    # rank 0 wrote the checkpoint and the model; it loads and predicts as trained
    assert (tmp_path / "checkpoint" / "checkpoint.safetensors").is_file()
    from crowdmed.training import CrowdClassifier, load_model

    model = load_model(tmp_path / "model", device="cpu")
    assert isinstance(model, CrowdClassifier)
    probe = np.array([[1.0, 1.0], [-1.0, -1.0], [0.5, -0.2]], np.float32)
    np.testing.assert_allclose(model.predict_proba(probe), runs[0]["proba"], atol=1e-6)
    assert model.predict(probe)[:2].tolist() == [1, 0]
    assert len(model.history_) == 6
