"""Finding Tensil-generated RTL and checking it against an architecture.

`tensil rtl -a <arch>.tarch -d 64` writes `top_<arch>.v` (the TCU and its AXI wrapper) and two
`bram_dp_<width>x<depth>.v` memories (local memory and accumulators). The default is PEFSL's
12x12 RTL in `../shared/rtl/tensil_custom_perf` next to the repository; `TENSIL_RTL=dir`
points at any other.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from tensil.arch import ARCH_FIELDS, Architecture, instruction_layout, load_tarch
from tensil.errors import ArchError

from .errors import CosimUnavailable, RtlMismatch

__all__ = ["RtlInfo", "Bram", "REPO_ROOT", "DEFAULT_RTL", "DEFAULT_TARCH", "find_rtl",
           "check_arch", "as_architecture", "rtl_architecture"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RTL = REPO_ROOT.parent / "shared" / "rtl" / "tensil_custom_perf"
# The architecture PEFSL's RTL was generated from (its README: `tensil rtl -a custom_perf.tarch`).
DEFAULT_TARCH = REPO_ROOT / "tensil_arch" / "pynqz1_perf.tarch"

_HOW = (
    "set TENSIL_RTL=dir to a directory holding the top_<arch>.v and bram_dp_<width>x<depth>.v "
    "files that `tensil rtl -a <arch>.tarch -d 64` generates (the default is %s)" % DEFAULT_RTL
)


@dataclass(frozen=True)
class Bram:
    module: str
    width: int  # bits per vector
    depth: int  # vectors
    path: Path


@dataclass(frozen=True)
class RtlInfo:
    """What the RTL files say about the hardware they describe."""

    directory: Path
    top_file: Path
    top_module: str
    brams: Tuple[Bram, ...]
    axi_data_bits: int
    instruction_argument_bits: int
    fingerprint: Tuple[Any, ...] = ()  # names, sizes and times of the Verilog files read
    # address bits of the Decoder's ports: local, accumulators, DRAM0, DRAM1
    address_bits: Tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def files(self) -> Tuple[Path, ...]:
        """The Verilog sources, each once."""
        return (self.top_file,) + tuple(sorted({b.path for b in self.brams}))

    @property
    def vector_bits(self) -> int:
        return self.brams[0].width


def _port_bits(text: str, module: str, port: str, where: Path) -> int:
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
        raise CosimUnavailable("no Tensil RTL directory at %s: %s" % (directory, _HOW))
    identity = (directory,) + tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.glob("*.v"))
    )
    if identity not in _READ:
        _READ[identity] = _read_rtl(directory, identity)
    return _READ[identity]


def _read_rtl(directory: Path, fingerprint: Tuple[Any, ...]) -> RtlInfo:
    tops = sorted(directory.glob("top_*.v"))
    if len(tops) != 1:
        raise CosimUnavailable(
            "%s holds %d top_*.v files, expected exactly one: %s"
            % (directory, len(tops), _HOW)
        )
    top_file = tops[0]
    text = top_file.read_text(encoding="utf-8", errors="replace")
    top_module = top_file.stem
    if re.search(r"^module %s\(" % re.escape(top_module), text, re.M) is None:
        raise RtlMismatch("%s does not define module %s" % (top_file, top_module))
    brams = []
    for path in sorted(directory.glob("bram_dp_*.v")):
        match = re.fullmatch(r"bram_dp_(\d+)x(\d+)", path.stem)
        if match is None:
            continue
        width, depth = int(match.group(1)), int(match.group(2))
        body = path.read_text(encoding="utf-8", errors="replace")
        declared = re.search(r"reg\s*\[(\d+):0\]\s*ram\s*\[(\d+):0\]", body)
        if declared is None or (int(declared.group(1)) + 1, int(declared.group(2)) + 1) != (
            width,
            depth,
        ):
            raise RtlMismatch("%s does not declare a %d x %d-bit ram" % (path, depth, width))
        brams.append(Bram(path.stem, width, depth, path))
    if len(brams) == 1:  # local memory and accumulators of one size share a module
        brams.append(brams[0])
    if len(brams) != 2:
        raise CosimUnavailable(
            "%s holds %d bram_dp_<width>x<depth>.v files, expected one or two (local memory "
            "and accumulators): %s" % (directory, len(brams), _HOW)
        )
    if brams[0].width != brams[1].width:
        raise RtlMismatch(
            "%s: the two memories have different widths (%d and %d bits)"
            % (directory, brams[0].width, brams[1].width)
        )
    axi_bits = _port_bits(text, top_module, "m_axi_dram0_wdata", top_file)
    stream_bits = _port_bits(text, top_module, "instruction_tdata", top_file)
    if axi_bits != 64 or stream_bits != 64:
        raise RtlMismatch(
            "%s has a %d-bit DRAM bus and a %d-bit instruction stream; the harness models the "
            "64-bit ones of `tensil rtl -d 64`" % (top_file, axi_bits, stream_bits)
        )
    arguments = _port_bits(text, "Decoder", "io_instruction_bits_arguments", top_file)
    address_bits = tuple(_port_bits(text, "Decoder", port, top_file) for port in (
        "io_memPortA_bits_address", "io_acc_bits_readAddress", "io_dram0_bits_address",
        "io_dram1_bits_address"))
    return RtlInfo(directory, top_file, top_module, tuple(brams), axi_bits, arguments, fingerprint,
                   address_bits)  # type: ignore[arg-type]


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
    layout = instruction_layout(as_architecture(arch))
    if rtl.instruction_argument_bits != layout.operands_bits:
        raise RtlMismatch(
            "%s decodes %d argument bits (%d-byte instructions) but the architecture's layout "
            "has %d (%d-byte instructions)"
            % (rtl.directory, rtl.instruction_argument_bits,
               (rtl.instruction_argument_bits + 8) // 8, layout.operands_bits,
               layout.instruction_bytes)
        )
    wanted_bits = (layout.local_bits, layout.accumulator_bits, layout.dram0_bits, layout.dram1_bits)
    if rtl.address_bits != wanted_bits:
        raise RtlMismatch(
            "%s addresses local/accumulators/DRAM0/DRAM1 with %s bits but the architecture "
            "needs %s" % (rtl.directory, "/".join(map(str, rtl.address_bits)),
                          "/".join(map(str, wanted_bits)))
        )
    if arch.array_size % 4 != 0:
        raise RtlMismatch(
            "array_size %d is not a multiple of 4: a vector is not a whole number of 64-bit beats"
            % arch.array_size
        )
