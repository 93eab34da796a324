"""Hand-made containers for decoder tests: any header text, framed like the encoder does.

`frame` writes the current format (prefix, header, payload and, from version
2, the CRC-32 trailer), so a test states what is wrong with the header or the
payload and not with the framing. With the FORMAT_VERSION of an older fedcore
it writes that version's framing, so the same tests can be run against it.
"""

import json
import struct
import zlib

from fedcore import FORMAT_VERSION

__all__ = ["frame", "frame_json", "header", "entry", "checksummed"]


def checksummed(body: bytes, version: int = FORMAT_VERSION) -> bytes:
    """`body` with the trailer its version has (none before version 2)."""
    return body + (struct.pack("<I", zlib.crc32(body)) if version >= 2 else b"")


def frame(text: bytes, payload: bytes = b"", version: int = FORMAT_VERSION, magic: bytes = b"FEDC") -> bytes:
    return checksummed(struct.pack("<4sHI", magic, version, len(text)) + text + payload, version)


def frame_json(document, payload: bytes = b"", version: int = FORMAT_VERSION) -> bytes:
    return frame(json.dumps(document, separators=(",", ":")).encode(), payload, version)


def header(tensors, **meta):
    fields = {"round": 0, "sender": "", "num_samples": 0, "kind": "weights", "extra": {}}
    fields.update(meta)
    return {"meta": fields, "tensors": tensors}


def entry(name="w", shape=(2,), nbytes=8, codec=()):
    return {"name": name, "shape": list(shape), "nbytes": nbytes, "codec": list(codec)}
