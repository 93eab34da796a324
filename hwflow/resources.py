"""Resource estimate of a Tensil RTL with Yosys `synth_xilinx`, against the XC7Z020.

The estimate is Yosys's, not Vivado's: Yosys maps to the same 7-series primitives (LUT1-6,
FDRE/FDSE/FDCE/FDPE, DSP48E1, RAMB18E1/RAMB36E1, LUT RAMs and SRLs) but optimises differently,
so Vivado's utilisation report after implementation will differ by some percent.

Tensil's two `bram_dp_<width>x<depth>` memories stay black boxes (Yosys cannot map their two
write ports); each is converted here into the fewest block RAMs a true-dual-port memory of that
shape takes (RAMB36E1: 32Kx1 ... 1Kx36, RAMB18E1: 16Kx1 ... 1Kx18, parity bits used as data).
"""

import math
import pathlib
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .errors import HwflowError
from .rtl import RtlInfo
from .tools import require_tool, run_tool

__all__ = ["XC7Z020", "Utilisation", "bram36_for_memory", "count_cells", "parse_stat",
           "synthesize", "format_table"]

# Zynq XC7Z020 (PYNQ-Z1) programmable-logic resources (Zynq-7000 product table).
XC7Z020: Dict[str, float] = {"LUT": 53200, "FF": 106400, "DSP48": 220, "BRAM36": 140}

_LUTS = {"LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"}
_FFS = {"FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"}
# LUTs taken by each distributed-RAM or shift-register primitive (7-series CLB user guide).
_LUT_MEMORY = {
    "RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
    "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
    "RAM32M": 4, "RAM64M": 4, "SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1,
}
_BLOCK_RAM = {"RAMB36E1": 1.0, "RAMB18E1": 0.5}
_DSP = {"DSP48E1"}
_BLACKBOX = re.compile(r"^\\?bram_dp_(\d+)x(\d+)$")

# True-dual-port shapes (depth, width) with their cost in RAMB36 equivalents.
_TDP_SHAPES = ([(32768 >> k, w, 1.0) for k, w in enumerate((1, 2, 4, 9, 18, 36))]
               + [(16384 >> k, w, 0.5) for k, w in enumerate((1, 2, 4, 9, 18))])


def bram36_for_memory(width: int, depth: int) -> float:
    """The fewest RAMB36 equivalents a true-dual-port width x depth memory needs."""
    if width <= 0 or depth <= 0:
        raise ValueError("memory shape must be positive, not %dx%d" % (width, depth))
    return min(math.ceil(depth / d) * math.ceil(width / w) * cost for d, w, cost in _TDP_SHAPES)


@dataclass
class Utilisation:
    """Counts of one synthesised design, in the units of the device limits."""

    luts: int
    lut_logic: int
    lut_memory: int
    inverters: int
    ffs: int
    dsps: int
    bram36: float
    bram36_mapped: float
    memories: List[Tuple[int, int, int, float]]  # (width, depth, instances, bram36 each)
    cells: Dict[str, int]
    seconds: Optional[float] = None

    def rows(self, limits: Mapping[str, float] = XC7Z020) -> List[Dict[str, Any]]:
        """One row a resource; "LUT+INV" counts Yosys's INV cells as LUT1s (an upper bound:
        Vivado folds most inverters into neighbouring LUTs and flip-flops)."""
        used = [("LUT", "LUT", self.luts), ("LUT+INV", "LUT", self.luts + self.inverters),
                ("FF", "FF", self.ffs), ("DSP48", "DSP48", self.dsps),
                ("BRAM36", "BRAM36", self.bram36)]
        return [{"resource": name, "used": n, "available": limits[key],
                 "percent": 100.0 * n / limits[key], "fits": n <= limits[key]}
                for name, key, n in used]

    def verdict(self, limits: Mapping[str, float] = XC7Z020) -> str:
        """"fits", "does not fit", or "uncertain" when only the LUT+INV upper bound overflows."""
        failing = {row["resource"] for row in self.rows(limits) if not row["fits"]}
        if not failing:
            return "fits"
        return "uncertain" if failing == {"LUT+INV"} else "does not fit"

    def to_json(self, limits: Mapping[str, float] = XC7Z020) -> Dict[str, Any]:
        return {
            "estimator": "yosys synth_xilinx -family xc7 (an estimate, not Vivado's report)",
            "device": "xc7z020", "rows": self.rows(limits), "verdict": self.verdict(limits),
            "luts_logic": self.lut_logic, "luts_memory": self.lut_memory,
            "inverters": self.inverters,
            "bram36_mapped_by_yosys": self.bram36_mapped,
            "blackbox_memories": [{"width": w, "depth": d, "instances": n, "bram36_each": b}
                                  for w, d, n, b in self.memories],
            "cells": self.cells, "synth_seconds": self.seconds,
        }


