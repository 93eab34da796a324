"""ONNX export for Tensil and onnxruntime, and the JSON model card (model_card.md).

How the opset-10 file is produced (torch 2.13): the default exporter of
``torch.onnx.export`` is now the dynamo one, which emits recent opsets only, so
we call the TorchScript exporter explicitly (``dynamo=False``) with
``opset_version=10``; it still supports opset 10 and, in eval mode with
constant folding, folds BatchNorm into the convolutions. Global average pooling
is ``adaptive_avg_pool2d(x, 1)``, which that exporter writes as
GlobalAveragePool (``x.mean((2, 3))`` would give the ReduceMean Tensil rejects),
followed by Flatten. onnxsim then removes the Identity nodes left over.
"""

import json
import os
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import torch
import torch.nn as nn

from device.model_card import sha256_file
from training.fewshot.backbones import FewShotResNet, count_params_macs

__all__ = [
    "CARD_FORMAT",
    "OPSET",
    "FeatureExtractor",
    "export_onnx",
    "onnx_parity",
    "build_card",
    "write_card",
    "validate_card",
]

CARD_FORMAT = "pynq-fewshot-model-card"
OPSET = 10


class FeatureExtractor(nn.Module):
    """The exported graph: backbone -> GlobalAveragePool -> Flatten (heads dropped)."""

    def __init__(self, model: FewShotResNet) -> None:
        super().__init__()
        self.blocks = model.blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def export_onnx(model: FewShotResNet, path: str, input_size: Optional[int] = None) -> str:
    """Write the simplified opset-10 ONNX of ``model``'s feature extractor to ``path``;
    checks it with onnx.checker and that no ReduceMean is left."""
    import onnxsim  # a training-only dependency, imported where used

    size = input_size or model.config.input_size
    extractor = FeatureExtractor(model).eval()
    dummy = torch.zeros(1, 3, size, size)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose
        torch.onnx.export(
            extractor, (dummy,), path, dynamo=False, opset_version=OPSET,
            input_names=["Input"], output_names=["Output"], do_constant_folding=True,
        )  # fmt: skip
    simplified, ok = onnxsim.simplify(onnx.load(path))
    if not ok:
        raise RuntimeError(f"onnxsim could not validate the simplified model of {path}")
    onnx.checker.check_model(simplified)
    ops = {n.op_type for n in simplified.graph.node}
    if "ReduceMean" in ops:
        raise RuntimeError(f"{path}: the export contains ReduceMean, which Tensil rejects")
    onnx.save(simplified, path)
    return path


def onnx_parity(model: FewShotResNet, path: str, trials: int = 3, seed: int = 0) -> float:
    """Max |PyTorch - onnxruntime| of the features over random inputs."""
    import onnxruntime as ort

    size = model.config.input_size
    extractor = FeatureExtractor(model).eval()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(trials):
        x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            ref = extractor(torch.from_numpy(x)).numpy()
        got = session.run(["Output"], {"Input": x})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def build_card(
    model: FewShotResNet,
    onnx_path: str,
    input_spec: Dict[str, object],
    feature_mean: Optional[Sequence[float]],
    training: Dict[str, object],
    fewshot: List[Dict[str, object]],
    parity: float,
) -> Dict[str, object]:
    """The model card of model_card.md for an exported ``model``."""
    cfg = model.config
    params, macs = count_params_macs(model)
    return {
        "format": CARD_FORMAT,
        "version": 1,
        "model": os.path.basename(onnx_path),
        "sha256": sha256_file(onnx_path),
        "architecture": {
            "name": cfg.name, "feature_maps": cfg.feature_maps, "strided": cfg.strided,
            "widths": cfg.widths, "parameters": params, "macs": macs,
        },  # fmt: skip
        "input": dict(input_spec),
        "output": {"name": "Output", "shape": [1, model.feature_dim]},
        "opset": OPSET,
        "feature_mean": None if feature_mean is None else [float(v) for v in feature_mean],
        "training": dict(training),
        "fewshot": [dict(f) for f in fewshot],
        "parity": {"onnxruntime_max_abs_diff": float(parity)},
    }


def write_card(card: Dict[str, object], path: str) -> str:
    """Validate and write the card as UTF-8 JSON, sorted keys, indent 2."""
    validate_card(card, os.path.dirname(os.path.abspath(path)))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(card, f, sort_keys=True, indent=2)
        f.write("\n")
    return path


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(f"model card: {msg}")


def validate_card(card: Dict[str, object], folder: Optional[str] = None) -> None:
    """Raise ValueError naming the first field that breaks model_card.md; with
    ``folder``, also check the ONNX file's sha256 and its input/output names."""
    _need(card.get("format") == CARD_FORMAT, f"format must be {CARD_FORMAT!r}")
    _need(card.get("version") == 1, "version must be 1")
    _need(card.get("opset") == OPSET, f"opset must be {OPSET}")
    arch = card.get("architecture", {})
    for key in ("name", "feature_maps", "strided", "widths", "parameters", "macs"):
        _need(key in arch, f"architecture.{key} missing")
    inp = card.get("input", {})
    _need(inp.get("name") == "Input" and inp.get("layout") == "NCHW", "input.name/layout")
    _need(inp.get("color") == "RGB", "input.color must be RGB")
    shape = inp.get("shape")
    _need(isinstance(shape, list) and len(shape) == 4 and shape[:2] == [1, 3], "input.shape")
    _need(inp.get("crop") in ("center-square", "none"), "input.crop")
    _need(inp.get("resize") == "area", "input.resize must be 'area'")
    _need(abs(float(inp.get("scale", 0)) - 1 / 255) < 1e-12, "input.scale must be 1/255")
    for key in ("mean", "std"):
        vals = inp.get(key)
        _need(isinstance(vals, list) and len(vals) == 3, f"input.{key} needs 3 floats")
    _need(all(s > 0 for s in inp["std"]), "input.std must be positive")
    out = card.get("output", {})
    dim = arch["widths"][-1]
    _need(out.get("name") == "Output" and out.get("shape") == [1, dim], "output name/shape")
    fm = card.get("feature_mean")
    _need(fm is None or (isinstance(fm, list) and len(fm) == dim), "feature_mean length")
    tr = card.get("training", {})
    for key in ("dataset", "epochs", "seeds", "command", "placeholder"):
        _need(key in tr, f"training.{key} missing")
    for row in card.get("fewshot", []):
        for key in ("data", "ways", "shots", "queries", "episodes", "accuracy", "ci95"):
            _need(key in row, f"fewshot entry lacks {key}")
        _need(0.0 <= row["accuracy"] <= 1.0, "fewshot accuracy must be in [0, 1]")
    _need("onnxruntime_max_abs_diff" in card.get("parity", {}), "parity missing")
    if folder is not None:
        path = os.path.join(folder, str(card.get("model")))
        _need(os.path.isfile(path), f"model file {path} not found")
        _need(sha256_file(path) == card.get("sha256"), f"sha256 does not match {path}")
        graph = onnx.load(path).graph
        _need([i.name for i in graph.input] == ["Input"], "ONNX input must be 'Input'")
        _need([o.name for o in graph.output] == ["Output"], "ONNX output must be 'Output'")
