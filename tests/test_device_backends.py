"""The backends that run where the demonstrator runs: opencv (the armv7 CPU fallback),
tensil-emu (the board's FP16BP8 arithmetic anywhere), tensil (the FPGA, here the pynq fakes
with the fake TCU), and auto's choice. Every backend's features agree with onnxruntime's
within the tolerances below; tensil's equal tensil-emu's bit for bit.

Tolerances, absolute, on features of magnitude about 1 (measured: OpenCV 6e-7 on the bundled
ResNet-9; the Tensil models 0.007-0.008 on these 16x16 test frames, 0.012 on random 32x32
frames and 0.017 on CIFAR-10 frames through the 80-feature stand-in of `make bench-board`):
- OPENCV_TOLERANCE: float32 CPU engines, 1e-5;
- TENSIL_TOLERANCE: FP16BP8 (1/256 steps, every product and pooling step rounded, weights
  rounded half up): 0.05, for the hand-assembled one-convolution models of
  tests/tensil_models.py;
- BACKBONE_TOLERANCE: the compiled ResNet-9 (nine layers of FP16BP8 on features up to about
  1.1): 0.15, measured 0.061 on these random frames, 0.075 on CIFAR-10 frames in
  `make bench-board`; and a cosine above 0.995 (measured 0.9988).
"""

import builtins
import json
import pathlib
import shutil

import numpy as np
import pytest

import demo_app.cli as demo_cli
from device.backends import choose_backend, create_backbone, find_tmodel, tmodel_path
from device.errors import BackendError, ModelError
from device.model_card import load_card
from tensil.arch import load_tarch
from tests.fake_pynq import FakeDDR, FakeTcu, install
from tests.fake_pynq.board import DESIGNS, tensil_design
from tests.tensil_models import build_conv_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
PERF = ROOT / "tensil_arch" / "pynqz1_perf.tarch"
SMALL = ROOT / "tensil_arch" / "pynqz1.tarch"
HWH = ROOT / "tests" / "fixtures" / "hwh"
REPLAY = ROOT / "tests" / "fixtures" / "demo"
BUNDLED = ROOT / "models" / "resnet9_f16_strided_32.onnx"
SIZE, FEATURES = 16, 8
OPENCV_TOLERANCE = 1e-5
TENSIL_TOLERANCE = 0.05
BACKBONE_TOLERANCE = 0.15


@pytest.fixture
def tiny(tmp_path):
    """tiny.onnx + card + tiny_onnx_pynqz1_perf.tmodel (the naming the backends look for)."""
    return build_conv_model(tmp_path, PERF, SIZE, FEATURES)


def _frames(count=4, size=SIZE, seed=0):
    return np.random.default_rng(seed).normal(size=(count, 3, size, size)).astype(np.float32)


def _board(monkeypatch, tmp_path, hwh="tensil_pynqz1", arch=PERF):
    """Fake pynq whose Tensil design has a fake TCU of `arch`; the .bit path with its .hwh."""
    designs = dict(DESIGNS, **{hwh + ".bit": tensil_design})
    board = install(monkeypatch, ddr=FakeDDR(size=16 << 20), designs=designs,
                    tcu=lambda b: FakeTcu(load_tarch(arch), b.ddr))
    for suffix in (".hwh", ".json"):
        if (HWH / (hwh + suffix)).is_file():
            shutil.copy(HWH / (hwh + suffix), tmp_path / (hwh + suffix))
    return board, tmp_path / (hwh + ".bit")


def test_opencv_gives_onnxruntimes_features(tiny):
    x = _frames()
    reference = create_backbone("onnxruntime", tiny["card"]).features(x)
    np.testing.assert_allclose(create_backbone("opencv", tiny["card"], threads=1).features(x),
                               reference, atol=OPENCV_TOLERANCE)
    bundled = create_backbone("opencv", BUNDLED)
    y = _frames(2, 32)
    np.testing.assert_allclose(bundled.features(y), create_backbone("onnxruntime", BUNDLED)
                               .features(y), atol=OPENCV_TOLERANCE)


def test_opencv_names_a_model_it_cannot_read(tiny):
    card_path = tiny["card"]
    tiny["onnx"].write_bytes(b"not a protobuf")
    raw = json.loads(card_path.read_text())
    import hashlib
    raw["sha256"] = hashlib.sha256(b"not a protobuf").hexdigest()
    card_path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="tiny.onnx: OpenCV cannot load the model"):
        create_backbone("opencv", card_path)


