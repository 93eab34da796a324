"""ONNX export: checker, opset 10, GlobalAveragePool not ReduceMean, onnxruntime parity; the card."""

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxsim")

from training.fewshot.backbones import create_model  # noqa: E402
from training.fewshot.data import card_input  # noqa: E402
from training.fewshot.export import (  # noqa: E402
    build_card,
    export_onnx,
    onnx_parity,
    validate_card,
    write_card,
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


def test_card_validates_and_is_written_sorted(exported, tmp_path):
    model, path = exported
    card = _card(model, path)
    validate_card(card, str(__import__("os").path.dirname(path)))
    out = write_card(card, path[:-5] + ".json")
    text = open(out, encoding="utf-8").read()
    assert json.loads(text) == card
    assert text == json.dumps(card, sort_keys=True, indent=2) + "\n"
    assert card["architecture"]["widths"] == [8, 20, 40] and card["opset"] == 10


@pytest.mark.parametrize(
    "field, value, match",
    [
        (("input", "resize"), "linear", "input.resize"),
        (("output", "shape"), [1, 80], "output name/shape"),
        (("feature_mean",), [0.0] * 3, "feature_mean length"),
        (("sha256",), "0" * 64, "sha256 does not match"),
        (("opset",), 13, "opset must be 10"),
    ],
)
def test_card_rejects_broken_fields(exported, field, value, match):
    model, path = exported
    card = copy.deepcopy(_card(model, path))
    target = card
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    with pytest.raises(ValueError, match=match):
        validate_card(card, str(__import__("os").path.dirname(path)))


def test_bundled_backbone_card_validates():
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
    card_path = os.path.join(root, "resnet9_f16_strided_32.json")
    if not os.path.isfile(card_path):
        pytest.skip("no bundled backbone in models/")
    with open(card_path, encoding="utf-8") as f:
        card = json.load(f)
    validate_card(card, root)
    m = onnx.load(os.path.join(root, card["model"]))
    assert "ReduceMean" not in {n.op_type for n in m.graph.node}
    assert card["input"]["shape"] == [1, 3, 32, 32] and card["output"]["shape"] == [1, 80]
    assert card["training"]["base_classes"] == ["airplane", "automobile", "bird", "cat", "deer"]
    assert {(r["ways"], r["shots"]) for r in card["fewshot"]} == {(5, 1), (5, 5)}
