"""fuse_boxes and estimate_proficiency: reference values, properties and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdmed.aggregation.detection.box_fusion import estimate_proficiency, fuse_boxes
from crowdmed.data.boxes import box_iou

COLS = ["xmin", "ymin", "xmax", "ymax"]


def _boxes(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "reader", "class", *COLS])


def _noisy_readers(seed: int, n_images: int = 60, noisy: float = 12.0) -> pd.DataFrame:
    """Three good readers (1-px jitter) and one noisy reader (jitter, misses, false boxes)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        truth = []
        for _ in range(int(rng.integers(1, 4))):
            lo = rng.uniform(0, 150, size=2)
            truth.append(np.r_[lo, lo + rng.uniform(20, 60, size=2)])
        for r in ["good1", "good2", "good3", "noisy"]:
            sd = noisy if r == "noisy" else 1.0
            for t in truth:
                if r == "noisy" and rng.random() < 0.3:
                    continue  # missed finding
                b = t + rng.normal(0, sd, size=4)
                b[2:] = np.maximum(b[2:], b[:2] + 1)
                rows.append((f"img{i}", r, "lesion", *b))
            if r == "noisy" and rng.random() < 0.5:  # false positive
                lo = rng.uniform(0, 150, size=2)
                rows.append((f"img{i}", r, "lesion", *lo, *(lo + 30)))
            if not any(row[0] == f"img{i}" and row[1] == r for row in rows):
                rows.append((f"img{i}", r, None, np.nan, np.nan, np.nan, np.nan))
    return _boxes(rows)


def _sequential_wbf(frame: pd.DataFrame, weight: dict, iou_thr: float) -> pd.DataFrame:
    """Plain-Python WBF clustering in the documented canonical order (test oracle)."""
    out = []
    for (image, klass), g in frame.dropna(subset=["class"]).groupby(["image", "class"]):
        g = g.assign(w=g["reader"].map(weight))
        g = g.sort_values(["reader", *COLS], kind="stable")
        g = g.iloc[np.argsort(-g["w"].to_numpy(), kind="stable")]
        clusters: list[list[tuple[float, np.ndarray, str]]] = []
        fused: list[np.ndarray] = []
        for _, row in g.iterrows():
            box = row[COLS].to_numpy(float)
            ious = [box_iou([box], [f])[0, 0] for f in fused]
            best = int(np.argmax(ious)) if ious else -1
            if best >= 0 and ious[best] > iou_thr:
                clusters[best].append((row["w"], box, row["reader"]))
                ws = np.array([c[0] for c in clusters[best]])
                bs = np.array([c[1] for c in clusters[best]])
                fused[best] = (ws[:, None] * bs).sum(0) / ws.sum()
            else:
                clusters.append([(row["w"], box, row["reader"])])
                fused.append(box)
        for members, f in zip(clusters, fused, strict=True):
            out.append((image, klass, *f, len({m[2] for m in members})))
    return pd.DataFrame(out, columns=["image", "class", *COLS, "n_readers"])


# ---------------------------------------------------------------------- reference values
def test_weighted_mean_and_agreement_by_hand() -> None:
    # image a, read by r1, r2, r3: two overlapping boxes and one far away
    frame = _boxes(
        [
            ("a", "r1", 0, 0.0, 0.0, 10.0, 10.0),
            ("a", "r2", 0, 2.0, 0.0, 12.0, 10.0),  # IoU with r1: 80 / 120 = 0.67
            ("a", "r3", 0, 50.0, 50.0, 60.0, 60.0),
        ]
    )
    fused = fuse_boxes(frame, proficiency={"r1": 3.0, "r2": 1.0, "r3": 0.3})
    assert len(fused) == 2
    first = fused.iloc[0]
    assert first[COLS].tolist() == pytest.approx([0.5, 0.0, 10.5, 10.0])  # (3*0 + 1*2) / 4
    # Le et al. (2023) Algorithm 1 step 6: c = number of boxes in the cluster, min(T=2, N=3)
    assert first["confidence"] == 2.0
    assert first["agreement"] == pytest.approx(2 / 3)
    assert (first["n_readers"], first["n_boxes"], first["readers"]) == (2, 2, "r1;r2")
    assert fused.iloc[1]["confidence"] == 1.0
    assert fused.iloc[1]["agreement"] == pytest.approx(1 / 3)
    assert fused.attrs["proficiency"] == {"r1": 3.0, "r2": 1.0, "r3": 0.3}
    # a one-box cluster keeps its box exactly, whatever the reader's weight
    assert fused.iloc[1][COLS].tolist() == [50.0, 50.0, 60.0, 60.0]


