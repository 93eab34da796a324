"""Model cards and backbone backends: every failure names the file and the problem."""

import json
import pathlib

import numpy as np
import onnxruntime
import pytest

from device.backends import create_backbone, list_backends
from device.errors import BackendError, ModelError
from device.model_card import load_card
from tests.fake_pynq.assets import FEATURES, make_card, make_tiny_model, make_tmodel, write_card

# Our own code must not leave deprecation warnings in the test log (issue 13).
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning", "error::UserWarning")

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny(tmp_path):
    model = make_tiny_model(tmp_path)
    return model, write_card(model, make_card(model))


def _rewrite(card_path, change):
    raw = json.loads(card_path.read_text())
    change(raw)
    card_path.write_text(json.dumps(raw))


def test_onnxruntime_backend_gives_the_models_features(tiny):
    model, card = tiny
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)

    backbone = create_backbone("onnxruntime", card)
    features = backbone.features(x)

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(["Output"], {"Input": x[i:i + 1]})[0] for i in range(3)])
    assert features.shape == (3, FEATURES) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)
    assert backbone.input_shape == (1, 3, 32, 32) and backbone.feature_dim == FEATURES
    assert backbone.name == "onnxruntime"
    with pytest.raises(ValueError, match=r"expects \(N, 3, 32, 32\)"):
        backbone.features(np.zeros((1, 3, 16, 16), np.float32))


def test_unknown_backend_lists_the_known_ones(tiny):
    with pytest.raises(BackendError, match="unknown backend 'fpga'; known backends: auto, "
                                           "onnxruntime, opencv, tensil, tensil-emu, torch"):
        create_backbone("fpga", tiny[1])
    assert list_backends("t*") == ["tensil", "tensil-emu", "torch"]


def test_missing_model_file_is_named(tiny):
    model, card = tiny
    model.unlink()
    with pytest.raises(ModelError, match="model file named by the card is missing: .*tiny.onnx"):
        create_backbone("onnxruntime", card)


def test_missing_card_is_named(tmp_path):
    model = make_tiny_model(tmp_path)
    with pytest.raises(ModelError, match=r"tiny.json: model card not found"):
        create_backbone("onnxruntime", model)


def test_corrupt_model_fails_its_sha256(tiny):
    model, card = tiny
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(ModelError, match=r"tiny.onnx: sha256 mismatch: the card tiny.json says"):
        create_backbone("onnxruntime", card)


def test_corrupt_model_with_a_matching_card_is_named(tiny):
    model, card = tiny
    model.write_bytes(b"not a protobuf at all")
    write_card(model, make_card(model))
    with pytest.raises(ModelError, match=r"tiny.onnx: onnxruntime cannot load the model"):
        create_backbone("onnxruntime", card)


def test_card_input_name_must_match_the_model(tmp_path):
    model = make_tiny_model(tmp_path, input_name="image")
    card = write_card(model, make_card(model))
    with pytest.raises(ModelError, match=r"tiny.onnx: model inputs are \['image'\]; the card "
                                         r"tiny.json expects one input named 'Input'"):
        create_backbone("onnxruntime", card)


def test_card_output_shape_must_match_the_model(tmp_path):
    model = make_tiny_model(tmp_path, features=6)
    card = write_card(model, make_card(model, features=8))
    with pytest.raises(ModelError, match=r"output 'Output' has shape \[1, 6\]; the card tiny.json "
                                         r"says \[1, 8\]"):
        create_backbone("onnxruntime", card)


