"""EARL-weighted FCOS against a hand-computed weighted loss; CrowdDetector fit, resume, save."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from torchvision.models.detection.fcos import FCOSHead  # noqa: E402

from crowdmed.exceptions import NotFittedError  # noqa: E402
from crowdmed.nn.detection import EarlFCOSHead, fcos_detector, load_detector_weights  # noqa: E402
from crowdmed.training.detector import (  # noqa: E402
    CrowdDetector,
    DetectorTrainer,
    fuse_model_predictions,
    make_targets,
    predict_boxes,
    variant_targets,
)
from crowdmed.training.persistence import load_model  # noqa: E402

SIZE = 48
_BOX = ["xmin", "ymin", "xmax", "ymax"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _batch(seed: int = 0) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(1, SIZE, SIZE, generator=g) for _ in range(3)]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 4.0, 20.0, 22.0], [26.0, 24.0, 44.0, 40.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[10.0, 8.0, 30.0, 30.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},
    ]
    return images, targets


def _losses(model: torch.nn.Module, images: list, targets: list) -> dict[str, float]:
    model.train()
    with torch.no_grad():
        return {k: float(v) for k, v in model(images, targets).items()}


def _with_weights(targets: list, weights: list[list[float]]) -> list:
    return [{**t, "weights": torch.tensor(w)} for t, w in zip(targets, weights, strict=True)]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return fcos_detector(3, image_size=SIZE, random_state=0)


def test_head_is_the_earl_head(model: torch.nn.Module) -> None:
    assert isinstance(model.head, EarlFCOSHead)
    assert isinstance(model.head, FCOSHead)


def test_weights_of_one_equal_the_plain_torchvision_loss(model: torch.nn.Module) -> None:
    images, targets = _batch()
    earl_ones = _losses(model, images, _with_weights(targets, [[1.0, 1.0], [1.0], []]))
    earl_none = _losses(model, images, targets)
    model.head.__class__ = FCOSHead  # the same parameters, torchvision's loss
    try:
        plain = _losses(model, images, targets)
    finally:
        model.head.__class__ = EarlFCOSHead
    assert set(plain) == {"classification", "bbox_regression", "bbox_ctrness"}
    for key, value in plain.items():
        assert earl_ones[key] == pytest.approx(value, rel=1e-6, abs=1e-7)
        assert earl_none[key] == pytest.approx(value, rel=1e-6, abs=1e-7)


def test_zero_weight_removes_a_box(model: torch.nn.Module) -> None:
    images, targets = _batch()
    w = [[1.0, 0.0], [0.0], []]
    base = _losses(model, images, _with_weights(targets, w))
    # Changing the class of zero-weight boxes changes nothing: their locations are ignored.
    relabelled = [dict(t) for t in targets]
    relabelled[0] = {**targets[0], "labels": torch.tensor([1, 0])}
    relabelled[1] = {**targets[1], "labels": torch.tensor([2])}
    moved = _losses(model, images, _with_weights(relabelled, w))
    for key in base:
        assert moved[key] == pytest.approx(base[key], rel=1e-6)
    # All boxes at zero weight: no box losses left, only the background's focal loss.
    zero = _losses(model, images, _with_weights(targets, [[0.0, 0.0], [0.0], []]))
    assert zero["bbox_regression"] == 0.0
    assert zero["bbox_ctrness"] == 0.0
    hand = _hand_losses(model, images, _with_weights(targets, [[0.0, 0.0], [0.0], []]))
    assert zero["classification"] == pytest.approx(hand["classification"], rel=1e-5)
    assert hand["classification"] < base["classification"]


def test_box_losses_are_linear_in_the_weights(model: torch.nn.Module) -> None:
    images, targets = _batch()
    a = _losses(model, images, _with_weights(targets, [[1.0, 0.0], [0.0], []]))
    b = _losses(model, images, _with_weights(targets, [[0.0, 1.0], [1.0], []]))
    half = _losses(model, images, _with_weights(targets, [[0.5, 0.5], [0.5], []]))
    ones = _losses(model, images, _with_weights(targets, [[1.0, 1.0], [1.0], []]))
    for key in ("bbox_regression", "bbox_ctrness"):
        assert a[key] + b[key] == pytest.approx(ones[key], rel=1e-5)
        assert half[key] == pytest.approx(0.5 * ones[key], rel=1e-5)
    assert a["bbox_regression"] > 0
    assert b["bbox_regression"] > 0


def _focal(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Sigmoid focal loss (alpha 0.25, gamma 2) summed over classes, written out."""
    p = torch.sigmoid(x)
    ce = torch.clamp(x, min=0) - x * t + torch.log1p(torch.exp(-x.abs()))
    p_t = p * t + (1 - p) * (1 - t)
    return (ce * (1 - p_t) ** 2 * (0.25 * t + 0.75 * (1 - t))).sum()


