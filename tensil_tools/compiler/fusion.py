"""Fusion of the lowered layers: `fuse` folds BatchNormalization and per-channel affine ops into
the layer before them, inlines single-use linear layers into the Add that consumes them (a
residual block becomes one layer: both convolutions accumulate into the same accumulators),
appends activations to the layer they follow and folds zero Pads into the convolutions that
read them.
"""

from typing import Any, Callable, Dict, List, Sequence, cast

import numpy as np

from .graph import (
    AddTerm,
    Graph,
    Layer,
    LinearTerm,
    Value,
)

__all__ = ["fuse"]


# --------------------------------------------------------------------------- fusion

def _is_diagonal_1x1(term: Any) -> bool:
    if not isinstance(term, LinearTerm) or term.kernel != (1, 1) or term.stride != (1, 1) \
            or any(term.pads) or term.weight.shape[0] != term.weight.shape[1]:
        return False
    square = term.weight[:, :, 0, 0]
    return bool(np.all(square == np.diag(np.diag(square))))


def _is_identity(term: Any) -> bool:
    return _is_diagonal_1x1(term) and bool(np.all(np.diag(term.weight[:, :, 0, 0]) == 1.0))


def _single_use(graph: Graph, value: Value, consumers: Dict[int, List[Layer]]) -> bool:
    users = consumers.get(id(value), [])
    uses = sum(1 for layer in users for t in layer.terms if t.input is value)
    return uses == 1 and value is not graph.output


def _rename(graph: Graph, old: Value, new: Value) -> None:
    for layer in graph.layers:
        for term in layer.terms:
            if term.input is old:
                term.input = new


def _fold_affine(graph: Graph) -> bool:
    """A per-channel affine 1x1 layer (BatchNormalization, Mul/Add by a constant) after a
    linear layer without post-ops becomes part of it."""
    producer, consumers = graph.producer(), graph.consumers()
    for layer in graph.layers:
        if len(layer.terms) != 1 or layer.post or not _is_diagonal_1x1(layer.terms[0]):
            continue
        source = layer.terms[0].input
        before = producer.get(id(source))
        if before is None or before.post or before.kind == "max" or not _single_use(
                graph, source, consumers):
            continue
        scale = np.diag(cast(LinearTerm, layer.terms[0]).weight[:, :, 0, 0])
        if before.kind != "linear" or any(isinstance(t, AddTerm) for t in before.terms):
            if not np.all(scale == 1.0):
                continue
        for term in before.terms:
            if isinstance(term, LinearTerm):
                term.weight = term.weight * scale[:, None, None, None]
        bias = before.bias * scale if before.bias is not None else None
        if layer.bias is not None:
            bias = layer.bias if bias is None else bias + layer.bias
        before.bias = bias
        _merge(graph, before, layer, into=before)
        return True
    return False


def _merge(graph: Graph, first: Layer, second: Layer, into: Layer) -> None:
    """`first` and `second` (which reads it) are now one layer, `into` (one of them, whose
    terms and post-ops the caller has set): it computes `second`'s output and records both
    layers' ONNX nodes and ops in order; the other leaves the graph."""
    into.output = second.output
    into.nodes = first.nodes + second.nodes
    into.ops = first.ops + second.ops
    graph.layers.remove(second if into is first else first)


def _inline_adds(graph: Graph) -> bool:
    """An AddTerm whose value a linear/add layer without post-ops computes for it alone takes
    that layer's terms (residual blocks, activations after a convolution)."""
    producer, consumers = graph.producer(), graph.consumers()
    for layer in graph.layers:
        for index, term in enumerate(layer.terms):
            if not isinstance(term, AddTerm):
                continue
            before = producer.get(id(term.input))
            if before is None or before.post or before.kind == "max" or not _single_use(
                    graph, term.input, consumers):
                continue
            layer.terms[index:index + 1] = before.terms
            if before.bias is not None:
                layer.bias = before.bias if layer.bias is None else layer.bias + before.bias
            _merge(graph, before, layer, into=layer)
            return True
    return False


def _append_activations(graph: Graph) -> bool:
    """An activation of a value computed for it alone joins the layer computing it."""
    producer, consumers = graph.producer(), graph.consumers()
    for layer in graph.layers:
        if len(layer.terms) != 1 or not isinstance(layer.terms[0], AddTerm) or \
                layer.bias is not None or not layer.post:
            continue
        before = producer.get(id(layer.terms[0].input))
        if before is None or not _single_use(graph, layer.terms[0].input, consumers):
            continue
        before.post += layer.post
        _merge(graph, before, layer, into=before)
        return True
    return False


def _fold_pads(graph: Graph) -> bool:
    """A zero Pad read only by convolutions becomes their padding."""
    consumers = graph.consumers()
    for layer in graph.layers:
        if len(layer.terms) != 1 or layer.post or layer.bias is not None or not _is_pad(layer):
            continue
        users = consumers.get(id(layer.output), [])
        terms = [t for u in users for t in u.terms if t.input is layer.output]
        reads = [t for t in terms if isinstance(t, LinearTerm)]
        if layer.output is graph.output or not reads or len(reads) != len(terms):
            continue
        pad = cast(LinearTerm, layer.terms[0])
        for term in reads:
            term.input = pad.input
            top, left, bottom, right = (a + b for a, b in zip(term.pads, pad.pads))
            term.pads = (top, left, bottom, right)
        for user in users:
            user.nodes = layer.nodes + user.nodes
            user.ops = layer.ops + user.ops
        graph.layers.remove(layer)
        return True
    return False


def _is_pad(layer: Layer) -> bool:
    term = layer.terms[0]
    if not isinstance(term, LinearTerm) or term.kernel != (1, 1) or term.stride != (1, 1) \
            or term.weight.shape[0] != term.weight.shape[1]:
        return False
    return bool(np.all(term.weight[:, :, 0, 0] == np.eye(term.weight.shape[0])))


def _drop_dead(graph: Graph) -> bool:
    consumers = graph.consumers()
    for layer in graph.layers:
        if layer.output is not graph.output and not consumers.get(id(layer.output)):
            graph.layers.remove(layer)
            return True
    return False


def fuse(graph: Graph) -> Graph:
    """Apply the fusions until none applies (in place; returns the graph)."""
    rules: Sequence[Callable[[Graph], bool]] = (_drop_dead, _fold_affine, _fold_pads,
                                                _inline_adds, _append_activations)
    while any(rule(graph) for rule in rules):
        pass
    for layer in graph.layers:
        pairs = sorted(zip(layer.nodes, layer.ops), key=lambda p: graph.node_order.get(p[0], 0))
        layer.nodes, layer.ops = [p[0] for p in pairs], [p[1] for p in pairs]
        layer.name = layer.nodes[0]
    return graph
