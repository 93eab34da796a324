"""Hostile containers: one test per crash class of issue 13, and a structure-aware fuzzer.

The fuzzer starts from valid messages of every codec and mutates what a random
byte fuzzer almost never reaches: header fields (types, ranges, missing and
unknown keys), codec chains and their parameters, shapes and sizes, the LEB128
varints of delta positions and the bits of bitmaps, and the JSON text itself
(nesting, huge numbers, NaN, duplicate keys, surrogates). Each mutant is framed
with a valid checksum, so that it reaches the header and payload checks, and
the decoder may only answer MessageError or a finite float32 model.

It runs for FEDCORE_FUZZ_SECONDS seconds (default 3; `make fuzz` runs it for
5 minutes), seeded by FEDCORE_FUZZ_SEED (default 0), and reports the first
crash with the mutant's hex and the seed to replay it.
"""

import copy
import json
import os
import random
import struct
import sys
import time
import traceback

import numpy as np
import pytest

from fedcore import DecodeLimits, Message, MessageError, TensorCodec, decode_message, encode_message
from tests.message_kit import entry, frame, frame_json, header

FUZZ_SECONDS = float(os.environ.get("FEDCORE_FUZZ_SECONDS", "3"))
FUZZ_SEED = int(os.environ.get("FEDCORE_FUZZ_SEED", "0"))
LIMITS = DecodeLimits(max_elements=1 << 16)


# ---------------------------------------------------------------- the crash classes of issue 13


@pytest.mark.parametrize("stage", [
    {"op": ["deflate"]},
    {"op": {"deflate": 1}},
    {"op": "sparse", "format": ["bitmap"], "nnz": 1},
    {"op": "affine", "bits": [8], "per_channel": False, "rounding": "nearest"},
    {"op": "affine", "bits": 8, "per_channel": False, "rounding": {"a": 1}},
])
def test_unhashable_codec_values_are_refused(stage):
    """Class 1: a list or object where a codec string or number is expected (TypeError before)."""
    blob = frame_json(header([entry(codec=[stage])]), b"\x00" * 8)

    with pytest.raises(MessageError, match=r"\$\.tensors\[0\]\.codec\[0\]\.\w+: (unknown|expected)"):
        decode_message(blob)


def test_wrapping_varint_positions_are_refused():
    """Class 2: delta positions of over-long varints whose sum wraps int64 (IndexError before)."""
    positions = b"\xff" * 8 + b"\x7f" + b"\xff" * 8 + b"\x7f" + b"\x00"  # gaps 2**63-1, 2**63-1, 0
    stage = {"op": "sparse", "format": "delta", "nnz": 3, "pos_bytes": len(positions)}
    blob = frame_json(header([entry(shape=(4,), nbytes=len(positions) + 12, codec=[stage])]),
                      positions + np.ones(3, "<f4").tobytes())

    with pytest.raises(MessageError, match="pos_bytes must be an integer in 3..3"):
        decode_message(blob)


def test_deep_json_is_refused_by_a_scan_not_by_recursion():
    """Class 3: 100,000 nested arrays in the header (RecursionError, caught or not, before)."""
    text = ('{"meta":{"extra":{"a":%s},"kind":"weights","num_samples":0,"round":0,"sender":""},"tensors":[]}'
            % ("[" * 100_000 + "]" * 100_000)).encode()
    blob = frame(text)
    depth = _stack_depth()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 80)  # room for the decoder's own calls, not for 100,000 levels
    try:
        start = time.perf_counter()
        with pytest.raises(MessageError, match=r"header \$ \(byte 35\): nested deeper than 16 levels"):
            decode_message(blob, DecodeLimits(max_header_bytes=1 << 20))
        elapsed = time.perf_counter() - start
    finally:
        sys.setrecursionlimit(limit)
    assert elapsed < 0.5


