"""The fused graph in the machine's terms: FP16BP8 weight blocks, raw post-op constants, and
for every output channel block the ordered list of accumulator operations.

A layer's output channels are cut in blocks of N (`array_size`) lanes, its inputs' channels
too. A weight block is what one LoadWeights puts in the array: N+1 raw vectors, row 0 the
bias row, row 1+j the weights of input lane j. For each output block `cob` the layer is the
sequence `ops[cob]`:

- `MatOp(term, tap, cib, block)`: acc (+)= mac_chain(input block cib at the tap, block); a
  block that quantizes to all zeros is left out (it would add exactly zero), and the bias
  rides on the first MatOp of the block (a `zeroes` MatOp carries it when no weight is left);
- `CopyOp(term)`: acc (+)= the AddTerm's input block cob (DataMove local -> accumulators).

The first op of a block overwrites the accumulators, the others add with saturation. The
compiler's schedule follows this order exactly whatever its tiling, and `reference` computes
the same order in plain numpy, so the two agree bit for bit.
"""

import dataclasses
import hashlib
from typing import Dict, List, Optional, Set, Tuple, Union

import numpy as np

from tensil.arch import Architecture
from tensil.emulator import DRAINING_PUSHES
from tensil.fixed import FixedFormat, SaturationStats, fixed_format, from_float_const

from .errors import MemoryOverflow, UnsupportedError
from .graph import (
    AddTerm,
    Clip,
    Graph,
    Layer,
    LeakyRelu,
    LinearTerm,
    Mask,
    MaxTerm,
    NegativePart,
    Relu,
    Scale,
)

__all__ = ["CopyOp", "MatOp", "QClip", "QGraph", "QLayer", "QLeakyRelu", "QMask", "QNegativePart", "QRelu", "QScale",
           "blocks_of", "quantize"]


@dataclasses.dataclass(frozen=True)
class MatOp:
    term: int
    tap: tuple          # (row, col) of the kernel
    cib: int            # input channel block
    block: int          # index into QLayer.blocks
    zeroes: bool = False


@dataclasses.dataclass(frozen=True)
class CopyOp:
    term: int


Op = Union[MatOp, CopyOp]


@dataclasses.dataclass(frozen=True)
class QRelu:
    pass


@dataclasses.dataclass(frozen=True)
class QLeakyRelu:
    alpha: int           # raw
    use_min: bool        # alpha > 1: min(x, alpha x)

    def slope_below_one(self, one: int) -> Optional[int]:
        """alpha - 1 (raw) where x + round(min(x, 0) * (alpha - 1)) equals max(x, round(alpha *
        x)) for every raw x, else None. The ALU rounds a product to nearest, ties to even; for
        x < 0, alpha * x = x + (alpha - 1) * x exactly, and adding the integer x commutes with
        that rounding unless a tie meets an odd x, which happens only for alpha = 1/2 (its
        products of odd x end in exactly half a step). The product stays below the format's
        range as |alpha - 1| < 1. The compiler then needs 5.9 RTL cycles a vector instead of
        7.9 (no reload of alpha into the one SIMD register; measured)."""
        if self.use_min or not 0 < self.alpha < one or 2 * self.alpha == one:
            return None
        return self.alpha - one


@dataclasses.dataclass(frozen=True)
class QClip:
    low: int
    high: int


@dataclasses.dataclass(eq=False)
class QScale:
    factors: np.ndarray  # raw int64 [Ho, Wo]


@dataclasses.dataclass(eq=False)
class QMask:
    keep: np.ndarray     # bool [Co, Wo]: channel c of output column j kept, else 0

    def lanes(self, cob: int, n: int, column: int) -> Tuple[bool, ...]:
        """Which lanes of output block `cob` column `column` are kept (padded lanes: kept)."""
        lanes = self.keep[cob * n:(cob + 1) * n, column]
        return tuple(bool(v) for v in lanes) + (True,) * (n - len(lanes))


@dataclasses.dataclass(frozen=True)
class QNegativePart:
    channels: int        # min(x, 0) in channels [0, channels) (of every `period`), the others unchanged
    period: int = 0

    def lanes(self, cob: int, n: int) -> Tuple[bool, ...]:
        """Which lanes of output block `cob` take min(x, 0)."""
        return tuple(bool(v) for v in NegativePart(self.channels, self.period).negative((cob + 1) * n)[cob * n:])


QPost = Union[QRelu, QLeakyRelu, QClip, QScale, QMask, QNegativePart]