def _giou_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - GIoU`` of two ``(4,)`` corner boxes, written out."""
    iw = torch.clamp(torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0]), min=0)
    ih = torch.clamp(torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1]), min=0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (torch.maximum(a[2], b[2]) - torch.minimum(a[0], b[0])) * (
        torch.maximum(a[3], b[3]) - torch.minimum(a[1], b[1])
    )
    return 1 - (inter / union - (hull - union) / hull)


def _capture(model: torch.nn.Module, images: list, targets: list) -> dict[str, Any]:
    """The arguments FCOS passes to its head's ``compute_loss`` (one training forward)."""
    seen: dict[str, Any] = {}
    original = model.head.compute_loss

    def spy(targets: Any, head_outputs: Any, anchors: Any, matched_idxs: Any) -> Any:
        seen.update(targets=targets, outputs=head_outputs, anchors=anchors, matched=matched_idxs)
        return original(targets, head_outputs, anchors, matched_idxs)

    model.head.compute_loss = spy
    try:
        model.train()
        model(images, targets)
    finally:
        del model.head.compute_loss
    return seen


def _hand_from(seen: dict[str, Any]) -> dict[str, torch.Tensor]:
    """EARL's losses location by location: positives weighted by their box's weight."""
    out = seen["outputs"]
    cls, reg, ctr = out["cls_logits"], out["bbox_regression"], out["bbox_ctrness"]
    total = {"classification": 0.0, "bbox_regression": 0.0, "bbox_ctrness": 0.0}
    n_pos = 0
    for i, (tgt, anchors, matched) in enumerate(
        zip(seen["targets"], seen["anchors"], seen["matched"], strict=True)
    ):
        for loc, j in enumerate(matched.tolist()):
            onehot = torch.zeros(cls.shape[-1])
            if j < 0:  # background: weight 1, no box losses
                total["classification"] += _focal(cls[i, loc], onehot)
                continue
            n_pos += 1
            w = tgt["weights"][j]
            onehot[tgt["labels"][j]] = 1.0
            total["classification"] += w * _focal(cls[i, loc], onehot)
            a = anchors[loc]
            cx, cy, aw, ah = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2, a[2] - a[0], a[3] - a[1]
            d = reg[i, loc] * torch.stack([aw, ah, aw, ah])
            pred = torch.stack([cx - d[0], cy - d[1], cx + d[2], cy + d[3]])
            box = tgt["boxes"][j]
            total["bbox_regression"] += w * _giou_loss(pred, box)
            left, top, right, bottom = cx - box[0], cy - box[1], box[2] - cx, box[3] - cy
            target = torch.sqrt(
                torch.minimum(left, right)
                / torch.maximum(left, right)
                * torch.minimum(top, bottom)
                / torch.maximum(top, bottom)
            )
            x = ctr[i, loc, 0]
            bce = torch.clamp(x, min=0) - x * target + torch.log1p(torch.exp(-x.abs()))
            total["bbox_ctrness"] += w * bce
    return {k: v / max(n_pos, 1) for k, v in total.items()}