@pytest.mark.parametrize("field, text, reason", [
    ("num_samples", "9" * 400, "an integer of 400 digits exceeds the limit of 20 digits"),
    ("round", "1" + "0" * 399, "an integer of 400 digits"),
    ("extra", '{"metrics":{"loss":%s}}' % ("7" * 400), "an integer of 400 digits"),
    ("extra", '{"metrics":{"loss":1e400}}', "the number 1e400 is beyond the float64 range"),
    ("extra", '{"metrics":{"loss":-Infinity}}', "-Infinity is not JSON"),
])
def test_huge_numbers_are_refused(field, text, reason):
    """Class 4: a 400-digit integer or an infinite number (OverflowError later, in FedAvg or metrics)."""
    fields = {"extra": "{}", "kind": '"weights"', "num_samples": "0", "round": "0", "sender": '""'}
    fields[field] = text
    meta = ",".join('"%s":%s' % item for item in sorted(fields.items()))
    blob = frame(('{"meta":{%s},"tensors":[]}' % meta).encode())

    with pytest.raises(MessageError, match=reason):
        decode_message(blob)


def test_a_huge_dimension_of_an_empty_tensor_is_refused():
    """A shape (0, 2**63) has no element but numpy cannot build it (ValueError before)."""
    blob = frame_json(header([entry(shape=(0, 2**63), nbytes=0)]))

    with pytest.raises(MessageError, match=r"shape\[1\]: expected an integer in 0..33554432"):
        decode_message(blob)


def test_a_lone_surrogate_is_refused():
    """A sender "\\ud800" decodes to a str that cannot be encoded (UnicodeEncodeError later)."""
    blob = frame(b'{"meta":{"extra":{},"kind":"weights","num_samples":0,"round":0,"sender":"\\ud800"},"tensors":[]}')

    with pytest.raises(MessageError, match="lone UTF-16 surrogate"):
        decode_message(blob)


def _stack_depth() -> int:
    frame_, depth = sys._getframe(), 0
    while frame_ is not None:
        frame_, depth = frame_.f_back, depth + 1
    return depth


# ---------------------------------------------------------------- the fuzzer


