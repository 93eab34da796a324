"""Tensil-generated RTL: the one reader of an RTL folder, for the co-simulation and hwflow alike.

`tensil rtl -a <arch>.tarch -d 64` writes `top_<arch>.v` (the TCU and its AXI wrapper) and one
`bram_dp_<width>x<depth>.v` per on-chip memory size (local memory and accumulators; one file
when both have the same size), plus `architecture_params.h`. The default folder is PEFSL's 12x12
RTL in `../shared/rtl/tensil_custom_perf` next to the repository; `TENSIL_RTL=dir` points at any
other. `find_rtl` reads what the folder and the top module's port list say (files, memories,
ports, hashes); what only the co-simulation needs (the memories' declarations, the Decoder's
address widths) is read when asked (`decoder_bits`, `check_simulatable`).
"""

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from tensil.arch import ARCH_FIELDS, Architecture, instruction_layout, load_tarch
from tensil.errors import ArchError
from tensil.hwh import file_sha256

from .errors import RtlMismatch, RtlNotFound

__all__ = ["RtlInfo", "Bram", "REPO_ROOT", "DEFAULT_RTL", "DEFAULT_TARCH", "TCU_PORTS", "find_rtl",
           "check_arch", "check_simulatable", "as_architecture", "rtl_architecture"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RTL = REPO_ROOT.parent / "shared" / "rtl" / "tensil_custom_perf"
# The architecture PEFSL's RTL was generated from (its README: `tensil rtl -a custom_perf.tarch`).
DEFAULT_TARCH = REPO_ROOT / "tensil_arch" / "pynqz1_perf.tarch"
# The TCU ports an overlay connects and their widths (TENSIL.md §7.2; `tensil rtl -d 64`).
TCU_PORTS = {"clock": 1, "reset": 1, "instruction_tdata": 64, "instruction_tvalid": 1,
             "instruction_tready": 1, "m_axi_dram0_awaddr": 32, "m_axi_dram0_wdata": 64,
             "m_axi_dram0_rdata": 64, "m_axi_dram1_awaddr": 32, "m_axi_dram1_wdata": 64,
             "m_axi_dram1_rdata": 64}

_HOW = (
    "generate one with `make rtl ARCH=...` (Tensil's docker image) or set TENSIL_RTL=dir to a folder "
    "holding the top_<arch>.v and bram_dp_<width>x<depth>.v files that `tensil rtl -a <arch>.tarch -d 64` "
    "writes (the default is %s)" % DEFAULT_RTL
)
_BRAM = re.compile(r"bram_dp_(\d+)x(\d+)\.v")
_TOP = re.compile(r"top_(\w+)\.v")
_PORT = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s*)?(\w+)\s*[,)]?")


@dataclass(frozen=True)
class Bram:
    module: str
    width: int  # bits per vector
    depth: int  # vectors
    path: Path


@dataclass(frozen=True)
class RtlInfo:
    """What an RTL folder holds: the top module, its ports, its memories and the files' hashes."""

    directory: Path
    top_file: Path
    top_module: str
    brams: Tuple[Bram, Bram]  # local memory and accumulators (the same file twice when one size)
    ports: Tuple[Tuple[str, int], ...]  # the top module's (port, width bits), in header order
    file_sha256: Tuple[Tuple[str, str], ...]  # (file name, sha256), sorted by name
    fingerprint: Tuple[Any, ...] = ()  # names, sizes and times of the Verilog files read

    @property
    def files(self) -> Tuple[Path, ...]:
        """The Verilog sources, each once."""
        return (self.top_file,) + self.memory_files

    @property
    def memory_files(self) -> Tuple[Path, ...]:
        return tuple(sorted({b.path for b in self.brams}))

    @property
    def memories(self) -> Tuple[Tuple[int, int], ...]:
        """(width bits, depth vectors) of each memory file."""
        return tuple(sorted({(b.width, b.depth) for b in self.brams}))

    @property
    def vector_bits(self) -> int:
        return self.brams[0].width

    def port_bits(self, name: str) -> Optional[int]:
        return dict(self.ports).get(name)

    @property
    def sha256(self) -> str:
        """sha256 of the `sha256sum`-style listing "<hash>  <name>\\n" of the .v files, by name."""
        listing = "".join("%s  %s\n" % (digest, name) for name, digest in self.file_sha256)
        return hashlib.sha256(listing.encode("ascii")).hexdigest()

    def describe(self) -> Dict[str, Any]:
        return {"dir": str(self.directory), "top": self.top_module, "sha256": self.sha256,
                "files": dict(self.file_sha256), "memories": ["%dx%d" % m for m in self.memories]}

    @cached_property
    def decoder_bits(self) -> Tuple[int, int, int, int, int]:
        """The Decoder's argument bits and its address bits of local memory, accumulators, DRAM0 and
        DRAM1 (what the instruction layout must match), read from the top file."""
        text = self.top_file.read_text(encoding="utf-8", errors="replace")
        ports = ("io_instruction_bits_arguments", "io_memPortA_bits_address", "io_acc_bits_readAddress",
                 "io_dram0_bits_address", "io_dram1_bits_address")
        return tuple(_module_port_bits(text, "Decoder", port, self.top_file) for port in ports)  # type: ignore


