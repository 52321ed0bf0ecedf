"""Seeded fits give the numbers of the loops before the training engine (commit d622bab).

The values were computed with the per-trainer loops that the engine replaced; the same
seed must still give them (to float rounding across platforms).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from crowdmed.nn import mlp_head, segmentation_network  # noqa: E402
from crowdmed.training import CrowdClassifier, CrowdSegmenter  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _crowd() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points ``(150, 4)``, labels ``(150, 3)`` (-1 missing) and the true classes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 4)).astype("float32")
    truth = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    flip = rng.random((150, 3)) < np.array([0.1, 0.2, 0.4])
    labels = np.where(flip, 1 - truth[:, None], truth[:, None])
    labels[rng.random((150, 3)) < 0.2] = -1
    labels[:, 0][labels[:, 0] < 0] = truth[labels[:, 0] < 0]
    return x, labels, truth


@pytest.mark.parametrize(
    ("method", "losses"),
    [
        ("crowd-layer-mw", [1.8247045596440634, 1.738596789042155, 1.679792300860087]),
        ("dl-em", [0.7141870935757955, 0.6332067012786865, 0.5765626033147176]),
    ],
)
def test_classifier_losses_unchanged(method: str, losses: list[float]) -> None:
    x, labels, truth = _crowd()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = mlp_head(4, 2, hidden=16, dropout=0.2)
    clf = CrowdClassifier(
        net,
        method=method,
        epochs=3,
        batch_size=32,
        lr=0.02,
        patience=3,
        progress=False,
        random_state=5,
    )
    clf.fit(x[:120], labels[:120], X_val=x[120:], y_val=truth[120:])
    np.testing.assert_allclose([h["loss"] for h in clf.history_], losses, rtol=1e-5)


@pytest.mark.parametrize(
    ("method", "losses"),
    [
        ("reweight-gaf", [4.4897379875183105, 2.797776699066162, 2.3726223707199097]),
        ("consensus", [0.788611888885498, 0.7472294867038727, 0.7152123749256134]),
    ],
)
def test_segmenter_losses_unchanged(method: str, losses: list[float]) -> None:
    g = np.random.default_rng(1)
    images = g.random((6, 1, 16, 16)).astype("float32")
    truth = (images[:, 0] > 0.5).astype(int)
    noisy = np.where(g.random(truth.shape) < 0.2, 1 - truth, truth)
    raters = np.stack([truth, noisy, truth], 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        net = segmentation_network("unet", in_channels=1, n_classes=2, channels=(4, 8))
    seg = CrowdSegmenter(
        net, method=method, epochs=3, batch_size=2, k_every=2, patience=None, random_state=3
    )
    seg.fit(images[:4], raters[:4], X_val=images[4:], y_val=truth[4:])
    np.testing.assert_allclose([h["loss"] for h in seg.history_], losses, rtol=1e-5)
