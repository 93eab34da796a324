"""RTL co-simulation benchmark (the co-simulation part of `make bench-tensil`).

1. Build time of the Verilated simulator from a clean cache (a fresh temporary cache
   directory; the RTL is ../shared/rtl/tensil_custom_perf or $TENSIL_RTL), against the
   target of a minute on 2 cores.
2. Simulated cycles per second on busy hand-assembled programs for PEFSL's 12x12
   architecture (tensil_arch/pynqz1_perf.tarch): MatMul-heavy (LoadWeights + long MatMuls)
   and DataMove-heavy (whole local memory from DRAM0/DRAM1 and back), with the default Zynq
   HP-port memory model. The rate is the harness's own (simulated cycles / CPU time of the
   simulation loop, so other load on the machine matters less) and end to end (program cycles / wall time of `tensil.cosim.run`, process start and
   memory files included); medians of --repeats runs, next to real time at 50 MHz.

`--opt-levels -O1,-Os,-O2` also builds with each g++ level and measures the MatMul rate,
to choose the default. JSON goes to runs/bench/cosim.json. Exit status 1 if a target is
missed.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from tensil import cosim
from tensil.cosim.build import CXX_OPT

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "bench"
BUILD_TARGET_S = 60.0  # clean build on 2 cores
TENSIL_CLOCK_HZ = 50e6  # PEFSL's FCLK3


def _instr(opcode: int, flags: int, op0: int = 0, op1: int = 0, op2: int = 0) -> bytes:
    """An 8-byte pynqz1/custom_perf instruction (TENSIL.md §2.4)."""
    return (op0 | op1 << 16 | op2 << 40 | (opcode << 4 | flags) << 56).to_bytes(8, "little")


def matmul_heavy(arch: Any, rng: np.random.Generator) -> Dict[str, Any]:
    n = arch.array_size
    local = np.zeros((arch.local_depth, n), np.int16)
    local[: 8 * (n + 1)] = rng.integers(-64, 64, (8 * (n + 1), n))
    local[4096 : 4096 + 2048] = rng.integers(-256, 256, (2048, n))
    program = []
    for block in range(8):  # 8 weight sets, 8 MatMuls of 2048 vectors each
        program.append(_instr(0x3, 0, block * (n + 1), n))
        for i in range(8):
            program.append(_instr(0x1, int(i > 0), 4096, 0, 2047))
    macs = 64 * 2048 * n * n
    return {"program": b"".join(program), "local": local, "dram0": np.zeros((1, n), np.int16),
            "dram1": np.zeros((1, n), np.int16), "macs": macs}


def datamove_heavy(arch: Any, rng: np.random.Generator) -> Dict[str, Any]:
    n = arch.array_size
    depth = arch.local_depth
    dram0 = rng.integers(-32768, 32768, (depth, n)).astype(np.int16)
    dram1 = rng.integers(-32768, 32768, (depth, n)).astype(np.int16)
    chunk = 1024
    program = []
    for kind_in, kind_out in ((0x0, 0x1), (0x2, 0x3)):
        for start in range(0, depth, chunk):
            program.append(_instr(0x2, kind_in, start, start, chunk - 1))
        for start in range(0, depth, chunk):
            program.append(_instr(0x2, kind_out, start, start, chunk - 1))
    return {"program": b"".join(program), "local": None, "dram0": dram0, "dram1": dram1,
            "vectors_moved": 4 * depth}


PROGRAMS: Dict[str, Callable[[Any, np.random.Generator], Dict[str, Any]]] = {
    "matmul-heavy": matmul_heavy,
    "datamove-heavy": datamove_heavy,
}


def measure(arch: Any, name: str, repeats: int, simulator: Optional[cosim.Build] = None) -> Dict[str, Any]:
    work = PROGRAMS[name](arch, np.random.default_rng(0))
    rates, end_to_end, last = [], [], None
    for _ in range(repeats):
        started = time.monotonic()
        last = cosim.run(work["program"], work["dram0"], work["dram1"], arch, local=work["local"],
                         simulator=simulator)
        wall = time.monotonic() - started
        rates.append(last.stats["simulated_cycles"] / last.stats["sim_cpu_seconds"])
        end_to_end.append(last.cycles / wall)
    row = {
        "program": name,
        "instructions": last.instructions,
        "cycles": last.cycles,
        "simulated_cycles": last.stats["simulated_cycles"],
        "cycles_per_s": statistics.median(rates),
        "end_to_end_cycles_per_s": statistics.median(end_to_end),
        "real_time_fraction": statistics.median(rates) / TENSIL_CLOCK_HZ,
    }
    if "macs" in work:
        row["mac_per_cycle"] = work["macs"] / last.cycles
    return row


def clean_build(cxx_opt: str = CXX_OPT) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cosim-bench-") as cache:
        made = cosim.build(cache_dir=cache, cxx_opt=cxx_opt)
        started = time.monotonic()
        again = cosim.build(cache_dir=cache, cxx_opt=cxx_opt)
        lookup = time.monotonic() - started
        assert again.cached
        return {"cxx_opt": cxx_opt, "seconds": made.seconds, "cpu_seconds": made.cpu_seconds,
                "cached_lookup_s": lookup,
                "binary_bytes": made.executable.stat().st_size}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=Path, default=ROOT / "tensil_arch" / "pynqz1_perf.tarch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-clean-build", action="store_true", help="skip the clean-cache build")
    parser.add_argument("--opt-levels", default="", help="also compare g++ levels, e.g. -O1,-Os,-O2")
    args = parser.parse_args(argv)
    missing = cosim.unavailable()
    if missing:
        print("co-simulation unavailable: %s" % missing)
        return 1
    arch = types.SimpleNamespace(**json.loads(args.arch.read_text()))
    cores = os.cpu_count()
    result: Dict[str, Any] = {"arch": str(args.arch), "cores": cores, "dram": vars(cosim.DramModel())}
    failed = False

    if not args.no_clean_build:
        print("clean build (%d cores) ..." % cores, flush=True)
        result["clean_build"] = clean_build()
    cosim.build()  # the default cache, for the runs below

    print("\n%-15s %12s %10s %14s %18s %10s %8s" % ("program", "instructions", "cycles", "cycles/s",
                                                     "end-to-end cyc/s", "real time", "MAC/cyc"))
    rows = []
    for name in PROGRAMS:
        row = measure(arch, name, args.repeats)
        rows.append(row)
        print("%-15s %12d %10d %14.0f %18.0f %9.2f%% %8s" % (
            name, row["instructions"], row["cycles"], row["cycles_per_s"],
            row["end_to_end_cycles_per_s"], 100 * row["real_time_fraction"],
            "%.1f" % row["mac_per_cycle"] if "mac_per_cycle" in row else "-"))
    result["programs"] = rows

    levels = [level for level in args.opt_levels.split(",") if level]
    if levels:
        print("\n%-6s %10s %12s %16s" % ("g++", "build s", "build CPU s", "matmul cycles/s"))
        result["opt_levels"] = []
        for level in levels:
            with tempfile.TemporaryDirectory(prefix="cosim-opt-") as cache:
                made = cosim.build(cache_dir=cache, cxx_opt=level)
                row = measure(arch, "matmul-heavy", args.repeats, simulator=made)
            entry = {"cxx_opt": level, "build_s": made.seconds, "build_cpu_s": made.cpu_seconds,
                     "cycles_per_s": row["cycles_per_s"]}
            result["opt_levels"].append(entry)
            print("%-6s %10.1f %12.1f %16.0f" % (level, made.seconds, made.cpu_seconds, row["cycles_per_s"]))

    print("\ntarget                                              measured   target")
    if "clean_build" in result:
        seconds = result["clean_build"]["seconds"]
        ok = seconds < BUILD_TARGET_S
        failed |= not ok
        print("%-50s %8.1f s < %.0f s  %s" % ("clean build of the simulator (%d cores)" % cores,
                                                seconds, BUILD_TARGET_S, "ok" if ok else "MISSED"))
        print("  (compiler CPU time %.1f s; wall time depends on what else the cores run)"
              % result["clean_build"]["cpu_seconds"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cosim.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\nwritten %s" % (OUT / "cosim.json"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
