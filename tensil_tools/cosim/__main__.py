"""Command line: build the co-simulation, or run a .tprog on the RTL from files.

    python -m tensil_tools.cosim build [--rtl DIR]
    python -m tensil_tools.cosim run --tprog X.tprog --out DIR [--arch A.tarch] \
        [--dram0 FILE] [--dram1 FILE] [--local FILE] [--accumulators FILE]

Without --arch the run uses the architecture the RTL was generated for (the one .tarch in
the RTL directory, or tensil_arch/pynqz1_perf.tarch for PEFSL's RTL).

Memory files are raw little-endian int16 images (the .tdata layout: vectors of array_size
lanes) or .npy int16 arrays of shape (vectors, array_size). The run writes DIR/dram0.bin,
dram1.bin, local.bin, accumulators.bin (raw images) and result.json (cycles, counts, model).
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from tensil.arch import load_tarch
from tensil.errors import TensilError

from ..rtl import find_rtl, rtl_architecture
from .build import build
from .errors import CosimError
from .runner import ADDRESS_SPACE, DramModel, run


def read_memory(path: Path, array_size: int, what: str) -> np.ndarray:
    if path.stat().st_size > ADDRESS_SPACE + 4096:
        raise ValueError("%s: %s larger than the 32-bit address space" % (path, what))
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)  # run() checks dtype and shape
    raw = np.fromfile(path, dtype="<i2")
    if raw.size % array_size:
        raise ValueError("%s: %d bytes is not a whole number of %d-lane int16 vectors"
                         % (path, raw.size * 2, array_size))
    return raw.reshape(-1, array_size)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tensil_tools.cosim", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="build (or find in the cache) the Verilated simulator")
    make.add_argument("--rtl", type=Path, help="RTL directory (default: $TENSIL_RTL or ../shared/rtl/tensil_custom_perf)")
    make.add_argument("--cache", type=Path, help="cache directory (default: build/cosim in the repository)")
    go = commands.add_parser("run", help="run a .tprog on the RTL")
    go.add_argument("--tprog", type=Path, required=True, help="the program to run")
    go.add_argument("--arch", type=Path, help="the .tarch the program and RTL are for "
                    "(default: the RTL's own)")
    go.add_argument("--out", type=Path, required=True, help="folder for the memories and result.json")
    go.add_argument("--dram0", type=Path, help="initial DRAM0 (default: one zero vector)")
    go.add_argument("--dram1", type=Path, help="initial DRAM1, e.g. the model's .tdata")
    go.add_argument("--local", type=Path, help="initial local memory (local_depth vectors)")
    go.add_argument("--accumulators", type=Path, help="initial accumulators")
    go.add_argument("--rtl", type=Path, help="RTL directory (default: $TENSIL_RTL or ../shared/rtl/tensil_custom_perf)")
    go.add_argument("--completion", choices=("probe", "drain"), default="probe", help="how the end of the program is found: a probe instruction, or the queues draining (default %(default)s)")
    defaults = DramModel()
    for field in dataclasses.fields(DramModel):
        go.add_argument("--" + field.name.replace("_", "-"), type=int,
                        default=getattr(defaults, field.name), help="DRAM model (default %(default)s)")
    go.add_argument("--timeout-cycles", type=int, default=50_000_000, help="give up after this many cycles (default %(default)s)")
    go.add_argument("--hang-cycles", type=int, default=100_000, help="call the RTL hung after this many cycles without progress (default %(default)s)")
    return parser


def _run(args: argparse.Namespace) -> None:
    arch = load_tarch(args.arch) if args.arch else rtl_architecture(find_rtl(args.rtl))
    n = arch.array_size
    memories = {}
    for name in ("dram0", "dram1", "local", "accumulators"):
        path = getattr(args, name)
        if path is not None:
            memories[name] = read_memory(path, n, name)
    model = DramModel(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DramModel)})
    result = run(
        args.tprog.read_bytes(),
        memories.get("dram0", np.zeros((1, n), np.int16)),
        memories.get("dram1", np.zeros((1, n), np.int16)),
        arch,
        rtl_dir=args.rtl,
        dram=model,
        completion=args.completion,
        timeout_cycles=args.timeout_cycles,
        hang_cycles=args.hang_cycles,
        local=memories.get("local"),
        accumulators=memories.get("accumulators"),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("dram0", "dram1", "local", "accumulators"):
        getattr(result, name).astype("<i2").tofile(args.out / (name + ".bin"))
    report = {
        "cycles": result.cycles,
        "drain_cycles": result.drain_cycles,
        "instructions": result.instructions,
        "completion": args.completion,
        "dram": dataclasses.asdict(model),
        "wall_seconds": round(result.wall_seconds, 4),
        "stats": result.stats,
    }
    (args.out / "result.json").write_text(json.dumps(report, indent=2) + "\n")
    print("%d instructions, %d cycles (%s), drained at %d; memories in %s"
          % (result.instructions, result.cycles, args.completion, result.drain_cycles, args.out))


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            made = build(args.rtl, cache_dir=args.cache)
            state = "cached" if made.cached else "built in %.1f s" % made.seconds
            print("%s (%s, %s)" % (made.executable, made.rtl.top_module, state))
        else:
            _run(args)
    except (CosimError, TensilError, ValueError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
