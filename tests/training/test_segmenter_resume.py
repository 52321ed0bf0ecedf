"""CrowdSegmenter checkpoints: exact resume, refusal of other runs, early stopping is final."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
monai_nets = pytest.importorskip("monai.networks.nets")
PIL_Image = pytest.importorskip("PIL.Image")

from typer.testing import CliRunner  # noqa: E402

from crowdmed.cli import app  # noqa: E402
from crowdmed.training import CrowdSegmenter  # noqa: E402
from crowdmed.training.engine import Engine  # noqa: E402

SIZE = 16


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _toy(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Discs on noise; three raters (one dilated, one eroded, one skipping image 0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:SIZE, :SIZE]
    images = np.zeros((n, 1, SIZE, SIZE), np.float32)
    truth = np.zeros((n, SIZE, SIZE), np.int64)
    raters = np.zeros((n, 3, SIZE, SIZE), np.int64)
    for i in range(n):
        cy, cx = rng.integers(5, SIZE - 5, 2)
        r = int(rng.integers(3, 5))
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        truth[i] = d2 <= r * r
        raters[i, 0] = truth[i]
        raters[i, 1] = d2 <= (r + 1) ** 2
        raters[i, 2] = d2 <= (r - 1) ** 2
        images[i, 0] = truth[i] * 0.7 + rng.normal(0, 0.15, (SIZE, SIZE))
    raters[0, 2] = -1
    return np.clip(images, 0, 1), truth, raters


def _net() -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return monai_nets.UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)


def _augment(x: Any, m: Any) -> tuple[Any, Any]:
    """Random flips drawn from torch's global RNG (forked and seeded by the fit)."""
    if bool(torch.rand(()) < 0.5):
        x, m = x.flip(-1), m.flip(-1)
    if bool(torch.rand(()) < 0.5):
        x, m = x.flip(-2), m.flip(-2)
    return x, m


def _kwargs(**over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "method": "reweight-gaf",
        "batch_size": 3,
        "lr": 1e-2,
        "k_every": 2,  # the re-weighting schedule step crosses the interruption
        "patience": 10,
        "augment": _augment,
        "random_state": 3,
    }
    kw.update(over)
    return kw


