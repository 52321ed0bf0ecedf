"""DL-DN and DL-WDN (Doctor Net baselines of Rodrigues & Pereira 2018, after Guan et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crowdmed.nn import mlp_head
from crowdmed.nn.models import split_last_linear
from crowdmed.training import CrowdClassifier, load_model


def _net(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return mlp_head(5, 2, hidden=16, dropout=0.0)


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    truth = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, truth, rng


def _fit(method: str, x: np.ndarray, labels: np.ndarray, *, epochs: int = 15) -> CrowdClassifier:
    clf = CrowdClassifier(
        _net(), method=method, epochs=epochs, lr=0.01, patience=None, progress=False
    )
    return clf.fit(x, labels)


def test_identical_annotators_train_like_one_network() -> None:
    # Every head starts as the network's last layer; with identical annotators each head
    # gets plain training's gradient and the trunk A times it, which Adam's scale-free step
    # turns into the same update: every head must reproduce plain training's probabilities.
    x, truth, rng = _data()
    noisy = np.where(rng.random(len(truth)) < 0.1, 1 - truth, truth)
    labels = np.stack([noisy] * 3, axis=1)
    plain = _fit("dl-mv", x, labels)
    dn = _fit("dl-dn", x, labels)
    trunk, _ = split_last_linear(dn.network)
    with torch.no_grad():
        heads = torch.softmax(dn.head_(trunk(torch.as_tensor(x))), -1).numpy()  # (N, A, K)
    p_plain = plain.predict_proba(x)
    for r in range(3):
        np.testing.assert_allclose(heads[:, r], p_plain, atol=1e-4)
    np.testing.assert_array_equal(dn.predict(x), plain.predict(x))
    assert dn.averaging_weights_ is None


def test_dn_prediction_is_the_majority_vote_of_the_heads() -> None:
    x, truth, rng = _data(seed=1)
    labels = np.stack(
        [np.where(rng.random(len(truth)) < e, 1 - truth, truth) for e in (0.05, 0.1, 0.3)], 1
    )
    dn = _fit("dl-dn", x, labels)
    trunk, _ = split_last_linear(dn.network)
    with torch.no_grad():
        said = dn.head_(trunk(torch.as_tensor(x))).argmax(-1).numpy()  # (N, A)
    votes_for_1 = (said == 1).sum(1)
    # three heads: never a tie
    np.testing.assert_array_equal(dn.predict(x), (votes_for_1 >= 2).astype(int))
    assert (dn.predict(x) == truth).mean() > 0.9


def test_wdn_weights_favour_the_reliable_annotator() -> None:
    x, truth, rng = _data(n=600, seed=2)
    reliable = np.where(rng.random(len(truth)) < 0.05, 1 - truth, truth)
    fair = np.where(rng.random(len(truth)) < 0.15, 1 - truth, truth)
    random = rng.integers(0, 2, len(truth))
    labels = np.stack([reliable, fair, random], axis=1)
    wdn = _fit("dl-wdn", x, labels, epochs=25)
    w = wdn.averaging_weights_
    assert w is not None
    assert w.shape == (3,)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > 0.5
    assert w[0] > 3 * w[2]
    assert (wdn.predict(x) == truth).mean() > 0.9
    # the prediction is the weighted mean of the heads' probabilities
    trunk, _ = split_last_linear(wdn.network)
    with torch.no_grad():
        probs = torch.softmax(wdn.head_(trunk(torch.as_tensor(x))), -1).double().numpy()
    np.testing.assert_allclose(wdn.predict_proba(x), np.einsum("a,nak->nk", w, probs), atol=1e-6)


def test_doctor_net_sparse_labels_and_save_load(tmp_path) -> None:
    x, truth, rng = _data(seed=3)
    labels = np.stack([np.where(rng.random(len(truth)) < 0.1, 1 - truth, truth)] * 4, 1)
    labels[rng.random(labels.shape) < 0.5] = -1
    labels[labels.max(1) < 0, 0] = truth[labels.max(1) < 0]
    wdn = _fit("dl-wdn", x, labels, epochs=5)
    folder = wdn.save(tmp_path / "model")
    back = CrowdClassifier.load(folder, device="cpu")
    np.testing.assert_allclose(back.predict_proba(x), wdn.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(back.averaging_weights_, wdn.averaging_weights_)
    again = load_model(folder, device="cpu")
    np.testing.assert_array_equal(again.predict(x), wdn.predict(x))


def test_doctor_net_needs_a_last_linear_layer() -> None:
    x, truth, _ = _data(n=50)
    net = torch.nn.Sequential(torch.nn.Linear(5, 2), torch.nn.Identity())
    clf = CrowdClassifier(net, method="dl-dn", epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"ending in one"):
        clf.fit(x, np.stack([truth, truth], 1))
