"""The shared epoch loop: seeding, history, best state, early stopping, checkpoints, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crowdmed.training.engine import (
    CheckpointMismatchError,
    Engine,
    TrainTask,
    data_digest,
    read_checkpoint,
)


class LinearTask(TrainTask):
    """Logistic regression on fixed points, with dropout (global RNG) and a numpy draw."""

    name = "linear"

    def __init__(self, lr: float = 0.05, *, fail_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(97, 3, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.lr = lr
        self.fail_at = fail_at
        self.draws: list[float] = []

    def setup(self, engine: Engine) -> None:
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.2), nn.Linear(8, 2))
        self.net.to(engine.device)
        self.model = engine.wrap(self.net)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.net}

    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt

    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "data": data_digest(self.x, self.y)}

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        if self.fail_at is not None and epoch == self.fail_at:
            raise KeyboardInterrupt
        self.draws.append(float(engine.rng.random()))
        return len(self.x)

    def train_batch(self, idx: torch.Tensor, engine: Engine) -> Any:
        xb, yb = self.x[idx].to(engine.device), self.y[idx].to(engine.device)
        logits = self.model(xb)
        loss = F.cross_entropy(logits, yb)
        return loss, {"accuracy": float((logits.argmax(1) == yb).float().mean())}

    def validate(self, engine: Engine) -> dict[str, float]:
        self.net.eval()
        with torch.no_grad():
            pred = self.net(self.x.to(engine.device)).argmax(1)
            acc = (pred == self.y.to(engine.device)).float().mean()
        return {"val_accuracy": float(acc)}


def _weights(task: LinearTask) -> list[torch.Tensor]:
    return [p.detach().clone() for p in task.net.parameters()]


def test_same_seed_same_run_and_history_records() -> None:
    runs = []
    for _ in range(2):
        task = LinearTask()
        res = Engine(epochs=3, batch_size=16, seed=3).fit(task)
        runs.append((res, _weights(task)))
    (r1, w1), (r2, w2) = runs
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert [h["epoch"] for h in r1.history] == [1, 2, 3]
    assert set(r1.history[0]) == {"epoch", "loss", "accuracy", "val_accuracy", "seconds"}
    # 97 items in batches of 16: the last single item joins the previous batch -> 6 steps
    assert r1.step == 3 * 6
    assert r1.history[-1]["loss"] < r1.history[0]["loss"]


def test_other_seed_other_run() -> None:
    a, b = LinearTask(), LinearTask()
    ra = Engine(epochs=2, batch_size=16, seed=0).fit(a)
    rb = Engine(epochs=2, batch_size=16, seed=1).fit(b)
    assert ra.history[0]["loss"] != rb.history[0]["loss"]


def test_global_rng_untouched() -> None:
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    Engine(epochs=1, batch_size=32, seed=0).fit(LinearTask())
    assert torch.equal(before, torch.get_rng_state())
    assert np.array_equal(np_before, np.random.get_state()[1])


class ScoreTask(LinearTask):
    """Scores follow a fixed list, to check best-state tracking and patience."""

    scores = (0.1, 0.5, 0.3, 0.2, 0.4, 0.9)

    def score(self, record: dict[str, float]) -> float:
        return self.scores[int(record["epoch"]) - 1]


def test_best_state_and_early_stopping() -> None:
    task = ScoreTask()
    best: list[torch.Tensor] = []

    def keep(epoch: int, epochs: int, record: dict[str, float]) -> None:
        if epoch == 2:
            best[:] = _weights(task)

    res = Engine(epochs=6, batch_size=16, patience=3, progress=keep).fit(task)
    assert len(res.history) == 5  # epochs 3, 4, 5 without a better score than epoch 2
    assert res.best_epoch == 2
    assert res.stopped_early
    assert all(torch.equal(a, b) for a, b in zip(best, _weights(task), strict=True))


def test_patience_none_keeps_last() -> None:
    task = ScoreTask()
    res = Engine(epochs=3, batch_size=16, patience=None).fit(task)
    assert res.best_epoch == 3
    assert not res.stopped_early


def test_exact_resume_after_interruption(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck.safetensors"
    full_task = LinearTask()
    full = Engine(epochs=5, batch_size=16, seed=2, patience=4).fit(full_task)

    broken = LinearTask(fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        Engine(epochs=5, batch_size=16, seed=2, patience=4, checkpoint=ckpt).fit(broken)
    meta, _ = read_checkpoint(ckpt)
    assert len(meta["history"]) == 3

    resumed_task = LinearTask()
    resumed = Engine(epochs=5, batch_size=16, seed=2, patience=4, checkpoint=ckpt).fit(resumed_task)
    assert resumed.start_epoch == 3
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history] == strip
    assert all(
        torch.equal(a, b) for a, b in zip(_weights(full_task), _weights(resumed_task), strict=True)
    )
    # the numpy generator continued where it stopped
    assert resumed_task.draws == full_task.draws[3:]
    assert resumed.step == full.step


def test_resume_more_epochs_and_refuse_changed_settings(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck.safetensors"
    Engine(epochs=2, batch_size=16, checkpoint=ckpt).fit(LinearTask())
    more = Engine(epochs=3, batch_size=16, checkpoint=ckpt).fit(LinearTask())
    assert more.start_epoch == 2
    assert len(more.history) == 3
    with pytest.raises(CheckpointMismatchError, match=r"changed: \['lr'\]") as info:
        Engine(epochs=3, batch_size=16, checkpoint=ckpt).fit(LinearTask(lr=0.1))
    assert info.value.changed == ["lr"]
    with pytest.raises(CheckpointMismatchError, match=r"changed: \['batch_size'\]"):
        Engine(epochs=3, batch_size=8, checkpoint=ckpt).fit(LinearTask())
    fresh = Engine(epochs=1, batch_size=8, checkpoint=ckpt, resume=False).fit(LinearTask())
    assert fresh.start_epoch == 0


def test_corrupt_checkpoint_is_one_line_error(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck.safetensors"
    ckpt.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match=r"Cannot read checkpoint '.*ck\.safetensors'") as info:
        Engine(epochs=1, batch_size=16, checkpoint=ckpt).fit(LinearTask())
    assert "\n" not in str(info.value)


def test_numpy_shuffle_and_batches_loss_average() -> None:
    task = LinearTask()
    res = Engine(
        epochs=1, batch_size=48, shuffle="numpy", join_single=False, loss_average="batches"
    ).fit(task)
    assert res.step == 3  # 48 + 48 + 1: the single item is not joined


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0, "batch_size": 1}, r"`epochs` must be a positive integer; got 0"),
        ({"epochs": 1, "batch_size": 1, "patience": 0}, r"`patience` must be"),
        ({"epochs": 1, "batch_size": 1, "shuffle": "random"}, r"`shuffle` must be"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Engine(**kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_and_resume(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck.safetensors"
    straight = LinearTask()
    full = Engine(epochs=3, batch_size=16, device="cuda").fit(straight)
    assert next(straight.net.parameters()).device.type == "cuda"
    with pytest.raises(KeyboardInterrupt):
        Engine(epochs=3, batch_size=16, device="cuda", checkpoint=ckpt).fit(LinearTask(fail_at=2))
    resumed = Engine(epochs=3, batch_size=16, device="cuda", checkpoint=ckpt).fit(LinearTask())
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def test_engine_fits_twice_the_same_way() -> None:
    engine = Engine(epochs=2, batch_size=16, seed=4)
    first, second = LinearTask(), LinearTask()
    a, b = engine.fit(first), engine.fit(second)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert first.draws == second.draws


# ---------------------------------------------------------------------- finite training
class NaNTask(LinearTask):
    """LinearTask whose loss is NaN from batch ``nan_batch`` of epoch ``nan_epoch`` (0-based)."""

    def __init__(self, nan_epoch: int, nan_batch: int = 2) -> None:
        super().__init__()
        self.nan_epoch, self.nan_batch = nan_epoch, nan_batch
        self._epoch = -1
        self._batch = 0

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        self._epoch, self._batch = epoch, 0
        return super().epoch_items(epoch, engine)

    def train_batch(self, idx: torch.Tensor, engine: Engine) -> Any:
        loss, extras = super().train_batch(idx, engine)
        self._batch += 1
        if self._epoch == self.nan_epoch and self._batch >= self.nan_batch:
            loss = loss * float("nan")
        return loss, extras


def test_nan_loss_stops_before_the_step_and_keeps_the_last_finite_checkpoint(
    tmp_path: Path,
) -> None:
    from crowdmed.training.engine import NonFiniteLossError

    ckpt = tmp_path / "ckpt.safetensors"
    task = NaNTask(nan_epoch=1, nan_batch=3)
    with pytest.raises(NonFiniteLossError, match=r"loss became NaN at epoch 2 step 3") as info:
        Engine(epochs=4, batch_size=16, seed=0, checkpoint=ckpt).fit(task)
    assert (info.value.epoch, info.value.step, info.value.lr) == (2, 3, 0.05)
    assert info.value.checkpoint == ckpt
    assert all(bool(torch.isfinite(p).all()) for p in task.net.parameters())
    meta, tensors = read_checkpoint(ckpt)
    assert len(meta["history"]) == 1  # the finished, finite epoch
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def test_nan_weights_after_an_epoch_are_never_checkpointed(tmp_path: Path) -> None:
    from crowdmed.training.engine import NonFiniteLossError

    class PoisonTask(LinearTask):
        def end_epoch(self, epoch: int, engine: Engine) -> dict[str, float]:
            if epoch == 1:
                with torch.no_grad():
                    self.net[0].weight[0, 0] = float("inf")
            return {}

    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(NonFiniteLossError, match=r"weights became inf after epoch 2"):
        Engine(epochs=3, batch_size=32, seed=0, checkpoint=ckpt).fit(PoisonTask())
    assert len(read_checkpoint(ckpt)[0]["history"]) == 1


def test_resume_with_fewer_epochs_than_the_checkpoint_is_refused(tmp_path: Path) -> None:
    from crowdmed.training.engine import CheckpointEpochsError

    ckpt = tmp_path / "ckpt.safetensors"
    Engine(epochs=3, batch_size=32, seed=0, checkpoint=ckpt).fit(LinearTask())
    with pytest.raises(CheckpointEpochsError, match=r"holds 3 finished epochs, more than") as info:
        Engine(epochs=2, batch_size=32, seed=0, checkpoint=ckpt).fit(LinearTask())
    assert (info.value.epochs_done, info.value.epochs) == (3, 2)
    res = Engine(epochs=3, batch_size=32, seed=0, checkpoint=ckpt).fit(LinearTask())
    assert len(res.history) == 3


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("history"),
        lambda m: m.__setitem__("best_epoch", "x"),
        lambda m: m.__setitem__("best_epoch", 99),
        lambda m: m.__setitem__("config", [1]),
        lambda m: m.__setitem__("optimizer", {}),
    ],
)
def test_checkpoint_with_changed_state_is_one_value_error(tmp_path: Path, change: Any) -> None:
    import json

    from safetensors.torch import save_file

    ckpt = tmp_path / "ckpt.safetensors"
    Engine(epochs=1, batch_size=32, seed=0, checkpoint=ckpt).fit(LinearTask())
    meta, tensors = read_checkpoint(ckpt)
    change(meta)
    save_file(tensors, str(ckpt), metadata={"crowdmed_checkpoint": json.dumps(meta)})
    with pytest.raises(ValueError, match=r"ckpt\.safetensors") as info:
        Engine(epochs=2, batch_size=32, seed=0, checkpoint=ckpt).fit(LinearTask())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("backend", "barrier_fails", "calls"),
    [
        ("gloo", False, ["barrier", "destroy"]),
        ("gloo", True, ["barrier", "destroy"]),  # a rank that stopped early: destroy anyway
        ("nccl", False, ["destroy"]),
    ],
)
def test_exit_hook_meets_at_a_barrier_before_destroying_a_gloo_group(
    monkeypatch: pytest.MonkeyPatch, backend: str, barrier_fails: bool, calls: list[str]
) -> None:
    from crowdmed.training import engine as engine_module

    dist = torch.distributed
    seen: list[str] = []

    def barrier(timeout: Any = None) -> None:
        seen.append("barrier")
        assert timeout is not None  # bounded: never waits for a dead rank forever
        if barrier_fails:
            raise RuntimeError("rank 1 failed to pass monitoredBarrier")

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: backend)
    monkeypatch.setattr(dist, "monitored_barrier", barrier)
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: seen.append("destroy"))
    engine_module._destroy_group()
    assert seen == calls
