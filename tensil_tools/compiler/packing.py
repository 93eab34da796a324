"""Packing the kernel columns of narrow inputs into the array's lanes.

A convolution reads its input a channel block (N lanes) at a time, one MatMul pass a kernel
tap. An input of C channels whose last block holds r < N of them wastes N - r lanes on every
one of that block's kh x kw passes: the 3-channel image on a 12-lane array uses a quarter of
the array, a 16-channel map's second block a third. When r x kw <= N, the kw columns of
those r channels fit one vector: P(y, x) = [in(y, x*sw + dc - left) for dc in 0..kw-1], and
the convolution reads P with a kh x 1 kernel: kh passes instead of kh x kw.

P is itself a convolution (1 x kw, weights 0 and 1, stride (1, sw), the column pads): a layer
of the graph like any other, exact in fixed point (each output is one input value times
one), so the rewrite changes nothing the reference, the emulator and the RTL compute but
the order of each sum. It costs kw passes over the input rows and a copy of P; the
compiler keeps it only where that is less than the passes it saves, and `compile_graph`
keeps the packed graph only where the calibrated cycle model says it is faster.

Where only packing layers read the packed channels, the layer making them is split: the
channel blocks before them keep its post-ops, and the packing layers take the post-ops of the
packed channels over (an elementwise op that keeps 0 commutes with a 0/1 selection: the same
values, and on fewer vectors where a strided convolution reads P: blocks.0/conv2's last 4
channels of the ResNet-9, 1,024 vectors of LeakyReLU, become 512). The packed channels
themselves become tap partial sums where that saves MatMul passes (_tap_partials: each input
pixel read once a kernel row, the packing summing the kernel columns as it lays them out),
else, under a strided packing, a layer of their own without post-ops, else, where their one
post-op is a LeakyReLU and twice them fit a block, a layer making each of them twice, its
negative part min(x, 0) first (_negative_parts: one SIMD a vector instead of three), which the
packing weighs by alpha - 1 beside the channel itself: the activation's values, bit for bit.

Where the packing reads the graph's input (the image), the host can lay its columns out
instead (`host_packs_input`): P becomes the graph's input, named for `tensil.layout`, and
the other convolutions reading the image read P's middle columns, which are the image. With
one column more in the lanes, a vector of every second pixel holds the columns of two pixels
(`host_packs_phases`): the image is half the vectors, and the layers reading it compute two
column phases (graph.Layer.phases), each weight block serving both pixels of a vector; narrow
channels that only packings read are then made two pixels a vector, side by side, and
packed from there (`_phases_side_by_side`).
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from tensil.layout import column_packing, packed_input_name

from .graph import (
    Clip,
    Graph,
    Layer,
    LeakyRelu,
    LinearTerm,
    Mask,
    NegativePart,
    PostOp,
    Relu,
    Term,
    Value,
)

__all__ = ["PACK_OPS", "host_packs_input", "host_packs_phases", "is_packing", "pack_columns"]

BENEFIT = 1.25   # MatMul vectors saved / vectors the packing costs, at least
PACK_OPS = ["Pack"]   # the ops of a packing layer


def is_packing(layer: Layer) -> bool:
    return layer.ops == PACK_OPS


def _plan(term: LinearTerm, n: int) -> Optional[Tuple[int, int]]:
    """(channels before the packed ones, packed channels r) where packing pays, else None."""
    co, c, kh, kw = term.weight.shape
    r = c - (-(-c // n) - 1) * n
    if kw < 2 or r * kw > n or not term.weight[:, c - r:].any():
        return None
    ho, wo = term.output_size()
    saved = (kw - 1) * kh * -(-co // n) * ho * wo
    cost = (kw + 1) * term.input.height * wo   # P's passes and its copy out of the accumulators
    return (c - r, r) if saved >= BENEFIT * cost else None


def _packed(layer: Layer, term: LinearTerm, kept: int, r: int) -> Tuple[Layer, List[LinearTerm]]:
    """The layer making P, and the terms replacing `term`."""
    x = term.input
    co, c, kh, kw = term.weight.shape
    top, left, bottom, right = term.pads
    sh, sw = term.stride
    ho, wo = term.output_size()
    select = np.zeros((r * kw, c, 1, kw))
    for dc in range(kw):
        for k in range(r):
            select[dc * r + k, kept + k, 0, dc] = 1.0
    packed = Value("%s/columns%d" % (x.name, kw), r * kw, x.height, wo)
    maker = Layer("%s/pack" % layer.name, packed,
                  [LinearTerm(x, select, (1, sw), (0, left, 0, right))], ops=PACK_OPS)
    weight = np.zeros((co, r * kw, kh, 1))
    for dc in range(kw):
        weight[:, dc * r:(dc + 1) * r, :, 0] = term.weight[:, kept:, :, dc]
    macs_packed = term.macs * r // c
    terms = [LinearTerm(packed, weight, (sh, 1), (top, 0, bottom, 0), macs_packed)]
    if kept:
        rest = term.weight.copy()
        rest[:, kept:] = 0.0
        terms.insert(0, LinearTerm(x, rest, term.stride, term.pads, term.macs - macs_packed))
    return maker, terms


def pack_columns(graph: Graph, n: int) -> Graph:
    """The graph with the kernel columns of narrow inputs packed (see the module docstring) for
    an array of `n` lanes; the same graph when nothing pays."""
    layers: List[Layer] = []
    changed = False
    for layer in graph.layers:
        terms: List = []
        for term in layer.terms:
            if not isinstance(term, LinearTerm) or (plan := _plan(term, n)) is None:
                terms.append(term)
                continue
            maker, replacement = _packed(layer, term, *plan)
            layers.append(maker)
            terms += replacement
            changed = True
        layers.append(dataclasses.replace(layer, terms=terms) if terms != layer.terms else layer)
    return _post_ops_after_packing(dataclasses.replace(graph, layers=layers), n) if changed else graph


def host_packs_input(graph: Graph) -> Graph:
    """The packed graph with its input's packing layer done by the host (the module docstring):
    where one packing layer of column stride 1, keeping the width, reads every channel of the
    input and no other term than a convolution reads it; else the same graph."""
    x = graph.input
    readers = [layer for layer in graph.layers if any(t.input is x for t in layer.terms)]
    makers = [layer for layer in readers if is_packing(layer)]
    if x.rank != 4 or len(makers) != 1 or makers[0].bias is not None or makers[0].post:
        return graph
    maker = makers[0]
    term = maker.terms[0]
    if len(maker.terms) != 1 or not isinstance(term, LinearTerm):
        return graph
    c, kw = x.channels, term.kernel[1]
    left = term.pads[1]
    select = np.zeros((kw * c, c, 1, kw))
    for dc in range(kw):
        select[dc * c + np.arange(c), np.arange(c), 0, dc] = 1.0
    if (term.stride != (1, 1) or maker.output.width != x.width or term.weight.shape != select.shape
            or not np.array_equal(term.weight, select)):
        return graph
    packed = maker.output
    layers: List[Layer] = []
    for layer in graph.layers:
        if layer is maker:
            continue
        terms: List[Term] = []
        for t in layer.terms:
            if t.input is not x:
                terms.append(t)
                continue
            if not isinstance(t, LinearTerm):
                return graph
            weight = np.zeros((t.weight.shape[0], kw * c) + t.weight.shape[2:])
            weight[:, left * c:(left + 1) * c] = t.weight   # the image is P's middle columns
            terms.append(LinearTerm(packed, weight, t.stride, t.pads, t.macs))
        layers.append(dataclasses.replace(layer, terms=terms) if terms != layer.terms else layer)
    return dataclasses.replace(graph, input=packed, layers=layers,
                               input_name=packed_input_name(graph.input_name, kw, left))


def host_packs_phases(graph: Graph, n: int) -> Graph:
    """A graph whose input the host packs (host_packs_input) with one column more in its lanes
    and every second pixel: P4(h, j) holds the image columns 2j - left .. 2j - left + kw, the
    kw columns of both pixels 2j and 2j + 1, in half the vectors (the program's image read
    halves). The layers that read the input at every column become layers of two column phases
    (graph.Layer.phases: each weight block serves both pixels of a vector, one a phase), a term
    that reads every second column (kernel width 1) reads P4 directly; else the same graph."""
    packing = column_packing(graph.input_name)
    x = graph.input
    if packing is None or packing.step != 1 or x.width % 2:
        return graph
    c = x.channels // packing.kw
    kw = packing.kw + 1
    if kw * c > n:
        return graph
    packed = Value("%s/columns%d/2" % (packing.name, kw), kw * c, x.height, x.width // 2)

    def widened(weight: np.ndarray, shift: int) -> np.ndarray:
        """Weights on P's lanes moved to P4's lanes `shift` columns later."""
        out = np.zeros(weight.shape[:1] + (kw * c,) + weight.shape[2:])
        out[:, shift * c:shift * c + weight.shape[1]] = weight
        return out

    layers: List[Layer] = []
    for layer in graph.layers:
        readers = [t for t in layer.terms if isinstance(t, LinearTerm) and t.input is x]
        if not any(t.input is x for t in layer.terms):
            layers.append(layer)
            continue
        if len(readers) != sum(t.input is x for t in layer.terms) or not all(
                t.kernel[1] == 1 and t.pads[1] == t.pads[3] == 0 for t in readers):
            return graph
        if all(t.stride[1] == 2 for t in readers):   # P's column 2j is P4's column j, lanes alike
            moved = {id(t): LinearTerm(packed, widened(t.weight, 0), (t.stride[0], 1), t.pads, t.macs)
                     for t in readers}
            layers.append(dataclasses.replace(layer, terms=[moved.get(id(t), t) for t in layer.terms]))
            continue
        if len(readers) != len(layer.terms) or any(t.stride[1] != 1 for t in readers):
            return graph
        co = layer.output.channels
        group = -(-co // n) * n
        post: List[PostOp] = []
        for op in layer.post:
            if isinstance(op, NegativePart):
                op = NegativePart(op.channels, group)
            elif not isinstance(op, (Relu, LeakyRelu, Clip)):
                return graph
            post.append(op)
        phased: List[Term] = []
        for t in readers:
            weight = np.zeros((2 * group, kw * c) + t.weight.shape[2:])
            for k in range(2):   # pixel 2j + k: its columns start k columns into P4's
                weight[k * group:k * group + co] = widened(t.weight, k)
            phased.append(LinearTerm(packed, weight, t.stride, t.pads, t.macs))
        bias = None
        if layer.bias is not None:
            bias = np.zeros(2 * group)
            bias[:co] = bias[group:group + co] = layer.bias
        layers.append(dataclasses.replace(layer, terms=phased, bias=bias, post=post, phases=(2, group)))
    return _phases_side_by_side(dataclasses.replace(
        graph, input=packed, layers=layers, input_name=packed_input_name(packing.name, kw, packing.left, 2)), n)


def _negative_slope_of(packings: List[Layer], r: int) -> Optional[float]:
    """alpha - 1 where every packing weighs the r negative parts before them so against their
    channels (_negative_parts), else None."""
    slopes = set()
    for layer in packings:
        term = layer.terms[0]
        assert isinstance(term, LinearTerm)   # a packing's one term
        weight = term.weight
        negative, channel = weight[:, :r], weight[:, r:]
        if not np.array_equal(negative != 0, channel != 0):
            return None
        slopes |= set(np.round(negative[channel != 0] / channel[channel != 0], 12).tolist())
    return slopes.pop() if len(slopes) == 1 else None


def _phases_side_by_side(graph: Graph, n: int) -> Graph:
    """Where a layer of two column phases makes negative parts (_negative_parts) that only
    packings of stride 1 read and both phases' channels fit one block: that layer makes both
    pixels' channels side by side in one vector instead (a value half as wide, not interleaved)
    with their LeakyReLU (three SIMDs for two pixels, where the Min of each negative part served
    one), and each packing becomes a layer of two column phases reading both pixels from it
    (graph.Layer.phases): half the vectors made, activated and moved, the same values bit for
    bit (the packings weighed the negative parts as the compiler's LeakyReLU computes it)."""
    consumers = graph.consumers()
    layers: List[Layer] = []
    packings: Dict[int, Layer] = {}
    for layer in graph.layers:
        if id(layer) in packings:
            layers.append(packings.pop(id(layer)))
            continue
        v, (phases, group) = layer.output, layer.phases
        readers = consumers.get(id(v), [])
        if (phases != 2 or len(layer.post) != 1 or not isinstance(layer.post[0], NegativePart)
                or v is graph.output or not readers):
            layers.append(layer)
            continue
        r = layer.post[0].channels
        slope = _negative_slope_of(readers, r) if v.channels == 2 * r and 2 * r <= n and all(
            is_packing(q) and len(q.terms) == 1 and isinstance(q.terms[0], LinearTerm)
            and q.terms[0].stride == (1, 1) and q.terms[0].kernel[0] == 1 and q.terms[0].pads[0::2] == (0, 0)
            and q.phases == (1, 0) and not q.post and q.bias is None and q.output.width == v.width
            for q in readers) else None
        if slope is None or not 0.0 < 1.0 + slope < 1.0 or slope == -0.5:
            layers.append(layer)
            continue
        side = Value(v.name + "/pairs", 2 * r, v.height, v.width // 2)
        channels = np.r_[np.arange(r, 2 * r), group + np.arange(r, 2 * r)]   # each phase's channels, not their negative parts
        layers.append(dataclasses.replace(
            layer, name=layer.name + "/pairs", output=side, phases=(1, 0), post=[LeakyRelu(1.0 + slope)],
            bias=None if layer.bias is None else layer.bias[channels],
            terms=[dataclasses.replace(t, weight=t.weight[channels]) for t in layer.terms if isinstance(t, LinearTerm)]))
        for q in readers:
            t = q.terms[0]
            assert isinstance(t, LinearTerm)   # checked above
            out, left = q.output.channels, t.pads[1]
            group2 = -(-out // n) * n
            shifts = [(k, m, k + m - left) for k in range(2) for m in range(t.kernel[1])]   # pixel 2j + k, its tap m
            low, high = min(s // 2 for _, _, s in shifts), max(s // 2 for _, _, s in shifts)
            weight = np.zeros((2 * group2, 2 * r, 1, high - low + 1))
            for k, m, shift in shifts:   # column 2j + shift: pixel shift % 2 of side's column j + shift // 2
                weight[k * group2:k * group2 + out, shift % 2 * r:(shift % 2 + 1) * r, 0, shift // 2 - low] += \
                    t.weight[:, r:, 0, m]
            packings[id(q)] = dataclasses.replace(
                q, terms=[LinearTerm(side, weight, (1, 1), (0, -low, 0, high), t.macs)], phases=(2, group2))
    return dataclasses.replace(graph, layers=layers)


@dataclasses.dataclass(frozen=True)
class Split:
    """A value split for its packing layers: the channels before the packed ones (None when
    there are none), the value the packing layers read instead, how many channels before, the
    post-ops the packing layers take over, for tap partial sums their groups and the group of a
    pixel's own column (else None), and for negative parts the slope less one (else None)."""

    before: Optional[Value]
    packed: Value
    kept: int
    post: List[PostOp]
    taps: Optional[Tuple[int, int]] = None
    slope: Optional[float] = None   # negative parts: the packing weighs them so (_negative_parts)


def _keeps_zero(op: PostOp) -> bool:
    return isinstance(op, (Relu, LeakyRelu)) or (isinstance(op, Clip) and op.low <= 0 <= op.high)


def _post_ops_after_packing(graph: Graph, n: int) -> Graph:
    """Each layer whose last channels only packing layers read, split (module docstring): the
    channels before keep its post-ops, the packed ones become tap partial sums (_tap_partials)
    where that saves MatMul passes, else, where the packings are strided, a layer of their own
    without post-ops, and the packing layers take the post-ops over; else their negative parts
    beside them (_negative_parts), and the packing layers' weights make the activation."""
    consumers = graph.consumers()
    layers: List[Layer] = []
    renamed: Dict[int, Split] = {}
    for layer in graph.layers:
        layer = _reading_split(layer, renamed)
        x = layer.output
        readers = consumers.get(id(x), [])
        kept = None if x is graph.output else _split_point(layer, readers)
        if kept is None:
            layers.append(layer)
            continue
        before = _channels(layer, Value(x.name, kept, x.height, x.width), slice(0, kept)) if kept else None
        partials = _tap_partials(layer, kept, readers, n)
        slope = None
        if partials is not None:
            last, taps = partials
        elif layer.post and all(r.output.height * r.output.width < x.height * x.width
                                for r in readers if is_packing(r)):
            last = dataclasses.replace(
                _channels(layer, Value(x.name + "/last", x.channels - kept, x.height, x.width),
                          slice(kept, None)), name=layer.name + "/last", post=[])
            taps = None
        elif (slope := _negative_slope(layer, kept, n)) is not None:
            last, taps = _negative_parts(layer, kept), None
        else:
            layers.append(layer)
            continue
        layers += ([before] if before is not None else []) + [last]
        renamed[id(x)] = Split(before.output if before is not None else None, last.output, kept,
                               list(layer.post) if slope is None else [], taps, slope)
    return dataclasses.replace(graph, layers=layers)


def _split_point(layer: Layer, readers: List[Layer]) -> Optional[int]:
    """The channels before the packed ones where packing layers read the packed ones alone
    and can take the layer's post-ops over, else None."""
    packs = [r for r in readers if is_packing(r)]
    linear = [t for r in readers for t in r.terms if isinstance(t, LinearTerm)]
    if (not packs or not all(_keeps_zero(op) for op in layer.post)
            or not all(isinstance(t, LinearTerm) for t in layer.terms)
            or len(linear) != sum(len(r.terms) for r in readers)):
        return None
    kept = min(int(np.flatnonzero(t.weight.any(axis=(0, 2, 3)))[0])
               for r in packs for t in r.terms if isinstance(t, LinearTerm))
    others = [t for r in readers if r not in packs for t in r.terms if isinstance(t, LinearTerm)]
    if any(t.weight[:, kept:].any() for t in others) or (kept == 0 and others):
        return None
    return kept


def _tap_partials(layer: Layer, kept: int, readers: List[Layer], n: int
                  ) -> Optional[Tuple[Layer, Tuple[int, int]]]:
    """The layer making the packed channels' tap partial sums, and (groups, own group), where
    that is exact here and saves MatMul passes; else None.

    A convolution of stride 1 across columns that keeps the width sums, for output column j,
    kernel column m of each term at input column j + m - left. Grouping the r packed output
    channels by g = m - left + L (L the largest left pad), Q(u) holds in lanes (g, c) what input
    column u gives output column u - g + L: each term reads its input at the pixel itself, kh
    passes instead of kh x kw, and the packing layer sums the groups as it lays columns side
    by side (kw + G - 1 columns instead of kw), the bias with the own column's group. A group
    whose output column is outside the map is masked to 0 (the packing's zero padding)."""
    x = layer.output
    terms = [t for t in layer.terms if isinstance(t, LinearTerm)]
    if any(t.stride[1] != 1 or t.pads[1] + t.pads[3] != t.kernel[1] - 1 or t.input.width != x.width
           for t in terms):
        return None
    r = x.channels - kept
    big_l = max(t.pads[1] for t in terms)
    groups = max(t.kernel[1] - t.pads[1] for t in terms) + big_l
    if r * groups > n:
        return None
    packs = [t for p in readers if is_packing(p) for t in p.terms if isinstance(t, LinearTerm)]
    pixels = x.height * x.width
    before = after = 0
    for t in terms:
        blocks = [cb for cb in range(-(-t.input.channels // n)) if t.weight[kept:, cb * n:(cb + 1) * n].any()]
        taps = int(np.count_nonzero(t.weight[kept:].any(axis=(0, 1))))
        before += taps * len(blocks) * pixels
        after += t.kernel[0] * len(blocks) * pixels
    for t in packs:
        ho, wo = t.output_size()
        before += t.kernel[1] * ho * wo
        after += (t.kernel[1] + groups - 1) * ho * wo
    if after >= before:
        return None
    out = Value(x.name + "/taps", r * groups, x.height, x.width)
    new_terms: List[Term] = []
    for t in terms:
        weight = np.zeros((r * groups, t.weight.shape[1], t.kernel[0], 1))
        for m in range(t.kernel[1]):
            g = m - t.pads[1] + big_l
            weight[g * r:(g + 1) * r, :, :, 0] += t.weight[kept:, :, :, m]
        new_terms.append(LinearTerm(t.input, weight, (t.stride[0], 1), (t.pads[0], 0, t.pads[2], 0),
                                    round(t.macs * r / x.channels)))
    bias = None
    if layer.bias is not None:
        bias = np.zeros(r * groups)
        bias[big_l * r:(big_l + 1) * r] = layer.bias[kept:]
    keep = np.ones((r * groups, x.width), bool)
    for g in range(groups):
        for u in range(x.width):
            keep[g * r:(g + 1) * r, u] = 0 <= u - g + big_l < x.width
    post: List[PostOp] = [] if keep.all() else [Mask(keep)]
    return (Layer(layer.name + "/taps", out, new_terms, bias, post, layer.nodes, layer.ops),
            (groups, big_l))


def _negative_slope(layer: Layer, kept: int, n: int) -> Optional[float]:
    """alpha - 1 where the packed channels go to their packing as their negative parts beside
    them (_negative_parts): a LeakyReLU of slope in (0, 1) but 1/2 their only post-op (three
    SIMDs a vector, where a ReLU takes one: quantize.QLeakyRelu.slope_below_one), and twice
    them in a block."""
    if len(layer.post) != 1 or 2 * (layer.output.channels - kept) > n:
        return None
    op = layer.post[0]
    if isinstance(op, LeakyRelu) and 0.0 < op.alpha < 1.0 and op.alpha != 0.5:
        return op.alpha - 1.0
    return None


def _negative_parts(layer: Layer, kept: int) -> Layer:
    """The packed channels' layer under a packing of stride 1 (where the post-ops cannot go to
    fewer vectors): each channel twice, its negative part min(x, 0) first (one SIMD a vector, a
    Min with a lane vector, instead of the activation's three). The packing weighs the negative
    part by alpha - 1 and the channel by 1 in that lane order: its MAC chain rounds the product
    first, then adds the channel, as the compiler's LeakyReLU does (backend._post), so the
    values are the activation's, bit for bit."""
    x = layer.output
    r = x.channels - kept
    twice = np.r_[np.arange(kept, x.channels), np.arange(kept, x.channels)]
    return dataclasses.replace(
        layer, name=layer.name + "/negative", output=Value(x.name + "/negative", 2 * r, x.height, x.width),
        bias=None if layer.bias is None else layer.bias[twice],
        terms=[dataclasses.replace(t, weight=t.weight[twice], macs=round(t.macs * r / x.channels))
               for t in layer.terms if isinstance(t, LinearTerm)],
        post=[NegativePart(r)])


def _channels(layer: Layer, output: Value, channels: slice) -> Layer:
    """The part of a layer of linear terms that computes `channels` of its output."""
    share = output.channels / layer.output.channels
    return dataclasses.replace(
        layer, output=output, bias=None if layer.bias is None else layer.bias[channels],
        terms=[dataclasses.replace(t, weight=t.weight[channels], macs=round(t.macs * share))
               for t in layer.terms if isinstance(t, LinearTerm)])


def _reading_split(layer: Layer, renamed: Dict[int, Split]) -> Layer:
    """`layer` reading the parts of a split value instead of the value (see above)."""
    terms: List = []
    post = list(layer.post)
    for term in layer.terms:
        if id(term.input) not in renamed:
            terms.append(term)
            continue
        split = renamed[id(term.input)]
        assert isinstance(term, LinearTerm)   # _split_point: only linear terms read it
        if not is_packing(layer):
            assert split.before is not None   # _split_point: no other reader without channels before
            terms.append(dataclasses.replace(term, input=split.before, weight=term.weight[:, :split.kept]))
            continue
        post = list(split.post) + post
        if split.slope is not None:   # the negative parts weighed by the slope less one, first
            part = term.weight[:, split.kept:]
            terms.append(dataclasses.replace(term, input=split.packed,
                                             weight=np.concatenate([split.slope * part, part], axis=1)))
            continue
        if split.taps is None:
            terms.append(dataclasses.replace(term, input=split.packed, weight=term.weight[:, split.kept:]))
            continue
        groups, big_l = split.taps
        kw = term.kernel[1]
        r = split.packed.channels // groups
        weight = np.zeros((r * kw, r * groups, 1, kw + groups - 1))
        for k in range(kw):
            for g in range(groups):
                weight[k * r:(k + 1) * r, g * r:(g + 1) * r, 0, k + g] = np.eye(r)
        top, left, bottom, right = term.pads
        terms.append(LinearTerm(split.packed, weight, term.stride,
                                (top, left + big_l, bottom, right + groups - 1 - big_l)))
    return dataclasses.replace(layer, terms=terms, post=post) if terms != layer.terms else layer
