"""External programs: find them or say how to get them, and run them with a clear failure."""

import os
import shutil
import subprocess
from typing import Dict, Mapping, Optional, Sequence

from .errors import HwflowError, ToolMissing

__all__ = ["HOW_TO_GET", "require_tool", "have_tool", "run_tool"]

# Where each program comes from (Debian package names: scripts/system-deps.sh installs them).
HOW_TO_GET: Dict[str, str] = {
    "yosys": "Debian package yosys (apt-get install yosys)",
    "debugfs": "Debian package e2fsprogs",
    "e2fsck": "Debian package e2fsprogs",
    "mke2fs": "Debian package e2fsprogs",
    "mcopy": "Debian package mtools",
    "mdir": "Debian package mtools",
    "minfo": "Debian package mtools",
    "mformat": "Debian package mtools",
    "ssh": "Debian package openssh-client",
    "scp": "Debian package openssh-client",
    "rsync": "Debian package rsync (optional: without it deploy streams a tar over ssh)",
    "tar": "Debian package tar",
    "docker": "Docker Engine (https://docs.docker.com/engine/install/); Debian: docker.io",
    "vivado": "AMD Vivado (https://www.xilinx.com/support/download.html), then "
              "`source <install>/Vivado/<version>/settings64.sh` so `vivado` is on PATH",
}


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


def require_tool(name: str, why: str) -> str:
    """The path of program `name`, or ToolMissing naming it, why it is needed and where it comes from."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing("%s is not installed (needed %s); get it from: %s"
                          % (name, why, HOW_TO_GET.get(name, "your distribution")))
    return path


def run_tool(cmd: Sequence[str], *, what: str, env: Optional[Mapping[str, str]] = None,
             timeout: Optional[float] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `cmd` capturing its output; a non-zero exit raises HwflowError with `what` and the tail."""
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        result = subprocess.run(list(cmd), env=full_env, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise ToolMissing("%s is not installed (needed to %s); get it from: %s"
                          % (cmd[0], what, HOW_TO_GET.get(os.path.basename(cmd[0]),
                                                          "your distribution"))) from None
    except subprocess.TimeoutExpired:
        raise HwflowError("%s did not finish within %.0f s (%s)" % (what, timeout, " ".join(cmd))) from None
    if check and result.returncode != 0:
        raise HwflowError("%s failed (exit %d): %s\n%s" % (
            what, result.returncode, " ".join(cmd), _tail(result.stdout + result.stderr)))
    return result


def _tail(output: bytes, lines: int = 20) -> str:
    text = output.decode("utf-8", "replace").rstrip().splitlines()
    return "\n".join(text[-lines:])

