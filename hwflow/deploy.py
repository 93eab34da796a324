"""`make deploy`: the payload of an SD card (payload.py) copied over SSH into a running board,
checked there (sha256 of every file), then its units refreshed and `python -m device doctor`
run, its output printed.

Transport: rsync (mirror with --delete) when both ends have it, else a tar stream over ssh
unpacked into APP.new and swapped in. Board paths take a prefix (--remote-root) so a test can
deploy into a temporary folder of a real SSH server.
"""

import argparse
import io
import logging
import pathlib
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import List, Sequence

from .board_config import load_board_config
from .errors import HwflowError
from .payload import Payload, build_payload
from .project import load_board_image
from .tools import have_tool, require_tool
from .wheels import collect_wheels

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RESTART", "ssh_command", "stage_payload", "deploy"]

DEFAULT_RESTART = "sudo {app}/bin/apply.sh"
_VENV_PROFILE = "/etc/profile.d/pynq_venv.sh"  # PYNQ's login-shell venv activation


# user@host, host or [IPv6]: never an ssh option (a leading "-"), never shell syntax.
_BOARD = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,31}@)?(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])")


def check_board(board: str) -> str:
    """`board` as ssh will get it, or HwflowError saying what a board address may be."""
    if not _BOARD.fullmatch(board):
        raise HwflowError("--board %r is not user@host, host or user@[IPv6 address] (letters, digits, '.', '-', "
                          "'_'; no leading '-')" % board)
    return board


def ssh_command(board: str, port, options: Sequence[str]) -> List[str]:
    check_board(board)
    cmd = [require_tool("ssh", "to deploy to a board"), "-o", "BatchMode=yes"]
    for option in options:
        cmd += ["-o", option]
    if port:
        cmd += ["-p", str(port)]
    return cmd + [board]


def stage_payload(payload: Payload, staging: pathlib.Path) -> int:
    """The application folder as files under `staging` (modes kept); returns the file count."""
    prefix = len(payload.config.app_dir) + 1
    for entry in payload.files():
        path = staging / entry.path[prefix:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(entry.content())
        path.chmod(entry.mode)
    return len(payload.files())


def _remote(ssh: List[str], script: str, what: str, stdin=None, capture: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(ssh + [script], input=stdin, timeout=timeout,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        detail = (result.stderr or b"").decode("utf-8", "replace").strip() if capture else ""
        if result.returncode == 255:
            raise HwflowError("cannot reach the board over SSH (%s): %s" % (ssh[-1], detail or "ssh failed"))
        raise HwflowError("%s failed on the board (exit %d): %s" % (what, result.returncode, detail))
    return result


def _copy_rsync(ssh: List[str], staging: pathlib.Path, app: str) -> None:
    _remote(ssh, "mkdir -p %s" % shlex.quote(app), "creating %s" % app)
    rsh = " ".join(shlex.quote(a) for a in ssh[:-1])
    cmd = ["rsync", "-a", "--delete", "--exclude", "/wheels/.installed", "-e", rsh,
           str(staging) + "/", "%s:%s/" % (ssh[-1], app)]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        raise HwflowError("rsync to %s failed (exit %d): %s" % (
            ssh[-1], result.returncode, result.stderr.decode("utf-8", "replace").strip()))


def _copy_tar(ssh: List[str], staging: pathlib.Path, app: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(staging.rglob("*")):
            archive.add(str(path), arcname=path.relative_to(staging).as_posix(), recursive=False)
    a = shlex.quote(app)
    script = "; ".join([
        "set -e", "rm -rf %s.new" % a, "mkdir -p %s.new" % a, "tar -C %s.new -xf -" % a,
        # keep the wheel stamp so an unchanged wheel set is not reinstalled
        "if [ -f %s/wheels/.installed ] && [ -d %s.new/wheels ]; then cp %s/wheels/.installed %s.new/wheels/; fi"
        % (a, a, a, a),
        "rm -rf %s.old" % a, "if [ -d %s ]; then mv %s %s.old; fi" % (a, a, a),
        "mv %s.new %s" % (a, a), "rm -rf %s.old" % a])
    _remote(ssh, script, "unpacking the payload", stdin=buffer.getvalue())


def _verify(ssh: List[str], payload: Payload, app: str) -> None:
    prefix = len(payload.config.app_dir) + 1
    listing = "".join("%s  %s\n" % (e.sha256(), e.path[prefix:]) for e in payload.files())
    _remote(ssh, "cd %s && sha256sum -c --quiet --strict -" % shlex.quote(app),
            "checking the copied files (sha256sum -c)", stdin=listing.encode())


def deploy(args: argparse.Namespace) -> int:
    """The whole `deploy` command; its exit status is the doctor's (0 when all is well)."""
    check_board(args.board)  # before anything is built
    config = load_board_config(args.config and pathlib.Path(args.config), board_id=args.board_id,
                               hostname=args.hostname, fl=args.fl)
    spec = load_board_image()
    requirements = [] if args.no_wheels else (args.require or list(spec.wheels))
    wheels = collect_wheels(requirements, args.wheels and pathlib.Path(args.wheels))
    payload = build_payload(config, wheels=wheels, requirements=requirements, spec=spec,
                            strict=args.strict)
    for message in payload.warnings:
        log.warning("warning: %s", message)
    ssh = ssh_command(args.board, args.port, args.ssh_option)
    app = args.remote_root.rstrip("/") + config.app_dir
    transport = args.transport
    if transport == "auto":
        remote_rsync = subprocess.run(ssh + ["command -v rsync >/dev/null"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if remote_rsync.returncode == 255:
            raise HwflowError("cannot reach the board over SSH (%s)" % args.board)
        transport = "rsync" if have_tool("rsync") and remote_rsync.returncode == 0 else "tar"
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        count = stage_payload(payload, pathlib.Path(tmp))
        (_copy_rsync if transport == "rsync" else _copy_tar)(ssh, pathlib.Path(tmp), app)
    _verify(ssh, payload, app)
    copied = time.monotonic() - start
    log.info("deployed %d files (%.1f MiB) to %s:%s by %s in %.2f s, sha256 checked on the board",
             count, payload.total_bytes() / 2**20, args.board, app, transport, copied)
    restart = (args.restart_command or DEFAULT_RESTART).replace("{app}", shlex.quote(app))
    # a terminal lets sudo ask for the password (PYNQ's xilinx user needs one for sudo)
    interactive = ssh[:-1] + (["-t"] if sys.stdin.isatty() else []) + ssh[-1:]
    try:
        _remote(interactive, restart, "the restart command (%s)" % restart, capture=False)
    except HwflowError as exc:
        if args.restart_command:
            raise
        raise HwflowError("%s. Without a terminal sudo cannot ask for the board's password: run "
                          "make deploy from a terminal, deploy as root@, or allow %s/bin/apply.sh "
                          "in the board's sudoers" % (exc, config.app_dir)) from None
    doctor = "cd %s && { [ ! -f %s ] || . %s; } && PYTHONPATH=%s %s" % (
        shlex.quote(app), _VENV_PROFILE, _VENV_PROFILE, shlex.quote(app),
        args.doctor_command.replace("{app}", shlex.quote(app)))
    log.info("--- %s on %s", args.doctor_command, args.board)
    for handler in logging.getLogger().handlers:
        handler.flush()  # before the board's doctor writes to the same terminal
    status = subprocess.run(ssh + [doctor]).returncode
    log.info("--- deploy %.2f s in all (copy + check %.2f s); doctor exit %d",
             time.monotonic() - start, copied, status)
    return 0 if status == 0 else 1