def test_fused_confidence_is_the_count_of_boxes_capped_at_the_readers() -> None:
    """Le et al. (2023), Algorithm 1 step 6: c := c * min(T, N) with c = 1 per box."""
    # (4 boxes, 2 readers on image a): r1 drew two overlapping boxes, r2 one; all one cluster
    frame = _boxes(
        [
            ("a", "r1", 0, 0.0, 0.0, 10.0, 10.0),
            ("a", "r1", 0, 1.0, 0.0, 11.0, 10.0),
            ("a", "r2", 0, 0.0, 1.0, 10.0, 11.0),
            ("b", "r1", 0, 0.0, 0.0, 10.0, 10.0),  # image b: one reader, one box
        ]
    )
    fused = fuse_boxes(frame)
    a, b = fused.iloc[0], fused.iloc[1]
    assert (a["n_boxes"], a["n_readers"]) == (3, 2)
    assert a["confidence"] == 2.0  # min(T = 3, N = 2)
    assert a["agreement"] == 1.0  # both readers of image a
    assert (b["confidence"], b["agreement"]) == (1.0, 1.0)
    # proficiency p_r is an input: given weights move the fused box (step 5), no estimate
    # runs by default
    assert fused.attrs["n_iter"] == 0
    assert fused.attrs["proficiency"] == {"r1": 1.0, "r2": 1.0}
    weighted = fuse_boxes(frame, proficiency={"r1": 1.0, "r2": 2.0})
    # xmin: (1*0 + 1*1 + 2*0) / 4 = 0.25; ymin: (0 + 0 + 2*1) / 4 = 0.5
    assert weighted.iloc[0][["xmin", "ymin"]].tolist() == pytest.approx([0.25, 0.5])
    estimated = fuse_boxes(frame, estimate_proficiency=True)
    assert estimated.attrs["n_iter"] >= 1


def test_iou_threshold_is_strict() -> None:
    # IoU exactly 0.5: 50 / 100; joins at iou_thr 0.4, not at 0.5
    frame = _boxes([("a", "r1", 0, 0.0, 0.0, 10.0, 7.5), ("a", "r2", 0, 0.0, 2.5, 10.0, 10.0)])
    assert box_iou(frame[COLS].iloc[:1], frame[COLS].iloc[1:])[0, 0] == 0.5
    assert len(fuse_boxes(frame, iou_thr=0.4, estimate_proficiency=False)) == 1
    assert len(fuse_boxes(frame, iou_thr=0.5, estimate_proficiency=False)) == 2


def test_classes_are_fused_separately() -> None:
    frame = _boxes([("a", "r1", "x", 0.0, 0.0, 10.0, 10.0), ("a", "r2", "y", 0.0, 0.0, 10.0, 10.0)])
    fused = fuse_boxes(frame)
    assert sorted(fused["class"]) == ["x", "y"]
    assert (fused["confidence"] == 1.0).all()
    assert (fused["agreement"] == 0.5).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), iou_thr=st.sampled_from([0.2, 0.4, 0.6]))
def test_lockstep_equals_sequential_clustering(seed: int, iou_thr: float) -> None:
    frame = _noisy_readers(seed, n_images=4, noisy=6.0)
    rng = np.random.default_rng(seed)
    readers = sorted(frame["reader"].unique())
    weight = {r: float(w) for r, w in zip(readers, rng.uniform(0.2, 1, 4), strict=True)}
    ours = fuse_boxes(frame, iou_thr=iou_thr, proficiency=weight)
    oracle = _sequential_wbf(frame, weight, iou_thr)
    key = ["image", "class", "xmin", "ymin"]
    ours = ours.sort_values(key).reset_index(drop=True)
    oracle = oracle.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(ours[COLS].to_numpy(), oracle[COLS].to_numpy(), atol=1e-9)
    np.testing.assert_array_equal(ours["n_readers"], oracle["n_readers"])


