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

Where P has fewer pixels than its input (a strided convolution reads it) and only packing
layers read the packed channels, the layer making them is split in two (the channel blocks
before them, its post-ops included; the packed channels without post-ops) and the post-ops
of the packed channels run on P instead: an elementwise op that keeps 0 commutes with a 0/1
selection, so the values are the same, on fewer vectors (ResNet-9: blocks.0/conv2's last 4
channels, 1,024 vectors of LeakyReLU, become 512 vectors of its stride-2 packing's).
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from .graph import Clip, Graph, Layer, LeakyRelu, LinearTerm, PostOp, Relu, Value

__all__ = ["pack_columns"]

BENEFIT = 1.25   # MatMul vectors saved / vectors the packing costs, at least


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
                  [LinearTerm(x, select, (1, sw), (0, left, 0, right))], ops=["Pack"])
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
    return _post_ops_after_packing(dataclasses.replace(graph, layers=layers)) if changed else graph


# a split value: the channels before the packed ones, the packed ones, how many before, and
# the post-ops its packing layers take over
Split = Tuple[Value, Value, int, List[PostOp]]


def _keeps_zero(op: PostOp) -> bool:
    return isinstance(op, (Relu, LeakyRelu)) or (isinstance(op, Clip) and op.low <= 0 <= op.high)


def _post_ops_after_packing(graph: Graph) -> Graph:
    """Each layer whose last channels only strided packing layers read, split in two: the
    channels before (with its post-ops) and those (without); the post-ops move to the packing
    layers (module docstring)."""
    consumers = graph.consumers()
    layers: List[Layer] = []
    renamed: Dict[int, Split] = {}
    for layer in graph.layers:
        layer = _reading_split(layer, renamed)
        x = layer.output
        kept = None if x is graph.output else _split_point(layer, consumers.get(id(x), []))
        if kept is None:
            layers.append(layer)
            continue
        before = _channels(layer, Value(x.name, kept, x.height, x.width), slice(0, kept))
        last = _channels(layer, Value(x.name + "/last", x.channels - kept, x.height, x.width),
                         slice(kept, None))
        layers += [before, dataclasses.replace(last, name=layer.name + "/last", post=[])]
        renamed[id(x)] = (before.output, last.output, kept, layer.post)
    return dataclasses.replace(graph, layers=layers)


def _split_point(layer: Layer, readers: List[Layer]) -> Optional[int]:
    """The channels before the packed ones where the layer's post-ops can move to its strided
    packing layers (_post_ops_after_packing), else None."""
    x = layer.output
    packs = [r for r in readers if r.ops == ["Pack"]]
    linear = [t for r in readers for t in r.terms if isinstance(t, LinearTerm)]
    if (not packs or not layer.post or not all(_keeps_zero(op) for op in layer.post)
            or not all(isinstance(t, LinearTerm) for t in layer.terms)
            or len(linear) != sum(len(r.terms) for r in readers)
            or any(r.output.height * r.output.width >= x.height * x.width for r in packs)):
        return None
    kept = min(int(np.flatnonzero(t.weight.any(axis=(0, 2, 3)))[0])
               for r in packs for t in r.terms if isinstance(t, LinearTerm))
    others = [t for r in readers if r not in packs for t in r.terms if isinstance(t, LinearTerm)]
    if kept == 0 or any(t.weight[:, kept:].any() for t in others):
        return None
    return kept


def _channels(layer: Layer, output: Value, channels: slice) -> Layer:
    """The part of a layer of linear terms that computes `channels` of its output."""
    share = output.channels / layer.output.channels
    return dataclasses.replace(
        layer, output=output, bias=None if layer.bias is None else layer.bias[channels],
        terms=[dataclasses.replace(t, weight=t.weight[channels], macs=round(t.macs * share))
               for t in layer.terms if isinstance(t, LinearTerm)])


def _reading_split(layer: Layer, renamed: Dict[int, Split]) -> Layer:
    """`layer` reading the two parts of a split value instead of the value (see above)."""
    terms: List = []
    post = list(layer.post)
    for term in layer.terms:
        if id(term.input) not in renamed:
            terms.append(term)
            continue
        before, last, kept, moved = renamed[id(term.input)]
        assert isinstance(term, LinearTerm)   # _split_point: only linear terms read it
        if layer.ops == ["Pack"]:
            terms.append(dataclasses.replace(term, input=last, weight=term.weight[:, kept:]))
            post = list(moved) + post
        else:
            terms.append(dataclasses.replace(term, input=before, weight=term.weight[:, :kept]))
    return dataclasses.replace(layer, terms=terms, post=post) if terms != layer.terms else layer