@dataclasses.dataclass(eq=False)
class QLayer:
    layer: Layer
    blocks: List[np.ndarray]          # raw int64 (N+1, N)
    ops: List[List[Op]]               # per output block
    post: List[QPost]
    # Per block, the weight rows a LoadWeights must push after the bias row: N, or the channels
    # of the last input block of a value whose padded lanes are zero (the rows beyond meet only
    # zero inputs, so whatever the array held there adds exactly zero).
    block_rows: List[int]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def max_term(self) -> Optional[MaxTerm]:
        terms = [t for t in self.layer.terms if isinstance(t, MaxTerm)]
        return terms[0] if terms else None


@dataclasses.dataclass(eq=False)
class QGraph:
    graph: Graph
    arch: Architecture
    layers: List[QLayer]
    stats: SaturationStats

    @property
    def fmt(self) -> FixedFormat:
        return fixed_format(self.arch.data_type)

    @property
    def n(self) -> int:
        return self.arch.array_size


def content_key(array: np.ndarray) -> bytes:
    """A short key naming an array's dtype, shape and values, for de-duplication: a dict keyed
    by the bytes themselves would hold a second copy of every weight."""
    data = np.ascontiguousarray(array)
    head = ("%s%r" % (data.dtype.str, data.shape)).encode("ascii")
    digest = hashlib.sha256(head + b"|")
    digest.update(data.data.cast("B"))
    return digest.digest()


