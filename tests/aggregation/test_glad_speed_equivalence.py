"""The fast GLAD objective equals the textbook one (``log_expit`` on every label).

``GLAD._m_step`` evaluates Q and its gradient over cache-sized blocks of labels with
rewritten but equivalent log terms, and ``GLAD.fit`` reorders the labels by item. These tests
pin both to the plain formulas: the values agree to rounding, and a whole fit agrees with a
fit that uses the plain formulas to ``1e-6`` (the truncated conjugate gradients amplify
rounding differences, so a tight M-step tolerance is the fair comparison).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_expit

import crowdmed.aggregation.classification.glad as glad_mod
from crowdmed.aggregation import GLAD
from crowdmed.data import CrowdLabels

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


# ----------------------------------------------------------------------------- plain formulas
def plain_neg_q(
    cl: CrowdLabels, posteriors: np.ndarray, am: float, bm: float
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """-Q and its gradient, written directly from the model (one gather per label)."""
    n_a, k = cl.n_annotators, cl.n_classes
    p_own = posteriors[cl.items, cl.labels]

    def neg_q(x: np.ndarray) -> tuple[float, np.ndarray]:
        alphas, betas = x[:n_a], x[n_a:]
        e_beta = np.exp(betas[cl.items])
        z = alphas[cl.annotators] * e_beta
        log_s, log_1ms = log_expit(z), log_expit(-z)
        q = float(np.dot(p_own, log_s) + np.dot(1 - p_own, log_1ms - np.log(k - 1)))
        q -= 0.5 * float(((alphas - am) ** 2).sum() + ((betas - bm) ** 2).sum())
        q -= _LOG_SQRT_2PI * len(x)
        r = p_own - np.exp(log_s)
        g_alpha = np.bincount(cl.annotators, weights=r * e_beta, minlength=n_a) - (alphas - am)
        g_beta = np.bincount(cl.items, weights=r * z, minlength=cl.n_items) - (betas - bm)
        return -q, -np.concatenate([g_alpha, g_beta])

    return neg_q


def plain_log_joint(
    cl: CrowdLabels, alphas: np.ndarray, betas: np.ndarray, priors: np.ndarray
) -> np.ndarray:
    """Log P(true class, labels of item), shape ``(n_items, K)``, by a dense scatter."""
    z = alphas[cl.annotators] * np.exp(betas[cl.items])
    wrong = log_expit(-z) - np.log(cl.n_classes - 1)
    out = np.tile(np.log(priors), (cl.n_items, 1))
    for c in range(cl.n_classes):
        np.add.at(out[:, c], cl.items, np.where(cl.labels == c, log_expit(z), wrong))
    return out


class PlainGLAD(GLAD):
    """GLAD with the plain formulas (the implementation before the speed-up)."""

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        super(GLAD, self)._fit(cl, gold)  # no reordering of the labels

    def _log_joint_with(self, cl: CrowdLabels, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
        return plain_log_joint(cl, alphas, betas, self.priors_)

    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        n_a = cl.n_annotators
        fun = plain_neg_q(cl, posteriors, self.alpha_prior_mean, self.beta_prior_mean)
        x0 = np.concatenate([self.alphas_, self.betas_])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = minimize(
                fun,
                x0,
                jac=True,
                method="CG",
                tol=self.m_step_tol,
                options={"maxiter": self.m_step_max_iter},
            )
        self.alphas_, self.betas_ = res.x[:n_a].copy(), res.x[n_a:].copy()
        self.skills_ = np.exp(log_expit(self.alphas_ * np.exp(np.median(self.betas_))))


# ----------------------------------------------------------------------------- helpers
def random_labels(
    n_items: int, n_annotators: int, k: int, seed: int, unlabelled: tuple[int, ...] = ()
) -> CrowdLabels:
    """Random sparse labels (about half the pairs) in shuffled order; ``unlabelled`` items
    get no label."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, k, size=(n_items, n_annotators))
    dense[rng.random(dense.shape) < 0.5] = -1
    dense[:, 0] = rng.integers(0, k, size=n_items)  # every item has a label
    dense[0] = rng.integers(0, k, size=n_annotators)  # every annotator has a label
    dense[list(unlabelled)] = -1
    items, annotators = np.nonzero(dense >= 0)
    perm = rng.permutation(len(items))
    return CrowdLabels.from_triplets(
        items[perm],
        annotators[perm],
        dense[items, annotators][perm],
        n_items=n_items,
        n_annotators=n_annotators,
        n_classes=k,
    )


