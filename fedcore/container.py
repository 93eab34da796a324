"""The wire format: a set of named float32 tensors with a small metadata header.

Layout (all integers little-endian)::

    magic   4 bytes  b"FEDC"
    version u16      FORMAT_VERSION (2)
    hlen    u32      length of the header
    header  hlen     canonical JSON (sorted keys, no spaces, ASCII)
    payload          the tensors' payloads, in header order, back to back
    crc32   u32      CRC-32 (zlib's polynomial; fedcore.crc) of every byte before it

The checksum catches corruption (a flipped bit, a cut or spliced message)
before the header is read; it is not authentication: a sender that means harm
computes it too, so the header is still checked against a schema of types and
ranges (`fedcore.safejson`) before any of it is used. Version 1 had no checksum.

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
it allocates anything. No pickle, no eval: the decoder only reads numbers, and
whatever the bytes, decoding raises nothing but MessageError.
"""

import json
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import codecs
from . import safejson as sj
from .checks import is_int
from .crc import crc32
from .errors import ConfigError, JSONError, MessageError

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
    "layout_difference",
]

MAGIC = b"FEDC"
FORMAT_VERSION = 2
_PREFIX = struct.Struct("<4sHI")
_CHECKSUM = struct.Struct("<I")
SPARSE_FORMATS = ("auto", "bitmap", "delta", "dense")
_KIND_PATTERN = r"[a-z][a-z0-9_]{0,31}"
MAX_NAME_LENGTH = 256
_MAX_CODEC_STAGES = 3  # sparse, affine, entropy


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
    # Set by the decoder for tensors that travelled sparse: name -> the sorted flat positions
    # of their stored values (zero everywhere else), so that a receiver's work on an update
    # can follow its nonzeros. Never encoded; ignored when comparing messages.
    support: Dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

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
    max_header_depth: int = 16  # JSON nesting of the header, `extra` included
    allow_nonfinite: bool = False

    def json_limits(self) -> sj.Limits:
        return _json_limits(self.max_header_bytes, self.max_header_depth)


_DEFAULT_LIMITS = DecodeLimits()


@lru_cache(maxsize=16)
def _json_limits(max_bytes: int, max_depth: int) -> sj.Limits:
    return sj.Limits(max_bytes=max_bytes, max_depth=max_depth)


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
    length of the whole message; header_bytes: everything but the tensors'
    payloads (prefix, header and checksum).
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
    meta = _meta_text(message.meta(), _DEFAULT_LIMITS)
    codec_of = _codec_resolver(codec)
    outgoing = []
    for name, value in message.tensors.items():
        array = _check_tensor(name, value)
        outgoing.append(_OutgoingTensor(name, array, codec_of(name, array), message.round, allow_nonfinite))
    _quantize_together(outgoing)
    entries, payloads, reports = [], [], []
    for tensor in outgoing:
        entry, nbytes, ops, sections = tensor.finish()
        entries.append(entry)
        payloads += sections
        reports.append(TensorReport(tensor.name, 4 * tensor.size, nbytes, ops))
    header = ('{"meta":%s,"tensors":[%s]}' % (meta, ",".join(entries))).encode("ascii")
    parts = [_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)), header] + payloads
    checksum = 0
    for part in parts:  # one join, no copy of the body just for its checksum
        checksum = crc32(part, checksum)
    blob = b"".join(parts + [_CHECKSUM.pack(checksum)])
    report = EncodeReport(
        raw_bytes=sum(r.raw_bytes for r in reports),
        encoded_bytes=len(blob),
        header_bytes=_PREFIX.size + len(header) + _CHECKSUM.size,
        tensors=tuple(reports),
    )
    return blob, report


def _codec_resolver(codec: Optional[CodecChoice]) -> Callable[[str, np.ndarray], TensorCodec]:
    """The TensorCodec of each (name, array) of a message, the kind of `codec` told apart once."""
    if codec is None:
        codec = RAW_FLOAT32
    if isinstance(codec, TensorCodec):
        single = codec
        return lambda name, array: single
    if isinstance(codec, Mapping):
        table = codec

        def from_table(name: str, array: np.ndarray) -> TensorCodec:
            if name not in table:
                raise ConfigError("no codec given for tensor %r" % name)
            return table[name]

        return from_table
    function = codec

    def from_function(name: str, array: np.ndarray) -> TensorCodec:
        spec = function(name, array)
        if not isinstance(spec, TensorCodec):
            raise ConfigError("codec function returned %r for %r, not a TensorCodec" % (spec, name))
        return spec

    return from_function


