"""One small lowering per ONNX op, in the style of ONNX's reference evaluator.

`load_onnx(path)` reads a model (`onnx_model.read_model`) and returns a `graph.Graph` of
unfused layers (`fusion.fuse` merges them). Every lowering checks its attributes first: one it
cannot honour exactly (dilations, ceil_mode, a non-constant weight, Pad modes other than
constant zeros, ...) or an op outside the table raises `UnsupportedError` naming the node and
the op; a malformed file raises `ModelError`.
"""

import dataclasses
import functools
import math
import pathlib
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import onnx

from .errors import ModelError, UnsupportedError
from .graph import (
    AddTerm,
    Clip,
    Graph,
    Layer,
    LeakyRelu,
    LinearTerm,
    MaxTerm,
    Relu,
    Scale,
    Value,
    term_output_size,
)
from .onnx_model import read_model, static_shape, tensor

__all__ = ["SUPPORTED_OPS", "attributes", "load_onnx"]

_MAX_POOL_AREA = 256   # 2^-e must be a FP16BP8 weight: e <= 8


# --------------------------------------------------------------------------- lowering context

@dataclasses.dataclass(eq=False)
class _FlatView:
    """Flatten of a C x H x W map with H*W > 1: Gemm/MatMul read it directly."""

    source: Value


_Env = Union[Value, _FlatView]


class _Context:
    def __init__(self, model: onnx.ModelProto, where: str):
        self.where = where
        self.opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")][0]
        self.values: Dict[str, _Env] = {}
        self.constants: Dict[str, np.ndarray] = {}
        self.layers: List[Layer] = []
        self.used_names: set = set()

    # names and lookups --------------------------------------------------
    def node_name(self, node: onnx.NodeProto, index: int) -> str:
        return node.name or "%s_%d" % (node.op_type, index)

    def value(self, node: "_Node", position: int) -> _Env:
        name = node.input(position)
        if name in self.values:
            return self.values[name]
        if name in self.constants:
            raise UnsupportedError("%s: input %d (%r) is a constant; the op needs a tensor "
                                   "computed from the model input" % (node.label, position, name))
        raise ModelError("%s: input %r is neither the graph input, an initializer nor an "
                         "earlier node's output" % (node.label, name))

    def tensor(self, node: "_Node", position: int) -> Value:
        value = self.value(node, position)
        if isinstance(value, _FlatView):
            value = self.materialize(value, node.name)
        return value

    def constant(self, node: "_Node", position: int, what: str) -> np.ndarray:
        name = node.input(position)
        if name in self.constants:
            return self.constants[name]
        if name in self.values:
            raise UnsupportedError("%s: %s %r is computed by the graph; it must be a constant "
                                   "initializer" % (node.label, what, name))
        raise ModelError("%s: %s %r is missing (no initializer, no Constant node)" % (
            node.label, what, name))

    def new_value(self, node: "_Node", channels: int, height: int, width: int,
                  rank: int = 4, position: int = 0) -> Value:
        return Value(node.output(position), channels, height, width, rank)

    def add(self, node: "_Node", output: Value, terms: list, bias: Optional[np.ndarray] = None,
            post: Optional[list] = None) -> None:
        layer = Layer(node.name, output, terms, bias, list(post or []), [node.name],
                      [node.op])
        self.layers.append(layer)
        self.values[output.name] = output

    def materialize(self, view: _FlatView, reader: str) -> Value:
        """The flatten as data: a permutation "convolution" over the whole map (exact)."""
        x = view.source
        size = x.channels * x.height * x.width
        weight = np.zeros((size, x.channels, x.height, x.width))
        c, h, w = np.meshgrid(np.arange(x.channels), np.arange(x.height), np.arange(x.width),
                              indexing="ij")
        weight[(c * x.height + h) * x.width + w, c, h, w] = 1.0
        out = Value(x.name + "/flat", size, 1, 1, 2)
        self.layers.append(Layer(x.name + "/flatten", out, [LinearTerm(x, weight)], None, [],
                                 [reader], ["Flatten"]))
        return out


