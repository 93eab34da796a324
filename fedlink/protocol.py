"""The MQTT protocol shared by the coordinator and the device clients (see
docs/protocol.md): topic names under a run id, the JSON payloads and the
content ids of binary ones. Binary payloads (models, updates) are fedcore
containers; everything else is small UTF-8 JSON, parsed strictly.
"""

import hashlib
import json
import re
from typing import Any, Dict, Mapping, Tuple

from fedcore import safejson as sj
from fedcore.errors import ConfigError

from .chunks import MAX_CHUNKS, split_topic

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_JSON_BYTES",
    "Topics",
    "blob_id",
    "check_name",
    "to_json",
    "from_json",
    "LIMITS",
    "PRESENCE",
    "ANNOUNCEMENT",
    "ACK",
]

PROTOCOL_VERSION = 1
MAX_JSON_BYTES = 64 * 1024  # presence, announcements and acks are small
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(value: Any, what: str) -> str:
    """A run or client id usable as one topic level (no '/', '+', '#')."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(
            f"{what} must be 1-64 characters of letters, digits, '_', '.', '-' "
            f"(starting with a letter or digit), got {value!r}"
        )
    return value


class Topics:
    """Every topic of one run. `+` in a subscription stands for a client id."""

    def __init__(self, run_id: str, prefix: str = "fl"):
        self.run_id = check_name(run_id, "run id")
        self.base = f"{prefix}/{run_id}"
        self.round = f"{self.base}/round"            # retained announcement (JSON)
        self.model = f"{self.base}/model"            # retained broadcast (container)
        self.full_model = f"{self.base}/model/full"  # retained whole model (container)
        self.all_presence = f"{self.base}/presence/+"
        self.all_updates = f"{self.base}/update/+/+/chunk/+"  # updates travel as chunks (fedlink.chunks)

    def presence(self, client_id: str) -> str:
        return f"{self.base}/presence/{client_id}"

    def update(self, client_id: str, plan_id: str) -> str:
        return f"{self.base}/update/{client_id}/{plan_id}"

    def ack(self, client_id: str) -> str:
        return f"{self.base}/ack/{client_id}"

    def sender(self, topic: str) -> str:
        """The client a message on `topic` (or on one of its chunk topics) comes from, else the
        topic itself: whose share of a receiver's memory it counts against."""
        return self.parse(split_topic(topic)[0] or topic)[1] or topic

    def parse(self, topic: str) -> Tuple[str, str, str]:
        """(kind, client_id, plan_id) of a topic under this run; kind "" if unknown."""
        if not topic.startswith(self.base + "/"):
            return "", "", ""
        parts = topic[len(self.base) + 1:].split("/")
        if len(parts) == 2 and parts[0] == "presence":
            return "presence", parts[1], ""
        if len(parts) == 3 and parts[0] == "update":
            return "update", parts[1], parts[2]
        if len(parts) == 2 and parts[0] == "ack":
            return "ack", parts[1], ""
        return "", "", ""


def to_json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(payload), sort_keys=True, separators=(",", ":")).encode("utf-8")


# Every JSON payload of the protocol, by schema (fedcore.safejson): a document is parsed within
# LIMITS (size, depth, digits: no RecursionError or OverflowError can come out) and only then
# checked field by field. Unknown keys are dropped, so newer peers may add fields.
_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_HEX_ID = r"[A-Za-z0-9]{1,64}"
LIMITS = sj.Limits(max_bytes=MAX_JSON_BYTES, max_depth=8, max_int_digits=16)
_BYTES = sj.Int(0, 1 << 50)
PRESENCE = sj.Object(
    {"status": sj.Enum("online", "offline")},
    optional={
        "v": sj.Int(PROTOCOL_VERSION, PROTOCOL_VERSION),
        "client": sj.Str(1, 64, pattern=_ID),
        "time": sj.Float(0, 1e11),
        "capabilities": sj.Map(sj.Any(), keys=sj.Str(1, 64), max_len=32),
        "last_update": sj.Object({"plan_id": sj.Str(1, 64, pattern=_HEX_ID)}, optional={
            "round": sj.Int(0, 1 << 31), "train_s": sj.Float(0, 1e7), "bytes": _BYTES,
            "full_model_bytes": _BYTES, "wire_down": _BYTES}, unknown="drop"),
    }, unknown="drop")
ANNOUNCEMENT = sj.Object({}, optional={
    "v": sj.Int(0, 1 << 16),  # another version is refused by name, not as a schema error
    "run": sj.Str(1, 64, pattern=_ID),
    "plan_id": sj.Str(1, 64, pattern=_HEX_ID),
    "model_id": sj.Str(1, 64, pattern=_HEX_ID),
    "full_id": sj.Str(1, 64, pattern=_HEX_ID),
    "issued_at": sj.Float(0, 1e11),
    "plan": sj.Map(sj.Any(), max_len=16),  # RoundPlan.from_dict checks every field
    "done": sj.Bool(),
    "completed_rounds": sj.Int(0, 1 << 31),
    "stopped": sj.Str(0, 1024),
}, unknown="drop")
# "partial": the coordinator holds some chunks of the update `update_id` (its whole SHA-256) and
# names the ones it lacks, as at most 64 [first, last] ranges; the device re-sends only those.
ACK = sj.Object({"status": sj.Enum("accepted", "duplicate", "late", "rejected", "partial")}, optional={
    "v": sj.Int(PROTOCOL_VERSION, PROTOCOL_VERSION),
    "plan_id": sj.Str(0, 64),
    "round": sj.Int(0, 1 << 31),
    "reason": sj.Str(0, 4096),
    "update_id": sj.Str(0, 64, pattern=r"[0-9a-f]{0,64}"),
    "missing": sj.List(sj.List(sj.Int(0, MAX_CHUNKS - 1), 2, 2), 0, 64),
}, unknown="drop")


def from_json(raw: bytes, what: str, schema: sj.Schema) -> Dict[str, Any]:
    """Parse a JSON payload from the network against its schema (PRESENCE, ANNOUNCEMENT,
    ACK); ConfigError says what is wrong and where ($.last_update.train_s)."""
    try:
        return sj.parse(bytes(raw), schema, LIMITS)
    except sj.JSONError as error:
        raise ConfigError(f"{what}: {error}") from None


def blob_id(blob: bytes) -> str:
    """Short content id of a model or update: clients and the coordinator name messages by it."""
    return hashlib.sha256(blob).hexdigest()[:16]
