"""Tensil's fixed-point rules: conversions, bytes, the MAC step and every ALU op."""

import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensil.errors import FixedPointError
from tensil.fixed import (
    FORMATS,
    SaturationStats,
    add,
    alu,
    fixed_format,
    from_bytes,
    from_float_const,
    from_float_driver,
    from_float_saturating,
    mac,
    multiply,
    subtract,
    to_bytes,
    to_float,
)
from tensil.isa import SimdOp

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "tensil_data"
FP16 = FORMATS["FP16BP8"]


def test_facts_golden_conversions():
    x = np.array([-0.159607857, -0.038431376, 0.085490167])
    for convert in (lambda v: from_float_const(v, FP16), lambda v: from_float_driver(v, FP16),
                    lambda v: from_float_saturating(v, FP16)[0]):
        raw = convert(x)
        assert raw.tolist() == [-41, -10, 22]
        assert to_bytes(raw, FP16) == bytes.fromhex("d7ff f6ff 1600")


def test_tensil_models_cifar_image_matches_its_tdata():
    x = np.loadtxt(GOLDEN / "cifar_1x8_head.csv", delimiter=",")
    data = (GOLDEN / "cifar_1x8_head.tdata").read_bytes()
    assert x.shape == (32, 8) and len(data) == 32 * 8 * 2
    assert to_bytes(from_float_const(x, FP16), FP16) == data
    assert from_bytes(data, FP16).reshape(32, 8).tolist() == from_float_driver(x, FP16).tolist()


def test_constants_round_half_up_and_inputs_half_even():
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5]) / 256
    assert from_float_const(halves, FP16).tolist() == [1, 2, 3, 0, -1, -2]
    assert from_float_driver(halves, FP16).tolist() == [0, 2, 2, 0, -2, -2]


