"""The AggNet network, dense inference, test-time augmentation and multi-scale fusion."""

import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from crowdmed.nn.aggnet import AggNetCNN, dense_logits  # noqa: E402
from crowdmed.pathology.detector import MultiScaleDetector, detect, geometric_mean, load_detector  # noqa: E402
from crowdmed.pathology.patches import extract_patches, rescale_image  # noqa: E402
from crowdmed.pathology.synthetic import make_synthetic_fields  # noqa: E402
from crowdmed.training.persistence import load_model  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _net(seed):
    torch.manual_seed(seed)
    net = AggNetCNN().eval()
    # larger biases so that ReLUs and max-pools are not trivially zero
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    return net


def _detector(scales=(0.5, 1.0), seed=0):
    return MultiScaleDetector(scales, [_net(seed + i) for i in range(len(scales))], radius=8.0)


def test_patch_network_shapes_and_errors():
    net = AggNetCNN()
    assert net(torch.zeros(4, 3, 33, 33)).shape == (4, 2)
    with pytest.raises(ValueError, match="33, 33"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="n_classes"):
        AggNetCNN(n_classes=1)
    with pytest.raises(TypeError, match="in_channels"):
        AggNetCNN(in_channels=3.0)


def test_dense_equals_patchwise_at_every_pixel_centre():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 37, 3)).astype(np.uint8)
    net = _net(1)
    padded = np.pad(image / 255.0, ((16, 16), (16, 16), (0, 0)), mode="reflect").astype(np.float32)
    with torch.no_grad():
        dense = dense_logits(net, torch.from_numpy(padded.transpose(2, 0, 1))[None])[0].numpy()
        yy, xx = np.mgrid[0:40, 0:37]
        pts = pd.DataFrame({"image": 0, "x": xx.ravel(), "y": yy.ravel()})
        patches = extract_patches([image], pts, size=33)
        patchwise = net(torch.from_numpy(patches)).numpy()
    assert dense.shape == (2, 40, 37)
    assert np.abs(patchwise).max() > 1e-2  # not a trivial network
    np.testing.assert_allclose(dense.reshape(2, -1).T, patchwise, rtol=1e-4, atol=1e-4)


def test_scale_map_equals_patch_network_on_the_rescaled_image():
    image = make_synthetic_fields(1, size=(64, 64), random_state=0).images[0]
    det = _detector(scales=(0.5,))
    smap = det.scale_map(image, 0, tta=False)
    scaled = rescale_image(image / 255.0, 0.5)
    assert smap.shape == scaled.shape[:2] == (32, 32)
    rows, cols = np.array([0, 5, 31, 17]), np.array([0, 30, 31, 3])
    # patches on the rescaled image taken at its own pixel grid (scale 1 of `scaled`)
    pts = pd.DataFrame({"image": 0, "x": cols, "y": rows})
    with torch.no_grad():
        p = torch.softmax(det.models[0](torch.from_numpy(extract_patches([scaled], pts))), 1)[:, 1]
    np.testing.assert_allclose(smap[rows, cols], p.numpy(), atol=1e-5)


@pytest.mark.parametrize("shape", [(48, 48), (40, 52)])
def test_tta_map_is_equivariant_to_rotations_and_mirrors(shape):
    image = make_synthetic_fields(1, size=(64, 64), random_state=2).images[0][
        : shape[0], : shape[1]
    ]
    det = _detector()
    base = det.detection_map(image)
    for k in (1, 2, 3):
        rotated = det.detection_map(np.rot90(image, k))
        np.testing.assert_allclose(rotated, np.rot90(base, k), atol=1e-6)
    np.testing.assert_allclose(det.detection_map(image[:, ::-1]), base[:, ::-1], atol=1e-6)
    # without TTA the network alone is not equivariant (so the test can fail)
    plain = det.detection_map(image, tta=False)
    assert np.abs(det.detection_map(np.rot90(image), tta=False) - np.rot90(plain)).max() > 1e-3


def test_detection_map_is_the_geometric_mean_of_the_resized_scale_maps():
    image = make_synthetic_fields(1, size=(60, 60), random_state=3).images[0]
    det = _detector(scales=(0.33, 0.66, 1.0))
    maps = [rescale_image(det.scale_map(image, i), shape=(60, 60)) for i in range(3)]
    fused = det.detection_map(image)
    expected = np.cbrt(
        np.clip(maps[0], 1e-7, None) * np.clip(maps[1], 1e-7, None) * np.clip(maps[2], 1e-7, None)
    )
    np.testing.assert_allclose(fused, expected, rtol=1e-6, atol=1e-7)
    assert fused.shape == (60, 60)
    assert geometric_mean([np.full(3, 0.5)] * 3) == pytest.approx(np.full(3, 0.5))


