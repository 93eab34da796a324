"""device/preprocess.py follows the model card's transform exactly, as training does."""

import pathlib

import cv2
import numpy as np
import pytest

from device.model_card import InputSpec
from device.preprocess import Preprocessor, center_square, preprocess_rgb

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "demo"
SPEC = InputSpec("Input", (1, 3, 32, 32), "center-square", "area", 1 / 255.0,
                 [0.47, 0.45, 0.41], [0.25, 0.24, 0.26])


def _card_spec_dict(spec):
    return {"name": spec.name, "shape": list(spec.shape), "layout": "NCHW", "color": "RGB",
            "crop": spec.crop, "resize": spec.resize, "scale": spec.scale, "mean": spec.mean,
            "std": spec.std}


def _images():
    rng = np.random.default_rng(0)
    fixture = cv2.cvtColor(cv2.imread(str(FIXTURES / "dog" / "0000.png")), cv2.COLOR_BGR2RGB)
    return [fixture,                                                  # already 32x32
            rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),      # the board camera
            rng.integers(0, 256, (61, 90, 3), dtype=np.uint8),        # odd difference
            rng.integers(0, 256, (50, 40), dtype=np.uint8)]           # greyscale


def test_center_square_puts_the_odd_pixel_right_and_bottom():
    image = np.arange(5 * 8).reshape(5, 8)
    np.testing.assert_array_equal(center_square(image), image[:, 1:6])  # (8-5)//2 = 1
    tall = np.arange(8 * 5).reshape(8, 5)
    np.testing.assert_array_equal(center_square(tall), tall[1:6, :])


def test_preprocessing_by_hand():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    x = preprocess_rgb(rgb, SPEC)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    expected = [(1.0 - 0.47) / 0.25, (128 / 255.0 - 0.45) / 0.24, (0.0 - 0.41) / 0.26]
    np.testing.assert_allclose(x[0, :, 5, 7], expected, rtol=1e-6)


def test_bgr_frames_are_converted_to_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    pre = Preprocessor(SPEC)
    np.testing.assert_array_equal(pre(rgb[:, :, ::-1].copy(), bgr=True), pre(rgb, bgr=False))


def test_resize_is_inter_area_of_the_centre_square():
    rgb = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    square = rgb[:, 20:140]
    small = cv2.resize(square, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    expected = ((small / 255.0 - SPEC.mean) / SPEC.std).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(preprocess_rgb(rgb, SPEC), expected, atol=1e-5)


def test_no_crop_resizes_the_whole_frame():
    spec = InputSpec("Input", (1, 3, 32, 32), "none", "area", 1 / 255.0, [0, 0, 0], [1, 1, 1])
    rgb = np.random.default_rng(3).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    expected = cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA) / np.float32(255.0)
    np.testing.assert_allclose(preprocess_rgb(rgb, spec)[0].transpose(1, 2, 0), expected,
                               atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((0, 4, 3), np.uint8), "frame"])
def test_bad_frames_are_rejected(bad):
    with pytest.raises(ValueError, match="a frame must be"):
        Preprocessor(SPEC)(bad)


def test_device_matches_trainings_transform():
    if not (ROOT / "training" / "fewshot" / "data.py").is_file():
        pytest.skip("training/fewshot/data.py (preprocess_images) is not in this checkout")
    try:
        from training.fewshot import data
    except ImportError as exc:  # training needs torch (the train extra)
        pytest.skip("training's transform cannot be imported here: %s" % exc)
    for image in _images():
        expected = data.preprocess_images([image], _card_spec_dict(SPEC))
        got = preprocess_rgb(image, SPEC)
        assert got.shape == expected.shape == (1, 3, 32, 32)
        assert float(np.abs(got - expected).max()) <= 1e-6
