"""The compiler's graph: layers of accumulated terms and elementwise post-ops, in float.

Every tensor is one image (batch 1) of `channels` x `height` x `width`; a 2-D [1, F] ONNX
value is F x 1 x 1 with `rank` 2. A `Layer` computes, for every output pixel,

    acc = sum over its terms (in order) [+ bias];  out = post_n(...post_1(acc))

where a term is
- `LinearTerm`: a convolution of one input (weights [Co, Ci, kh, kw], strides, zero pads):
  Conv, Gemm/MatMul, folded BatchNormalization, average pools (weights 2^-e, the rest of the
  divisor a `Scale`), channel permutations (Concat, Flatten), zero Pad (identity weights);
- `AddTerm`: the input itself (residual additions, copies);
- `MaxTerm`: the maximum over a window of valid (non-pad) input pixels (MaxPool), alone.

`evaluate` runs the graph in float64 numpy: the lowering and the fusions are checked
against onnxruntime with it, before any fixed point is involved.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from tensil.layout import column_packing, pack_columns

__all__ = ["AddTerm", "Clip", "Graph", "Layer", "LeakyRelu", "LinearTerm", "Mask", "MaxTerm", "NegativePart", "PostOp",
           "Relu", "Scale", "Term", "Value", "describe", "evaluate", "evaluate_layer",
           "interleave_phases", "term_output_size"]


@dataclasses.dataclass(eq=False)
class Value:
    """A tensor of the graph (identity semantics: two values are never equal by content)."""

    name: str
    channels: int
    height: int
    width: int
    rank: int = 4

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def __repr__(self) -> str:
        return "Value(%r, %dx%dx%d)" % (self.name, self.channels, self.height, self.width)


Pads = Tuple[int, int, int, int]   # top, left, bottom, right


def term_output_size(height: int, width: int, kernel: Tuple[int, int], stride: Tuple[int, int],
                     pads: Pads) -> Tuple[int, int]:
    return ((height + pads[0] + pads[2] - kernel[0]) // stride[0] + 1,
            (width + pads[1] + pads[3] - kernel[1]) // stride[1] + 1)


@dataclasses.dataclass(eq=False)
class LinearTerm:
    input: Value
    weight: np.ndarray           # float64 [Co, Ci, kh, kw]
    stride: Tuple[int, int] = (1, 1)
    pads: Pads = (0, 0, 0, 0)
    macs: int = 0                # the ONNX op's own multiply-accumulates (0: a data movement)

    @property
    def kernel(self) -> Tuple[int, int]:
        return (self.weight.shape[2], self.weight.shape[3])

    def output_size(self) -> Tuple[int, int]:
        return term_output_size(self.input.height, self.input.width, self.kernel, self.stride,
                                self.pads)

    def inside(self, tap: Tuple[int, int]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """The output rows [i0, i1) and columns [j0, j1) whose input at kernel `tap` lies in the
        image; the others read zero padding there."""
        height, width = self.output_size()
        return (_inside(height, self.stride[0], tap[0] - self.pads[0], self.input.height),
                _inside(width, self.stride[1], tap[1] - self.pads[1], self.input.width))

    def inside_count(self, tap: Tuple[int, int]) -> int:
        """How many output pixels read their input at kernel `tap` inside the image."""
        (i0, i1), (j0, j1) = self.inside(tap)
        return (i1 - i0) * (j1 - j0)


def _inside(outputs: int, stride: int, offset: int, size: int) -> Tuple[int, int]:
    """The outputs [j0, j1) of `outputs` whose input j * stride + offset lies in [0, size)."""
    j0 = max(0, -(offset // stride))
    return j0, max(j0, min(outputs, (size - 1 - offset) // stride + 1))


@dataclasses.dataclass(eq=False)
class AddTerm:
    input: Value

    def output_size(self) -> Tuple[int, int]:
        return (self.input.height, self.input.width)


@dataclasses.dataclass(eq=False)
class MaxTerm:
    input: Value
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    pads: Pads

    def output_size(self) -> Tuple[int, int]:
        return term_output_size(self.input.height, self.input.width, self.kernel, self.stride,
                                self.pads)

    def taps(self, i: int, j: int) -> List[Tuple[int, int]]:
        """The input pixels (row, col) of output pixel (i, j) that are not padding."""
        rows = [i * self.stride[0] + k - self.pads[0] for k in range(self.kernel[0])]
        cols = [j * self.stride[1] + k - self.pads[1] for k in range(self.kernel[1])]
        return [(r, c) for r in rows if 0 <= r < self.input.height
                for c in cols if 0 <= c < self.input.width]


Term = Union[LinearTerm, AddTerm, MaxTerm]


@dataclasses.dataclass(frozen=True)
class Relu:
    pass


@dataclasses.dataclass(frozen=True)
class LeakyRelu:
    alpha: float


@dataclasses.dataclass(frozen=True)
class Clip:
    low: float
    high: float


@dataclasses.dataclass(eq=False)
class Scale:
    """Multiply every channel of output pixel (i, j) by factors[i, j]."""

    factors: np.ndarray   # float64 [Ho, Wo]


@dataclasses.dataclass(eq=False)
class Mask:
    """Keep channel c of output column j where keep[c, j], else 0 (every row)."""

    keep: np.ndarray      # bool [Co, Wo]


@dataclasses.dataclass(frozen=True)
class NegativePart:
    """min(x, 0) in the first `channels` channels, or of every `period` channels (a layer's
    column phases, Layer.phases); the others unchanged (a packing layer's weights make an
    activation of them: packing._negative_parts)."""

    channels: int
    period: int = 0

    def negative(self, count: int) -> np.ndarray:
        """Which of `count` channels take min(x, 0)."""
        index = np.arange(count)
        return (index % self.period if self.period else index) < self.channels


PostOp = Union[Relu, LeakyRelu, Clip, Scale, Mask, NegativePart]


@dataclasses.dataclass(eq=False)
class Layer:
    name: str
    output: Value
    terms: List[Term]
    bias: Optional[np.ndarray] = None        # float64 [Co]
    post: List[PostOp] = dataclasses.field(default_factory=list)
    nodes: List[str] = dataclasses.field(default_factory=list)   # the ONNX nodes it computes
    ops: List[str] = dataclasses.field(default_factory=list)     # their op types
    # Column phases (phases, group): the terms compute a map `phases` times narrower than the
    # output whose channel k * group + c at column j is the output's channel c at column
    # phases * j + k (c < output.channels; a group's other channels zero), and the output
    # vectors are stored interleaved. Where an input vector holds the columns of several output
    # pixels (packing.host_packs_phases), each weight block then serves every phase's pixels.
    phases: Tuple[int, int] = (1, 0)

    @property
    def computed(self) -> Tuple[int, int, int]:
        """(channels, height, width) of the map the terms compute (the output's, one phase)."""
        p, group = self.phases
        if p == 1:
            return self.output.shape
        return (p * group, self.output.height, self.output.width // p)

    @property
    def inputs(self) -> List[Value]:
        seen: List[Value] = []
        for term in self.terms:
            if not any(term.input is v for v in seen):
                seen.append(term.input)
        return seen

    @property
    def kind(self) -> str:
        if any(isinstance(t, MaxTerm) for t in self.terms):
            return "max"
        if any(isinstance(t, LinearTerm) for t in self.terms):
            return "linear"
        return "add"

    @property
    def macs(self) -> int:
        return sum(t.macs for t in self.terms if isinstance(t, LinearTerm))


@dataclasses.dataclass
class Graph:
    name: str
    input: Value
    output: Value
    layers: List[Layer]
    input_name: str       # the ONNX names the .tmodel uses
    output_name: str
    node_order: Dict[str, int] = dataclasses.field(default_factory=dict)

    def producer(self) -> Dict[int, Layer]:
        return {id(layer.output): layer for layer in self.layers}

    def consumers(self) -> Dict[int, List[Layer]]:
        out: Dict[int, List[Layer]] = {}
        for layer in self.layers:
            for value in layer.inputs:
                out.setdefault(id(value), []).append(layer)
        return out

    def values(self) -> List[Value]:
        return [self.input] + [layer.output for layer in self.layers]

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """The shape (C, H, W) callers give the input in, the ONNX input's: `input` itself unless
        the host packs it (`input_name`, tensil.layout)."""
        packing = column_packing(self.input_name)
        if packing is None:
            return self.input.shape
        return (self.input.channels // packing.kw, self.input.height, self.input.width * packing.step)

    def input_values(self, x: np.ndarray) -> np.ndarray:
        """One input or a batch, given as the ONNX input -> (B,) + input.shape: the values the
        program finds in its input, packed as the host packs them."""
        batch = np.asarray(x, np.float64).reshape((-1,) + self.image_shape)
        packing = column_packing(self.input_name)
        return batch if packing is None else pack_columns(batch, packing.kw, packing.left, packing.step)


# --------------------------------------------------------------------------- float evaluation

def _conv(x: np.ndarray, term: LinearTerm) -> np.ndarray:
    t, left, b, r = term.pads
    padded = np.pad(x, ((0, 0), (t, b), (left, r)))
    ho, wo = term.output_size()
    sh, sw = term.stride
    out = np.zeros((term.weight.shape[0], ho, wo))
    for k in range(term.kernel[0]):
        for m in range(term.kernel[1]):
            window = padded[:, k:k + sh * (ho - 1) + 1:sh, m:m + sw * (wo - 1) + 1:sw]
            out += np.einsum("oi,ihw->ohw", term.weight[:, :, k, m], window)
    return out


def _max(x: np.ndarray, term: MaxTerm) -> np.ndarray:
    ho, wo = term.output_size()
    out = np.empty((x.shape[0], ho, wo))
    for i in range(ho):
        for j in range(wo):
            taps = term.taps(i, j)
            out[:, i, j] = np.max([x[:, r, c] for r, c in taps], axis=0)
    return out


def _post(x: np.ndarray, op: PostOp) -> np.ndarray:
    if isinstance(op, Relu):
        return np.maximum(x, 0.0)
    if isinstance(op, LeakyRelu):
        return np.where(x >= 0, x, op.alpha * x)
    if isinstance(op, Clip):
        return np.minimum(np.maximum(x, op.low), op.high)
    if isinstance(op, Mask):
        return np.where(op.keep[:, None, :], x, 0.0)
    if isinstance(op, NegativePart):
        return np.where(op.negative(x.shape[0])[:, None, None], np.minimum(x, 0.0), x)
    return x * op.factors[None]


def evaluate_layer(layer: Layer, env: Dict[int, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(the sum of its terms and bias, the output after the post-ops) of one layer."""
    acc: Optional[np.ndarray] = None
    for term in layer.terms:
        source = env[id(term.input)]
        if isinstance(term, LinearTerm):
            part = _conv(source, term)
        elif isinstance(term, MaxTerm):
            part = _max(source, term)
        else:
            part = source
        acc = part if acc is None else acc + part
    assert acc is not None
    if layer.bias is not None:
        acc = acc + layer.bias[:, None, None]
    out = acc
    for op in layer.post:
        out = _post(out, op)
    return interleave_phases(layer, acc), interleave_phases(layer, out)


def interleave_phases(layer: Layer, computed: np.ndarray) -> np.ndarray:
    """The output (..., C, H, W) of a layer's computed map (..., P*G, H, W/P) (Layer.phases)."""
    p, group = layer.phases
    if p == 1:
        return computed
    c, h, w = layer.output.shape
    out = np.empty(computed.shape[:-3] + (c, h, w), computed.dtype)
    for k in range(p):
        out[..., :, :, k::p] = computed[..., k * group:k * group + c, :, :]
    return out


def evaluate(graph: Graph, x: np.ndarray, values: Optional[Dict[int, np.ndarray]] = None
             ) -> np.ndarray:
    """The graph in float64 on one input (C, H, W) (or any shape of that size); `values`
    receives every tensor by id(Value)."""
    env: Dict[int, np.ndarray] = {id(graph.input): graph.input_values(x)[0]}
    for layer in graph.layers:
        env[id(layer.output)] = evaluate_layer(layer, env)[1]
    if values is not None:
        values.update(env)
    return env[id(graph.output)]


def describe(layers: Sequence[Layer]) -> List[str]:
    """One line a layer: name, terms, output shape (for --graph and debugging)."""
    lines = []
    for layer in layers:
        terms = []
        for term in layer.terms:
            if isinstance(term, LinearTerm):
                terms.append("linear(%s, %dx%d/%d)" % (term.input.name, term.kernel[0],
                                                       term.kernel[1], term.stride[0]))
            elif isinstance(term, MaxTerm):
                terms.append("max(%s, %dx%d/%d)" % (term.input.name, term.kernel[0],
                                                    term.kernel[1], term.stride[0]))
            else:
                terms.append("add(%s)" % term.input.name)
        post = [type(p).__name__ for p in layer.post]
        phases = " in %d column phases" % layer.phases[0] if layer.phases[0] > 1 else ""
        lines.append("%s: %s%s%s -> %s %dx%dx%d" % (
            layer.name, " + ".join(terms), (" then " + ", ".join(post)) if post else "", phases,
            layer.output.name, *layer.output.shape))
    return lines
