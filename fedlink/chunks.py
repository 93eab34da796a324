"""Blobs (models, updates) cut into chunks that fit a broker's payload cap, and put
back together in bounded memory (docs/protocol.md, "Chunks").

A blob published on a topic T travels as messages on T/chunk/<index>, each a
64-byte header then its slice of the blob (every slice but the last is
`chunk_size` bytes long):

    magic       4 bytes  b"FLCK"
    version     u8       1
    (zero)      3 bytes
    blob        32 bytes SHA-256 of the whole blob: its name and its checksum
    total       u64 LE   the blob's length
    chunk_size  u32 LE   the length of every slice but the last
    count       u32 LE   how many chunks: ceil(total / chunk_size)
    index       u32 LE   this chunk's place, 0 .. count - 1
    crc         u32 LE   CRC-32 (zlib) of the header's first 60 bytes and the slice

Standard library only: the board ships it.
"""

import hashlib
import struct
import time
import zlib
from typing import Dict, List, NamedTuple, Optional, Set, Tuple, TypeVar, Union

from fedcore.crc import crc32
from fedcore.errors import ConfigError, MessageError

__all__ = ["HEADER_BYTES", "MAGIC", "MAX_CHUNKS", "MIN_PAYLOAD", "Added", "Chunk", "ChunkError", "Reassembler",
           "check_max_payload", "remember", "chunk_count",
           "chunk_message", "chunk_topic", "parse_chunk", "ranges", "split_topic"]

MAGIC = b"FLCK"
VERSION = 1
_FIELDS = struct.Struct("<4sB3x32sQIII")
_CRC = struct.Struct("<I")
HEADER_BYTES = _FIELDS.size + _CRC.size  # 64
MIN_PAYLOAD = 1024  # a smaller cap would spend most of each message on its header
MAX_CHUNKS = 1 << 20  # a 128 GiB blob at 128 KiB chunks: far beyond any receiver's limit
CHUNK_LEVEL = "chunk"
K = TypeVar("K")
V = TypeVar("V")


class ChunkError(MessageError):
    """A chunk was refused: the text says which field and why; `blob` is the SHA-256 its
    header names when the header's checksum held (b"" otherwise)."""

    def __init__(self, text: str, blob: bytes = b""):
        super().__init__(text)
        self.blob = blob


class Added(NamedTuple):
    """What one chunk did: `blob` is the whole blob when it finished one; `repeat` is true for a
    chunk already held (of the blob under way, or of the last one finished on its topic): its
    sender re-sent it, or asks where the transfer stands."""
    blob: Optional[bytes]
    blob_id: str  # hex SHA-256
    repeat: bool = False
    missing: Optional[List[List[int]]] = None  # with `repeat`: what the blob still lacks ([]: none)
    other: bool = False  # a chunk of another blob than the one wanted: dropped
    wire_bytes: int = 0  # with `blob`: the chunk messages that made it, repeats included


class Chunk(NamedTuple):
    blob: bytes  # SHA-256 of the whole blob
    total: int
    chunk_size: int
    count: int  # type: ignore[assignment]  # the header's names; tuple's count() and index() go unused
    index: int  # type: ignore[assignment]
    data: bytes


def chunk_topic(topic: str, index: Union[int, str]) -> str:
    """The topic of chunk `index` of the blob on `topic` ("+": all of them, as a subscription)."""
    return "%s/%s/%s" % (topic, CHUNK_LEVEL, index)


def split_topic(topic: str) -> Tuple[str, int]:
    """(the blob's topic, the index) of a chunk topic; ("", -1) when it is none."""
    head, _, index = topic.rpartition("/")
    base, _, level = head.rpartition("/")
    if level != CHUNK_LEVEL or not base or not index.isdigit() or len(index) > 7 or (index[0] == "0" and index != "0"):
        return "", -1
    return base, int(index)


def check_max_payload(value: int, what: str = "max_payload") -> int:
    """A payload cap: 0 (one chunk a blob) or at least MIN_PAYLOAD bytes; ConfigError otherwise."""
    if value < 0 or 0 < value < MIN_PAYLOAD:
        raise ConfigError("%s must be 0 (no chunks) or at least %d bytes, got %d" % (what, MIN_PAYLOAD, value))
    return value


def remember(memo: Dict[K, V], key: K, value: V, limit: int) -> None:
    """memo[key] = value, kept to the `limit` keys set last (the oldest go): what a receiver
    remembers of its peers costs bounded memory whatever they send."""
    memo.pop(key, None)
    memo[key] = value
    while len(memo) > limit:
        del memo[next(iter(memo))]


