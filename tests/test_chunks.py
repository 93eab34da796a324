"""fedlink.chunks: blobs cut under a payload cap and put back together in bounded memory;
hostile chunks of every kind refused with their reason; and a structure-aware fuzzer of
chunk headers (FEDCORE_FUZZ_SECONDS, default 3; `make fuzz` runs it longer)."""

import hashlib
import os
import random
import struct
import time
import traceback
import zlib

import pytest

from fedlink.chunks import (
    HEADER_BYTES,
    MAX_CHUNKS,
    ChunkError,
    Reassembler,
    chunk_count,
    chunk_message,
    chunk_topic,
    ranges,
    split_topic,
)

FUZZ_SECONDS = float(os.environ.get("FEDCORE_FUZZ_SECONDS", "3"))
FUZZ_SEED = int(os.environ.get("FEDCORE_FUZZ_SEED", "0"))
CAP = 4096  # max_payload of these tests: a 20 kB blob is 5 chunks


def chunks_of(blob: bytes, max_payload: int = CAP):
    size, count = chunk_count(len(blob), max_payload)
    digest = hashlib.sha256(blob).digest()
    return [chunk_message(blob, digest, size, i) for i in range(count)]


def reassembler(**limits) -> Reassembler:
    settings = dict(max_total=1 << 20, sender_bytes=1 << 20, total_bytes=4 << 20)
    settings.update(limits)
    return Reassembler(**settings)


def reframe(message: bytes, **fields) -> bytes:
    """`message` with header fields changed and a valid CRC again (so the checks after it run)."""
    names = ("magic", "version", "blob", "total", "chunk_size", "count", "index")
    layout = struct.Struct("<4sB3x32sQIII")
    values = dict(zip(names, layout.unpack_from(message)))
    values.update(fields)
    head = layout.pack(*(values[n] for n in names))
    body = message[HEADER_BYTES:]
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def test_a_blob_crosses_as_chunks_in_any_order_and_comes_back_whole():
    blob = os.urandom(20_000)
    messages = chunks_of(blob)
    assert len(messages) == 5 and all(len(m) <= CAP for m in messages)
    parts = reassembler()
    order = [3, 0, 4, 1, 2]
    results = [parts.add("t", messages[i], "a", i) for i in order]
    assert [r.blob for r in results[:-1]] == [None] * 4
    assert results[-1].blob == blob
    assert results[-1].wire_bytes == sum(len(m) for m in messages) == len(blob) + 5 * HEADER_BYTES
    assert parts.held == 0 and not parts.partials


def test_one_chunk_when_chunking_is_off_and_the_smallest_blob():
    assert chunk_count(5_000_000, 0) == (5_000_000, 1)
    assert chunk_count(1, CAP) == (CAP - HEADER_BYTES, 1)
    (message,) = chunks_of(b"x", 0)
    assert reassembler().add("t", message, "a", 0).blob == b"x"
    with pytest.raises(ValueError, match="at least 1024"):
        chunk_count(10, 100)


def test_chunk_topics():
    assert chunk_topic("fl/run/model", 7) == "fl/run/model/chunk/7"
    assert split_topic("fl/run/model/chunk/7") == ("fl/run/model", 7)
    for topic in ("fl/run/model", "fl/run/model/chunk/x", "fl/run/model/chunk/07", "chunk/1",
                  "fl/run/model/chunk/99999999"):
        assert split_topic(topic) == ("", -1), topic


def test_duplicates_are_dropped_and_a_repeat_says_what_is_missing():
    blob = os.urandom(20_000)
    messages = chunks_of(blob)
    parts = reassembler()
    parts.add("t", messages[0], "a", 0)
    parts.add("t", messages[2], "a", 2)
    repeat = parts.add("t", messages[0], "a", 0)
    assert repeat.repeat and repeat.missing == [[1, 1], [3, 4]] and parts.duplicates == 1
    for i in (1, 3, 4):
        last = parts.add("t", messages[i], "a", i)
    assert last.blob == blob
    again = parts.add("t", messages[4], "a", 4)  # asking after a blob already whole
    assert again.repeat and again.missing == [] and again.blob is None


def test_ranges_are_bounded():
    assert ranges(set(), 3) == [[0, 2]]
    assert ranges({1, 3}, 6) == [[0, 0], [2, 2], [4, 5]]
    assert len(ranges(set(range(0, 1000, 2)), 1000, limit=64)) == 64


