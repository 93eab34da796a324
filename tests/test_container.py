"""The message container: round trips, determinism, byte accounting, strict decoding."""

import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcore import (
    FORMAT_VERSION,
    DecodeLimits,
    Message,
    MessageError,
    TensorCodec,
    container,
    decode_message,
    encode_message,
)
from fedcore.errors import ConfigError, FedCoreError
from tests.message_kit import checksummed, entry, frame, frame_json, header

codec_specs = st.builds(
    TensorCodec,
    bits=st.none() | st.integers(1, 8),
    per_channel=st.booleans(),
    sparse=st.sampled_from(["auto", "bitmap", "delta", "dense"]),
    entropy=st.sampled_from([None, "deflate", "lzma"]),
).flatmap(
    lambda c: st.sampled_from([c, TensorCodec(**{**c.__dict__, "stochastic": True})] if c.bits else [c])
)

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
tensors = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7),
    elements=st.one_of(st.just(0.0), finite32, st.floats(-1.0, 1.0, width=32)),
)


def _channel_bound(x, spec):
    """Largest error quantization may make on each value of x (float64)."""
    levels = (1 << spec.bits) - 1
    if x.size == 0:
        return np.zeros(x.shape)
    rows = x.reshape(x.shape[0], -1) if spec.per_channel and x.ndim >= 2 else x.reshape(1, -1)
    lo = np.minimum(rows.min(axis=1), 0).astype(np.float64)
    hi = np.maximum(rows.max(axis=1), 0).astype(np.float64)
    step = (hi - lo) / levels
    step = step if spec.stochastic else step / 2
    slack = 1e-6 * np.abs(rows).max(axis=1) + 1e-37
    return np.broadcast_to((step + slack)[:, None], rows.shape).reshape(x.shape)


@given(arrays=st.lists(tensors, min_size=1, max_size=3), spec=codec_specs, round_=st.integers(0, 10**6))
def test_round_trip_every_codec(arrays, spec, round_):
    message = Message({"t%d" % i: a for i, a in enumerate(arrays)}, round=round_, sender="board-7",
                      num_samples=42, kind="delta", extra={"lr": 0.1})

    blob, report = encode_message(message, spec)
    back = decode_message(blob)

    assert (back.round, back.sender, back.num_samples, back.kind, back.extra) == (round_, "board-7", 42, "delta", {"lr": 0.1})
    assert list(back.tensors) == list(message.tensors)
    for name, x in message.tensors.items():
        y = back.tensors[name]
        assert y.dtype == np.float32 and y.shape == x.shape
        if spec.bits is None:
            np.testing.assert_array_equal(y, x)
        else:
            assert np.all(np.abs(y.astype(np.float64) - x) <= _channel_bound(x, spec))
            assert np.all(y[x == 0] == 0), "zeros (pruned weights) must decode exactly"
    assert report.encoded_bytes == len(blob)
    assert report.raw_bytes == 4 * sum(a.size for a in arrays)
    assert report.header_bytes + sum(t.encoded_bytes for t in report.tensors) == len(blob)
    assert encode_message(message, spec)[0] == blob, "encoding must be deterministic"
    header = blob[10:10 + struct.unpack_from("<I", blob, 6)[0]]
    assert header == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":")).encode(), "canonical"


def test_codec_per_tensor_by_mapping_and_function():
    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float32)}

    blob, report = encode_message(Message(tensors), {"w": TensorCodec(bits=4), "b": TensorCodec()})
    _, report2 = encode_message(Message(tensors), lambda name, a: TensorCodec(bits=2 if a.ndim == 2 else None))

    assert [t.codec for t in report.tensors] == [("affine",), ()]
    assert [t.codec for t in report2.tensors] == [("affine",), ()]
    with pytest.raises(ConfigError, match="no codec given for tensor 'b'"):
        encode_message(Message(tensors), {"w": TensorCodec()})


def test_auto_layout_picks_smallest_exact_size():
    x = np.zeros(10000, np.float32)
    x[[3, 5000]] = 1.0  # very sparse: delta indices win
    y = np.zeros(10000, np.float32)
    y[::3] = 1.0  # a third dense: bitmap wins
    z = np.ones(100, np.float32)  # dense

    _, report = encode_message(Message({"x": x, "y": y, "z": z}), TensorCodec(bits=8))

    sizes = {t.name: t for t in report.tensors}
    assert sizes["x"].codec == ("sparse", "affine") and sizes["x"].encoded_bytes == 3 + 5 + 2
    assert sizes["y"].encoded_bytes == 1250 + 5 + 3334
    assert sizes["z"].codec == ("affine",)