# ---------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(
    box=st.tuples(st.floats(0, 100), st.floats(0, 100), st.floats(1, 50), st.floats(1, 50)),
    n_readers=st.integers(1, 6),
)
def test_identical_boxes_give_that_box_with_full_agreement(box: tuple, n_readers: int) -> None:
    x, y, w, h = box
    rows = [("a", f"r{i}", 1, x, y, x + w, y + h) for i in range(n_readers)]
    fused = fuse_boxes(_boxes(rows))
    assert len(fused) == 1
    np.testing.assert_allclose(fused[COLS].to_numpy()[0], [x, y, x + w, y + h], rtol=1e-12)
    assert fused["agreement"].iloc[0] == 1.0
    assert fused["confidence"].iloc[0] == n_readers
    assert fused["n_readers"].iloc[0] == n_readers


def test_reader_who_marks_nothing_lowers_agreement_never_coordinates() -> None:
    frame = _noisy_readers(0, n_images=10)
    base = fuse_boxes(frame, estimate_proficiency=False)
    # a fifth reader reads every image and marks nothing: as a reading row ...
    silent = pd.DataFrame({"image": frame["image"].unique(), "reader": "silent"})
    with_rows = fuse_boxes(pd.concat([frame, silent]), estimate_proficiency=False)
    # ... or through `readers`
    listed = frame.groupby("image")["reader"].unique().map(list).to_dict()
    listed = {k: [*v, "silent"] for k, v in listed.items()}
    with_readers = fuse_boxes(frame, readers=listed, estimate_proficiency=False)
    for other in (with_rows, with_readers):
        np.testing.assert_array_equal(other[COLS].to_numpy(), base[COLS].to_numpy())
        np.testing.assert_allclose(other["agreement"] * 5, base["agreement"] * 4)
        # the count of boxes is capped at the readers of the image: N = 5 now, 4 before
        np.testing.assert_array_equal(other["confidence"], np.minimum(other["n_boxes"], 5))
        np.testing.assert_array_equal(base["confidence"], np.minimum(base["n_boxes"], 4))


def test_readers_listed_for_an_image_count_in_the_denominator() -> None:
    frame = _boxes([("a", "r1", 0, 0.0, 0.0, 10.0, 10.0), ("a", "r2", 0, 0.0, 0.0, 10.0, 10.0)])
    fused = fuse_boxes(frame, readers={"a": ["r1", "r2", "r3"]})
    assert fused["agreement"].iloc[0] == pytest.approx(2 / 3)
    assert fused["confidence"].iloc[0] == 2.0
    with pytest.raises(ValueError, match="Reader 'r2' has boxes on image 'a' but `readers`"):
        fuse_boxes(frame, readers={"a": ["r1"]})


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_row_order_and_reader_order_change_nothing(seed: int) -> None:
    frame = _noisy_readers(seed, n_images=6)
    base = fuse_boxes(frame)
    shuffled = frame.sample(frac=1.0, random_state=np.random.RandomState(seed % 2**31))
    again = fuse_boxes(shuffled.reset_index(drop=True))
    pd.testing.assert_frame_equal(base, again)
    assert base.attrs == again.attrs