def _seed_messages():
    """Valid messages that use every codec path: dense, bitmap, delta, affine, entropy."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    w[np.abs(w) < 0.6] = 0
    sparse = np.zeros(300, np.float32)
    sparse[[3, 140, 299]] = [1.5, -2.0, 0.25]
    tensors = {"fc.weight": w, "fc.bias": rng.standard_normal(6).astype(np.float32), "s": sparse,
               "empty": np.zeros((0, 3), np.float32), "scalar": np.float32(0.5)}
    codecs = [
        TensorCodec(sparse="dense"),
        TensorCodec(sparse="delta"),
        TensorCodec(sparse="bitmap"),
        TensorCodec(bits=8),
        TensorCodec(bits=3, sparse="bitmap", per_channel=False),
        TensorCodec(bits=2, sparse="delta", stochastic=True),
        TensorCodec(bits=4, entropy="deflate"),
        TensorCodec(sparse="delta", entropy="lzma"),
    ]
    message = Message(tensors, round=3, sender="pynq-01", num_samples=60, kind="delta",
                      extra={"metrics": {"loss": 0.5}, "base_round": 2})
    return [encode_message(message, codec)[0] for codec in codecs]


def _split(blob):
    """(header object, payload of each tensor) of a valid message."""
    _, _, length = struct.unpack_from("<4sHI", blob)
    document = json.loads(blob[10:10 + length])
    offset, payloads = 10 + length, []
    for item in document["tensors"]:
        payloads.append(blob[offset:offset + item["nbytes"]])
        offset += item["nbytes"]
    return document, payloads


INTERESTING = [
    None, True, False, 0, 1, -1, 2, 3, 7, 8, 9, 255, 256, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, 2**63,
    2**64, -2**63, 10**30, 0.5, -0.0, 1.0, 1e308, "", "x", "sparse", "affine", "deflate", "lzma", "zstd",
    "bitmap", "delta", "nearest", "stochastic", "weights", "x" * 300, [], [1], [[]], ["deflate"], {},
    {"op": "deflate"}, {"a": {"b": {}}}, [2, 3], [0], [2**40],
]


def _interesting(rng):
    return copy.deepcopy(rng.choice(INTERESTING))  # the pool itself is never mutated


def _slots(document):
    """Every (container, key) of the document, found without recursion."""
    slots, stack = [], [document]
    while stack:
        node = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            slots.append((node, key))
            if isinstance(node[key], (dict, list)):
                stack.append(node[key])
    return slots


def _replace_a_field(rng, document, payloads):
    slots = _slots(document)
    node, key = rng.choice(slots)
    node[key] = _interesting(rng)
    return document, payloads


def _drop_or_add_a_key(rng, document, payloads):
    objects = [document] + [node[key] for node, key in _slots(document) if isinstance(node[key], dict)]
    node = rng.choice(objects)
    if node and rng.random() < 0.5:
        del node[rng.choice(list(node))]
    else:
        node[rng.choice(["extra", "op", "pos_bytes", "format", "nnz", "zzz"])] = _interesting(rng)
    return document, payloads


def _mutate_a_codec(rng, document, payloads):
    tensors = document["tensors"]
    if not tensors:
        return document, payloads
    item = rng.choice(tensors)
    chain = item["codec"]
    choice = rng.randrange(6)
    if choice == 0 and chain:  # a parameter off by a little or a lot
        stage = rng.choice(chain)
        key = rng.choice(list(stage))
        value = stage[key]
        stage[key] = value + rng.choice([-2, -1, 1, 2, 1 << 20]) if isinstance(value, int) and not isinstance(value, bool) \
            else _interesting(rng)
    elif choice == 1:
        rng.shuffle(chain)
    elif choice == 2 and chain:
        chain.insert(rng.randrange(len(chain) + 1), dict(rng.choice(chain)))
    elif choice == 3 and chain:
        chain.pop(rng.randrange(len(chain)))
    elif choice == 4:
        chain.insert(rng.randrange(len(chain) + 1), rng.choice([
            {"op": "deflate"}, {"op": "lzma"}, {"op": "sparse", "format": "bitmap", "nnz": 1},
            {"op": "sparse", "format": "delta", "nnz": 2, "pos_bytes": 2},
            {"op": "affine", "bits": 4, "per_channel": True, "rounding": "nearest"}]))
    else:  # shape and size
        shape = item["shape"]
        if shape and rng.random() < 0.5:
            shape[rng.randrange(len(shape))] += rng.choice([-1, 1, 7])
        elif rng.random() < 0.5:
            shape.append(rng.choice([0, 1, 2]))
        else:
            item["nbytes"] += rng.choice([-1, 1])
    return document, payloads


def _varint(value, length):
    """`value` as LEB128 padded to `length` bytes (over-long when longer than needed)."""
    out = bytearray()
    for position in range(length):
        byte = (value >> (7 * position)) & 0x7F
        out.append(byte | (0x80 if position < length - 1 else 0))
    return bytes(out)


def _rewrite_varints(rng, document, payloads):
    """New delta positions for a delta tensor without an entropy stage: huge gaps,
    over-long and zero-terminated varints, wrong counts; sizes kept consistent."""
    candidates = [i for i, t in enumerate(document["tensors"])
                  if [s["op"] for s in t["codec"]] in (["sparse"], ["sparse", "affine"])
                  and t["codec"][0].get("format") == "delta"
                  and all(type(t["codec"][0].get(key)) is int for key in ("nnz", "pos_bytes"))]
    if not candidates:
        return _mutate_a_codec(rng, document, payloads)
    number = rng.choice(candidates)
    item = document["tensors"][number]
    stage = item["codec"][0]
    values = payloads[number][stage["pos_bytes"]:]
    count = stage["nnz"] + rng.choice([0, 0, 0, -1, 1])
    positions = b"".join(
        _varint(rng.choice([0, 1, 127, 128, 299, 300, 2**31, 2**62, 2**63 - 1, rng.randrange(1 << 16)]),
                rng.choice([1, 1, 2, 3, 5, 9, 10]))
        for _ in range(max(count, 0))
    )
    stage["pos_bytes"] = len(positions)
    item["nbytes"] = len(positions) + len(values)
    payloads[number] = positions + values
    return document, payloads


def _flip_payload_bits(rng, document, payloads):
    """Corrupt codes, scales, bitmaps and entropy streams behind a valid checksum."""
    number = rng.randrange(len(payloads))
    data = bytearray(payloads[number])
    for _ in range(rng.choice([1, 1, 2, 8])):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    payloads[number] = bytes(data)
    return document, payloads


def _json_text(rng, text):
    """Structure mutations of the header's JSON text."""
    choice = rng.randrange(9)
    if choice == 0:
        depth = rng.choice([15, 16, 17, 1000, 100_000])
        return text.replace(b'"extra":{', b'"extra":{"deep":' + b"[" * depth + b"]" * depth + b",", 1)
    if choice == 1:
        return text.replace(b'"round":3', b'"round":' + b"9" * rng.choice([19, 20, 21, 400]), 1)
    if choice == 2:
        return text.replace(b"0.5", rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999", b"1E+2"]), 1)
    if choice == 3:
        return text.replace(b'"round":3', b'"round":3,"round":4', 1)
    if choice == 4:
        return text.replace(b'"pynq-01"', rng.choice([b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\ud83d\\ude00"',
                                                     b'"\\\\ud800"', b'"\\u0000"']), 1)
    if choice == 5:
        cut = rng.randrange(len(text) + 1)
        return text[:cut]
    if choice == 6:
        at = rng.randrange(len(text) + 1)
        return text[:at] + bytes([rng.choice(b'[]{}",:\\ 0e-\xff')]) + text[at:]
    if choice == 7:
        at = rng.randrange(len(text))
        return text[:at] + text[at + 1:]
    return text.replace(b'"tensors":[', b'"tensors":[' + b"{" * 30, 1)


# Mutators that rely on the seed's structure run first, those that break it last.
STRUCTURED = [_mutate_a_codec, _rewrite_varints, _flip_payload_bits]
GENERIC = [_replace_a_field, _drop_or_add_a_key]


def _mutant(rng, seeds):
    document, payloads = _split(rng.choice(seeds))
    for _ in range(rng.choice([0, 1, 1, 2])):
        document, payloads = rng.choice(STRUCTURED)(rng, document, payloads)
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        document, payloads = rng.choice(GENERIC)(rng, document, payloads)
    text = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    if rng.random() < 0.3:
        text = _json_text(rng, text)
    blob = frame(text, b"".join(payloads))
    if rng.random() < 0.05:  # a flip outside the checksum's view is always caught
        blob = bytearray(blob)
        blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        blob = bytes(blob)
    return blob


def _check_decoded(message):
    for name, value in message.tensors.items():
        assert value.dtype == np.float32 and np.all(np.isfinite(value)), name
    assert isinstance(message.extra, dict) and isinstance(message.sender, str)
    assert 0 <= message.round <= 2**53 and 0 <= message.num_samples <= 2**53


def test_structure_aware_fuzz_only_raises_message_error():
    rng = random.Random(FUZZ_SEED)
    seeds = _seed_messages()
    deadline = time.monotonic() + FUZZ_SECONDS
    counts = {"cases": 0, "rejected": 0, "decoded": 0}
    while time.monotonic() < deadline:
        for _ in range(50):
            blob = _mutant(rng, seeds)
            counts["cases"] += 1
            try:
                message = decode_message(blob, LIMITS)
            except MessageError:
                counts["rejected"] += 1
                continue
            except Exception:  # noqa: BLE001 - the point of a fuzzer: report whatever escapes
                pytest.fail("case %d (FEDCORE_FUZZ_SEED=%d) raised %s\nmutant: %s"
                            % (counts["cases"], FUZZ_SEED, traceback.format_exc(limit=-3), blob[:600].hex()))
            counts["decoded"] += 1
            _check_decoded(message)
    print("fuzz: %(cases)d mutants, %(rejected)d rejected, %(decoded)d decoded" % counts)
    assert counts["cases"] >= 500, counts
    assert counts["rejected"] > counts["cases"] // 2, counts  # the mutants do reach the checks


def test_the_checksum_sees_every_raw_flip():
    blob = _seed_messages()[4]
    rng = random.Random(FUZZ_SEED)
    for _ in range(2000):
        corrupt = bytearray(blob)
        for _ in range(rng.choice([1, 2, 3])):
            corrupt[rng.randrange(len(corrupt))] ^= 1 << rng.randrange(8)
        if bytes(corrupt) != blob:
            with pytest.raises(MessageError):
                decode_message(bytes(corrupt))


def test_the_mutants_stay_well_formed_enough_to_decode_sometimes():
    """A fuzzer whose mutants all die at the first check tests nothing: some must decode."""
    rng = random.Random(FUZZ_SEED + 1)
    seeds = _seed_messages()
    decoded = 0
    for _ in range(300):
        try:
            decode_message(_mutant(rng, seeds), LIMITS)
            decoded += 1
        except MessageError:
            pass
    assert decoded > 5


def test_seed_messages_decode():
    for blob in _seed_messages():
        _check_decoded(decode_message(blob, LIMITS))