def _module_port_bits(text: str, module: str, port: str, where: Path) -> int:
    start = re.search(r"^module %s\(" % re.escape(module), text, re.M)
    if start is None:
        raise RtlMismatch("%s has no module %s: not Tensil-generated RTL" % (where, module))
    found = re.compile(r"^\s*(?:input|output)\s+\[(\d+):0\]\s+%s\b" % re.escape(port), re.M)
    match = found.search(text, start.end())
    if match is None:
        raise RtlMismatch("%s: module %s has no port %s" % (where, module, port))
    return int(match.group(1)) + 1


_READ: Dict[Tuple[Any, ...], RtlInfo] = {}


def find_rtl(rtl_dir: Optional[os.PathLike] = None) -> RtlInfo:
    """Locate and read the RTL: `rtl_dir`, else $TENSIL_RTL, else DEFAULT_RTL.

    Reading the 1.4 MB top file takes tens of milliseconds, so the result is kept per
    process for as long as the directory's Verilog files keep their sizes and times.
    """
    chosen = rtl_dir if rtl_dir is not None else os.environ.get("TENSIL_RTL") or DEFAULT_RTL
    directory = Path(chosen).resolve()
    if not directory.is_dir():
        raise RtlNotFound("no Tensil RTL folder at %s: %s" % (directory, _HOW))
    identity = (directory,) + tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.glob("*.v"))
    )
    if identity not in _READ:
        _READ[identity] = _read_rtl(directory, identity)
    return _READ[identity]


def _read_rtl(directory: Path, fingerprint: Tuple[Any, ...]) -> RtlInfo:
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    tops = [n for n in names if _TOP.fullmatch(n)]
    if len(tops) != 1:
        raise RtlNotFound("%s: expected exactly one top_<arch>.v (Tensil's TCU), found %s: %s"
                          % (directory, ", ".join(tops) or "none", _HOW))
    brams = [Bram(n[:-2], int(m.group(1)), int(m.group(2)), directory / n)
             for n in names for m in [_BRAM.fullmatch(n)] if m]
    if len(brams) == 1:  # local memory and accumulators of one size share a module
        brams.append(brams[0])
    if len(brams) != 2:
        raise RtlNotFound("%s: expected one or two bram_dp_<width>x<depth>.v memories (local memory and "
                          "accumulators) beside %s, found %d (an incomplete `tensil rtl` output?)"
                          % (directory, tops[0], len(brams)))
    top_file = directory / tops[0]
    top_module = top_file.stem
    ports = _top_ports(top_file, top_module)
    files = [top_file] + sorted({b.path for b in brams})
    hashes = tuple(sorted((p.name, file_sha256(p)) for p in files))
    return RtlInfo(directory, top_file, top_module, (brams[0], brams[1]), ports, hashes, fingerprint)


