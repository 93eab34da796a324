"""The board's systemd units and its two shell scripts, generated from a BoardConfig.

- fewshot-setup.service: oneshot, runs bin/install-wheels.sh (offline pip install of the
  shipped wheels, once per wheel set) before the others;
- fewshot-demo.service: the demonstrator as root (pynq needs it), restarted on failure;
- fewshot-fl.service (when enabled): the federated client; its broker URL and password come
  from config/fl.env (root-only) into its environment, never onto a command line or into a unit.
"""

import re
from typing import Dict, List, Optional

from .board_config import BoardConfig
from .errors import HwflowError

__all__ = ["SETUP_UNIT", "DEMO_UNIT", "FL_UNIT", "systemd_quote", "board_units", "board_scripts"]

SETUP_UNIT = "fewshot-setup.service"
DEMO_UNIT = "fewshot-demo.service"
FL_UNIT = "fewshot-fl.service"


def systemd_quote(arg: str) -> str:
    """One word of an ExecStart= line (systemd.service(5) quoting; % and $ escaped)."""
    if any(ord(c) < 32 for c in arg):
        raise HwflowError("a unit argument may not contain control characters: %r" % arg)
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_./:=@+,%$-]+", escaped):
        return escaped
    return '"%s"' % escaped.replace("\\", "\\\\").replace('"', '\\"')


def _exec(words: List[str]) -> str:
    return "ExecStart=" + " ".join(systemd_quote(w) for w in words)


def _service(description: str, after: List[str], service: List[str]) -> str:
    return "\n".join(["[Unit]", "Description=%s" % description, "Wants=%s" % " ".join(after),
                      "After=%s" % " ".join(after), "", "[Service]", *service, "",
                      "[Install]", "WantedBy=multi-user.target", ""])


def board_units(config: BoardConfig, bitstream: Optional[str]) -> Dict[str, str]:
    """unit file name -> text."""
    app = config.app_dir
    env = ["WorkingDirectory=%s" % app, "Environment=PYTHONPATH=%s" % app,
           "Environment=XILINX_XRT=/usr", "Environment=FEWSHOT_BOARD_ID=%s" % config.board_id]
    units = {SETUP_UNIT: "\n".join([
        "[Unit]", "Description=pynq-fewshot-fl: install the bundled wheels offline (first boot)",
        "After=local-fs.target", "Before=%s %s" % (DEMO_UNIT, FL_UNIT), "",
        "[Service]", "Type=oneshot", "RemainAfterExit=yes",
        "ExecStart=%s/bin/install-wheels.sh" % app, "",
        "[Install]", "WantedBy=multi-user.target", ""])}
    if config.demo_enabled:
        args = list(config.demo_args)
        if bitstream and "--overlay" not in args:
            args += ["--overlay", "%s/bitstreams/%s/%s.bit" % (app, bitstream, bitstream)]
        units[DEMO_UNIT] = _service(
            "pynq-fewshot-fl few-shot demonstrator (%s)" % config.board_id,
            [SETUP_UNIT, "network.target"],
            ["Type=simple", "User=root", *env, _exec([config.python, "-m", "demo_app"] + args),
             "Restart=on-failure", "RestartSec=5"])
    if config.fl_enabled:
        words = [config.python, "-m", "device", "fl", "--config", app + "/config/fl.toml",
                 "--client-id", config.fl_client_id or config.board_id] + config.fl_args
        units[FL_UNIT] = _service(
            "pynq-fewshot-fl federated client (%s)" % config.board_id,
            [SETUP_UNIT, "network-online.target"],
            ["Type=simple", "User=root", *env,
             # FL_BROKER and FL_MQTT_PASSWORD: read from the environment, never on the command line
             "EnvironmentFile=%s/config/fl.env" % app, _exec(words),
             "Restart=on-failure", "RestartSec=10"])
    return units


def board_scripts(config: BoardConfig) -> Dict[str, str]:
    """bin/install-wheels.sh and bin/apply.sh (relative path -> text)."""
    install = "\n".join([
        "#!/bin/sh",
        "# Installs the wheels shipped in wheels/ offline, once per wheel set",
        "# (%s at boot, bin/apply.sh after a deploy)." % SETUP_UNIT,
        "set -eu",
        'APP="$(cd "$(dirname "$0")/.." && pwd)"',
        'PYTHON="${FEWSHOT_PYTHON:-%s}"' % config.python,
        'WHEELS="$APP/wheels"',
        '[ -f "$WHEELS/requirements.txt" ] || exit 0',
        'WANT="$(cat "$WHEELS/requirements.txt" "$WHEELS"/*.whl | sha256sum | cut -d" " -f1)"',
        'STAMP="$WHEELS/.installed"',
        'if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then exit 0; fi',
        '"$PYTHON" -m pip install --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt"',
        'echo "$WANT" > "$STAMP"',
        "",
    ])
    apply = "\n".join([
        "#!/bin/sh",
        "# After a deploy, as root: install this folder's systemd units (dropping fewshot units it",
        "# no longer ships), reload systemd, enable them and restart them.",
        "set -eu",
        'APP="$(cd "$(dirname "$0")/.." && pwd)"',
        'UNITS="$(cd "$APP/systemd" && ls ./*.service | sed "s|^./||")"',
        "for old in /etc/systemd/system/fewshot-*.service; do",
        '    [ -e "$old" ] || continue',
        '    name="$(basename "$old")"',
        '    if ! echo "$UNITS" | grep -qx "$name"; then',
        '        systemctl disable --now "$name" || true',
        '        rm -f "$old"',
        "    fi",
        "done",
        'for unit in $UNITS; do install -m 0644 "$APP/systemd/$unit" /etc/systemd/system/; done',
        "systemctl daemon-reload",
        'for unit in $UNITS; do systemctl enable "$unit"; done',
        "systemctl restart %s" % SETUP_UNIT,
        'for unit in $UNITS; do [ "$unit" = %s ] || systemctl restart "$unit"; done' % SETUP_UNIT,
        "",
    ])
    return {"bin/install-wheels.sh": install, "bin/apply.sh": apply}