def count_cells(cells: Mapping[str, int]) -> Utilisation:
    """Group Yosys cell counts (type -> number, after synth_xilinx -flatten) into resources."""
    clean = {name.lstrip("\\"): int(n) for name, n in cells.items()}
    lut_logic = sum(n for name, n in clean.items() if name in _LUTS)
    lut_memory = sum(n * _LUT_MEMORY[name] for name, n in clean.items() if name in _LUT_MEMORY)
    memories = []
    for name, n in sorted(clean.items()):
        match = _BLACKBOX.match(name)
        if match:
            width, depth = int(match.group(1)), int(match.group(2))
            memories.append((width, depth, n, bram36_for_memory(width, depth)))
    mapped = sum(n * _BLOCK_RAM[name] for name, n in clean.items() if name in _BLOCK_RAM)
    return Utilisation(
        luts=lut_logic + lut_memory, lut_logic=lut_logic, lut_memory=lut_memory,
        inverters=clean.get("INV", 0),
        ffs=sum(n for name, n in clean.items() if name in _FFS),
        dsps=sum(n for name, n in clean.items() if name in _DSP),
        bram36=mapped + sum(n * b for _, _, n, b in memories), bram36_mapped=mapped,
        memories=memories, cells=dict(sorted(clean.items())))


def _yosys_script(rtl: RtlInfo, stat_path: pathlib.Path, flatten: bool) -> str:
    paths = [str(p) for p in rtl.files] + [str(stat_path)]
    if any(re.search(r"[\s\"']", p) for p in paths):
        raise HwflowError("Yosys scripts cannot take paths with spaces or quotes: %s" % ", ".join(paths))
    return "\n".join([
        "read_verilog -lib %s" % " ".join(str(p) for p in rtl.memory_files),  # black boxes:
        "read_verilog %s" % rtl.top_file,          # Yosys cannot map their two write ports
        # -noiopad: the TCU is a module inside the block design, not the chip's top level.
        "synth_xilinx -family xc7 -top %s -noiopad%s" % (rtl.top_module, " -flatten" if flatten else ""),
        # Text, not `stat -json`: Yosys 0.23 writes invalid JSON for a hierarchical design.
        "tee -q -o %s stat" % stat_path,
        "",
    ])


def synthesize(rtl: RtlInfo, work_dir: pathlib.Path, flatten: bool = False,
               timeout: float = 3600) -> Utilisation:
    """Run Yosys on `rtl` (script, log and stat in work_dir) and count its resources."""
    yosys = require_tool("yosys", "to estimate the FPGA resources of the RTL")
    work_dir.mkdir(parents=True, exist_ok=True)
    stat_path = work_dir / "yosys_stat.txt"
    stat_path.unlink(missing_ok=True)
    script = work_dir / "synth.ys"
    script.write_text(_yosys_script(rtl, stat_path, flatten), encoding="utf-8")
    start = time.monotonic()
    run_tool([yosys, "-q", "-l", str(work_dir / "yosys.log"), "-s", str(script)],
             what="synthesise %s with Yosys (log: %s)" % (rtl.top_module, work_dir / "yosys.log"),
             timeout=timeout)
    seconds = time.monotonic() - start
    utilisation = count_cells(parse_stat(stat_path.read_text(encoding="utf-8"), rtl.top_module))
    utilisation.seconds = seconds
    return utilisation


def parse_stat(text: str, top: str) -> Dict[str, int]:
    """Cell counts of the whole design from Yosys's text `stat`: the "design hierarchy" totals
    when the design has submodules, else the section of module `top`."""
    sections: Dict[str, List[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"^=== (.+) ===$", line.strip())
        if header:
            current = header.group(1).lstrip("\\")
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    body = sections.get("design hierarchy", sections.get(top))
    if body is None:
        raise HwflowError("Yosys's stat has neither a design hierarchy nor module %s (sections: %s)"
                          % (top, ", ".join(sections) or "none"))
    cells: Dict[str, int] = {}
    counting = False
    for line in body:
        if re.match(r"^\s*Number of cells:", line):
            counting, cells = True, {}
            continue
        if counting:
            match = re.match(r"^\s+(\S+)\s+(\d+)\s*$", line)
            if not match:
                counting = False
                continue
            cells[match.group(1)] = int(match.group(2))
    if not cells:
        raise HwflowError("Yosys's stat lists no cells for %s" % top)
    return cells


def format_table(util: Utilisation, title: str, limits: Mapping[str, float] = XC7Z020) -> str:
    lines = [title, "%-8s %10s %10s %7s  %s" % ("resource", "used", "XC7Z020", "%", "fits")]
    for row in util.rows(limits):
        used = ("%.1f" % row["used"]) if isinstance(row["used"], float) else "%d" % row["used"]
        lines.append("%-8s %10s %10d %6.1f%%  %s" % (
            row["resource"], used, row["available"], row["percent"], "yes" if row["fits"] else "NO"))
    notes = ["verdict: %s" % util.verdict(limits),
             "LUTs: %d logic + %d as distributed RAM/shift registers; %d INV cells (LUT+INV)"
             % (util.lut_logic, util.lut_memory, util.inverters)]
    for width, depth, count, each in util.memories:
        notes.append("BRAM: %d x bram_dp_%dx%d black box = %g RAMB36 each (true dual port)"
                     % (count, width, depth, each))
    if util.bram36_mapped:
        notes.append("BRAM: %g RAMB36 inferred by Yosys elsewhere" % util.bram36_mapped)
    notes.append("estimate by Yosys synth_xilinx, not Vivado: expect Vivado's utilisation to differ")
    return "\n".join(lines + ["  " + n for n in notes])