def test_entropy_stage_skipped_when_it_does_not_shrink():
    noise = np.random.default_rng(0).standard_normal(8).astype(np.float32)

    _, report = encode_message(Message({"n": noise}), TensorCodec(entropy="lzma"))

    assert report.tensors[0].codec == ()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_rejects_nonfinite(bad):
    with pytest.raises(MessageError, match="'w' holds NaN or Inf"):
        encode_message(Message({"w": np.array([1.0, bad], np.float32)}))


def test_nonfinite_allowed_when_asked():
    x = np.array([np.nan, np.inf, 1.0], np.float32)

    blob, _ = encode_message(Message({"w": x}), allow_nonfinite=True)

    with pytest.raises(MessageError, match="NaN or Inf"):
        decode_message(blob)
    np.testing.assert_array_equal(decode_message(blob, DecodeLimits(allow_nonfinite=True)).tensors["w"], x)


@pytest.mark.parametrize(
    "message, reason",
    [
        (Message({"": np.ones(1)}), "tensor names"),
        (Message({"w": np.array(["a"])}), "only numbers travel"),
        (Message({"w": np.ones(1)}, round=-1), r"\$\.meta\.round: expected an integer in 0\.\."),
        (Message({"w": np.ones(1)}, kind="Weights!"), r"\$\.meta\.kind: expected a string"),
        (Message({"w": np.ones(1)}, num_samples=10**30), r"\$\.meta\.num_samples"),
        (Message({"w": np.ones(1)}, extra={"deep": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}), "nested deeper than 16"),
        (Message({"w": np.ones(1)}, sender="\ud800"), "lone UTF-16 surrogate"),
        (Message({"w": np.ones(1)}, extra={"x": object()}), "not plain JSON"),
    ],
)
def test_encode_rejects_bad_messages(message, reason):
    with pytest.raises(MessageError, match=reason):
        encode_message(message)


# ---------------------------------------------------------------- strict decoding


def _valid_blob():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    w[np.abs(w) < 0.7] = 0
    tensors = {"fc.weight": w, "fc.bias": rng.standard_normal(6).astype(np.float32)}
    return encode_message(Message(tensors, round=2, sender="c1", num_samples=5), TensorCodec(bits=3, entropy="deflate"))[0]


def _rebuild(document, payload=b""):
    return frame_json(document, payload)


_header = header
_entry = entry


