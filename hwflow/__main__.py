"""python -m hwflow <command>: from a checkpoint to a flashed board (see docs/hardware.md, "From a checkpoint
to a board"). Each command is also a make target: rtl, rtl-report, bitstream, sdcard, flash,
deploy. Errors print one line naming what is missing or wrong and exit with status 2."""

import argparse
import json
import os
import pathlib
import sys
from typing import List, Optional

from fedcore.console import add_verbosity, show_logs

from .errors import HwflowError, TimingFailed

__all__ = ["main", "build_parser"]

_EXAMPLES = """examples:
  python -m hwflow rtl --arch tensil_arch/pynqz1_perf.tarch          # Tensil's docker image
  python -m hwflow rtl-report --json build/rtl-report.json            # Yosys on $TENSIL_RTL or ../shared
  python -m hwflow bitstream --arch tensil_arch/pynqz1_perf.tarch --clock-mhz 125 --pynq-dir ~/PYNQ
  python -m hwflow sdcard --image pynq_z1_v3.1.img --out board.img --board-id pynq-01 --wheels wheels/
  python -m hwflow flash --image board.img --device /dev/sdX
  python -m hwflow deploy --board xilinx@pynq-01
"""


def _cmd_rtl(args: argparse.Namespace) -> int:
    from .project import load_tarch
    from .rtl import check_rtl_matches, find_rtl, generate_rtl

    tarch = pathlib.Path(args.arch)
    arch = load_tarch(tarch)
    if args.rtl:  # TENSIL_RTL: an RTL made elsewhere; only check that it fits the .tarch
        rtl_dir = pathlib.Path(args.rtl)
    else:
        from .project import REPO_ROOT

        rtl_dir = pathlib.Path(args.out) if args.out else (
            REPO_ROOT / "build" / "rtl" / tarch.name.split(".")[0])
        generate_rtl(tarch, rtl_dir)
    rtl = find_rtl(rtl_dir)
    check_rtl_matches(rtl, arch, str(tarch))
    print("RTL for %s: %s (top %s, memories %s, sha256 %s)" % (
        tarch, rtl.directory, rtl.top_module, ", ".join("%dx%d" % m for m in rtl.memories), rtl.sha256))
    return 0


def _cmd_rtl_report(args: argparse.Namespace) -> int:
    from .project import REPO_ROOT, load_tarch
    from .resources import format_table, synthesize
    from .rtl import check_rtl_matches, find_rtl

    rtl = find_rtl(args.rtl)
    if args.arch:
        check_rtl_matches(rtl, load_tarch(args.arch), args.arch)
    work = pathlib.Path(args.work_dir) if args.work_dir else REPO_ROOT / "build" / "rtl-report" / rtl.top_module
    print("hwflow: yosys synth_xilinx -family xc7 on %s (%s; minutes for a 12x12 TCU)"
          % (rtl.top_module, rtl.directory), flush=True)
    util = synthesize(rtl, work, flatten=args.flatten)
    print(format_table(util, "%s (%s), Yosys estimate in %.0f s" % (rtl.top_module, rtl.directory, util.seconds)))
    report = util.to_json()
    report.update({"rtl": rtl.describe(), "flatten": args.flatten})
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print("wrote %s" % args.json)
    return 0 if util.verdict() != "does not fit" else 1


def _cmd_bitstream(args: argparse.Namespace) -> int:
    from .bitstream import build, fclk_options, plan_bitstream, prepare
    from .project import REPO_ROOT

    rtl_dir = args.rtl or REPO_ROOT / "build" / "rtl" / pathlib.Path(args.arch).name.split(".")[0]
    plan = plan_bitstream(args.arch, rtl_dir, args.clock_mhz, args.pynq_dir, name=args.name,
                          build_root=args.build_dir and pathlib.Path(args.build_dir),
                          out_root=args.bitstreams_dir and pathlib.Path(args.bitstreams_dir),
                          jobs=args.jobs, allow_negative_slack=args.allow_negative_slack)
    actual, dividers = fclk_options(plan.clock_mhz)
    if abs(actual - plan.clock_mhz) > 1e-3 * plan.clock_mhz:
        print("warning: the IO PLL (1000 MHz) divided by %d x %d gives %.3f MHz, not %g MHz: "
              "Vivado will use the nearest FCLK" % (dividers[0], dividers[1], actual, plan.clock_mhz),
              file=sys.stderr)
    if args.generate_only:
        build_tcl = prepare(plan)
        print("wrote %s (run: vivado -mode batch -source %s)" % (build_tcl.parent, build_tcl))
        return 0
    try:
        meta = build(plan)
    except TimingFailed as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 3
    timing = meta["timing"]
    if not timing["met"]:
        print("WARNING: TIMING NOT MET (WNS %.3f ns): shipped anyway because "
              "--allow-negative-slack was given; recorded in %s.json" % (timing["wns_ns"], plan.name),
              file=sys.stderr)
    print("built %s/%s.bit, .hwh and .json (%.3f MHz, WNS %.3f ns)" % (
        plan.out_dir, plan.name, meta["clock_mhz"]["actual"], timing["wns_ns"]))
    return 0


def _cmd_sdcard(args: argparse.Namespace) -> int:
    from .sdcard import build_sdcard

    build_sdcard(args)
    return 0


def _cmd_flash(args: argparse.Namespace) -> int:
    from .flash import flash

    flash(args.image, args.device, assume_yes=args.yes, force=args.force)
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy

    return deploy(args)


