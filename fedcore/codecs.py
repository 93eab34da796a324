"""Array codecs of the wire format: affine quantization, bit packing, sparse
position encodings and the entropy stage.

Every function here is a pure numpy transform with an exact inverse (up to the
quantization step). The decoders take untrusted bytes: they check every size
before allocating and raise MessageError with the reason.
"""

import lzma
import math
import zlib
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError, MessageError

__all__ = [
    "ENTROPY_CODERS",
    "QuantParams",
    "AffineInput",
    "affine_quantize",
    "affine_quantize_all",
    "affine_dequantize",
    "channel_counts",
    "pack_bits",
    "unpack_bits",
    "packed_size",
    "bitmap_encode",
    "bitmap_decode",
    "delta_encode",
    "delta_decode",
    "delta_size",
    "varint_max_length",
    "entropy_compress",
    "entropy_decompress",
]

Buffer = Union[bytes, bytearray, memoryview]  # what the decoders read (a message's slices are memoryviews)
F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_TINY_64, _ZERO_64, _ONE_64 = np.float64(_F32_TINY), np.float64(0.0), np.float64(1.0)
_ZERO_32, _HALF_32 = np.float32(0.0), np.float32(0.5)
_CHECK_BEFORE_CLIP = 8192  # values: below this, clipping them all costs less than checking the channels
_ROW_BUFFER_FROM = 8192  # values: below this, setting numpy's buffer costs more than it saves


class _RowBuffer:
    """numpy's ufunc buffer no larger than a row, for ops of a (rows, size / rows) tensor with a
    per-row operand (x * scale[:, None]). With a buffer longer than a row, numpy 2 gathers several
    rows into it, copying the broadcast operand: measured 2-3x slower than one row at a time (128 x
    784 float32: 31 vs 10.5 us a multiply). numpy 1 wants a multiple of 16 from 16 on. Made by
    `_row_buffer`; a class, not a generator: its cost matters on small tensors."""

    __slots__ = ("size", "old")

    def __init__(self, size: int):
        self.size = size  # 0: numpy's buffer left as it is
        self.old = 0

    def __enter__(self) -> None:
        if self.size:
            self.old = np.setbufsize(self.size)

    def __exit__(self, *exc: Any) -> None:
        if self.size:
            np.setbufsize(self.old)


_NO_ROW_BUFFER = _RowBuffer(0)  # shared: it never changes the buffer, so it holds no state


