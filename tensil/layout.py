"""How tensors sit in DRAM0: Tensil's "vars" layout, the one home of the reshaping the driver,
the emulator backend and the tests share.

A 4-D ONNX tensor NCHW is stored NHWC with the channels split into ceil(C/N) vectors of N
lanes per pixel, the padding lanes zero: vector ((n*H + h)*W + w)*ceil(C/N) + c // N, lane
c % N (facts §4.3, Tensil's VarsDimensions). A 2-D tensor [B, D] is ceil(D/N) vectors a
row, a 1-D tensor ceil(D/N) vectors. PEFSL's demonstrator writes 3 lanes a pixel without
padding (a latent bug, facts §9.4); this layout pads, as the compiler's program expects.
"""

from typing import Sequence, Tuple

import numpy as np

__all__ = ["from_vectors", "to_vectors", "vector_count"]


def _check_shape(shape: Sequence[int]) -> Tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    if not 1 <= len(shape) <= 4 or len(shape) == 3 or any(d < 1 for d in shape):
        raise ValueError("a Tensil var is a 1-D, 2-D or 4-D (NCHW) tensor of positive "
                         "dimensions, got shape %s" % (shape,))
    return shape


def vector_count(shape: Sequence[int], array_size: int) -> int:
    """Vectors of `array_size` lanes that a tensor of `shape` takes in DRAM0."""
    shape = _check_shape(shape)
    blocks = -(-shape[1 if len(shape) == 4 else -1] // array_size)
    if len(shape) == 4:
        n, _, h, w = shape
        return n * h * w * blocks
    return (shape[0] if len(shape) == 2 else 1) * blocks


def to_vectors(array: np.ndarray, array_size: int) -> np.ndarray:
    """A tensor in ONNX layout -> (vectors, array_size) in Tensil's layout, zero padded."""
    array = np.asarray(array)
    shape = _check_shape(array.shape)
    if len(shape) == 4:
        array = array.transpose(0, 2, 3, 1)          # NCHW -> NHWC: channels last
    elif len(shape) == 1:
        array = array.reshape(1, -1)
    channels = array.shape[-1]
    padded = -(-channels // array_size) * array_size
    out = np.zeros(array.shape[:-1] + (padded,), dtype=array.dtype)
    out[..., :channels] = array
    return out.reshape(-1, array_size)


def from_vectors(values: np.ndarray, shape: Sequence[int], array_size: int) -> np.ndarray:
    """(vectors, array_size) values, or their flat concatenation, -> the tensor of `shape`."""
    shape = _check_shape(shape)
    flat = np.asarray(values).reshape(-1)
    expected = vector_count(shape, array_size) * array_size
    if flat.size != expected:
        raise ValueError("%d values do not hold a tensor of shape %s: its %d vectors of %d lanes "
                         "are %d values" % (flat.size, shape, expected // array_size, array_size,
                                            expected))
    channels = shape[1] if len(shape) == 4 else shape[-1]
    padded = -(-channels // array_size) * array_size
    if len(shape) == 4:
        n, c, h, w = shape
        return flat.reshape(n, h, w, padded)[..., :c].transpose(0, 3, 1, 2)
    rows = shape[0] if len(shape) == 2 else 1
    return flat.reshape(rows, padded)[:, :channels].reshape(shape)
