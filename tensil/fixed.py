"""Tensil's fixed-point formats and their arithmetic, bit for bit (numpy, int64 raw values).

Raw values are two's-complement integers `width` bits wide with `frac_bits` fractional
bits (FP16BP8: -32768..32767 = -128.0..127.99609375). Three float conversions exist:

- `from_float_const`: what the compiler does to constants (FixedBase.fromFloat): the float32
  product x * 2^frac_bits rounded half up (Java Math.round, clamped to a Java int), then
  saturated; saturations are counted in a `SaturationStats` (Tensil's overflow summary).
- `from_float_driver`: what Tensil's PYNQ driver does to runtime inputs (util.py
  vector_to_fixed_point then astype(uint16)): round half to even, no saturation, so
  out-of-range values wrap around modulo 2^width.
- `from_float_saturating`: the same rounding, saturated, with the count of saturated values
  (what our board driver uses).

The arithmetic is the RTL's `macFixedPoint` (rtl/.../util/package.scala, also FixedBase.doMAC):
mac(x, y, z) = saturate(round_half_even((x*y + (z << frac_bits)) / 2^frac_bits)).
plus(x, y) = mac(x, one, y); times(x, y) = mac(x, y, 0).
"""

import dataclasses
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .arch import format_table
from .errors import FixedPointError

__all__ = ["FORMATS", "FixedFormat", "SaturationStats", "add", "alu", "fixed_format",
           "from_bytes", "from_float_const", "from_float_driver", "from_float_saturating", "mac",
           "multiply", "saturate", "subtract", "to_bytes", "to_float", "to_float32", "wrap"]

ArrayLike = Union[np.ndarray, int, float]


@dataclasses.dataclass(frozen=True)
class FixedFormat:
    name: str
    width: int
    frac_bits: int
    size_bytes: int   # bytes per scalar in .tdata files and DRAM

    @property
    def min_raw(self) -> int:
        return -(1 << (self.width - 1))

    @property
    def max_raw(self) -> int:
        return (1 << (self.width - 1)) - 1

    @property
    def one(self) -> int:
        return 1 << self.frac_bits

    @property
    def dtype(self) -> np.dtype:
        """The smallest numpy integer type holding a raw value (memories store this)."""
        return np.dtype({1: np.int8, 2: np.int16, 4: np.int32}[self.size_bytes])


FORMATS: Dict[str, FixedFormat] = {f.name: f for f in (
    FixedFormat("FP8BP4", 8, 4, 1), FixedFormat("FP16BP8", 16, 8, 2),
    FixedFormat("FP18BP10", 18, 10, 4), FixedFormat("FP32BP16", 32, 16, 4))}


def fixed_format(data_type: str) -> FixedFormat:
    """The format of a `.tarch` data_type (FLOAT32 has no fixed-point format, nor RTL)."""
    try:
        return FORMATS[data_type]
    except KeyError:
        raise FixedPointError("data type %r is not a fixed-point format (known: %s)" % (
            data_type, ", ".join(FORMATS))) from None


