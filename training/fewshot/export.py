"""ONNX export for Tensil and onnxruntime, and its JSON model card.

The card's contract is the board's (``device.model_card``): ``build_card`` fills it,
``device.model_card.write_card`` validates and writes it, and ``check_export`` loads
the pair the way a board does (the card, the model's sha256, the onnxruntime
backend's check of the graph's input and output against the card).

How the opset-10 file is produced (torch 2.13): the default exporter of
``torch.onnx.export`` is now the dynamo one, which emits recent opsets only, so
we call the TorchScript exporter explicitly (``dynamo=False``) with
``opset_version=10``; it still supports opset 10 and, in eval mode with
constant folding, folds BatchNorm into the convolutions. Global average pooling
is ``adaptive_avg_pool2d(x, 1)``, which that exporter writes as
GlobalAveragePool (``x.mean((2, 3))`` would give the ReduceMean Tensil rejects),
followed by Flatten. onnxsim then removes the Identity nodes left over.
"""

import os
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import torch
import torch.nn as nn

from device.errors import ModelError
from device.model_card import CARD_FORMAT, CARD_VERSION, ModelCard, load_card, sha256_file
from training.fewshot.backbones import FewShotResNet, count_params_macs

__all__ = [
    "OPSET",
    "FeatureExtractor",
    "export_onnx",
    "onnx_parity",
    "build_card",
    "check_export",
]

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
    """The model card (``device.model_card``'s contract) of an exported ``model``."""
    cfg = model.config
    params, macs = count_params_macs(model)
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
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


def check_export(card_path: str) -> ModelCard:
    """Load an exported pair as a board does (``load_card``, then the onnxruntime
    backend, which checks the graph's input and output against the card) and check
    what the export promises Tensil: opset ``OPSET``, in the card and in the file."""
    from device.backends import create_backbone

    card = load_card(card_path)
    opsets = [o.version for o in onnx.load(str(card.model_path)).opset_import
              if o.domain in ("", "ai.onnx")]  # fmt: skip
    if card.raw["opset"] != OPSET or opsets != [OPSET]:
        raise ModelError(f"{card_path}: field 'opset' is {card.raw['opset']} and the model's "
                         f"opset imports are {opsets}; the export writes opset {OPSET}")
    create_backbone("onnxruntime", card_path).close()
    return card
