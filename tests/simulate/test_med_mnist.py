"""MED-MNIST simulation: sizes, reader transition matrices, box noise, seeds."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from crowdmed.data.boxes import box_iou
from crowdmed.simulate import MedMnist, make_med_mnist, reader_transitions

BOX = ["xmin", "ymin", "xmax", "ymax"]


@pytest.fixture(scope="module")
def small() -> MedMnist:
    return make_med_mnist(30, 10, 10, size=48, digit_size=(10, 16), random_state=3)


def test_sizes_and_splits(small: MedMnist) -> None:
    assert small.images.shape == (50, 48, 48)
    assert small.images.dtype == np.float32
    assert small.images.min() >= 0.0
    assert small.images.max() <= 1.0
    assert [len(small.image_ids(s)) for s in ("train", "val", "test")] == [30, 10, 10]
    assert small.transitions.shape == (3, 10, 11)
    assert set(small.truth.columns) == {"image", "class", *BOX}
    assert {"image", "reader", "class", *BOX, "iou"} <= set(small.readers.columns)
    per_image = small.truth.groupby("image").size()
    assert per_image.min() >= 1
    assert per_image.max() <= 3
    assert set(small.readers["reader"]) == {"reader_0", "reader_1", "reader_2"}


def test_truth_boxes_hold_ink_inside_the_canvas_and_do_not_overlap(small: MedMnist) -> None:
    t = small.truth
    b = t[BOX].to_numpy()
    assert (b[:, :2] >= 0).all()
    assert (b[:, 2:] <= 48).all()
    assert (b[:, 2] > b[:, 0]).all()
    assert (b[:, 3] > b[:, 1]).all()
    for image, group in t.groupby("image"):
        boxes = group[BOX].to_numpy()
        iou = box_iou(boxes, boxes)
        assert np.allclose(iou - np.diag(np.diag(iou)), 0.0)
        canvas = small.images[image]
        for x0, y0, x1, y1 in boxes.astype(int):
            assert canvas[y0:y1, x0:x1].max() > 0.2


@pytest.mark.parametrize(("p", "k"), [(0.8, 10), (0.3, 4), (0.95, 2)])
def test_transition_rows_are_stochastic_and_diagonally_dominant(p: float, k: int) -> None:
    t = reader_transitions(5, k, proficiency=p, random_state=1)
    assert t.shape == (5, k, k + 1)
    assert np.allclose(t.sum(axis=2), 1.0)
    assert (t >= 0).all()
    diag = t[:, np.arange(k), np.arange(k)]
    off = t.copy()
    off[:, np.arange(k), np.arange(k)] = -1
    assert (diag[..., None] >= off - 1e-12).all()
    assert (diag >= max(0.05, 1 / (k + 1)) - 1e-12).all()
    assert (diag <= 1).all()


def test_transition_diagonal_is_p_without_spread() -> None:
    t = reader_transitions(2, 10, proficiency=0.8, sigma=0.0, random_state=0)
    assert np.allclose(t[:, np.arange(10), np.arange(10)], 0.8)
    assert np.allclose(t[:, 0, 1:], 0.2 / 10)  # the rest spread evenly, no_obj included


def test_kept_boxes_exceed_the_proficiency_iou(small: MedMnist) -> None:
    r = small.readers
    truth = small.truth[BOX].to_numpy()[r["truth_index"].to_numpy()]
    iou = np.diag(box_iou(r[BOX].to_numpy(), truth))
    assert (iou > 0.8).all()
    np.testing.assert_allclose(iou, r["iou"].to_numpy(), atol=1e-9)
    assert (iou < 1).mean() > 0.9  # the boxes are noisy, not copies of the truth


def test_reader_classes_and_misses_follow_the_transitions() -> None:
    d = make_med_mnist(
        400, 0, 0, size=48, digit_size=(10, 14), proficiency=0.5, sigma=0.0, random_state=5
    )
    n_obj = len(d.truth)
    for reader, group in d.readers.groupby("reader"):
        miss = 1 - len(group) / n_obj
        assert abs(miss - 0.05) < 0.035, (reader, miss)  # no_obj = (1 - 0.5) / 10
        true_cls = d.truth["class"].to_numpy()[group["truth_index"].to_numpy()]
        correct = (group["class"].to_numpy() == true_cls).mean()
        assert abs(correct - 0.5 / 0.95) < 0.06, (reader, correct)


def test_seeds_reproduce() -> None:
    a = make_med_mnist(8, 2, 2, size=40, digit_size=(10, 14), random_state=11)
    b = make_med_mnist(8, 2, 2, size=40, digit_size=(10, 14), random_state=11)
    c = make_med_mnist(8, 2, 2, size=40, digit_size=(10, 14), random_state=12)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.readers.equals(b.readers)
    assert a.truth.equals(b.truth)
    assert not np.array_equal(a.images, c.images)


def test_splits_use_disjoint_digit_samples() -> None:
    d = make_med_mnist(30, 10, 10, size=32, digit_size=(8, 8), n_objects=(1, 1), random_state=2)
    # one 8x8 digit drawn at scale 1 per canvas: a shared sample would give an identical crop
    patches = []
    for split in ("train", "test"):
        seen = set()
        for i in d.image_ids(split):
            img = d.images[i]
            ys, xs = np.nonzero(img)
            seen.add(img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].tobytes())
        patches.append(seen)
    assert not (patches[0] & patches[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_objects": (0, 2)}, "n_objects"),
        ({"digit_size": (10, 80)}, "digit_size"),
        ({"n_classes": 11}, "n_classes"),
        ({"proficiency": 1.5}, "proficiency"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_med_mnist(2, 0, 0, size=48, random_state=0, **kwargs)


def test_box_iou_pairs_is_the_diagonal_of_box_iou() -> None:
    from crowdmed.data.boxes import box_iou
    from crowdmed.simulate.med_mnist import box_iou_pairs

    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 50, (20, 2))
    a = np.hstack([lo, lo + rng.uniform(1, 20, (20, 2))])
    b = a + rng.normal(0, 3, a.shape)
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.5)
    np.testing.assert_allclose(box_iou_pairs(a, b), np.diag(box_iou(a, b)))
    assert box_iou_pairs(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)
