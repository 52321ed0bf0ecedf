"""MultiTaskClassifier: annotations as auxiliary targets (Cheplygina, "Cats and Crowds")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crowdmed.metrics import roc_auc
from crowdmed.training import CrowdClassifier, load_model
from crowdmed.training.multitask import MultiTaskClassifier, multitask_loss


def _net(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2)
        )


def _data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int64)
    # two readers' labels of a finding that depends on x[:, 2], one of them with gaps
    finding = (x[:, 2] > 0.3).astype(float)
    aux = np.stack([finding, np.where(rng.random(n) < 0.1, 1 - finding, finding)], 1)
    aux[rng.random(n) < 0.3, 1] = np.nan
    return x, y, aux


def test_loss_is_main_cross_entropy_plus_weighted_auxiliary_loss() -> None:
    # L = CE(main) + w · mean over observed entries of BCE(aux)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 0])
    aux_out = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    aux_t = torch.tensor([[1.0, float("nan")], [0.25, 0.0]])
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    bce = [
        -math.log(sig(0.0)),
        -(0.25 * math.log(sig(-1.0)) + 0.75 * math.log(1 - sig(-1.0))),
        -math.log(1 - sig(0.5)),
    ]
    expected = ce + 0.3 * sum(bce) / 3
    got = multitask_loss(logits, target, aux_out, aux_t, aux_weight=0.3)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    mse = multitask_loss(logits, target, aux_out, aux_t, aux_weight=2.0, aux_loss="mse")
    assert float(mse) == pytest.approx(ce + 2.0 * (1.0 + 1.25**2 + 0.25) / 3, rel=1e-6)


def test_zero_aux_weight_is_single_task_training() -> None:
    x, y, aux = _data()
    kw = {"epochs": 8, "lr": 0.01, "batch_size": 32, "progress": False, "random_state": 3}
    single = CrowdClassifier(_net(), method="dl-true", patience=None, **kw).fit(x, y)
    mtl = MultiTaskClassifier(_net(), aux_weight=0.0, patience=None, **kw).fit(x, y, aux)
    np.testing.assert_allclose(mtl.predict_proba(x), single.predict_proba(x), atol=1e-6)


def test_aux_head_learns_the_auxiliary_labels_and_changes_the_trunk() -> None:
    x, y, aux = _data()
    kw = {"epochs": 30, "lr": 0.01, "batch_size": 32, "progress": False, "patience": None}
    mtl = MultiTaskClassifier(_net(), aux_weight=1.0, **kw).fit(x, y, aux)
    finding = (x[:, 2] > 0.3).astype(int)
    assert roc_auc(mtl.predict_aux(x)[:, 0], finding) > 0.95
    assert (mtl.predict(x) == y).mean() > 0.9
    st = MultiTaskClassifier(_net(), aux_weight=0.0, **kw).fit(x, y, aux)
    assert np.abs(st.predict_proba(x) - mtl.predict_proba(x)).max() > 1e-3


def test_validation_early_stopping_and_save_load(tmp_path) -> None:
    x, y, aux = _data()
    xv, yv, _ = _data(n=100, seed=1)
    mtl = MultiTaskClassifier(_net(), epochs=6, lr=0.01, patience=2, progress=False)
    mtl.fit(x, y, aux, X_val=xv, y_val=yv)
    assert "val_auc" in mtl.history_[0]
    folder = mtl.save(tmp_path / "mtl")
    back = load_model(folder, network=_net(), device="cpu")
    np.testing.assert_allclose(back.predict_proba(x), mtl.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(back.predict_aux(x), mtl.predict_aux(x), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "aux", "match"),
    [
        ({"aux_weight": -1.0}, None, r"`aux_weight` must be >= 0"),
        ({"aux_loss": "l1"}, None, r"`aux_loss` must be 'bce' or 'mse'"),
        ({}, np.full((300, 1), 2.0), r"`aux` must lie in \[0, 1\]"),
        ({}, np.zeros((10, 1)), r"`aux` must have shape \(300, n_aux\)"),
    ],
)
def test_multitask_errors(kwargs: dict, aux: np.ndarray | None, match: str) -> None:
    x, y, good = _data()
    clf = MultiTaskClassifier(_net(), epochs=1, progress=False, **kwargs)
    with pytest.raises(ValueError, match=match):
        clf.fit(x, y, good if aux is None else aux)