@pytest.mark.parametrize(
    "blob, reason",
    [
        (b"", "shorter than the 10-byte prefix"),
        (b"NOPE" + b"\x01\x00" + b"\x00" * 4, "wrong magic"),
        (frame_json(_header([]), version=3), "format version 3 is not supported: this decoder reads version 2"),
        (frame(b"{}")[:-5], "truncated message: a 2-byte header and the 4-byte checksum"),
        (frame(b"{}")[:-1] + b"\x00", "checksum mismatch"),
        (frame(b"\xff\xfe"), "not ASCII JSON \\(byte 0\\)"),
        (frame(b"{x}"), "not valid JSON"),
        (frame(b"[" * 2000 + b"]" * 2000), "nested deeper than 16 levels"),
        (_rebuild(_header([_entry()]), b"\x00" * 7), "truncated payload"),
        (_rebuild(_header([_entry()]), b"\x00" * 9), "1 trailing bytes"),
        (_rebuild(_header([_entry(nbytes=4)]), b"\x00" * 4), "the codec chain implies 8"),
        (_rebuild(_header([_entry(shape=[2**40])])), r"\$.tensors\[0\].shape\[0\]: expected an integer in 0..33554432"),
        (_rebuild(_header([_entry(shape=[2**13, 2**13, 2])])), "exceeds the limit of 33554432 elements"),
        (_rebuild(_header([_entry(shape=[-1])])), "expected an integer in 0..33554432, got -1"),
        (_rebuild(_header([_entry(shape=[True])])), "expected an integer in 0..33554432, got true"),
        (_rebuild(_header([_entry(shape=[1] * 9)])), "expected a list of 0..8 items, got 9"),
        (_rebuild(_header([_entry(codec=[{"op": "zstd"}])])), r'codec\[0\].op: unknown op: expected one of .*"lzma", "sparse", got "zstd"'),
        (_rebuild(_header([_entry(codec=[{"op": "deflate"}, {"op": "sparse", "format": "bitmap", "nnz": 1}])])), "out of order"),
        (_rebuild(_header([_entry(codec=[{"op": "deflate"}, {"op": "deflate"}])])), "out of order or repeated"),
        (_rebuild(_header([_entry(codec=[{"op": "affine", "bits": 9, "per_channel": False, "rounding": "nearest"}])])), "bits: expected an integer in 1..8, got 9"),
        (_rebuild(_header([_entry(codec=[{"op": "affine", "bits": 2, "per_channel": True, "rounding": "nearest"}])])), "per_channel must be false below 2 dimensions"),
        (_rebuild(_header([_entry(codec=[{"op": "sparse", "format": "bitmap", "nnz": 3}])])), "nnz must be an integer in 0..2"),
        (_rebuild(_header([_entry(codec=[{"op": "sparse", "format": "bitmap", "nnz": 1, "pos_bytes": 1}])])), "unknown key \"pos_bytes\""),
        (_rebuild(_header([_entry(codec=[{"op": "sparse", "format": "delta", "nnz": 1}])])), "missing key\\(s\\) \"pos_bytes\""),
        (_rebuild(_header([_entry(codec=[{"op": "sparse", "format": "delta", "nnz": 1, "pos_bytes": 50}])])), "pos_bytes must be an integer in 1..1"),
        (_rebuild(_header([_entry(), _entry()]), b"\x00" * 16), "appears twice"),
        (_rebuild(_header([_entry(nbytes=-8)])), "nbytes: expected an integer"),
        (_rebuild({"meta": {}, "tensors": []}), r"\$.meta: missing key\(s\) \"round\""),
        (_rebuild({"tensors": []}), r"\$: missing key\(s\) \"meta\""),
        (_rebuild(dict(_header([]), more=1)), r"\$: unknown key \"more\" \(known: meta, tensors\)"),
        (_rebuild(_header([_entry()]), np.array([1, np.nan], np.float32).tobytes()), "NaN or Inf"),
        (frame(b"NaN"), "NaN is not JSON"),
        (frame(b'{"a":1,"a":2}'), "repeats the key \"a\""),
    ],
)
def test_decode_rejects_with_a_precise_reason(blob, reason):
    with pytest.raises(MessageError, match=reason):
        decode_message(blob)


def test_limits_are_configurable():
    blob = _valid_blob()

    with pytest.raises(MessageError, match="exceeds the limit of 100"):
        decode_message(blob, DecodeLimits(max_message_bytes=100))
    with pytest.raises(MessageError, match="limit of 10 elements"):
        decode_message(blob, DecodeLimits(max_elements=10))
    with pytest.raises(MessageError, match="header of .* exceeds the limit of 20"):
        decode_message(blob, DecodeLimits(max_header_bytes=20))
    with pytest.raises(MessageError, match=r"\$.tensors: expected a list of 0..1 items, got 2"):
        decode_message(blob, DecodeLimits(max_tensors=1))


def test_decompression_bomb_is_stopped_without_allocating():
    bomb = zlib.compress(b"\x00" * (200 << 20), 9)  # 200 MB of zeros, about 200 KB compressed
    blob = _rebuild(_header([_entry(shape=[4], nbytes=len(bomb), codec=[{"op": "deflate"}])]), bomb)

    tracemalloc.start()
    with pytest.raises(MessageError, match="more than the declared 16 bytes"):
        decode_message(blob)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert peak < 4 * len(blob) + (1 << 20)


def test_decode_rejects_non_bytes():
    with pytest.raises(MessageError, match="bytes, got str"):
        decode_message("FEDC")


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_message_error(data):
    for blob in (data, b"FEDC" + struct.pack("<H", FORMAT_VERSION) + data, checksummed(b"FEDC\x02\x00" + data)):
        try:
            decode_message(blob)
        except MessageError:
            pass


def test_every_truncation_is_rejected():
    blob = _valid_blob()
    for cut in range(len(blob)):
        with pytest.raises(MessageError):
            decode_message(blob[:cut])


@given(st.data())
def test_bit_flips_never_decode(data):
    """Up to 3 flipped bits: CRC-32 detects them all in messages below 91,607 bits (Hamming distance 4)."""
    original = _valid_blob()
    blob = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(blob) - 1))
        blob[position] ^= 1 << data.draw(st.integers(0, 7))
    if bytes(blob) == original:  # two flips of the same bit
        return
    with pytest.raises(MessageError):
        decode_message(bytes(blob))


