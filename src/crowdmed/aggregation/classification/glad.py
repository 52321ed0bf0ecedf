"""GLAD: annotator ability and item difficulty (Whitehill et al., 2009)."""

from __future__ import annotations

import contextlib
import itertools
import warnings
from typing import Any, ClassVar, NamedTuple

import numpy as np

from crowdmed._validation import interval
from crowdmed.aggregation.base import EMAggregator, normalize_log
from crowdmed.data.labels import CrowdLabels

__all__ = ["GLAD"]


def minimize(*args: Any, **kwargs: Any) -> Any:
    """``scipy.optimize.minimize``, imported on first use (it is slow to load)."""
    from scipy.optimize import minimize as scipy_minimize

    return scipy_minimize(*args, **kwargs)


def _skills(alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """P(correct) of each annotator on an item of median difficulty."""
    from scipy.special import log_expit

    return np.exp(log_expit(alphas * np.exp(np.median(betas))))


_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)
#: Labels per block in the M-step objective (the temporaries of a block fit in the L2 cache).
_BLOCK = 1 << 15
#: OpenBLAS splits a dot product over threads above this length.
_BLAS_THREADED_DOT = 10_000


class GLAD(EMAggregator):
    """GLAD: Generative model of Labels, Abilities and Difficulties.

    Annotator ``a`` labels item ``i`` correctly with probability ``σ(α_a · exp(β_i))``, where
    ``α_a`` is the annotator's ability (negative: adversarial) and ``exp(β_i)`` the item's
    inverse difficulty; wrong labels are spread evenly over the other ``K - 1`` classes. The
    class prior is fixed (uniform unless ``class_prior`` is given). α and β have Gaussian priors
    ``N(alpha_prior_mean, 1)`` and ``N(beta_prior_mean, 1)``. The M-step maximises the expected
    complete log-likelihood with conjugate gradients on vectorised gradients (no per-item
    loops).

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the gain in log-likelihood per annotation is below ``tol``.
        m_step_max_iter: Conjugate-gradient iterations per M-step.
        m_step_tol: Gradient tolerance of the conjugate-gradient M-step.
        alpha_prior_mean: Mean of the Gaussian prior on abilities (also their start value).
        beta_prior_mean: Mean of the Gaussian prior on log inverse difficulties (also their
            start value).
        class_prior: Float array of shape ``(n_classes,)``; uniform when ``None``.
        random_state: Seed or ``numpy.random.Generator`` for tie-breaking.

    Attributes:
        alphas_ (ndarray of shape (n_annotators,)): Abilities α.
        betas_ (ndarray of shape (n_items,)): Log inverse difficulties β.
        skills_ (ndarray of shape (n_annotators,)): Probability of a correct label on an item
            of median difficulty, ``σ(α · exp(median β))``.
        priors_ (ndarray of shape (n_classes,)): The fixed class prior.
        posteriors_, labels_, log_likelihoods_, n_iter_, converged_: As in
            :class:`DawidSkene`.

    References:
        Whitehill, Ruvolo, Wu, Bergsma & Movellan (2009). Whose vote should count more:
        optimal integration of labels from labelers of unknown expertise. NeurIPS 22.
        https://papers.nips.cc/paper/3644

    Examples:
        >>> import numpy as np
        >>> labels = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, 1]])
        >>> g = GLAD().fit(labels)
        >>> g.labels_
        array([0, 1, 0, 1, 1])
        >>> bool(g.alphas_[0] > g.alphas_[2])
        True
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        **EMAggregator._parameter_constraints,
        "m_step_max_iter": interval(1, None, integer=True),
        "m_step_tol": interval(0, None, closed="right"),
        "alpha_prior_mean": interval(None, None),
        "beta_prior_mean": interval(None, None),
    }

    def __init__(
        self,
        *,
        max_iter: int = 100,
        tol: float = 1e-5,
        m_step_max_iter: int = 25,
        m_step_tol: float = 1e-2,
        alpha_prior_mean: float = 1.0,
        beta_prior_mean: float = 1.0,
        class_prior: np.ndarray | None = None,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.m_step_max_iter = m_step_max_iter
        self.m_step_tol = m_step_tol
        self.alpha_prior_mean = alpha_prior_mean
        self.beta_prior_mean = beta_prior_mean
        self.class_prior = class_prior
        self.random_state = random_state

    def _validate_data(self, cl: CrowdLabels) -> None:
        if self.class_prior is None:
            self.priors_ = np.full(cl.n_classes, 1.0 / cl.n_classes)
        else:
            p = np.asarray(self.class_prior, dtype=np.float64)
            if p.shape != (cl.n_classes,) or (p <= 0).any() or not np.isclose(p.sum(), 1.0):
                raise ValueError(
                    f"`class_prior` must be {cl.n_classes} positive numbers summing to 1; got "
                    f"{p.tolist()}."
                )
            self.priors_ = p
        self.alphas_ = np.full(cl.n_annotators, float(self.alpha_prior_mean))
        self.betas_ = np.full(cl.n_items, float(self.beta_prior_mean))

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        # EM only sums over labels, so their order is free: sort them by item once per fit for
        # the M-step's blocks of whole items (and in-order sums over items in the E-step).
        super()._fit(_sorted_by_item(cl), gold)

    # --------------------------------------------------------------- model terms
    def _log_joint_with(self, cl: CrowdLabels, alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
        k = cl.n_classes
        z = alphas[cl.annotators] * np.exp(betas)[cl.items]  # exp on items, then gather
        pos, neg = np.maximum(z, 0.0), np.minimum(z, 0.0)
        soft = np.log1p(np.exp(neg - pos))  # log(1 + e^-|z|): no overflow for any z
        log_s = neg - soft  # log σ(z)
        wrong = -(pos + soft) - np.log(k - 1)  # log((1 - σ(z)) / (K - 1))
        # Every label contributes `wrong` to all classes, and `log σ - wrong` more to its own.
        base = np.bincount(cl.items, weights=wrong, minlength=cl.n_items)
        own = np.bincount(
            cl.items * k + cl.labels, weights=log_s - wrong, minlength=cl.n_items * k
        ).reshape(cl.n_items, k)
        return base[:, None] + own + np.log(self.priors_)

    def _log_joint(self, cl: CrowdLabels) -> np.ndarray:
        return self._log_joint_with(cl, self.alphas_, self.betas_)

    def _log_param_prior(self) -> float:
        return float(
            -0.5 * ((self.alphas_ - self.alpha_prior_mean) ** 2).sum()
            - 0.5 * ((self.betas_ - self.beta_prior_mean) ** 2).sum()
            - _LOG_SQRT_2PI * (len(self.alphas_) + len(self.betas_))
        )

    # --------------------------------------------------------------- EM steps
    def _m_step(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        cl = _sorted_by_item(cl)  # already sorted during fit
        n_a, annotators = cl.n_annotators, cl.annotators
        p_own = posteriors[cl.items, cl.labels]  # P(true class == given label)
        p_wrong = 1.0 - p_own
        am, bm = self.alpha_prior_mean, self.beta_prior_mean
        # The parts of Q that do not depend on α and β, computed once per M-step: the
        # log(1 / (K - 1)) of wrong labels and the normalisers of the Gaussian priors.
        const = float(np.log(cl.n_classes - 1) * p_wrong.sum())
        const += _LOG_SQRT_2PI * (n_a + cl.n_items)
        # Conjugate gradients evaluate Q and its gradient several times per iteration, so each
        # evaluation runs over blocks of whole items whose temporaries stay in the CPU cache:
        # e^β is repeated over an item's labels and the item sums are segment sums, so no
        # per-label item index is read. Few annotators: their sums are added block by block
        # too; many: one bincount over per-label weights at the end.
        blocks = _item_blocks(cl.items, cl.n_items, _BLOCK)
        buf = np.empty((3, max(b.stop - b.start for b in blocks)))
        w_alpha = None if n_a * len(blocks) <= cl.n_labels else np.empty(cl.n_labels)

        def neg_q(x: np.ndarray) -> tuple[float, np.ndarray]:
            alphas, betas = x[:n_a], x[n_a:]
            e_beta_items = np.exp(betas)
            grad = np.zeros_like(x)
            g_alpha, g_beta = grad[:n_a], grad[n_a:]
            q = 0.0
            for b in blocks:
                s, e, m = b.start, b.stop, b.stop - b.start
                e_beta = np.repeat(e_beta_items[b.item_start : b.item_stop], b.counts)
                z = alphas[annotators[s:e]]
                z *= e_beta
                pos, neg, soft = buf[0, :m], buf[1, :m], buf[2, :m]
                np.maximum(z, 0.0, out=pos)
                np.minimum(z, 0.0, out=neg)
                # log σ(z) = min(z, 0) - log(1 + e^-|z|) and log(1 - σ(z)) = log σ(-z): stable
                # for any z, and one log1p serves both.
                np.subtract(neg, pos, out=soft)
                np.exp(soft, out=soft)
                np.log1p(soft, out=soft)
                log_s = np.subtract(neg, soft, out=neg)
                minus_log_1ms = np.add(pos, soft, out=pos)
                q += float(np.multiply(p_own[s:e], log_s, out=soft).sum())
                q -= float(np.multiply(p_wrong[s:e], minus_log_1ms, out=pos).sum())
                # dQ/dz = p - σ(z); chain rule through z = α e^β.
                r = np.exp(log_s, out=log_s)
                np.subtract(p_own[s:e], r, out=r)
                if w_alpha is None:
                    np.multiply(r, e_beta, out=e_beta)
                    g_alpha += np.bincount(annotators[s:e], weights=e_beta, minlength=n_a)
                else:
                    np.multiply(r, e_beta, out=w_alpha[s:e])
                sums = np.add.reduceat(np.multiply(r, z, out=z), b.offsets)
                if b.labelled is None:
                    g_beta[b.item_start : b.item_stop] = sums
                else:
                    g_beta[b.item_start + b.labelled] = sums
            if w_alpha is not None:
                g_alpha += np.bincount(annotators, weights=w_alpha, minlength=n_a)
            q -= const + 0.5 * float(((alphas - am) ** 2).sum() + ((betas - bm) ** 2).sum())
            g_alpha -= alphas - am
            g_beta -= betas - bm
            return -q, np.negative(grad, out=grad)

        x0 = np.concatenate([self.alphas_, self.betas_])
        with warnings.catch_warnings(), _one_blas_thread(len(x0)):
            warnings.simplefilter("ignore", RuntimeWarning)
            res = minimize(
                neg_q,
                x0,
                jac=True,
                method="CG",
                tol=self.m_step_tol,
                options={"maxiter": self.m_step_max_iter},
            )
        self.alphas_ = res.x[:n_a].copy()
        self.betas_ = res.x[n_a:].copy()
        self.skills_ = _skills(self.alphas_, self.betas_)

    def _init_posteriors(self, cl: CrowdLabels) -> np.ndarray:
        # The first E-step with the starting abilities (crowd-kit's initialisation).
        return normalize_log(self._log_joint(cl))[0]

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        # New items have unknown difficulty: use the prior mean of β.
        betas = np.full(cl.n_items, float(self.beta_prior_mean))
        return normalize_log(self._log_joint_with(cl, self.alphas_, betas))[0]

    def _zero_iter_params(self, cl: CrowdLabels, posteriors: np.ndarray) -> None:
        # No M-step runs: keep the starting abilities and difficulties.
        self.skills_ = _skills(self.alphas_, self.betas_)


def _one_blas_thread(n_params: int) -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread while conjugate gradients run, if threadpoolctl is installed.

    Each M-step makes hundreds of BLAS dot products of length ``n_items + n_annotators``
    inside ``scipy.optimize``. Split over threads they gain little, and on a busy machine each
    waits for a descheduled worker thread (0.1-5 ms instead of 10 µs): with threads, an EM
    iteration took 2× (1M labels) to 6× (100k labels) longer on two shared cores. The limit
    changes speed only, never the model; BLAS runs unchanged when threadpoolctl (a
    scikit-learn dependency) is missing.
    """
    if n_params <= _BLAS_THREADED_DOT:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional speed-up
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class _ItemBlock(NamedTuple):
    """Labels ``start:stop`` of items ``item_start:item_stop`` (labels sorted by item)."""

    start: int
    stop: int
    item_start: int
    item_stop: int
    #: Labels of each item of the block, shape ``(item_stop - item_start,)``.
    counts: np.ndarray
    #: First label of each labelled item, counted from ``start``.
    offsets: np.ndarray
    #: The labelled items, counted from ``item_start``; ``None`` when all are labelled.
    labelled: np.ndarray | None