def _row_buffer(rows: int, size: int) -> _RowBuffer:
    """The buffer for `size` values in `rows` equal rows (0 rows: no per-row operand); the shared
    one that changes nothing below _ROW_BUFFER_FROM values, where setting it costs more than it saves."""
    row = min(size // rows, 1 << 16) if rows else 0
    if size < _ROW_BUFFER_FROM or row < 16:
        return _NO_ROW_BUFFER
    return _RowBuffer(row - row % 16)


# ---------------------------------------------------------------- quantization


class QuantParams:
    """Per-channel (or per-tensor, one channel) affine parameters:
    value = (code - zero_point) * scale."""

    __slots__ = ("scale", "zero_point", "_largest")

    def __init__(self, scale: np.ndarray, zero_point: np.ndarray, largest: Optional[float] = None):
        self.scale = scale  # float32, (channels,)
        self.zero_point = zero_point  # uint8, (channels,)
        self._largest = largest

    def largest(self) -> float:
        """The largest scale (0 without channels)."""
        if self._largest is None:
            self._largest = float(self.scale.max()) if self.scale.size else 0.0
        return self._largest

    def to_bytes(self) -> bytes:
        return self.scale.astype("<f4").tobytes() + self.zero_point.astype(np.uint8).tobytes()

    @staticmethod
    def nbytes(channels: int) -> int:
        return 5 * channels

    @classmethod
    def from_bytes(cls, raw: Buffer, channels: int, bits: int) -> "QuantParams":
        if len(raw) != 5 * channels:
            raise MessageError(
                "quantization parameters: expected %d bytes, got %d" % (5 * channels, len(raw))
            )
        if not channels:
            return cls(np.zeros(0, np.float32), np.zeros(0, np.uint8), 0.0)
        scale = np.frombuffer(raw, dtype="<f4", count=channels).astype(np.float32)  # a copy: aligned
        zero_point = np.frombuffer(raw, dtype=np.uint8, offset=4 * channels)
        largest = float(np.maximum.reduce(scale))  # ufuncs, not the methods' Python wrappers
        if not 0 < np.minimum.reduce(scale) <= largest < np.inf:  # NaN fails every comparison
            raise MessageError("quantization parameters: scales must be finite and positive")
        if bits < 8 and zero_point.max() > (1 << bits) - 1:
            raise MessageError("quantization parameters: zero point above %d-bit range" % bits)
        return cls(scale, zero_point, largest)


def _channel_view(x: np.ndarray, channels: int) -> np.ndarray:
    return x.reshape(channels, -1) if channels else x.reshape(0, 0)


def channel_counts(index: np.ndarray, size: int, channels: int) -> np.ndarray:
    """How many of the sorted flat positions `index` of a row-major tensor of `size`
    values fall in each of its `channels` equal rows."""
    row = size // channels if channels else 0
    return np.diff(np.searchsorted(index, np.arange(channels + 1) * row))


class AffineInput(NamedTuple):
    """One array for affine_quantize_all: its float32 values, split into `channels` equal rows
    or, with `counts`, into rows of counts[c] values; `rng` for stochastic rounding; `name`, a
    tensor's, for its errors."""

    values: np.ndarray
    counts: Optional[np.ndarray] = None
    channels: int = 1
    rng: Optional[np.random.Generator] = None
    name: Optional[str] = None


def affine_quantize(
    values: np.ndarray,
    bits: int,
    counts: Optional[np.ndarray] = None,
    channels: int = 1,
    rng: Optional[np.random.Generator] = None,
) -> Tuple[np.ndarray, QuantParams]:
    """Asymmetric quantization of float32 `values` to `bits`-bit unsigned codes.

    The range of each channel always contains 0, so that zero (a pruned weight)
    decodes exactly to zero. The values are split into `channels` equal rows, or,
    with `counts`, into rows of counts[c] values each (the kept values of a sparse
    tensor, in order). `rng` switches on stochastic rounding (unbiased, error below
    one step). Values that are not finite raise MessageError (found from the channel
    ranges, so that finite values cost no extra pass). A range wider than float32's
    largest value times the levels clips at its ends (its scale stays finite).
    """
    return affine_quantize_all([AffineInput(values, counts, channels, rng)], bits)[0]


def affine_quantize_all(arrays: Sequence[AffineInput], bits: int) -> List[Tuple[np.ndarray, QuantParams]]:
    """affine_quantize of each array, all with `bits` bits, with the parameters of all their
    channels computed together: on small tensors those few numpy calls on one value a channel
    are most of the time, and a message's tensors share them. The same codes and parameters as
    one call each; the first array with a value that is not finite raises, named."""
    if not 1 <= bits <= 8:
        raise ConfigError("quantization bits must be in 1..8, got %r" % (bits,))
    levels = (1 << bits) - 1
    flats = [np.asarray(array.values, dtype=np.float32).ravel() for array in arrays]
    bounds, end = [], 0  # each array's channels in the joint parameter arrays
    for array in arrays:
        bounds.append((end, end + array.channels))
        end += array.channels
    lo32, hi32 = np.empty(end, np.float32), np.empty(end, np.float32)
    for x, array, (a, b) in zip(flats, arrays, bounds):
        _channel_range(x, array.counts, array.channels, lo32[a:b], hi32[a:b])
    lo, hi = lo32.astype(np.float64), hi32.astype(np.float64)  # the range contains 0
    np.minimum(lo, _ZERO_64, out=lo)
    np.maximum(hi, _ZERO_64, out=hi)
    span = hi - lo  # float64: a full-range float32 tensor does not overflow here
    if not math.isfinite(np.add.reduce(span)):  # a NaN or an infinity in x makes lo or hi, so span, not finite
        for array, (a, b) in zip(arrays, bounds):
            if not np.isfinite(span[a:b]).all():
                raise MessageError(("tensor %r: " % array.name if array.name else "") + "NaN or Inf cannot be quantized")
    # float32 scales, finite and at least float32's smallest normal (so that inverses stay finite);
    # 1 for a channel of zeros. Rounding to float32 is monotonic: clipping before it is clipping after.
    # (Numbers as numpy scalars and results written in place: these are calls on one value a channel.)
    scale = span / levels
    np.maximum(scale, _F32_TINY_64, out=scale)
    if levels == 1:  # a span is at most twice float32's largest value: only one level can exceed it
        np.minimum(scale, F32_MAX, out=scale)
    scale[span == _ZERO_64] = _ONE_64
    scale = scale.astype(np.float32)
    zero = np.divide(lo, scale)  # the zero point: round(-lo / scale), -lo >= 0 so never below 0
    np.negative(zero, out=zero)
    np.rint(zero, out=zero)
    np.minimum(zero, levels, out=zero)
    # code = round(x / scale) + zero point = floor(x * (1 / scale) + zero point + offset), with offset
    # 1/2 (nearest, ties up) or uniform in [0, 1) (stochastic); values are clipped to [0, levels] before
    # the conversion truncates them, which is the floor of a value >= 0.
    inverse = (_ONE_64 / scale.astype(np.float64)).astype(np.float32)
    zero32 = zero.astype(np.float32)
    nearest = zero32 + _HALF_32
    zero_point = zero.astype(np.uint8)
    results = []
    for x, array, (a, b) in zip(flats, arrays, bounds):
        shift = nearest[a:b] if array.rng is None else zero32[a:b]
        codes = _affine_codes(x, array, inverse[a:b], shift, levels, lo[a:b], hi[a:b])
        results.append((codes, QuantParams(scale[a:b], zero_point[a:b])))
    return results


def _affine_codes(x: np.ndarray, array: AffineInput, inverse: np.ndarray, shift: np.ndarray, levels: int,
                  lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The codes of flat `x`: floor(x * inverse + shift (+ uniform noise)), per channel, clipped."""
    counts, channels, rng = array.counts, array.channels, array.rng
    if counts is None:
        with _row_buffer(channels, x.size):
            scaled = _channel_view(x, channels) * inverse[:, None]  # the one temporary: the rest is in place
            scaled += shift[:, None]
    else:
        scaled = x * np.repeat(inverse, counts)
        scaled += np.repeat(shift, counts)
    if rng is not None:
        scaled += rng.random(scaled.shape, dtype=np.float32)
    if rng is not None or x.size < _CHECK_BEFORE_CLIP or _beyond_codes(lo, hi, inverse, shift, levels):
        # in place, by the two ufuncs: np.clip's Python wrapper costs more than both on small tensors
        np.maximum(scaled, _ZERO_32, out=scaled)
        np.minimum(scaled, np.float32(levels + 0.5), out=scaled)
    return scaled.astype(np.uint8).ravel()


def _beyond_codes(lo: np.ndarray, hi: np.ndarray, inverse: np.ndarray, shift: np.ndarray, levels: int) -> bool:
    """Whether any value of x * inverse + shift (float32, per channel) truncates outside 0..levels.
    Float32 rounding is monotonic and inverse > 0, so a channel's extremes are those of its lo
    and hi computed the same way: a check of two values a channel instead of a clip of every value
    (the clip changes nothing unless a zero point rounded up by a whole half step)."""
    top = hi.astype(np.float32) * inverse + shift
    bottom = lo.astype(np.float32) * inverse + shift
    return bool(top.size) and bool(np.maximum.reduce(top) >= levels + 1 or np.minimum.reduce(bottom) < 0)


def _channel_range(x: np.ndarray, counts: Optional[np.ndarray], channels: int, lo: np.ndarray, hi: np.ndarray) -> None:
    """Per-channel min and max of flat `x` into float32 `lo` and `hi` (0 for an empty channel)."""
    if x.size == 0:
        lo.fill(0)
        hi.fill(0)
    elif counts is None:
        # reduceat: twice as fast as min(axis=1) over equal rows
        starts = np.arange(0, x.size, x.size // channels)
        np.minimum.reduceat(x, starts, out=lo)
        np.maximum.reduceat(x, starts, out=hi)
    else:
        lo.fill(0)
        hi.fill(0)
        filled = counts > 0  # reduceat would give an empty channel its neighbour's value
        starts = (np.cumsum(counts) - counts)[filled]
        # reduceat over the kept values: no ufunc.at
        lo[filled] = np.minimum.reduceat(x, starts)
        hi[filled] = np.maximum.reduceat(x, starts)


def affine_dequantize(codes: np.ndarray, params: QuantParams, counts: Optional[np.ndarray] = None) -> np.ndarray:
    """Inverse of affine_quantize: float32 values, flat. (code - zero point) is
    exact in float32 (both are below 256), so its product with the scale is the
    same float whichever way it is computed."""
    scale, zero_point = params.scale, params.zero_point
    channels = scale.shape[0]
    zp = zero_point.astype(np.float32)  # same-type arithmetic below: a mixed-type loop is twice as slow
    if counts is None:
        out = _channel_view(codes, channels).astype(np.float32)
        s, zp = scale[:, None], zp[:, None]
    else:
        out = codes.astype(np.float32)
        s, zp = np.repeat(scale, counts), np.repeat(zp, counts)
    with _row_buffer(channels if counts is None else 0, out.size):
        out -= zp
        if channels and params.largest() * 255.0 > F32_MAX / 2:
            # A range close to float32's own limits: compute wide, clip to float32.
            return np.clip(out * s.astype(np.float64), -F32_MAX, F32_MAX).astype(np.float32).ravel()
        out *= s
    return out.ravel()


# ---------------------------------------------------------------- bit packing


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> Buffer:
    """Pack unsigned codes of `bits` bits each, little-endian bit order. 8-bit codes come back
    as a view of their bytes (the message is joined from it: one copy fewer)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8).ravel()
    if bits == 8:
        return codes.data
    if bits == 4:
        padded = codes if codes.size % 2 == 0 else np.append(codes, np.uint8(0))
        return (padded[0::2] | (padded[1::2] << 4)).astype(np.uint8).tobytes()
    planes = np.unpackbits(codes[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(raw: Buffer, count: int, bits: int) -> np.ndarray:
    """Inverse of pack_bits; `raw` must be exactly packed_size(count, bits) long.
    8-bit codes come back as a read-only view of `raw`."""
    expected = packed_size(count, bits)
    if len(raw) != expected:
        raise MessageError(
            "packed %d-bit codes: expected %d bytes for %d values, got %d"
            % (bits, expected, count, len(raw))
        )
    data = np.frombuffer(raw, dtype=np.uint8)
    if bits == 8:
        return data  # read-only: the decoder's next step copies it
    if bits == 4:
        out = np.empty(data.size * 2, dtype=np.uint8)
        out[0::2] = data & 0x0F
        out[1::2] = data >> 4
        return out[:count]
    flat = np.unpackbits(data, bitorder="little")[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (flat.astype(np.uint16) @ weights).astype(np.uint8)


# ---------------------------------------------------------------- sparse positions


def bitmap_encode(mask: np.ndarray) -> bytes:
    """One bit a position, little-endian bit order: ceil(n / 8) bytes."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel(), bitorder="little").tobytes()


def bitmap_decode(raw: Buffer, size: int, nnz: int) -> np.ndarray:
    """Flat indices of the set bits; checks the length, padding and count."""
    if len(raw) != (size + 7) // 8:
        raise MessageError(
            "bitmap: expected %d bytes for %d positions, got %d" % ((size + 7) // 8, size, len(raw))
        )
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if bits[size:].any():
        raise MessageError("bitmap: padding bits after the last position are set")
    index = np.flatnonzero(bits[:size].view(bool))  # 0/1 bytes: as booleans, four times faster to scan
    if index.size != nnz:
        raise MessageError("bitmap: %d positions set, header declares %d" % (index.size, nnz))
    return index


def _gaps(index: np.ndarray) -> np.ndarray:
    """Gaps between sorted flat indices: the first index, then next - previous - 1."""
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        return index
    return np.diff(index, prepend=-1) - 1


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    """Bytes of each value in LEB128 (7 bits a byte, at least one byte)."""
    lengths = np.ones(values.shape, dtype=np.int64)
    rest = values >> 7
    while rest.any():
        lengths += rest > 0
        rest = rest >> 7
    return lengths


def delta_size(index: np.ndarray) -> int:
    """Exact size in bytes of delta_encode(index), without encoding."""
    return int(_varint_lengths(_gaps(index)).sum())


def delta_encode(index: np.ndarray) -> bytes:
    """Sorted flat indices as LEB128 varints of the gaps between them."""
    gaps = _gaps(index)
    if gaps.size == 0:
        return b""
    lengths = _varint_lengths(gaps)
    # Byte j of gap g holds bits 7j..7j+6, with the high bit set on all but its last byte.
    owner = np.repeat(np.arange(gaps.size), lengths)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(owner.size) - starts[owner]
    chunks = (gaps[owner] >> (7 * position)) & 0x7F
    more = position < lengths[owner] - 1
    return (chunks | (more.astype(np.int64) << 7)).astype(np.uint8).tobytes()


MAX_DELTA_POSITIONS = 1 << 62  # indices and their sums stay inside int64


def varint_max_length(size: int) -> int:
    """Bytes of the longest canonical gap varint in a tensor of `size` elements
    (a gap is at most size - 1)."""
    return max(1, (max(size - 1, 0).bit_length() + 6) // 7)


def delta_decode(raw: Buffer, size: int, nnz: int) -> np.ndarray:
    """Inverse of delta_encode; checks count, framing, canonical varints and bounds.

    A varint may be no longer than the largest gap of `size` elements needs and
    may not end in a zero byte (an over-long encoding of a smaller value), and
    every gap must stay inside the tensor, so no sum can wrap around int64.
    """
    if not 0 <= size <= MAX_DELTA_POSITIONS:
        raise MessageError("delta indices: %d elements is beyond the supported %d" % (size, MAX_DELTA_POSITIONS))
    data = np.frombuffer(raw, dtype=np.uint8)
    if nnz == 0:
        if data.size:
            raise MessageError("delta indices: %d bytes for zero positions" % data.size)
        return np.zeros(0, dtype=np.int64)
    if data.size == 0 or data[-1] & 0x80:
        raise MessageError("delta indices: the last varint is not terminated")
    ends = np.flatnonzero((data & 0x80) == 0)
    if ends.size != nnz:
        raise MessageError("delta indices: %d varints, header declares %d" % (ends.size, nnz))
    lengths = np.diff(ends, prepend=-1)
    longest = varint_max_length(size)
    if lengths.max() > longest:
        number = int(np.argmax(lengths > longest))
        raise MessageError(
            "delta indices: varint %d is %d bytes long; a gap in %d elements needs at most %d"
            % (number, lengths[number], size, longest)
        )
    overlong = (lengths > 1) & (data[ends] == 0)
    if overlong.any():
        raise MessageError("delta indices: varint %d is over-long (ends in a zero byte)" % np.argmax(overlong))
    owner = np.repeat(np.arange(nnz), lengths)
    position = np.arange(data.size) - (ends - lengths + 1)[owner]
    gaps = np.zeros(nnz, dtype=np.int64)
    np.add.at(gaps, owner, (data & 0x7F).astype(np.int64) << (7 * position))
    if gaps.max() >= size:
        number = int(np.argmax(gaps >= size))
        raise MessageError("delta indices: gap %d of %d is beyond %d elements" % (number, gaps[number], size))
    # The exact sum in int64 could wrap for absurd inputs: bound it in float64 first
    # (relative error below 1e-7 for any count that fits in memory).
    if float(gaps.sum(dtype=np.float64)) + nnz > size * (1 + 1e-7) + 1:
        raise MessageError("delta indices: the positions run beyond %d elements" % size)
    index = np.cumsum(gaps + 1) - 1
    if index[-1] >= size:
        raise MessageError("delta indices: position %d beyond %d elements" % (index[-1], size))
    return index


# ---------------------------------------------------------------- entropy stage


def _lzma_filters():
    return [{"id": lzma.FILTER_LZMA2, "preset": 6}]


def _deflate(raw: bytes, level: int) -> bytes:
    return zlib.compress(raw, level)


def _lzma(raw: bytes, level: int) -> bytes:
    return lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters())


ENTROPY_CODERS = {"deflate": _deflate, "lzma": _lzma}


def entropy_compress(raw: bytes, coder: str, level: int = 9) -> bytes:
    if coder not in ENTROPY_CODERS:
        raise ConfigError(
            "unknown entropy coder %r; choose one of %s" % (coder, sorted(ENTROPY_CODERS))
        )
    return ENTROPY_CODERS[coder](raw, level)


def entropy_decompress(data: Buffer, coder: str, expected_size: int) -> bytes:
    """Decompress exactly `expected_size` bytes; never produces more than one
    byte past that, whatever the stream claims.

    Raises MessageError for a corrupt stream, a stream that ends early, one
    that would produce more than declared, or bytes after its end.
    """
    engine: Any
    failure: Any
    if coder == "deflate":
        engine, failure = zlib.decompressobj(), zlib.error
    elif coder == "lzma":
        engine = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma_filters())
        failure = lzma.LZMAError
    else:
        raise MessageError("unknown entropy coder %r" % (coder,))
    try:
        # One byte of room past the declared size tells "too long" from "exact".
        out = engine.decompress(data, expected_size + 1)
    except failure as exc:
        raise MessageError("%s stream is corrupt: %s" % (coder, exc)) from None
    if len(out) > expected_size:
        raise MessageError("%s stream holds more than the declared %d bytes" % (coder, expected_size))
    if not engine.eof:
        raise MessageError("%s stream is truncated (%d of %d bytes)" % (coder, len(out), expected_size))
    if engine.unused_data:
        raise MessageError("%s stream is followed by %d stray bytes" % (coder, len(engine.unused_data)))
    if len(out) != expected_size:
        raise MessageError(
            "%s stream holds %d bytes, header declares %d" % (coder, len(out), expected_size)
        )
    return out