def chunk_count(total: int, max_payload: int) -> Tuple[int, int]:
    """(chunk_size, count) of a blob of `total` bytes under a payload cap (0: one chunk)."""
    check_max_payload(max_payload)
    size = max(1, total) if not max_payload else max_payload - HEADER_BYTES
    count = max(1, -(-total // size))
    if count > MAX_CHUNKS:
        raise ValueError("a blob of %d bytes would need %d chunks (at most %d)" % (total, count, MAX_CHUNKS))
    return size, count


def chunk_message(blob: bytes, digest: bytes, chunk_size: int, index: int) -> bytes:
    """Chunk `index` of `blob` (whose SHA-256 is `digest`) as one message payload."""
    count = max(1, -(-len(blob) // chunk_size))
    piece = bytes(memoryview(blob)[index * chunk_size:(index + 1) * chunk_size])
    fields = _FIELDS.pack(MAGIC, VERSION, digest, len(blob), chunk_size, count, index)
    return fields + _CRC.pack(crc32(piece, zlib.crc32(fields))) + piece


def parse_chunk(message: bytes, max_total: int) -> Chunk:
    """A chunk message checked field by field before anything is kept; ChunkError says what is wrong."""
    if len(message) < HEADER_BYTES:
        raise ChunkError("chunk of %d bytes is shorter than its %d-byte header" % (len(message), HEADER_BYTES))
    magic, version, digest, total, size, count, index = _FIELDS.unpack_from(message)
    if magic != MAGIC:
        raise ChunkError("not a chunk: magic %r, expected %r" % (magic, MAGIC))
    if version != VERSION:
        raise ChunkError("chunk format version %d is not supported (this reader knows %d)" % (version, VERSION))
    (crc,) = _CRC.unpack_from(message, _FIELDS.size)
    if crc32(memoryview(message)[HEADER_BYTES:], zlib.crc32(memoryview(message)[:_FIELDS.size])) != crc:
        raise ChunkError("chunk %d: checksum mismatch (corrupted)" % index)
    # The header is as its sender wrote it: what follows refuses the sender's blob, not noise.
    digest = bytes(digest)
    if message[5:8] != b"\0\0\0":
        raise ChunkError("chunk header bytes 5-7 must be zero", digest)
    if not 1 <= total <= max_total:
        raise ChunkError("chunk says the blob has %d bytes; this receiver takes 1 to %d" % (total, max_total), digest)
    if size < 1 or count != -(-total // size):
        raise ChunkError("chunk says %d chunks of %d bytes for a blob of %d bytes" % (count, size, total), digest)
    if count > MAX_CHUNKS:
        raise ChunkError("chunk says the blob has %d chunks (at most %d)" % (count, MAX_CHUNKS), digest)
    if index >= count:
        raise ChunkError("chunk index %d is out of range for %d chunks" % (index, count), digest)
    expected = size if index < count - 1 else total - size * (count - 1)
    if len(message) - HEADER_BYTES != expected:
        raise ChunkError("chunk %d of %d carries %d bytes, expected %d" % (index, count, len(message) - HEADER_BYTES,
                                                                        expected), digest)
    return Chunk(bytes(digest), total, size, count, index, bytes(memoryview(message)[HEADER_BYTES:]))


def ranges(indices: Set[int], count: int, limit: int = 64) -> List[List[int]]:
    """The indices in 0..count-1 that are *not* in `indices`, as at most `limit` [first, last] pairs."""
    found: List[List[int]] = []
    index = 0
    while index < count and len(found) < limit:
        if index in indices:
            index += 1
            continue
        first = index
        while index + 1 < count and index + 1 not in indices:
            index += 1
        found.append([first, index])
        index += 1
    return found


class _Partial:
    """A blob being received: the chunks so far, by index (memory: what arrived, not what was claimed)."""

    def __init__(self, chunk: Chunk, sender: str, now: float):
        self.blob, self.total, self.chunk_size, self.count = chunk.blob, chunk.total, chunk.chunk_size, chunk.count
        self.sender = sender
        self.pieces: Dict[int, bytes] = {}
        self.held = 0
        self.wire_bytes = 0
        self.progress = now  # when a new chunk last arrived
        self.status_at = now  # when the sender was last told what is missing

    def missing(self, limit: int = 64) -> List[List[int]]:
        return ranges(set(self.pieces), self.count, limit)

    def missing_count(self) -> int:
        return self.count - len(self.pieces)


class Reassembler:
    """Chunks in, whole blobs out, in bounded memory.

    One blob at a time per topic (a chunk of another blob replaces the one under way), at most
    `per_sender` blobs and `sender_bytes` bytes under way per sender and `total_bytes` in all,
    checked before a chunk is kept; duplicates are counted and dropped; a blob without progress
    for `timeout_s` is dropped; a blob is handed over only when its SHA-256 matches. Not
    thread-safe: its owner holds a lock."""

    def __init__(self, max_total: int, sender_bytes: int, total_bytes: int, per_sender: int = 4,
                 timeout_s: float = 300.0, recent: int = 64):
        self.max_total = max_total
        self.sender_bytes = sender_bytes
        self.total_bytes = total_bytes
        self.per_sender = per_sender
        self.timeout_s = timeout_s
        self.partials: Dict[str, _Partial] = {}  # topic -> blob under way
        self.done: Dict[str, bytes] = {}  # topic -> SHA-256 of the last blob finished there (at most `recent`)
        self._refused: Dict[Tuple[str, bytes], None] = {}  # (topic, SHA-256) of blobs refused (at most `recent`)
        self._recent = recent
        self._held: Dict[str, int] = {}  # sender -> bytes under way
        self.held = 0
        self.duplicates = 0
        self.wire_bytes = 0  # every chunk message that reached add(), headers and duplicates included

    def add(self, topic: str, message: bytes, sender: str, index: int, now: Optional[float] = None,
            want: Optional[str] = None) -> Added:
        """Keep one chunk of the blob on `topic` (its topic's `index` must match its own).
        ChunkError when refused. `want`: only a blob whose id (fedlink.protocol.blob_id) starts
        so is kept."""
        now = time.monotonic() if now is None else now
        self.wire_bytes += len(message)
        chunk = None
        try:
            chunk = parse_chunk(message, self.max_total)
            if (topic, chunk.blob) in self._refused:
                return Added(None, chunk.blob.hex(), other=True)  # refused once, with its reason: not again
            return self._keep(topic, chunk, len(message), sender, index, now, want)
        except ChunkError as error:
            digest = error.blob or (chunk.blob if chunk is not None else b"")
            if digest:  # the whole blob is refused: its other chunks are dropped unread
                if (topic, digest) in self._refused:
                    return Added(None, digest.hex(), other=True)
                remember(self._refused, (topic, digest), None, self._recent)
            raise

    def _keep(self, topic: str, chunk: Chunk, wire: int, sender: str, index: int, now: float,
              want: Optional[str]) -> Added:
        if chunk.index != index:
            raise ChunkError("chunk %d arrived on the topic of chunk %d" % (chunk.index, index), chunk.blob)
        name = chunk.blob.hex()
        if want is not None and not name.startswith(want):
            return Added(None, name, other=True)
        if self.done.get(topic) == chunk.blob:
            self.duplicates += 1
            return Added(None, name, True, [])
        partial = self.partials.get(topic)
        if partial is not None and partial.blob != chunk.blob:
            self._drop(topic)  # a newer blob on the same topic: the old one is void
            partial = None
        if partial is None:
            partial = self._start(topic, chunk, sender, now)
        elif (chunk.total, chunk.chunk_size) != (partial.total, partial.chunk_size):
            raise ChunkError("chunk %d says %d bytes in chunks of %d; earlier chunks of blob %s said %d in %d"
                             % (chunk.index, chunk.total, chunk.chunk_size, chunk.blob.hex()[:16], partial.total,
                                partial.chunk_size))
        partial.wire_bytes += wire
        if chunk.index in partial.pieces:
            self.duplicates += 1
            return Added(None, name, True, partial.missing())
        size = len(chunk.data)
        if self._held.get(sender, 0) + size > self.sender_bytes or self.held + size > self.total_bytes:
            raise ChunkError("chunk %d refused: %s has %d bytes under way (at most %d), all senders %d (at most %d)"
                             % (chunk.index, sender, self._held.get(sender, 0), self.sender_bytes, self.held,
                                self.total_bytes))
        partial.pieces[chunk.index] = chunk.data
        partial.held += size
        partial.progress = now
        self._held[sender] = self._held.get(sender, 0) + size
        self.held += size
        if len(partial.pieces) < partial.count:
            return Added(None, name)
        blob = b"".join(partial.pieces[i] for i in range(partial.count))
        self._drop(topic)
        if hashlib.sha256(blob).digest() != partial.blob:
            raise ChunkError("blob %s: its %d chunks do not hash to its SHA-256 (a chunk was forged or mixed up)"
                             % (partial.blob.hex()[:16], partial.count))
        remember(self.done, topic, partial.blob, self._recent)
        return Added(blob, name, wire_bytes=partial.wire_bytes)

    def _start(self, topic: str, chunk: Chunk, sender: str, now: float) -> _Partial:
        mine = [t for t, p in self.partials.items() if p.sender == sender]
        if len(mine) >= self.per_sender:
            raise ChunkError("%s already has %d blobs under way (at most %d): %s" % (sender, len(mine),
                                                                                    self.per_sender, ", ".join(mine)))
        partial = self.partials[topic] = _Partial(chunk, sender, now)
        return partial

    def _drop(self, topic: str) -> None:
        partial = self.partials.pop(topic)
        self.held -= partial.held
        left = self._held.get(partial.sender, 0) - partial.held
        if left > 0:
            self._held[partial.sender] = left
        else:
            self._held.pop(partial.sender, None)

    def expire(self, now: Optional[float] = None) -> List[str]:
        """Drop the blobs without progress for timeout_s; their topics."""
        now = time.monotonic() if now is None else now
        stale = [t for t, p in self.partials.items() if now - p.progress > self.timeout_s]
        for topic in stale:
            self._drop(topic)
        return stale

    def stalled(self, after_s: float, now: Optional[float] = None) -> List[Tuple[str, str, List[List[int]]]]:
        """(topic, blob id, missing ranges) of each blob without progress for `after_s` whose sender
        was not told for as long; marks them told."""
        now = time.monotonic() if now is None else now
        found = []
        for topic, partial in self.partials.items():
            if now - partial.progress >= after_s and now - partial.status_at >= after_s:
                partial.status_at = now
                found.append((topic, partial.blob.hex(), partial.missing()))
        return found