def test_constants_saturate_and_count_like_tensils_summary():
    stats = SaturationStats()
    raw = from_float_const([200.0, -200.0, 127.9, -300.0, np.nan], FP16, stats)
    assert raw.tolist() == [32767, -32768, 32742, -32768, 0]
    assert (stats.overflow_count, stats.overflow_max_delta) == (1, (51200 - 32767) >> 8)
    assert (stats.underflow_count, stats.underflow_max_delta) == (2, (76800 - 32768) >> 8)
    assert stats.underflow_sum_delta == ((51200 - 32768) >> 8) + ((76800 - 32768) >> 8)
    report = [" ".join(line.split()) for line in stats.report().splitlines()]
    assert "FIXED POINT OVERFLOW SUMMARY" in report and "FIXED POINT UNDERFLOW SUMMARY" in report
    assert "Count: 2" in report and "Average delta: %d" % (stats.underflow_sum_delta // 2) in report
    assert SaturationStats().report() == ""


def test_fp32bp16_constants_clamp_at_java_int_first():
    # Math.round(float) returns a Java int: 1e6 * 65536 clamps to 2^31 - 1 = the format's
    # maximum, so Tensil counts no overflow there.
    stats = SaturationStats()
    fmt = FORMATS["FP32BP16"]
    assert from_float_const([1e6, -1e6, 1.0], fmt, stats).tolist() == [2**31 - 1, -2**31, 65536]
    assert stats.overflow_count == 0 and stats.underflow_count == 0


def test_driver_inputs_wrap_and_the_saturating_variant_counts():
    x = np.array([200.0, -129.0, 1.0, 127.99609375])
    assert from_float_driver(x, FP16).tolist() == [51200 - 65536, 65536 - 33024, 256, 32767]
    raw, saturated = from_float_saturating(x, FP16)
    assert raw.tolist() == [32767, -32768, 256, 32767] and saturated == 2
    with pytest.raises(FixedPointError, match="flat index 1 is nan"):
        from_float_saturating([0.0, np.nan], FP16)
    with pytest.raises(FixedPointError, match="expected numbers"):
        from_float_driver(np.array(["a"]), FP16)


def test_other_formats():
    assert from_float_const([1.0, -8.0, 7.9375, 9.0], FORMATS["FP8BP4"]).tolist() == [
        16, -128, 127, 127]
    fp18 = FORMATS["FP18BP10"]
    raw = from_float_const([-1 / 1024, 1.0, -128.0], fp18)
    assert raw.tolist() == [-1, 1024, -131072]
    data = to_bytes(raw, fp18)
    assert data == bytes.fromhex("ffff0300 00040000 00000200")   # high bits zero, not sign
    assert from_bytes(data, fp18).tolist() == raw.tolist()
    with pytest.raises(FixedPointError, match=r"scalar 1 \(byte offset 4\) has bits set above"):
        from_bytes(bytes.fromhex("00000000 ffffffff"), fp18)
    with pytest.raises(FixedPointError, match="not a whole number of 4-byte FP18BP10"):
        from_bytes(bytes(6), fp18)
    with pytest.raises(FixedPointError, match="FLOAT32' is not a fixed-point format"):
        fixed_format("FLOAT32")
    with pytest.raises(FixedPointError, match="must be in -32768..32767"):
        to_bytes([40000], FP16)
    assert to_float([-32768, 32767, 1], FP16).tolist() == [-128.0, 127.99609375, 1 / 256]


def _tensil_do_mac(x: int, y: int, z: int, bp: int, width: int) -> int:
    """FixedBase.doMAC + mkFixed, literally: masks on the two's-complement product."""
    m = x * y + (z << bp)
    adj = 1 if (m & (1 << (bp - 1))) and ((m & ((1 << (bp - 1)) - 1)) or (m & (1 << bp))) else 0
    return max(-(1 << (width - 1)), min((1 << (width - 1)) - 1, (m >> bp) + adj))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_mac_is_tensils_do_mac(name):
    fmt = FORMATS[name]
    rng = np.random.default_rng(1)
    edges = [fmt.min_raw, fmt.min_raw + 1, -1, 0, 1, fmt.one // 2, fmt.one, fmt.max_raw]
    x = np.concatenate([rng.integers(fmt.min_raw, fmt.max_raw + 1, 3000), np.repeat(edges, 64)])
    y = np.concatenate([rng.integers(fmt.min_raw, fmt.max_raw + 1, 3000), np.tile(edges, 64)])
    z = rng.integers(fmt.min_raw, fmt.max_raw + 1, x.size)
    got = mac(x, y, z, fmt)
    want = [_tensil_do_mac(int(a), int(b), int(c), fmt.frac_bits, fmt.width)
            for a, b, c in zip(x, y, z)]
    assert got.tolist() == want


def test_mac_rounds_half_to_even_and_saturates_at_both_ends():
    # 0.5 * 1/256 = 1/512: a tie at 0 (even) stays 0; 3/512 -> 2/256; -1/512 -> 0
    assert mac([128, 128, 128], [1, 3, -1], [0, 0, 0], FP16).tolist() == [0, 2, 0]
    assert multiply(384, 384, FP16).tolist() == 576            # 1.5 * 1.5 = 2.25
    assert mac(32767, 32767, 32767, FP16).tolist() == 32767    # saturates high
    assert mac(-32768, 32767, -32768, FP16).tolist() == -32768  # saturates low
    assert add(32000, 1000, FP16).tolist() == 32767
    assert subtract(-32000, 1000, FP16).tolist() == -32768


@given(st.integers(-32768, 32767), st.integers(-32768, 32767), st.integers(-32768, 32767))
def test_mac_property(x, y, z):
    assert int(mac(x, y, z, FP16)) == _tensil_do_mac(x, y, z, 8, 16)
    assert int(add(x, y, FP16)) == int(mac(x, 256, y, FP16))   # plus = mac(x, one, y)


ONE = 256


@pytest.mark.parametrize("op, left, right, input_, expected", [
    (SimdOp.NOOP, 5, 6, 7, 7),
    (SimdOp.ZERO, 5, 6, 7, 0),
    (SimdOp.MOVE, 5, 6, 7, 5),
    (SimdOp.NOT, 0, 9, 0, ONE), (SimdOp.NOT, -3, 9, 0, 0),
    (SimdOp.AND, 1, 2, 0, ONE), (SimdOp.AND, 1, 0, 0, 0),
    (SimdOp.OR, 0, 0, 0, 0), (SimdOp.OR, 0, -1, 0, ONE),
    (SimdOp.INCREMENT, 32767 - 100, 0, 0, 32767), (SimdOp.INCREMENT, -256, 0, 0, 0),
    (SimdOp.DECREMENT, -32768, 0, 0, -32768), (SimdOp.DECREMENT, 300, 0, 0, 44),
    (SimdOp.ADD, 30000, 30000, 0, 32767), (SimdOp.ADD, -30000, -30000, 0, -32768),
    (SimdOp.SUBTRACT, 0, -32768, 0, 32767), (SimdOp.SUBTRACT, 5, 7, 0, -2),
    (SimdOp.MULTIPLY, 384, -384, 0, -576), (SimdOp.MULTIPLY, 3, 128, 0, 2),
    (SimdOp.ABS, -5, 0, 0, 5), (SimdOp.ABS, -32768, 0, 0, -32768), (SimdOp.ABS, 7, 0, 0, 7),
    (SimdOp.GREATER_THAN, 2, 1, 0, ONE), (SimdOp.GREATER_THAN, 1, 1, 0, 0),
    (SimdOp.GREATER_THAN_EQUAL, 1, 1, 0, ONE), (SimdOp.GREATER_THAN_EQUAL, -2, 1, 0, 0),
    (SimdOp.MIN, -2, 1, 0, -2), (SimdOp.MAX, -2, 1, 0, 1),
])
def test_alu_ops_as_the_rtl_computes_them(op, left, right, input_, expected):
    assert int(alu(int(op), left, right, input_, FP16)) == expected
    lanes = alu(int(op), np.full(4, left), np.full(4, right), np.full(4, input_), FP16)
    assert lanes.tolist() == [expected] * 4


def test_alu_rejects_unknown_ops():
    with pytest.raises(ValueError, match="SIMD op 16"):
        alu(16, 0, 0, 0, FP16)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_to_float32_is_to_float_then_float32(name):
    # The driver's readback converts in two steps; the values are those of the exact
    # division rounded to float32 once (every FP16BP8 raw value, random ones for the rest).
    from tensil.fixed import to_float, to_float32

    fmt = FORMATS[name]
    if fmt.width <= 16:
        raw = np.arange(fmt.min_raw, fmt.max_raw + 1).astype(fmt.dtype)
    else:
        raw = np.random.default_rng(0).integers(fmt.min_raw, fmt.max_raw + 1, 200_000).astype(fmt.dtype)
    assert np.array_equal(to_float32(raw, fmt), to_float(raw, fmt).astype(np.float32))
    assert to_float32(raw, fmt).dtype == np.float32