def test_tensil_emu_agrees_with_onnxruntime_within_fp16bp8(tiny):
    x = _frames()
    backbone = create_backbone("tensil-emu", tiny["card"])
    assert backbone.tmodel.path == tiny["tmodel"] and backbone.name == "tensil-emu"
    features = backbone.features(x)
    reference = create_backbone("onnxruntime", tiny["card"]).features(x)
    assert features.dtype == np.float32 and features.shape == (4, FEATURES)
    np.testing.assert_allclose(features, reference, atol=TENSIL_TOLERANCE)
    assert np.abs(features - reference).max() > 0   # it is FP16BP8, not float32
    assert backbone.saturated_inputs == 0


def test_tensil_emu_runs_the_shipped_compiled_resnet9_close_to_onnxruntime():
    # the .tmodel beside the bundled ONNX (make compile); 0.8 s a frame on the emulator
    x = _frames(2, 32)
    backbone = create_backbone("tensil-emu", BUNDLED)
    assert backbone.tmodel.path.name == "resnet9_f16_strided_32_onnx_pynqz1_perf.tmodel"
    features = backbone.features(x)
    reference = create_backbone("onnxruntime", BUNDLED).features(x)
    np.testing.assert_allclose(features, reference, atol=BACKBONE_TOLERANCE)
    cosine = (features * reference).sum(1) / np.linalg.norm(features, axis=1) \
        / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.995, cosine


def test_compiled_models_are_found_by_the_naming_the_compiler_uses(tiny, tmp_path):
    card = load_card(tiny["card"])
    assert tmodel_path(card, "pynqz1_perf") == tmp_path / "tiny_onnx_pynqz1_perf.tmodel"
    assert find_tmodel(card) == tiny["tmodel"]               # the only one beside it
    small = build_conv_model(tmp_path, SMALL, SIZE, FEATURES)["tmodel"]
    assert find_tmodel(card, arch_stem="pynqz1") == small
    with pytest.raises(ModelError, match=r"tiny_onnx_other.tmodel: not found, and 2 other compiled "
                                         r"models are beside tiny.onnx \(tiny_onnx_pynqz1.tmodel, "
                                         r"tiny_onnx_pynqz1_perf.tmodel\): pass --tmodel"):
        find_tmodel(card, arch_stem="other")
    x = _frames(2)
    small_features = create_backbone("tensil-emu", tiny["card"], tmodel=small).features(x)
    np.testing.assert_allclose(small_features, create_backbone("onnxruntime", tiny["card"])
                               .features(x), atol=TENSIL_TOLERANCE)


def test_a_tmodel_that_does_not_fit_the_card_is_refused(tmp_path):
    paths = build_conv_model(tmp_path, PERF, SIZE, FEATURES)
    other = build_conv_model(tmp_path / "other", PERF, 8, FEATURES)["tmodel"]
    with pytest.raises(ModelError, match=r"inputs \[\('Input', 64\)\] \(name, vectors\); the card "
                                         r"tiny.json says one input 'Input' of shape \[1, 3, 16, 16\], "
                                         r"256 vectors of 12 lanes"):
        create_backbone("tensil-emu", paths["card"], tmodel=other)


def test_tensil_on_the_fake_board_equals_tensil_emu_bit_for_bit(tiny, tmp_path, monkeypatch):
    board, bit = _board(monkeypatch, tmp_path)
    import pynq

    overlay = pynq.Overlay(str(bit))
    backbone = create_backbone("tensil", tiny["card"], overlay=overlay)
    assert backbone.design.tcu_module == "top_custom_perf"
    # PEFSL's TCU is named custom_perf: the only compiled model is used, and a note says so
    assert "not named for the TCU's architecture 'custom_perf'" in backbone.note
    x = _frames()
    features = backbone.features(x)
    np.testing.assert_array_equal(features, create_backbone("tensil-emu", tiny["card"]).features(x))
    np.testing.assert_allclose(features, create_backbone("onnxruntime", tiny["card"]).features(x),
                               atol=TENSIL_TOLERANCE)
    assert board.tcu.executed and backbone.driver.last_run.transfers == 1
    board.ddr.check_no_hazards()
    backbone.close()
    assert board.ddr.used == 0


def test_tensil_refuses_a_model_for_another_bitstream_naming_both(tmp_path, monkeypatch):
    paths = build_conv_model(tmp_path, SMALL, SIZE, FEATURES)   # compiled for 8x8
    board, bit = _board(monkeypatch, tmp_path, "pynqz1_perf_125mhz")
    import pynq

    with pytest.raises(ModelError, match=r"tiny_onnx_pynqz1.tmodel does not run on the bitstream "
                                         r"pynqz1_perf_125mhz.bit \(TCU top_pynqz1_perf\): "
                                         r"array_size: the bitstream's TCU has 12, the model 8"):
        create_backbone("tensil", paths["card"], overlay=pynq.Overlay(str(bit)))
    assert board.ddr.used == 0       # refused before any memory was taken