def _hand_losses(model: torch.nn.Module, images: list, targets: list) -> dict[str, float]:
    with torch.no_grad():
        return {k: float(v) for k, v in _hand_from(_capture(model, images, targets)).items()}


@pytest.mark.parametrize(
    "weights",
    [
        [[1.0, 1.0], [1.0], []],  # torchvision's loss
        [[0.3, 0.9], [0.6], []],  # normalised agreements
        [[2.0, 3.0], [1.0], []],  # fused confidences: boxes per cluster (Le et al. eq. 2)
        [[1.0, 0.0], [0.0], []],  # zero-weight boxes contribute nothing
        [[0.0, 0.0], [0.0], []],
    ],
)
def test_earl_loss_equals_the_hand_computed_weighted_loss(
    model: torch.nn.Module, weights: list[list[float]]
) -> None:
    images, targets = _batch()
    weighted = _with_weights(targets, weights)
    earl = _losses(model, images, weighted)
    hand = _hand_losses(model, images, weighted)
    assert hand["classification"] > 0
    for key, value in hand.items():
        assert earl[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    if max(max(w, default=0.0) for w in weights) > 0:
        assert hand["bbox_regression"] > 0


def test_gradients_of_the_weighted_loss_are_the_hand_computed_ones(
    model: torch.nn.Module,
) -> None:
    images, targets = _batch()
    seen = _capture(model, images, _with_weights(targets, [[0.3, 0.9], [0.6], []]))
    outputs = seen["outputs"]
    earl = EarlFCOSHead.compute_loss(
        model.head, seen["targets"], outputs, seen["anchors"], seen["matched"]
    )
    hand = _hand_from(seen)
    keys = ["cls_logits", "bbox_regression", "bbox_ctrness"]
    g_earl = torch.autograd.grad(sum(earl.values()), [outputs[k] for k in keys], retain_graph=True)
    g_hand = torch.autograd.grad(sum(hand.values()), [outputs[k] for k in keys])
    for key, a, b in zip(keys, g_earl, g_hand, strict=True):
        assert a.abs().sum() > 0, key
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    model.zero_grad()


def _tiny_data() -> tuple[np.ndarray, list]:
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, SIZE, SIZE)).astype(np.float32)
    boxes = pd.DataFrame(
        {
            "image": [0, 0, 1, 2, 3, 4, 5],
            "class": ["a", "b", "a", "b", "a", "a", "b"],
            "xmin": [2.0, 24, 5, 10, 3, 20, 8],
            "ymin": [2.0, 20, 6, 10, 4, 22, 9],
            "xmax": [18.0, 44, 25, 30, 21, 40, 30],
            "ymax": [20.0, 40, 24, 28, 22, 44, 27],
            "weight": [1.0, 0.5, 1.0, 0.3, 1.0, 0.7, 1.0],
        }
    )
    return x, make_targets(boxes, range(6), ["a", "b"])


def _fit(seed: int) -> DetectorTrainer:
    x, targets = _tiny_data()
    net = fcos_detector(2, image_size=SIZE, random_state=seed)
    return DetectorTrainer(net, epochs=1, batch_size=3, lr=0.01, warmup=1, random_state=seed).fit(
        x, targets
    )