def test_3d_boxes() -> None:
    frame = pd.DataFrame(
        {
            "image": ["ct1"] * 3,
            "reader": ["r1", "r2", "r3"],
            "class": ["nodule"] * 3,
            "xmin": [10.0, 11.0, 80.0],
            "ymin": [10.0, 10.0, 80.0],
            "xmax": [20.0, 21.0, 90.0],
            "ymax": [20.0, 20.0, 90.0],
            "zmin": [5.0, 5.0, 5.0],
            "zmax": [9.0, 9.0, 9.0],
        }
    )
    fused = fuse_boxes(frame, estimate_proficiency=False)
    assert list(fused.columns[2:8]) == ["xmin", "ymin", "xmax", "ymax", "zmin", "zmax"]
    assert fused.iloc[0][["xmin", "xmax", "zmin", "zmax"]].tolist() == [10.5, 20.5, 5.0, 9.0]
    assert fused["n_readers"].tolist() == [2, 1]
    # separated along z only: two clusters
    frame.loc[1, ["zmin", "zmax"]] = [30.0, 34.0]
    assert len(fuse_boxes(frame, estimate_proficiency=False)) == 3


def test_estimated_proficiency_ranks_noisy_reader_last() -> None:
    frame = _noisy_readers(1, n_images=80)
    prof = estimate_proficiency(frame)
    assert prof.idxmin() == "noisy"
    assert prof["noisy"] < prof.drop("noisy").min() - 0.1
    assert prof.attrs["n_iter"] >= 1
    # the noisy reader's weight pulls fused boxes less than equal weights do
    fused = fuse_boxes(frame, estimate_proficiency=True)
    assert fused.attrs["proficiency"]["noisy"] == pytest.approx(prof["noisy"])
    assert estimate_proficiency(frame, max_iter=0).eq(1.0).all()


def test_only_readings_give_an_empty_table() -> None:
    frame = pd.DataFrame({"image": ["a", "b"], "reader": ["r1", "r1"]})
    frame[["class", *COLS]] = np.nan
    fused = fuse_boxes(frame)
    assert fused.empty
    assert {"confidence", "n_readers", "readers", *COLS} <= set(fused.columns)