@dataclasses.dataclass
class SaturationStats:
    """Tensil's overflow/underflow statistics: counts and deltas in whole units (raw >> frac)."""

    overflow_count: int = 0
    overflow_max_delta: int = 0
    overflow_sum_delta: int = 0
    underflow_count: int = 0
    underflow_max_delta: int = 0
    underflow_sum_delta: int = 0

    def count(self, raw: np.ndarray, fmt: FixedFormat) -> None:
        over = raw[raw > fmt.max_raw]
        under = raw[raw < fmt.min_raw]
        if over.size:
            delta = (over - fmt.max_raw) >> fmt.frac_bits
            self.overflow_count += int(over.size)
            self.overflow_max_delta = max(self.overflow_max_delta, int(delta.max()))
            self.overflow_sum_delta += int(delta.sum())
        if under.size:
            delta = (fmt.min_raw - under) >> fmt.frac_bits
            self.underflow_count += int(under.size)
            self.underflow_max_delta = max(self.underflow_max_delta, int(delta.max()))
            self.underflow_sum_delta += int(delta.sum())

    def report(self) -> str:
        """Tensil's FIXED POINT OVERFLOW/UNDERFLOW SUMMARY tables (empty when nothing saturated)."""
        out = ""
        for title, count, top, total in (
                ("FIXED POINT OVERFLOW SUMMARY", self.overflow_count, self.overflow_max_delta,
                 self.overflow_sum_delta),
                ("FIXED POINT UNDERFLOW SUMMARY", self.underflow_count, self.underflow_max_delta,
                 self.underflow_sum_delta)):
            if count:
                out += format_table(title, [("Maximum delta", top),
                                            ("Average delta", total // count), ("Count", count)])
        return out


def _float_array(values: ArrayLike, dtype: type) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "fiub":
        raise FixedPointError("expected numbers, got an array of %s" % array.dtype)
    return array.astype(dtype)


def saturate(raw: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    # minimum/maximum rather than np.clip, whose per-call overhead shows in the emulator
    return np.minimum(np.maximum(raw, fmt.min_raw), fmt.max_raw)


def wrap(raw: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """Keep the low `width` bits, read back as two's complement."""
    mask = (1 << fmt.width) - 1
    raw = np.asarray(raw, dtype=np.int64) & mask
    return np.where(raw > fmt.max_raw, raw - (1 << fmt.width), raw)


_SLICE = 1 << 20  # values converted at a time (a few 8 MB temporaries, whatever the model)


def from_float_const(values: ArrayLike, fmt: FixedFormat,
                     stats: Optional[SaturationStats] = None) -> np.ndarray:
    """Constants as Tensil's compiler converts them: float32, round half up, saturate."""
    x = _float_array(values, np.float32)
    if x.size > _SLICE:  # every step is elementwise: a slice at a time bounds the temporaries
        flat, out = x.reshape(-1), np.empty(x.size, np.int64)
        for start in range(0, x.size, _SLICE):
            out[start:start + _SLICE] = from_float_const(flat[start:start + _SLICE], fmt, stats)
        return out.reshape(x.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = (x * np.float32(fmt.one)).astype(np.float64)   # a float32 product, like Java
    rounded = np.floor(scaled + 0.5)        # exact: a float32 value plus 0.5 fits a float64
    rounded = np.where(np.isnan(rounded), 0.0, rounded)   # Math.round(NaN) = 0
    raw = np.clip(rounded, -(1 << 31), (1 << 31) - 1).astype(np.int64)   # Math.round -> int
    if stats is not None:
        stats.count(raw, fmt)
    return saturate(raw, fmt)


def _scaled_half_even(values: ArrayLike, fmt: FixedFormat) -> np.ndarray:
    """values * 2^frac rounded half to even, as float64 integers (finite values only)."""
    x = _float_array(values, np.float64)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise FixedPointError("input value at flat index %d is %r; a fixed-point input must be "
                              "finite" % (bad, float(x.reshape(-1)[bad])))
    return np.rint(x * fmt.one)   # the ufunc: np.round's wrapper costs more than the work here


def _round_half_even(values: ArrayLike, fmt: FixedFormat) -> np.ndarray:
    limit = float(1 << 62)
    return np.minimum(np.maximum(_scaled_half_even(values, fmt), -limit), limit).astype(np.int64)


def from_float_driver(values: ArrayLike, fmt: FixedFormat) -> np.ndarray:
    """Runtime inputs as Tensil's PYNQ driver converts them: round half even, wrap around."""
    return wrap(_round_half_even(values, fmt), fmt)


def from_float_saturating(values: ArrayLike, fmt: FixedFormat) -> Tuple[np.ndarray, int]:
    """Round half even and saturate; also returns how many values saturated."""
    scaled = _scaled_half_even(values, fmt)
    raw = saturate(scaled, fmt)   # in float64, exactly: the values are integers
    return raw.astype(np.int64), int(np.count_nonzero(raw != scaled))


def to_float(raw: ArrayLike, fmt: FixedFormat) -> np.ndarray:
    return np.asarray(raw, dtype=np.int64) / float(fmt.one)


def to_float32(raw: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """to_float(raw).astype(float32), the same values in two steps instead of four: the
    conversion rounds once either way, and scaling by a power of two is exact."""
    # np.asarray: a plain array, not a subclass (a DMA buffer's) carried through both steps
    return np.asarray(raw).astype(np.float32) * np.float32(1.0 / fmt.one)


def _check_raw(raw: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype.kind not in "iu":
        raise FixedPointError("raw %s values must be integers, got %s" % (fmt.name, raw.dtype))
    raw = raw.astype(np.int64)
    if raw.size and (raw.min() < fmt.min_raw or raw.max() > fmt.max_raw):
        raise FixedPointError("raw %s values must be in %d..%d" % (fmt.name, fmt.min_raw,
                                                                    fmt.max_raw))
    return raw


def to_bytes(raw: ArrayLike, fmt: FixedFormat) -> bytes:
    """Little-endian two's complement, size_bytes per scalar, bits above `width` zero."""
    raw = _check_raw(np.asarray(raw), fmt)
    unsigned = (raw & ((1 << fmt.width) - 1)).astype("<u%d" % fmt.size_bytes)
    return unsigned.reshape(-1).tobytes()


def from_bytes(data: bytes, fmt: FixedFormat, where: str = "data") -> np.ndarray:
    """Raw values of a byte image; bits above `width` must be zero (FP18BP10 in 4 bytes)."""
    if len(data) % fmt.size_bytes:
        raise FixedPointError("%s: %d bytes is not a whole number of %d-byte %s scalars" % (
            where, len(data), fmt.size_bytes, fmt.name))
    unsigned = np.frombuffer(data, dtype="<u%d" % fmt.size_bytes).astype(np.int64)
    high = unsigned >> fmt.width
    if np.any(high):
        index = int(np.flatnonzero(high)[0])
        raise FixedPointError("%s: scalar %d (byte offset %d) has bits set above the %d bits of "
                              "%s" % (where, index, index * fmt.size_bytes, fmt.width, fmt.name))
    return wrap(unsigned, fmt)


def mac(x: ArrayLike, y: ArrayLike, z: ArrayLike, fmt: FixedFormat) -> np.ndarray:
    """saturate(round_half_even((x*y + (z << frac)) / 2^frac)) on raw values (broadcasting)."""
    m = (np.asarray(x, dtype=np.int64) * np.asarray(y, dtype=np.int64)
         + (np.asarray(z, dtype=np.int64) << fmt.frac_bits))
    # floor(m / 2^f) + 1 when the remainder is above one half, or exactly one half with an
    # odd floor: (m + half - 1 + parity) >> f.
    half = 1 << (fmt.frac_bits - 1)
    q = (m + (half - 1) + ((m >> fmt.frac_bits) & 1)) >> fmt.frac_bits
    return saturate(q, fmt)


def add(x: ArrayLike, y: ArrayLike, fmt: FixedFormat) -> np.ndarray:
    """Saturating x + y (the accumulators' and the ALU's plus)."""
    return saturate(np.asarray(x, dtype=np.int64) + np.asarray(y, dtype=np.int64), fmt)


def subtract(x: ArrayLike, y: ArrayLike, fmt: FixedFormat) -> np.ndarray:
    return saturate(np.asarray(x, dtype=np.int64) - np.asarray(y, dtype=np.int64), fmt)


def multiply(x: ArrayLike, y: ArrayLike, fmt: FixedFormat) -> np.ndarray:
    return mac(x, y, 0, fmt)


def alu(op: int, left: ArrayLike, right: ArrayLike, input_: ArrayLike,
        fmt: FixedFormat) -> np.ndarray:
    """One SIMD ALU op (codes of isa.SimdOp) lane-wise, as the RTL's ALU.scala computes it.

    Booleans are the fixed-point one or zero; Abs wraps (|min| = min, as `0 - x` in `width`
    bits); NoOp passes the accumulator input through.
    """
    a = np.asarray(left, dtype=np.int64)
    b = np.asarray(right, dtype=np.int64)
    one = fmt.one
    if op == 0:
        return np.array(input_, dtype=np.int64)
    if op == 1:
        return np.zeros(np.broadcast(a, b, input_).shape, dtype=np.int64)
    if op == 2:
        return a.copy()
    if op == 3:
        return np.where(a == 0, one, 0).astype(np.int64)
    if op == 4:
        return np.where((a != 0) & (b != 0), one, 0).astype(np.int64)
    if op == 5:
        return np.where((a != 0) | (b != 0), one, 0).astype(np.int64)
    if op == 6:
        return add(a, one, fmt)
    if op == 7:
        return subtract(a, one, fmt)
    if op == 8:
        return add(a, b, fmt)
    if op == 9:
        return subtract(a, b, fmt)
    if op == 10:
        return mac(a, b, 0, fmt)
    if op == 11:
        return np.where(a < 0, wrap(-a, fmt), a)
    if op == 12:
        return np.where(a > b, one, 0).astype(np.int64)
    if op == 13:
        return np.where(a >= b, one, 0).astype(np.int64)
    if op == 14:
        return np.minimum(a, b)
    if op == 15:
        return np.maximum(a, b)
    raise ValueError("SIMD op %r is not 0..15" % (op,))