def test_seeds_reproduce() -> None:
    a, b, c = _fit(1), _fit(1), _fit(2)
    assert a.n_steps_ == 2
    assert a.history_[0]["loss"] == b.history_[0]["loss"]
    pairs = zip(a.network.state_dict().items(), b.network.state_dict().values(), strict=True)
    for (name, pa), pb in pairs:
        assert torch.equal(pa, pb), name
    assert a.history_[0]["loss"] != c.history_[0]["loss"]
    # the numbers of the loop this one replaced (crowdmed before the training engine)
    rec = a.history_[0]
    assert [rec[k] for k in ("classification", "bbox_regression", "bbox_ctrness", "loss")] == (
        pytest.approx(
            [0.918346643447876, 0.8144108653068542, 0.5445311665534973, 2.277288794517517]
        )
    )
    assert rec["lr"] == 0.01
    bias = a.network.head.classification_head.cls_logits.bias
    assert bias.tolist() == pytest.approx([-4.592004776000977, -4.593884468078613], rel=1e-5)
    x, _ = _tiny_data()
    pa = a.predict(x[:2], classes=["a", "b"])
    pd.testing.assert_frame_equal(pa, b.predict(x[:2], classes=["a", "b"]))
    assert list(pa.columns) == ["image", "class", "xmin", "ymin", "xmax", "ymax", "score"]
    assert set(pa["class"]) <= {"a", "b"}


