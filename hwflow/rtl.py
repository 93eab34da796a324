"""Tensil RTL for the hardware flow: generate it through Tensil's docker image, read it (with
`tensil_tools.rtl`, the one reader the co-simulation uses too), check it fits a .tarch and the overlay.
"""

import os
import pathlib
from typing import Tuple

from tensil.arch import Architecture
from tensil_tools.errors import RtlMismatch, RtlNotFound
from tensil_tools.rtl import TCU_PORTS, RtlInfo
from tensil_tools.rtl import find_rtl as read_rtl

from .errors import HwflowError, ToolMissing
from .tools import require_tool, run_tool

__all__ = ["TENSIL_IMAGE", "TCU_PORTS", "RtlInfo", "find_rtl", "check_rtl_matches", "check_tcu_ports",
           "docker_engine_ready", "generate_rtl"]

TENSIL_IMAGE = "tensilai/tensil:latest"


def find_rtl(directory: "os.PathLike[str]") -> RtlInfo:
    """The Tensil RTL in `directory`: exactly one top_*.v and its bram_dp_*.v memories."""
    try:
        return read_rtl(directory)
    except (RtlNotFound, RtlMismatch) as exc:
        raise HwflowError(str(exc)) from None


def check_tcu_ports(rtl: RtlInfo) -> None:
    """Refuse an RTL whose top lacks a port the overlay connects, or has another width
    (an RTL generated with -d other than 64)."""
    ports = dict(rtl.ports)
    wrong = ["%s (%s)" % (name, "missing" if name not in ports else "%d bits, not %d" % (ports[name], width))
             for name, width in TCU_PORTS.items() if ports.get(name) != width]
    if wrong:
        raise HwflowError("%s: %s does not have the ports the overlay connects: %s (generate it "
                          "with `tensil rtl -d 64`)" % (rtl.top_file, rtl.top_module, ", ".join(wrong)))


def check_rtl_matches(rtl: RtlInfo, arch: Architecture, arch_name: str) -> None:
    """Refuse an RTL generated for another architecture: memory width = array_size x scalar bits,
    depths = local_depth and accumulator_depth."""
    width = arch.array_size * arch.scalar_bits
    expected = sorted({(width, arch.local_depth), (width, arch.accumulator_depth)})
    found = sorted(set(rtl.memories))
    if found != expected:
        raise HwflowError(
            "the RTL in %s does not match %s: its memories are %s (width x depth), the .tarch "
            "needs %s (array_size %d x %d bits; local_depth %d, accumulator_depth %d)" % (
                rtl.directory, arch_name, ", ".join("%dx%d" % m for m in found),
                ", ".join("%dx%d" % m for m in expected), arch.array_size, arch.scalar_bits,
                arch.local_depth, arch.accumulator_depth))


def docker_engine_ready() -> Tuple[bool, str]:
    """(True, version) when a Docker engine answers, else (False, why)."""
    docker = require_tool("docker", "to run Tensil's RTL generator (image %s)" % TENSIL_IMAGE)
    result = run_tool([docker, "info", "--format", "{{.ServerVersion}}"], what="ask Docker",
                      check=False, timeout=60)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode("utf-8", "replace").strip().splitlines()
        return False, message[-1] if message else "docker info failed"
    return True, result.stdout.decode().strip()


def generate_rtl(tarch: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """`tensil rtl -a TARCH -d 64 -s true -t OUT` inside Tensil's docker image; returns OUT."""
    ready, why = docker_engine_ready()
    if not ready:
        raise ToolMissing(
            "the docker client is installed but no Docker engine answers (%s): start one "
            "(`sudo systemctl start docker`, or install Docker Engine: "
            "https://docs.docker.com/engine/install/), or generate the RTL elsewhere and pass "
            "TENSIL_RTL=dir" % why)
    tarch = tarch.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    cmd = ["docker", "run", "--rm", "-u", "%d:%d" % (os.getuid(), os.getgid()),
           "-v", "%s:/arch:ro" % tarch.parent, "-v", "%s:/out" % out_dir, TENSIL_IMAGE,
           "tensil", "rtl", "-a", "/arch/%s" % tarch.name, "-d", "64", "-s", "true", "-t", "/out"]
    result = run_tool(cmd, what="generate the Tensil RTL", check=False)
    (out_dir / "tensil_rtl.log").write_bytes(result.stdout + result.stderr)
    if result.returncode != 0:
        raise HwflowError("`tensil rtl` failed (exit %d), log in %s"
                          % (result.returncode, out_dir / "tensil_rtl.log"))
    return out_dir
