"""Cross-checks of KOS, MACE, M-MSR, ZeroBasedSkill and GoldMajorityVote against crowd-kit 1.4.2.

At a fixed number of iterations and from crowd-kit's starting values (subclasses below that
override only the start), crowdmed computes crowd-kit's numbers:

* ``KOS(max_iter=n, tol=0)`` = crowd-kit ``KOS(n_iter=n)``: the same labels (crowdmed divides
  the messages by their largest value after each iteration, which does not change a sign);
* ``MACE(max_iter=n, tol=0, n_restarts=1)`` = crowd-kit ``MACE(n_iter=n, n_restarts=1)`` for
  ``method="vb"`` and ``"em"``: posteriors to 1e-10 (measured 4e-15);
* ``MMSR(max_iter=n, tol=0)`` = crowd-kit ``MMSR(n_iter=n)``: vote weights (crowd-kit's
  ``skills_``) to 1e-8 for every annotator whose sign both give (measured 6e-15; crowd-kit's
  trimming parameter is at least 0 on these data sets). The signs differ for 12-28
  annotators per data set; crowdmed's agree with the annotators' covariances more often;
* ``ZeroBasedSkill()`` = crowd-kit ``ZeroBasedSkill()`` at the defaults: skills and
  posteriors to 1e-10 (crowdmed stops at the fixed point, crowd-kit runs 100 iterations);
* ``GoldMajorityVote().fit(labels, gold=g)`` = crowd-kit ``GoldMajorityVote().fit(df, g)``.

crowd-kit's MACE indexes its strategy counts in sorted worker and label order but its
parameters in order of first appearance (see the MACE docstring); the frames given to it are
therefore reordered so that both orders agree (:func:`mace_frame`), which is what a correct
implementation would compute. crowd-kit's MACE seeds every restart identically, so its
``n_restarts=10`` default equals ``n_restarts=1``, which the accuracy test uses.

At each library's defaults, crowdmed's accuracy against gold must be at least crowd-kit's
minus 0.2 points (exceptions are ``xfail(strict=True)`` with the measured reason).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdmed.aggregation import KOS, MACE, MMSR, GoldMajorityVote, ZeroBasedSkill
from crowdmed.aggregation.classification.mmsr import _Pairs
from crowdmed.data import CrowdLabels
from crowdmed.data.io import read_labels
from crowdmed.exceptions import ConvergenceWarning

pytest.importorskip("crowdkit")
ck = pytest.importorskip("crowdkit.aggregation")
sps = pytest.importorskip("scipy.stats")

ACC_SLACK = 0.002
ACT = "active_crowd_toolkit/Data"
VLDB = "truth_inference_vldb17/datasets"
DATASETS: dict[str, str] = {
    "CF": f"{ACT}/CF.csv",  # 300 items, 461 annotators, K = 5
    "CF_amt": f"{ACT}/CF_amt.csv",  # 300 items, 110 annotators, K = 5, repeated pairs
    "MS": f"{ACT}/MS.csv",  # 700 items, 44 annotators, K = 10
    "SP_amt": f"{ACT}/SP_amt.csv",  # 500 items, 143 annotators, K = 2
    "Dog": f"{VLDB}/s4_Dog data",  # 807 items, 109 annotators, K = 4
}
BINARY = ["SP_amt"]
# Datasets whose crowd-kit fits take seconds each run only with -m slow (M-MSR builds its
# covariances with a Python loop over annotator pairs; ZeroBasedSkill fits 100 pandas votes).
MACE_SLOW = {"CF", "CF_amt"}
MMSR_SLOW = {"CF", "CF_amt", "SP_amt"}
ZBS_SLOW = {"CF", "CF_amt", "SP_amt", "Dog"}


@functools.cache
def _load(root: Path, name: str) -> CrowdLabels:
    path = root / DATASETS[name]
    if not path.exists():
        pytest.skip(f"{path} not found; set CROWDMED_DATA to the shared data folder")
    if path.is_dir():  # Zheng et al. (VLDB 2017): answer.csv + truth.csv
        cl = read_labels(path / "answer.csv", item="question", annotator="worker", label="answer")
        truth = pd.read_csv(path / "truth.csv", dtype={"question": str})  # ids are text
        gold = pd.Series(truth["truth"].to_numpy(), index=truth["question"]).reindex(cl.item_ids)
        return cl.with_gold(pd.Index(cl.classes).get_indexer(gold.to_numpy()))
    return read_labels(path, on_duplicate="first")


def _params(names: list[str], slow: set[str]) -> list[object]:
    return [pytest.param(n, marks=[pytest.mark.slow] if n in slow else [], id=n) for n in names]


def to_crowdkit(cl: CrowdLabels) -> pd.DataFrame:
    return cl.to_long(decode=False).rename(columns={"item": "task", "annotator": "worker"})


def ck_posteriors(probas: pd.DataFrame, cl: CrowdLabels) -> np.ndarray:
    out = probas.reindex(index=np.arange(cl.n_items), columns=np.arange(cl.n_classes))
    return out.fillna(0.0).to_numpy(dtype=np.float64)


def ck_labels(labels: pd.Series, cl: CrowdLabels) -> np.ndarray:
    return labels.reindex(np.arange(cl.n_items)).to_numpy(dtype=np.int64)


def ck_by_annotator(series: pd.Series, cl: CrowdLabels) -> np.ndarray:
    return series.reindex(np.arange(cl.n_annotators)).to_numpy(dtype=np.float64)


def fit_quiet(model, cl, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(cl, **kw)


def accuracy(labels: np.ndarray, cl: CrowdLabels) -> float:
    known = cl.gold >= 0
    return float((labels[known] == cl.gold[known]).mean())


# ---------------------------------------------------------------- crowd-kit's starting values
class CrowdkitStartKOS(KOS):
    """KOS from crowd-kit's start: ``np.random.seed(0)``, then ``N(1, 1)`` per label row."""

    def _init_messages(self, cl):
        return np.random.RandomState(0).normal(1.0, 1.0, size=cl.n_labels)