def _top_ports(top_file: Path, top_module: str) -> Tuple[Tuple[str, int], ...]:
    """(name, width) of the top module's ports, from its ANSI-style header (as Chisel writes it)."""
    ports = []
    inside = False
    with open(top_file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not inside:
                inside = re.match(r"\s*module\s+%s\s*\(" % re.escape(top_module), line) is not None
                continue
            match = _PORT.match(line)
            if match:
                ports.append((match.group(3), int(match.group(2)) + 1 if match.group(2) else 1))
            if ");" in line:
                break
    if not inside:
        raise RtlMismatch("%s does not define module %s" % (top_file, top_module))
    return tuple(ports)


def check_simulatable(rtl: RtlInfo) -> None:
    """Refuse RTL the co-simulation's harness cannot drive: memories that do not declare the
    size their names say, or buses other than the 64-bit ones of `tensil rtl -d 64`."""
    for bram in set(rtl.brams):
        body = bram.path.read_text(encoding="utf-8", errors="replace")
        declared = re.search(r"reg\s*\[(\d+):0\]\s*ram\s*\[(\d+):0\]", body)
        if declared is None or (int(declared.group(1)) + 1, int(declared.group(2)) + 1) != (bram.width, bram.depth):
            raise RtlMismatch("%s does not declare a %d x %d-bit ram" % (bram.path, bram.depth, bram.width))
    if rtl.brams[0].width != rtl.brams[1].width:
        raise RtlMismatch("%s: the two memories have different widths (%d and %d bits)"
                          % (rtl.directory, rtl.brams[0].width, rtl.brams[1].width))
    axi_bits, stream_bits = rtl.port_bits("m_axi_dram0_wdata"), rtl.port_bits("instruction_tdata")
    if axi_bits != 64 or stream_bits != 64:
        raise RtlMismatch(
            "%s has a %s-bit DRAM bus and a %s-bit instruction stream; the harness models the "
            "64-bit ones of `tensil rtl -d 64`" % (rtl.top_file, axi_bits, stream_bits)
        )


def as_architecture(arch: Any) -> Architecture:
    """`arch` as an Architecture: itself, or any object with the 11 `.tarch` attributes."""
    if isinstance(arch, Architecture):
        return arch
    try:
        return Architecture.from_dict({k: getattr(arch, k) for k in ARCH_FIELDS}, "arch")
    except AttributeError as exc:
        raise ValueError("arch must be a tensil.arch.Architecture (or have the .tarch fields): "
                         "%s" % exc) from None


def rtl_architecture(rtl: RtlInfo) -> Architecture:
    """The architecture the RTL was generated for, checked against its files.

    The Verilog fixes the array size and the memory address widths but not the stride
    depths or the thread queue, so the `.tarch` comes from a file: the one `*.tarch` in the
    RTL directory, else, for PEFSL's RTL (the default directory), the repository's
    tensil_arch/pynqz1_perf.tarch that its README names.
    """
    tarchs = sorted(rtl.directory.glob("*.tarch"))
    if len(tarchs) == 1:
        path = tarchs[0]
    elif not tarchs and rtl.directory == DEFAULT_RTL.resolve():
        path = DEFAULT_TARCH
    else:
        raise ValueError("cannot tell the architecture of %s: put its one .tarch next to the "
                         "Verilog or pass arch= (found %d .tarch files)" % (rtl.directory,
                                                                           len(tarchs)))
    try:
        arch = load_tarch(path)
    except ArchError as exc:
        raise RtlMismatch("the RTL's architecture file: %s" % exc) from None
    check_arch(rtl, arch)
    return arch


def check_arch(rtl: RtlInfo, arch: Any) -> None:
    """Refuse an architecture the RTL was not generated for, naming both values."""
    if arch.data_type != "FP16BP8":
        raise RtlMismatch(
            "the co-simulation models FP16BP8 (16-bit lanes, 4 per 64-bit beat); the "
            "architecture has data_type %s" % arch.data_type
        )
    if rtl.vector_bits != 16 * arch.array_size:
        raise RtlMismatch(
            "%s has %d-bit vectors (array size %s of 16-bit lanes) but the architecture has "
            "array_size %d" % (rtl.directory, rtl.vector_bits, rtl.vector_bits / 16, arch.array_size)
        )
    depths = sorted(b.depth for b in rtl.brams)
    wanted = sorted([arch.local_depth, arch.accumulator_depth])
    if depths != wanted:
        raise RtlMismatch(
            "%s has memories of %s vectors but the architecture has local_depth %d and "
            "accumulator_depth %d" % (rtl.directory, " and ".join(map(str, depths)),
                                      arch.local_depth, arch.accumulator_depth)
        )
    check_simulatable(rtl)
    layout = instruction_layout(as_architecture(arch))
    arguments, *address_bits = rtl.decoder_bits
    if arguments != layout.operands_bits:
        raise RtlMismatch(
            "%s decodes %d argument bits (%d-byte instructions) but the architecture's layout "
            "has %d (%d-byte instructions)"
            % (rtl.directory, arguments, (arguments + 8) // 8, layout.operands_bits,
               layout.instruction_bytes)
        )
    wanted_bits = (layout.local_bits, layout.accumulator_bits, layout.dram0_bits, layout.dram1_bits)
    if tuple(address_bits) != wanted_bits:
        raise RtlMismatch(
            "%s addresses local/accumulators/DRAM0/DRAM1 with %s bits but the architecture "
            "needs %s" % (rtl.directory, "/".join(map(str, address_bits)),
                          "/".join(map(str, wanted_bits)))
        )
    if arch.array_size % 4 != 0:
        raise RtlMismatch(
            "array_size %d is not a multiple of 4: a vector is not a whole number of 64-bit beats"
            % arch.array_size
        )
