"""STAPLE: simultaneous truth and performance level estimation for the masks of several raters.

Two estimators, both fitted by expectation–maximisation on one case (an image or a volume
annotated by every rater) or on a batch of cases at once:

* :class:`STAPLE` — binary masks; one sensitivity ``p`` and specificity ``q`` per rater
  (Warfield, Zou & Wells 2004). The definitions follow ITK's ``STAPLEImageFilter``, so results
  agree with SimpleITK (see :class:`STAPLE` for the exact conventions).
* :class:`MultiLabelSTAPLE` — label maps with ``K`` classes; one ``K × K`` confusion matrix per
  rater (Rohlfing, Russakoff & Maurer 2004, as implemented by ITK's
  ``MultiLabelSTAPLEImageFilter``).

Both work on the counts of distinct patterns of rater decisions (see
:mod:`crowdmed.aggregation.segmentation._masks`), which gives exactly the voxel-wise EM at a
cost that depends on the voxels where the raters disagree, and fit many cases in one vectorised
loop.
"""

from __future__ import annotations

import copy
import numbers
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from crowdmed._params import ParamsMixin
from crowdmed._validation import check_params, interval
from crowdmed.aggregation.segmentation._masks import (
    check_cases,
    check_label_maps,
    check_masks,
    patterns,
)
from crowdmed.exceptions import ConvergenceWarning, NotFittedError

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

__all__ = ["STAPLE", "MultiLabelSTAPLE"]


def _prior_constraint(allow_array: bool) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, str):
            return None if v in ("global", "estimate") else "'global', 'estimate' or a number"
        if allow_array and isinstance(v, (list, tuple, np.ndarray)):
            a = np.asarray(v, dtype=np.float64)
            if a.ndim == 1 and a.size >= 2 and np.all(a >= 0) and a.sum() > 0:
                return None
            return "'global', 'estimate' or a 1-D array of non-negative class weights"
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 < float(v) < 1.0:
            return None
        if allow_array:
            return "'global', 'estimate' or a 1-D array of non-negative class weights"
        return "'global', 'estimate' or a number in (0, 1)"

    return check