class _Node:
    """One ONNX node with its attributes parsed and checked against what the op allows."""

    def __init__(self, proto: onnx.NodeProto, name: str, allowed: Dict[str, Any]):
        self.proto, self.name, self.op = proto, name, proto.op_type
        self.label = "node %r (%s)" % (name, proto.op_type)
        self.attrs: Dict[str, Any] = dict(allowed)
        for attribute in proto.attribute:
            if attribute.name not in allowed:
                raise UnsupportedError("%s: attribute %r is not supported (known: %s)" % (
                    self.label, attribute.name, ", ".join(sorted(allowed)) or "none"))
            value = onnx.helper.get_attribute_value(attribute)
            self.attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value

    def input(self, position: int) -> str:
        return self.proto.input[position] if position < len(self.proto.input) else ""

    def output(self, position: int = 0) -> str:
        return self.proto.output[position]

    def has_input(self, position: int) -> bool:
        return self.input(position) != ""

    def refuse(self, what: str) -> UnsupportedError:
        return UnsupportedError("%s: %s" % (self.label, what))

    def ints(self, key: str, count: int, default: int) -> Tuple[int, ...]:
        value = self.attrs.get(key)
        if value is None:
            return (default,) * count
        value = tuple(int(v) for v in value)
        if len(value) != count:
            raise ModelError("%s: attribute %r has %d values, expected %d" % (
                self.label, key, len(value), count))
        return value


# --------------------------------------------------------------------------- shared geometry

