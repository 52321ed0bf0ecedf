"""The EARL CenterNet: hand-checked targets, weighted losses and gradients, overfitting, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crowdmed.metrics import mean_average_precision  # noqa: E402
from crowdmed.nn.centernet import (  # noqa: E402
    STRIDE,
    EarlCenterNet,
    _giou_loss,
    centernet_detector,
    centernet_targets,
)
from crowdmed.nn.detection import build_detector  # noqa: E402
from crowdmed.training.detector import CrowdDetector, make_targets  # noqa: E402
from crowdmed.training.persistence import load_model  # noqa: E402

SIZE = 32


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _target(boxes: list[list[float]], labels: list[int], weights: list[float] | None = None):
    t = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if weights is not None:
        t["weights"] = torch.tensor(weights, dtype=torch.float32)
    return t


# ---------------------------------------------------------------------- targets
def test_targets_by_hand() -> None:
    # one 16x12 box centred at (16, 14): centre cell (x 4, y 3) on a stride-4 8x8 grid
    t = centernet_targets([_target([[8.0, 8.0, 24.0, 20.0]], [1], [3.0])], 2, (8, 8))
    heat = t["heatmap"][0]
    assert heat.shape == (2, 8, 8)
    assert heat[1, 3, 4] == 1.0  # the peak, at (row 3, column 4)
    assert int((heat == 1.0).sum()) == 1
    assert heat[0].abs().sum() == 0  # class 0 has no box
    # sigma_x = 0.54 / 6 * 16 / 4 = 0.36 cells: one cell to the right is exp(-1 / (2 * 0.36^2))
    assert float(heat[1, 3, 5]) == pytest.approx(np.exp(-1 / (2 * 0.36**2)), rel=1e-5)
    assert float(t["pos_weight"][0, 1, 3, 4]) == 3.0
    assert float(t["pos_weight"].sum()) == 3.0  # only at the positive
    # cells whose centre lies inside the box learn it, with the box's weight
    cells = t["box_gauss"][0] > 0
    rows, cols = torch.nonzero(cells, as_tuple=True)
    centres_x = (cols.float() + 0.5) * STRIDE
    centres_y = (rows.float() + 0.5) * STRIDE
    assert bool(((centres_x > 8) & (centres_x < 24) & (centres_y > 8) & (centres_y < 20)).all())
    assert torch.equal(t["boxes"][0, 3, 4], torch.tensor([8.0, 8.0, 24.0, 20.0]))
    assert float(t["box_weight"][0, 3, 4]) == 3.0
    assert float(t["box_gauss"][0, 3, 4]) == 1.0


def test_targets_of_an_image_without_boxes_are_background() -> None:
    t = centernet_targets([_target([], [])], 3, (4, 4))
    assert float(t["heatmap"].sum()) == 0.0
    assert float(t["box_gauss"].sum()) == 0.0


def test_a_cell_learns_the_box_whose_gaussian_is_largest_there() -> None:
    # two boxes side by side: each centre cell learns its own box
    t = centernet_targets(
        [_target([[0.0, 0.0, 16.0, 16.0], [16.0, 0.0, 32.0, 16.0]], [0, 0], [1.0, 2.0])],
        1,
        (8, 8),
    )
    assert torch.equal(t["boxes"][0, 2, 2], torch.tensor([0.0, 0.0, 16.0, 16.0]))
    assert torch.equal(t["boxes"][0, 2, 6], torch.tensor([16.0, 0.0, 32.0, 16.0]))
    assert float(t["box_weight"][0, 2, 6]) == 2.0


def test_two_boxes_with_one_centre_cell_give_it_to_the_first_listed() -> None:
    # both Gaussians peak (= 1) at cell (2, 2): the tie goes to the first box of the list
    big, small = [0.0, 0.0, 20.0, 20.0], [6.0, 6.0, 14.0, 14.0]
    for first, second in ((big, small), (small, big)):
        t = centernet_targets([_target([first, second], [0, 0], [1.0, 3.0])], 1, (8, 8))
        assert torch.equal(t["boxes"][0, 2, 2], torch.tensor(first))
        assert float(t["box_weight"][0, 2, 2]) == 1.0
        assert float(t["pos_weight"][0, 0, 2, 2]) == 3.0  # the heavier positive weight


@pytest.mark.parametrize(
    "box",
    [[4.0, 4.0, 6.0, 6.0], [4.5, 4.5, 5.5, 5.5], [0.0, 0.0, 2.0, 30.0], [30.0, 0.0, 32.0, 10.0]],
)
def test_a_box_narrower_than_a_cell_is_learned_at_its_centre_cell(box) -> None:
    # no cell centre lies inside these boxes; the centre cell learns them all the same
    t = centernet_targets([_target([box], [0], [2.0])], 1, (8, 8))
    row, col = torch.nonzero(t["heatmap"][0, 0] == 1.0)[0].tolist()
    assert float(t["box_gauss"][0, row, col]) == 1.0
    assert torch.equal(t["boxes"][0, row, col], torch.tensor(box))
    assert float(t["box_weight"][0, row, col]) == 2.0


# ---------------------------------------------------------------------- EARL weights
@pytest.fixture(scope="module")
def net() -> EarlCenterNet:
    return centernet_detector(2, image_size=SIZE, random_state=0)


def _outputs(net: EarlCenterNet, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, SIZE, SIZE, generator=g)
    net.eval()  # batch norm in eval mode: the outputs do not depend on the batch
    with torch.no_grad():
        logits, dist = net.features(net._batch(x))
    return logits, dist


BOXES = [[[4.0, 4.0, 20.0, 22.0], [22.0, 2.0, 30.0, 14.0]], [[8.0, 10.0, 28.0, 30.0]]]
LABELS = [[1, 0], [1]]


def _loss(net: EarlCenterNet, weights: list[list[float]] | None) -> dict[str, float]:
    logits, dist = _outputs(net)
    targets = [
        _target(b, lab, None if weights is None else w)
        for b, lab, w in zip(BOXES, LABELS, weights or [None, None], strict=True)
    ]
    return {k: float(v) for k, v in net.compute_loss(logits, dist, targets).items()}


def test_weights_of_one_equal_no_weights(net: EarlCenterNet) -> None:
    assert _loss(net, [[1.0, 1.0], [1.0]]) == _loss(net, None)


def test_the_losses_are_linear_in_one_box_weight(net: EarlCenterNet) -> None:
    # L(w) = background part + w * that box's part: equal steps for equal changes of w
    losses = [_loss(net, [[w, 1.0], [1.0]]) for w in (0.0, 1.0, 2.0, 3.0)]
    for key in ("heatmap", "box"):
        values = np.array([loss[key] for loss in losses])
        steps = np.diff(values)
        assert steps[0] > 0
        np.testing.assert_allclose(steps, steps[0], rtol=1e-4)


def test_the_positive_loss_is_the_hand_computed_weighted_focal_loss(net: EarlCenterNet) -> None:
    logits, _ = _outputs(net)
    # the box [4, 4, 20, 22] of class 1 has its centre (12, 13) in cell (row 3, column 3)
    p = torch.sigmoid(logits[0, 1, 3, 3])
    pos_part = float(-((1 - p) ** 2) * torch.log(p))
    n_pos = 3
    w0 = _loss(net, [[0.0, 1.0], [1.0]])["heatmap"]
    w3 = _loss(net, [[3.0, 1.0], [1.0]])["heatmap"]
    assert w3 - w0 == pytest.approx(3 * pos_part / n_pos, rel=1e-4)


def test_the_gradient_at_a_positive_scales_with_its_weight(net: EarlCenterNet) -> None:
    logits, dist = _outputs(net)

    def grad_at_peak(weight: float) -> float:
        z = logits.clone().requires_grad_(True)
        targets = [_target(BOXES[0], LABELS[0], [weight, 1.0]), _target(BOXES[1], LABELS[1])]
        net.compute_loss(z, dist, targets)["heatmap"].backward()
        return float(z.grad[0, 1, 3, 3])

    g1, g3 = grad_at_peak(1.0), grad_at_peak(3.0)
    assert g1 < 0  # raises the logit of the positive
    assert g3 == pytest.approx(3 * g1, rel=1e-5)


# ---------------------------------------------------------------------- inference
def test_predictions_are_clipped_boxes_of_the_unpadded_image() -> None:
    net = centernet_detector(3, image_size=40, score_thresh=0.0, random_state=0).eval()
    with torch.no_grad():
        out = net([torch.rand(1, 36, 40)])[0]  # padded to 48 x 48 inside
    b = out["boxes"]
    assert len(b) == 100
    assert float(b[:, [0, 2]].max()) <= 40
    assert float(b[:, [1, 3]].max()) <= 36
    assert float(b.min()) >= 0
    assert bool((out["scores"][:-1] >= out["scores"][1:]).all())  # best first
    assert set(out["labels"].tolist()) <= {0, 1, 2}


def test_padding_cells_hold_no_detection() -> None:
    net = centernet_detector(1, image_size=40, random_state=0).eval()
    logits = torch.full((1, 1, 12, 12), -10.0)  # a 36 x 40 image padded to 48 x 48
    logits[0, 0, 10, 2] = 10.0  # centre at y = 42: in the padding
    logits[0, 0, 4, 9] = 10.0  # centre at (38, 18): inside
    dist = torch.ones(1, 4, 12, 12)
    out = net.postprocess(logits, dist, (36, 40))[0]
    assert len(out["scores"]) == 1
    assert out["boxes"][0].tolist() == pytest.approx([37.0, 17.0, 39.0, 19.0], abs=1e-4)


def test_giou_loss_by_hand() -> None:
    # intersection 1, union 7, enclosing box 9: GIoU = 1/7 - 2/9
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]])
    loss = _giou_loss(a, b)
    assert loss.tolist() == pytest.approx([1 - (1 / 7 - 2 / 9), 0.0], abs=1e-6)


def test_the_negative_loss_of_one_cell_by_hand(net: EarlCenterNet) -> None:
    # one box; every other cell is a negative with (1 - heat)^4 p^2 log(1 - p)
    logits, dist = _outputs(net)
    targets = [_target([[4.0, 4.0, 20.0, 22.0]], [1]), _target([], [])]
    t = centernet_targets(targets, 2, logits.shape[-2:])
    p = torch.sigmoid(logits)
    pos = t["heatmap"] == 1.0
    neg = -((1 - t["heatmap"]) ** 4) * p**2 * torch.log(1 - p)
    pos_term = -((1 - p) ** 2) * torch.log(p)
    expected = float(torch.where(pos, pos_term, neg).sum() / pos.sum())
    got = float(net.compute_loss(logits, dist, targets)["heatmap"])
    assert got == pytest.approx(expected, rel=1e-5)
    assert int(pos.sum()) == 1


def test_score_threshold_and_detection_cap() -> None:
    logits = torch.full((1, 1, 8, 8), -10.0)
    logits[0, 0, 1, 1] = 2.0  # sigmoid 0.88
    logits[0, 0, 5, 5] = 1.0  # 0.73
    logits[0, 0, 3, 6] = -1.0  # 0.27
    dist = torch.ones(1, 4, 8, 8)
    for thresh, cap, n in ((0.5, 100, 2), (0.2, 100, 3), (0.2, 1, 1)):
        net = centernet_detector(1, score_thresh=thresh, detections_per_img=cap).eval()
        out = net.postprocess(logits, dist, (32, 32))[0]
        assert len(out["scores"]) == n
        assert float(out["scores"][0]) == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))))


def test_errors() -> None:
    with pytest.raises(ValueError, match="`width` must be a positive integer; got 0"):
        EarlCenterNet(2, width=0)
    with pytest.raises(TypeError, match="`n_classes` must be an int"):
        EarlCenterNet(2.0)  # type: ignore[arg-type]  # the wrong type is the test
    with pytest.raises(ValueError, match=r"`score_thresh` must lie in \[0, 1\)"):
        EarlCenterNet(2, score_thresh=1.0)
    net = EarlCenterNet(2).train()
    with pytest.raises(ValueError, match="needs `targets`"):
        net(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="`network` must be one of"):
        build_detector("yolo", n_classes=2)


def test_seeded_builds_are_equal_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a = centernet_detector(2, random_state=3).state_dict()
    b = centernet_detector(2, random_state=3).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def overfit() -> tuple[CrowdDetector, object]:
    from crowdmed.simulate import make_med_mnist

    d = make_med_mnist(8, 0, 0, size=SIZE, digit_size=(12, 16), n_classes=3, random_state=0)
    ids = d.image_ids("train")
    net = centernet_detector(3, image_size=SIZE, random_state=0)
    model = CrowdDetector(
        net,
        epochs=60,
        batch_size=8,
        lr=0.005,
        warmup=10,
        optimizer="adamw",
        random_state=0,
    ).fit(d.images[ids], make_targets(d.truth.assign(weight=1.0), ids, range(3)))
    return model, d


def test_overfits_a_handful_of_canvases(overfit: tuple[CrowdDetector, object]) -> None:
    model, d = overfit
    pred = model.predict(d.images)
    assert model.history_[-1]["loss"] < 0.5 * model.history_[0]["loss"]
    assert mean_average_precision(pred, d.truth, iou_thresholds=0.4)["map"] >= 0.9


def test_save_load_round_trip(overfit: tuple[CrowdDetector, object], tmp_path: Path) -> None:
    model, d = overfit
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert isinstance(again.network, EarlCenterNet)
    assert again.optimizer == "adamw"
    a, b = model.predict(d.images), again.predict(d.images)
    assert len(a) > 0
    np.testing.assert_allclose(
        a[["xmin", "ymin", "xmax", "ymax", "score"]].to_numpy(),
        b[["xmin", "ymin", "xmax", "ymax", "score"]].to_numpy(),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.slow
def test_learns_med_mnist_at_the_papers_scale() -> None:
    """Every reader's boxes on 5,000 canvases, 8 epochs: mAP@0.4 >= 0.9 (about 2 CPU minutes)."""
    from crowdmed.simulate import make_med_mnist

    d = make_med_mnist(5000, 0, 500, n_readers=3, proficiency=0.8, random_state=0)
    tr, te = d.image_ids("train"), d.image_ids("test")
    readers = d.readers[d.readers["image"].isin(tr)].assign(weight=1.0)
    model = CrowdDetector(
        centernet_detector(10, image_size=64, random_state=1),
        epochs=8,
        batch_size=32,
        lr=0.002,
        warmup=50,
        optimizer="adamw",
        random_state=1,
    ).fit(d.images[tr], make_targets(readers, tr, range(10)))
    pred = model.predict(d.images[te], image_ids=te)
    truth = d.truth[d.truth["image"].isin(te)]
    assert mean_average_precision(pred, truth, iou_thresholds=0.4)["map"] >= 0.9


def test_float32_images_into_a_float64_network() -> None:
    net = centernet_detector(2, image_size=SIZE, random_state=0).double().eval()
    with torch.no_grad():
        out = net([torch.rand(1, SIZE, SIZE)])
    assert out[0]["boxes"].dtype == torch.float64
    assert len(out[0]["scores"]) > 0