def _check_tensor(name: Any, value: Any) -> np.ndarray:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise MessageError("tensor names must be strings of 1..%d characters, got %r" % (MAX_NAME_LENGTH, name))
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise MessageError("tensor %r has dtype %s; only numbers travel" % (name, array.dtype))
    return np.asarray(array, dtype=np.float32, order="C")  # keeps 0-d arrays 0-d


class _OutgoingTensor:
    """One tensor on its way to the wire, in three steps: its checks, layout and sparse positions
    (here), its quantization (`_quantize_together`, with the message's other tensors of its bit
    width), then its packing, entropy stage and header entry (`finish`)."""

    def __init__(self, name: str, array: np.ndarray, spec: TensorCodec, round_number: int, allow_nonfinite: bool):
        self.name, self.shape, self.spec = name, array.shape, spec
        flat = array.ravel()
        self.size = size = flat.size
        bits = spec.bits
        # Quantization finds NaN and Inf from its channel ranges; float32 values are checked here.
        if bits is None and not allow_nonfinite and not np.isfinite(flat).all():
            raise MessageError("tensor %r holds NaN or Inf" % name)
        self.per_channel = per_channel = bits is not None and spec.per_channel and array.ndim >= 2 and size > 0
        channels = array.shape[0] if per_channel else 1  # per channel: no scales of no value
        self.stages: List[Tuple[str, str]] = []  # (op, the stage's canonical JSON)
        self.sections: List[codecs.Buffer] = []
        layout = _choose_layout(spec.sparse, flat, 32 if bits is None else bits)
        counts: Optional[np.ndarray] = None
        if layout == "dense":
            self.values = flat
        else:
            index = np.flatnonzero(flat)
            self.values = flat[index]
            positions = codecs.bitmap_encode(flat != 0) if layout == "bitmap" else codecs.delta_encode(index)
            stage = {"op": "sparse", "format": layout, "nnz": int(index.size)}
            if layout == "delta":
                stage["pos_bytes"] = len(positions)
            self.stages.append(("sparse", _canonical_text(stage)))
            self.sections.append(positions)
            # Row-major layout: channel c holds flat positions c * size / channels onwards.
            counts = codecs.channel_counts(index, size, channels) if per_channel else None
        self.affine: Optional[Tuple[int, codecs.AffineInput]] = None  # (bits, what to quantize)
        self.quantized: Optional[Tuple[int, np.ndarray, codecs.QuantParams]] = None  # (bits, codes, parameters)
        if bits is not None:
            rng = None
            if spec.stochastic:  # seeded by the codec's seed, the round and the tensor's name
                rng = np.random.default_rng([spec.seed, round_number, zlib.crc32(name.encode("utf-8"))])
            self.affine = (bits, codecs.AffineInput(self.values, counts, channels, rng, name))

    def finish(self) -> Tuple[str, int, Tuple[str, ...], List[codecs.Buffer]]:
        """The header entry in canonical JSON, the payload's size, its codec's ops and its sections
        (kept apart: the message is joined once); once."""
        spec, stages, sections = self.spec, self.stages, self.sections
        if self.quantized is not None:
            bits, codes, params = self.quantized
            stages.append(("affine", _affine_stage(bits, self.per_channel, spec.stochastic)))
            sections += [params.to_bytes(), codecs.pack_bits(codes, bits)]
        else:
            sections.append(np.ascontiguousarray(self.values, dtype="<f4").tobytes())
        if spec.entropy is not None:
            payload = b"".join(sections)
            compressed = codecs.entropy_compress(payload, spec.entropy, spec.level)
            if len(compressed) < len(payload):
                stages.append((spec.entropy, _entropy_stage(spec.entropy)))
                sections = [compressed]
        nbytes = sum(map(len, sections))
        entry = _ENTRY % (",".join([text for _, text in stages]), _canonical_text(self.name), nbytes,
                          ",".join(map(str, self.shape)))
        return entry, nbytes, tuple([op for op, _ in stages]), sections


