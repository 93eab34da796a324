"""A plain numpy fixed-point reference of a quantized graph, independent of any schedule.

It computes, for a batch of images, every layer the way `quantize` defines it: channel
blocks of N lanes (padding lanes included), each MatOp a MAC chain over the input lanes in
order (products rounded half to even, the partial sum saturated at every step, via
`tensil.fixed.mac`), accumulations saturating, pads read as zeros, max pools over the valid
window, post-ops with the ALU's arithmetic. The compiled program on the emulator (and on the
RTL) must give exactly these numbers; onnxruntime gives the float numbers they approximate.
"""

from typing import Dict, Optional

import numpy as np

from ..fixed import FixedFormat, add, from_float_saturating, mac, saturate, to_float
from .graph import LinearTerm, Value
from .quantize import CopyOp, QClip, QGraph, QLayer, QLeakyRelu, QRelu, QScale, blocks_of

__all__ = ["blocked", "mac_chain", "reference", "reference_features", "to_vectors"]


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


def mac_chain(x: np.ndarray, block: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """x (..., N) through one weight block ((N+1, N): bias row, then input lanes)."""
    n = block.shape[1]
    p = np.broadcast_to(block[0], x.shape[:-1] + (n,)).astype(np.int64)
    for j in range(n):
        if block[j + 1].any():
            p = mac(x[..., j:j + 1], block[j + 1], p, fmt)
    return p


def _window(source: np.ndarray, term: LinearTerm, tap: tuple, cib: int, out_hw: tuple
            ) -> np.ndarray:
    """The input pixels one kernel tap reads for every output pixel: (B, Ho, Wo, N)."""
    t, left, bottom, right = term.pads
    plane = np.pad(source[:, cib], ((0, 0), (t, bottom), (left, right), (0, 0)))
    sh, sw = term.stride
    ho, wo = out_hw
    k, m = tap
    return plane[:, k:k + sh * (ho - 1) + 1:sh, m:m + sw * (wo - 1) + 1:sw]


def _linear_block(q: QLayer, cob: int, env: Dict[int, np.ndarray], fmt: FixedFormat,
                  batch: int, out_hw: tuple) -> np.ndarray:
    n = q.blocks[0].shape[1] if q.blocks else None
    acc: Optional[np.ndarray] = None
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
                part = mac_chain(_window(source, term, op.tap, op.cib, out_hw), block, fmt)
        acc = part.copy() if acc is None else add(acc, part, fmt)
    assert acc is not None, "layer %s block %d has no operation" % (q.name, cob)
    return acc


def _max_layer(q: QLayer, env: Dict[int, np.ndarray]) -> np.ndarray:
    term = q.max_term
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
    return x


def reference(qgraph: QGraph, x: np.ndarray, values: Optional[Dict[int, np.ndarray]] = None
              ) -> np.ndarray:
    """Raw output (B, Cb, Ho, Wo, N) of a batch x (B, C, H, W) (or one image (C, H, W))."""
    fmt, n = qgraph.fmt, qgraph.n
    graph = qgraph.graph
    x = np.asarray(x, np.float64)
    if x.ndim == 3 or x.size == graph.input.channels * graph.input.height * graph.input.width:
        x = x.reshape((1,) + graph.input.shape)
    raw, _ = from_float_saturating(x, fmt)
    env: Dict[int, np.ndarray] = {id(graph.input): blocked(raw, n)}
    for q in qgraph.layers:
        out: Value = q.layer.output
        if q.max_term is not None:
            result = _max_layer(q, env)
        else:
            result = np.stack([_linear_block(q, c, env, fmt, x.shape[0], (out.height, out.width))
                               for c in range(blocks_of(out.channels, n))], axis=1)
        env[id(out)] = saturate(_post(result, q, fmt), fmt)
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
