"""Where the link goes and how: the broker address (URL, credentials, TLS) and the
link settings of a run file that both ends must agree on (run id, keepalive)."""

import os
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Tuple

from fedcore.checks import number
from fedcore.errors import ConfigError

from .chunks import check_max_payload
from .protocol import check_name

__all__ = ["BROKER_ENV", "BrokerAddress", "LinkSettings", "PASSWORD_ENV", "parse_broker", "split_password",
           "with_password"]

# Where a password comes from when it should not sit on a command line (`ps` shows those).
PASSWORD_ENV = "FL_MQTT_PASSWORD"
BROKER_ENV = "FL_BROKER"  # the broker URL when --broker is not given (a service's environment file)
_MAX_PASSWORD_BYTES = 4096


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = None

    def __repr__(self) -> str:  # never print a password into a log
        secret = ", password=***" if self.password else ""
        return f"BrokerAddress({self.host}:{self.port}, tls={self.tls}, username={self.username!r}{secret})"


_URL = re.compile(r"^(mqtts?)://(?:([^:@/]+)(?::([^@/]*))?@)?([^:/@]+)(?::(\d+))?/?$")


def _url_parts(url: str) -> Tuple[str, Optional[str], Optional[str], str, Optional[str]]:
    """(scheme, user, password, host, port) of a broker URL, or ConfigError."""
    match = _URL.match(url or "")
    if not match:
        raise ConfigError(f"--broker must look like mqtt://host:port or mqtts://host:port, got {url!r}")
    return match.groups()  # type: ignore[return-value]


def parse_broker(url: str) -> BrokerAddress:
    """mqtt://[user[:password]@]host[:port] or mqtts://... (TLS, port 8883 by default)."""
    scheme, user, password, host, port = _url_parts(url)
    tls = scheme == "mqtts"
    if port is None:
        port_number = 8883 if tls else 1883
    else:
        port_number = int(port) if len(port) <= 5 else 0  # 99999999999 is no port either
    if not 1 <= port_number <= 65535:
        raise ConfigError(f"--broker: port must lie in [1, 65535], got {port}")
    return BrokerAddress(host, port_number, tls, user, password)


def split_password(url: str) -> Tuple[str, str]:
    """(the broker URL without its password, the password or ""), for a URL parse_broker accepts."""
    scheme, user, password, host, port = _url_parts(url)
    bare = "%s://%s%s%s" % (scheme, user + "@" if user else "", host, ":" + port if port else "")
    return bare, password or ""


def with_password(address: BrokerAddress, password_file: str = "",
                  environ: Optional[Mapping[str, str]] = None) -> BrokerAddress:
    """The address with its password from `password_file` (first line) or the
    FL_MQTT_PASSWORD environment variable, in that order, when the URL gave none."""
    environ = os.environ if environ is None else environ
    if password_file:
        if address.password:
            raise ConfigError("--password-file: the --broker URL already carries a password; give one or the other")
        try:
            with open(password_file, "rb") as handle:
                raw = handle.read(_MAX_PASSWORD_BYTES + 1)
        except OSError as error:
            raise ConfigError(f"--password-file {password_file}: {error.strerror or error}") from None
        if len(raw) > _MAX_PASSWORD_BYTES:
            raise ConfigError(f"--password-file {password_file}: longer than {_MAX_PASSWORD_BYTES} bytes")
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise ConfigError(f"--password-file {password_file}: not UTF-8 text") from None
        if not lines or not lines[0]:
            raise ConfigError(f"--password-file {password_file}: the first line is empty")
        return _with(address, lines[0], "--password-file")
    if not address.password and environ.get(PASSWORD_ENV):
        return _with(address, environ[PASSWORD_ENV], PASSWORD_ENV)
    return address


def _with(address: BrokerAddress, password: str, source: str) -> BrokerAddress:
    if not address.username:
        raise ConfigError(f"{source}: a password needs a user name in --broker (mqtt://user@host:port)")
    return replace(address, password=password)


@dataclass(frozen=True)
class LinkSettings:
    """What both ends of a run's link read from the run file's [coordinator] table:
    run_id, the topic namespace (default: the run's name); the MQTT keepalive (s);
    max_payload, the largest message a blob is sent in (bytes; larger blobs travel as
    chunks, fedlink.chunks; 0: one message each, for brokers without a cap)."""

    run_id: str
    keepalive: int = 10
    max_payload: int = 128 << 10

    KEYS = ("run_id", "keepalive", "max_payload")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], run_name: str) -> "LinkSettings":
        max_payload = check_max_payload(number(table, "max_payload", cls.max_payload, 0, 1 << 28, True, "coordinator"),
                                        "coordinator.max_payload")
        return cls(run_id=check_name(table.get("run_id", run_name), "coordinator.run_id"),
                   keepalive=number(table, "keepalive", cls.keepalive, 1, 65535, True, "coordinator"),
                   max_payload=max_payload)

    @classmethod
    def from_run(cls, run: Any) -> "LinkSettings":
        """From a fedcore.experiment.RunConfig (only the link's keys are read here)."""
        table = run.settings.get("coordinator", {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[coordinator] must be a table, got {type(table).__name__}")
        return cls.from_table(table, run.name)
