"""CrowdRegressor: regression DL-EM (Rodrigues & Pereira 2018 after Raykar et al. 2010)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crowdmed.training import load_model
from crowdmed.training.regression import CrowdRegressor


def _net() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))


def _simulate(bias: np.ndarray, sd: np.ndarray, n: int = 800, seed: int = 0):
    # y_ir = z_i + b_r + N(0, sd_r²): the Gaussian reader model, 30 % of answers missing
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    z = np.sin(x[:, 0]) + x[:, 1] - 0.5 * x[:, 2]
    y = z[:, None] + bias + rng.normal(size=(n, len(sd))) * sd
    y[rng.random(y.shape) < 0.3] = np.nan
    none = np.isnan(y).all(axis=1)
    y[none, 0] = z[none] + bias[0]
    return x, y, z


def _fit(method: str, x: np.ndarray, y: np.ndarray, epochs: int = 50) -> CrowdRegressor:
    reg = CrowdRegressor(
        _net(), method=method, epochs=epochs, lr=0.01, patience=None, progress=False
    )
    return reg.fit(x, y)


def test_dl_em_recovers_each_annotators_bias_and_precision() -> None:
    bias = np.array([0.5, -0.5, 0.0, 1.0])
    sd = np.array([0.2, 0.5, 1.0, 2.0])
    x, y, z = _simulate(bias, sd)
    reg = _fit("dl-em+b", x, y)
    # precisions λ_r = 1/sd_r² within 20 %; biases up to the shared origin (mean 0)
    np.testing.assert_allclose(reg.annotator_precision_, 1 / sd**2, rtol=0.2)
    np.testing.assert_allclose(reg.annotator_bias_, bias - bias.mean(), atol=0.08)
    # the network learns the truth up to that origin
    offset = float(np.mean(reg.predict(x) - z))
    assert offset == pytest.approx(bias.mean(), abs=0.1)


def test_dl_em_paper_model_precision_only() -> None:
    sd = np.array([0.2, 0.5, 1.0, 2.0])
    x, y, z = _simulate(np.zeros(4), sd, seed=1)
    reg = _fit("dl-em", x, y)
    np.testing.assert_allclose(reg.annotator_precision_, 1 / sd**2, rtol=0.2)
    np.testing.assert_array_equal(reg.annotator_bias_, np.zeros(4))
    # precision weighting beats the mean answer when annotators differ this much
    mean = _fit("mean", x, y)
    rmse = lambda r: float(np.sqrt(np.mean((r.predict(x) - z) ** 2)))  # noqa: E731
    assert rmse(reg) < rmse(mean)


def test_crowd_layer_regression_and_save_load(tmp_path) -> None:
    x, y, _ = _simulate(np.array([0.0, 1.0]), np.array([0.3, 0.3]), n=300)
    reg = _fit("crowd-layer-b", x, y, epochs=5)
    assert reg.annotator_bias_.shape == (2,)
    folder = reg.save(tmp_path / "reg")
    back = load_model(folder, network=_net(), device="cpu")
    np.testing.assert_allclose(back.predict(x), reg.predict(x), atol=1e-6)
    np.testing.assert_allclose(back.annotator_bias_, reg.annotator_bias_)
    em = _fit("dl-em+b", x, y, epochs=3)
    em_back = CrowdRegressor.load(em.save(tmp_path / "em"), network=_net(), device="cpu")
    np.testing.assert_allclose(em_back.annotator_precision_, em.annotator_precision_)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.full((4, 2), np.nan), r"4 items have no answers"),
        (np.ones((3, 2)), r"`labels` must have shape \(4, n_annotators\)"),
    ],
)
def test_regressor_errors(labels: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CrowdRegressor(_net(), progress=False).fit(np.zeros((4, 4)), labels)