def test_tiling_does_not_change_the_map():
    image = make_synthetic_fields(1, size=(64, 64), random_state=4).images[0]
    det = _detector(scales=(1.0,))
    np.testing.assert_allclose(
        det.scale_map(image, 0, tile=17), det.scale_map(image, 0, tile=256), atol=1e-9
    )


def test_detect_and_save_load_round_trip(tmp_path):
    f = make_synthetic_fields(2, size=(64, 64), random_state=5)
    det = _detector()
    det.threshold = 0.0
    det.history = {0.5: [{"epoch": 1.0, "loss": 0.25}], 1.0: [{"epoch": 1.0, "loss": 0.125}]}
    det.settings = {"seed": 3}
    maps = {}
    cands = detect(det, f.as_dict(), maps=maps)
    assert list(cands.columns) == ["image", "x", "y", "score"]
    assert set(maps) == set(f.names)
    folder = det.save(tmp_path / "d")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == "patch-detect"
    assert config["scales"] == [0.5, 1.0]
    assert config["architecture"]["channels"] == [16, 32, 32]
    for again in (load_detector(folder), MultiScaleDetector.load(folder), load_model(folder)):
        assert isinstance(again, MultiScaleDetector)
        assert again.scales == det.scales
        assert again.radius == det.radius
        assert again.threshold == det.threshold
        assert again.history == det.history
        assert again.settings == det.settings
        assert again.stain is None
        pd.testing.assert_frame_equal(detect(again, f.as_dict()), cands)


def test_stain_normaliser_is_saved(tmp_path):
    pytest.importorskip("torchstain")
    from crowdmed.pathology.stain import StainNormalizer

    f = make_synthetic_fields(2, size=(64, 64), random_state=6)
    det = _detector(scales=(1.0,))
    det.stain = StainNormalizer(beta=0.1).fit(f.images[0])
    expected = det.detection_map(f.images[1], tta=False)
    again = load_detector(det.save(tmp_path / "d"))
    assert again.stain.beta == 0.1
    np.testing.assert_array_equal(again.stain.stain_matrix_, det.stain.stain_matrix_)
    np.testing.assert_array_equal(again.detection_map(f.images[1], tta=False), expected)


def test_a_detector_file_of_the_old_format_is_still_read(tmp_path):
    f = make_synthetic_fields(1, size=(48, 48), random_state=7)
    det = _detector()
    payload = {
        "format": "crowdmed-mitosis-detector",
        "format_version": 1,
        "scales": det.scales,
        "network": {"channels": [16, 32, 32], "hidden": 64, "n_classes": 2},
        "state_dicts": [m.state_dict() for m in det.models],
        "radius": det.radius,
        "threshold": 0.25,
        "stain": None,
        "history": {"0.5": [{"epoch": 1.0}]},
        "settings": {},
    }
    torch.save(payload, tmp_path / "detector.pt")
    old = load_detector(tmp_path / "detector.pt")
    assert old.threshold == 0.25
    assert old.history == {0.5: [{"epoch": 1.0}]}
    np.testing.assert_array_equal(old.detection_map(f.images[0]), det.detection_map(f.images[0]))
    torch.save({"format": "x"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a mitosis detector"):
        load_detector(tmp_path / "x.pt")


def _one_line_error(folder, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        load_detector(folder)
    assert "\n" not in str(info.value)


def test_changed_or_corrupt_folders_fail_with_one_line_naming_the_file(tmp_path):
    _one_line_error(tmp_path / "nowhere", "nowhere' does not exist")
    folder = _detector().save(tmp_path / "d")
    cfg, weights = folder / "config.json", folder / "model.safetensors"
    text = cfg.read_text()
    config = json.loads(text)
    config["architecture"]["hidden"] = 32
    cfg.write_text(json.dumps(config))
    _one_line_error(folder, r"model\.safetensors' does not fit its config\.json \(scale 0\.5")
    config["scales"] = [0.5, 1.0, 2.0]
    config["architecture"]["hidden"] = 64
    cfg.write_text(json.dumps(config))
    _one_line_error(folder, r"model\.safetensors' does not fit its config\.json \(scale 2\.0")
    del config["radius"]
    config["scales"] = [0.5, 1.0]
    cfg.write_text(json.dumps(config))
    _one_line_error(folder, r"config\.json' is not a valid mitosis detector config \('radius'\)")
    cfg.write_text(text.replace('"task": "patch-detect"', '"task": "detect"'))
    _one_line_error(folder, r"config\.json' holds a 'detect' model")
    cfg.write_text("{")
    _one_line_error(folder, r"Cannot read '.*config\.json'")
    cfg.write_text(text)
    weights.write_bytes(b"\x00" * 64)
    _one_line_error(folder, r"Cannot read '.*model\.safetensors'")
    weights.unlink()
    _one_line_error(folder, r"model\.safetensors' is missing")