class CrowdkitStartMACE(MACE):
    """MACE from crowd-kit's start: both arrays drawn with ``random_state=0`` afresh."""

    def _init_params(self, rng, n_annotators, n_classes):
        theta = sps.uniform(1, 1.5).rvs(size=(n_annotators, 2), random_state=0)
        strategy = sps.uniform(1, 1.5).rvs(size=(n_annotators, n_classes), random_state=0)
        return (
            theta / theta.sum(axis=1, keepdims=True),
            strategy / strategy.sum(axis=1, keepdims=True),
        )


class CrowdkitStartMMSR(MMSR):
    """M-MSR from crowd-kit's start: ``u = v = U(0, 1)`` drawn with ``random_state=0``."""

    def _init_uv(self, n_annotators):
        return sps.uniform.rvs(size=(n_annotators, 1), random_state=0).ravel()


def mace_frame(cl: CrowdLabels) -> tuple[CrowdLabels, pd.DataFrame]:
    """Rows reordered so that labels and workers first appear in sorted order.

    One row per class goes first (in class order), then workers are renumbered by first
    appearance; crowdmed gets the same triplets, so annotator ``j`` is crowd-kit's worker ``j``.
    """
    df = cl.to_long(decode=False)
    first = [int(np.flatnonzero(df["label"].to_numpy() == k)[0]) for k in range(cl.n_classes)]
    order = np.r_[first, np.setdiff1d(np.arange(len(df)), first)]
    df = df.iloc[order].reset_index(drop=True)
    codes, _ = pd.factorize(df["annotator"])
    ours = CrowdLabels.from_triplets(
        df["item"].to_numpy(), codes, df["label"].to_numpy(),
        n_items=cl.n_items, n_annotators=cl.n_annotators, n_classes=cl.n_classes,
        gold=cl.gold,
    )  # fmt: skip
    theirs = pd.DataFrame({"task": df["item"], "worker": codes, "label": df["label"]})
    return ours, theirs