# ---------------------------------------------------------------------- errors
def test_bad_parameters() -> None:
    frame = _boxes([("a", "r1", 0, 0.0, 0.0, 10.0, 10.0)])
    with pytest.raises(ValueError, match=r"`iou_thr` must be a number in \[0, 1\)"):
        fuse_boxes(frame, iou_thr=1.5)
    with pytest.raises(ValueError, match=r"no weight for readers \['r1'\]"):
        fuse_boxes(frame, proficiency={"r2": 1.0})
    with pytest.raises(ValueError, match="reader 'r1' must be a positive finite number"):
        fuse_boxes(frame, proficiency={"r1": 0.0})
    with pytest.raises(TypeError, match="`proficiency` must be a mapping"):
        fuse_boxes(frame, proficiency=[1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`max_iter` must be a non-negative integer"):
        fuse_boxes(frame, max_iter=-1)


@pytest.mark.parametrize("n_readers", [3, 70])  # bit-packed reader sets, and the general path
def test_readers_column_lists_distinct_readers_sorted(n_readers: int) -> None:
    rows = [("a", f"r{i:02d}", 0, 0.0, 0.0, 10.0, 10.0) for i in range(n_readers)]
    rows += [("a", "r00", 0, 0.5, 0.0, 10.5, 10.0), ("a", "r01", 0, 50.0, 50.0, 60.0, 60.0)]
    fused = fuse_boxes(_boxes(rows[::-1]), estimate_proficiency=False)
    assert fused["readers"].tolist() == [";".join(f"r{i:02d}" for i in range(n_readers)), "r01"]
    assert fused["n_boxes"].tolist() == [n_readers + 1, 1]
    assert fused["n_readers"].tolist() == [n_readers, 1]


# ---------------------------------------------------------------------- scored boxes (WBF)
def _scored(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "reader", "class", *COLS, "score"])


def _random_scored(seed: int, score_levels: int = 0) -> pd.DataFrame:
    """Boxes of 2-4 models around a few objects; scores continuous or from a few levels."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(3):
        objects = [rng.uniform(0, 100, 2) for _ in range(int(rng.integers(1, 4)))]
        for m in range(int(rng.integers(2, 5))):
            rows.append((f"i{i}", f"m{m}", None, np.nan, np.nan, np.nan, np.nan, np.nan))
            for k, lo in enumerate(objects):
                for _ in range(int(rng.integers(0, 3))):
                    b = np.r_[lo, lo + 30] + rng.normal(0, 3, 4)
                    b[2:] = np.maximum(b[2:], b[:2] + 1)
                    s = (
                        rng.integers(1, score_levels + 1) / score_levels
                        if score_levels
                        else rng.uniform(0.01, 1)
                    )
                    rows.append((f"i{i}", f"m{m}", k % 2, *b, s))
    return _scored(rows)


def test_scored_fusion_by_hand() -> None:
    # two models, weights 1 and 3; the boxes overlap (IoU 0.8)
    frame = _scored(
        [
            ("a", "m1", 0, 0.0, 0.0, 10.0, 10.0, 0.8),
            ("a", "m2", 0, 2.0, 0.0, 12.0, 10.0, 0.2),
            ("a", "m2", 0, 50.0, 50.0, 60.0, 60.0, 0.5),
        ]
    )
    fused = fuse_boxes(frame, iou_thr=0.5, proficiency={"m1": 1.0, "m2": 3.0})
    assert list(fused.columns) == [
        "image", "class", *COLS, "score", "confidence", "agreement", "n_readers", "n_boxes",
        "readers",
    ]  # fmt: skip
    # clusters come in processing order: the far box first (score x weight 1.5), then the
    # pair (0.8 and 0.6), whose fused box is their score x weight mean
    assert fused["readers"].tolist() == ["m2", "m1;m2"]
    assert fused["xmin"].tolist() == pytest.approx([50.0, (0.8 * 0 + 0.6 * 2) / 1.4])
    # WBF avg: mean(score x weight) x min(n_boxes, n_sources) / total weight
    assert fused["score"].tolist() == pytest.approx([1.5 * 1 / 4, (1.4 / 2) * 2 / 4])
    assert fused["agreement"].tolist() == [0.5, 1.0]  # agreement is unchanged
    assert fused["confidence"].tolist() == [1.0, 2.0]  # boxes in the cluster


def test_scores_of_one_change_nothing_but_add_the_score_column() -> None:
    frame = _noisy_readers(4, n_images=10)
    plain = fuse_boxes(frame, estimate_proficiency=False)
    scored = fuse_boxes(
        frame.assign(score=np.where(frame["class"].notna(), 1.0, np.nan)),
        estimate_proficiency=False,
    )
    pd.testing.assert_frame_equal(plain, scored.drop(columns="score"))
    # equal weights, one box per reader: the WBF score is the agreement
    one_each = scored["n_boxes"] == scored["n_readers"]
    np.testing.assert_allclose(scored["score"][one_each], scored["agreement"][one_each])
    # estimated proficiency sees the same clusters
    assert fuse_boxes(frame).attrs == fuse_boxes(frame.assign(score=1.0)).attrs


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), levels=st.sampled_from([0, 2, 3]))
def test_row_and_source_order_change_nothing_for_scored_boxes(seed: int, levels: int) -> None:
    # ``levels`` > 0 gives many ties in score x weight: the tie-break (heavier source, source
    # id, coordinates) must not depend on where the rows or the sources come in the input
    frame = _random_scored(seed, levels)
    models = sorted(frame["reader"].unique())
    weight = {m: 1.0 + (i % 2) for i, m in enumerate(models)}
    readings = {img: models[::-1] for img in frame["image"].unique()}
    base = fuse_boxes(frame, iou_thr=0.4, proficiency=weight, readers=readings)
    rs = np.random.RandomState(seed % 2**31)
    shuffled = frame.sample(frac=1.0, random_state=rs).reset_index(drop=True)
    again = fuse_boxes(
        shuffled,
        iou_thr=0.4,
        proficiency=dict(reversed(list(weight.items()))),
        readers={img: list(rs.permutation(models)) for img in frame["image"].unique()},
    )
    pd.testing.assert_frame_equal(base, again)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_renaming_sources_changes_nothing_without_ties(seed: int) -> None:
    frame = _random_scored(seed)  # continuous scores: no ties in score x weight
    models = sorted(frame["reader"].unique())
    rename = dict(zip(models, [f"z{9 - i}" for i in range(len(models))], strict=True))
    a = fuse_boxes(frame, estimate_proficiency=False)
    b = fuse_boxes(frame.assign(reader=frame["reader"].map(rename)), estimate_proficiency=False)
    key = ["image", "class", *COLS]
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[[*key, "score", "n_boxes"]], b[[*key, "score", "n_boxes"]])


def test_ties_in_score_are_broken_by_weight_then_source_id() -> None:
    # three equal-score boxes in a chain: b overlaps a and c, a and c do not overlap. The
    # first processed box seeds the cluster, so the tie-break decides the clusters.
    a = ("x", "m_a", 0, 0.0, 0.0, 10.0, 10.0, 0.5)
    b = ("x", "m_b", 0, 3.0, 0.0, 13.0, 10.0, 0.5)
    c = ("x", "m_c", 0, 6.0, 0.0, 16.0, 10.0, 0.5)
    frame = _scored([c, b, a])
    by_id = fuse_boxes(frame, iou_thr=0.5, estimate_proficiency=False)
    assert by_id["readers"].tolist() == ["m_a;m_b", "m_c"]  # m_a is processed first
    # a higher score goes first whatever the id
    frame.loc[frame["reader"] == "m_c", "score"] = 0.6
    by_score = fuse_boxes(frame, iou_thr=0.5, estimate_proficiency=False)
    assert by_score["readers"].tolist() == ["m_b;m_c", "m_a"]
    frame.loc[frame["reader"] == "m_c", "score"] = 0.5
    # equal score x weight (0.5 x 2 = 1.0 x 1): the heavier source m_c goes first
    frame.loc[frame["reader"] != "m_c", "score"] = 1.0
    tied = fuse_boxes(frame, iou_thr=0.5, proficiency={"m_a": 1.0, "m_b": 1.0, "m_c": 2.0})
    assert tied["readers"].tolist() == ["m_b;m_c", "m_a"]


def test_box_below_skip_box_thr_is_ignored_but_its_source_counts() -> None:
    frame = _random_scored(5)
    frame["score"] = np.maximum(frame["score"], 0.2)
    low = frame.index[frame["class"].notna()][3]
    frame.loc[low, "score"] = 0.05
    skipped = fuse_boxes(frame, estimate_proficiency=False, skip_box_thr=0.1)
    assert not skipped.equals(fuse_boxes(frame, estimate_proficiency=False))
    # the same as the table with that row turned into a reading without boxes
    as_reading = frame.copy()
    as_reading.loc[low, ["class", *COLS, "score"]] = np.nan
    pd.testing.assert_frame_equal(skipped, fuse_boxes(as_reading, estimate_proficiency=False))
    assert skipped["n_boxes"].sum() == frame["class"].notna().sum() - 1
    # at the threshold a box is kept (WBF skips score < skip_box_thr)
    kept = fuse_boxes(frame, estimate_proficiency=False, skip_box_thr=0.05)
    assert kept["n_boxes"].sum() == frame["class"].notna().sum()
    # every box skipped: no fused boxes, still a table with a score column
    none = fuse_boxes(frame, estimate_proficiency=False, skip_box_thr=2.0)
    assert none.empty
    assert "score" in none.columns


def test_bad_scores() -> None:
    frame = _scored([("a", "m1", 0, 0.0, 0.0, 10.0, 10.0, 0.5)])
    with pytest.raises(ValueError, match=r"score of the box in row 0 \(image 'a', reader 'm1'\)"):
        fuse_boxes(frame.assign(score=np.nan))
    with pytest.raises(ValueError, match="finite number as score"):
        fuse_boxes(frame.assign(score="high"))
    with pytest.raises(ValueError, match="scores must be positive"):
        fuse_boxes(frame.assign(score=0.0))
    assert fuse_boxes(frame.assign(score=0.0), skip_box_thr=0.1).empty
    with pytest.raises(ValueError, match="`skip_box_thr` must be a non-negative number"):
        fuse_boxes(frame, skip_box_thr=-0.1)