def test_fit_leaves_the_global_torch_rng_alone() -> None:
    state = torch.random.get_rng_state()
    _fit(3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_trainer_errors(tmp_path: Path) -> None:
    x, targets = _tiny_data()
    net = fcos_detector(2, image_size=SIZE, random_state=0)
    with pytest.raises(NotFittedError, match="not fitted"):
        DetectorTrainer(net).predict(x)
    with pytest.raises(NotFittedError, match="not fitted"):
        CrowdDetector(net).save(tmp_path / "m")
    with pytest.raises(ValueError, match="one entry per image"):
        DetectorTrainer(net, epochs=1).fit(x, targets[:3])
    with pytest.raises(ValueError, match="`epochs` must be a positive integer"):
        DetectorTrainer(net, epochs=0).fit(x, targets)
    with pytest.raises(ValueError, match="backbone"):
        fcos_detector(2, backbone="vgg")


def test_start_from_the_weights_of_a_model_folder(tmp_path: Path) -> None:
    det = _fit(0)
    folder = det.save(tmp_path / "model")
    other = load_detector_weights(fcos_detector(2, image_size=SIZE, random_state=9), folder)
    for pa, pb in zip(det.network.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    # a state dict in a .pt file (weights only) is read too
    torch.save({"state_dict": det.network.state_dict()}, tmp_path / "w.pt")
    again = load_detector_weights(fcos_detector(2, image_size=SIZE), tmp_path / "w.pt")
    assert torch.equal(
        again.head.classification_head.cls_logits.weight,
        det.network.head.classification_head.cls_logits.weight,
    )
    with pytest.raises(ValueError, match="does not fit this detector"):
        load_detector_weights(fcos_detector(5, image_size=SIZE), tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_detector_weights(det.network, tmp_path / "missing.pt")


class _Stop(Exception):
    pass


def test_an_interrupted_fit_resumes_exactly(tmp_path: Path) -> None:
    x, targets = _tiny_data()

    def trainer(**kw: Any) -> CrowdDetector:
        net = fcos_detector(2, image_size=SIZE, random_state=5)
        return CrowdDetector(net, epochs=3, batch_size=4, warmup=2, random_state=5, **kw)

    full = trainer().fit(x, targets)

    def stop(epoch: int, epochs: int, record: dict[str, float]) -> None:
        if epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        trainer(checkpoint_dir=tmp_path, progress=stop).fit(x, targets)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]
    epochs_run: list[int] = []
    resumed = trainer(checkpoint_dir=tmp_path, progress=lambda e, n, r: epochs_run.append(e))
    resumed.fit(x, targets)
    assert epochs_run == [2, 3]
    assert resumed.n_steps_ == full.n_steps_ == 6
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history_] == [
        {k: v for k, v in r.items() if k not in drop} for r in full.history_
    ]
    pairs = zip(
        full.network.state_dict().items(), resumed.network.state_dict().values(), strict=True
    )
    for (name, pa), pb in pairs:
        assert torch.equal(pa, pb), name
    with pytest.raises(ValueError, match=r"another run \(changed: \['momentum'\]\)"):
        trainer(checkpoint_dir=tmp_path, momentum=0.5).fit(x, targets)
    # resume=False starts over: the same run as without a checkpoint
    fresh = trainer(checkpoint_dir=tmp_path, resume=False).fit(x, targets)
    assert fresh.history_[0]["loss"] == full.history_[0]["loss"]


# ---------------------------------------------------------------------- persistence
@pytest.fixture(scope="module")
def fitted() -> CrowdDetector:
    x, targets = _tiny_data()
    net = fcos_detector(2, image_size=SIZE, random_state=4)
    return CrowdDetector(
        net, classes=["a", "b"], epochs=2, batch_size=3, warmup=1, random_state=4
    ).fit(x, targets)


def test_save_load_round_trip_predicts_the_same(fitted: CrowdDetector, tmp_path: Path) -> None:
    x, _ = _tiny_data()
    folder = fitted.save(tmp_path / "det")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == "detect"
    assert config["classes"] == ["a", "b"]
    assert config["architecture"]["backbone"] == "resnet10"
    assert config["settings"]["random_state"] == 4
    expected = fitted.predict(x, image_ids=list("uvwxyz"))
    assert len(expected) > 0
    assert set(expected["class"]) <= {"a", "b"}
    for loaded in (CrowdDetector.load(folder), load_model(folder)):
        assert isinstance(loaded, CrowdDetector)
        assert loaded.classes == ["a", "b"]
        assert loaded.history_ == fitted.history_
        assert loaded.n_steps_ == fitted.n_steps_ == 4
        assert not loaded.network.training
        pd.testing.assert_frame_equal(loaded.predict(x, image_ids=list("uvwxyz")), expected)
    # the weights can also go into a network the caller built
    own = CrowdDetector.load(folder, network=fcos_detector(2, image_size=SIZE))
    pd.testing.assert_frame_equal(own.predict(x, image_ids=list("uvwxyz")), expected)


def _one_line_error(folder: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as info:
        CrowdDetector.load(folder)
    assert "\n" not in str(info.value)


def test_changed_or_corrupt_folders_fail_with_one_line_naming_the_file(
    fitted: CrowdDetector, tmp_path: Path
) -> None:
    _one_line_error(tmp_path / "nowhere", "nowhere' does not exist")
    folder = fitted.save(tmp_path / "det")
    cfg = folder / "config.json"
    weights = folder / "model.safetensors"
    text = cfg.read_text()
    config = json.loads(text)
    # another architecture than the weights'
    config["architecture"]["fpn_channels"] = 32
    cfg.write_text(json.dumps(config))
    _one_line_error(folder, r"model\.safetensors' does not fit the detector")
    # a config without the training settings
    del config["settings"]
    cfg.write_text(json.dumps(config))
    _one_line_error(folder, r"config\.json' is not a valid detector config \('settings'\)")
    cfg.write_text(text[:-20])
    _one_line_error(folder, r"Cannot read '.*config\.json'")
    cfg.write_text(text.replace('"task": "detect"', '"task": "patch-detect"'))
    _one_line_error(folder, r"config\.json' holds a 'patch-detect' model")
    cfg.write_text(text)
    weights.write_bytes(weights.read_bytes()[:1000])
    _one_line_error(folder, r"Cannot read '.*model\.safetensors'")
    weights.unlink()
    _one_line_error(folder, r"model\.safetensors' is missing")


def test_only_networks_built_by_build_detector_can_be_saved(tmp_path: Path) -> None:
    det = CrowdDetector(_FixedDetector([[0, 0, 4, 4]]))
    det.history_, det.n_steps_ = [], 0
    with pytest.raises(ValueError, match=r"built by crowdmed\.nn\.detection\.build_detector"):
        det.save(tmp_path / "m")


def test_make_targets_orders_by_image_and_maps_classes() -> None:
    boxes = pd.DataFrame(
        {
            "image": ["q", "p", "q"],
            "class": ["y", "x", "x"],
            "xmin": [1.0, 2.0, 3.0],
            "ymin": [1.0, 2.0, 3.0],
            "xmax": [5.0, 6.0, 7.0],
            "ymax": [5.0, 6.0, 7.0],
            "weight": [0.5, 1.0, 0.25],
        }
    )
    t = make_targets(boxes, ["p", "q", "r"], ["x", "y"])
    assert [len(x["labels"]) for x in t] == [1, 2, 0]
    assert t[1]["labels"].tolist() == [1, 0]
    assert t[1]["weights"].tolist() == [0.5, 0.25]
    assert t[2]["boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="not in `classes`"):
        make_targets(boxes, ["p", "q"], ["x"])
    with pytest.raises(ValueError, match="have no image"):
        make_targets(boxes, ["p"], ["x", "y"])


def test_variant_targets() -> None:
    readers = pd.DataFrame(
        {
            "image": ["a"] * 4,
            "reader": ["r1", "r2", "r3", "r1"],
            "class": [0, 0, 0, 1],
            "xmin": [10.0, 11.0, 12.0, 40.0],
            "ymin": [10.0, 10.0, 11.0, 40.0],
            "xmax": [30.0, 31.0, 30.0, 50.0],
            "ymax": [30.0, 30.0, 31.0, 52.0],
        }
    )
    all_r = variant_targets(readers, "all-readers")
    assert len(all_r) == 4
    assert (all_r["weight"] == 1).all()
    fused = variant_targets(readers, "fused")
    earl = variant_targets(readers, "earl")
    assert len(fused) == len(earl) == 2
    assert (fused["weight"] == 1).all()
    # EARL weight = fused confidence c of Le et al. (2023), Algorithm 1 step 6: the number
    # of boxes in the cluster (3 readers agree on class 0, one box of class 1), not a share
    assert sorted(earl["weight"].tolist()) == [1.0, 3.0]
    with pytest.raises(ValueError, match="variant"):
        variant_targets(readers, "ensemble-of-everything")
    # A fourth reader who read the image and marked nothing leaves the count unchanged.
    empty = pd.DataFrame({"image": ["a"], "reader": ["r4"], "class": [np.nan]})
    with_empty = pd.concat([readers, empty], ignore_index=True)
    earl4 = variant_targets(with_empty, "earl")
    assert sorted(earl4["weight"].tolist()) == [1.0, 3.0]
    assert len(variant_targets(with_empty, "all-readers")) == 4


def test_predict_boxes_holds_the_networks_boxes_with_ids_and_classes() -> None:
    net = fcos_detector(2, image_size=SIZE, random_state=0).eval()
    x = np.random.default_rng(1).random((2, SIZE, SIZE)).astype(np.float32)
    out = predict_boxes(net, x, image_ids=["u", "v"], classes=["p", "q"], batch_size=1)
    assert list(out.columns) == ["image", "class", "xmin", "ymin", "xmax", "ymax", "score"]
    with torch.no_grad():
        raw = net([torch.from_numpy(x[0])[None], torch.from_numpy(x[1])[None]])
    n_kept = 0
    for name, r in zip(["u", "v"], raw, strict=True):
        b = r["boxes"]
        keep = ((b[:, 2] - b[:, 0]) >= 0.01) & ((b[:, 3] - b[:, 1]) >= 0.01)  # not flat
        rows = out[out["image"] == name]
        want = np.column_stack([b[keep].numpy(), r["scores"][keep].numpy()])
        got = rows[[*_BOX, "score"]].to_numpy()
        # two boxes whose scores differ by float noise may come out in either order (the
        # batch of one image and the batch of two use different kernels): pair them up
        assert got.shape == want.shape
        i, j = linear_sum_assignment(np.abs(got[:, None, :] - want[None, :, :]).max(axis=2))
        np.testing.assert_allclose(got[i, :4], want[j, :4], atol=1e-4)
        np.testing.assert_allclose(got[i, 4], want[j, 4], atol=1e-5)
        labels = [["p", "q"][k] for k in r["labels"][keep].tolist()]
        assert [rows["class"].tolist()[k] for k in i] == [labels[k] for k in j]
        n_kept += int(keep.sum())
    assert len(out) == n_kept > 0


class _FixedDetector(torch.nn.Module):
    """Returns the same boxes for every image (as a detector in eval mode does)."""

    def __init__(self, boxes: list[list[float]]) -> None:
        super().__init__()
        self.boxes = torch.tensor(boxes, dtype=torch.float32)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        n = len(self.boxes)
        return [
            {
                "boxes": self.boxes.clone(),
                "labels": torch.zeros(n, dtype=torch.int64),
                "scores": torch.linspace(0.9, 0.5, n),
            }
            for _ in images
        ]


def test_predict_boxes_drops_degenerate_boxes() -> None:
    # A box clipped to the image border can end with zero width: it can match nothing, and a
    # box file holding it is rejected by read_boxes / check_boxes.
    net = _FixedDetector([[0, 16, 0, 16], [2, 2, 10, 10], [5, 5, 5.001, 9], [60, 0, 64, 64]])
    out = predict_boxes(net, np.zeros((2, 64, 64), np.float32), image_ids=["a", "b"])
    assert out["image"].tolist() == ["a", "a", "b", "b"]
    assert out["xmin"].tolist() == [2.0, 60.0, 2.0, 60.0]
    assert ((out["xmax"] > out["xmin"]) & (out["ymax"] > out["ymin"])).all()


def _preds(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image", "class", "xmin", "ymin", "xmax", "ymax", "score"])


def test_fuse_model_predictions() -> None:
    p1 = _preds([(0, 1, 0.0, 0.0, 10.0, 10.0, 0.8), (1, 2, 5.0, 5.0, 9.0, 9.0, 0.4)])
    p2 = _preds([(0, 1, 1.0, 0.0, 11.0, 10.0, 0.6)])
    fused = fuse_model_predictions({"a": p1, "b": p2})
    assert list(fused.columns) == ["image", "class", "xmin", "ymin", "xmax", "ymax", "score",
                                   "n_models"]  # fmt: skip
    assert fused["image"].tolist() == [0, 1]
    assert fused["xmin"].tolist() == pytest.approx([0.6 / 1.4, 5.0])
    # WBF avg: mean score x min(n_boxes, n_models) / n_models; model b counts on image 1
    assert fused["score"].tolist() == pytest.approx([0.7, 0.2])
    assert fused["n_models"].tolist() == [2, 1]
    # a model that predicted nothing is still a source of every image
    silent = fuse_model_predictions({"a": p1, "b": p2, "c": p1.iloc[:0]})
    assert silent["score"].tolist() == pytest.approx([0.7 * 2 / 3, 0.4 / 3])
    weighted = fuse_model_predictions({"a": p1, "b": p2}, weights={"a": 1.0, "b": 3.0})
    assert weighted["xmin"].iloc[0] == pytest.approx(1.8 / 2.6)
    assert fuse_model_predictions({"a": p1}, skip_box_thr=0.5)["image"].tolist() == [0]
    empty = fuse_model_predictions({"a": p1.iloc[:0]})
    assert empty.empty
    assert "n_models" in empty.columns
    with pytest.raises(ValueError, match="non-empty mapping"):
        fuse_model_predictions({})
    with pytest.raises(ValueError, match=r"model 'a' lack columns \['score'\]"):
        fuse_model_predictions({"a": p1.drop(columns="score")})
    with pytest.raises(ValueError, match="not in `image_ids`"):
        fuse_model_predictions({"a": p1}, image_ids=[0])
