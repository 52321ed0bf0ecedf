"""save/load of CrowdClassifier and CrowdSegmenter: model folders without pickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from torch import nn  # noqa: E402

from crowdmed.nn import build_network, network_spec, segmentation_network  # noqa: E402
from crowdmed.nn.models import mlp_head  # noqa: E402
from crowdmed.training import CrowdClassifier, CrowdSegmenter, load_model  # noqa: E402


@pytest.fixture(autouse=True)
def _no_pickles(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model folder may be read with torch.load (it can run code)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load must not be called on a model folder")

    monkeypatch.setattr(torch, "load", refuse)


def _points(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    truth = (x[:, 0] > 0).astype(np.int64)
    labels = np.stack([truth, np.where(rng.random(n) < 0.3, 1 - truth, truth), 1 - truth], 1)
    labels[rng.random((n, 3)) < 0.2] = -1
    labels[:, 0] = truth  # every item keeps one label
    return x, labels, truth


def _net(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return mlp_head(3, 2, hidden=8, dropout=0.1)


def _fit(method: str, net: nn.Module | None = None) -> tuple[CrowdClassifier, np.ndarray]:
    x, labels, truth = _points()
    clf = CrowdClassifier(
        _net() if net is None else net,
        method=method,
        epochs=3,
        batch_size=32,
        lr=0.05,
        progress=False,
        random_state=1,
    )
    return clf.fit(x, labels, X_val=x[:30], y_val=truth[:30]), x


@pytest.mark.parametrize(
    "method", ["crowd-layer-mw", "crowd-layer-vw+b", "dl-em", "aggnet", "dl-mv"]
)
def test_classifier_round_trip(tmp_path: Path, method: str) -> None:
    clf, x = _fit(method)
    folder = clf.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == "classifier"
    assert config["network"] == network_spec(clf.network)

    loaded = load_model(folder, device="cpu")
    assert isinstance(loaded, CrowdClassifier)
    np.testing.assert_array_equal(loaded.predict_proba(x), clf.predict_proba(x))
    assert loaded.history_ == clf.history_
    assert loaded.best_epoch_ == clf.best_epoch_
    assert loaded.method_ is clf.method_
    assert (loaded.n_classes_, loaded.n_annotators_) == (clf.n_classes_, clf.n_annotators_)
    if clf.annotator_confusion_ is None:
        assert loaded.annotator_confusion_ is None
    else:
        np.testing.assert_array_equal(loaded.annotator_confusion_, clf.annotator_confusion_)
        # the head itself round-trips (its parameters or EM buffers)
        for (k1, v1), (k2, v2) in zip(
            clf.head_.state_dict().items(), loaded.head_.state_dict().items(), strict=True
        ):
            assert k1 == k2
            assert torch.equal(v1, v2)
    assert loaded.lr == clf.lr
    assert loaded.random_state == clf.random_state


def test_custom_network_needs_network_argument(tmp_path: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        custom = nn.Sequential(nn.Linear(3, 2))  # not built by build_network: no spec
    clf, x = _fit("dl-mv", net=custom)
    folder = clf.save(tmp_path / "m")
    with pytest.raises(
        ValueError, match=r"config\.json' holds the weights of a Sequential"
    ) as info:
        CrowdClassifier.load(folder)
    assert "network=" in str(info.value)
    assert "\n" not in str(info.value)
    loaded = CrowdClassifier.load(folder, network=nn.Sequential(nn.Linear(3, 2)))
    np.testing.assert_array_equal(loaded.predict(x), clf.predict(x))
    with pytest.raises(ValueError, match=r"model\.safetensors' do not fit the network") as info:
        CrowdClassifier.load(folder, network=nn.Sequential(nn.Linear(3, 4)))
    assert "\n" not in str(info.value)


def test_registry_builds_saved_networks() -> None:
    net = build_network("mlp_head", in_features=3, n_classes=2, hidden=8)
    again = build_network(**network_spec(net))
    assert [tuple(p.shape) for p in net.parameters()] == [
        tuple(p.shape) for p in again.parameters()
    ]
    with pytest.raises(ValueError, match=r"`name` must be one of .*Did you mean 'mlp_head'"):
        build_network("mlp_haed", in_features=3, n_classes=2)


def _one_line_error(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_changed_or_corrupt_folders(tmp_path: Path) -> None:
    clf, _ = _fit("crowd-layer-mw")
    folder = clf.save(tmp_path / "m")
    config_text = (folder / "config.json").read_text()
    weights = (folder / "model.safetensors").read_bytes()

    (folder / "config.json").write_text(config_text[:-20])
    _one_line_error(lambda: load_model(folder), r"Cannot read '.*m/config\.json'")
    (folder / "config.json").write_text(config_text)

    (folder / "model.safetensors").write_bytes(weights[: len(weights) - 100])
    _one_line_error(lambda: load_model(folder), r"Cannot read '.*m/model\.safetensors'")

    from safetensors.torch import load_file, save_file

    (folder / "model.safetensors").write_bytes(weights)
    tensors = load_file(str(folder / "model.safetensors"))
    dropped = next(k for k in tensors if k.startswith("head/"))
    del tensors[dropped]
    save_file(tensors, str(folder / "model.safetensors"))
    _one_line_error(
        lambda: load_model(folder), rf"m/model\.safetensors' does not match .*'{dropped}'"
    )

    (folder / "model.safetensors").write_bytes(weights)
    _one_line_error(
        lambda: CrowdSegmenter.load(folder),
        r"m/config\.json' holds a 'classifier' model, not a 'segmenter' model",
    )
    assert isinstance(load_model(folder), CrowdClassifier)


# ---------------------------------------------------------------------- segmenter
def _masks(n: int = 6, size: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.random((n, 1, size, size)).astype(np.float32)
    truth = (images[:, 0] > 0.5).astype(np.int64)
    noisy = np.where(rng.random(truth.shape) < 0.2, 1 - truth, truth)
    return images, truth, np.stack([truth, noisy, truth], 1)


@pytest.mark.parametrize("method", ["reweight-gaf", "consensus"])
def test_segmenter_round_trip(tmp_path: Path, method: str) -> None:
    images, truth, raters = _masks()
    net = segmentation_network("unet", in_channels=1, n_classes=2, channels=(4, 8), random_state=0)
    seg = CrowdSegmenter(net, method=method, epochs=2, batch_size=2, k_every=2, random_state=0)
    seg.fit(images, raters, X_val=images[:2], y_val=truth[:2])
    folder = seg.save(tmp_path / "seg")
    loaded = load_model(folder)
    assert isinstance(loaded, CrowdSegmenter)
    np.testing.assert_array_equal(loaded.predict_proba(images), seg.predict_proba(images))
    assert loaded.history_ == seg.history_
    assert (loaded.n_classes_, loaded.n_raters_, loaded.method_) == (2, 3, seg.method_)
    if method == "reweight-gaf":
        np.testing.assert_array_equal(
            loaded.rater_weights(images, raters), seg.rater_weights(images, raters)
        )
    else:
        assert loaded.weighting_network_ is None


def test_segmenter_custom_network(tmp_path: Path) -> None:
    monai_nets = pytest.importorskip("monai.networks.nets")
    images, _, raters = _masks()

    def make() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return monai_nets.UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0)

    seg = CrowdSegmenter(make(), method="consensus", epochs=1, batch_size=3).fit(images, raters)
    folder = seg.save(tmp_path / "seg")
    _one_line_error(lambda: load_model(folder), r"cannot rebuild; pass load\(path, network=")
    loaded = load_model(folder, network=make())
    np.testing.assert_array_equal(loaded.predict(images), seg.predict(images))


def test_save_before_fit_is_refused(tmp_path: Path) -> None:
    from crowdmed.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted yet"):
        CrowdClassifier(_net()).save(tmp_path / "m")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        CrowdSegmenter(_net()).save(tmp_path / "m")
