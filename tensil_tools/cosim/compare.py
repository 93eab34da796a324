"""One program on the emulator and on the RTL, every memory compared: the check behind
"the hardware is the judge" (tests/test_tensil_rtl.py, `make bench-tensil`)."""

import dataclasses
from typing import Any, List, Optional

import numpy as np

from tensil.arch import Architecture
from tensil.emulator import EmulatorReport
from tensil.emulator import run as emulate

from ..rtl import as_architecture, find_rtl, rtl_architecture
from .runner import CosimResult, run

__all__ = ["Comparison", "compare"]


@dataclasses.dataclass
class Comparison:
    rtl: CosimResult
    emulator: EmulatorReport          # with the emulator's final local memory and accumulators
    emulator_dram0: np.ndarray
    emulator_dram1: np.ndarray
    mismatches: List[str]             # one sentence per memory that differs

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _difference(name: str, mine: Optional[np.ndarray], theirs: np.ndarray) -> Optional[str]:
    if mine is None:
        return "%s: the emulator reported none" % name
    if mine.shape != theirs.shape:
        return "%s: emulator shape %s, RTL shape %s" % (name, mine.shape, theirs.shape)
    rows = np.flatnonzero((mine != theirs).any(axis=1))
    if not rows.size:
        return None
    first = int(rows[0])
    return "%s differs in %d vectors, first %d: emulator %s, RTL %s" % (
        name, rows.size, first, mine[first].tolist(), theirs[first].tolist())


def compare(program: bytes, dram0: np.ndarray, dram1: np.ndarray,
            arch: Optional[Architecture] = None, *, local: Optional[np.ndarray] = None,
            accumulators: Optional[np.ndarray] = None, **cosim_options: Any) -> Comparison:
    """Run `program` on both (the RTL with `completion="drain"` unless told otherwise) and
    compare DRAM0, DRAM1, local memory and the accumulators.

    Local memory and the accumulators start at zero on both unless given: pass random ones
    so that a write that should not happen shows. EmulatorError (what jams the RTL) and the
    co-simulation's errors propagate.
    """
    if arch is None:
        arch = rtl_architecture(find_rtl(cosim_options.get("rtl_dir")))
    arch = as_architecture(arch)
    n = arch.array_size
    if local is None:
        local = np.zeros((arch.local_depth, n), np.int16)
    if accumulators is None:
        accumulators = np.zeros((arch.accumulator_depth, n), np.int16)
    cosim_options.setdefault("completion", "drain")
    out0, out1, report = emulate(program, dram0, dram1, arch, local=local,
                                 accumulators=accumulators)
    rtl = run(program, dram0, dram1, arch, local=local, accumulators=accumulators,
              **cosim_options)
    mismatches = [m for m in (
        _difference("DRAM0", out0, rtl.dram0), _difference("DRAM1", out1, rtl.dram1),
        _difference("local memory", report.local, rtl.local),
        _difference("accumulators", report.accumulators, rtl.accumulators)) if m]
    return Comparison(rtl, report, out0, out1, mismatches)
