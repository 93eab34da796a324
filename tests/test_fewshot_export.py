"""ONNX export: checker, opset 10, GlobalAveragePool not ReduceMean, onnxruntime parity; the
card, written and read back through the board's contract (device.model_card)."""

import copy
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxsim")

from device.backends import create_backbone  # noqa: E402
from device.errors import ModelError  # noqa: E402
from device.model_card import CARD_FORMAT, load_card, write_card  # noqa: E402
from device.preprocess import preprocess_rgb  # noqa: E402
from training.fewshot.backbones import create_model  # noqa: E402
from training.fewshot.data import card_input  # noqa: E402
from training.fewshot.export import (  # noqa: E402
    FeatureExtractor,
    build_card,
    check_export,
    export_onnx,
    onnx_parity,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("resnet9", feature_maps=8, strided=True, input_size=32, num_classes=3)
    # non-trivial BatchNorm statistics, so that folding them into the convs is exercised
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    path = str(tmp_path_factory.mktemp("onnx") / f"{model.config.stem}.onnx")
    export_onnx(model, path)
    return model, path


def test_graph_is_what_tensil_accepts(exported):
    _, path = exported
    m = onnx.load(path)
    onnx.checker.check_model(m)
    ops = [n.op_type for n in m.graph.node]
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops
    assert "BatchNormalization" not in ops and "Identity" not in ops  # folded / simplified
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [10]
    assert [i.name for i in m.graph.input] == ["Input"]
    assert [o.name for o in m.graph.output] == ["Output"]
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 32]
    out = [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert out == [1, 40]


def test_onnxruntime_matches_pytorch(exported):
    model, path = exported
    diff = onnx_parity(model, path, trials=3, seed=1)
    print(f"max abs diff {diff:.3g}")
    assert diff <= 1e-4


def _card(model, path):
    spec = card_input(32, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    training = {"dataset": "tiny", "epochs": 0, "seeds": [0], "command": "test",
                "placeholder": True, "base_classes": [], "novel_classes": []}
    fewshot = [{"data": "tiny-novel", "ways": 5, "shots": 1, "queries": 15, "episodes": 1000,
                "accuracy": 0.5, "ci95": 0.01, "classifier": "ncm"}]
    return build_card(model, path, spec, np.zeros(40), training, fewshot, 1e-7)


def test_card_round_trip_training_to_board(exported):
    """Training writes the card through device.model_card; the board reads the same card
    and its onnxruntime backend gives the torch model's features."""
    model, path = exported
    card = _card(model, path)
    assert card["format"] == CARD_FORMAT
    written = write_card(card, path[:-5] + ".json")
    text = open(written.path, encoding="utf-8").read()
    assert json.loads(text) == card
    assert text == json.dumps(card, sort_keys=True, indent=2) + "\n"
    read = load_card(path)  # the board looks the card up from the model file
    assert read.raw == card and read.feature_dim == 40 and read.input.shape == (1, 3, 32, 32)
    assert check_export(written.path).raw == card
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    x = preprocess_rgb(frame, read.input)
    backbone = create_backbone("onnxruntime", written.path)
    try:
        board = backbone.features(x)
    finally:
        backbone.close()
    with torch.no_grad():
        reference = FeatureExtractor(model).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(board, reference, atol=1e-4)


def _changed(card, field, value):
    """A copy of `card` with the field at path `field` set to `value`."""
    card = copy.deepcopy(card)
    target = card
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    return card


@pytest.mark.parametrize(
    "field, value, match",
    [
        (("input", "resize"), "linear", "'input.resize' must be one of area"),
        (("feature_mean",), [0.0] * 3, "'feature_mean' must be 40 finite numbers"),
        (("training",), {"dataset": "tiny"}, "'training.base_classes' is missing"),
        (("sha256",), "0" * 64, "sha256 mismatch"),
        (("model",), "../elsewhere.onnx", "'model' must be an .onnx file name"),
    ],
)
def test_broken_cards_are_not_written(exported, tmp_path, field, value, match):
    model, path = exported
    card = _changed(_card(model, path), field, value)
    out = os.path.join(os.path.dirname(path), "broken.json")
    with pytest.raises(ModelError, match=match):
        write_card(card, out)
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "field, value, match",
    [
        (("opset",), 13, "field 'opset' is 13 and the model's opset imports are \\[10\\]"),
        (("output", "shape"), [1, 41], "output 'Output' has shape \\[1, 40\\]"),
        (("input", "name"), "image", "expects one input named 'image'"),
    ],
)
def test_export_check_refuses_a_card_the_model_contradicts(exported, field, value, match):
    model, path = exported
    card = _changed(_card(model, path), field, value)
    if field == ("output", "shape"):
        card["feature_mean"] = [0.0] * 41
    card_path = path[:-5] + ".json"
    write_card(card, card_path)  # a valid card, but not this model's
    try:
        with pytest.raises(ModelError, match=match):
            check_export(card_path)
    finally:
        os.remove(card_path)


def test_bundled_backbone_card_validates():
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
    card_path = os.path.join(root, "resnet9_f16_strided_32.json")
    if not os.path.isfile(card_path):
        pytest.skip("no bundled backbone in models/")
    card = check_export(card_path).raw
    m = onnx.load(os.path.join(root, card["model"]))
    assert "ReduceMean" not in {n.op_type for n in m.graph.node}
    assert card["input"]["shape"] == [1, 3, 32, 32] and card["output"]["shape"] == [1, 80]
    assert card["training"]["base_classes"] == ["airplane", "automobile", "bird", "cat", "deer"]
    assert {(r["ways"], r["shots"]) for r in card["fewshot"]} == {(5, 1), (5, 5)}


def test_a_shipped_backbone_is_evaluated_from_its_onnx_with_its_cards_figures():
    """Issue 25: bench-fewshot needed 30 minutes of training on a fresh clone; `eval` did not
    take the bundled ONNX. From the ONNX and its card, the card's own figure comes back."""
    from training.fewshot.data import load_fewshot_data
    from training.fewshot.easy import evaluate_backbones, load_backbone

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "models", "resnet9_f16_strided_32.onnx")
    model, meta = load_backbone(path)
    card = meta["card"]
    try:
        data = load_fewshot_data(card["training"]["dataset"], model.config.input_size)
    except FileNotFoundError as error:
        pytest.skip(f"the CIFAR-10 data is missing: {error}")
    figure = next(f for f in card["fewshot"] if (f["ways"], f["shots"]) == (5, 1))
    result = evaluate_backbones([path], data, 5, 1, 15, figure["episodes"], 0)
    assert result["accuracy"] == pytest.approx(figure["accuracy"], abs=1e-6)