class _MaskEstimator(ParamsMixin):
    """sklearn-style parameter protocol shared by the mask consensus estimators."""

    def _check_is_fitted(self) -> None:
        if not hasattr(self, "posteriors_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )


def _warn_not_converged(name: str, failed: np.ndarray, max_iter: int, n_cases: int) -> None:
    if max_iter == 0 or not failed.any():
        return
    where = "" if n_cases == 1 else f" on {int(failed.sum())} of {n_cases} cases"
    warnings.warn(
        f"{name} did not converge in max_iter={max_iter} iterations{where}. Increase max_iter "
        "or tol.",
        ConvergenceWarning,
        stacklevel=4,
    )


def _segment_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of consecutive row blocks that begin at ``starts`` (every block non-empty)."""
    return np.add.reduceat(values, starts, axis=0)


# ====================================================================== binary STAPLE
class STAPLE(_MaskEstimator):
    """Binary STAPLE: consensus mask and per-rater sensitivity/specificity by EM.

    Each rater ``r`` is modelled by a sensitivity ``p[r] = P(rater says 1 | truth 1)`` and a
    specificity ``q[r] = P(rater says 0 | truth 0)``; the true label of a voxel is 1 with prior
    probability ``g``. EM alternates an M-step (``p``, ``q`` from the current posteriors ``W``)
    and an E-step (``W = g·Π p|1-p / (g·Π p|1-p + (1-g)·Π 1-q|q)``), starting from the mean of
    the raters' masks, and ends with an E-step, so ``posteriors_`` belongs to the reported
    ``sensitivity_`` and ``specificity_``.

    Conventions (chosen to agree with ITK/SimpleITK ``STAPLEImageFilter``):

    * ``prior="global"`` fixes ``g`` to the mean foreground fraction of all raters over the
      whole case (ITK's ``ConfidenceWeight`` multiplies it; pass ``prior=w * g`` to emulate a
      weight). A float fixes ``g``; ``"estimate"`` re-estimates it in every M-step.
    * EM stops once every ``p[r]`` and ``q[r]`` changes by at most ``tol`` between two
      iterations (ITK: squared change ``<= 1e-14``, i.e. ``tol=1e-7``); the first iteration is
      never a stop.
    * ``n_iter_`` counts the EM iterations run. ITK's ``GetElapsedIterations()`` reports
      ``n_iter_ - 1`` after convergence and ``max_iter`` otherwise.
    * Every voxel of the grid counts, including background that all raters leave empty (as in
      ITK): cropping the grid changes the specificities and the global prior.
    * Empty masks: one rater with an empty mask is legitimate (its sensitivity is low). When
      *every* rater's mask is empty the consensus is empty, ``sensitivity_`` is undefined
      (``NaN``) and ``specificity_`` is 1; when every rater marks every voxel, the consensus is
      full and ``specificity_`` is ``NaN``. EM is skipped (``n_iter_ = 0``) and a
      ``UserWarning`` says so. (ITK returns NaN posteriors there.)

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when no sensitivity or specificity changes by more than ``tol``.
        prior: ``"global"``, ``"estimate"`` or a fixed foreground prior in ``(0, 1)``.
        threshold: ``labels_`` is ``posteriors_ >= threshold``.

    Attributes:
        posteriors_ (ndarray of shape spatial): ``float64`` P(true label 1 | raters' masks).
        labels_ (ndarray of shape spatial): ``bool`` consensus mask.
        sensitivity_ (ndarray of shape (n_raters,)): ``p`` of each rater.
        specificity_ (ndarray of shape (n_raters,)): ``q`` of each rater.
        confusion_ (ndarray of shape (n_raters, 2, 2)): ``[[q, 1-q], [1-p, p]]`` per rater,
            ``confusion[r, true, said]`` (rows sum to 1).
        prior_ (float): Foreground prior ``g`` used in the last E-step.
        log_likelihoods_ (list[float]): log P(masks) after each iteration; never decreases.
        n_iter_ (int): Number of EM iterations run.
        converged_ (bool): Whether ``tol`` was reached.
        n_raters_ (int): Number of raters seen in ``fit``.

    References:
        Warfield, Zou & Wells (2004). Simultaneous truth and performance level estimation
        (STAPLE). IEEE TMI 23(7). https://doi.org/10.1109/TMI.2004.828354

    Examples:
        >>> masks = np.zeros((3, 4, 4), dtype=bool)
        >>> masks[:, 1:3, 1:3] = True
        >>> masks[2, 0, 0] = True  # rater 2 adds a stray voxel
        >>> st = STAPLE().fit(masks)
        >>> int(st.labels_.sum()), bool(st.labels_[0, 0])
        (4, False)
        >>> st.sensitivity_.round(3).tolist()
        [1.0, 1.0, 1.0]
    """

    _parameter_constraints: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {
        "max_iter": interval(0, None, integer=True),
        "tol": interval(0, None),
        "prior": _prior_constraint(False),
        "threshold": interval(0, 1),
    }

    posteriors_: np.ndarray
    labels_: np.ndarray
    sensitivity_: np.ndarray
    specificity_: np.ndarray
    confusion_: np.ndarray
    prior_: float
    log_likelihoods_: list[float]
    n_iter_: int
    converged_: bool
    n_raters_: int

    def __init__(
        self,
        *,
        max_iter: int = 1000,
        tol: float = 1e-7,
        prior: float | str = "global",
        threshold: float = 0.5,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.prior = prior
        self.threshold = threshold

    # ------------------------------------------------------------------ fitting
    def fit(self, masks: Any) -> Self:
        """Fit STAPLE to the binary masks of one case.

        Args:
            masks: Boolean array of shape ``(n_raters, *spatial)`` (0/1 numbers are accepted),
                or a list of ``n_raters`` boolean arrays of the same shape (2-D or 3-D).

        Returns:
            The fitted estimator.

        Raises:
            ValueError: Fewer than 2 raters, masks of different shapes, NaN or non-binary
                values (the message names the rater).
        """
        check_params(self, self._parameter_constraints)
        stack = check_masks(masks)
        (result,) = _fit_binary([stack], self)
        _warn_not_converged("STAPLE", np.array([not result["converged_"]]), self.max_iter, 1)
        _warn_degenerate([result], 1)
        for name, value in result.items():
            setattr(self, name, value)
        return self

    def fit_batch(self, cases: Any) -> list[STAPLE]:
        """Fit one STAPLE model per case, all cases in one vectorised EM loop.

        Each case gets its own sensitivities, specificities and prior, exactly as if
        :meth:`fit` were called on it; cases may differ in shape and number of raters.

        Args:
            cases: A list of cases, each a boolean array of shape ``(n_raters, *spatial)``
                (or a list of rater masks), or one array of shape
                ``(n_cases, n_raters, *spatial)``.

        Returns:
            One fitted :class:`STAPLE` (with this estimator's parameters) per case.
        """
        check_params(self, self._parameter_constraints)
        stacks = [check_masks(c, what=f"cases[{i}]") for i, c in enumerate(check_cases(cases))]
        results = _fit_binary(stacks, self)
        failed = np.array([not r["converged_"] for r in results])
        _warn_not_converged("STAPLE", failed, self.max_iter, len(results))
        _warn_degenerate(results, len(results))
        fitted = []
        for result in results:
            est = copy.copy(self)
            for name, value in result.items():
                setattr(est, name, value)
            fitted.append(est)
        return fitted

    def fit_predict_proba(self, masks: Any) -> np.ndarray:
        """Fit and return ``posteriors_`` (see :meth:`fit`)."""
        return self.fit(masks).posteriors_

    def fit_predict(self, masks: Any) -> np.ndarray:
        """Fit and return ``labels_`` (see :meth:`fit`)."""
        return self.fit(masks).labels_

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, masks: Any) -> np.ndarray:
        """P(true label 1) of every voxel of new masks by the fitted raters (an E-step).

        Args:
            masks: Boolean array of shape ``(n_raters, *spatial)`` from the raters of ``fit``.

        Returns:
            ``float64`` array of shape ``spatial``.
        """
        self._check_is_fitted()
        stack = check_masks(masks)
        if stack.shape[0] != self.n_raters_:
            raise ValueError(
                f"`masks` must come from the {self.n_raters_} raters seen in fit; got "
                f"{stack.shape[0]} raters."
            )
        if not (np.isfinite(self.sensitivity_).all() and np.isfinite(self.specificity_).all()):
            raise ValueError(
                "The fitted sensitivities/specificities are undefined (the fit saw only empty "
                "or only full masks); refit on masks with both foreground and background."
            )
        pats = patterns(stack, 2)
        b = pats.decisions.astype(bool)
        la, lb = _binary_log_joint(
            b,
            np.zeros(len(b), dtype=np.int64),
            self.sensitivity_[None],
            self.specificity_[None],
            np.array([self.prior_]),
        )
        w, _ = _binary_normalise(la, lb, np.array([self.prior_]), np.zeros(len(b), np.int64))
        return w[pats.inverse].reshape(stack.shape[1:])

    def predict(self, masks: Any) -> np.ndarray:
        """Consensus mask of new masks: ``predict_proba(masks) >= threshold``."""
        return self.predict_proba(masks) >= self.threshold


def _binary_log_joint(
    b: np.ndarray, case: np.ndarray, p: np.ndarray, q: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """log(g·Π P(decisions | 1)) and log((1-g)·Π P(decisions | 0)) per pattern.

    Log space: a product of many raters' probabilities underflows; zeros (p or q exactly 0 or
    1, common when raters agree everywhere) become ``-inf`` and are handled by the caller.
    """
    with np.errstate(divide="ignore"):
        lp, l1p = np.log(p), np.log1p(-p)
        lq, l1q = np.log(q), np.log1p(-q)
        lg, l1g = np.log(g), np.log1p(-g)
    la = np.where(b, lp[case], l1p[case]).sum(axis=1) + lg[case]
    lb = np.where(b, l1q[case], lq[case]).sum(axis=1) + l1g[case]
    return la, lb


def _binary_normalise(
    la: np.ndarray, lb: np.ndarray, g: np.ndarray, case: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of label 1 and log P(pattern) from the two log joints."""
    m = np.maximum(la, lb)
    finite = np.isfinite(m)
    m_safe = np.where(finite, m, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        ea, eb = np.exp(la - m_safe), np.exp(lb - m_safe)
        total = ea + eb
        w = np.where(finite, ea / np.where(total > 0, total, 1.0), g[case])
        lse = np.where(finite, m_safe + np.log(np.where(total > 0, total, 1.0)), -np.inf)
    return w, lse


def _warn_degenerate(results: Sequence[dict[str, Any]], n_cases: int) -> None:
    empty = [i for i, r in enumerate(results) if r.pop("_degenerate", "") == "empty"]
    full = [i for i, r in enumerate(results) if r.pop("_degenerate_full", False)]
    for what, idx, undefined in (
        ("empty", empty, "sensitivity"),
        ("full (every voxel foreground)", full, "specificity"),
    ):
        if not idx:
            continue
        where = "" if n_cases == 1 else f" in cases {idx[:10]}{'...' if len(idx) > 10 else ''}"
        warnings.warn(
            f"Every rater's mask is {what}{where}: the consensus is {what.split()[0]} and the "
            f"raters' {undefined} is undefined (NaN).",
            UserWarning,
            stacklevel=4,
        )


def _fit_binary(stacks: list[np.ndarray], est: STAPLE) -> list[dict[str, Any]]:
    """Vectorised EM over a batch of binary cases; one result dictionary per case."""
    results: list[dict[str, Any] | None] = [None] * len(stacks)
    by_raters: dict[int, list[int]] = {}
    for i, s in enumerate(stacks):
        by_raters.setdefault(s.shape[0], []).append(i)
    for n_raters, members in by_raters.items():
        pats = [patterns(stacks[i], 2) for i in members]
        group = _fit_binary_group(pats, n_raters, est)
        for j, i in enumerate(members):
            res = group[j]
            w = res.pop("_w")
            post = w[pats[j].inverse].reshape(stacks[i].shape[1:])
            res["posteriors_"] = post
            res["labels_"] = post >= est.threshold
            res["n_raters_"] = n_raters
            results[i] = res
    return [r for r in results if r is not None]


def _fit_binary_group(pats: list[Any], n_raters: int, est: STAPLE) -> list[dict[str, Any]]:
    n_cases = len(pats)
    sizes = np.array([len(p.counts) for p in pats])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    case = np.repeat(np.arange(n_cases), sizes)
    b = np.concatenate([p.decisions for p in pats]).astype(bool)
    bf = b.astype(np.float64)
    n = np.concatenate([p.counts for p in pats])
    n_vox = _segment_sum(n, starts)
    fg_votes = _segment_sum(n * bf.sum(axis=1), starts)
    global_prior = fg_votes / (n_raters * n_vox)
    empty = fg_votes == 0
    full = fg_votes == n_raters * n_vox
    degenerate = empty | full
    fixed = not isinstance(est.prior, str)
    g = np.full(n_cases, float(est.prior)) if fixed else global_prior.copy()
    w = bf.mean(axis=1)  # initial posteriors: the raters' mean (soft vote), as in ITK
    p = np.full((n_cases, n_raters), np.nan)
    q = np.full((n_cases, n_raters), np.nan)
    active = ~degenerate
    n_iter = np.zeros(n_cases, dtype=np.int64)
    converged = degenerate.copy()
    history: list[list[float]] = [[] for _ in range(n_cases)]

    def m_step(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nw = n * w
        nv = n - nw
        den_p = _segment_sum(nw, starts)
        den_q = _segment_sum(nv, starts)
        num_p = _segment_sum(nw[:, None] * bf, starts)
        num_q = _segment_sum(nv[:, None] * (1.0 - bf), starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            return num_p / den_p[:, None], num_q / den_q[:, None], den_p / n_vox

    if est.max_iter == 0:
        p, q, _ = m_step(w)
    for it in range(est.max_iter):
        if not active.any():
            break
        p_new, q_new, g_new = m_step(w)
        if est.prior == "estimate":
            g = np.where(active, g_new, g)
        la, lb = _binary_log_joint(b, case, p_new, q_new, g)
        w_new, lse = _binary_normalise(la, lb, g, case)
        ll = _segment_sum(n * lse, starts)
        delta = np.maximum(np.abs(p_new - p), np.abs(q_new - q)).max(axis=1)
        act_u = active[case]
        w = np.where(act_u, w_new, w)
        p = np.where(active[:, None], p_new, p)
        q = np.where(active[:, None], q_new, q)
        n_iter += active
        for ci in np.flatnonzero(active):
            history[ci].append(float(ll[ci]))
        done = active & (delta <= est.tol) if it > 0 else np.zeros(n_cases, dtype=bool)
        converged |= done
        active &= ~done
    # Degenerate cases: every rater agrees everywhere on one label.
    p[empty] = np.nan
    q[empty] = 1.0
    p[full] = 1.0
    q[full] = np.nan
    w = np.where(degenerate[case], bf[:, 0], w)
    out = []
    for c in range(n_cases):
        pc, qc = p[c].copy(), q[c].copy()
        confusion = np.stack([np.stack([qc, 1 - qc], -1), np.stack([1 - pc, pc], -1)], axis=1)
        res: dict[str, Any] = {
            "_w": w[starts[c] : starts[c] + sizes[c]],
            "sensitivity_": pc,
            "specificity_": qc,
            "confusion_": confusion,
            "prior_": float(g[c]),
            "log_likelihoods_": history[c],
            "n_iter_": int(n_iter[c]),
            "converged_": bool(converged[c]) or est.max_iter == 0,
        }
        if empty[c]:
            res["_degenerate"] = "empty"
        if full[c]:
            res["_degenerate_full"] = True
        out.append(res)
    if est.max_iter == 0:
        for res in out:
            res["converged_"] = False
    return out


# ====================================================================== multi-label STAPLE
class MultiLabelSTAPLE(_MaskEstimator):
    """Multi-label STAPLE: consensus label map and a confusion matrix per rater by EM.

    Each rater ``r`` has a confusion matrix ``confusion[r, k, l] = P(rater says l | true class
    k)``; the true class of a voxel has prior ``prior_``. The definitions follow ITK's
    ``MultiLabelSTAPLEImageFilter`` (Rohlfing et al. 2004):

    * The starting confusion matrices come from the hard majority vote: for each rater, the
      counts of (its label, voted label) normalised per rater label. ITK files a voxel where
      the vote ties under (the rater's label + 1, class 0) — a side effect of its row-major
      ``(K+1) × K`` storage — and crowdmed does the same so that both agree to rounding error;
      EM does not always forget its start (on LIDC nodules, leaving tied voxels out instead
      changed some confusion entries by up to 0.18).
    * ``prior="global"`` fixes the class prior to the frequency of each label among all raters'
      voxels; an array fixes it (normalised to sum 1); ``"estimate"`` re-estimates it.
    * EM stops when no confusion-matrix entry changes by ``tol`` or more (ITK's
      ``TerminationUpdateThreshold``); the last step is an E-step with the final matrices.
    * ``labels_`` is the most probable class; a voxel whose top classes tie (within 1e-12) gets
      ``undecided`` (ITK writes ``K``, its "undecided" label; ``undecided=None`` takes the lowest
      tied class). ITK's confusion matrices have shape ``(K+1, K)`` with the rater's label in
      the rows and the true class in the columns; ``confusion_matrices_`` is its transpose
      without the "undecided" row, in crowdmed's convention.
    * ``-1`` marks a voxel a rater did not annotate: it is left out of that rater's terms
      (ITK has no such marker).
    * A class that receives no posterior mass keeps a row of zeros (as in ITK). A pattern of
      decisions that the fitted matrices give probability 0 under every class (possible when
      some entries are exactly 0) carries no weight in EM, as in ITK, is labelled
      ``undecided``, and gets the class prior as its reported posterior.

    Args:
        max_iter: Maximum number of EM iterations.
        tol: Stop when the largest change of a confusion-matrix entry is below ``tol``.
        prior: ``"global"``, ``"estimate"`` or fixed class weights of shape ``(n_classes,)``.
        undecided: Label written where the most probable classes tie; ``None`` takes the
            lowest tied class.

    Attributes:
        posteriors_ (ndarray of shape (n_classes, *spatial)): ``float64`` P(true class).
        labels_ (ndarray of shape spatial): ``int64`` consensus label map.
        confusion_matrices_ (ndarray of shape (n_raters, n_classes, n_classes)): see above.
        sensitivity_ (ndarray of shape (n_raters, n_classes)): Diagonals of the confusion
            matrices, P(rater says k | true class k).
        prior_ (ndarray of shape (n_classes,)): Class prior of the last E-step.
        log_likelihoods_ (list[float]): log P(label maps) after each iteration.
        n_iter_ (int): Number of EM iterations run (ITK's ``ElapsedNumberOfIterations`` is
            ``n_iter_ - 1`` after convergence).
        converged_ (bool): Whether ``tol`` was reached.
        n_classes_ (int): Number of classes ``K``.
        n_raters_ (int): Number of raters seen in ``fit``.

    References:
        Rohlfing, Russakoff & Maurer (2004). Performance-based classifier combination in
        atlas-based image segmentation using expectation-maximization parameter estimation.
        IEEE TMI 23(8). https://doi.org/10.1109/TMI.2004.830803

    Examples:
        >>> labels = np.array([[0, 1, 2, 2], [0, 1, 2, 1], [0, 1, 1, 2]])  # 3 raters, 4 voxels
        >>> MultiLabelSTAPLE().fit(labels).labels_.tolist()
        [0, 1, 2, 2]
    """

    _parameter_constraints: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {
        "max_iter": interval(0, None, integer=True),
        "tol": interval(0, None),
        "prior": _prior_constraint(True),
    }

    posteriors_: np.ndarray
    labels_: np.ndarray
    confusion_matrices_: np.ndarray
    sensitivity_: np.ndarray
    prior_: np.ndarray
    log_likelihoods_: list[float]
    n_iter_: int
    converged_: bool
    n_classes_: int
    n_raters_: int

    def __init__(
        self,
        *,
        max_iter: int = 1000,
        tol: float = 1e-5,
        prior: str | Sequence[float] | np.ndarray = "global",
        undecided: int | None = -1,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.prior = prior
        self.undecided = undecided

    def _check(self) -> None:
        check_params(self, self._parameter_constraints)
        u = self.undecided
        if u is not None and (isinstance(u, bool) or not isinstance(u, (int, np.integer))):
            raise ValueError(f"`undecided` must be an int or None; got {u!r}.")

    def fit(self, labels: Any, *, n_classes: int | None = None) -> Self:
        """Fit multi-label STAPLE to the label maps of one case.

        Args:
            labels: Integer array of shape ``(n_raters, *spatial)`` with classes ``0..K-1``
                (``-1`` = not annotated), or a list of such label maps.
            n_classes: Number of classes ``K``; the largest label plus one when omitted.

        Returns:
            The fitted estimator.

        Raises:
            ValueError: Fewer than 2 raters, maps of different shapes, NaN, or labels outside
                ``-1..K-1`` (the message names the rater).
        """
        self._check()
        stack, k = check_label_maps(labels, n_classes=n_classes)
        self._check_prior(k)
        (result,) = _fit_multilabel([stack], [k], self)
        _warn_not_converged(
            "MultiLabelSTAPLE", np.array([not result["converged_"]]), self.max_iter, 1
        )
        for name, value in result.items():
            setattr(self, name, value)
        return self

    def fit_batch(self, cases: Any, *, n_classes: int | None = None) -> list[MultiLabelSTAPLE]:
        """Fit one model per case, all cases in one vectorised EM loop.

        Args:
            cases: A list of cases, each an integer array of shape ``(n_raters, *spatial)``.
            n_classes: Number of classes ``K`` of every case; per case the largest label plus
                one when omitted (as ITK does).

        Returns:
            One fitted :class:`MultiLabelSTAPLE` per case.
        """
        self._check()
        checked = [
            check_label_maps(c, n_classes=n_classes, what=f"cases[{i}]")
            for i, c in enumerate(check_cases(cases))
        ]
        for _, k in checked:
            self._check_prior(k)
        results = _fit_multilabel([s for s, _ in checked], [k for _, k in checked], self)
        failed = np.array([not r["converged_"] for r in results])
        _warn_not_converged("MultiLabelSTAPLE", failed, self.max_iter, len(results))
        fitted = []
        for result in results:
            est = copy.copy(self)
            for name, value in result.items():
                setattr(est, name, value)
            fitted.append(est)
        return fitted

    def _check_prior(self, k: int) -> None:
        if isinstance(self.prior, str):
            return
        if len(self.prior) != k:
            raise ValueError(
                f"`prior` must have one weight per class ({k}); got {len(self.prior)}."
            )

    def fit_predict(self, labels: Any, **kwargs: Any) -> np.ndarray:
        """Fit and return ``labels_`` (see :meth:`fit`)."""
        return self.fit(labels, **kwargs).labels_

    def fit_predict_proba(self, labels: Any, **kwargs: Any) -> np.ndarray:
        """Fit and return ``posteriors_`` (see :meth:`fit`)."""
        return self.fit(labels, **kwargs).posteriors_

    def _e_step_new(self, labels: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        self._check_is_fitted()
        stack, k = check_label_maps(labels, n_classes=self.n_classes_)
        if stack.shape[0] != self.n_raters_:
            raise ValueError(
                f"`labels` must come from the {self.n_raters_} raters seen in fit; got "
                f"{stack.shape[0]} raters."
            )
        pats = patterns(stack, k + 1)
        theta = np.transpose(self.confusion_matrices_, (0, 2, 1))[None]
        w, _ = _ml_e_step(
            pats.decisions, np.zeros(len(pats.counts), np.int64), theta, self.prior_[None]
        )
        return w, pats.inverse, stack.shape[1:]

    def predict_proba(self, labels: Any) -> np.ndarray:
        """Class posteriors of new label maps by the fitted raters (an E-step).

        Args:
            labels: Integer array of shape ``(n_raters, *spatial)`` from the raters of ``fit``.

        Returns:
            ``float64`` array of shape ``(n_classes, *spatial)``.
        """
        w, inverse, spatial = self._e_step_new(labels)
        w = np.where((w.sum(axis=1) == 0)[:, None], self.prior_[None, :], w)
        return w.T[:, inverse].reshape(w.shape[1], *spatial)

    def predict(self, labels: Any) -> np.ndarray:
        """Consensus label map of new label maps (ties as in ``labels_``)."""
        w, inverse, spatial = self._e_step_new(labels)
        return _ml_labels(w, self.undecided)[inverse].reshape(spatial)


def _ml_e_step(
    d: np.ndarray, case: np.ndarray, theta: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors ``(n_patterns, K)`` and log P(pattern) under ``theta[c, r, said, true]``.

    Log space (products of many raters' probabilities underflow). A pattern that every class
    explains with probability 0 gets all-zero posteriors, as in ITK.
    """
    n_raters = d.shape[1]
    with np.errstate(divide="ignore"):
        log_theta = np.log(theta)
        log_prior = np.log(prior)
    seen = d >= 0
    dd = np.where(seen, d, 0)
    terms = log_theta[case[:, None], np.arange(n_raters)[None, :], dd, :]  # (U, R, K)
    terms = np.where(seen[..., None], terms, 0.0)
    log_joint = terms.sum(axis=1) + log_prior[case]
    m = log_joint.max(axis=1, keepdims=True)
    finite = np.isfinite(m)
    m_safe = np.where(finite, m, 0.0)
    e = np.exp(log_joint - m_safe)
    total = e.sum(axis=1, keepdims=True)
    ok = finite & (total > 0)
    w = np.where(ok, e / np.where(ok, total, 1.0), 0.0)
    lse = np.where(ok[:, 0], (m_safe + np.log(np.where(ok, total, 1.0)))[:, 0], -np.inf)
    return w, lse


def _ml_labels(w: np.ndarray, undecided: int | None) -> np.ndarray:
    top = w.max(axis=1, keepdims=True)
    tied = w >= top - 1e-12
    labels = np.argmax(tied, axis=1).astype(np.int64)
    if undecided is not None:
        labels[(tied.sum(axis=1) > 1) | (top[:, 0] <= 0)] = undecided
    return labels


def _fit_multilabel(
    stacks: list[np.ndarray], ks: list[int], est: MultiLabelSTAPLE
) -> list[dict[str, Any]]:
    results: list[dict[str, Any] | None] = [None] * len(stacks)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (s, k) in enumerate(zip(stacks, ks, strict=True)):
        groups.setdefault((s.shape[0], k), []).append(i)
    for (n_raters, k), members in groups.items():
        pats = [patterns(stacks[i], k + 1) for i in members]
        group = _fit_multilabel_group(pats, n_raters, k, est)
        for j, i in enumerate(members):
            res = group[j]
            w = res.pop("_w")
            spatial = stacks[i].shape[1:]
            res["labels_"] = _ml_labels(w, est.undecided)[pats[j].inverse].reshape(spatial)
            # Patterns the fitted model deems impossible keep zero weight in EM (as in ITK);
            # report the class prior for them so that posteriors always sum to 1.
            impossible = w.sum(axis=1) == 0
            w = np.where(impossible[:, None], res["prior_"][None, :], w)
            res["posteriors_"] = w.T[:, pats[j].inverse].reshape(k, *spatial)
            res["n_raters_"] = n_raters
            res["n_classes_"] = k
            results[i] = res
    return [r for r in results if r is not None]


def _ml_initial_theta(
    onehot: np.ndarray,
    n: np.ndarray,
    d: np.ndarray,
    case: np.ndarray,
    index: tuple[np.ndarray, np.ndarray],
    n_cases: int,
    n_raters: int,
) -> np.ndarray:
    """ITK's initial matrices ``(C, R, K + 1, K)`` from the hard majority vote of each pattern.

    Patterns with a unique winner count for it; a tie counts in the cell ITK's storage puts it
    in. Rows are normalised per said label; the last row is ITK's 'undecided' rater label.
    """
    flat_idx, seen_f = index
    n_u, k = onehot.shape
    seen = d >= 0
    size = n_cases * n_raters * k * k
    votes = onehot
    top = votes.max(axis=1, keepdims=True)
    winners = (votes == top) & (top > 0)
    unique_vote = winners.sum(axis=1) == 1
    w0 = np.where(unique_vote[:, None], winners.astype(np.float64), 0.0)
    weights = np.broadcast_to((n[:, None] * w0)[:, None, :], (n_u, n_raters, k)).ravel()
    counts0: np.ndarray = np.bincount(flat_idx[seen_f], weights=weights[seen_f], minlength=size)
    counts0 = counts0.reshape(n_cases, n_raters, k, k)
    # ITK adds a tied voxel of the initial vote to the cell after (said, undecided) in its
    # row-major (K+1) x K storage, i.e. to (said + 1, true class 0).
    tie_w = np.where(unique_vote, 0.0, n)
    extra: np.ndarray = np.zeros(n_cases * n_raters * (k + 1) * k)
    for r in range(n_raters):
        ok = seen[:, r]
        cell = ((case[ok] * n_raters + r) * (k + 1) + d[ok, r] + 1) * k
        extra += np.bincount(cell, weights=tie_w[ok], minlength=extra.size)
    extra = extra.reshape(n_cases, n_raters, k + 1, k)
    counts0 = np.concatenate([counts0, np.zeros((n_cases, n_raters, 1, k))], axis=2) + extra
    row = counts0.sum(axis=3, keepdims=True)
    init = np.divide(counts0, row, out=np.zeros_like(counts0), where=row > 0)
    return init


def _fit_multilabel_group(
    pats: list[Any], n_raters: int, k: int, est: MultiLabelSTAPLE
) -> list[dict[str, Any]]:
    n_cases = len(pats)
    sizes = np.array([len(p.counts) for p in pats])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    case = np.repeat(np.arange(n_cases), sizes)
    d = np.concatenate([p.decisions for p in pats])
    n = np.concatenate([p.counts for p in pats])
    n_u = len(n)
    seen = d >= 0
    n_vox = _segment_sum(n, starts)

    # Counts of (case, rater, said label) — the data side of every M-step.
    onehot = np.zeros((n_u, k))
    for r in range(n_raters):
        np.add.at(onehot, (np.flatnonzero(seen[:, r]), d[seen[:, r], r]), 1.0)
    label_counts = _segment_sum(n[:, None] * onehot, starts)  # (C, K) over all raters
    if isinstance(est.prior, str):
        prior = label_counts / label_counts.sum(axis=1, keepdims=True)
    else:
        given = np.asarray(est.prior, dtype=np.float64)
        prior = np.tile(given / given.sum(), (n_cases, 1))

    # Index of (case, rater, said, true) for the M-step's single bincount.
    rr = np.broadcast_to(np.arange(n_raters), (n_u, n_raters))
    base = ((case[:, None] * n_raters + rr) * k + np.where(seen, d, 0)) * k  # (U, R)
    flat_idx = (base[:, :, None] + np.arange(k)).ravel()
    seen_f = np.broadcast_to(seen[:, :, None], (n_u, n_raters, k)).ravel()
    size = n_cases * n_raters * k * k

    def m_step(w: np.ndarray) -> np.ndarray:
        weights = np.broadcast_to((n[:, None] * w)[:, None, :], (n_u, n_raters, k)).ravel()
        num = np.bincount(flat_idx[seen_f], weights=weights[seen_f], minlength=size)
        num = num.reshape(n_cases, n_raters, k, k)  # [c, r, said, true]
        den = num.sum(axis=2, keepdims=True)
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    # Initial matrices from the hard majority vote (ties left out), normalised per said label.
    init = _ml_initial_theta(onehot, n, d, case, (flat_idx, seen_f), n_cases, n_raters)
    theta = init  # (C, R, K + 1, K): the last row is ITK's 'undecided' rater label

    active = np.ones(n_cases, dtype=bool)
    converged = np.zeros(n_cases, dtype=bool)
    n_iter = np.zeros(n_cases, dtype=np.int64)
    history: list[list[float]] = [[] for _ in range(n_cases)]
    w, _ = _ml_e_step(d, case, theta, prior)
    for _ in range(est.max_iter):
        if not active.any():
            break
        theta_new = m_step(w)
        prior_new = prior
        if isinstance(est.prior, str) and est.prior == "estimate":
            prior_new = _segment_sum(n[:, None] * w, starts) / n_vox[:, None]
        theta_new = np.concatenate([theta_new, np.zeros((n_cases, n_raters, 1, k))], axis=2)
        delta = np.abs(theta_new - theta).reshape(n_cases, -1).max(axis=1)
        theta = np.where(active[:, None, None, None], theta_new, theta)
        prior = np.where(active[:, None], prior_new, prior)
        w_new, lse = _ml_e_step(d, case, theta, prior)
        w = np.where(active[case][:, None], w_new, w)
        ll = _segment_sum(n * np.where(np.isfinite(lse), lse, 0.0), starts)
        n_iter += active
        for ci in np.flatnonzero(active):
            history[ci].append(float(ll[ci]))
        done = active & (delta < est.tol)
        converged |= done
        active &= ~done
    out = []
    for c in range(n_cases):
        confusion = np.transpose(theta[c, :, :k], (0, 2, 1)).copy()  # [r, true, said]
        out.append(
            {
                "_w": w[starts[c] : starts[c] + sizes[c]],
                "confusion_matrices_": confusion,
                "sensitivity_": np.diagonal(confusion, axis1=1, axis2=2).copy(),
                "prior_": prior[c].copy(),
                "log_likelihoods_": history[c],
                "n_iter_": int(n_iter[c]),
                "converged_": bool(converged[c]),
            }
        )
    return out
