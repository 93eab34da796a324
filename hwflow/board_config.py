"""A board's settings (configs/board/*.toml) with command-line overrides, every value checked."""

import json
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from fedcore.errors import ConfigError
from fedlink.settings import parse_broker

from .errors import HwflowError
from .project import REPO_ROOT, tomllib

__all__ = ["DEFAULT_CONFIG", "BoardConfig", "load_board_config"]

DEFAULT_CONFIG = REPO_ROOT / "configs" / "board" / "pynq.toml"
_ABS_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_BOARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


@dataclass
class BoardConfig:
    board_id: str
    hostname: str
    user: str
    app_dir: str
    python: str
    demo_enabled: bool
    demo_args: List[str]
    demo_bitstream: str
    fl_enabled: bool
    fl_broker: str
    fl_run_config: str
    fl_client_id: str
    fl_args: List[str]
    source: pathlib.Path

    def to_toml(self, shipped_bitstream: Optional[str]) -> str:
        """The board's own config/board.toml: what its units were generated from."""
        def s(value: str) -> str:
            return json.dumps(value)  # a JSON string is a valid TOML basic string

        def a(values: Sequence[str]) -> str:
            return "[" + ", ".join(s(v) for v in values) + "]"

        return "\n".join([
            "# Written by python -m hwflow from %s; the systemd units follow it." % self.source.name,
            "[board]", "id = %s" % s(self.board_id), "hostname = %s" % s(self.hostname),
            "user = %s" % s(self.user), "app_dir = %s" % s(self.app_dir),
            "python = %s" % s(self.python), "",
            "[demo]", "enabled = %s" % str(self.demo_enabled).lower(),
            "args = %s" % a(self.demo_args), "bitstream = %s" % s(shipped_bitstream or ""), "",
            "[fl]", "enabled = %s" % str(self.fl_enabled).lower(),
            "run_config = %s" % s("config/fl.toml" if self.fl_enabled else ""),
            "client_id = %s" % s(self.fl_client_id or self.board_id),
            "args = %s" % a(self.fl_args),
            "# the broker URL (it may carry a password) is in config/fl.env, readable by root only",
            "",
        ])


def _get(table: Dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = table.get(key, default)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise HwflowError("%s: %s must be a list of strings" % (where, key))
    elif not isinstance(value, kind):
        raise HwflowError("%s: %s must be a %s, not %r" % (where, key, kind.__name__, value))
    if isinstance(value, str) and any(ord(c) < 32 for c in value):
        raise HwflowError("%s: %s may not contain control characters" % (where, key))
    return value


def load_board_config(path: Optional[pathlib.Path] = None, *, board_id: Optional[str] = None,
                      hostname: Optional[str] = None, fl: bool = False) -> BoardConfig:
    path = pathlib.Path(path) if path else DEFAULT_CONFIG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise HwflowError("cannot read the board config %s: %s" % (path, exc)) from None
    board, demo, fl_table = (data.get(k, {}) for k in ("board", "demo", "fl"))
    b, d, f = ("%s [%s]" % (path, k) for k in ("board", "demo", "fl"))
    board_id = board_id or _get(board, "id", str, "pynq-01", b)
    if not _BOARD_ID.match(board_id):
        raise HwflowError("board id %r: 1-64 letters, digits, '.', '_' or '-'" % board_id)
    hostname = hostname or _get(board, "hostname", str, "", b) or board_id.lower()
    if not _HOSTNAME.match(hostname):
        raise HwflowError("hostname %r is not a host name (a-z, 0-9 and '-', at most 63)" % hostname)
    config = BoardConfig(
        board_id=board_id, hostname=hostname,
        user=_get(board, "user", str, "xilinx", b),
        app_dir=_get(board, "app_dir", str, "/home/xilinx/pynq-fewshot-fl", b).rstrip("/"),
        python=_get(board, "python", str, "/usr/local/share/pynq-venv/bin/python3", b),
        demo_enabled=_get(demo, "enabled", bool, True, d),
        demo_args=_get(demo, "args", list, [], d),
        demo_bitstream=_get(demo, "bitstream", str, "", d),
        fl_enabled=fl or _get(fl_table, "enabled", bool, False, f),
        fl_broker=_get(fl_table, "broker", str, "", f),
        fl_run_config=_get(fl_table, "run_config", str, "", f),
        fl_client_id=_get(fl_table, "client_id", str, "", f),
        fl_args=_get(fl_table, "args", list, [], f),
        source=path)
    for name in ("app_dir", "python"):
        value = getattr(config, name)
        if not _ABS_PATH.match(value) or value.count("/") < 2:
            raise HwflowError("%s: %s %r must be an absolute path (below /) of letters, digits "
                              "and ._+@-" % (b, name, value))
    if not _USER.match(config.user):
        raise HwflowError("%s: user %r is not a user name" % (b, config.user))
    if config.fl_enabled:
        if not (config.fl_broker and config.fl_run_config):
            raise HwflowError("%s: the federated client needs broker and run_config" % f)
        if '"' in config.fl_broker or "\\" in config.fl_broker:
            raise HwflowError("%s: the broker URL may not contain a quote or a backslash" % f)
        try:
            parse_broker(config.fl_broker)
        except ConfigError as exc:
            raise HwflowError("%s: %s" % (f, exc)) from None
    return config