def _strip(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _weights(seg: CrowdSegmenter) -> list[np.ndarray]:
    mods = [seg.network] + ([seg.weighting_network_] if seg.weighting_network_ else [])
    return [t.detach().numpy().copy() for m in mods for t in m.state_dict().values()]


class _Interrupt:
    """Progress hook raising KeyboardInterrupt after an epoch (its checkpoint is written)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls: list[int] = []

    def __call__(self, epoch: int, total: int, record: dict[str, float]) -> None:
        self.calls.append(epoch)
        if epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["interrupt", "extend"])
def test_resume_is_exact(tmp_path: Path, how: str) -> None:
    images, truth, raters = _toy()
    val = {"X_val": images[:3], "y_val": truth[:3]}
    n_epochs = 5
    straight = CrowdSegmenter(_net(), epochs=n_epochs, **_kwargs()).fit(images, raters, **val)

    if how == "interrupt":
        hook = _Interrupt(at=2)
        first = CrowdSegmenter(
            _net(), epochs=n_epochs, checkpoint_dir=tmp_path, progress=hook, **_kwargs()
        )
        with pytest.raises(KeyboardInterrupt):
            first.fit(images, raters, **val)
        assert hook.calls == [1, 2]
    else:
        CrowdSegmenter(_net(), epochs=2, checkpoint_dir=tmp_path, **_kwargs()).fit(
            images, raters, **val
        )
    assert (tmp_path / "checkpoint.safetensors").is_file()
    assert not [
        p for p in tmp_path.iterdir() if p.name != "checkpoint.safetensors"
    ]  # no temp files

    calls: list[int] = []
    torch_before, np_before = torch.get_rng_state(), np.random.get_state()
    resumed = CrowdSegmenter(
        _net(),
        epochs=n_epochs,
        checkpoint_dir=tmp_path,
        progress=lambda e, n, r: calls.append(e),
        **_kwargs(),
    ).fit(images, raters, **val)
    assert calls == [3, 4, 5]
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert np.random.get_state()[1].tolist() == np_before[1].tolist()

    assert _strip(resumed.history_) == _strip(straight.history_)
    assert [h["k"] for h in resumed.history_][-1] > 0  # the weighting network was in play
    assert resumed.best_epoch_ == straight.best_epoch_
    assert resumed.stopped_early_ == straight.stopped_early_
    for a, b in zip(_weights(resumed), _weights(straight), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    np.testing.assert_allclose(
        resumed.predict_proba(images), straight.predict_proba(images), atol=1e-6
    )


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    images, _, raters = _toy()
    kw = _kwargs(method="consensus", augment=None)
    CrowdSegmenter(_net(), epochs=1, checkpoint_dir=tmp_path, **kw).fit(images, raters)
    stamp = (tmp_path / "checkpoint.safetensors").stat().st_mtime_ns

    other = CrowdSegmenter(_net(), epochs=2, checkpoint_dir=tmp_path, **{**kw, "lr": 0.5})
    with pytest.raises(ValueError, match=r"changed: \['lr'\]\); delete the folder, pass resume"):
        other.fit(images, raters)
    changed = raters.copy()
    changed[1, 1] = 0
    again = CrowdSegmenter(_net(), epochs=2, checkpoint_dir=tmp_path, **kw)
    with pytest.raises(ValueError, match=r"changed: \['data_sha256'\]") as info:
        again.fit(images, changed)
    assert "\n" not in str(info.value)
    assert (tmp_path / "checkpoint.safetensors").stat().st_mtime_ns == stamp  # left untouched

    fresh = CrowdSegmenter(_net(), epochs=2, checkpoint_dir=tmp_path, resume=False, **kw)
    fresh.fit(images, changed)
    assert [h["epoch"] for h in fresh.history_] == [1, 2]
    with pytest.raises(TypeError, match="resume"):
        CrowdSegmenter(_net(), resume="no", **kw).fit(images, raters)  # type: ignore[arg-type]


def test_run_that_stopped_early_stays_stopped(tmp_path: Path) -> None:
    images, _, raters = _toy()
    y_val = np.zeros((3, SIZE, SIZE), np.int64)  # no foreground: Dice is NaN, the loss decides
    kw = _kwargs(method="consensus", augment=None, lr=0.5, patience=1)
    first = CrowdSegmenter(_net(), epochs=30, checkpoint_dir=tmp_path, **kw).fit(
        images, raters, X_val=images[:3], y_val=y_val
    )
    assert first.stopped_early_
    assert len(first.history_) < 30

    calls: list[int] = []
    again = CrowdSegmenter(
        _net(), epochs=40, checkpoint_dir=tmp_path, progress=lambda e, n, r: calls.append(e), **kw
    ).fit(images, raters, X_val=images[:3], y_val=y_val)
    assert calls == []
    assert again.stopped_early_
    assert _strip(again.history_) == _strip(first.history_)
    assert again.best_epoch_ == first.best_epoch_
    np.testing.assert_array_equal(again.predict_proba(images), first.predict_proba(images))


# ---------------------------------------------------------------------- CLI
def _write_data(root: Path) -> tuple[Path, Path]:
    images, _, raters = _toy(n=6)
    for i in range(len(images)):
        PIL_Image.fromarray((images[i, 0] * 255).astype(np.uint8)).save(
            _mkdir(root / "images") / f"case{i}.png"
        )
        for j, name in enumerate(("ann", "ben", "cat")):
            if raters[i, j].min() >= 0:
                PIL_Image.fromarray(raters[i, j].astype(np.uint8)).save(
                    _mkdir(root / "masks" / name) / f"case{i}.png"
                )
    return root / "images", root / "masks"


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _train(images: Path, masks: Path, out: Path, *extra: str) -> Any:
    args = ["train", "segment", "--images", str(images), "--masks", str(masks)]
    args += ["--out", str(out), "--epochs", "4", "--batch-size", "3", "--unet-channels", "4,8"]
    args += ["--k-every", "2", *extra]
    return CliRunner().invoke(app, args)


def test_cli_rerun_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, masks = _write_data(tmp_path / "data")
    model, straight = tmp_path / "model", tmp_path / "straight"
    original = Engine._save

    def interrupt_after_epoch_2(self: Engine, *args: Any) -> None:
        original(self, *args)
        if self.epoch + 1 == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Engine, "_save", interrupt_after_epoch_2)
        result = _train(images, masks, model)
    assert result.exit_code != 0
    assert (model / "checkpoint" / "checkpoint.safetensors").is_file()
    assert not (model / "model.safetensors").exists()

    # another command is refused while the checkpoint holds unsaved work
    result = _train(images, masks, model, "--seed", "5")
    assert result.exit_code == 2
    assert "--no-resume" in result.output
    assert "random_state" in result.output

    result = _train(images, masks, model)
    assert result.exit_code == 0, result.output
    assert "resumed after epoch 2" in result.output
    run = json.loads((model / "run.json").read_text())
    assert run["fit"]["resumed_from_epoch"] == 2
    assert _train(images, masks, straight).exit_code == 0
    cols = ["epoch", "loss", "k", "lambda1"]
    pd.testing.assert_frame_equal(
        pd.read_csv(model / "history.csv")[cols], pd.read_csv(straight / "history.csv")[cols]
    )
    from safetensors.torch import load_file

    a, b = (load_file(str(p / "model.safetensors")) for p in (model, straight))
    assert sorted(a) == sorted(b)
    for key, t in a.items():
        np.testing.assert_allclose(t.numpy(), b[key].numpy(), atol=1e-6, rtol=0)

    # --no-resume starts over; a finished model folder may be trained anew with other settings
    result = _train(images, masks, model, "--no-resume", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((model / "run.json").read_text())["fit"]["resumed_from_epoch"] is None
    assert pd.read_csv(model / "history.csv")["epoch"].tolist() == [1]
    result = _train(images, masks, model, "--method", "consensus", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert CrowdSegmenter.load(model, network=None).method_.value == "consensus"
