"""Test assets the device code needs: a tiny valid ONNX backbone with its model card, and a
`.tmodel` with its program and weight files. Built with onnx.helper, so tests never need the
bundled model."""

import hashlib
import json
import pathlib
from typing import Any, Dict, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["make_card", "make_tiny_model", "make_tmodel", "write_card"]

FEATURES = 8


def make_tiny_model(folder: pathlib.Path, name: str = "tiny.onnx", seed: int = 0,
                    input_name: str = "Input", output_name: str = "Output",
                    size: int = 32, features: int = FEATURES) -> pathlib.Path:
    """Conv(3->features, 3x3, stride 2) -> Relu -> GlobalAveragePool -> Flatten, opset 10."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(0, 0.5, (features, 3, 3, 3)).astype(np.float32),
                                     "conv.weight")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, features).astype(np.float32), "conv.bias")
    nodes = [
        helper.make_node("Conv", [input_name, "conv.weight", "conv.bias"], ["c"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], [output_name], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, features])],
        [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path = folder / name
    onnx.save(model, str(path))
    return path


def make_card(model: pathlib.Path, features: int = FEATURES, size: int = 32,
              feature_mean: Optional[list] = None) -> Dict[str, Any]:
    return {
        "format": "pynq-fewshot-model-card", "version": 1, "model": model.name,
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "architecture": {"name": "tiny", "feature_maps": features, "strided": True,
                         "widths": [features], "parameters": 224, "macs": 55296},
        "input": {"name": "Input", "shape": [1, 3, size, size], "layout": "NCHW",
                  "color": "RGB", "crop": "center-square", "resize": "area",
                  "scale": 1.0 / 255.0, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
        "output": {"name": "Output", "shape": [1, features]},
        "opset": 10,
        "feature_mean": feature_mean,
        "training": {"dataset": "cifar10", "base_classes": ["airplane"], "novel_classes": ["dog"],
                     "epochs": 0, "seeds": [0], "command": "tests", "placeholder": True},
        "fewshot": [{"data": "cifar10-novel", "ways": 5, "shots": 1, "queries": 15,
                     "episodes": 10, "accuracy": 0.3, "ci95": 0.01, "classifier": "ncm"}],
        "parity": {"onnxruntime_max_abs_diff": 0.0},
    }


def write_card(model: pathlib.Path, card: Dict[str, Any]) -> pathlib.Path:
    path = model.with_suffix(".json")
    path.write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
    return path


def make_tmodel(folder: pathlib.Path, stem: str = "tiny") -> pathlib.Path:
    """A `.tmodel` as the Tensil compiler writes it, with its .tprog and .tdata files."""
    (folder / (stem + ".tprog")).write_bytes(b"\x00" * 64)
    (folder / (stem + ".tdata")).write_bytes(b"\x00" * 64 * 8 * 2)   # 64 vectors of 8 lanes
    arch = {"data_type": "FP16BP8", "array_size": 8, "dram0_depth": 1048576,
            "dram1_depth": 1048576, "local_depth": 8192, "accumulator_depth": 2048,
            "simd_registers_depth": 1, "stride0_depth": 8, "stride1_depth": 8,
            "number_of_threads": 1, "thread_queue_depth": 8}
    raw = {"name": stem, "prog": {"file_name": stem + ".tprog", "size": 64},
           "consts": [{"file_name": stem + ".tdata", "base": 0, "size": 64}],
           "inputs": [{"name": "Input", "base": 0, "size": 384}],
           "outputs": [{"name": "Output", "base": 384, "size": 1}],
           "arch": arch, "load_consts_to_local": False}
    path = folder / (stem + ".tmodel")
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path