def _pads(node: _Node, x: Value, kernel: Tuple[int, ...], stride: Tuple[int, ...]
          ) -> Tuple[int, int, int, int]:
    """ONNX pads [t, l, b, r] from `pads` or `auto_pad`."""
    auto = node.attrs["auto_pad"]
    if auto == "NOTSET":
        begin_h, begin_w, end_h, end_w = node.ints("pads", 4, 0)
        pads = (begin_h, begin_w, end_h, end_w)
    elif auto == "VALID":
        pads = (0, 0, 0, 0)
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s in ((x.height, kernel[0], stride[0]), (x.width, kernel[1], stride[1])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        pads = (out[0][0], out[1][0], out[0][1], out[1][1])
    else:
        raise node.refuse("auto_pad %r is not an ONNX value" % auto)
    if min(pads) < 0:
        raise node.refuse("negative pads %s" % (pads,))
    return pads


def _window(node: _Node, x: Value) -> Tuple[Tuple[int, int], Tuple[int, int],
                                           Tuple[int, int, int, int]]:
    if x.rank != 4:
        raise node.refuse("needs a 4-D N x C x H x W input, got a 2-D one")
    if node.attrs.get("kernel_shape") is None:
        raise ModelError("%s: attribute kernel_shape is required" % node.label)
    kernel = node.ints("kernel_shape", 2, 1)
    stride = node.ints("strides", 2, 1)
    if node.attrs.get("dilations") is not None and any(d != 1 for d in node.ints(
            "dilations", 2, 1)):
        raise node.refuse("dilations %s are not supported" % (node.attrs["dilations"],))
    if node.attrs.get("ceil_mode"):
        raise node.refuse("ceil_mode=1 is not supported (floor only)")
    if min(kernel) < 1 or min(stride) < 1:
        raise node.refuse("kernel %s and strides %s must be positive" % (kernel, stride))
    pads = _pads(node, x, kernel, stride)
    return (kernel[0], kernel[1]), (stride[0], stride[1]), pads


def _check_output(node: _Node, height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise node.refuse("the output would be %d x %d pixels" % (height, width))


def _diagonal(channels: int, value: float, kernel: Tuple[int, int] = (1, 1)) -> np.ndarray:
    weight = np.zeros((channels, channels) + tuple(kernel))
    index = np.arange(channels)
    weight[index, index] = value
    return weight


def _per_channel(node: _Node, constant: np.ndarray, x: Value, what: str) -> np.ndarray:
    """A constant that broadcasts over x only along channels -> [C]."""
    c = np.asarray(constant, np.float64)
    if c.size == 1:
        return np.full(x.channels, float(c.reshape(-1)[0]))
    rank = 4 if x.rank == 4 else 2
    if c.ndim > rank:
        raise node.refuse("%s of shape %s has more axes than %s" % (what, c.shape, x))
    shape = (1,) * (rank - c.ndim) + c.shape
    if shape != (1, x.channels) + (1,) * (rank - 2):
        raise node.refuse("%s of shape %s broadcasts over more than the channels of %s; only "
                          "per-channel constants are supported" % (what, c.shape, x))
    return c.reshape(-1)


# --------------------------------------------------------------------------- the ops

def _conv(ctx: _Context, node: _Node) -> None:
    x = ctx.tensor(node, 0)
    weight = np.asarray(ctx.constant(node, 1, "weight"), np.float64)
    if weight.ndim != 4:
        raise node.refuse("only 2-D convolutions (4-D weights) are supported, got %d-D "
                          "weights" % weight.ndim)
    if node.attrs.get("kernel_shape") is None:
        node.attrs["kernel_shape"] = list(weight.shape[2:])
    kernel, stride, pads = _window(node, x)
    if tuple(kernel) != tuple(weight.shape[2:]):
        raise ModelError("%s: kernel_shape %s does not match the weight's %s" % (
            node.label, kernel, weight.shape[2:]))
    group = int(node.attrs["group"])
    co = weight.shape[0]
    if group < 1 or x.channels % group or co % group or weight.shape[1] * group != x.channels:
        raise ModelError("%s: group %d does not split %d input channels (weights %s)" % (
            node.label, group, x.channels, weight.shape))
    dense = np.zeros((co, x.channels) + tuple(kernel))
    per_in, per_out = x.channels // group, co // group
    for g in range(group):
        dense[g * per_out:(g + 1) * per_out, g * per_in:(g + 1) * per_in] = \
            weight[g * per_out:(g + 1) * per_out]
    bias = None
    if node.has_input(2):
        bias = np.asarray(ctx.constant(node, 2, "bias"), np.float64).reshape(-1)
        if bias.size != co:
            raise ModelError("%s: bias has %d values for %d output channels" % (
                node.label, bias.size, co))
    height, width = term_output_size(x.height, x.width, kernel, stride, pads)
    _check_output(node, height, width)
    macs = co * per_in * kernel[0] * kernel[1] * height * width
    ctx.add(node, ctx.new_value(node, co, height, width),
            [LinearTerm(x, dense, stride, pads, macs)], bias)


def _batchnorm(ctx: _Context, node: _Node) -> None:
    if any(name for name in node.proto.output[1:]):
        raise node.refuse("training-mode outputs (running mean/var) are not supported")
    x = ctx.tensor(node, 0)
    scale, offset, mean, var = (np.asarray(ctx.constant(node, i, what), np.float64).reshape(-1)
                                for i, what in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
    for what, array in (("scale", scale), ("B", offset), ("mean", mean), ("var", var)):
        if array.size != x.channels:
            raise ModelError("%s: %s has %d values for %d channels" % (
                node.label, what, array.size, x.channels))
    factor = scale / np.sqrt(var + float(node.attrs["epsilon"]))
    weight = _diagonal(x.channels, 0.0)
    weight[np.arange(x.channels), np.arange(x.channels), 0, 0] = factor
    ctx.add(node, ctx.new_value(node, *x.shape, rank=x.rank), [LinearTerm(x, weight)],
            offset - mean * factor)


def _activation(ctx: _Context, node: _Node) -> None:
    x = ctx.tensor(node, 0)
    if node.op == "Relu":
        op: Any = Relu()
    elif node.op == "LeakyRelu":
        alpha = float(node.attrs["alpha"])
        if alpha < 0:
            raise node.refuse("alpha %g < 0: the ALU's max/min give LeakyRelu only for alpha "
                              ">= 0" % alpha)
        op = LeakyRelu(alpha)
    else:
        low, high = float(node.attrs["min"]), float(node.attrs["max"])
        if low > high:
            raise node.refuse("min %g > max %g" % (low, high))
        op = Clip(low, high)
    ctx.add(node, ctx.new_value(node, *x.shape, rank=x.rank), [AddTerm(x)], post=[op])


def _binary(ctx: _Context, node: _Node) -> None:
    """Add of two tensors (residuals); Add/Sub/Mul with a per-channel constant."""
    names = [node.input(0), node.input(1)]
    constant = [n in ctx.constants for n in names]
    if all(constant):
        raise node.refuse("both inputs are constants (fold them before compiling)")
    if not any(constant):
        if node.op != "Add":
            raise node.refuse("%s of two computed tensors is not supported (only Add)" % node.op)
        a, b = ctx.tensor(node, 0), ctx.tensor(node, 1)
        if a.shape != b.shape:
            raise node.refuse("adds %s and %s: broadcasting between tensors is not supported"
                              % (a, b))
        ctx.add(node, ctx.new_value(node, *a.shape, rank=a.rank), [AddTerm(a), AddTerm(b)])
        return
    k = constant.index(False)
    x = ctx.tensor(node, k)
    c = _per_channel(node, ctx.constants[names[1 - k]], x, "the constant")
    if node.op == "Mul":
        weight, bias = _diagonal(x.channels, 0.0), None
        weight[np.arange(x.channels), np.arange(x.channels), 0, 0] = c
    elif node.op == "Add":
        weight, bias = _diagonal(x.channels, 1.0), c
    else:
        sign = 1.0 if k == 0 else -1.0    # x - c or c - x
        weight, bias = _diagonal(x.channels, sign), -sign * c
    ctx.add(node, ctx.new_value(node, *x.shape, rank=x.rank), [LinearTerm(x, weight)], bias)


def _maxpool(ctx: _Context, node: _Node) -> None:
    if node.attrs["storage_order"]:
        raise node.refuse("storage_order=1 is not supported")
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.refuse("the Indices output is not supported")
    x = ctx.tensor(node, 0)
    kernel, stride, pads = _window(node, x)
    height, width = term_output_size(x.height, x.width, kernel, stride, pads)
    _check_output(node, height, width)
    term = MaxTerm(x, kernel, stride, pads)
    for i in (0, height - 1):
        for j in (0, width - 1):
            if not term.taps(i, j):
                raise node.refuse("output pixel (%d, %d) has a window entirely in the padding"
                                  % (i, j))
    ctx.add(node, ctx.new_value(node, x.channels, height, width), [term])


def _average(x: Value, kernel: Tuple[int, int], stride: Tuple[int, int],
             pads: Tuple[int, int, int, int], include_pad: bool, node: _Node
             ) -> Tuple[LinearTerm, List[Any]]:
    """Sum with weights 2^-e (exact in FP16BP8 for e <= 8), the divisor's rest as a Scale."""
    area = kernel[0] * kernel[1]
    if area > _MAX_POOL_AREA:
        raise node.refuse("a %dx%d window (%d pixels) is more than %d: 1/%d is not a FP16BP8 "
                          "weight" % (kernel[0], kernel[1], area, _MAX_POOL_AREA, area))
    e = max(0, math.ceil(math.log2(area)))
    term = LinearTerm(x, _diagonal(x.channels, 2.0 ** -e, kernel), stride, pads, 0)
    height, width = term.output_size()
    counts = np.empty((height, width))
    for i in range(height):
        rows = [i * stride[0] + k - pads[0] for k in range(kernel[0])]
        valid_rows = sum(0 <= r < x.height for r in rows)
        for j in range(width):
            cols = [j * stride[1] + k - pads[1] for k in range(kernel[1])]
            counts[i, j] = area if include_pad else valid_rows * sum(
                0 <= c < x.width for c in cols)
    if counts.min() < 1:
        raise node.refuse("a window lies entirely in the padding")
    factors = 2.0 ** e / counts
    return term, ([] if np.all(factors == 1.0) else [Scale(factors)])


def _avgpool(ctx: _Context, node: _Node) -> None:
    x = ctx.tensor(node, 0)
    kernel, stride, pads = _window(node, x)
    height, width = term_output_size(x.height, x.width, kernel, stride, pads)
    _check_output(node, height, width)
    term, post = _average(x, kernel, stride, pads, bool(node.attrs["count_include_pad"]),
                          node)
    ctx.add(node, ctx.new_value(node, x.channels, height, width), [term], post=post)


def _global_average(ctx: _Context, node: _Node) -> None:
    x = ctx.tensor(node, 0)
    if x.rank != 4:
        raise node.refuse("needs a 4-D input")
    if x.height * x.width > _MAX_POOL_AREA:
        # Two averages: non-overlapping a x b windows, then the whole (H/a) x (W/b) map.
        split = [(a, b) for a in range(1, x.height + 1) if x.height % a == 0
                 for b in range(1, x.width + 1) if x.width % b == 0
                 and a * b <= _MAX_POOL_AREA
                 and (x.height // a) * (x.width // b) <= _MAX_POOL_AREA]
        if not split:
            raise node.refuse("%dx%d pixels cannot be averaged in two steps of at most %d "
                              "pixels" % (x.height, x.width, _MAX_POOL_AREA))
        a, b = max(split, key=lambda ab: ab[0] * ab[1])
        term, post = _average(x, (a, b), (a, b), (0, 0, 0, 0), True, node)
        mid = Value(node.output() + "/partial", x.channels, x.height // a, x.width // b)
        ctx.layers.append(Layer(node.name + "/partial", mid, [term], None, post, [node.name],
                                [node.op]))
        x = mid
    term, post = _average(x, (x.height, x.width), (1, 1), (0, 0, 0, 0), True, node)
    ctx.add(node, ctx.new_value(node, x.channels, 1, 1), [term], post=post)


def _flatten(ctx: _Context, node: _Node) -> None:
    value = ctx.value(node, 0)
    axis = int(node.attrs["axis"])
    source = value.source if isinstance(value, _FlatView) else value
    rank = 2 if isinstance(value, _FlatView) else source.rank
    if axis < 0:
        axis += rank
    if axis not in (0, 1):
        raise node.refuse("axis %d does not keep the batch (size 1) apart" % axis)
    _alias(ctx, node, value)


def _alias(ctx: _Context, node: _Node, value: _Env) -> None:
    """Flatten to [1, C*H*W]: the same tensor for a 1x1 map, a view for Gemm/MatMul otherwise."""
    if isinstance(value, _FlatView) or (value.height == 1 and value.width == 1):
        ctx.values[node.output()] = value
    else:
        ctx.values[node.output()] = _FlatView(value)


def _reshape(ctx: _Context, node: _Node) -> None:
    value = ctx.value(node, 0)
    shape = [int(v) for v in np.asarray(ctx.constant(node, 1, "shape")).reshape(-1)]
    source = value.source if isinstance(value, _FlatView) else value
    dims = [1, source.channels * source.height * source.width] if isinstance(
        value, _FlatView) else ([1, source.channels] if source.rank == 2 else
                                [1, source.channels, source.height, source.width])
    target = []
    for k, d in enumerate(shape):
        target.append(dims[k] if d == 0 and k < len(dims) else d)
    total = int(np.prod(dims))
    if target.count(-1) > 1 or any(d < -1 or d == 0 for d in target):
        raise node.refuse("shape %s is not a valid ONNX reshape target" % shape)
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        if known == 0 or total % known:
            raise node.refuse("shape %s does not divide %d values" % (shape, total))
        target[target.index(-1)] = total // known
    if int(np.prod(target)) != total:
        raise node.refuse("reshapes %d values into %s" % (total, target))
    if target[0] != 1:
        raise node.refuse("shape %s does not keep batch 1 first" % target)
    if len(target) == 2:
        _alias(ctx, node, value)
    elif len(target) == 4 and (tuple(target[1:]) == source.shape or (
            target[2:] == [1, 1] and source.height == 1 and source.width == 1)) and not \
            isinstance(value, _FlatView):
        ctx.values[node.output()] = source
    else:
        raise node.refuse("reshape %s -> %s reorders data; only flattening to [1, N] and "
                          "shape-preserving reshapes are supported" % (dims, target))


def _gemm(ctx: _Context, node: _Node) -> None:
    value = ctx.value(node, 0)
    matrix = np.asarray(ctx.constant(node, 1, "B (weights)"), np.float64)
    if matrix.ndim != 2:
        raise node.refuse("B must be a 2-D constant matrix, got shape %s" % (matrix.shape,))
    if node.op == "Gemm":
        if node.attrs["transA"]:
            raise node.refuse("transA=1 is not supported (the input is one row)")
        if node.attrs["transB"]:
            matrix = matrix.T
        matrix = matrix * float(node.attrs["alpha"])
    k, m = matrix.shape
    if isinstance(value, _FlatView):
        x = value.source
        size = x.channels * x.height * x.width
        if size != k:
            raise ModelError("%s: the input has %d features, B has %d rows" % (node.label, size, k))
        weight = matrix.T.reshape(m, x.channels, x.height, x.width)
    else:
        x = value
        if x.height != 1 or x.width != 1:
            raise node.refuse("needs a 2-D [1, K] input, got %s" % x)
        if x.channels != k:
            raise ModelError("%s: the input has %d features, B has %d rows" % (
                node.label, x.channels, k))
        weight = matrix.T.reshape(m, k, 1, 1)
    bias = None
    if node.op == "Gemm" and node.has_input(2):
        c = np.asarray(ctx.constant(node, 2, "C (bias)"), np.float64) * float(node.attrs["beta"])
        if c.size == 1:
            bias = np.full(m, float(c.reshape(-1)[0]))
        elif c.shape in ((m,), (1, m)):
            bias = c.reshape(-1)
        else:
            raise node.refuse("C of shape %s does not broadcast to [1, %d]" % (c.shape, m))
    ctx.add(node, Value(node.output(), m, 1, 1, 2), [LinearTerm(x, weight, macs=k * m)], bias)


def _concat(ctx: _Context, node: _Node) -> None:
    parts = [ctx.tensor(node, i) for i in range(len(node.proto.input))]
    rank = parts[0].rank
    axis = int(node.attrs["axis"]) if "axis" in node.attrs and node.attrs["axis"] is not None \
        else None
    if axis is None:
        raise ModelError("%s: attribute axis is required" % node.label)
    if axis < 0:
        axis += rank
    if axis != 1:
        raise node.refuse("only concatenation along channels (axis 1) is supported, got %d" % axis)
    if any(p.rank != rank or p.shape[1:] != parts[0].shape[1:] for p in parts):
        raise node.refuse("inputs %s differ in spatial size or rank" % parts)
    total = sum(p.channels for p in parts)
    terms, offset = [], 0
    for part in parts:
        weight = np.zeros((total, part.channels, 1, 1))
        weight[offset + np.arange(part.channels), np.arange(part.channels)] = 1.0
        terms.append(LinearTerm(part, weight))
        offset += part.channels
    ctx.add(node, ctx.new_value(node, total, parts[0].height, parts[0].width, rank), terms)


def _pad(ctx: _Context, node: _Node) -> None:
    if node.attrs["mode"] != "constant":
        raise node.refuse("mode %r is not supported (constant zeros only)" % node.attrs["mode"])
    if float(node.attrs["value"]) != 0.0:
        raise node.refuse("value %g is not supported (zeros only)" % node.attrs["value"])
    x = ctx.tensor(node, 0)
    pads = node.attrs.get("pads")
    if pads is None or len(pads) != 2 * (4 if x.rank == 4 else 2):
        raise ModelError("%s: pads must give begin and end for every axis" % node.label)
    pads = [int(p) for p in pads]
    if x.rank != 4 or any(pads[i] for i in (0, 1, 4, 5)):
        raise node.refuse("only H and W of a 4-D tensor can be padded, got pads %s" % pads)
    if min(pads) < 0:
        raise node.refuse("negative pads %s (cropping) are not supported" % pads)
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    out = ctx.new_value(node, x.channels, x.height + top + bottom, x.width + left + right)
    ctx.add(node, out, [LinearTerm(x, _diagonal(x.channels, 1.0), (1, 1),
                                   (top, left, bottom, right))])


def _identity(ctx: _Context, node: _Node) -> None:
    if node.op == "Dropout" and len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.refuse("the mask output is not supported")
    ctx.values[node.output()] = ctx.value(node, 0)


def _constant(ctx: _Context, node: _Node) -> None:
    value = node.attrs.get("value")
    if not isinstance(value, onnx.TensorProto):
        raise node.refuse("only the 'value' tensor attribute is supported")
    ctx.constants[node.output()] = tensor(value, node.label)


_Lowering = Callable[[_Context, _Node], None]
SUPPORTED_OPS: Dict[str, _Lowering] = {
    "Conv": _conv, "BatchNormalization": _batchnorm, "Relu": _activation, "LeakyRelu": _activation,
    "Clip": _activation, "Add": _binary, "Sub": _binary, "Mul": _binary, "MaxPool": _maxpool,
    "AveragePool": _avgpool, "GlobalAveragePool": _global_average, "Gemm": _gemm, "MatMul": _gemm,
    "Flatten": _flatten, "Reshape": _reshape, "Concat": _concat, "Pad": _pad, "Identity": _identity,
    "Dropout": _identity, "Constant": _constant,
}


@functools.lru_cache(maxsize=None)
def attributes(op: str, opset: int) -> Dict[str, Any]:
    """An op's attributes at an opset and their defaults (None: no default), from ONNX's own
    schema: the names a node may carry and what it means when it leaves one out."""
    schema = onnx.defs.get_schema(op, max_inclusive_version=opset, domain="")
    out: Dict[str, Any] = {}
    for name, attribute in schema.attributes.items():
        value = onnx.helper.get_attribute_value(attribute.default_value) if attribute.default_value.name else None
        out[name] = value.decode() if isinstance(value, bytes) else value
    return out


def load_onnx(source: Union[str, pathlib.Path, bytes], name: Optional[str] = None) -> Graph:
    """Read and lower an ONNX model into an unfused `Graph` (see `fuse`)."""
    where = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    model = read_model(source)
    graph = model.graph
    ctx = _Context(model, where)
    for init in graph.initializer:
        ctx.constants[init.name] = tensor(init, where)
    inputs = [i for i in graph.input if i.name not in ctx.constants]
    if len(inputs) != 1:
        raise UnsupportedError("%s: the model has %d inputs (%s); the compiler takes exactly one"
                               % (where, len(inputs), ", ".join(i.name for i in inputs)))
    dims = static_shape(inputs[0], where)
    if dims[0] != 1 or len(dims) not in (2, 4):
        raise UnsupportedError("%s: input %r has shape %s; batch 1 and N x C x H x W or N x F "
                               "are supported" % (where, inputs[0].name, dims))
    x = Value(inputs[0].name, dims[1], dims[2] if len(dims) == 4 else 1,
              dims[3] if len(dims) == 4 else 1, len(dims))
    ctx.values[x.name] = x
    if len(graph.output) != 1:
        raise UnsupportedError("%s: the model has %d outputs; the compiler takes exactly one" % (
            where, len(graph.output)))
    for index, proto in enumerate(graph.node):
        if proto.domain not in ("", "ai.onnx"):
            raise UnsupportedError("%s: node %r uses domain %r; only the default ONNX domain is "
                                   "supported" % (where, proto.name, proto.domain))
        label = ctx.node_name(proto, index)
        if proto.op_type not in SUPPORTED_OPS:
            raise UnsupportedError("%s: node %r (%s): op %s is not supported (supported: %s)" % (
                where, label, proto.op_type, proto.op_type, ", ".join(sorted(SUPPORTED_OPS))))
        lowering = SUPPORTED_OPS[proto.op_type]
        node = _Node(proto, label, attributes(proto.op_type, ctx.opset))
        for position, input_name in enumerate(proto.input):
            if input_name and input_name not in ctx.values and input_name not in ctx.constants:
                raise ModelError("%s: %s: input %d %r is neither the graph input, an initializer"
                                 " nor an earlier node's output" % (where, node.label, position,
                                                                   input_name))
        lowering(ctx, node)
    out_name = graph.output[0].name
    if out_name not in ctx.values:
        raise ModelError("%s: the graph output %r is not computed by any node" % (where, out_name))
    output = ctx.values[out_name]
    if isinstance(output, _FlatView):
        output = ctx.materialize(output, out_name)
    if output is x:
        raise UnsupportedError("%s: the output is the input; there is nothing to compute" % where)
    declared = graph.output[0]
    if declared.type.tensor_type.HasField("shape"):
        dims_out = [d.dim_value for d in declared.type.tensor_type.shape.dim]
        size = output.channels * output.height * output.width
        if dims_out and all(dims_out) and int(np.prod(dims_out)) != size:
            raise ModelError("%s: the output %r is declared %s but computes %d values" % (
                where, out_name, dims_out, size))
    stem = name or (pathlib.Path(where).stem if where != "<bytes>" else "model")
    order = {ctx.node_name(proto, i): i for i, proto in enumerate(graph.node)}
    return Graph(stem, x, output, ctx.layers, x.name, out_name, order)