def _payload_options(parser: argparse.ArgumentParser) -> None:
    """What sdcard and deploy ship; one set of options for both."""
    parser.add_argument("--config", default=None,
                        help="board TOML (default configs/board/pynq.toml)")
    parser.add_argument("--board-id", default=None, help="this board's id (default: the config's)")
    parser.add_argument("--hostname", default=None, help="default: the board id")
    parser.add_argument("--fl", action="store_true", help="also start the federated client at boot")
    parser.add_argument("--wheels", default=os.environ.get("WHEELS") or None,
                        help="folder of wheels for what the image lacks (default: pip download "
                             "into build/wheels when online)")
    parser.add_argument("--no-wheels", action="store_true", help="ship no wheels")
    parser.add_argument("--require", action="append", default=None, metavar="REQ",
                        help="a wheel requirement (repeatable; default pyproject "
                             "[tool.board-image] wheels)")
    parser.add_argument("--strict", action="store_true",
                        help="a board package missing from this checkout is an error, not a warning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hwflow", description=__doc__,
                                     epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    env_rtl = os.environ.get("TENSIL_RTL") or None

    p = sub.add_parser("rtl", help="Tensil's RTL for a .tarch (docker image tensilai/tensil)")
    p.add_argument("--arch", required=True, help=".tarch file, e.g. tensil_arch/pynqz1_perf.tarch")
    p.add_argument("--out", default=None, help="output folder (default build/rtl/<arch>/)")
    p.add_argument("--rtl", default=env_rtl,
                   help="an RTL made elsewhere (TENSIL_RTL): check it against --arch, no docker")
    p.set_defaults(run=_cmd_rtl)

    from .project import default_rtl_dir

    p = sub.add_parser("rtl-report", help="Yosys resource estimate against the XC7Z020")
    p.add_argument("--rtl", default=str(default_rtl_dir()),
                   help="RTL folder (default $TENSIL_RTL, else ../shared/rtl/tensil_custom_perf)")
    p.add_argument("--arch", default=None, help="also check the RTL against this .tarch")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--work-dir", default=None, help="Yosys script, log and stat (default build/rtl-report/)")
    p.add_argument("--flatten", action="store_true",
                   help="synth_xilinx -flatten (optimises across modules; several times slower)")
    p.set_defaults(run=_cmd_rtl_report)

    p = sub.add_parser("bitstream", help="the PYNQ-Z1 overlay with the TCU (Vivado batch)")
    p.add_argument("--arch", required=True, help=".tarch of the TCU")
    p.add_argument("--clock-mhz", type=float, default=125.0, help="TCU clock (FCLK3), default 125")
    p.add_argument("--pynq-dir", default=os.environ.get("PYNQ_DIR") or None,
                   help="PYNQ repository checkout (PYNQ_DIR) at your image's release")
    p.add_argument("--rtl", default=env_rtl, help="RTL folder (TENSIL_RTL; default build/rtl/<arch>/)")
    p.add_argument("--name", default=None, help="overlay name (default <arch>_<clock>mhz)")
    p.add_argument("--jobs", type=int, default=2, help="Vivado jobs")
    p.add_argument("--bitstreams-dir", default=None,
                   help="where <name>/<name>.bit, .hwh, .json land (default bitstreams/)")
    p.add_argument("--build-dir", default=None,
                   help="Vivado project, TCL and reports (default build/bitstream/)")
    p.add_argument("--allow-negative-slack", action="store_true",
                   help="write the bitstream even when timing fails (recorded in the JSON)")
    p.add_argument("--generate-only", action="store_true", help="write the TCL, do not run Vivado")
    p.set_defaults(run=_cmd_bitstream)

    p = sub.add_parser("sdcard", help="our stack written into a copy of a PYNQ-Z1 image (rootless)")
    p.add_argument("--image", required=True, help="official PYNQ-Z1 image (never modified): v2.7, v3.0.1 or "
                   "v3.1.1 from https://www.pynq.io/boards.html, unzipped")
    p.add_argument("--image-sha256", default="", metavar="HEX",
                   help="refuse the image unless its SHA-256 is this (IMAGE_SHA256=; AMD publishes none: pin "
                   "the one your lab downloaded)")
    p.add_argument("--out", required=True, help="the board's image to write")
    p.add_argument("--force", action="store_true",
                   help="write over an existing file that is not a board image this tool wrote (FORCE=1)")
    _payload_options(p)
    p.set_defaults(run=_cmd_sdcard)

    p = sub.add_parser("flash", help="write an image to an SD card, then read it back")
    p.add_argument("--image", required=True, help="the board image to write (make sdcard's OUT)")
    p.add_argument("--device", required=True, help="the SD card's whole-disk device, e.g. /dev/sdb")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (YES=1)")
    p.add_argument("--force", action="store_true",
                   help="a regular-file target that is not a board image this tool wrote may be overwritten (FORCE=1)")
    p.set_defaults(run=_cmd_flash)

    p = sub.add_parser("deploy", help="the payload over SSH to a running board, then its doctor")
    p.add_argument("--board", required=True, help="user@host of the board, e.g. xilinx@pynq-01")
    p.add_argument("--port", type=int, default=None, help="SSH port")
    p.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="an ssh -o option (repeatable), e.g. IdentityFile=~/.ssh/pynq")
    p.add_argument("--remote-root", default="/",
                   help="prefix of every path on the board (a test deploys into a temporary root)")
    p.add_argument("--transport", choices=("auto", "rsync", "tar"), default="auto",
                   help="rsync when both ends have it (auto), else a tar stream over ssh")
    p.add_argument("--restart-command", default=None,
                   help="run on the board after the copy (default: sudo {app}/bin/apply.sh)")
    p.add_argument("--doctor-command", default="python3 -m device doctor",
                   help="run on the board in {app} last, its output printed")
    _payload_options(p)
    p.set_defaults(run=_cmd_deploy)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    show_logs(args)
    try:
        return int(args.run(args))
    except HwflowError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