@pytest.mark.parametrize("change, words", [
    (lambda m: m[:10], "shorter than its 64-byte header"),
    (lambda m: b"XXXX" + m[4:], "not a chunk: magic"),
    (lambda m: m[:4] + b"\x02" + m[5:], "version 2 is not supported"),
    (lambda m: m[:-1] + bytes([m[-1] ^ 1]), "checksum mismatch"),
    (lambda m: reframe(m, index=5), "index 5 is out of range for 5 chunks"),
    (lambda m: reframe(m, index=MAX_CHUNKS + 5), "out of range"),
    (lambda m: reframe(m, total=2 << 20), "this receiver takes 1 to 1048576"),
    (lambda m: reframe(m, total=0), "this receiver takes 1 to"),
    (lambda m: reframe(m, count=9), "9 chunks of 4032 bytes for a blob of 20000 bytes"),
    (lambda m: reframe(m, chunk_size=0), "chunks of 0 bytes"),
    (lambda m: m + b"extra" if False else reframe(m + b"extra"), "carries 4037 bytes, expected 4032"),
])
def test_hostile_headers_are_refused_with_their_reason(change, words):
    message = chunks_of(os.urandom(20_000))[0]
    with pytest.raises(ChunkError, match=words):
        reassembler().add("t", change(message), "a", 0)


def test_a_chunk_on_another_index_topic_conflicting_totals_and_a_forged_chunk():
    blob = os.urandom(20_000)
    messages = chunks_of(blob)
    parts = reassembler()
    with pytest.raises(ChunkError, match="chunk 1 arrived on the topic of chunk 2"):
        parts.add("t", messages[1], "a", 2)
    parts = reassembler()
    parts.add("t", messages[0], "a", 0)
    conflicting = reframe(messages[1], total=20_001, count=5)
    with pytest.raises(ChunkError, match="says 20001 bytes in chunks of 4032; earlier chunks"):
        parts.add("t", conflicting, "a", 1)
    # A chunk with a valid CRC but other bytes: the whole blob's SHA-256 catches it.
    parts = reassembler()
    forged = reframe(messages[1][:HEADER_BYTES] + bytes(len(messages[1]) - HEADER_BYTES))
    for i, message in enumerate(messages):
        if i != 4:
            parts.add("t", forged if i == 1 else message, "a", i)
    with pytest.raises(ChunkError, match="do not hash to its SHA-256"):
        parts.add("t", messages[4], "a", 4)
    assert parts.held == 0
    # Once refused, the blob's other chunks are dropped unread (one reason, not one per chunk).
    assert parts.add("t", messages[0], "a", 0).other


def test_one_sender_cannot_claim_another_blob_or_more_than_its_share():
    blob = os.urandom(20_000)
    messages = chunks_of(blob)
    parts = reassembler(sender_bytes=10_000, total_bytes=20_000, per_sender=2)
    parts.add("update/a", messages[0], "a", 0)
    # b sends a's blob on its own topic: a separate transfer, charged to b, no mixing.
    parts.add("update/b", messages[1], "b", 1)
    assert parts.partials["update/a"].pieces.keys() == {0} and parts.partials["update/b"].pieces.keys() == {1}
    parts.add("update/a", messages[1], "a", 1)
    with pytest.raises(ChunkError, match="a has 8064 bytes under way \\(at most 10000\\)"):
        parts.add("update/a", messages[2], "a", 2)
    # A flood of never-finished blobs: two at a time per sender, then refused.
    parts = reassembler(per_sender=2)
    for n in range(2):
        parts.add(f"x/{n}", chunks_of(os.urandom(20_000))[0], "m", 0)
    with pytest.raises(ChunkError, match="m already has 2 blobs under way"):
        parts.add("x/9", chunks_of(os.urandom(20_000))[0], "m", 0)
    assert parts.held == 2 * 4032


