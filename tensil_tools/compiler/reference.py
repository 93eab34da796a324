"""A plain numpy fixed-point reference of a quantized graph, independent of any schedule.

It computes, for a batch of images, every layer the way `quantize` defines it: channel
blocks of N lanes (padding lanes included), each MatOp a MAC chain over the input lanes in
order (products rounded half to even, the partial sum saturated at every step; the chain is
written out here, independently of the emulator's vectorised kernel), accumulations
saturating, pads read as zeros, max pools over the valid
window, post-ops with the ALU's arithmetic. The compiled program on the emulator (and on the
RTL) must give exactly these numbers; onnxruntime gives the float numbers they approximate.
"""

from typing import Dict, Optional, cast

import numpy as np

from tensil.fixed import FixedFormat, add, from_float_saturating, mac, saturate, to_float

from .graph import (
    AddTerm,
    Clip,
    LeakyRelu,
    LinearTerm,
    MaxTerm,
    NegativePart,
    Scale,
    Value,
    evaluate_layer,
)
from .quantize import (
    CopyOp,
    QClip,
    QGraph,
    QLayer,
    QLeakyRelu,
    QMask,
    QNegativePart,
    QRelu,
    QScale,
    blocks_of,
)

__all__ = ["blocked", "error_bound", "error_tolerance", "mac_chain", "reference", "reference_features", "to_vectors"]


def blocked(x: np.ndarray, n: int) -> np.ndarray:
    """(B, C, H, W) -> (B, Cb, H, W, N), padding lanes zero."""
    b, c, h, w = x.shape
    cb = blocks_of(c, n)
    out = np.zeros((b, cb * n, h, w), dtype=x.dtype)
    out[:, :c] = x
    return out.reshape(b, cb, n, h, w).transpose(0, 1, 3, 4, 2)


def to_vectors(raw: np.ndarray) -> np.ndarray:
    """(B, Cb, H, W, N) -> (B, H*W*Cb, N): Tensil's NHWC vector layout."""
    b, cb, h, w, n = raw.shape
    return raw.transpose(0, 2, 3, 1, 4).reshape(b, h * w * cb, n)


def _mac(x: np.ndarray, w: np.ndarray, p: np.ndarray, fmt: FixedFormat, dtype: type
         ) -> np.ndarray:
    """saturate(round_half_even((x*w + (p << f)) / 2^f)), written out on its own."""
    f = fmt.frac_bits
    m = x * w.astype(dtype) + (p << f)
    m += (1 << (f - 1)) - 1 + ((m >> f) & 1)
    m >>= f
    np.minimum(m, fmt.max_raw, out=m)
    np.maximum(m, fmt.min_raw, out=m)
    return m


