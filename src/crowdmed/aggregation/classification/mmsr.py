"""M-MSR: annotator skills by robust rank-one completion of their agreement matrix."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from crowdmed._validation import check_random_state, interval
from crowdmed.aggregation.base import BaseAggregator, normalize_log
from crowdmed.data.labels import CrowdLabels
from crowdmed.exceptions import ConvergenceWarning

__all__ = ["MMSR"]


def _check_n_trim(value: Any) -> str | None:
    return None if value is None else interval(0, None, integer=True)(value)


class _Pairs:
    """Observed annotator pairs (both orders), grouped by column: the sparse ``C`` of M-MSR.

    ``C`` is symmetric, so the rows of its CSR form are its columns: entry ``e`` is the pair
    ``(rows[e], cols[e])`` and the entries of column ``j`` are contiguous, ``per_col[j]`` of
    them from ``starts[j]``. Indices are int32 and two float64 work buffers are kept for the
    half-steps, so memory is about 40 bytes per observed pair (ordered).
    """

    def __init__(self, cl: CrowdLabels) -> None:
        k, n_a = cl.n_classes, cl.n_annotators
        ones = np.ones(cl.n_labels, dtype=np.float32)  # counts stay exact below 2**24
        b = sp.csr_matrix((ones, (cl.annotators, cl.items)), shape=(n_a, cl.n_items))
        common = (b @ b.T).tocsr()
        del b
        common.sort_indices()
        per_row = np.diff(common.indptr)
        group = np.repeat(np.arange(n_a, dtype=np.int32), per_row)
        off = common.indices != group  # drop the diagonal
        self.cols = group[off]
        self.rows = common.indices[off].astype(np.int32)
        self.n_common = common.data[off].astype(np.int32)
        del common, group, off
        b_lab = sp.csr_matrix(
            (ones, (cl.annotators, cl.items * k + cl.labels)), shape=(n_a, cl.n_items * k)
        )
        agree = (b_lab @ b_lab.T).tocsr()
        del b_lab
        # agree[j, i] for every observed pair; a pair that never agreed is 0.
        same = np.asarray(agree[self.cols, self.rows], dtype=np.float64).ravel()
        del agree
        # C_ij = (K P(agree) - 1) / (K - 1): the covariance of the annotators' correctness.
        same *= k / self.n_common
        same -= 1.0
        same /= k - 1
        self.cov = same
        self.per_col = np.bincount(self.cols, minlength=n_a)
        self.starts = np.concatenate([[0], np.cumsum(self.per_col)[:-1]])
        self.buffers = (np.empty(len(self.cov)), np.empty(len(self.cov)))

    @property
    def abs_cov(self) -> np.ndarray:
        return np.abs(self.cov)


class MMSR(BaseAggregator):
    """M-MSR: matrix mean-subsequence-reduced skill estimation, then a weighted vote.

    Under the one-coin model annotator ``j`` is right with probability ``p_j``. With
    ``s_j = (K p_j - 1) / (K - 1)``, the covariance of two annotators' labels,
    ``C_ij = (K · P(i and j agree) - 1) / (K - 1)``, has expectation ``s_i s_j``: the skills are
    a rank-one completion of the observed entries of ``C``. M-MSR solves it robustly: it
    alternates ``v_j ← trimmed mean over i of |C_ij| / u_i`` and ``u_i ← trimmed mean over j of
    |C_ij| / v_j``, dropping the ``F`` largest and ``F`` smallest ratios on either side of the
    current value (``F = ⌊min co-annotators / 2⌋ - 1``, the number of adversaries tolerated),
    until ``u vᵀ`` moves by less than ``tol`` (Frobenius norm). Then ``|s| = u / √(‖u‖/‖v‖)``,
    the signs come from the sign pattern of ``C``, and ``s`` is clipped to
    ``[-1/(K-1) + 1/√n_items, 1 - 1/√n_items]``. Items take the vote weighted by
    ``log((K - 1) p_j / (1 - p_j))``, the one-coin log-odds, and ``posteriors_`` are the
    one-coin posteriors with a uniform class prior (the softmax of the weighted votes).

    ``C`` is built from sparse products of the ``(annotator, item)`` and ``(annotator, item ×
    label)`` incidence matrices and kept as the list of observed pairs; each half-step sorts the
    ratios by column once and takes all trimmed means with ``np.add.reduceat``. Memory grows with
    the number of annotator pairs that share an item, never with ``n_annotators × n_items``.

    Differences from crowd-kit 1.4.2's ``MMSR`` (equal results otherwise, see the tests):

    - crowd-kit's ``F`` is ``-1`` when some annotator shares items with fewer than two others,
      and its trimming then keeps only the largest ratio (a negative slice); here ``F`` is
      at least 0 (no trimming).
    - Signs: crowd-kit 2-colours a graph of all annotator pairs with the smallest eigenvector
      of a dense random-walk matrix with one extra node per positive pair, counting pairs
      that share no item as negative. Here the signs are those of the leading eigenvector of
      the observed ``C`` (its Perron vector up to the signs of ``s``), per connected
      component of annotators, flipped so that most annotators of a component are positive.
      crowd-kit's global flip is ``sign(Σ eigenvector signs)``, which is 0 when they balance:
      then every skill is ``1/K``, every weight 0 and crowd-kit labels no item (the NIH
      CXR14 and CheXpert rows of the benchmark).
    - crowd-kit rescales ``u`` by the norms over all annotators; on a crowd that splits into
      groups sharing no items (CheXpert's reader × finding annotators: 14 groups of 3) the
      scale of each group is then set by the random start. Here it is set per group.
    - Annotators who share no item with anyone keep their random starting value in
      crowd-kit; here their skill is unknown (``p = 1/K``, weight 0).
    - crowd-kit's labels are the argmax of the vote shares ``scores / Σ scores``, which
      inverts the decision of items whose weights sum to a negative number; here they are the
      argmax of the weighted votes.

    Args:
        max_iter: Maximum number of M-MSR iterations.
        tol: Stop when ``‖u vᵀ - u' v'ᵀ‖_F`` falls below ``tol``.
        n_trim: ``F``, the number of ratios trimmed on each side; ``None`` for
            ``max(⌊min co-annotators / 2⌋ - 1, 0)``.
        random_state: Seed or ``numpy.random.Generator`` for the starting ``u = v ~ U(0, 1)``;
            ties go to the lowest class index.

    Attributes:
        skills_ (ndarray of shape (n_annotators,)): Probability ``p`` of a correct label.
        weights_ (ndarray of shape (n_annotators,)): Vote weights ``log((K-1) p / (1-p))``
            (crowd-kit's ``skills_``).
        scores_ (ndarray of shape (n_items, n_classes)): Weighted votes.
        posteriors_ (ndarray of shape (n_items, n_classes)): Softmax of ``scores_``.
        labels_ (ndarray of shape (n_items,)): Argmax of ``posteriors_``.
        n_trim_ (int): The ``F`` used.
        loss_history_ (list[float]): ``‖u vᵀ - u' v'ᵀ‖_F`` per iteration.
        n_iter_ (int): Number of iterations run.
        converged_ (bool): Whether ``tol`` was reached.
        log_likelihoods_ (list[float]): Always empty (M-MSR has no likelihood).

    References:
        Ma & Olshevsky (2020). Adversarial crowdsourcing through robust rank-one matrix
        completion. NeurIPS 33. https://doi.org/10.48550/arXiv.2010.12181

    Examples:
        >>> import numpy as np
        >>> from crowdmed.simulate import diagonal_confusion, simulate_labels
        >>> rng = np.random.default_rng(0)
        >>> truth = rng.integers(0, 3, 300)
        >>> conf = diagonal_confusion(20, 3, p=0.7, sigma=0.15, zeta=0.4, random_state=1)
        >>> labels = simulate_labels(truth, conf, labels_per_item=5, random_state=2)
        >>> mmsr = MMSR().fit(labels)
        >>> float((mmsr.labels_ == truth).mean()) > 0.85
        True
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "max_iter": interval(0, None, integer=True),
        "tol": interval(0, None),
        "n_trim": _check_n_trim,
    }

    def __init__(
        self,
        *,
        max_iter: int = 10_000,
        tol: float = 1e-10,
        n_trim: int | None = None,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        self.max_iter = max_iter
        self.tol = tol
        self.n_trim = n_trim
        self.random_state = random_state

    def _tie_random_state(self) -> None:
        """Ties go to the lowest class index: ``random_state`` seeds only the start."""
        return None

    def _init_uv(self, n_annotators: int) -> np.ndarray:
        """Starting value of both ``u`` and ``v``, shape ``(n_annotators,)``."""
        return check_random_state(self.random_state).uniform(size=n_annotators)

    @staticmethod
    def _half_step(
        pairs: _Pairs, other: np.ndarray, own: np.ndarray, f: int, n_items: int
    ) -> np.ndarray:
        """Trimmed means over each column of ``|C_ij| / other_i`` around ``own_j``."""
        vals, work = pairs.buffers
        np.abs(pairs.cov, out=vals)
        np.take(other, pairs.rows, out=work)
        # A co-annotator whose own estimate is 0 says nothing about this one (|C_ij| / 0):
        # its ratio is left out of the column, which crowd-kit's NaN would poison.
        invalid = ~(work > 0) if not bool((other > 0).all()) else None
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(vals, work, out=vals)
            # Sort the ratios within each column with one float sort: the key is the column
            # plus the ratio mapped into [0, 1) (ties only between ratios < 1e-11 apart).
            np.add(vals, 1.0, out=work)
            np.divide(vals, work, out=work)
        np.fmin(work, 0.999999, out=work)  # also replaces the NaN of an infinite ratio
        per_col = pairs.per_col
        if invalid is not None:  # left-out ratios sort after every kept one of their column
            work[invalid] = 0.9999995
            vals[invalid] = np.nan  # compares neither below nor above ``a``
            per_col = per_col - np.bincount(pairs.cols[invalid], minlength=len(own))
        work += pairs.cols
        order = np.argsort(work)
        np.take(vals, order, out=work)
        del order
        sorted_vals, a = work, vals
        np.take(own, pairs.cols, out=a)
        n = len(own)
        nonempty = pairs.per_col > 0
        idx = pairs.starts[nonempty]
        r_lo = np.zeros(n, dtype=np.int64)
        r_hi = np.zeros(n, dtype=np.int64)
        if len(idx):
            r_lo[nonempty] = np.add.reduceat(sorted_vals < a, idx, dtype=np.int64)
            r_hi[nonempty] = np.add.reduceat(sorted_vals > a, idx, dtype=np.int64)
        np.minimum(r_lo, f, out=r_lo)
        np.minimum(r_hi, f, out=r_hi)
        count = per_col - r_lo - r_hi
        # Keep the sorted positions [r_lo, count - r_hi) of each column: +1 where a kept run
        # starts, -1 where it ends, and a running sum.
        delta = np.zeros(len(sorted_vals) + 1, dtype=np.int8)
        live = count > 0
        np.add.at(delta, (pairs.starts + r_lo)[live], 1)
        np.add.at(delta, (pairs.starts + per_col - r_hi)[live], -1)
        keep = np.cumsum(delta[:-1], dtype=np.int8)
        if invalid is not None:
            sorted_vals[np.isnan(sorted_vals)] = 0.0  # the left-out ratios, never kept
        sorted_vals *= keep
        sums = np.zeros(n)
        if len(idx):
            sums[nonempty] = np.add.reduceat(sorted_vals, idx)
        new = own.copy()
        new[live] = sums[live] / count[live]
        # crowd-kit's rule: a single remaining ratio of 0 becomes 1/√n_items.
        new[(count == 1) & (sums == 0)] = 1.0 / np.sqrt(n_items)
        return new

    def _fit(self, cl: CrowdLabels, gold: np.ndarray | None) -> None:
        k, n_a = cl.n_classes, cl.n_annotators
        pairs = _Pairs(cl)
        if self.n_trim is None:
            sparsity = int(pairs.per_col.min()) if n_a else 0
            f = max(sparsity // 2 - 1, 0)
        else:
            f = int(self.n_trim)
        u = self._init_uv(n_a)
        v = u.copy()
        history: list[float] = []
        converged = False
        n_iter = 0
        for iteration in range(1, self.max_iter + 1):
            n_iter = iteration
            v_new = self._half_step(pairs, u, v, f, cl.n_items)
            u_new = self._half_step(pairs, v_new, u, f, cl.n_items)
            du, dv = u_new - u, v_new - v
            # ‖u'v'ᵀ - u vᵀ‖²_F = ‖du‖²‖v'‖² + 2 (du·u)(dv·v') + ‖u‖²‖dv‖², without the
            # cancellation of expanding both outer products.
            sq = du @ du * (v_new @ v_new) + 2 * (du @ u) * (dv @ v_new) + (u @ u) * (dv @ dv)
            history.append(float(np.sqrt(max(sq, 0.0))))
            u, v = u_new, v_new
            if history[-1] < self.tol:
                converged = True
                break
        if self.max_iter > 0 and not converged:
            warnings.warn(
                f"MMSR did not converge in max_iter={self.max_iter} iterations (last change "
                f"{history[-1]:.2e} > tol={self.tol}). Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        # u vᵀ fixes u and v only up to u → c u, v → v / c on each connected component of
        # annotators, so |s| = u / √(‖u‖/‖v‖) is taken per component (crowd-kit takes the
        # norms over all annotators: the same on a connected crowd).
        from scipy.sparse.csgraph import connected_components  # slow to load: when used

        _, comp = connected_components(
            sp.csr_matrix(
                (np.ones(len(pairs.rows)), pairs.rows, np.r_[0, np.cumsum(pairs.per_col)]),
                shape=(n_a, n_a),
            ),
            directed=False,
        )
        norm_u = np.bincount(comp, weights=u * u)
        norm_v = np.bincount(comp, weights=v * v)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(norm_v > 0, (norm_u / np.where(norm_v > 0, norm_v, 1.0)) ** 0.25, 1.0)
        scale = np.where(scale > 0, scale, 1.0)
        s = u / scale[comp] * self._signs(pairs, n_a, np.abs(u))
        has_pairs = pairs.per_col > 0
        s = np.where(has_pairs, s, 0.0)
        root = 1.0 / np.sqrt(cl.n_items)
        s = np.clip(s, -1.0 / (k - 1) + root, 1.0 - root)
        p = s * (k - 1) / k + 1.0 / k
        self.skills_ = np.where(has_pairs, p, 1.0 / k)
        self.weights_ = np.log(self.skills_ * (k - 1) / (1.0 - self.skills_))
        self.scores_ = self._scores(cl)
        post = normalize_log(self.scores_)[0]
        if gold is not None:
            known = gold >= 0
            post[known] = 0.0
            post[known, gold[known]] = 1.0
        self.posteriors_ = post
        self.n_trim_ = f
        self.loss_history_ = history
        self.n_iter_ = n_iter if self.max_iter > 0 else 0
        self.converged_ = converged
        self.log_likelihoods_: list[float] = []

    @staticmethod
    def _signs(pairs: _Pairs, n_a: int, start: np.ndarray) -> np.ndarray:
        """Signs of the skills: leading eigenvector of the observed ``C`` per component."""
        signs = np.ones(n_a)
        # C in CSR form straight from the pair list (grouped by column, C is symmetric);
        # exact zeros carry no sign and are left out.
        nonzero = pairs.cov != 0
        indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs.cols[nonzero], minlength=n_a))])
        graph = sp.csr_matrix((pairs.cov[nonzero], pairs.rows[nonzero], indptr), shape=(n_a, n_a))
        from scipy.sparse.csgraph import connected_components
        from scipy.sparse.linalg import eigsh  # imported when used: it is slow to load

        n_comp, comp = connected_components(graph, directed=False)
        sizes = np.bincount(comp, minlength=n_comp)
        for c in np.flatnonzero(sizes > 1):
            idx = np.flatnonzero(comp == c)
            sub = graph if len(idx) == n_a else graph[idx][:, idx]
            if len(idx) <= 50:
                _, vecs = np.linalg.eigh(sub.toarray())
                vec = vecs[:, -1]
            else:
                v0 = np.maximum(start[idx], 1e-3)
                vec = eigsh(sub, k=1, which="LA", v0=v0)[1][:, 0]
            sgn = np.where(vec < 0, -1.0, 1.0)
            if (sgn < 0).sum() > (sgn > 0).sum():
                sgn = -sgn
            signs[idx] = sgn
        return signs

    def _predict_proba(self, cl: CrowdLabels) -> np.ndarray:
        return normalize_log(self._scores(cl))[0]

    def _scores(self, cl: CrowdLabels) -> np.ndarray:
        # Rounded so that votes that are equal in exact arithmetic tie exactly (w1 + w2 - w2
        # and w1 differ in the last bit); ties then go to the lowest class index.
        return np.round(cl.vote_counts(self.weights_), 12)
