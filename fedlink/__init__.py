"""fedlink: what both ends of the MQTT wire share (docs/protocol.md), shipped on the
board with fedcore/ and device/. Standard library, paho-mqtt and fedcore only.

- protocol: topics of a run, JSON payload helpers, content ids of binary payloads
- settings: the broker address (URL, credentials, TLS) and the run file's link settings
- link: the paho link (reconnects, re-subscribes, a queue to the caller's thread)
- cli: the command-line options every MQTT program takes, and the link built from them

The link module imports paho; the others import only the standard library and fedcore.
"""

from .protocol import (
    MAX_JSON_BYTES,
    PROTOCOL_VERSION,
    Topics,
    blob_id,
    check_name,
    from_json,
    to_json,
)
from .settings import PASSWORD_ENV, BrokerAddress, LinkSettings, parse_broker, with_password

__all__ = [
    "MAX_JSON_BYTES",
    "PASSWORD_ENV",
    "PROTOCOL_VERSION",
    "BrokerAddress",
    "LinkSettings",
    "Topics",
    "blob_id",
    "check_name",
    "from_json",
    "parse_broker",
    "to_json",
    "with_password",
]
