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
"""

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

from .graph import Graph, Layer, LinearTerm, Value

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
    return dataclasses.replace(graph, layers=layers) if changed else graph