# A header entry in canonical JSON (keys sorted, no spaces), written directly from its parts: the
# encoder's dicts cost twice the time (tests check every header against the canonical encoder).
_ENTRY = '{"codec":[%s],"name":%s,"nbytes":%d,"shape":[%s]}'


@lru_cache(maxsize=64)
def _affine_stage(bits: int, per_channel: bool, stochastic: bool) -> str:
    return _canonical_text({"op": "affine", "bits": bits, "per_channel": per_channel,
                            "rounding": "stochastic" if stochastic else "nearest"})


@lru_cache(maxsize=8)
def _entropy_stage(coder: str) -> str:
    return _canonical_text({"op": coder})


def _quantize_together(tensors: List[_OutgoingTensor]) -> None:
    """Quantize the tensors that have bits, those of one bit width in one call (their channels'
    parameters computed together: on small tensors those calls are most of the time)."""
    by_bits: Dict[int, List[Tuple[_OutgoingTensor, codecs.AffineInput]]] = {}
    for tensor in tensors:
        if tensor.affine is not None:
            bits, affine = tensor.affine
            by_bits.setdefault(bits, []).append((tensor, affine))
    for bits, group in by_bits.items():
        results = codecs.affine_quantize_all([affine for _, affine in group], bits)
        for (tensor, _), (codes, params) in zip(group, results):
            tensor.quantized = (bits, codes, params)