def mac_chain(x: np.ndarray, block: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """x (..., N) through one weight block ((N+1, N): bias row, then input lanes): for each
    input lane j in order, p = mac(x_j, w_j, p), starting from the bias row."""
    n = block.shape[1]
    # x*w + (p << f) fits 32 bits for formats of at most 16 bits
    dtype = np.int32 if fmt.width <= 16 else np.int64
    p = np.broadcast_to(block[0], x.shape[:-1] + (n,)).astype(dtype)
    x = x.astype(dtype)
    for j in range(n):
        if block[j + 1].any():
            p = _mac(x[..., j:j + 1], block[j + 1], p, fmt, dtype)
    return p.astype(np.int64)


def _padded(source: np.ndarray, term: LinearTerm, cib: int, cache: Dict) -> np.ndarray:
    key = (id(term), cib)
    if key not in cache:
        t, left, bottom, right = term.pads
        cache[key] = np.pad(source[:, cib], ((0, 0), (t, bottom), (left, right), (0, 0)))
    return cache[key]


def _window(plane: np.ndarray, term: LinearTerm, tap: tuple, out_hw: tuple) -> np.ndarray:
    """The input pixels one kernel tap reads for every output pixel: (B, Ho, Wo, N)."""
    sh, sw = term.stride
    ho, wo = out_hw
    k, m = tap
    return plane[:, k:k + sh * (ho - 1) + 1:sh, m:m + sw * (wo - 1) + 1:sw]


def _linear_block(q: QLayer, cob: int, env: Dict[int, np.ndarray], fmt: FixedFormat,
                  batch: int, out_hw: tuple) -> np.ndarray:
    n = q.blocks[0].shape[1] if q.blocks else None
    acc: Optional[np.ndarray] = None
    planes: Dict = {}
    for op in q.ops[cob]:
        term = q.layer.terms[op.term]
        source = env[id(term.input)]
        if isinstance(op, CopyOp):
            part = source[:, cob]
        else:
            block = q.blocks[op.block]
            if op.zeroes:
                part = np.broadcast_to(block[0], (batch,) + out_hw + (n,)).astype(np.int64)
            else:
                linear = cast(LinearTerm, term)   # MatOps are a linear term's
                plane = _padded(source, linear, op.cib, planes)
                part = mac_chain(_window(plane, linear, op.tap, out_hw), block, fmt)
        acc = part.copy() if acc is None else add(acc, part, fmt)
    assert acc is not None, "layer %s block %d has no operation" % (q.name, cob)
    return acc


def _max_layer(q: QLayer, env: Dict[int, np.ndarray]) -> np.ndarray:
    term = q.max_term
    assert term is not None   # called for max layers only
    source = env[id(term.input)]
    ho, wo = term.output_size()
    out = np.empty(source.shape[:2] + (ho, wo, source.shape[-1]), dtype=np.int64)
    for i in range(ho):
        for j in range(wo):
            taps = term.taps(i, j)
            out[:, :, i, j] = np.max(np.stack([source[:, :, r, c] for r, c in taps]), axis=0)
    return out


def _post(x: np.ndarray, q: QLayer, fmt: FixedFormat) -> np.ndarray:
    for op in q.post:
        if isinstance(op, QRelu):
            x = np.maximum(x, 0)
        elif isinstance(op, QLeakyRelu):
            scaled = mac(x, op.alpha, 0, fmt)
            x = np.minimum(x, scaled) if op.use_min else np.maximum(x, scaled)
        elif isinstance(op, QClip):
            x = np.minimum(np.maximum(x, op.low), op.high)
        elif isinstance(op, QScale):
            x = mac(x, op.factors[None, None, :, :, None], 0, fmt)
        elif isinstance(op, QMask):   # the dropped lanes blocked as x is, padded lanes kept
            x = np.where(blocked((~op.keep)[None, :, None, :], x.shape[-1]), 0, x)
        elif isinstance(op, QNegativePart):
            negative = NegativePart(op.channels, op.period).negative(x.shape[1] * x.shape[-1])
            x = np.where(blocked(negative[None, :, None, None], x.shape[-1]), np.minimum(x, 0), x)
    return x


def _interleaved(q: QLayer, computed: np.ndarray, n: int) -> np.ndarray:
    """A layer's output blocks (B, Cb, H, W, N) from its computed ones (graph.Layer.phases)."""
    p, group = q.layer.phases
    if p == 1:
        return computed
    per = group // n   # whole blocks a phase (backend._write stores them so)
    b, _, h, w, _ = computed.shape
    out = np.empty((b, per, h, w * p, n), computed.dtype)
    for k in range(p):
        out[:, :, :, k::p] = computed[:, k * per:(k + 1) * per]
    return out


def reference(qgraph: QGraph, x: np.ndarray, values: Optional[Dict[int, np.ndarray]] = None
              ) -> np.ndarray:
    """Raw output (B, Cb, Ho, Wo, N) of a batch x (B, C, H, W) (or one image (C, H, W))."""
    fmt, n = qgraph.fmt, qgraph.n
    graph = qgraph.graph
    x = graph.input_values(x)
    raw, _ = from_float_saturating(x, fmt)
    env: Dict[int, np.ndarray] = {id(graph.input): blocked(raw, n)}
    for q in qgraph.layers:
        out: Value = q.layer.output
        if q.max_term is not None:
            result = _max_layer(q, env)
        else:
            channels, height, width = q.layer.computed
            result = np.stack([_linear_block(q, c, env, fmt, x.shape[0], (height, width))
                               for c in range(blocks_of(channels, n))], axis=1)
        env[id(out)] = _interleaved(q, saturate(_post(result, q, fmt), fmt), n)
    if values is not None:
        values.update(env)
    return env[id(graph.output)]


def reference_features(qgraph: QGraph, x: np.ndarray) -> np.ndarray:
    """Float outputs (B, C*H*W in NHWC order, padding lanes dropped) of a batch."""
    raw = reference(qgraph, x)
    out = qgraph.graph.output
    floats = to_float(raw, qgraph.fmt)[..., :]
    b, cb, h, w, n = floats.shape
    dense = floats.transpose(0, 2, 3, 1, 4).reshape(b, h, w, cb * n)[..., :out.channels]
    return dense.reshape(b, -1)


def error_bound(qgraph: QGraph, x: np.ndarray) -> float:
    """A bound of |fixed point - float| on the output for input x (C, H, W), from the
    format's resolution and the graph's depth, assuming nothing saturates.

    With u = 2^-(frac_bits+1) (half the resolution: 1/512 for FP16BP8), an input within e of
    its float value, weights rounded (each within u), every product rounded (within u): a
    linear term's output block is within ||W_co||_1 e + nnz_co u (|x|max + e) + nnz_co u, its
    bias within u; additions add the errors; max pools keep them; ReLU and Clip do not grow
    them (Clip's bounds: + u); LeakyRelu adds u (|x|max + e) + u; a Scale c gives
    c e + u |x|max + u. Errors are propagated layer by layer with the float activations'
    maxima; the result is the output's bound. Loose, but it never fails an honest program.
    """
    u = 0.5 / qgraph.fmt.one
    graph = qgraph.graph
    env = {id(graph.input): graph.input_values(x)[0]}
    errors = {id(graph.input): u}
    for q in qgraph.layers:
        layer = q.layer
        acc, out = evaluate_layer(layer, env)
        env[id(layer.output)] = out
        total = np.zeros(layer.computed[0])
        for term in layer.terms:
            e_in = errors[id(term.input)]
            if isinstance(term, LinearTerm):
                x_max = float(np.abs(env[id(term.input)]).max())
                w = term.weight.reshape(term.weight.shape[0], -1)
                nnz = np.count_nonzero(w, axis=1)
                total += np.abs(w).sum(axis=1) * e_in + nnz * u * (x_max + e_in) + nnz * u
            elif isinstance(term, (AddTerm, MaxTerm)):
                total += e_in
        if layer.bias is not None:
            total += u
        e = float(total.max())
        a_max = float(np.abs(acc).max())
        for op in layer.post:
            if isinstance(op, LeakyRelu):
                e = max(1.0, op.alpha) * e + u * (a_max + e) + u
            elif isinstance(op, Clip):
                e = e + u
            elif isinstance(op, Scale):
                e = float(op.factors.max()) * e + u * a_max + u
                a_max *= float(op.factors.max())
        errors[id(layer.output)] = e
    return errors[id(graph.output)]


def error_tolerance(qgraph: QGraph, x: np.ndarray, sigmas: float = 6.0) -> float:
    """The expected size of |fixed point - float| on the output for input x, times `sigmas`.

    The worst case of `error_bound` multiplies the l1 norms of every layer and grows far
    faster than real errors. Here every rounding (input, weights, products, constants) is
    an independent error uniform in +-u (variance u^2/3, u half the resolution), and
    variances propagate: a linear term gives sum(w^2) var_in + nnz (u^2/3) (1 + E[x^2]),
    a bias u^2/3, additions add, max pools and ReLU keep, LeakyRelu and Scale scale and
    add their own rounding. The tolerance is `sigmas` standard deviations plus u.
    """
    u = 0.5 / qgraph.fmt.one
    unit = u * u / 3.0
    graph = qgraph.graph
    env = {id(graph.input): graph.input_values(x)[0]}
    variance = {id(graph.input): unit}
    for q in qgraph.layers:
        layer = q.layer
        acc, out = evaluate_layer(layer, env)
        env[id(layer.output)] = out
        total = np.zeros(layer.computed[0])
        for term in layer.terms:
            v_in = variance[id(term.input)]
            if isinstance(term, LinearTerm):
                mean_square = float(np.mean(env[id(term.input)] ** 2))
                w = term.weight.reshape(term.weight.shape[0], -1)
                nnz = np.count_nonzero(w, axis=1)
                total += (w ** 2).sum(axis=1) * v_in + nnz * unit * (1.0 + mean_square)
            else:
                total += v_in
        if layer.bias is not None:
            total += unit
        v = float(total.max())
        a_square = float(np.mean(acc ** 2))
        for op in layer.post:
            if isinstance(op, LeakyRelu):
                v = max(1.0, op.alpha) ** 2 * v + unit * (1.0 + a_square)
            elif isinstance(op, Clip):
                v = v + unit
            elif isinstance(op, Scale):
                c = float(op.factors.max())
                v = c * c * v + unit * (1.0 + a_square)
                a_square *= c * c
        variance[id(layer.output)] = v
    return sigmas * float(np.sqrt(variance[id(graph.output)])) + u