def blocks_of(channels: int, n: int) -> int:
    return -(-channels // n)


def _quantize_linear(term: LinearTerm, c: int, n: int, fmt: FixedFormat, stats: SaturationStats
                     ) -> np.ndarray:
    """Raw weights of output block `c`: [kh, kw, Cib, N(in), N(out)], zero padded. One block
    of output channels at a time: the layer's raw weights are never all in memory at once."""
    _, ci, kh, kw = term.weight.shape
    cib = blocks_of(ci, n)
    raw = from_float_const(term.weight[c * n:(c + 1) * n], fmt, stats)
    padded = np.zeros((n, cib * n, kh, kw), dtype=np.int64)
    padded[:raw.shape[0], :ci] = raw
    # [k_out, cib, j_in, kh, kw] -> [kh, kw, cib, j_in, k_out]
    return padded.reshape(n, cib, n, kh, kw).transpose(3, 4, 1, 2, 0)


def _post(layer: Layer, fmt: FixedFormat, stats: SaturationStats) -> List[QPost]:
    out: List[QPost] = []
    for op in layer.post:
        if isinstance(op, Relu):
            out.append(QRelu())
        elif isinstance(op, LeakyRelu):
            out.append(QLeakyRelu(int(from_float_const(op.alpha, fmt, stats)), op.alpha > 1.0))
        elif isinstance(op, Clip):
            # +-inf-like bounds saturate by design: not counted as overflows
            bounds = [int(from_float_const(v, fmt, None if abs(v) >= 1 << (
                fmt.width - fmt.frac_bits - 1) else stats)) for v in (op.low, op.high)]
            out.append(QClip(*bounds))
        elif isinstance(op, Scale):
            out.append(QScale(from_float_const(op.factors, fmt, stats)))
        elif isinstance(op, Mask):
            out.append(QMask(op.keep.copy()))
        elif isinstance(op, NegativePart):
            out.append(QNegativePart(op.channels, op.period))
        else:
            raise UnsupportedError("layer %s: post-op %r has no lowering" % (layer.name, op))
    return out


def _quantize_layer(layer: Layer, n: int, fmt: FixedFormat, stats: SaturationStats, dram1_depth: int,
                    zero_padded: Set[int]) -> QLayer:
    channels = layer.computed[0]
    p, group = layer.phases
    if p > 1 and (group % n or any(not isinstance(op, (Relu, LeakyRelu, Clip)) and not (
            isinstance(op, NegativePart) and op.period == group) for op in layer.post)):
        raise UnsupportedError("layer %s: %d column phases of %d channels on a %d-lane array, post-ops %s: "
                               "a phase must be whole blocks and its post-ops elementwise" % (
                                   layer.name, p, group, n, [type(op).__name__ for op in layer.post]))
    cob = blocks_of(channels, n)
    bias: np.ndarray = np.zeros(cob * n, dtype=np.int64)
    if layer.bias is not None:
        bias[:channels] = from_float_const(layer.bias, fmt, stats)
    bias = bias.reshape(cob, n)
    blocks: List[np.ndarray] = []
    index: Dict[bytes, int] = {}

    def block_id(weights: Optional[np.ndarray], bias_row: Optional[np.ndarray]) -> int:
        full = np.zeros((n + 1, n), dtype=np.int64)
        if bias_row is not None:
            full[0] = bias_row
        if weights is not None:
            full[1:] = weights
        key = content_key(full)
        if key not in index:
            index[key] = len(blocks)
            blocks.append(full)
        return index[key]

    ops: List[List[Op]] = []
    for c in range(cob):
        # The layer's weights go to DRAM1 whole, each distinct block once: a layer that cannot fit
        # is refused as soon as that is certain, before the rest of it is converted.
        if len(blocks) * (n + 1) > dram1_depth:
            raise MemoryOverflow(layer.name + " (weights)", "DRAM1", len(blocks) * (n + 1), dram1_depth,
                                 "counted on %d of its %d output blocks; refused before the rest" % (c, cob))
        raw_terms = [_quantize_linear(t, c, n, fmt, stats) if isinstance(t, LinearTerm) else None
                     for t in layer.terms]
        sequence: List[Op] = []
        carried = False
        first_linear = None
        for t, term in enumerate(layer.terms):
            if isinstance(term, AddTerm):
                sequence.append(CopyOp(t))
            elif isinstance(term, LinearTerm):
                if first_linear is None:
                    first_linear = len(sequence)
                raw = raw_terms[t]
                assert raw is not None   # a linear term's weights
                for k, m in tap_order(term):
                    for b in range(raw.shape[2]):
                        if not raw[k, m, b].any():
                            continue
                        row = None if carried else bias[c]
                        sequence.append(MatOp(t, (k, m), b, block_id(raw[k, m, b], row)))
                        carried = True
        if first_linear is not None and not carried:
            sequence.insert(first_linear, MatOp(first_linear_term(layer), (0, 0), 0,
                                                block_id(None, bias[c]), zeroes=True))
        ops.append(sequence)
    return QLayer(layer, blocks, ops, _post(layer, fmt, stats), _block_rows(layer, ops, len(blocks), n, zero_padded))


def _block_rows(layer: Layer, ops: List[List[Op]], count: int, n: int, zero_padded: Set[int]) -> List[int]:
    """QLayer.block_rows: the most rows any MatOp of a block needs (a load of fewer than
    DRAINING_PUSHES pushes would not end the array's accumulate window: such blocks keep N)."""
    rows = [0] * count
    for sequence in ops:
        for op in sequence:
            if not isinstance(op, MatOp):
                continue
            value = layer.terms[op.term].input
            need = n
            if not op.zeroes and id(value) in zero_padded:
                need = min(n, value.channels - op.cib * n)
            rows[op.block] = max(rows[op.block], need if need + 1 >= DRAINING_PUSHES else n)
    return rows


def keeps_zero(post: List[QPost]) -> bool:
    """Whether the post-ops map 0 to 0 (a layer's padded output lanes, zero before them, stay so)."""
    return all(not isinstance(op, QClip) or op.low <= 0 <= op.high for op in post)


def tap_order(term: LinearTerm) -> List[Tuple[int, int]]:
    """The kernel taps, those that read the fewest zero padding first (then row by row): the
    first op writes every accumulator of a tile and the bias rides on it, so it reads all its
    padding; the ops after it skip theirs (backend: they add exactly zero)."""
    kh, kw = term.kernel
    return sorted(((k, m) for k in range(kh) for m in range(kw)), key=lambda tap: -term.inside_count(tap))


def first_linear_term(layer: Layer) -> int:
    return next(i for i, t in enumerate(layer.terms) if isinstance(t, LinearTerm))


def quantize(graph: Graph, arch: Architecture) -> QGraph:
    """Quantize every layer's constants (Tensil's rule: half up, saturated, counted)."""
    fmt = fixed_format(arch.data_type)
    stats = SaturationStats()
    # Values whose padded lanes are zero: those the program computes (zero weight columns and bias
    # there) through zero-keeping post-ops, from such values. Not the graph's input: whatever the
    # host leaves in its padded lanes stays out of every sum only through zero weight rows.
    zero_padded: Set[int] = set()
    layers = []
    for layer in graph.layers:
        q = _quantize_layer(layer, arch.array_size, fmt, stats, arch.dram1_depth, zero_padded)
        if keeps_zero(q.post) and all(id(t.input) in zero_padded for t in layer.terms
                                      if not isinstance(t, LinearTerm)):
            zero_padded.add(id(layer.output))
        layers.append(q)
    return QGraph(graph, arch, layers, stats)
