"""The wire format: a set of named float32 tensors with a small metadata header.

Layout (all integers little-endian)::

    magic   4 bytes  b"FEDC"
    version u16      FORMAT_VERSION
    hlen    u32      length of the header
    header  hlen     canonical JSON (sorted keys, no spaces, ASCII)
    payload          the tensors' payloads, in header order, back to back

The header is ``{"meta": {...}, "tensors": [{"name", "shape", "nbytes",
"codec"}, ...]}`` where ``codec`` is the chain of stages applied to the
tensor, in encoding order, each a JSON object with an ``op``:

- ``{"op": "sparse", "format": "bitmap"|"delta", "nnz": k[, "pos_bytes": b]}``:
  only the k nonzero values travel, with their positions as a bitmap or as
  LEB128 varint gaps.
- ``{"op": "affine", "bits": 1..8, "per_channel": bool, "rounding": ...}``:
  values as b-bit codes, packed; float32 scales and uint8 zero points (one
  per output channel, axis 0, of a 2+ dimensional tensor, or one for the tensor) travel before them.
- ``{"op": "deflate"}`` or ``{"op": "lzma"}``: the entropy stage over the
  tensor's whole payload.

Without an affine stage values travel as float32. Every size is derived from
the header, so a decoder checks the whole message against its limits before
it allocates anything. No pickle, no eval: the decoder only reads numbers.
"""

import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import codecs
from .checks import is_int
from .errors import ConfigError, MessageError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "TensorCodec",
    "Message",
    "DecodeLimits",
    "TensorReport",
    "EncodeReport",
    "encode_message",
    "decode_message",
]

MAGIC = b"FEDC"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")
SPARSE_FORMATS = ("auto", "bitmap", "delta", "dense")
_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_NAME_LENGTH = 256


@dataclass(frozen=True)
class TensorCodec:
    """How one tensor is written on the wire.

    bits: None keeps float32; 1..8 selects affine quantization.
    per_channel: one scale and zero point per output channel (axis 0) of a
        tensor of 2 or more dimensions; 1-d tensors always use one.
    stochastic: stochastic rounding instead of round-to-nearest.
    sparse: "auto" picks the smallest of dense, bitmap and delta positions
        by exact size; "dense", "bitmap", "delta" force one.
    entropy: None, "deflate" or "lzma"; skipped for a tensor it does not shrink.
    level: the Deflate level (1..9).
    seed: seeds stochastic rounding, with the round and the tensor name.
    """

    bits: Optional[int] = None
    per_channel: bool = True
    stochastic: bool = False
    sparse: str = "auto"
    entropy: Optional[str] = None
    level: int = 9
    seed: int = 0

    def __post_init__(self):
        if self.bits is not None and (
            isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8
        ):
            raise ConfigError("bits must be None (float32) or an integer in 1..8, got %r" % (self.bits,))
        if self.sparse not in SPARSE_FORMATS:
            raise ConfigError("sparse must be one of %s, got %r" % (SPARSE_FORMATS, self.sparse))
        if self.entropy is not None and self.entropy not in codecs.ENTROPY_CODERS:
            raise ConfigError(
                "entropy must be None or one of %s, got %r"
                % (sorted(codecs.ENTROPY_CODERS), self.entropy)
            )
        if not isinstance(self.level, int) or not 1 <= self.level <= 9:
            raise ConfigError("level must be an integer in 1..9, got %r" % (self.level,))
        if self.stochastic and self.bits is None:
            raise ConfigError("stochastic rounding needs bits (quantization)")

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> "TensorCodec":
        known = set(cls.__dataclass_fields__)
        unknown = set(settings) - known
        if unknown:
            raise ConfigError(
                "unknown codec setting(s) %s; known: %s" % (sorted(unknown), sorted(known))
            )
        return cls(**dict(settings))


RAW_FLOAT32 = TensorCodec(sparse="dense")


@dataclass
class Message:
    """Named float32 tensors and who sent them, for which round."""

    tensors: Dict[str, np.ndarray]
    round: int = 0
    sender: str = ""
    num_samples: int = 0
    kind: str = "weights"
    extra: Dict[str, Any] = field(default_factory=dict)

    def meta(self) -> Dict[str, Any]:
        return {
            "round": self.round,
            "sender": self.sender,
            "num_samples": self.num_samples,
            "kind": self.kind,
            "extra": self.extra,
        }


