"""`python -m tensil`: architecture summaries, assembly, disassembly, estimates, emulation.

    python -m tensil arch tensil_arch/pynqz1_perf.tarch
    python -m tensil asm prog.tasm -a tensil_arch/pynqz1_perf.tarch -o prog.tprog
    python -m tensil disasm prog.tprog -a tensil_arch/pynqz1_perf.tarch
    python -m tensil estimate prog.tprog -a tensil_arch/pynqz1_perf.tarch --memory
    python -m tensil emulate model.tmodel --input x=image.npy --out-dir out/
    python -m tensil emulate prog.tprog -a ARCH --dram0 d0.npy --dram1 d1.npy --out-dir out/

The board's command line. The workstation's (`python -m tensil_tools`, the `tensil` script) is
the same plus `compile` (ONNX -> .tmodel); the RTL co-simulation is `python -m tensil_tools.cosim`.
"""

import argparse
import json
import pathlib
import sys
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .arch import format_table, load_tarch, summary
from .errors import TensilError
from .estimate import MemoryModel, estimate, estimate_memory_aware
from .isa import decode_program, encode_program, extent, format_instruction, parse_program

__all__ = ["main"]

_MAX_TEXT_BYTES = 64 << 20


def _read_text(path: str) -> str:
    file = pathlib.Path(path)
    if file.stat().st_size > _MAX_TEXT_BYTES:
        raise TensilError("%s: larger than %d MiB" % (path, _MAX_TEXT_BYTES >> 20))
    return file.read_text(encoding="utf-8")


def _read_bytes(path: str) -> bytes:
    file = pathlib.Path(path)
    if file.stat().st_size > _MAX_TEXT_BYTES:
        raise TensilError("%s: larger than %d MiB" % (path, _MAX_TEXT_BYTES >> 20))
    return file.read_bytes()


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TensilError("%s: not a readable .npy array (%s)" % (path, exc)) from None


def _cmd_arch(args: argparse.Namespace) -> int:
    arch = load_tarch(args.tarch)
    print(arch.to_json() if args.json else summary(arch), end="")
    return 0


def _cmd_asm(args: argparse.Namespace) -> int:
    arch = load_tarch(args.arch)
    program = parse_program(_read_text(args.tasm), arch)
    data = encode_program(program, arch)
    out = pathlib.Path(args.output or pathlib.Path(args.tasm).with_suffix(".tprog"))
    out.write_bytes(data)
    print("%s: %d instructions, %d bytes" % (out, len(program), len(data)))
    return 0


def _cmd_disasm(args: argparse.Namespace) -> int:
    arch = load_tarch(args.arch)
    program = decode_program(_read_bytes(args.tprog), arch, strict=not args.as_rtl)
    step = arch.layout.instruction_bytes
    lines = [format_instruction(i) + ("  ; 0x%06x" % (k * step) if args.offsets else "")
             for k, i in enumerate(program)]
    text = "".join(line + "\n" for line in lines)
    if args.output:
        pathlib.Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_estimate(args: argparse.Namespace) -> int:
    arch = load_tarch(args.arch)
    program = decode_program(_read_bytes(args.tprog), arch, strict=not args.as_rtl)
    if args.memory:
        memory = MemoryModel(read_latency=args.read_latency, write_latency=args.write_latency)
        result = estimate_memory_aware(program, arch, memory)
        title = "RTL-CALIBRATED ESTIMATE (DRAM read latency %d, write latency %d)" % (
            args.read_latency, args.write_latency)
    else:
        result = estimate(program, arch)
        title = "TENSIL LATENCY ESTIMATE"
    rows = [(kind, count, cycles, energy) for kind, count, cycles, energy in result.table()]
    rows.append(("Total (instructions/cycles/energy)", len(program), result.cycles,
                 result.energy))
    print(format_table(title + " (count/cycles/energy)", rows), end="")
    return 0


def _parse_inputs(pairs: List[str]) -> Dict[str, np.ndarray]:
    inputs = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name:
            raise TensilError("--input takes NAME=FILE.npy, got %r" % pair)
        inputs[name] = _load_npy(path)
    return inputs