def test_errors_share_one_base():
    assert issubclass(MessageError, FedCoreError) and issubclass(MessageError, ValueError)


def test_numpy_integers_in_meta_are_accepted():
    blob, _ = encode_message(Message({"w": np.ones(2)}, round=np.int64(4), num_samples=np.int32(9)))

    decoded = decode_message(blob)

    assert (decoded.round, decoded.num_samples) == (4, 9)


# ---------------------------------------------------------------- headers of a known tensor table


def _outcome(blob, limits):
    """What decode_message makes of `blob`: the message's meta and tensors, or the refusal."""
    try:
        message = decode_message(blob, limits)
    except MessageError as exc:
        return "refused", str(exc)
    return "decoded", message.meta(), {name: (value.shape, value.tobytes()) for name, value in message.tensors.items()}


def _fresh_outcome(blob, limits):
    """The same with no tensor table kept from earlier messages: the reference."""
    container._KNOWN_TABLES.clear()
    return _outcome(blob, limits)


_TABLE_MESSAGE = Message({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.float32)})
_TABLE_BLOB, _ = encode_message(_TABLE_MESSAGE, TensorCodec(bits=8, sparse="dense"))
_HEADER_LENGTH = struct.unpack_from("<I", _TABLE_BLOB, 6)[0]
_HEADER_TEXT = _TABLE_BLOB[10:10 + _HEADER_LENGTH]
_TABLE_PAYLOAD = _TABLE_BLOB[10 + _HEADER_LENGTH:-4]
_TABLE_TEXT = _HEADER_TEXT[_HEADER_TEXT.index(b',"tensors":['):]

# What may stand before a known table: real metas (their strings holding the table's own key and
# brackets, escaped) and texts that are not a meta at all or hide more than one
json_text = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(alphabet='",:[]{}\\tensor\u00e9'),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                             st.sampled_from(["tensors", "meta", "a", ""]), inner, max_size=3), max_leaves=8)
metas = st.fixed_dictionaries({
    "round": st.integers(0, 5), "sender": st.text(alphabet=',"tensors:[]{}\\\u00e9x\x7f\x1f', max_size=12)
    | st.sampled_from(["s" * 256, "s" * 257]),
    "num_samples": st.integers(0, 5) | st.sampled_from([2**53 - 1, 2**53, 10**16, -1]),
    "kind": st.sampled_from(["weights", "delta", "Bad", "k" * 32, "k" * 33]),
    "extra": st.dictionaries(st.sampled_from(["tensors", "meta", "k"]), json_text, max_size=3),
})
meta_parts = st.one_of(
    metas.map(lambda meta: b'{"meta":' + json.dumps(meta, separators=(",", ":")).encode()),
    metas.map(lambda meta: b'{"meta":' + json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()),
    st.tuples(metas, st.sampled_from([b',"x":1', b',"meta":{}', b"}", b' ', b',"tensors":[]', b"{", b"]", b"\xc3\xa9"]))
    .map(lambda pair: b'{"meta":' + json.dumps(pair[0], separators=(",", ":")).encode() + pair[1]),
    st.binary(max_size=20).map(lambda junk: b'{"meta":' + junk),
)


def _plain_meta(kind=b"weights", samples=b"0", round_=b"0", sender=b""):
    return b'{"meta":{"extra":{},"kind":"%s","num_samples":%s,"round":%s,"sender":"%s"}' % (kind, samples, round_, sender)


@given(meta_part=meta_parts, depth=st.sampled_from([16, 4, 3]))
@example(meta_part=_plain_meta(samples=b"9007199254740991", round_=b"9007199254740992"), depth=16)
@example(meta_part=_plain_meta(samples=b"9007199254740992"), depth=16)
@example(meta_part=_plain_meta(samples=b"00"), depth=16)
@example(meta_part=_plain_meta(sender=b'a\\"b'), depth=16)
@example(meta_part=_plain_meta(sender=b"a\\\\b"), depth=16)
@example(meta_part=_plain_meta(sender=b"\x7f\x1f"), depth=16)
@example(meta_part=_plain_meta(sender=b"s" * 256), depth=16)
@example(meta_part=_plain_meta(sender=b"s" * 257), depth=16)
@example(meta_part=_plain_meta(kind=b"k" * 33), depth=16)
@example(meta_part=_plain_meta(kind=b"Weights"), depth=16)
def test_a_header_of_a_known_table_decodes_as_any_other(meta_part, depth):
    # A receiver keeps the tensor tables it has checked and then checks only the meta before one:
    # every header ending in a known table decodes, or is refused, exactly as with none kept.
    limits = DecodeLimits(max_header_depth=depth)
    blob = frame(meta_part + _TABLE_TEXT, _TABLE_PAYLOAD)
    reference = _fresh_outcome(blob, limits)
    _outcome(_TABLE_BLOB, limits)  # the table is known now (when these limits accept it)
    assert _outcome(blob, limits) == reference


