"""How tensors sit in DRAM0: Tensil's "vars" layout, the one home of the reshaping the driver,
the emulator backend and the tests share.

A 4-D ONNX tensor NCHW is stored NHWC with the channels split into ceil(C/N) vectors of N
lanes per pixel, the padding lanes zero: vector ((n*H + h)*W + w)*ceil(C/N) + c // N, lane
c % N (facts §4.3, Tensil's VarsDimensions). A 2-D tensor [B, D] is ceil(D/N) vectors a
row, a 1-D tensor ceil(D/N) vectors. PEFSL's demonstrator writes 3 lanes a pixel without
padding (a latent bug, facts §9.4); this layout pads, as the compiler's program expects.

An input the host packs (the compiler's default where it applies, `--tensil-input` for
Tensil's layout instead; our own driver only): a narrow
image whose kernel columns the first convolution reads side by side is given to the program
with those columns already in its lanes, P[n, dc*C + c, h, w] = x[n, c, h, w + dc - left]
(zero outside the image) for dc in 0..kw-1, so the accelerator skips the packing layer it
would otherwise run; with a step S, P has a pixel every S columns, P[n, dc*C + c, h, j] =
x[n, c, h, j*S + dc - left], one vector for S pixels' columns (the program computes those
pixels as column phases). The `.tmodel` names such an input `<name>/columns(kw=K,left=L)`
(`<name>/columns(kw=K,left=L,step=S)`): the
caller still gives `<name>` in ONNX layout (`input_vectors`), and Tensil's own driver, which
would write the image unpacked, finds no input of that name and refuses it.
"""

import re
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = ["ColumnPacking", "column_packing", "from_vectors", "given_name", "input_vector_count", "input_vectors",
           "pack_columns", "packed_input_name", "to_vectors", "vector_count"]


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


class ColumnPacking(NamedTuple):
    """An input the host packs: the ONNX input `name`, `kw` columns side by side from `left`
    columns before each pixel."""

    name: str
    kw: int
    left: int
    step: int = 1


_PACKED = re.compile(r"^(?P<name>.+)/columns\(kw=(?P<kw>[0-9]{1,2}),left=(?P<left>[0-9]{1,2})"
                     r"(,step=(?P<step>[0-9]{1,2}))?\)$")


def packed_input_name(name: str, kw: int, left: int, step: int = 1) -> str:
    if step == 1:
        return "%s/columns(kw=%d,left=%d)" % (name, kw, left)
    return "%s/columns(kw=%d,left=%d,step=%d)" % (name, kw, left, step)


def column_packing(var_name: str) -> Optional[ColumnPacking]:
    """The packing a `.tmodel` input's name asks of the host, or None (Tensil's plain layout)."""
    match = _PACKED.match(var_name)
    if match is None:
        return None
    kw, left = int(match.group("kw")), int(match.group("left"))
    step = int(match.group("step") or 1)
    if not 1 <= kw or not 0 <= left < kw or not 1 <= step <= kw:
        raise ValueError("input %r: a packing of %d columns from %d before the pixel%s is not one" % (
            var_name, kw, left, ", every %d," % step if step != 1 else ""))
    return ColumnPacking(match.group("name"), kw, left, step)


def pack_columns(array: np.ndarray, kw: int, left: int, step: int = 1) -> np.ndarray:
    """(B, C, H, W) -> (B, kw*C, H, ceil(W/step)): channel dc*C + c of pixel (h, j) is channel c
    of pixel (h, j*step + dc - left), zero where that lies outside the image."""
    array = np.asarray(array)
    if array.ndim != 4:
        raise ValueError("a packed input is a 4-D (NCHW) tensor, got shape %s" % (array.shape,))
    b, c, h, w = array.shape
    padded = np.zeros((b, c, h, w + kw + step), dtype=array.dtype)
    padded[..., left:left + w] = array   # column u of the image at left + u
    width = -(-w // step)
    packed = np.empty((b, kw * c, h, width), dtype=array.dtype)
    for dc in range(kw):   # P's column j reads padded column j*step + dc
        packed[:, dc * c:(dc + 1) * c] = padded[..., dc:dc + step * (width - 1) + 1:step]
    return packed


def given_name(var_name: str) -> str:
    """The name callers give a `.tmodel` input by: the ONNX input's, also where the host packs it."""
    packing = column_packing(var_name)
    return var_name if packing is None else packing.name


def _packing_for(var_name: str, shape: Sequence[int]) -> Optional[ColumnPacking]:
    """The packing `var_name` asks of a tensor of `shape`, which must then be an image; else None."""
    packing = column_packing(var_name)
    if packing is not None and len(shape) != 4:
        raise ValueError("input %r is a packed image: a 4-D (NCHW) tensor, got shape %s"
                         % (var_name, tuple(shape)))
    return packing


def input_vector_count(var_name: str, shape: Sequence[int], array_size: int) -> int:
    """Vectors the `.tmodel` input `var_name` takes for a tensor of ONNX `shape`."""
    shape = _check_shape(shape)
    packing = _packing_for(var_name, shape)
    if packing is not None:
        shape = (shape[0], shape[1] * packing.kw, shape[2], -(-shape[3] // packing.step))
    return vector_count(shape, array_size)


def input_vectors(var_name: str, array: np.ndarray, array_size: int) -> np.ndarray:
    """A tensor in ONNX layout -> the vectors of the `.tmodel` input `var_name`: packed by the
    host where the name says so (`pack_columns`), then Tensil's layout (`to_vectors`)."""
    array = np.asarray(array)
    packing = _packing_for(var_name, array.shape)
    if packing is None:
        return to_vectors(array, array_size)
    return to_vectors(pack_columns(array, packing.kw, packing.left, packing.step), array_size)