def _choose_layout(choice: str, flat: np.ndarray, value_bits: int) -> str:
    """The position encoding: forced by `choice`, or the smallest one by exact size. The
    zeros are counted, not located: a tensor without enough of them is dense at once."""
    if choice != "auto":
        return choice
    # count_nonzero of the (flat == 0) booleans: five times faster than of the floats; -0.0 is a zero
    # and NaN is not, both ways
    size = flat.size
    nnz = size - int(np.count_nonzero(flat == 0))
    sizes = [
        ("dense", codecs.packed_size(size, value_bits)),
        ("bitmap", (size + 7) // 8 + codecs.packed_size(nnz, value_bits)),
    ]
    # Delta indices cost at least a byte each: skip computing them when that already loses.
    if nnz + codecs.packed_size(nnz, value_bits) < min(s for _, s in sizes):
        sizes.append(("delta", codecs.delta_size(np.flatnonzero(flat)) + codecs.packed_size(nnz, value_bits)))
    return min(sizes, key=lambda item: item[1])[0]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _canonical_text(obj: Any) -> str:
    try:
        return _CANONICAL.encode(obj)
    except (TypeError, ValueError) as exc:
        raise MessageError("header is not plain JSON: %s" % exc) from None



# ---------------------------------------------------------------- decoding


def decode_message(blob: bytes, limits: DecodeLimits = _DEFAULT_LIMITS,
                   layout: Optional[Mapping[str, Sequence[int]]] = None) -> Message:
    """Decode and check a message; any problem raises MessageError naming it. With `layout`
    ({name: shape} of the model the receiver holds), tensors named or shaped otherwise are
    refused from the header, before any payload is decoded: a receiver's work is then
    bounded by its own model, whatever a sender's header declares."""
    blob = _as_bytes(blob)
    header_raw, payload = _split_frame(blob, limits)
    meta, plans = _read_header(header_raw, limits, len(blob))  # types, ranges and sizes checked: safe to use
    if layout is not None:
        problem = layout_difference(layout, {plan.name: plan.shape for plan in plans})
        if problem:
            raise MessageError(problem)

    declared = sum(plan.nbytes for plan in plans)
    if declared != len(payload):
        present = len(payload)
        kind = "truncated payload" if present < declared else "%d trailing bytes" % (present - declared)
        raise MessageError("%s: header declares %d payload bytes, %d present" % (kind, declared, present))

    tensors: Dict[str, np.ndarray] = {}
    support: Dict[str, np.ndarray] = {}
    offset = 0
    for plan in plans:
        tensors[plan.name], positions = plan.decode(payload[offset:offset + plan.nbytes], limits.allow_nonfinite)
        if positions is not None:
            support[plan.name] = positions
        offset += plan.nbytes
    return Message(tensors=tensors, support=support, **meta)


def layout_difference(expected: Mapping[str, Sequence[int]], got: Mapping[str, Sequence[int]]) -> Optional[str]:
    """Why tensors `got` ({name: shape}) are not the model `expected`, or None when they are."""
    if set(expected) != set(got):
        return ("tensor names differ from the model: missing %s, unexpected %s"
                % (sorted(set(expected) - set(got)), sorted(set(got) - set(expected))))
    for name, shape in expected.items():
        if tuple(got[name]) != tuple(shape):
            return "%s: shape %s, model has %s" % (name, list(got[name]), list(shape))
    return None


def _as_bytes(blob: Any) -> bytes:
    if isinstance(blob, (bytes, bytearray, memoryview)):
        return bytes(blob)
    raise MessageError("a message is bytes, got %s" % type(blob).__name__)


def _split_frame(blob: bytes, limits: DecodeLimits) -> Tuple[bytes, memoryview]:
    """Check the prefix, the sizes and the checksum; the raw header and the payload."""
    if len(blob) > limits.max_message_bytes:
        raise MessageError("message of %d bytes exceeds the limit of %d" % (len(blob), limits.max_message_bytes))
    if len(blob) < _PREFIX.size:
        raise MessageError("message of %d bytes is shorter than the %d-byte prefix" % (len(blob), _PREFIX.size))
    magic, version, header_length = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise MessageError("wrong magic bytes %r, expected %r" % (magic, MAGIC))
    if version != FORMAT_VERSION:
        raise MessageError(
            "format version %d is not supported: this decoder reads version %d only (re-encode the message "
            "with this fedcore)" % (version, FORMAT_VERSION)
        )
    if header_length > limits.max_header_bytes:
        raise MessageError("header of %d bytes exceeds the limit of %d" % (header_length, limits.max_header_bytes))
    body_end = len(blob) - _CHECKSUM.size
    body_start = _PREFIX.size + header_length
    if body_start > body_end:
        raise MessageError(
            "truncated message: a %d-byte header and the %d-byte checksum declared, %d bytes follow the prefix"
            % (header_length, _CHECKSUM.size, len(blob) - _PREFIX.size)
        )
    (stored,) = _CHECKSUM.unpack_from(blob, body_end)
    computed = crc32(blob, 0, body_end)
    if stored != computed:
        raise MessageError(
            "checksum mismatch: CRC-32 0x%08x stored, 0x%08x computed over %d bytes (corrupt or cut message)"
            % (stored, computed, body_end)
        )
    return blob[_PREFIX.size:body_start], memoryview(blob)[body_start:body_end]


def _header_schema(limits: DecodeLimits) -> sj.Schema:
    return _header_schema_for(limits.max_tensors, limits.max_ndim, limits.max_elements, limits.max_message_bytes)


@lru_cache(maxsize=16)
def _header_schema_for(max_tensors: int, max_ndim: int, max_elements: int, max_bytes: int) -> sj.Schema:
    """The header's types and static ranges; sizes that depend on each other
    (nnz against the shape, pos_bytes against nnz) are checked by _TensorPlan."""
    count = sj.Int(0, max_elements)
    stage = sj.Tagged("op", {
        "sparse": sj.Tagged("format", {
            "bitmap": sj.Object({"nnz": count}),
            "delta": sj.Object({"nnz": count, "pos_bytes": sj.Int(0, max_bytes)}),
        }),
        "affine": sj.Object({
            "bits": sj.Int(1, 8),
            "per_channel": sj.Bool(),
            "rounding": sj.Enum("nearest", "stochastic"),
        }),
        **{coder: sj.Object({}) for coder in sorted(codecs.ENTROPY_CODERS)},
    })
    entry = sj.Object({
        "name": sj.Str(1, MAX_NAME_LENGTH),
        "shape": sj.List(count, max_len=max_ndim),
        "nbytes": sj.Int(0, max_bytes),
        "codec": sj.List(stage, max_len=_MAX_CODEC_STAGES),
    })
    return sj.Object({"meta": _META_SCHEMA, "tensors": sj.List(entry, max_len=max_tensors)})


_META_SCHEMA = sj.Object({
    "round": sj.Int(0, sj.MAX_SAFE_INT),
    "sender": sj.Str(0, MAX_NAME_LENGTH),
    "num_samples": sj.Int(0, sj.MAX_SAFE_INT),
    "kind": sj.Str(1, 32, pattern=_KIND_PATTERN),
    "extra": sj.Map(sj.Any(), keys=sj.Str(0, MAX_NAME_LENGTH)),
})


def _read_header(raw: bytes, limits: DecodeLimits, message_bytes: int) -> Tuple[Dict[str, Any], List["_TensorPlan"]]:
    """The header's meta and its tensors' plans, every type, range and size checked.

    A dense tensor table (names, shapes, codecs, sizes) repeats from message to message: every
    update of a round, every round of a model. The last few are kept by their exact text, so
    that a header ending in one costs the check of its meta only. The text before the table must
    then be `{"meta":` and one whole JSON value (`{"meta":...}` an object of that key alone): that
    is what makes the rest the table, whatever the meta's strings hold."""
    cut = raw.find(_TABLE_START)
    table = raw[cut:] if 0 < cut and len(raw) - cut <= _TABLE_KEPT_AT_MOST else None
    if table is not None:
        known = _KNOWN_TABLES.get((table, limits))
        if known is not None and known[1] <= _inflation_bound(message_bytes):
            meta = _parse_meta_part(raw[:cut], limits)
            if meta is not None:
                return meta, known[0]
    header = _parse_header(raw, limits)
    plans, inflated = _plan_tensors(header["tensors"], limits, message_bytes)
    if table is not None and all(plan.layout == "dense" and plan.entropy is None for plan in plans):
        if _parse_meta_part(raw[:cut], limits) == header["meta"]:
            with _KNOWN_TABLES_LOCK:
                if len(_KNOWN_TABLES) >= _KNOWN_TABLES_AT_MOST:
                    del _KNOWN_TABLES[next(iter(_KNOWN_TABLES))]  # the oldest
                _KNOWN_TABLES[table, limits] = (plans, inflated)
    return header["meta"], plans


_TABLE_START = b',"tensors":['
_TABLE_KEPT_AT_MOST = 64 << 10  # bytes of a table's text: a model of hundreds of tensors
_KNOWN_TABLES_AT_MOST = 8
_KNOWN_TABLES: Dict[Tuple[bytes, DecodeLimits], Tuple[List["_TensorPlan"], int]] = {}  # -> (plans, inflated bytes)
_KNOWN_TABLES_LOCK = threading.Lock()
_META_PART = sj.Object({"meta": _META_SCHEMA})


# A meta as encode_message writes it when it has no extra and its sender needs no escape: read by
# one pattern in a third of the parser's time (anything else, valid or not, goes to the parser).
_PLAIN_META_PART = re.compile(
    (r'\{"meta":\{"extra":\{\},"kind":"(%s)","num_samples":(0|[1-9][0-9]{0,15}),"round":(0|[1-9][0-9]{0,15}),'
     r'"sender":"([ !#-\[\]-~]{0,%d})"\}' % (_KIND_PATTERN, MAX_NAME_LENGTH)).encode("ascii"))


def _plain_meta(text: bytes) -> Optional[Dict[str, Any]]:
    """The meta of `text` when it is a plain meta part (`_PLAIN_META_PART`) in range, else None."""
    plain = _PLAIN_META_PART.fullmatch(text)
    if plain is None or int(plain[2]) > sj.MAX_SAFE_INT or int(plain[3]) > sj.MAX_SAFE_INT:
        return None
    return {"extra": {}, "kind": plain[1].decode("ascii"), "num_samples": int(plain[2]),
            "round": int(plain[3]), "sender": plain[4].decode("ascii")}


def _parse_meta_part(text: bytes, limits: DecodeLimits) -> Optional[Dict[str, Any]]:
    """The meta of a header whose text up to its tensor table is `text`, or None when `text` and
    a closing brace are not an object of the one key "meta" with a valid meta."""
    plain = _plain_meta(text)
    if plain is not None:
        return plain
    if not text.isascii():
        return None
    try:
        return sj.parse(text + b"}", _META_PART, limits.json_limits())["meta"]
    except JSONError:
        return None


def _parse_header(raw: bytes, limits: DecodeLimits) -> Dict[str, Any]:
    """The header, parsed within the limits and checked against the schema."""
    if not raw.isascii():
        raise MessageError("header is not ASCII JSON (byte %d)" % next(i for i, byte in enumerate(raw) if byte > 0x7F))
    try:
        return sj.parse(raw, _header_schema(limits), limits.json_limits())
    except JSONError as exc:
        raise MessageError("header %s" % exc) from None


def _meta_text(meta: Dict[str, Any], limits: DecodeLimits) -> str:
    """The canonical JSON of the meta of a message to encode, checked as a decoder will check it.
    A plain one (no extra; ints, and strings without escapes) is written by a template and
    checked by the decoder's own pattern for it; any other goes through the schema."""
    extra, kind, sender = meta["extra"], meta["kind"], meta["sender"]
    if (type(extra) is dict and not extra and type(kind) is str and type(sender) is str
            and type(meta["round"]) is int and type(meta["num_samples"]) is int):
        text = _PLAIN_META % (kind, meta["num_samples"], meta["round"], sender)
        if text.isascii() and _plain_meta(b'{"meta":' + text.encode("ascii")) is not None:
            return text
    return _checked_meta_text(meta, limits)


_PLAIN_META = '{"extra":{},"kind":"%s","num_samples":%d,"round":%d,"sender":"%s"}'  # as the canonical encoder writes it


def _checked_meta_text(meta: Any, limits: DecodeLimits) -> str:
    """The canonical JSON of any meta, checked by the schema (which names the field of a wrong
    type or range) and, where only a parse would refuse it, by parsing that JSON within the limits."""
    if isinstance(meta, dict):
        # numpy integers become plain ints, so that the header is plain JSON
        meta = {key: int(value) if is_int(value) else value for key, value in meta.items()}
    try:
        checked = _META_SCHEMA.validate(meta, "$.meta")
        text = _canonical_text(checked)
        if checked["extra"] or not checked["sender"].isascii():  # depth, digits, strings of extra
            _META_SCHEMA.validate(sj.loads(text, limits.json_limits()), "$.meta")
        return text
    except JSONError as exc:
        raise MessageError("header %s" % exc) from None


_STAGE_RANKS = {"sparse": 0, "affine": 1, **{coder: 2 for coder in codecs.ENTROPY_CODERS}}


class _TensorPlan:
    """One schema-checked tensor entry; knows every size before decoding."""

    def __init__(self, entry: Dict[str, Any], number: int, limits: DecodeLimits):
        self.name = entry["name"]
        self.number = number  # its place in the header's list of tensors
        self.shape = tuple(entry["shape"])
        self.size = 1
        for dim in self.shape:  # checked as it grows: a huge shape never overflows
            self.size *= dim
            if self.size > limits.max_elements:
                self._fail("shape %r exceeds the limit of %d elements" % (list(self.shape), limits.max_elements))
        self.nbytes = entry["nbytes"]
        self._parse_codec(entry["codec"])

    def _fail(self, text: str):
        raise MessageError("tensor %r ($.tensors[%d]): %s" % (self.name, self.number, text))

    def _parse_codec(self, stages: List[Dict[str, Any]]):
        if len(stages) > 1:
            ops = [stage["op"] for stage in stages]
            ranks = [_STAGE_RANKS[op] for op in ops]
            if ranks != sorted(set(ranks)):
                self._fail("codec stages %s are out of order or repeated (order: sparse, affine, entropy)" % ops)
        self.layout, self.nnz, self.pos_bytes = "dense", self.size, 0
        self.bits, self.per_channel, self.entropy = None, False, None
        for stage in stages:
            op = stage["op"]
            if op == "sparse":
                self._parse_sparse(stage)
            elif op == "affine":
                if stage["per_channel"] and len(self.shape) < 2:
                    self._fail("affine per_channel must be false below 2 dimensions")
                if stage["per_channel"] and self.size == 0:  # scales of no value: work for nothing
                    self._fail("affine per_channel on a tensor with no values")
                self.bits, self.per_channel = stage["bits"], stage["per_channel"]
            else:
                self.entropy = op
        self.channels = self.shape[0] if self.per_channel else 1
        value_bits = 32 if self.bits is None else self.bits
        params = codecs.QuantParams.nbytes(self.channels) if self.bits else 0
        self.inner_bytes = self.pos_bytes + params + codecs.packed_size(self.nnz, value_bits)
        if self.entropy is None and self.inner_bytes != self.nbytes:
            self._fail("payload of %d bytes, the codec chain implies %d" % (self.nbytes, self.inner_bytes))

    def _parse_sparse(self, stage: Dict[str, Any]):
        fmt, nnz = stage["format"], stage["nnz"]
        if nnz > self.size:
            self._fail("sparse nnz must be an integer in 0..%d, got %d" % (self.size, nnz))
        self.layout, self.nnz = fmt, nnz
        if fmt == "bitmap":
            self.pos_bytes = (self.size + 7) // 8
            return
        most = nnz * codecs.varint_max_length(self.size)
        if not nnz <= stage["pos_bytes"] <= most:
            self._fail("delta pos_bytes must be an integer in %d..%d, got %d" % (nnz, most, stage["pos_bytes"]))
        self.pos_bytes = stage["pos_bytes"]

    def decode(self, payload: Union[bytes, memoryview], allow_nonfinite: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(the tensor, the flat positions of its stored values when it travelled sparse)"""
        try:
            return self._decode(payload, allow_nonfinite)
        except MessageError as exc:
            if str(exc).startswith("tensor %r" % self.name):
                raise
            raise MessageError("tensor %r: %s" % (self.name, exc)) from None

    def _decode(self, payload: Union[bytes, memoryview], allow_nonfinite: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
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
            if not allow_nonfinite and not np.isfinite(values).all():
                raise MessageError("holds NaN or Inf")
        else:
            params_end = offset + codecs.QuantParams.nbytes(self.channels)
            params = codecs.QuantParams.from_bytes(payload[offset:params_end], self.channels, self.bits)
            codes = codecs.unpack_bits(payload[params_end:], self.nnz, self.bits)
            counts = None
            if index is not None and self.per_channel:
                counts = codecs.channel_counts(index, self.size, self.channels)
            values = codecs.affine_dequantize(codes, params, counts)
        if index is None:
            return values.reshape(self.shape), None
        out = np.zeros(self.size, dtype=np.float32)
        out[index] = values
        return out.reshape(self.shape), index


# What decoding may cost a byte of message: the bytes its entropy stages may inflate to (before any
# value is decoded). Real updates inflate a few times; a bomb of repeated bytes, thousands.
MAX_INFLATION = 256


def _inflation_bound(message_bytes: int) -> int:
    return MAX_INFLATION * message_bytes + (1 << 20)


def _plan_tensors(entries: List[Dict[str, Any]], limits: DecodeLimits,
                  message_bytes: int) -> Tuple[List[_TensorPlan], int]:
    """The tensors' plans and the bytes their entropy stages inflate to."""
    plans, names, total, inflated = [], set(), 0, 0
    for number, entry in enumerate(entries):
        plan = _TensorPlan(entry, number, limits)
        if plan.name in names:
            raise MessageError("tensor %r appears twice" % plan.name)
        names.add(plan.name)
        total += plan.size
        if total > limits.max_elements:
            raise MessageError("tensors hold more than the limit of %d elements" % limits.max_elements)
        inflated += plan.inner_bytes if plan.entropy else 0
        if inflated > _inflation_bound(message_bytes):
            raise MessageError("entropy stages inflate to more than %d bytes for a %d-byte message (at most %dx "
                               "and 1 MiB)" % (inflated, message_bytes, MAX_INFLATION))
        plans.append(plan)
    return plans, inflated