def test_card_input_shape_must_match_the_model(tmp_path):
    model = make_tiny_model(tmp_path, size=24)
    card = write_card(model, make_card(model, size=32))
    with pytest.raises(ModelError, match=r"input 'Input' has shape \[1, 3, 24, 24\]"):
        create_backbone("onnxruntime", card)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(format="other"), "field 'format' must be 'pynq-fewshot-model-card'"),
    (lambda c: c.update(version=2), "field 'version' unsupported"),
    (lambda c: c.pop("sha256"), "field 'sha256' is missing"),
    (lambda c: c.update(model="../x.onnx"), "field 'model' must be an .onnx file name"),
    (lambda c: c["input"].update(shape=[1, 1, 32, 32]), r"field 'input.shape' must be \[1, 3, H, W\]"),
    (lambda c: c["input"].update(layout="NHWC"), "field 'input.layout' must be 'NCHW'"),
    (lambda c: c["input"].update(color="BGR"), "field 'input.color' must be 'RGB'"),
    (lambda c: c["input"].update(crop="random"), "field 'input.crop' must be one of"),
    (lambda c: c["input"].update(resize="bicubic"), "field 'input.resize' must be one of area"),
    (lambda c: c["input"].update(scale=0), "field 'input.scale' must be a positive number"),
    (lambda c: c["input"].update(std=[1, 0, 1]), "field 'input.std' must be positive"),
    (lambda c: c["input"].update(mean=[0.5, 0.5]), "field 'input.mean' must be 3 finite numbers"),
    (lambda c: c["output"].update(shape=[2, 8]), r"field 'output.shape' must be \[1, D\]"),
    (lambda c: c.update(feature_mean=[0.0] * 3), "field 'feature_mean' must be 8 finite numbers"),
    (lambda c: c.pop("feature_mean"), "field 'feature_mean' is missing"),
    (lambda c: c["architecture"].update(widths=[]), "field 'architecture.widths'"),
    (lambda c: c["architecture"].update(strided="yes"), "field 'architecture.strided' must be "
                                                        "of type bool"),
    (lambda c: c["training"].pop("placeholder"), "field 'training.placeholder' is missing"),
    (lambda c: c["fewshot"][0].update(accuracy=1.5), r"field 'fewshot\[0\].accuracy' must be"),
    (lambda c: c.update(parity={"x": "y"}), "field 'parity.x' must be a number"),
    (lambda c: c.update(opset="10"), "field 'opset' must be of type int"),
])
def test_malformed_cards_are_rejected_naming_the_field(tiny, change, message):
    _, card = tiny
    _rewrite(card, change)
    with pytest.raises(ModelError, match=message) as info:
        load_card(card)
    assert str(card) in str(info.value)


def test_card_that_is_not_json_is_named(tiny):
    _, card = tiny
    card.write_text("{not json")
    with pytest.raises(ModelError, match=r"tiny.json: not a readable JSON model card"):
        load_card(card)


def test_card_fields_reach_the_device(tiny):
    _, card_path = tiny
    _rewrite(card_path, lambda c: c.update(feature_mean=[0.5] * FEATURES))
    card = load_card(card_path, check_file=False)
    assert card.feature_mean == [0.5] * FEATURES
    assert (card.input.width, card.input.height, card.input.crop) == (32, 32, "center-square")
    assert card.placeholder is True and card.name == "tiny"


def test_bundled_model_card_is_valid():
    card = load_card(ROOT / "models" / "resnet9_f16_strided_32.json")
    assert card.input.shape == (1, 3, 32, 32) and card.feature_dim == 80
    backbone = create_backbone("onnxruntime", card.model_path)
    assert backbone.features(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 80)


def test_tensil_backend_without_a_tmodel_names_the_file(tiny):
    with pytest.raises(ModelError, match=r"tiny_onnx_pynqz1_perf.tmodel: Tensil model file not found"):
        create_backbone("tensil-emu", tiny[1])


def test_tensil_backend_reports_a_malformed_tmodel_as_a_model_error(tiny):
    model, card = tiny
    path = make_tmodel(model.parent, "tiny_onnx_pynqz1_perf")
    raw = json.loads(path.read_text())
    raw["arch"]["array_size"] = 0
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"tiny_onnx_pynqz1_perf.tmodel: field 'arch': field "
                                         r"'array_size' is 0"):
        create_backbone("tensil-emu", card)


def test_torch_backend_runs_a_torchscript_export_like_onnxruntime(tiny):
    torch = pytest.importorskip("torch", reason="the torch backend is optional (train extra)")
    model, card = tiny
    import onnx
    from onnx import numpy_helper

    # onnx hands out read-only arrays: torch.tensor copies them (from_numpy would share them).
    weights = {t.name: torch.tensor(numpy_helper.to_array(t))
               for t in onnx.load(str(model)).graph.initializer}
    conv = torch.nn.Conv2d(3, FEATURES, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(weights["conv.weight"])
        conv.bias.copy_(weights["conv.bias"])
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    # The torch backend reads TorchScript, which torch >= 2.9 deprecates; making the file here
    # says so (the backend silences it when loading). Its replacement, torch.export, loads
    # with pickle, which this project never runs on a file.
    with pytest.warns(DeprecationWarning, match="torch.jit"):
        torch.jit.save(torch.jit.script(net), str(model.with_suffix(".pt")))
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)

    got = create_backbone("torch", card).features(x)

    np.testing.assert_allclose(got, create_backbone("onnxruntime", card).features(x), atol=1e-5)


def test_torch_backend_without_torchscript_names_the_file(tiny):
    pytest.importorskip("torch", reason="the torch backend is optional (train extra)")
    with pytest.raises(ModelError, match=r"tiny.pt: TorchScript file not found"):
        create_backbone("torch", tiny[1])