@dataclass(frozen=True)
class DecodeLimits:
    """What a decoder accepts; anything beyond is rejected before allocation."""

    max_message_bytes: int = 256 << 20
    max_header_bytes: int = 1 << 20
    max_tensors: int = 4096
    max_elements: int = 1 << 25  # float32 values over all tensors: 128 MiB
    max_ndim: int = 8
    allow_nonfinite: bool = False


@dataclass(frozen=True)
class TensorReport:
    name: str
    raw_bytes: int
    encoded_bytes: int
    codec: Tuple[str, ...]


@dataclass(frozen=True)
class EncodeReport:
    """Exact byte accounting of one encoded message.

    raw_bytes: the tensors as float32 (4 bytes a value); encoded_bytes: the
    length of the whole message, header included.
    """

    raw_bytes: int
    encoded_bytes: int
    header_bytes: int
    tensors: Tuple[TensorReport, ...]

    @property
    def ratio(self) -> float:
        return self.raw_bytes / self.encoded_bytes


CodecChoice = Union[TensorCodec, Mapping[str, TensorCodec], Callable[[str, np.ndarray], TensorCodec]]


# ---------------------------------------------------------------- encoding


def encode_message(
    message: Message, codec: Optional[CodecChoice] = None, allow_nonfinite: bool = False
) -> Tuple[bytes, EncodeReport]:
    """Encode `message`; `codec` is one TensorCodec for all tensors, a mapping
    from tensor name to TensorCodec, or a function (name, array) -> TensorCodec.
    The same message and codecs always give the same bytes."""
    meta = _check_meta(message.meta())
    entries, payloads, reports = [], [], []
    for name, value in message.tensors.items():
        array = _check_tensor(name, value, allow_nonfinite)
        spec = _codec_for(codec, name, array)
        seed_parts = (spec.seed, message.round, zlib.crc32(name.encode("utf-8")))
        entry, payload = _encode_tensor(name, array, spec, seed_parts)
        entries.append(entry)
        payloads.append(payload)
        reports.append(
            TensorReport(name, 4 * array.size, len(payload), tuple(s["op"] for s in entry["codec"]))
        )
    header = _canonical_json({"meta": meta, "tensors": entries})
    blob = b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)), header] + payloads)
    report = EncodeReport(
        raw_bytes=sum(r.raw_bytes for r in reports),
        encoded_bytes=len(blob),
        header_bytes=_PREFIX.size + len(header),
        tensors=tuple(reports),
    )
    return blob, report


def _codec_for(codec: Optional[CodecChoice], name: str, array: np.ndarray) -> TensorCodec:
    if codec is None:
        return RAW_FLOAT32
    if isinstance(codec, TensorCodec):
        return codec
    if isinstance(codec, Mapping):
        if name not in codec:
            raise ConfigError("no codec given for tensor %r" % name)
        return codec[name]
    spec = codec(name, array)
    if not isinstance(spec, TensorCodec):
        raise ConfigError("codec function returned %r for %r, not a TensorCodec" % (spec, name))
    return spec


def _check_tensor(name: Any, value: Any, allow_nonfinite: bool) -> np.ndarray:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise MessageError("tensor names must be strings of 1..%d characters, got %r" % (MAX_NAME_LENGTH, name))
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise MessageError("tensor %r has dtype %s; only numbers travel" % (name, array.dtype))
    array = np.asarray(array, dtype=np.float32, order="C")  # keeps 0-d arrays 0-d
    if not allow_nonfinite and not np.all(np.isfinite(array)):
        raise MessageError("tensor %r holds NaN or Inf" % name)
    return array


def _encode_tensor(
    name: str, array: np.ndarray, spec: TensorCodec, seed_parts: Tuple[int, int, int]
) -> Tuple[Dict[str, Any], bytes]:
    flat = array.ravel()
    size = flat.size
    bits = spec.bits
    value_bits = 32 if bits is None else bits
    quantized = bits is not None
    if quantized and not np.all(np.isfinite(flat)):
        raise MessageError("tensor %r: NaN or Inf cannot be quantized" % name)
    per_channel = quantized and spec.per_channel and array.ndim >= 2
    channels = array.shape[0] if per_channel else 1
    stages: List[Dict[str, Any]] = []
    sections: List[bytes] = []

    index = np.flatnonzero(flat) if spec.sparse != "dense" else None
    layout = _choose_layout(spec.sparse, size, index, value_bits)
    if layout == "dense":
        values, channel_of = flat, None
    else:
        values = flat[index]
        positions = codecs.bitmap_encode(flat != 0) if layout == "bitmap" else codecs.delta_encode(index)
        stage = {"op": "sparse", "format": layout, "nnz": int(index.size)}
        if layout == "delta":
            stage["pos_bytes"] = len(positions)
        stages.append(stage)
        sections.append(positions)
        # Row-major layout: the output channel of flat position i is i // (size / channels).
        channel_of = index // max(size // max(channels, 1), 1) if per_channel else None

    if quantized:
        rng = np.random.default_rng(list(seed_parts)) if spec.stochastic else None
        codes, params = codecs.affine_quantize(values, bits, channel_of, channels, rng)
        stages.append(
            {
                "op": "affine",
                "bits": bits,
                "per_channel": per_channel,
                "rounding": "stochastic" if spec.stochastic else "nearest",
            }
        )
        sections += [params.to_bytes(), codecs.pack_bits(codes, bits)]
    else:
        sections.append(np.ascontiguousarray(values, dtype="<f4").tobytes())

    payload = b"".join(sections)
    if spec.entropy is not None:
        compressed = codecs.entropy_compress(payload, spec.entropy, spec.level)
        if len(compressed) < len(payload):
            stages.append({"op": spec.entropy})
            payload = compressed
    entry = {"name": name, "shape": list(array.shape), "nbytes": len(payload), "codec": stages}
    return entry, payload


