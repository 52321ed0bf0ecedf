"""Reader agreement: one-to-one matching, sensitivity / false positives, pairwise F1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crowdmed.aggregation.detection.box_fusion import fuse_boxes
from crowdmed.data.boxes import box_iou
from crowdmed.quality.box_agreement import match_boxes, pairwise_reader_f1, reader_agreement

COLS = ["xmin", "ymin", "xmax", "ymax"]


def _boxes(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "reader", "class", *COLS])


def _greedy_oracle(a: np.ndarray, b: np.ndarray, thr: float) -> set[tuple[int, int]]:
    iou = box_iou(a, b)
    pairs = sorted(
        ((iou[i, j], i, j) for i in range(len(a)) for j in range(len(b)) if iou[i, j] >= thr),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    used_a, used_b, kept = set(), set(), set()
    for _, i, j in pairs:
        if i not in used_a and j not in used_b:
            kept.add((i, j))
            used_a.add(i)
            used_b.add(j)
    return kept


def test_match_boxes_is_one_to_one_and_takes_the_best_pair_first() -> None:
    a = [[0, 0, 10, 10]]
    b = [[1, 0, 11, 10], [0, 0, 10, 10]]
    ia, ib, iou = match_boxes(a, b)
    assert (ia.tolist(), ib.tolist(), iou.tolist()) == ([0], [1], [1.0])
    # groups keep images apart
    ia, ib, _ = match_boxes(a, b, groups_a=[0], groups_b=[1, 1])
    assert len(ia) == 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), thr=st.sampled_from([0.1, 0.3, 0.5]))
def test_match_boxes_equals_sequential_greedy(seed: int, thr: float) -> None:
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        lo = rng.uniform(0, 20, size=(n, 2))
        return np.hstack([lo, lo + rng.uniform(2, 10, size=(n, 2))])

    a, b = draw(int(rng.integers(0, 8))), draw(int(rng.integers(0, 8)))
    ia, ib, _ = match_boxes(a, b, iou_thr=thr)
    assert set(zip(ia.tolist(), ib.tolist(), strict=True)) == _greedy_oracle(a, b, thr)
    assert len(set(ia.tolist())) == len(ia)
    assert len(set(ib.tolist())) == len(ib)


def _three_readers() -> pd.DataFrame:
    # image a: r1 and r2 agree on a lesion, r3 marks a different spot
    # image b: all three agree; r3 adds a false positive
    return _boxes(
        [
            ("a", "r1", 0, 0.0, 0.0, 10.0, 10.0),
            ("a", "r2", 0, 0.5, 0.0, 10.5, 10.0),
            ("a", "r3", 0, 50.0, 50.0, 60.0, 60.0),
            ("b", "r1", 0, 20.0, 20.0, 30.0, 30.0),
            ("b", "r2", 0, 20.0, 21.0, 30.0, 31.0),
            ("b", "r3", 0, 21.0, 20.0, 31.0, 30.0),
            ("b", "r3", 0, 80.0, 80.0, 90.0, 90.0),
        ]
    )


def test_reader_agreement_by_hand() -> None:
    table = reader_agreement(_three_readers()).set_index("reader")
    # consensus (> half of the 3 readers): the a lesion (r1, r2) and the b lesion (all)
    assert table["n_consensus"].tolist() == [2, 2, 2]
    assert table["matched"].tolist() == [2, 2, 1]
    assert table["sensitivity"].tolist() == [1.0, 1.0, 0.5]
    assert table["fp_per_image"].tolist() == [0.0, 0.0, 1.0]  # r3: 2 of 3 boxes unmatched / 2
    assert table["precision"]["r3"] == pytest.approx(1 / 3)
    assert table.loc["r3", "proficiency"] < table.loc["r1", "proficiency"]


def test_reader_agreement_silent_reader_and_given_fused() -> None:
    frame = pd.concat([_three_readers(), pd.DataFrame({"image": ["a", "b"], "reader": "r4"})])
    fused = fuse_boxes(frame, estimate_proficiency=False)
    table = reader_agreement(frame, fused).set_index("reader")
    # with four readers a 2-reader cluster is not a strict majority: only b's lesion counts
    assert table.loc["r4", "n_boxes"] == 0
    assert table.loc["r4", "sensitivity"] == 0.0
    assert table.loc["r1", "n_consensus"] == 1
    assert np.isnan(table.loc["r4", "precision"])
    assert (table["proficiency"] == 1.0).all()  # fused with equal weights
    with pytest.raises(TypeError, match="returned by fuse_boxes"):
        reader_agreement(frame, frame.drop(columns="reader"))


def test_pairwise_f1_by_hand() -> None:
    f1 = pairwise_reader_f1(_three_readers())
    assert f1.loc["r1", "r2"] == pytest.approx(1.0)  # 2 matches, 2 + 2 boxes
    assert f1.loc["r1", "r3"] == pytest.approx(2 * 1 / (2 + 3))
    np.testing.assert_allclose(f1.to_numpy(), f1.to_numpy().T)
    assert np.diag(f1).tolist() == [1.0, 1.0, 1.0]


def test_pairwise_f1_counts_only_shared_images() -> None:
    frame = _boxes(
        [
            ("a", "r1", 0, 0.0, 0.0, 10.0, 10.0),
            ("a", "r2", 0, 0.0, 0.0, 10.0, 10.0),
            ("b", "r1", 0, 0.0, 0.0, 10.0, 10.0),  # r2 did not read b
            ("c", "r3", 0, 0.0, 0.0, 10.0, 10.0),  # r3 shares no image
        ]
    )
    f1 = pairwise_reader_f1(frame)
    assert f1.loc["r1", "r2"] == 1.0
    assert np.isnan(f1.loc["r1", "r3"])
    # one reader's box may match one box of each other reader
    frame3 = _boxes([("a", r, 0, 0.0, 0.0, 10.0, 10.0) for r in ("r1", "r2", "r3")])
    assert (pairwise_reader_f1(frame3).to_numpy() == 1.0).all()