def captured_neg_q(
    monkeypatch: pytest.MonkeyPatch, cl: CrowdLabels, posteriors: np.ndarray
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """The objective that ``GLAD._m_step`` hands to ``minimize``."""
    captured: dict[str, Any] = {}

    def spy(fun: Callable[[np.ndarray], Any], x0: np.ndarray, **kw: Any) -> Any:
        captured["fun"] = fun
        return minimize(fun, x0, **kw)

    monkeypatch.setattr(glad_mod, "minimize", spy)
    g = GLAD()
    g._validate_data(cl)
    g._m_step(cl, posteriors)
    return captured["fun"]


# ----------------------------------------------------------------------------- objective
@pytest.mark.parametrize("block", [7, 64, glad_mod._BLOCK], ids=lambda b: f"block{b}")
@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("scale", [0.5, 5.0], ids=["moderate", "saturated"])
def test_objective_and_gradient_equal_plain_formulas(monkeypatch, block, k, scale):
    # block=7: many blocks, items with more labels than a block, and per-label annotator
    # weights (9 annotators × many blocks > labels); block=64: annotator sums per block.
    # Items 5, 6, 21 and 39 have no label. "saturated" puts |z| far beyond where σ(z) rounds
    # to 0 or 1.
    monkeypatch.setattr(glad_mod, "_BLOCK", block)
    cl = random_labels(40, 9, k, seed=k, unlabelled=(5, 6, 21, 39))
    rng = np.random.default_rng(1)
    post = rng.dirichlet(np.ones(k), cl.n_items)
    fast = captured_neg_q(monkeypatch, cl, post)
    plain = plain_neg_q(cl, post, 1.0, 1.0)
    for _ in range(5):
        x = rng.normal(0.5, scale, cl.n_annotators + cl.n_items)
        (q_fast, g_fast), (q_plain, g_plain) = fast(x), plain(x)
        np.testing.assert_allclose(q_fast, q_plain, rtol=1e-13)
        np.testing.assert_allclose(g_fast, g_plain, rtol=1e-12, atol=1e-12)


def test_objective_overflow_matches_plain_formulas(monkeypatch):
    # exp(β) overflows to inf for a huge β (a wild line-search step): both versions must
    # return the same infinities, not NaN where the plain formulas give inf.
    cl = random_labels(12, 5, 3, seed=0)
    post = np.full((cl.n_items, 3), 1 / 3)
    fast = captured_neg_q(monkeypatch, cl, post)
    plain = plain_neg_q(cl, post, 1.0, 1.0)
    x = np.ones(cl.n_annotators + cl.n_items)
    x[cl.n_annotators + 3] = 800.0  # item 3: e^β = inf
    x[0] = -2.0  # annotator 0 is adversarial: z = -inf on its labels of item 3
    with np.errstate(all="ignore"):
        (q_fast, g_fast), (q_plain, g_plain) = fast(x), plain(x)
    assert q_fast == q_plain == np.inf
    np.testing.assert_array_equal(np.isfinite(g_fast), np.isfinite(g_plain))
    finite = np.isfinite(g_plain)
    np.testing.assert_allclose(g_fast[finite], g_plain[finite], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- E-step
@pytest.mark.parametrize("k", [2, 4])
def test_log_joint_equals_plain_formula(k):
    cl = random_labels(30, 7, k, seed=3)
    rng = np.random.default_rng(2)
    g = GLAD()
    g._validate_data(cl)
    alphas, betas = rng.normal(1, 3, cl.n_annotators), rng.normal(0, 2, cl.n_items)
    np.testing.assert_allclose(
        g._log_joint_with(cl, alphas, betas),
        plain_log_joint(cl, alphas, betas, g.priors_),
        rtol=1e-12,
        atol=1e-12,
    )


# ----------------------------------------------------------------------------- whole fit
@pytest.mark.parametrize("size", [1, 5, 20, 1000])
def test_item_blocks_cover_every_label_once(size):
    cl = glad_mod._sorted_by_item(random_labels(30, 6, 3, seed=5, unlabelled=(0, 13, 29)))
    blocks = glad_mod._item_blocks(cl.items, cl.n_items, size)
    assert blocks[0].start == 0
    assert blocks[-1].stop == cl.n_labels
    for b, nxt in itertools.pairwise(blocks):
        assert b.stop == nxt.start
        assert b.item_stop <= nxt.item_start
    for b in blocks:
        np.testing.assert_array_equal(
            np.repeat(np.arange(b.item_start, b.item_stop), b.counts), cl.items[b.start : b.stop]
        )
        labelled = np.arange(len(b.counts)) if b.labelled is None else b.labelled
        np.testing.assert_array_equal(cl.items[b.start + b.offsets], b.item_start + labelled)


def test_sorted_by_item_keeps_the_labels():
    cl = random_labels(20, 6, 3, seed=4)
    s = glad_mod._sorted_by_item(cl)
    assert (np.diff(s.items) >= 0).all()
    np.testing.assert_array_equal(s.to_dense(), cl.to_dense())
    assert glad_mod._sorted_by_item(s) is s


@pytest.mark.parametrize("k", [2, 5])
def test_fit_equals_plain_implementation(k):
    cl = random_labels(60, 8, k, seed=10 + k)
    settings = {"max_iter": 4, "tol": 0.0, "m_step_tol": 1e-7, "m_step_max_iter": 500}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = GLAD(**settings).fit(cl)
        plain = PlainGLAD(**settings).fit(cl)
    np.testing.assert_allclose(fast.posteriors_, plain.posteriors_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.alphas_, plain.alphas_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.betas_, plain.betas_, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.log_likelihoods_, plain.log_likelihoods_, rtol=1e-8)