# ---------------------------------------------------------------- same iterations, same output
@pytest.mark.parametrize("n_iter", [1, 10])
@pytest.mark.parametrize("name", BINARY)
def test_kos_matches(shared_data, name, n_iter):
    cl = _load(shared_data, name)
    ours = fit_quiet(CrowdkitStartKOS(max_iter=n_iter, tol=0.0), cl)
    theirs = ck.KOS(n_iter=n_iter).fit(to_crowdkit(cl))
    np.testing.assert_array_equal(ours.labels_, ck_labels(theirs.labels_, cl))


@pytest.mark.parametrize("method", ["vb", "em"])
@pytest.mark.parametrize("n_iter", [1, 10])
@pytest.mark.parametrize("name", _params(list(DATASETS), slow=MACE_SLOW))
def test_mace_matches(shared_data, name, n_iter, method):
    ours_cl, df = mace_frame(_load(shared_data, name))
    ours = fit_quiet(
        CrowdkitStartMACE(method=method, max_iter=n_iter, tol=0.0, n_restarts=1), ours_cl
    )
    theirs = ck.MACE(method=method, n_iter=n_iter, n_restarts=1).fit(df)
    np.testing.assert_allclose(
        ours.posteriors_, ck_posteriors(theirs.probas_, ours_cl), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("n_iter", [1, 5])
@pytest.mark.parametrize("name", _params(list(DATASETS), slow=MMSR_SLOW))
def test_mmsr_matches(shared_data, name, n_iter):
    cl = _load(shared_data, name)
    df = to_crowdkit(cl)
    codes, _ = pd.factorize(df["worker"])  # crowd-kit numbers workers by first appearance
    ours_cl = CrowdLabels.from_triplets(
        df["task"].to_numpy(), codes, df["label"].to_numpy(),
        n_items=cl.n_items, n_annotators=cl.n_annotators, n_classes=cl.n_classes,
    )  # fmt: skip
    ours = fit_quiet(CrowdkitStartMMSR(max_iter=n_iter, tol=0.0), ours_cl)
    theirs = ck.MMSR(n_iter=n_iter, tol=-np.inf).fit(df.assign(worker=codes))
    weights = ck_by_annotator(theirs.skills_, ours_cl)
    k = cl.n_classes
    ours_sign = np.sign(ours.skills_ - 1 / k)
    their_sign = np.sign(weights)
    same = ours_sign == their_sign
    # Where the signs agree, the skills are crowd-kit's (measured 6e-15).
    np.testing.assert_allclose(ours.weights_[same], weights[same], rtol=0, atol=1e-8)
    # Where they differ, crowd-kit's sign step is wrong more often: an annotator's sign should
    # be that of Σ_j C_ij sign_j over their co-annotators j (measured: ours agree for 100 %,
    # 89 %, 100 % of the annotators of Dog, MS, SP_amt; crowd-kit's for 74 %, 84 %, 82 %).
    pairs = _Pairs(ours_cl)

    def consistent(sign):
        vote = np.bincount(pairs.cols, weights=pairs.cov * sign[pairs.rows], minlength=len(sign))
        return float(np.mean(np.sign(vote) == sign))

    assert consistent(ours_sign) >= consistent(their_sign)


@pytest.mark.parametrize("name", _params(list(DATASETS), slow=ZBS_SLOW))
def test_zero_based_skill_matches(shared_data, name):
    cl = _load(shared_data, name)
    ours = ZeroBasedSkill().fit(cl)
    theirs = ck.ZeroBasedSkill()
    probas = theirs.fit_predict_proba(to_crowdkit(cl))
    np.testing.assert_allclose(
        ours.skills_, ck_by_annotator(theirs.skills_, cl), rtol=0, atol=1e-10
    )
    np.testing.assert_allclose(ours.posteriors_, ck_posteriors(probas, cl), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(ours.labels_, ck_labels(theirs.labels_, cl))


@pytest.mark.parametrize("name", list(DATASETS))
def test_gold_majority_vote_matches(shared_data, name):
    cl = _load(shared_data, name)
    rng = np.random.default_rng(0)
    gold = np.where(rng.random(cl.n_items) < 0.5, cl.gold, -1)  # half the gold is known
    ours = GoldMajorityVote().fit(cl, gold=gold)
    known = gold >= 0
    true_labels = pd.Series(gold[known], index=np.flatnonzero(known))
    theirs = ck.GoldMajorityVote()
    df = to_crowdkit(cl)
    # crowd-kit refuses annotators without gold labels: compare on the others' labels.
    with_gold = np.flatnonzero(ours.n_gold_ > 0)
    df = df[df["worker"].isin(with_gold)]
    probas = theirs.fit_predict_proba(df, true_labels)
    skills = ck_by_annotator(theirs.skills_, cl)
    np.testing.assert_allclose(ours.skills_[with_gold], skills[with_gold], rtol=0, atol=1e-12)
    # Annotators without gold vote with weight 0 here: the votes are crowd-kit's wherever it
    # has the item (items labelled only by such annotators are missing from crowd-kit).
    zero = GoldMajorityVote(default_skill=0.0).fit(cl, gold=gold)
    present = np.unique(df["task"].to_numpy())
    ref = ck_posteriors(probas, cl)
    np.testing.assert_allclose(zero.posteriors_[present], ref[present], rtol=0, atol=1e-12)
    assert len(present) > 0.9 * cl.n_items


# ---------------------------------------------------------------- accuracy at defaults
def _mmsr_sign_xfail(name: str, flipped: str, theirs: float, ours: float, items: int) -> object:
    return pytest.mark.xfail(
        strict=True,
        reason=(
            f"crowd-kit's sign step makes {flipped} annotators of {name} adversarial although "
            "the covariances with their co-annotators say otherwise (its signs agree with "
            "Σ_j C_ij sign_j for 74-83 % of the annotators, crowdmed's for 100 %); with those "
            f"votes counted against their labels crowd-kit reaches {theirs:.2f} %, crowdmed "
            f"{ours:.2f} % ({items} item{'s' * (items > 1)}). Where the signs agree the skills "
            "are equal (test_mmsr_matches)."
        ),
    )


MMSR_SIGN_XFAIL = {
    "Dog": _mmsr_sign_xfail("Dog", "28 of the 109", 82.78, 82.40, 3),
    "CF_amt": _mmsr_sign_xfail("CF_amt", "19 of the 110", 86.00, 85.67, 1),
}


def _accuracy_cases() -> list[object]:
    # ZeroBasedSkill and GoldMajorityVote compute crowd-kit's labels (tests above).
    slow = {"kos": set(), "mace": MACE_SLOW, "mmsr": MMSR_SLOW}
    cases = []
    for method in ("kos", "mace", "mmsr"):
        for name in BINARY if method == "kos" else list(DATASETS):
            marks = [pytest.mark.slow] if name in slow[method] else []
            if method == "mmsr" and name in MMSR_SIGN_XFAIL:
                marks.append(MMSR_SIGN_XFAIL[name])
            cases.append(pytest.param(method, name, id=f"{method}-{name}", marks=marks))
    return cases


@pytest.mark.parametrize(("method", "name"), _accuracy_cases())
def test_accuracy_at_defaults_not_worse(shared_data, method, name):
    cl = _load(shared_data, name)
    if method == "kos":
        ours = fit_quiet(KOS(), cl).labels_
        ref = ck_labels(ck.KOS().fit(to_crowdkit(cl)).labels_, cl)
    elif method == "mace":
        ours_cl, df = mace_frame(cl)
        ours = fit_quiet(MACE(), ours_cl).labels_
        ref = ck_labels(ck.MACE(n_restarts=1).fit(df).labels_, ours_cl)
    else:
        ours = fit_quiet(MMSR(), cl).labels_
        ref = ck_labels(ck.MMSR().fit_predict(to_crowdkit(cl)), cl)
    acc_ours, acc_theirs = accuracy(ours, cl), accuracy(ref, cl)
    assert acc_ours >= acc_theirs - ACC_SLACK, f"{acc_ours:.4f} < crowd-kit {acc_theirs:.4f}"