def _choose_layout(choice: str, size: int, index: Optional[np.ndarray], value_bits: int) -> str:
    """The position encoding: forced by `choice`, or the smallest one by exact size."""
    if choice != "auto":
        return choice
    nnz = index.size
    sizes = [
        ("dense", codecs.packed_size(size, value_bits)),
        ("bitmap", (size + 7) // 8 + codecs.packed_size(nnz, value_bits)),
    ]
    # Delta indices cost at least a byte each: skip computing them when that already loses.
    if nnz + codecs.packed_size(nnz, value_bits) < min(s for _, s in sizes):
        sizes.append(("delta", codecs.delta_size(index) + codecs.packed_size(nnz, value_bits)))
    return min(sizes, key=lambda item: item[1])[0]


def _canonical_json(obj: Any) -> bytes:
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MessageError("header is not plain JSON: %s" % exc) from None
    return text.encode("ascii")


# ---------------------------------------------------------------- decoding


def decode_message(blob: bytes, limits: DecodeLimits = DecodeLimits()) -> Message:
    """Decode and check a message; any problem raises MessageError naming it."""
    blob = _as_bytes(blob)
    if len(blob) > limits.max_message_bytes:
        raise MessageError("message of %d bytes exceeds the limit of %d" % (len(blob), limits.max_message_bytes))
    if len(blob) < _PREFIX.size:
        raise MessageError("message of %d bytes is shorter than the %d-byte prefix" % (len(blob), _PREFIX.size))
    magic, version, header_length = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise MessageError("wrong magic bytes %r, expected %r" % (magic, MAGIC))
    if version != FORMAT_VERSION:
        raise MessageError("format version %d is not supported (this decoder reads %d)" % (version, FORMAT_VERSION))
    if header_length > limits.max_header_bytes:
        raise MessageError("header of %d bytes exceeds the limit of %d" % (header_length, limits.max_header_bytes))
    body_start = _PREFIX.size + header_length
    if body_start > len(blob):
        raise MessageError("truncated header: %d bytes declared, %d present" % (header_length, len(blob) - _PREFIX.size))
    header = _parse_header(blob[_PREFIX.size:body_start])
    meta, plans = _check_header(header, limits)

    declared = sum(plan.nbytes for plan in plans)
    present = len(blob) - body_start
    if declared != present:
        kind = "truncated payload" if present < declared else "%d trailing bytes" % (present - declared)
        raise MessageError("%s: header declares %d payload bytes, %d present" % (kind, declared, present))

    tensors: Dict[str, np.ndarray] = {}
    offset = body_start
    for plan in plans:
        tensors[plan.name] = plan.decode(blob[offset:offset + plan.nbytes], limits.allow_nonfinite)
        offset += plan.nbytes
    return Message(tensors=tensors, **meta)


def _as_bytes(blob: Any) -> bytes:
    if isinstance(blob, (bytes, bytearray, memoryview)):
        return bytes(blob)
    raise MessageError("a message is bytes, got %s" % type(blob).__name__)


def _reject_constant(token: str):
    raise MessageError("header holds %s, which is not JSON" % token)


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise MessageError("header repeats a key in one object")
    return result


def _parse_header(raw: bytes) -> Dict[str, Any]:
    try:
        text = raw.decode("ascii")
        header = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise MessageError("header is not ASCII JSON") from None
    except RecursionError:
        raise MessageError("header JSON is nested too deeply") from None
    except ValueError as exc:
        if isinstance(exc, MessageError):
            raise
        raise MessageError("header is not valid JSON: %s" % exc) from None
    if not isinstance(header, dict) or set(header) != {"meta", "tensors"}:
        raise MessageError("header must be an object with exactly 'meta' and 'tensors'")
    return header


def _check_meta(meta: Any) -> Dict[str, Any]:
    expected = {"round", "sender", "num_samples", "kind", "extra"}
    if not isinstance(meta, dict) or set(meta) != expected:
        raise MessageError("meta must be an object with exactly %s" % sorted(expected))
    if not is_int(meta["round"]) or meta["round"] < 0:
        raise MessageError("meta.round must be a non-negative integer, got %r" % (meta["round"],))
    if not is_int(meta["num_samples"]) or meta["num_samples"] < 0:
        raise MessageError("meta.num_samples must be a non-negative integer, got %r" % (meta["num_samples"],))
    if not isinstance(meta["sender"], str) or len(meta["sender"]) > MAX_NAME_LENGTH:
        raise MessageError("meta.sender must be a string of at most %d characters" % MAX_NAME_LENGTH)
    if not isinstance(meta["kind"], str) or not _KIND_PATTERN.match(meta["kind"]):
        raise MessageError("meta.kind must be a short lower-case identifier, got %r" % (meta["kind"],))
    if not isinstance(meta["extra"], dict):
        raise MessageError("meta.extra must be an object")
    # numpy integers become plain ints, so that the header is plain JSON
    return dict(meta, round=int(meta["round"]), num_samples=int(meta["num_samples"]))


class _TensorPlan:
    """One tensor's header entry, checked; knows every size before decoding."""

    def __init__(self, entry: Any, limits: DecodeLimits):
        if not isinstance(entry, dict) or set(entry) != {"name", "shape", "nbytes", "codec"}:
            raise MessageError("each tensor entry must have exactly name, shape, nbytes, codec")
        name = entry["name"]
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise MessageError("tensor name must be a string of 1..%d characters" % MAX_NAME_LENGTH)
        self.name = name
        shape = entry["shape"]
        if not isinstance(shape, list) or len(shape) > limits.max_ndim:
            raise MessageError("tensor %r: shape must be a list of at most %d sizes" % (name, limits.max_ndim))
        if not all(is_int(d) and d >= 0 for d in shape):
            raise MessageError("tensor %r: shape %r has a size that is not a non-negative integer" % (name, shape))
        self.shape = tuple(shape)
        self.size = 1
        for dim in shape:  # checked as it grows: a huge shape never overflows
            self.size *= dim
            if self.size > limits.max_elements:
                raise MessageError(
                    "tensor %r: shape %r exceeds the limit of %d elements" % (name, shape, limits.max_elements)
                )
        if not is_int(entry["nbytes"]) or entry["nbytes"] < 0:
            raise MessageError("tensor %r: nbytes must be a non-negative integer" % name)
        self.nbytes = entry["nbytes"]
        self._parse_codec(entry["codec"])

    def _fail(self, text: str):
        raise MessageError("tensor %r: %s" % (self.name, text))

    def _stage(self, stage: Any, keys: set) -> Dict[str, Any]:
        if set(stage) != keys:
            self._fail("stage %r must have exactly the keys %s" % (stage.get("op"), sorted(keys)))
        return stage

    def _parse_codec(self, chain: Any):
        if not isinstance(chain, list) or not all(isinstance(s, dict) and "op" in s for s in chain):
            self._fail("codec must be a list of stages, each with an 'op'")
        stages = list(chain)
        self.layout, self.nnz, self.pos_bytes = "dense", self.size, 0
        self.bits, self.per_channel, self.entropy = None, False, None
        if stages and stages[0]["op"] == "sparse":
            self._parse_sparse(stages.pop(0))
        if stages and stages[0]["op"] == "affine":
            stage = self._stage(stages.pop(0), {"op", "bits", "per_channel", "rounding"})
            if not is_int(stage["bits"]) or not 1 <= stage["bits"] <= 8:
                self._fail("affine bits must be an integer in 1..8, got %r" % (stage["bits"],))
            if not isinstance(stage["per_channel"], bool) or (stage["per_channel"] and len(self.shape) < 2):
                self._fail("affine per_channel must be a boolean, and false below 2 dimensions")
            if stage["rounding"] not in ("nearest", "stochastic"):
                self._fail("affine rounding must be 'nearest' or 'stochastic'")
            self.bits, self.per_channel = stage["bits"], stage["per_channel"]
        if stages and stages[0]["op"] in codecs.ENTROPY_CODERS:
            self.entropy = self._stage(stages.pop(0), {"op"})["op"]
        if stages:
            op = stages[0]["op"]
            known = ["sparse", "affine"] + sorted(codecs.ENTROPY_CODERS)
            if op in known:
                self._fail("stage %r is out of order (order: sparse, affine, entropy)" % (op,))
            self._fail("unknown codec %r (known: %s)" % (op, ", ".join(known)))
        self.channels = self.shape[0] if self.per_channel else 1
        value_bits = 32 if self.bits is None else self.bits
        params = codecs.QuantParams.nbytes(self.channels) if self.bits else 0
        self.inner_bytes = self.pos_bytes + params + codecs.packed_size(self.nnz, value_bits)
        if self.entropy is None and self.inner_bytes != self.nbytes:
            self._fail("payload of %d bytes, the codec chain implies %d" % (self.nbytes, self.inner_bytes))

    def _parse_sparse(self, stage: Dict[str, Any]):
        fmt = stage.get("format")
        keys = {"op", "format", "nnz", "pos_bytes"} if fmt == "delta" else {"op", "format", "nnz"}
        if fmt not in ("bitmap", "delta"):
            self._fail("sparse format must be 'bitmap' or 'delta', got %r" % (fmt,))
        self._stage(stage, keys)
        nnz = stage["nnz"]
        if not is_int(nnz) or not 0 <= nnz <= self.size:
            self._fail("sparse nnz must be an integer in 0..%d, got %r" % (self.size, nnz))
        self.layout, self.nnz = fmt, nnz
        if fmt == "bitmap":
            self.pos_bytes = (self.size + 7) // 8
        else:
            pos = stage["pos_bytes"]
            if not is_int(pos) or not nnz <= pos <= 9 * nnz:
                self._fail("delta pos_bytes must be an integer in %d..%d, got %r" % (nnz, 9 * nnz, pos))
            self.pos_bytes = pos

    def decode(self, payload: bytes, allow_nonfinite: bool) -> np.ndarray:
        try:
            return self._decode(payload, allow_nonfinite)
        except MessageError as exc:
            if str(exc).startswith("tensor %r" % self.name):
                raise
            raise MessageError("tensor %r: %s" % (self.name, exc)) from None

    def _decode(self, payload: bytes, allow_nonfinite: bool) -> np.ndarray:
        if self.entropy is not None:
            payload = codecs.entropy_decompress(payload, self.entropy, self.inner_bytes)
        positions, offset = payload[: self.pos_bytes], self.pos_bytes
        index = None
        if self.layout == "bitmap":
            index = codecs.bitmap_decode(positions, self.size, self.nnz)
        elif self.layout == "delta":
            index = codecs.delta_decode(positions, self.size, self.nnz)
        if self.bits is None:
            values = np.frombuffer(payload, dtype="<f4", count=self.nnz, offset=offset).astype(np.float32)
            if not allow_nonfinite and not np.all(np.isfinite(values)):
                raise MessageError("holds NaN or Inf")
        else:
            params_end = offset + codecs.QuantParams.nbytes(self.channels)
            params = codecs.QuantParams.from_bytes(payload[offset:params_end], self.channels, self.bits)
            codes = codecs.unpack_bits(payload[params_end:], self.nnz, self.bits)
            channel_of = None
            if index is not None and self.per_channel:
                channel_of = index // max(self.size // max(self.channels, 1), 1)
            values = codecs.affine_dequantize(codes, params, channel_of)
        if index is None:
            return values.reshape(self.shape)
        out = np.zeros(self.size, dtype=np.float32)
        out[index] = values
        return out.reshape(self.shape)


def _check_header(header: Dict[str, Any], limits: DecodeLimits) -> Tuple[Dict[str, Any], List[_TensorPlan]]:
    meta = _check_meta(header["meta"])
    entries = header["tensors"]
    if not isinstance(entries, list):
        raise MessageError("header 'tensors' must be a list")
    if len(entries) > limits.max_tensors:
        raise MessageError("%d tensors exceed the limit of %d" % (len(entries), limits.max_tensors))
    plans, names, total = [], set(), 0
    for entry in entries:
        plan = _TensorPlan(entry, limits)
        if plan.name in names:
            raise MessageError("tensor %r appears twice" % plan.name)
        names.add(plan.name)
        total += plan.size
        if total > limits.max_elements:
            raise MessageError("tensors hold more than the limit of %d elements" % limits.max_elements)
        plans.append(plan)
    return meta, plans
