"""Tensil RTL: generate it through Tensil's docker image, find it in a folder, check it fits a .tarch.

A Tensil RTL folder (`tensil rtl -a ARCH -d 64 -s true -t DIR`) holds `top_<arch>.v` (the TCU
and its AXI wrapper) and one `bram_dp_<width>x<depth>.v` per on-chip memory (local memory and
accumulators), plus `architecture_params.h` (TENSIL.md §7.1).
"""

import hashlib
import os
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from .errors import HwflowError, ToolMissing
from .project import scalar_bits
from .tools import require_tool, run_tool

__all__ = ["TENSIL_IMAGE", "TCU_PORTS", "RtlSources", "find_rtl", "top_ports", "check_rtl_matches",
           "check_tcu_ports", "docker_engine_ready", "generate_rtl"]

TENSIL_IMAGE = "tensilai/tensil:latest"
_BRAM = re.compile(r"^bram_dp_(\d+)x(\d+)\.v$")
_TOP = re.compile(r"^top_(\w+)\.v$")
_PORT = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s*)?(\w+)\s*[,)]?")
# The TCU ports the overlay connects and their widths (TENSIL.md §7.2; `tensil rtl -d 64`).
TCU_PORTS = {"clock": 1, "reset": 1, "instruction_tdata": 64, "instruction_tvalid": 1,
             "instruction_tready": 1, "m_axi_dram0_awaddr": 32, "m_axi_dram0_wdata": 64,
             "m_axi_dram0_rdata": 64, "m_axi_dram1_awaddr": 32, "m_axi_dram1_wdata": 64,
             "m_axi_dram1_rdata": 64}


@dataclass(frozen=True)
class RtlSources:
    """One generated Tensil RTL: its top module, its files and their hashes."""

    directory: pathlib.Path
    top: str                              # module name, e.g. top_custom_perf
    top_file: pathlib.Path
    memories: Tuple[Tuple[int, int], ...]  # (width bits, depth words) of each bram_dp file
    memory_files: Tuple[pathlib.Path, ...]
    file_sha256: Tuple[Tuple[str, str], ...]  # (file name, sha256), sorted by name

    @property
    def files(self) -> List[pathlib.Path]:
        return [self.top_file, *self.memory_files]

    @property
    def sha256(self) -> str:
        """sha256 of the `sha256sum`-style listing "<hash>  <name>\\n" of the .v files, by name."""
        listing = "".join("%s  %s\n" % (digest, name) for name, digest in self.file_sha256)
        return hashlib.sha256(listing.encode("ascii")).hexdigest()

    def describe(self) -> Dict[str, Any]:
        return {"dir": str(self.directory), "top": self.top, "sha256": self.sha256,
                "files": dict(self.file_sha256),
                "memories": ["%dx%d" % m for m in self.memories]}


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_rtl(directory: "os.PathLike[str]") -> RtlSources:
    """The Tensil RTL in `directory`: exactly one top_*.v and its bram_dp_*.v memories."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise HwflowError("no RTL folder at %s: generate one with `make rtl ARCH=...` (needs a Docker "
                          "engine) or name an existing one with TENSIL_RTL=dir" % directory)
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    tops = [n for n in names if _TOP.match(n)]
    brams = [n for n in names if _BRAM.match(n)]
    if len(tops) != 1:
        raise HwflowError("%s: expected exactly one top_<arch>.v (Tensil's TCU), found %s"
                          % (directory, tops or "none"))
    if not brams:
        raise HwflowError("%s: no bram_dp_<width>x<depth>.v memories beside %s (an incomplete "
                          "`tensil rtl` output)" % (directory, tops[0]))
    top = tops[0][:-2]
    top_file = directory / tops[0]
    with open(top_file, encoding="utf-8", errors="replace") as handle:
        if not any(re.match(r"\s*module\s+%s\b" % re.escape(top), line) for line in handle):
            raise HwflowError("%s does not define module %s" % (top_file, top))
    memories = tuple(tuple(int(g) for g in _BRAM.match(n).groups()) for n in brams)
    files = [top_file] + [directory / n for n in brams]
    hashes = tuple(sorted((p.name, _sha256(p)) for p in files))
    return RtlSources(directory, top, top_file, memories, tuple(directory / n for n in brams), hashes)


def top_ports(rtl: RtlSources) -> Dict[str, int]:
    """name -> width of the top module's ports (its ANSI-style header, as Chisel writes it)."""
    ports: Dict[str, int] = {}
    inside = False
    with open(rtl.top_file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not inside:
                inside = re.match(r"\s*module\s+%s\s*\(" % re.escape(rtl.top), line) is not None
                continue
            match = _PORT.match(line)
            if match:
                ports[match.group(3)] = int(match.group(2)) + 1 if match.group(2) else 1
            if ");" in line:
                break
    return ports


def check_tcu_ports(rtl: RtlSources) -> None:
    """Refuse an RTL whose top lacks a port the overlay connects, or has another width
    (an RTL generated with -d other than 64)."""
    ports = top_ports(rtl)
    wrong = ["%s (%s)" % (name, "missing" if name not in ports else "%d bits, not %d" % (ports[name], width))
             for name, width in TCU_PORTS.items() if ports.get(name) != width]
    if wrong:
        raise HwflowError("%s: %s does not have the ports the overlay connects: %s (generate it "
                          "with `tensil rtl -d 64`)" % (rtl.top_file, rtl.top, ", ".join(wrong)))


def check_rtl_matches(rtl: RtlSources, arch: Dict[str, Any], arch_name: str) -> None:
    """Refuse an RTL generated for another architecture: memory width = array_size x scalar bits,
    depths = local_depth and accumulator_depth."""
    width = arch["array_size"] * scalar_bits(arch)
    expected = sorted({(width, arch["local_depth"]), (width, arch["accumulator_depth"])})
    found = sorted(set(rtl.memories))
    if found != expected:
        raise HwflowError(
            "the RTL in %s does not match %s: its memories are %s (width x depth), the .tarch "
            "needs %s (array_size %d x %d bits; local_depth %d, accumulator_depth %d)" % (
                rtl.directory, arch_name, ", ".join("%dx%d" % m for m in found),
                ", ".join("%dx%d" % m for m in expected), arch["array_size"], scalar_bits(arch),
                arch["local_depth"], arch["accumulator_depth"]))


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