def _cmd_emulate(args: argparse.Namespace) -> int:
    from . import emulator
    from .tmodel import load_tmodel

    out_dir = pathlib.Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.program.endswith(".tmodel"):
        model = load_tmodel(args.program)
        outputs, report = emulator.run_model(model, _parse_inputs(args.input),
                                             saturate=not args.driver_rounding)
        for name, values in outputs.items():
            if out_dir:
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                np.save(out_dir / (safe + ".npy"), values)
        result: Dict[str, Any] = {"outputs": {name: values[:16].tolist() for name, values in outputs.items()}}
    else:
        if not args.arch:
            raise TensilError("emulating a .tprog needs -a/--arch")
        arch = load_tarch(args.arch)
        program = decode_program(_read_bytes(args.program), arch, strict=not args.as_rtl)
        n = arch.array_size
        dram0 = _load_npy(args.dram0) if args.dram0 else np.zeros(
            (extent(program, "dram0"), n), np.int16)
        dram1 = _load_npy(args.dram1) if args.dram1 else np.zeros(
            (extent(program, "dram1"), n), np.int16)
        out0, out1, report = emulator.run(program, dram0, dram1, arch)
        if out_dir:
            np.save(out_dir / "dram0.npy", out0)
            np.save(out_dir / "dram1.npy", out1)
            for name, memory in (("local", report.local), ("accumulators", report.accumulators)):
                if memory is not None:   # set by every run
                    np.save(out_dir / (name + ".npy"), memory)
        result = {}
    result.update(instructions=report.instructions, macs=report.macs, cycles=report.cycles,
                  seconds=round(report.seconds, 6), counts=report.counts,
                  saturated_inputs=report.saturated_inputs, hazards=report.hazards)
    text = json.dumps(result, indent=2)
    if out_dir:
        (out_dir / "report.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _cmd_compile_elsewhere(args: argparse.Namespace) -> int:
    raise TensilError("the compiler is a workstation tool, not on the board image: on a workstation with the "
                      "project installed, `python -m tensil_tools compile MODEL.onnx --arch ARCH.tarch` "
                      "(or the `tensil` script), then deploy the .tmodel/.tprog/.tdata")


def build_parser(prog: str = "python -m tensil", description: Optional[str] = __doc__,
                 extend: Optional[Callable[[Any], None]] = None) -> argparse.ArgumentParser:
    """The command line; `extend(subparsers)` adds commands (the workstation's)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("arch", help="validate a .tarch and print its summary")
    p.add_argument("tarch", help="the .tarch file")
    p.add_argument("--json", action="store_true", help="print the normalised .tarch instead")
    p.set_defaults(run=_cmd_arch)

    p = sub.add_parser("asm", help="assemble .tasm text into a .tprog")
    p.add_argument("tasm", help="the .tasm assembly text")
    p.add_argument("-a", "--arch", required=True, help=".tarch file")
    p.add_argument("-o", "--output", help="output .tprog (default: beside the input)")
    p.set_defaults(run=_cmd_asm)

    p = sub.add_parser("disasm", help="disassemble a .tprog into .tasm text")
    p.add_argument("tprog", help="the .tprog program")
    p.add_argument("-a", "--arch", required=True, help=".tarch file")
    p.add_argument("-o", "--output", help="output .tasm (default: stdout)")
    p.add_argument("--offsets", action="store_true", help="comment each line with its offset")
    p.add_argument("--as-rtl", action="store_true",
                   help="read every word as the RTL's decoder does (default: refuse words whose "
                        "meaning on the RTL differs from their face value)")
    p.set_defaults(run=_cmd_disasm)

    p = sub.add_parser("estimate", help="cycle estimate of a .tprog per instruction kind")
    p.add_argument("tprog", help="the .tprog program")
    p.add_argument("-a", "--arch", required=True, help=".tarch file")
    p.add_argument("--memory", action="store_true",
                   help="the model calibrated on the RTL: DRAM traffic in AXI requests and beats, "
                        "the array's fill and drain")
    p.add_argument("--read-latency", type=int, default=MemoryModel.read_latency,
                   help="DRAM read latency in cycles (default %(default)s, the co-simulation's)")
    p.add_argument("--write-latency", type=int, default=MemoryModel.write_latency,
                   help="DRAM write latency in cycles (default %(default)s)")
    p.add_argument("--as-rtl", action="store_true",
                   help="read every word as the RTL's decoder does (default: refuse words whose "
                        "meaning on the RTL differs from their face value)")
    p.set_defaults(run=_cmd_estimate)

    p = sub.add_parser("emulate", help="run a .tmodel (float inputs) or a .tprog (raw DRAMs)")
    p.add_argument("program", help=".tmodel or .tprog")
    p.add_argument("-a", "--arch", help=".tarch file (for a .tprog)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="a model input by its .tmodel name (float array laid out as vectors; an "
                        "image the host packs, <input>/columns(kw=K,left=L), as "
                        "tensil.layout.input_vectors lays it out); repeatable")
    p.add_argument("--driver-rounding", action="store_true",
                   help="convert inputs exactly like Tensil's PYNQ driver (wrap, no saturation)")
    p.add_argument("--dram0", help="raw DRAM0 .npy (vectors, array_size) for a .tprog")
    p.add_argument("--dram1", help="raw DRAM1 .npy for a .tprog")
    p.add_argument("--out-dir", help="write outputs (.npy) and report.json here")
    p.add_argument("--as-rtl", action="store_true",
                   help="read every word as the RTL's decoder does (default: refuse words whose "
                        "meaning on the RTL differs from their face value)")
    p.set_defaults(run=_cmd_emulate)

    if extend is not None:
        extend(sub)
    else:  # the board's command line: say where the compiler is
        p = sub.add_parser("compile", help="not here: a workstation command (python -m tensil_tools compile)",
                           add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER, help="the arguments compile takes on a workstation")
        p.set_defaults(run=_cmd_compile_elsewhere)
    return parser


def main(argv: Optional[List[str]] = None, parser: Optional[argparse.ArgumentParser] = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
    try:
        return args.run(args)
    except (TensilError, ValueError, OSError) as exc:
        print("tensil: error: %s" % exc, file=sys.stderr)
        return 1
