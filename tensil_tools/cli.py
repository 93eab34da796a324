"""`python -m tensil_tools` (the `tensil` script): the board's `python -m tensil` commands, plus

    python -m tensil_tools compile model.onnx --arch tensil_arch/pynqz1_perf.tarch --out models/

The RTL co-simulation has its own command line: `python -m tensil_tools.cosim --help`.
"""

import argparse
from typing import Any, List, Optional

from tensil import cli as board_cli
from tensil.estimate import MemoryModel

__all__ = ["main"]


def _cmd_compile(args: argparse.Namespace) -> int:
    from .compiler import compile_model

    result = compile_model(args.model, args.arch, args.out, args.name, args.tasm, args.graph,
                           args.strategy, not args.no_pack, not args.tensil_input, args.clock_mhz,
                           keep_weights=not (args.no_keep_weights or args.tensil_input))
    if not args.quiet:
        print(result.summary, end="")
    for kind, path in sorted(result.files.items()):
        print("%s: %s" % (kind, path))
    return 0


def _add_compile(sub: Any) -> None:
    p = sub.add_parser("compile", help="compile an ONNX model (opset 9-10) into .tmodel/.tprog/.tdata")
    p.add_argument("model", help="the .onnx file")
    p.add_argument("-a", "--arch", required=True, help=".tarch file")
    p.add_argument("-o", "--out", default=".", help="output folder (default: .)")
    p.add_argument("--name", help="output name (default: Tensil's <model>_onnx_<arch>)")
    p.add_argument("--tasm", action="store_true", help="also write the .tasm listing")
    p.add_argument("--graph", action="store_true", help="also write the layer graph (.dot)")
    p.add_argument("--strategy", choices=("on-chip", "dram0"), default="on-chip",
                   help="on-chip: activations stay in local memory when they fit (default); "
                        "dram0: every activation back to DRAM0, as Tensil's compiler does")
    p.add_argument("--no-pack", action="store_true",
                   help="do not pack the kernel columns of narrow inputs into the array's lanes (by "
                        "default they are where the cycle model says it is faster)")
    p.add_argument("--tensil-input", action="store_true",
                   help="keep the input in Tensil's NHWC layout, for Tensil's own driver (by default "
                        "a narrow image's packing is left to the host, which our driver does: the "
                        ".tmodel input is then named <input>/columns(kw=K,left=L), or "
                        "<input>/columns(kw=K,left=L,step=2) where two pixels share a vector); "
                        "implies --no-keep-weights")
    p.add_argument("--no-keep-weights", action="store_true",
                   help="read every weight from DRAM1 each frame (by default the blocks of the last "
                        "layers fill the local memory the activations leave free, read by the "
                        "program's first instruction, which our driver runs once when it starts; any "
                        "other driver runs it each frame and gets the same outputs, slower)")
    p.add_argument("--clock-mhz", type=_clock_mhz, default=50.0, metavar="MHZ",
                   help="the TCU clock of the bitstream the program will run on (default: 50): the "
                        "DRAM's latency in its cycles prices the compiler's choices")
    p.add_argument("-q", "--quiet", action="store_true", help="no compile summary")
    p.set_defaults(run=_cmd_compile)


def _clock_mhz(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    try:
        MemoryModel.at_clock(value)   # the one check of a clock the compiler can price
    except ValueError:
        raise argparse.ArgumentTypeError("%g MHz is outside 1..1000" % value) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    return board_cli.build_parser("python -m tensil_tools", board_cli.__doc__ + "\n" + __doc__, _add_compile)


def main(argv: Optional[List[str]] = None) -> int:
    return board_cli.main(argv, build_parser())
