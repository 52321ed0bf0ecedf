"""The radius rule of mitosis evaluation, candidate extraction and the operating point."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdmed.metrics import roc_auc
from crowdmed.metrics.points import choose_threshold, match_points
from crowdmed.pathology.candidates import find_candidates


def _pts(rows, score=False):
    cols = ["image", "x", "y", "score"] if score else ["image", "x", "y"]
    return pd.DataFrame(rows, columns=cols)


REF = _pts([("a", 100.0, 100.0)])

# (detections (x, y, score), radius, scale, duplicates, expected tp flags, (tp, fp, fn))
CASES = [
    ([(130.0, 100.0, 0.9)], 30.0, 1.0, "fp", [True], (1, 0, 0)),  # exactly 30 px: inside
    ([(130.01, 100.0, 0.9)], 30.0, 1.0, "fp", [False], (0, 1, 1)),  # just outside
    ([(118.0, 124.0, 0.9)], 30.0, 1.0, "fp", [True], (1, 0, 0)),  # 6-8-10 triangle: 30 px
    ([(115.0, 100.0, 0.9)], 30.0, 0.5, "fp", [True], (1, 0, 0)),  # radius 15 at scale 0.5
    ([(116.0, 100.0, 0.9)], 30.0, 0.5, "fp", [False], (0, 1, 1)),
    # two detections of one mitosis: the higher score is the TP, the other a duplicate
    ([(110.0, 100.0, 0.6), (95.0, 100.0, 0.9)], 30.0, 1.0, "fp", [False, True], (1, 1, 0)),
    ([(110.0, 100.0, 0.6), (95.0, 100.0, 0.9)], 30.0, 1.0, "ignore", [False, True], (1, 0, 0)),
]


@pytest.mark.parametrize(("dets", "radius", "scale", "dup", "flags", "counts"), CASES)
def test_matching_rule(dets, radius, scale, dup, flags, counts):
    det = _pts([("a", *d) for d in dets], score=True)
    r = match_points(det, REF, radius=radius, scale=scale, duplicates=dup)
    assert r.detections["tp"].tolist() == flags
    assert (r.tp, r.fp, r.fn) == counts
    assert r.radius == radius * scale


def test_default_counts_several_detections_of_one_mitosis_as_one_tp():
    """Albarqouni et al. (2016) III-4: responses within 30 px of a mitosis are a single TP;
    only responses outside every 30 px region are FPs; F1 = 2TP / (FP + FN + 2TP)."""
    # (2 reference points): mitosis m1 at (100, 100) gets three responses, m2 is missed
    ref = _pts([("a", 100.0, 100.0), ("a", 400.0, 400.0)])
    det = _pts(
        [
            ("a", 105.0, 100.0, 0.9),  # TP of m1
            ("a", 100.0, 120.0, 0.8),  # within 30 px of m1: part of the same TP
            ("a", 80.0, 90.0, 0.7),  # likewise
            ("a", 250.0, 250.0, 0.6),  # outside every radius: FP
        ],
        score=True,
    )
    r = match_points(det, ref)  # the default is the paper's rule
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)
    # precision 1/2, recall 1/2, F1 = 2 / (1 + 1 + 2) = 0.5
    assert (r.precision, r.recall, r.f1) == (0.5, 0.5, 0.5)
    strict = match_points(det, ref, duplicates="fp")
    assert (strict.tp, strict.fp, strict.fn) == (1, 3, 1)
    assert strict.f1 == pytest.approx(2 / (3 + 1 + 2))
    # the operating point uses the same rule: thresholds 0.9, 0.8 and 0.7 all give F1 2/3
    # (TP 1, FP 0, FN 1; duplicates cost nothing), the highest wins the tie; 0.6 adds the FP
    assert choose_threshold(det, ref) == (0.9, pytest.approx(2 / 3))
    assert choose_threshold(det, ref, duplicates="fp") == (0.9, pytest.approx(2 / 3))


def test_each_detection_takes_the_nearest_free_point_and_points_match_once():
    ref = _pts([("a", 0.0, 0.0), ("a", 40.0, 0.0)])
    det = _pts([("a", 25.0, 0.0, 0.9), ("a", 10.0, 0.0, 0.8)], score=True)
    r = match_points(det, ref)
    assert r.detections["reference"].tolist() == [1, 0]
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)


def test_per_image_and_overall_figures():
    ref = _pts([("a", 10.0, 10.0), ("a", 200.0, 200.0), ("b", 50.0, 50.0)])
    det = _pts([("a", 12.0, 10.0, 0.9), ("a", 400.0, 400.0, 0.5), ("c", 5.0, 5.0, 0.7)], score=True)
    r = match_points(det, ref, images=["a", "b", "c", "d"])
    per = r.per_image.set_index("image")
    assert per.loc["a", ["tp", "fp", "fn"]].tolist() == [1, 1, 1]
    assert per.loc["b", ["tp", "fp", "fn"]].tolist() == [0, 0, 1]
    assert per.loc["c", ["tp", "fp", "fn"]].tolist() == [0, 1, 0]
    assert np.isnan(per.loc["d", "f1"])
    assert (r.tp, r.fp, r.fn) == (1, 2, 2)
    assert r.precision == pytest.approx(1 / 3)
    assert r.recall == pytest.approx(1 / 3)
    assert r.f1 == pytest.approx(2 / (2 + 2 + 2))
    assert r.auc == pytest.approx(roc_auc([0.9, 0.5, 0.7], [1, 0, 0]))


def test_match_points_errors():
    with pytest.raises(ValueError, match="Did you mean"):
        match_points(REF, REF, duplicates="fpp")
    with pytest.raises(ValueError, match="radius"):
        match_points(REF, REF, radius=0)
    with pytest.raises(ValueError, match=r"missing \['y'\]"):
        match_points(pd.DataFrame({"image": ["a"], "x": [1.0]}), REF)


def _brute_f1(det, ref, t, dup):
    return match_points(det[det["score"] >= t], ref, radius=10, duplicates=dup).f1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 60), st.integers(0, 60)), min_size=1, max_size=6
    ),
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 60), st.integers(0, 60), st.integers(1, 5)),
        min_size=1,
        max_size=10,
    ),
    st.sampled_from(["fp", "ignore"]),
)
def test_choose_threshold_maximises_f1_over_all_thresholds(refs, dets, dup):
    ref = _pts([(f"i{i}", float(x), float(y)) for i, x, y in refs])
    det = _pts([(f"i{i}", float(x), float(y), s / 5) for i, x, y, s in dets], score=True)
    thr, f1 = choose_threshold(det, ref, radius=10, duplicates=dup)
    brute = {t: _brute_f1(det, ref, t, dup) for t in sorted(set(det["score"]))}
    assert f1 == pytest.approx(max(brute.values()))
    assert brute[thr] == pytest.approx(f1)
    # ties go to the highest threshold
    assert thr == max(t for t, v in brute.items() if v == pytest.approx(f1))


def test_candidates_suppress_within_radius_and_respect_threshold():
    m = np.zeros((60, 60))
    m[10, 10], m[10, 16], m[10, 40], m[50, 50] = 0.9, 0.8, 0.7, 0.3
    c = find_candidates(m, threshold=0.5, radius=10)
    assert c[["x", "y"]].to_numpy().tolist() == [[10, 10], [40, 10]]
    assert c["score"].tolist() == [0.9, 0.7]
    c0 = find_candidates(m, threshold=0.0, radius=0)
    assert len(c0) >= 4


def test_candidates_split_plateaus():
    m = np.zeros((30, 30))
    m[10:13, 10:13] = 0.8
    c = find_candidates(m, threshold=0.5, radius=5)
    assert len(c) == 1
    assert c[["x", "y"]].to_numpy().tolist() == [[10, 10]]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 0.9), st.floats(0.0, 8.0))
def test_candidates_at_a_threshold_equal_low_threshold_filtered(seed, t, radius):
    rng = np.random.default_rng(seed)
    m = np.round(rng.random((24, 24)), 2)
    low = find_candidates(m, threshold=0.0, radius=radius)
    high = find_candidates(m, threshold=t, radius=radius)
    pd.testing.assert_frame_equal(high, low[low["score"] >= t].reset_index(drop=True))
    # kept candidates are at least radius apart
    xy = high[["x", "y"]].to_numpy(float)
    if len(xy) > 1 and radius > 0:
        d = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1))
        assert d[~np.eye(len(xy), dtype=bool)].min() >= radius * (1 - 1e-9)


def test_candidates_errors():
    with pytest.raises(ValueError, match="2-D"):
        find_candidates(np.zeros(5), threshold=0.5, radius=3)
    with pytest.raises(ValueError, match="radius"):
        find_candidates(np.zeros((5, 5)), threshold=0.5, radius=-1)
