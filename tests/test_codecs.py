"""The array codecs alone: bit packing, positions, quantization, entropy."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fedcore import ConfigError, MessageError, codecs


@given(bits=st.integers(1, 8), data=st.data())
def test_pack_bits_round_trip(bits, data):
    codes = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=300)), dtype=np.uint8)

    raw = codecs.pack_bits(codes, bits)

    assert len(raw) == codecs.packed_size(codes.size, bits)
    np.testing.assert_array_equal(codecs.unpack_bits(raw, codes.size, bits), codes)


def test_unpack_bits_rejects_wrong_length():
    with pytest.raises(MessageError, match="expected 2 bytes for 4 values"):
        codecs.unpack_bits(b"\x00", 4, 3)


@given(st.lists(st.booleans(), max_size=500))
def test_positions_round_trip_both_formats(flags):
    mask = np.array(flags, dtype=bool)
    index = np.flatnonzero(mask)

    bitmap = codecs.bitmap_encode(mask)
    delta = codecs.delta_encode(index)

    np.testing.assert_array_equal(codecs.bitmap_decode(bitmap, mask.size, index.size), index)
    np.testing.assert_array_equal(codecs.delta_decode(delta, mask.size, index.size), index)
    assert codecs.delta_size(index) == len(delta)


def test_delta_handles_large_gaps():
    index = np.array([0, 127, 128, 16511, 2**31 + 5, 2**40], dtype=np.int64)

    raw = codecs.delta_encode(index)

    np.testing.assert_array_equal(codecs.delta_decode(raw, 2**40 + 1, index.size), index)


@pytest.mark.parametrize(
    "raw, size, nnz, reason",
    [
        (b"\x80", 10, 1, "not terminated"),
        (b"\x01\x01", 10, 1, "2 varints, header declares 1"),
        (b"\x09", 5, 1, "beyond 5 elements"),
        (b"\xff" * 9 + b"\x01", 10, 1, "varint 0 is 10 bytes long; a gap in 10 elements needs at most 1"),
        (b"\x81\x00", 200, 1, "varint 0 is over-long"),
        (b"\x05\xc8\x01", 200, 2, "gap 1 of 200 is beyond 200 elements"),
        (b"\x63\x63\x01", 200, 3, "positions run beyond 200 elements"),
        (b"\x00", 10, 0, "for zero positions"),
        # Gaps of 2**63 - 1 wrap int64 sums back to a last position of 0 (an IndexError before)
        (b"\xff" * 8 + b"\x7f" + b"\xff" * 8 + b"\x7f" + b"\x00", 4, 3, "varint 0 is 9 bytes long"),
        (b"\xff" * 8 + b"\x7f" + b"\xff" * 8 + b"\x7f" + b"\x00", 2**62, 3, "gap 0 of 9223372036854775807 is beyond"),
        ((b"\xff" * 8 + b"\x3f") * 3, 2**62, 3, "positions run beyond"),
    ],
)
def test_delta_decode_rejects(raw, size, nnz, reason):
    with pytest.raises(MessageError, match=reason):
        codecs.delta_decode(raw, size, nnz)


def test_bitmap_decode_rejects_padding_and_count():
    with pytest.raises(MessageError, match="padding"):
        codecs.bitmap_decode(b"\x80", 3, 1)
    with pytest.raises(MessageError, match="2 positions set, header declares 1"):
        codecs.bitmap_decode(b"\x03", 3, 1)


def _bound(x, bits, stochastic):
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    step = (hi - lo) / ((1 << bits) - 1)
    return (step if stochastic else step / 2) + 1e-6 * float(np.abs(x).max()) + 1e-37


@given(
    bits=st.integers(1, 8),
    stochastic=st.booleans(),
    values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False) | st.floats(-1, 1, width=32), min_size=1, max_size=64),
)
def test_affine_error_within_bound(bits, stochastic, values):
    x = np.array(values, dtype=np.float32)
    rng = np.random.default_rng(1) if stochastic else None

    codes, params = codecs.affine_quantize(x, bits, rng=rng)
    back = codecs.affine_dequantize(codes, params)

    assert codes.max() <= (1 << bits) - 1
    assert np.all(np.abs(back.astype(np.float64) - x) <= _bound(x, bits, stochastic))
    assert np.all(back[x == 0] == 0)


@given(
    bits=st.integers(1, 8),
    rows=st.integers(1, 4),
    values=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False) | st.floats(-300, 300, width=32)
                    | st.sampled_from([-1.5, 253.5, -0.5, 0.0]), min_size=4, max_size=64),
)
# lo -1.5, hi levels - 1.5: scale 1, zero point rint(1.5) = 2, hi lands on levels + 1 before the clip
@example(bits=8, rows=1, values=[-1.5, 253.5, 0.0, 7.0])
@example(bits=4, rows=2, values=[3.0, 1.0, 0.0, 2.0, -1.5, 13.5, 0.0, 7.0])
@example(bits=2, rows=1, values=[-1.5, 1.5, 0.5, -1.0])
def test_affine_skips_the_clip_only_when_it_changes_nothing(bits, rows, values):
    # The quantizer clips codes only when a channel's extremes would truncate outside the code
    # range; clipping every value must give the same codes and parameters.
    x = np.array(values[: len(values) // rows * rows], dtype=np.float32)
    with mock.patch.object(codecs, "_CHECK_BEFORE_CLIP", 0):  # check the channels whatever the size
        fast, fast_params = codecs.affine_quantize(x, bits, channels=rows)
    with mock.patch.object(codecs, "_beyond_codes", lambda *args: True):  # clip every value
        slow, slow_params = codecs.affine_quantize(x, bits, channels=rows)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast_params.scale, slow_params.scale)
    np.testing.assert_array_equal(fast_params.zero_point, slow_params.zero_point)


def test_affine_row_buffer_changes_speed_only():
    # Wide tensors run their per-row ops with numpy's buffer cut to a row (2-3x faster on numpy 2);
    # the codes, the parameters and the decoded values are those of the default buffer, and the
    # buffer is numpy's default again afterwards, also when quantization refuses its input.
    x = np.random.default_rng(3).normal(0, 0.05, (128, 784)).astype(np.float32)
    before = np.getbufsize()
    codes, params = codecs.affine_quantize(x, 8, channels=128)
    back = codecs.affine_dequantize(codes, params)
    assert np.getbufsize() == before
    with mock.patch.object(codecs, "_ROW_BUFFER_FROM", 1 << 40):
        plain_codes, plain_params = codecs.affine_quantize(x, 8, channels=128)
        plain_back = codecs.affine_dequantize(plain_codes, plain_params)
    np.testing.assert_array_equal(codes, plain_codes)
    np.testing.assert_array_equal(params.scale, plain_params.scale)
    np.testing.assert_array_equal(back, plain_back)
    with mock.patch.object(codecs, "_channel_view", side_effect=MemoryError):  # inside the narrowed buffer
        with pytest.raises(MemoryError):
            codecs.affine_quantize(x, 8, channels=128)
    assert np.getbufsize() == before


def test_affine_clips_when_the_zero_point_rounds_up_by_half():
    # lo -1.5, hi 253.5: scale 1, zero point rint(1.5) = 2, so hi lands on 256 before the clip
    x = np.array([-1.5, 253.5, 0.0, 7.0], dtype=np.float32)
    assert codecs._beyond_codes(np.array([-1.5]), np.array([253.5]), np.float32([1.0]), np.float32([2.5]), 255)

    codes, params = codecs.affine_quantize(x, 8)

    assert list(codes) == [1, 255, 2, 9]  # 253.5 + 2.5 = 256 without the clip
    assert np.all(np.abs(codecs.affine_dequantize(codes, params) - x) <= 1.0)


def test_affine_range_beyond_float32_times_levels_keeps_a_finite_scale():
    # 1 bit over [-3e38, 3e38]: span / levels overflows float32; the scale stops at its largest value
    x = np.array([-3e38, 3e38, 0.0], dtype=np.float32)

    codes, params = codecs.affine_quantize(x, 1)
    back = codecs.affine_dequantize(codes, codecs.QuantParams.from_bytes(params.to_bytes(), 1, 1))

    assert np.isfinite(params.scale).all() and np.isfinite(back).all()


def test_affine_per_channel_scales_each_row():
    x = np.array([[0.0, 1.0, 2.0, 3.0], [0.0, -100.0, 50.0, 100.0]], dtype=np.float32)

    codes, params = codecs.affine_quantize(x, 8, channels=2)

    np.testing.assert_allclose(params.scale, [3 / 255, 200 / 255], rtol=1e-6)
    np.testing.assert_allclose(codecs.affine_dequantize(codes, params).reshape(2, 4), x, atol=0.4)


def test_affine_counts_split_sparse_values_into_their_channels_empty_ones_included():
    # Prepare: the kept values of a 3 x 4 tensor whose middle row kept nothing
    values = np.array([0.5, -1.0, 2.0, 8.0, 4.0], dtype=np.float32)
    counts = np.array([3, 0, 2])
    # Execute
    codes, params = codecs.affine_quantize(values, 8, counts=counts, channels=3)
    back = codecs.affine_dequantize(codes, params, counts)
    # Assert: each channel's range is its own values' (and 0); the empty one has scale 1
    np.testing.assert_allclose(params.scale, [3 / 255, 1.0, 8 / 255], rtol=1e-6)
    np.testing.assert_array_equal(params.zero_point, [85, 0, 0])
    np.testing.assert_allclose(back, values, atol=8 / 255 / 2 + 1e-6)
    assert list(codecs.channel_counts(np.array([0, 1, 3, 9, 11]), 12, 3)) == [3, 0, 2]


def test_affine_full_float32_range_stays_finite():
    x = np.array([-3.4e38, 3.4e38, 0.0, 1.0], dtype=np.float32)

    back = codecs.affine_dequantize(*codecs.affine_quantize(x, 8))

    assert np.all(np.isfinite(back))
    assert np.all(np.abs(back.astype(np.float64) - x) <= _bound(x, 8, False))


def test_stochastic_rounding_is_unbiased():
    x = np.full(20000, 0.3, dtype=np.float32)
    x[0] = 1.0  # step 1/3: 0.3 lies between codes 0.0 and 0.333

    codes, params = codecs.affine_quantize(x, 2, rng=np.random.default_rng(0))

    assert abs(codecs.affine_dequantize(codes, params)[1:].mean() - 0.3) < 0.005


def _arrays_to_quantize(data, count):
    """`count` arrays as a message holds them: dense with 1 to 4 channels, or the kept values of a
    sparse one with per-channel counts (some empty), some with stochastic rounding, some empty."""
    arrays = []
    for number in range(count):
        channels = data.draw(st.integers(1, 4))
        row = data.draw(st.integers(0, 6))
        values = np.array(data.draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=channels * row,
                                             max_size=channels * row)), dtype=np.float32)
        counts = None
        if data.draw(st.booleans()):  # sparse: the rows of `counts`
            counts = np.array(data.draw(st.lists(st.integers(0, 3), min_size=channels, max_size=channels)))
            values = np.resize(values, int(counts.sum())) if values.size else np.zeros(int(counts.sum()), np.float32)
        elif row == 0:
            channels = 1  # a dense tensor without values has one channel
        rng = np.random.default_rng(number) if data.draw(st.booleans()) else None
        arrays.append(codecs.AffineInput(values, counts, channels, rng, "t%d" % number))
    return arrays


@given(bits=st.integers(1, 8), count=st.integers(1, 5), data=st.data())
def test_affine_quantize_all_equals_one_call_each(bits, count, data):
    # The parameters of all arrays are computed together; each array's codes and parameters are
    # those of quantizing it alone (stochastic ones with the same generator state).
    arrays = _arrays_to_quantize(data, count)
    together = codecs.affine_quantize_all(arrays, bits)
    for array, (codes, params) in zip(_arrays_to_quantize_again(arrays), together):
        alone_codes, alone_params = codecs.affine_quantize(array.values, bits, array.counts, array.channels, array.rng)
        np.testing.assert_array_equal(codes, alone_codes)
        np.testing.assert_array_equal(params.scale, alone_params.scale)
        np.testing.assert_array_equal(params.zero_point, alone_params.zero_point)


def _arrays_to_quantize_again(arrays):
    """The same arrays with their generators back at their first state."""
    return [array._replace(rng=np.random.default_rng(int(array.name[1:])) if array.rng is not None else None)
            for array in arrays]


def test_affine_quantize_all_names_the_first_array_that_is_not_finite():
    good = codecs.AffineInput(np.ones(4, np.float32), name="fine")
    bad = codecs.AffineInput(np.array([1.0, np.nan], np.float32), channels=2, name="bad")
    worse = codecs.AffineInput(np.array([np.inf], np.float32), name="worse")
    with pytest.raises(MessageError, match=r"^tensor 'bad': NaN or Inf cannot be quantized$"):
        codecs.affine_quantize_all([good, bad, worse], 8)
    with pytest.raises(MessageError, match=r"^NaN or Inf cannot be quantized$"):
        codecs.affine_quantize(np.array([np.inf], np.float32), 8)


def test_affine_rejects_bits_out_of_range():
    with pytest.raises(ConfigError, match="1..8"):
        codecs.affine_quantize(np.ones(3, np.float32), 9)


@pytest.mark.parametrize("coder", ["deflate", "lzma"])
def test_entropy_round_trip_and_bounds(coder):
    raw = bytes(range(256)) * 40

    packed = codecs.entropy_compress(raw, coder)

    assert codecs.entropy_decompress(packed, coder, len(raw)) == raw
    with pytest.raises(MessageError, match="more than the declared"):
        codecs.entropy_decompress(packed, coder, len(raw) - 1)
    with pytest.raises(MessageError, match="header declares"):
        codecs.entropy_decompress(packed, coder, len(raw) + 1)
    with pytest.raises(MessageError, match="truncated|corrupt"):
        codecs.entropy_decompress(packed[: len(packed) // 2], coder, len(raw))
    with pytest.raises(MessageError, match="stray"):
        codecs.entropy_decompress(packed + b"\x00", coder, len(raw))


def test_unknown_entropy_coder_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown entropy coder 'zip'"):
        codecs.entropy_compress(b"abc", "zip")
