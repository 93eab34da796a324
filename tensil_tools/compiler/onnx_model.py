"""Strict reading of an ONNX model for the compiler: opset 9-10, one input (batch 1, static shape,
float), constant weights, every reference resolved and every size bounded before use; a malformed
file raises `ModelError`. The lowering (`lowering.py`) starts from what this returns.
"""

import pathlib
from typing import List, Union

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from .errors import ModelError, UnsupportedError

__all__ = ["FLOAT", "MAX_INPUT_SIDE", "MAX_INPUT_VALUES", "MAX_MODEL_BYTES", "OPSETS", "read_model", "static_shape", "tensor"]

OPSETS = (9, 10)
MAX_MODEL_BYTES = 1 << 30
# An input the compiler lowers: a side no image has, or more values than a board's DRAM0 window,
# would make lowering loop for hours (1x3x2147483647x1 did) before anything refused it.
MAX_INPUT_SIDE = 16384
MAX_INPUT_VALUES = 1 << 26
FLOAT = onnx.TensorProto.FLOAT


# --------------------------------------------------------------------------- reading

def read_model(source: Union[str, pathlib.Path, bytes]) -> onnx.ModelProto:
    """Parse and check an ONNX file (or its bytes); ModelError says what is wrong."""
    where = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = pathlib.Path(source)
        try:
            size = path.stat().st_size
            if size > MAX_MODEL_BYTES:
                raise ModelError("%s: %d bytes is larger than the %d MiB the compiler reads" % (
                    where, size, MAX_MODEL_BYTES >> 20))
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError("%s: cannot read the model (%s)" % (where, exc.strerror)) from None
    if not data:
        raise ModelError("%s: empty file, not an ONNX model" % where)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError("%s: not an ONNX model or a truncated one (protobuf: %s)" % (
            where, exc)) from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError("%s: no graph with nodes (a truncated or non-ONNX file)" % where)
    opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not opset:
        raise ModelError("%s: no opset for the default ONNX domain" % where)
    if opset[0] not in OPSETS:
        raise UnsupportedError("%s: ONNX opset %d is not supported; the supported range is "
                               "[%d, %d] (Tensil's)" % (where, opset[0], OPSETS[0], OPSETS[-1]))
    _check_references(model.graph, where)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ModelError("%s: the ONNX checker refuses the model: %s" % (where, first)) from None
    return model


def _check_references(graph: onnx.GraphProto, where: str) -> None:
    """Every node input is the graph input, an initializer or an earlier node's output."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for index, node in enumerate(graph.node):
        for position, name in enumerate(node.input):
            if name and name not in known:
                raise ModelError("%s: node %r (%s): input %d %r is missing: neither the graph "
                                 "input, an initializer nor an earlier node's output" % (
                                     where, node.name or "%s_%d" % (node.op_type, index),
                                     node.op_type, position, name))
        known.update(node.output)


def tensor(proto: onnx.TensorProto, where: str) -> np.ndarray:
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        raise UnsupportedError("%s: tensor %r keeps its data in an external file" % (
            where, proto.name))
    try:
        return numpy_helper.to_array(proto).astype(np.float64, copy=False) \
            if proto.data_type in (FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16) \
            else numpy_helper.to_array(proto)
    except (ValueError, TypeError) as exc:
        raise ModelError("%s: tensor %r is malformed (%s)" % (where, proto.name, exc)) from None


def static_shape(info: onnx.ValueInfoProto, where: str) -> List[int]:
    kind = info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise UnsupportedError("%s: %r is not a tensor" % (where, info.name))
    tensor = info.type.tensor_type
    if tensor.elem_type != FLOAT:
        raise UnsupportedError("%s: %r has element type %s; the compiler takes float32" % (
            where, info.name, onnx.TensorProto.DataType.Name(tensor.elem_type)))
    if not tensor.HasField("shape"):
        raise ModelError("%s: %r has no shape; static shapes are required" % (where, info.name))
    dims = []
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.WhichOneof("value") != "dim_value" or dim.dim_value <= 0:
            label = dim.dim_param if dim.WhichOneof("value") == "dim_param" else "unknown"
            raise ModelError("%s: %r has a dynamic dimension %d (%s); static shapes with batch 1 "
                             "are required" % (where, info.name, axis, label))
        if dim.dim_value > MAX_INPUT_SIDE:
            raise ModelError("%s: %r has dimension %d of %d; the compiler takes at most %d" % (
                where, info.name, axis, dim.dim_value, MAX_INPUT_SIDE))
        dims.append(dim.dim_value)
    if int(np.prod(dims, dtype=np.int64)) > MAX_INPUT_VALUES:
        raise ModelError("%s: %r holds %d values; the compiler takes at most %d" % (
            where, info.name, int(np.prod(dims, dtype=np.int64)), MAX_INPUT_VALUES))
    return dims


