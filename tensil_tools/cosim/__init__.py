"""Co-simulation of Tensil programs on the accelerator's real RTL (Verilator).

Workstation only (Verilator, g++, make); not part of the board image.

    from tensil_tools.cosim import run, DramModel
    result = run(program_bytes, dram0, dram1, arch)   # arch: a tensil.arch.Architecture,
    result.dram0, result.local, result.accumulators, result.cycles   # default the RTL's own
"""

import os
from typing import Optional

from ..rtl import DEFAULT_RTL, RtlInfo, check_arch, find_rtl, rtl_architecture
from .build import Build, build, cache_root, missing_tools
from .compare import Comparison, compare
from .errors import (
    AxiViolation,
    CosimBuildError,
    CosimError,
    CosimHang,
    CosimUnavailable,
    RtlMismatch,
)
from .runner import CosimMachine, CosimResult, DramModel, final_dram_offsets, run

__all__ = [
    "run",
    "AxiViolation",
    "compare",
    "Comparison",
    "DramModel",
    "CosimMachine",
    "CosimResult",
    "build",
    "Build",
    "cache_root",
    "missing_tools",
    "unavailable",
    "find_rtl",
    "check_arch",
    "rtl_architecture",
    "final_dram_offsets",
    "RtlInfo",
    "DEFAULT_RTL",
    "CosimError",
    "CosimUnavailable",
    "CosimBuildError",
    "CosimHang",
    "RtlMismatch",
]


def unavailable(rtl_dir: Optional[os.PathLike] = None) -> Optional[str]:
    """None when the co-simulation can run here, else the sentence saying what is missing."""
    reasons = missing_tools()
    try:
        find_rtl(rtl_dir)
    except CosimError as exc:
        reasons.append(str(exc))
    return "; ".join(reasons) or None