def _item_blocks(items: np.ndarray, n_items: int, size: int) -> list[_ItemBlock]:
    """Split labels sorted by item into blocks of about ``size`` labels of whole items."""
    counts = np.bincount(items, minlength=n_items)
    ends = np.cumsum(counts)  # one past the last label of each item
    cuts = np.searchsorted(ends, np.arange(size, len(items), size)) + 1
    bounds = np.unique(np.concatenate([[0], cuts, [n_items]]))
    blocks = []
    for i0, i1 in itertools.pairwise(bounds.tolist()):
        start, stop = int(ends[i0 - 1]) if i0 else 0, int(ends[i1 - 1])
        if stop > start:
            c = counts[i0:i1]
            labelled = np.flatnonzero(c)
            offsets = (np.cumsum(c) - c)[labelled]
            all_labelled = len(labelled) == len(c)
            blocks.append(
                _ItemBlock(start, stop, i0, i1, c, offsets, None if all_labelled else labelled)
            )
    return blocks


def _sorted_by_item(cl: CrowdLabels) -> CrowdLabels:
    """The same labels with the triplets in item order (``cl`` itself if already sorted)."""
    if cl.n_labels < 2 or bool((cl.items[1:] >= cl.items[:-1]).all()):
        return cl
    order = np.argsort(cl.items, kind="stable")
    return CrowdLabels(
        items=cl.items[order],
        annotators=cl.annotators[order],
        labels=cl.labels[order],
        item_ids=cl.item_ids,
        annotator_ids=cl.annotator_ids,
        classes=cl.classes,
        gold=cl.gold,
        quiz_accuracy=cl.quiz_accuracy,
    )
