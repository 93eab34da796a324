"""Golden vectors: the format cannot change silently.

If a change to the format is intended, bump FORMAT_VERSION and regenerate:
    PYTHONPATH=. python tests/test_golden.py --write
"""

import json
import os
import sys

import numpy as np
import pytest

from fedcore import (
    FORMAT_VERSION,
    Message,
    MessageError,
    TensorCodec,
    decode_message,
    encode_message,
)

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "messages.json")
# The same cases in format version 1 (no checksum), kept to pin how old messages are refused.
GOLDEN_V1 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "messages_v1.json")


def _tensors():
    w = (np.arange(24, dtype=np.float32).reshape(4, 6) - 11.5) / 7
    w[np.abs(w) < 0.8] = 0.0
    return {"fc1.weight": w, "fc1.bias": np.array([0.5, -0.25, 0.0, 2.0], np.float32)}


CASES = {
    "float32": TensorCodec(sparse="dense"),
    "affine8_per_channel": TensorCodec(bits=8),
    "affine3_bitmap": TensorCodec(bits=3, sparse="bitmap", per_channel=False),
    "affine2_delta_stochastic": TensorCodec(bits=2, sparse="delta", stochastic=True, seed=5),
    "affine4_deflate": TensorCodec(bits=4, sparse="bitmap", entropy="deflate"),
    "float32_lzma": TensorCodec(sparse="bitmap", entropy="lzma"),
}
ENTROPY_CASES = {"affine4_deflate", "float32_lzma"}  # compressor output may vary by library build


def _encode(name):
    message = Message(_tensors(), round=7, sender="pynq-01", num_samples=600, kind="weights",
                      extra={"model": "mlp"})
    return encode_message(message, CASES[name])[0]


def _load():
    with open(GOLDEN) as f:
        return json.load(f)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_vector_decodes(name):
    golden = _load()[name]

    message = decode_message(bytes.fromhex(golden["hex"]))

    assert (message.round, message.sender, message.num_samples) == (7, "pynq-01", 600)
    for tensor, expected in golden["decoded"].items():
        np.testing.assert_array_equal(message.tensors[tensor], np.array(expected, np.float32))


@pytest.mark.parametrize("name", sorted(set(CASES) - ENTROPY_CASES))
def test_encoding_matches_golden_bytes(name):
    assert _encode(name).hex() == _load()[name]["hex"]


def test_golden_file_is_for_this_version():
    assert all(bytes.fromhex(g["hex"])[4] == FORMAT_VERSION for g in _load().values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_version_1_messages_are_refused_naming_both_versions(name):
    with open(GOLDEN_V1) as f:
        blob = bytes.fromhex(json.load(f)[name]["hex"])

    with pytest.raises(MessageError, match="format version 1 is not supported: this decoder reads version 2 only"):
        decode_message(blob)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_flipped_bit_anywhere_never_decodes(name):
    blob = bytes.fromhex(_load()[name]["hex"])
    for position in range(len(blob)):
        for bit in (0, 3, 7):
            corrupt = bytearray(blob)
            corrupt[position] ^= 1 << bit
            with pytest.raises(MessageError):
                decode_message(bytes(corrupt))


if __name__ == "__main__" and "--write" in sys.argv:
    out = {}
    for name in sorted(CASES):
        blob = _encode(name)
        decoded = decode_message(blob).tensors
        out[name] = {"hex": blob.hex(), "decoded": {k: v.tolist() for k, v in decoded.items()}}
    with open(GOLDEN, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", GOLDEN)
