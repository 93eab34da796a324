"""The MQTT protocol shared by the coordinator and the device clients (see
docs/protocol.md): topic names under a run id, the JSON payloads and the
content ids of binary ones. Binary payloads (models, updates) are fedcore
containers; everything else is small UTF-8 JSON, parsed strictly.
"""

import hashlib
import json
import re
from typing import Any, Dict, Mapping, Tuple

from fedcore.errors import ConfigError

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_JSON_BYTES",
    "Topics",
    "blob_id",
    "check_name",
    "to_json",
    "from_json",
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
        self.all_updates = f"{self.base}/update/+/+"

    def presence(self, client_id: str) -> str:
        return f"{self.base}/presence/{client_id}"

    def update(self, client_id: str, plan_id: str) -> str:
        return f"{self.base}/update/{client_id}/{plan_id}"

    def ack(self, client_id: str) -> str:
        return f"{self.base}/ack/{client_id}"

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


def from_json(raw: bytes, what: str) -> Dict[str, Any]:
    """Parse a small JSON object from the network; ConfigError says what is wrong."""
    if len(raw) > MAX_JSON_BYTES:
        raise ConfigError(f"{what}: {len(raw)} bytes, at most {MAX_JSON_BYTES} accepted")
    try:
        value = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{what}: not UTF-8 JSON ({error})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def blob_id(blob: bytes) -> str:
    """Short content id of a model or update: clients and the coordinator name messages by it."""
    return hashlib.sha256(blob).hexdigest()[:16]