def test_a_known_table_skips_its_own_check_and_only_a_dense_stable_one_is_kept(monkeypatch):
    container._KNOWN_TABLES.clear()
    reference = decode_message(_TABLE_BLOB)
    checks = []
    monkeypatch.setattr(container, "_parse_header", lambda *args: checks.append(args) or pytest.fail("checked again"))
    other = decode_message(frame(b'{"meta":{"extra":{"n":[1]},"kind":"delta","num_samples":7,"round":3,"sender":"b"}'
                                 + _TABLE_TEXT, _TABLE_PAYLOAD))
    assert (other.kind, other.round, other.num_samples, other.sender, other.extra) == ("delta", 3, 7, "b", {"n": [1]})
    assert all(np.array_equal(other.tensors[name], reference.tensors[name]) for name in reference.tensors)
    monkeypatch.undo()
    # sparse positions and entropy stages change their sizes from message to message: never kept
    for codec in (TensorCodec(bits=8, sparse="bitmap"), TensorCodec(entropy="deflate")):
        container._KNOWN_TABLES.clear()
        decode_message(encode_message(Message({"w": np.zeros(64, np.float32)}), codec)[0])
        assert not container._KNOWN_TABLES


def test_known_tables_are_few_and_small():
    container._KNOWN_TABLES.clear()
    for number in range(container._KNOWN_TABLES_AT_MOST + 3):
        decode_message(encode_message(Message({"w%d" % number: np.ones(2, np.float32)}))[0])
    assert len(container._KNOWN_TABLES) == container._KNOWN_TABLES_AT_MOST
    assert ((',"tensors":[{"codec":[],"name":"w%d"' % (container._KNOWN_TABLES_AT_MOST + 2)).encode()
            in b"".join(table for table, _ in container._KNOWN_TABLES))
    many = {"t%d" % number: np.ones(1, np.float32) for number in range(1400)}  # a table of about 77 KB
    container._KNOWN_TABLES.clear()
    decode_message(encode_message(Message(many))[0])
    assert not container._KNOWN_TABLES


outgoing_metas = st.fixed_dictionaries({
    "round": st.integers(-1, 5) | st.sampled_from([2**53 - 1, 2**53, True, np.int64(3), 1.0]),
    "sender": st.text(max_size=6) | st.sampled_from(["s" * 256, "s" * 257, '"', "\\", "\ud800", "\x7f", "\x1f", 5]),
    "num_samples": st.integers(0, 5) | st.sampled_from([2**53, np.int32(2), False]),
    "kind": st.sampled_from(["weights", "delta", "Bad", "k" * 32, "k" * 33, "", None]),
    "extra": st.sampled_from([{}, {"a": 1}, [], None, np.array([1, 2]), np.array([])]),
})


@given(meta=outgoing_metas)
def test_a_plain_metas_template_is_the_canonical_encoders_text(meta):
    # encode_message writes a plain meta by a template checked with the decoder's pattern; any
    # meta gives the text, or the refusal, of the schema check and the canonical encoder.
    def outcome(write):
        try:
            return write()
        except MessageError as exc:
            return "refused: %s" % exc
    limits = container._DEFAULT_LIMITS
    assert (outcome(lambda: container._meta_text(meta, limits))
            == outcome(lambda: container._checked_meta_text(meta, limits)))


def test_a_plain_meta_takes_the_template(monkeypatch):
    meta = {"round": 3, "sender": "board-7", "num_samples": 42, "kind": "delta", "extra": {}}
    expected = container._canonical_text(meta)
    monkeypatch.setattr(container, "_checked_meta_text", lambda *args: pytest.fail("went through the schema"))
    assert container._meta_text(meta, container._DEFAULT_LIMITS) == expected