def test_memory_is_what_arrived_not_what_a_header_claims():
    parts = reassembler(max_total=1 << 30, sender_bytes=1 << 30, total_bytes=1 << 30)
    claim = reframe(chunks_of(os.urandom(20_000))[0], total=(1 << 30) - 1, count=-(-((1 << 30) - 1) // 4032))
    parts.add("t", claim, "a", 0)
    assert parts.held == 4032


def test_a_newer_blob_replaces_the_one_under_way_and_stale_ones_expire():
    first, second = os.urandom(20_000), os.urandom(9_000)
    parts = reassembler(timeout_s=5.0)
    parts.add("model", chunks_of(first)[0], "c", 0, now=0.0)
    parts.add("model", chunks_of(second)[1], "c", 1, now=1.0)
    assert parts.partials["model"].total == 9_000 and parts.held == 4032
    assert parts.expire(now=5.5) == [] and parts.expire(now=6.5) == ["model"] and parts.held == 0


def test_a_fetch_takes_only_the_blob_it_wants():
    wanted, other = os.urandom(20_000), os.urandom(20_000)
    parts = reassembler()
    want = hashlib.sha256(wanted).hexdigest()[:16]
    assert parts.add("model", chunks_of(other)[0], "c", 0, want=want).other
    assert not parts.partials
    results = [parts.add("model", m, "c", i, want=want) for i, m in enumerate(chunks_of(wanted))]
    assert results[-1].blob == wanted


def test_stalled_blobs_are_reported_once_per_period():
    parts = reassembler()
    parts.add("t", chunks_of(os.urandom(20_000))[2], "a", 2, now=10.0)
    assert parts.stalled(2.0, now=11.0) == []
    ((topic, blob, missing),) = parts.stalled(2.0, now=12.5)
    assert topic == "t" and len(blob) == 64 and missing == [[0, 1], [3, 4]]
    assert parts.stalled(2.0, now=13.0) == []


# ---------------------------------------------------------------- structure-aware fuzzer


def _mutants(rng: random.Random, messages):
    """Chunks of a valid 5-chunk blob with header fields, lengths and bytes changed; most are
    re-framed with a valid CRC so they reach the checks behind it."""
    ints = [0, 1, 2, 4, 5, 4031, 4032, 4033, 20_000, 1 << 20, (1 << 20) + 1, MAX_CHUNKS, MAX_CHUNKS + 1,
            (1 << 31) - 1, (1 << 32) - 1]
    message = rng.choice(messages)
    kind = rng.randrange(6)
    if kind == 0:
        field = rng.choice(["total", "chunk_size", "count", "index"])
        limit = (1 << 64) - 1 if field == "total" else (1 << 32) - 1
        value = rng.choice(ints + [rng.randrange(limit + 1)])
        return reframe(message, **{field: min(value, limit)})
    if kind == 1:
        return reframe(message, blob=os.urandom(32))
    if kind == 2:  # truncated or extended body, re-framed
        cut = rng.randrange(len(message) + 64)
        return reframe((message + os.urandom(64))[:max(HEADER_BYTES, cut)])
    if kind == 3:  # a flipped byte anywhere, CRC left alone
        position = rng.randrange(len(message))
        return message[:position] + bytes([message[position] ^ (1 << rng.randrange(8))]) + message[position + 1:]
    if kind == 4:
        return message[:rng.randrange(HEADER_BYTES + 1)]
    return reframe(message, version=rng.randrange(256)) if rng.random() < 0.5 else os.urandom(rng.randrange(200))


def test_structure_aware_fuzzing_of_chunk_headers():
    """Only ChunkError comes out, memory stays within the limits, and the honest blob still
    comes through whole after every hostile chunk."""
    rng = random.Random(FUZZ_SEED)
    blob = os.urandom(20_000)
    messages = chunks_of(blob)
    limits = dict(max_total=1 << 20, sender_bytes=64 << 10, total_bytes=256 << 10, per_sender=4)
    parts = Reassembler(**limits)
    ends = time.monotonic() + FUZZ_SECONDS
    tried = refused = 0
    while time.monotonic() < ends:
        mutant = _mutants(rng, messages)
        sender, topic, index = rng.choice(["a", "b", "c"]), rng.choice(["t/1", "t/2", "t/3", "t/4", "t/5"]), \
            rng.randrange(6)
        try:
            parts.add(topic, mutant, sender, index)
        except ChunkError:
            refused += 1
        except Exception:  # pragma: no cover - what the fuzzer is for
            pytest.fail(f"seed {FUZZ_SEED}, try {tried}: {mutant.hex()}\n{traceback.format_exc()}")
        tried += 1
        assert parts.held <= limits["total_bytes"]
        assert all(held <= limits["sender_bytes"] for held in parts._held.values())
        assert sum(len(p.pieces) for p in parts.partials.values()) <= 3 * 5 * 4
    honest = Reassembler(**limits)
    results = [honest.add("t/honest", m, "h", i) for i, m in enumerate(messages)]
    assert results[-1].blob == blob
    print(f"chunk fuzzer: {tried} mutants in {FUZZ_SECONDS:.0f} s, {refused} refused (seed {FUZZ_SEED})")
    assert tried > 100 and refused > 0