def test_tensil_without_the_json_is_caught_by_the_self_test(tmp_path, monkeypatch):
    paths = build_conv_model(tmp_path, SMALL, SIZE, FEATURES)
    board, bit = _board(monkeypatch, tmp_path)                   # PEFSL's: no JSON, 12x12 TCU
    import pynq

    with pytest.raises(ModelError, match=r"the bitstream's TCU moves 24-byte vectors"):
        create_backbone("tensil", paths["card"], overlay=pynq.Overlay(str(bit)))


def test_tensil_needs_an_overlay_with_a_tcu(tiny, tmp_path, monkeypatch):
    with pytest.raises(BackendError, match="needs the Tensil overlay"):
        create_backbone("tensil", tiny["card"])
    install(monkeypatch)
    import pynq

    with pytest.raises(BackendError, match=r"base.bit is no Tensil overlay this backend can use: "
                                           r".*no .hwh beside the bitstream"):
        create_backbone("tensil", tiny["card"], overlay=pynq.Overlay("base.bit"))


# --- auto ----------------------------------------------------------------------------------


def _hide(monkeypatch, *modules):
    import importlib

    def hiding(real):
        def fake(name, *args, **kwargs):
            if name.split(".")[0] in modules:
                raise ImportError("No module named %r" % name)
            return real(name, *args, **kwargs)
        return fake

    monkeypatch.setattr(builtins, "__import__", hiding(builtins.__import__))
    monkeypatch.setattr(importlib, "import_module", hiding(importlib.import_module))


def test_auto_picks_tensil_on_a_board_with_a_loaded_tensil_overlay(tiny, tmp_path, monkeypatch):
    board, bit = _board(monkeypatch, tmp_path)
    import pynq

    pynq.Overlay(str(bit))                  # loaded earlier (another process, a notebook)
    backbone = create_backbone("auto", tiny["card"])
    assert backbone.name == "tensil"
    assert backbone.selection == (
        "auto: tensil (the loaded bitstream %s has the Tensil TCU top_custom_perf and "
        "tiny_onnx_pynqz1_perf.tmodel is compiled for it)" % bit)
    np.testing.assert_array_equal(backbone.features(_frames(1)),
                                  create_backbone("tensil-emu", tiny["card"]).features(_frames(1)))


def test_auto_falls_back_to_onnxruntime_then_opencv_and_says_why(tiny, monkeypatch):
    _hide(monkeypatch, "pynq")
    name, _, why = choose_backend(load_card(tiny["card"]))
    assert (name, why) == ("onnxruntime", "not tensil: pynq is not installed (not a PYNQ board); "
                                          "onnxruntime is installed")
    _hide(monkeypatch, "pynq", "onnxruntime")
    backbone = create_backbone("auto", tiny["card"])
    assert backbone.name == "opencv" and backbone.selection.startswith(
        "auto: opencv (not tensil: pynq is not installed (not a PYNQ board); not onnxruntime: the "
        "Python package onnxruntime is not installed; cv2 is installed)")
    _hide(monkeypatch, "pynq", "onnxruntime", "cv2")
    with pytest.raises(BackendError, match="--backend auto found no backend: not tensil: .*; not "
                                           "opencv: the Python package cv2 is not installed"):
        create_backbone("auto", tiny["card"])


def test_auto_on_a_board_with_the_base_overlay_uses_the_cpu(tiny, monkeypatch):
    install(monkeypatch)
    import pynq

    pynq.Overlay("base.bit")
    name, _, why = choose_backend(load_card(tiny["card"]))
    assert name == "onnxruntime" and why.startswith(
        "not tensil: the loaded bitstream base.bit has no usable Tensil TCU (base.hwh: no .hwh")


# --- the demonstrator -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["opencv", "tensil-emu", "auto"])
def test_the_demo_runs_headless_with_each_cpu_backend(tiny, backend, tmp_path, capsys):
    out = tmp_path / "demo"
    code = demo_cli.main(["--backend", backend, "--model", str(tiny["card"]), "--replay",
                          str(REPLAY), "--headless", "--out-dir", str(out), "--shots", "1",
                          "--queries", "1", "--init-frames", "2"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_state"] == "quit" and summary["inference_frames"] == 5
    if backend == "auto":
        assert "auto: onnxruntime (not tensil:" in capsys.readouterr().out


def test_the_demo_runs_on_the_fake_board_with_the_tensil_backend(tiny, tmp_path, monkeypatch,
                                                                 capsys):
    board, bit = _board(monkeypatch, tmp_path)
    out = tmp_path / "demo"
    code = demo_cli.main(["--backend", "tensil", "--overlay", str(bit), "--model",
                          str(tiny["card"]), "--replay", str(REPLAY), "--headless", "--out-dir",
                          str(out), "--shots", "1", "--queries", "1", "--init-frames", "2"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["inference_frames"] == 5
    assert board.ddr.used == 0       # the app closed the backbone: the driver freed its memory
