"""Tensil toolchain benchmark: `make bench-tensil`.

Sections (run all, or some with --only):
- emulator: MAC/s of `tensil.emulator` on one core on MatMul-heavy programs, next to the
  plain numpy reference interpreter (`tensil.reference`) on the same arithmetic, medians of
  --repeats runs of CPU time of this process (one core; the wall time, which on a shared
  machine also counts the neighbours, is printed beside it). The programs: the MatMul/LoadWeights work of a ResNet-9 (f=16, 32x32,
  strided) frame on the 12x12 PEFSL architecture (every conv layer as LoadWeights + MatMul
  over its output pixels for each kernel tap and channel block, accumulating) on data in a
  trained network's range and on extreme data (saturating at every step), a program of
  1024-vector MatMuls and one of 16-vector MatMuls (the 4x4 layers' shape). Target: >= 20 M
  MAC/s on the ResNet-9 program, i.e. its 16 M true MACs (26 M on the padded array) in
  well under a second; the reference runs a prefix of each program and must agree with the
  emulator on it.

Figures are printed next to their baselines and targets; JSON goes to
runs/bench/tensil.json. Exit status 1 if a target is missed. The compiler's sections
(compile time, RTL latency, ResNet-20, few-shot accuracy with FP16BP8 features) come from
benchmarks/compiler.py; `--only emulator` runs the emulator alone.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the emulator target is for one core

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import compiler  # noqa: E402
from tensil.arch import Architecture, load_tarch  # noqa: E402
from tensil.emulator import Emulator, run  # noqa: E402
from tensil.isa import SIMD, DataMove, DataMoveKind, Instruction, LoadWeights, MatMul, SimdOp  # noqa: E402
from tensil.progen import random_data  # noqa: E402
from tensil.reference import reference_run  # noqa: E402

OUT = pathlib.Path("runs") / "bench"
ARCH = pathlib.Path("tensil_arch") / "pynqz1_perf.tarch"
EMULATOR_TARGET_MACS = 20e6
# ResNet-9 f=16 at 32x32 with strides (PEFSL): (output side, kernel taps, in channels,
# out channels) of every conv layer.
RESNET9_LAYERS = [
    (32, 9, 3, 16), (32, 9, 16, 16), (16, 9, 16, 16), (16, 1, 3, 16),
    (16, 9, 16, 40), (16, 9, 40, 40), (8, 9, 40, 40), (8, 1, 16, 40),
    (8, 9, 40, 80), (8, 9, 80, 80), (4, 9, 80, 80), (4, 1, 40, 80),
]

Section = Callable[[argparse.Namespace], Dict[str, Any]]


def _blocks(channels: int, n: int) -> int:
    return -(-channels // n)


def matmul_program(arch: Architecture, layers: List[Tuple[int, int, int, int]]
                   ) -> List[Instruction]:
    """Each layer as a compiled conv spends its time: its input pixels from DRAM0, then for
    each tap, input block and output block a LoadWeights and a MatMul over the output pixels
    (accumulating after the first), in chunks that fit the accumulators; a ReLU pass, and
    the results back to DRAM0 through local memory."""
    n = arch.array_size
    program: List[Instruction] = [DataMove(DataMoveKind.DRAM1_TO_LOCAL, 0, 0, 2 * n + 1)]
    for side, taps, cin, cout in layers:
        pixels = side * side
        for first in range(0, pixels, 1024):
            count = min(1024, pixels - first)
            program.append(DataMove(DataMoveKind.DRAM0_TO_LOCAL, 64, first % 1024, count - 1))
            for co in range(_blocks(cout, n)):
                for k in range(taps * _blocks(cin, n)):
                    program.append(LoadWeights((k % 2) * (n + 1), n))
                    program.append(MatMul(64, co * count % 1024, count - 1,
                                          accumulate=k > 0))
            program.append(SIMD(SimdOp.ZERO, dest=1))
            for v in range(min(count, 16)):
                program.append(SIMD(SimdOp.MAX, 0, 1, 0, v, v, read=True, write=True))
            program.append(DataMove(DataMoveKind.ACC_TO_LOCAL, 4096, 0, count - 1))
            program.append(DataMove(DataMoveKind.LOCAL_TO_DRAM0, 4096, 1024, count - 1))
    return program


def _machine(arch: Architecture, data: str, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """DRAM0 activations and DRAM1 weights: "nn" = |x| < 4, |w| < 0.25 (a trained
    network's range); "extreme" = progen's mix with full-range and limit values."""
    rng = np.random.default_rng(seed)
    if data == "extreme":
        return random_data(rng, 2048, arch), random_data(rng, 32, arch)
    n = arch.array_size
    return (rng.integers(-1024, 1024, (2048, n)).astype(np.int16),
            rng.integers(-64, 64, (32, n)).astype(np.int16))


def _macs(program: List[Instruction], n: int) -> int:
    return sum((i.size + 1) * n * n for i in program if isinstance(i, MatMul) and not i.zeroes)


def _timed_emulator(arch: Architecture, program: List[Instruction], data: str, repeats: int
                    ) -> Tuple[float, float, Emulator]:
    """Median CPU seconds (this process, one core) and wall seconds of a run."""
    dram0, dram1 = _machine(arch, data)
    cpu, wall = [], []
    machine = None
    for _ in range(repeats):
        machine = Emulator(arch, dram0, dram1)
        start, start_cpu = time.perf_counter(), time.process_time()
        machine.run(program)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    assert machine is not None
    return statistics.median(cpu), statistics.median(wall), machine


def _prefix(program: List[Instruction], n: int, macs: int) -> List[Instruction]:
    """The leading instructions holding about `macs` MACs."""
    total = 0
    for end, instruction in enumerate(program):
        if isinstance(instruction, MatMul):
            total += (instruction.size + 1) * n * n
        if total >= macs:
            return program[:end + 1]
    return program


def emulator_section(args: argparse.Namespace) -> Dict[str, Any]:
    arch = load_tarch(ARCH)
    n = arch.array_size
    resnet9 = matmul_program(arch, RESNET9_LAYERS)
    programs = [
        ("resnet9 f16 32x32 (12x12)", resnet9, "nn"),
        ("resnet9, extreme data", resnet9, "extreme"),
        ("1024-vector MatMuls", matmul_program(arch, [(32, 9, 12, 24)] * 2), "nn"),
        ("16-vector MatMuls", matmul_program(arch, [(4, 9, 84, 84)] * 2), "nn"),
    ]
    rows = []
    for name, program, data in programs:
        macs = _macs(program, n)
        cpu, wall, machine = _timed_emulator(arch, program, data, args.repeats)
        prefix = _prefix(program, n, args.reference_macs)
        dram0, dram1 = _machine(arch, data)
        start = time.process_time()
        _, _, ref_macs = reference_run(prefix, dram0, dram1, arch)
        ref_cpu = time.process_time() - start
        # both dump their accumulators to DRAM0 after the prefix, and those must agree
        dumped = prefix + [DataMove(DataMoveKind.ACC_TO_LOCAL, 64, 0, 1023),
                           DataMove(DataMoveKind.LOCAL_TO_DRAM0, 64, 0, 1023)]
        agrees = bool(np.array_equal(run(dumped, dram0, dram1, arch)[0],
                                     reference_run(dumped, dram0, dram1, arch)[0]))
        rows.append({
            "program": name, "data": data, "instructions": len(program), "macs": macs,
            "emulator_cpu_s": cpu, "emulator_wall_s": wall, "emulator_macs_per_s": macs / cpu,
            "reference_macs": ref_macs, "reference_cpu_s": ref_cpu,
            "reference_macs_per_s": ref_macs / ref_cpu, "agrees_on_prefix": agrees,
            "estimated_cycles": machine.report.cycles})
    print("\n== emulator (one core: CPU seconds of this process, median of %d runs) ==" %
          args.repeats)
    print("%-26s %6s %7s %8s %8s %11s %10s %8s %6s" % (
        "program", "instr", "MMAC", "cpu s", "wall s", "emul MMAC/s", "ref MMAC/s", "speed-up",
        "agree"))
    for r in rows:
        print("%-26s %6d %7.2f %8.3f %8.3f %11.1f %10.2f %7.0fx %6s" % (
            r["program"], r["instructions"], r["macs"] / 1e6, r["emulator_cpu_s"],
            r["emulator_wall_s"], r["emulator_macs_per_s"] / 1e6,
            r["reference_macs_per_s"] / 1e6,
            r["emulator_macs_per_s"] / r["reference_macs_per_s"], r["agrees_on_prefix"]))
    headline = rows[0]
    verdicts = [
        _verdict("emulator MAC/s on the ResNet-9 program", headline["emulator_macs_per_s"] / 1e6,
                 ">=", EMULATOR_TARGET_MACS / 1e6, "M MAC/s"),
        _verdict("ResNet-9 frame (%.1f M MACs on the padded array) on the emulator" % (
            headline["macs"] / 1e6), headline["emulator_cpu_s"], "<", 1.0, "s"),
        _verdict("emulator == reference on every program's prefix",
                 float(all(r["agrees_on_prefix"] for r in rows)), ">=", 1.0, ""),
    ]
    print("Tensil's estimate of the ResNet-9 program: %d cycles (%.1f ms at 50 MHz)" % (
        headline["estimated_cycles"], headline["estimated_cycles"] / 50e3))
    return {"rows": rows, "verdicts": verdicts}


def _verdict(what: str, value: float, op: str, target: float, unit: str) -> str:
    ok = value >= target if op == ">=" else value < target
    line = "%s %s: %.3g %s (target %s %g %s)" % ("PASS" if ok else "FAIL", what, value, unit, op,
                                                target, unit)
    print(line)
    return line


SECTIONS: Dict[str, Section] = {"emulator": emulator_section}
SECTIONS.update(compiler.SECTIONS)   # compile, latency, resnet20, accuracy (benchmarks/compiler.py)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections (%s)" % ", ".join(SECTIONS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure")
    parser.add_argument("--reference-macs", type=int, default=300_000,
                        help="MACs of each program's prefix that the reference runs")
    compiler.add_arguments(parser)
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error("unknown section(s) %s; known: %s" % (", ".join(unknown), ", ".join(SECTIONS)))
    results = {name: SECTIONS[name](args) for name in chosen}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tensil.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\nwrote %s" % (OUT / "tensil.json"))
    failed = [v for r in results.values() for v in r["verdicts"] if v.startswith("FAIL")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
