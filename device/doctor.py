"""python -m device doctor: is this board (or laptop) ready to run the demonstrator?

Each check prints one line, ok / FAIL / warn / skip, and what to do when it fails:

    python       the interpreter (the board image needs 3.8+)
    pynq         pynq and its version (needed for the FPGA, HDMI and the buttons)
    bitstream    the .bit and its .hwh (and the build's JSON): a Tensil TCU, its clock, its DMA
    tmodel       the compiled model for that bitstream, its architecture checked against it
    cma          contiguous memory the Tensil driver needs for that model, against CmaFree
    backbone     the backend (--backend, default auto) loads the model and runs one frame
    camera       the camera opens and delivers frames at the requested resolution
    hdmi         HDMI out starts at the output resolution and shows a frame
    buttons      the overlay's btns_gpio (and switches) read
    broker       the MQTT broker answers with the configured user and password

A check is required when asked for (its option given; the bitstream, tmodel and cma ones with
--bitstream or --backend tensil; python and backbone always); a required check that fails
makes the exit status 1. Others report what they find, or skip. --json prints the checks as
JSON: {"ok": bool, "checks": [{"name", "status", "detail", "fix", "required"}]}.

    python -m device doctor                                   # a laptop: python, backbone
    python -m device doctor --bitstream bitstreams/pynqz1_perf_125mhz/pynqz1_perf_125mhz.bit \\
        --backend tensil --camera 0 --hdmi --buttons --broker mqtt://client-003@broker.lab:1883 \\
        --password-file /home/xilinx/.mqtt-password
"""

import argparse
import dataclasses
import importlib
import json
import logging
import os
import pathlib
import platform
import socket
import sys
import time
import warnings
from typing import Any, Callable, List, Literal, Optional, Tuple

import numpy as np

__all__ = ["Check", "DEFAULT_MODEL", "main", "run_checks"]

DEFAULT_MODEL = pathlib.Path(__file__).resolve().parents[1] / "models" / "resnet9_f16_strided_32.onnx"
MEMINFO = "/proc/meminfo"
_MARK = {"ok": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}


CheckStatus = Literal["ok", "fail", "warn", "skip"]


@dataclasses.dataclass
class Check:
    name: str
    status: CheckStatus
    detail: str
    fix: str = ""
    required: bool = False

    @property
    def failed(self) -> bool:
        return self.status == "fail" and self.required


def _failure(name: str, required: bool, detail: str, fix: str) -> Check:
    return Check(name, "fail" if required else "warn", detail, fix, required)


class _Context:
    """What the checks find and later checks use (the design, the overlay, the model)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pynq: Any = None
        self.design: Any = None
        self.overlay: Any = None
        self.tmodel: Any = None
        self.tensil = bool(args.bitstream) or args.backend == "tensil"


def _check_python(ctx: _Context) -> Check:
    version = platform.python_version()
    ok = sys.version_info >= (3, 8)
    return Check("python", "ok" if ok else "fail", "Python %s (%s); the board image needs 3.8 or "
                 "later" % (version, platform.machine()),
                 "" if ok else "use the PYNQ image's Python 3.8 (/usr/local/share/pynq-venv)", True)


def _check_opencv(ctx: _Context) -> Check:
    from .errors import DeviceError
    from .opencv import INSTALL, load

    try:
        module = load()
    except DeviceError as exc:
        return Check("opencv", "fail", str(exc).split(":")[0], INSTALL, True)
    return Check("opencv", "ok", "OpenCV %s (frames, resizing, the MJPEG view)" % module.__version__,
                 required=True)


def _check_pynq(ctx: _Context) -> Check:
    args = ctx.args
    # a laptop can check a bitstream against a model (files only); the FPGA needs pynq
    required = bool(args.hdmi or args.buttons or args.backend == "tensil")
    try:
        ctx.pynq = importlib.import_module("pynq")
    except ImportError as exc:
        if not required:
            return Check("pynq", "skip", "not installed (%s): not a PYNQ board; the FPGA, HDMI "
                         "and buttons are unavailable here" % exc)
        return Check("pynq", "fail", "not installed (%s)" % exc, "run on the PYNQ image (pynq is "
                     "preinstalled; run as root: sudo -E), or drop the board options", True)
    loaded = getattr(getattr(ctx.pynq, "PL", None), "bitfile_name", None)
    return Check("pynq", "ok", "pynq %s; the FPGA holds %s" % (
        getattr(ctx.pynq, "__version__", "(version unknown)"), loaded or "no bitstream"),
        required=required)


def _check_bitstream(ctx: _Context) -> Check:
    from tensil.errors import TensilError
    from tensil.hwh import read_design

    args = ctx.args
    path = args.bitstream
    if not path and ctx.pynq is not None:
        path = getattr(getattr(ctx.pynq, "PL", None), "bitfile_name", None)
    if not path:
        return Check("bitstream", "skip", "no --bitstream given and none loaded")
    required = ctx.tensil
    bit = pathlib.Path(path)
    if args.bitstream and not bit.is_file():
        return _failure("bitstream", required, "%s: no such file" % bit, "copy the overlay's .bit, "
                        ".hwh and .json (make bitstream writes them; make deploy copies them)")
    try:
        ctx.design = read_design(bit)
    except TensilError as exc:
        return _failure("bitstream", required, str(exc), "use the Tensil overlay's .bit with the "
                        ".hwh Vivado wrote beside it (bitstreams/<name>/)")
    d = ctx.design
    parts = ["TCU %s (%s) at %s" % (d.tcu_instance, d.tcu_module, "%.4g MHz (%s)" % (
        d.clock_mhz, d.clock_source) if d.clock_mhz else "an unknown clock"),
             "instructions from %s, %d-bit" % (d.dma_instance, d.instruction_bits)]
    parts.append("build JSON: %s%s" % (d.tarch_file or "a .tarch",
                                       "".join(", " + n for n in d.json_notes))
                 if d.json_path else "no build JSON (the array size is checked by the driver's "
                 "self-test on the TCU)")
    problems = d.stream_problems()
    if problems:
        return _failure("bitstream", required, "%s: %s" % (bit.name, "; ".join(problems)),
                        "rebuild the overlay with the DMA's stream on the TCU's instruction port")
    return Check("bitstream", "ok", "%s: %s" % (bit.name, "; ".join(parts)), required=required)


def _card(ctx: _Context) -> Any:
    from .model_card import load_card

    return load_card(ctx.args.model)


def _check_tmodel(ctx: _Context) -> Check:
    from tensil.errors import ArchMismatch, TensilError
    from tensil.tmodel import load_tmodel

    from .backends import find_tmodel
    from .errors import DeviceError

    required = ctx.tensil
    if ctx.design is None:
        if required:
            return _failure("tmodel", True, "no Tensil bitstream read (see bitstream)",
                            "fix the bitstream first")
        return Check("tmodel", "skip", "no Tensil bitstream to match a compiled model to")
    try:
        path = find_tmodel(_card(ctx), ctx.args.tmodel, ctx.design.arch_stem)
        ctx.tmodel = load_tmodel(path)
        ctx.design.check_model(ctx.tmodel)
    except ArchMismatch as exc:
        return _failure("tmodel", required, str(exc), "compile the model for the bitstream's "
                        ".tarch (%s), or load the bitstream built for the model's"
                        % (ctx.design.tarch_file or ctx.design.arch_stem))
    except (TensilError, DeviceError) as exc:
        return _failure("tmodel", required, str(exc), "compile the ONNX model for the bitstream's "
                        ".tarch and put <model>_<arch>.tmodel/.tprog/.tdata beside it, or pass "
                        "--tmodel")
    note = ctx.design.name_note(ctx.tmodel)
    return Check("tmodel", "ok", "%s fits %s (array %dx%d %s)%s" % (
        path.name, ctx.design.tcu_module, ctx.tmodel.arch.array_size, ctx.tmodel.arch.array_size,
        ctx.tmodel.arch.data_type, "; " + note if note else ""), required=required)


def _check_cma(ctx: _Context) -> Check:
    from tensil.driver import cma_free_bytes, plan_memory
    from tensil.isa import decode_program

    required = ctx.tensil and ctx.pynq is not None    # a laptop checking files has no CMA
    if ctx.tmodel is None:
        return Check("cma", "skip", "no compiled model to size the driver's memory for")
    plan = plan_memory(ctx.tmodel, decode_program(ctx.tmodel.prog_path.read_bytes(),
                                                  ctx.tmodel.arch))
    need = plan.cma_bytes
    free = cma_free_bytes(MEMINFO)
    what = "the Tensil driver needs %.2f MiB of contiguous memory for %s (Tensil's own driver " \
           "would take %.0f MiB)" % (need / 2 ** 20, ctx.tmodel.name,
                                     _tensil_driver_bytes(ctx.tmodel.arch) / 2 ** 20)
    if free is None and not required:
        return Check("cma", "skip", what + "; no CmaFree here (not a PYNQ kernel)")
    if free is None:
        return _failure("cma", True, what + "; this kernel reports no CmaFree in %s" % MEMINFO,
                        "boot the PYNQ image (its kernel has CMA), or give Linux CMA with "
                        "cma=128M on the kernel command line")
    if free < need:
        return _failure("cma", required, what + "; CmaFree is %.2f MiB" % (free / 2 ** 20),
                        "stop what holds pynq buffers (another demo, a notebook kernel), or raise "
                        "cma= on the kernel command line")
    return Check("cma", "ok", what + "; CmaFree is %.2f MiB" % (free / 2 ** 20), required=required)


def _tensil_driver_bytes(arch: Any) -> int:
    """What tcu_pynq allocates (facts §6): both DRAMs whole, 64 KiB, 3 DMA buffers of 8 MiB."""
    words = (arch.dram0_depth + arch.dram1_depth) * arch.array_size // 4
    return (words + 65536 // 8 + 3 * 1048576) * 8


def _overlay(ctx: _Context) -> Any:
    """The overlay the board checks use: --bitstream (loaded unless it already is), else the
    bitstream the FPGA holds."""
    if ctx.overlay is None and ctx.pynq is not None:
        loaded = getattr(getattr(ctx.pynq, "PL", None), "bitfile_name", None)
        path = ctx.args.bitstream or loaded
        if path:
            same = loaded is not None and os.path.abspath(str(loaded)) == os.path.abspath(str(path))
            ctx.overlay = ctx.pynq.Overlay(str(path), download=not same)
    return ctx.overlay


def _check_backbone(ctx: _Context) -> Check:
    from .backends import create_backbone
    from .errors import DeviceError

    args = ctx.args
    options: dict = {}
    if args.backend in ("tensil", "auto"):
        options = {"tmodel": args.tmodel, "overlay": _overlay(ctx) if ctx.tensil else None}
    elif args.backend == "tensil-emu":
        options = {"tmodel": args.tmodel}
    try:
        backbone = create_backbone(args.backend, args.model, **options)
        try:
            x = np.zeros((1,) + backbone.input_shape[1:], np.float32)
            started = time.perf_counter()
            features = backbone.features(x)
            ms = (time.perf_counter() - started) * 1e3
        finally:
            backbone.close()
    except (DeviceError, ValueError, RuntimeError) as exc:
        return Check("backbone", "fail", "%s on %s: %s" % (args.backend, args.model, exc),
                     "see the message; --backend onnxruntime or opencv runs on the CPU", True)
    chosen = getattr(backbone, "selection", None) or backbone.name
    return Check("backbone", "ok", "%s: one frame in %.1f ms, %d features" % (
        chosen, ms, features.shape[1]), required=True)


def _check_camera(ctx: _Context) -> Check:
    from .camera import open_camera
    from .errors import DeviceError

    args = ctx.args
    if args.camera is None:
        return Check("camera", "skip", "pass --camera N to check a camera")
    wanted = tuple(args.camera_resolution)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            camera = open_camera(args.camera, wanted).open()
        try:
            frame = camera.read()
        finally:
            camera.close()
    except (DeviceError, ValueError, OSError) as exc:
        return Check("camera", "fail", str(exc), "plug the camera in (ls /dev/video*), pass its "
                     "number with --camera", True)
    if frame is None:
        return Check("camera", "fail", "%s delivered no frame" % args.camera,
                     "check the cable; try another USB port", True)
    height, width = frame.image.shape[:2]
    if (width, height) != wanted:
        return Check("camera", "fail", "%s delivers %dx%d frames, not the requested %dx%d" % (
            args.camera, width, height, wanted[0], wanted[1]), "ask for a resolution the camera "
            "has (v4l2-ctl --list-formats-ext) with --camera-resolution", True)
    return Check("camera", "ok", "%s opens and delivers %dx%d frames" % (args.camera, width,
                                                                        height), required=True)


def _board_overlay(ctx: _Context, name: str) -> Tuple[Any, Optional[Check]]:
    if ctx.pynq is None:
        return None, Check(name, "fail", "pynq is not installed", "run on the PYNQ image", True)
    try:
        overlay = _overlay(ctx)
    except (OSError, RuntimeError, ValueError) as exc:
        return None, Check(name, "fail", "the overlay does not load: %s" % exc,
                           "pass the overlay's .bit (with its .hwh) as --bitstream", True)
    if overlay is None:
        return None, Check(name, "fail", "no overlay: none is loaded and no --bitstream given",
                           "pass the Tensil overlay (or base.bit) as --bitstream", True)
    return overlay, None


def _check_hdmi(ctx: _Context) -> Check:
    from .display import HdmiDisplay
    from .errors import DeviceError

    if not ctx.args.hdmi:
        return Check("hdmi", "skip", "pass --hdmi to check HDMI out")
    overlay, problem = _board_overlay(ctx, "hdmi")
    if problem:
        return problem
    width, height = ctx.args.output_resolution
    try:
        display = HdmiDisplay.from_overlay(overlay, (width, height))
        try:
            display.show(np.zeros((height, width, 3), np.uint8))
        finally:
            display.close()
    except (DeviceError, ValueError, RuntimeError) as exc:
        return Check("hdmi", "fail", str(exc), "plug the monitor in before the overlay loads; use "
                     "a resolution HDMI out has (--output-resolution 800x600)", True)
    return Check("hdmi", "ok", "HDMI out started at %dx%d and showed a frame" % (width, height),
                 required=True)


def _check_buttons(ctx: _Context) -> Check:
    from .errors import DeviceError
    from .inputs import ButtonInput

    if not ctx.args.buttons:
        return Check("buttons", "skip", "pass --buttons to check the buttons")
    overlay, problem = _board_overlay(ctx, "buttons")
    if problem:
        return problem
    try:
        buttons = ButtonInput.from_overlay(overlay)
    except (DeviceError, AttributeError, KeyError, ValueError, RuntimeError) as exc:
        return Check("buttons", "fail", "no buttons: %s" % exc, "load an overlay with btns_gpio "
                     "(the Tensil overlay, or pynq's base.bit)", True)
    return Check("buttons", "ok", "btns_gpio reads 0b%s%s" % (
        format(int(buttons.buttons.read()), "04b"),
        ", switches_gpio too" if buttons.switches is not None else ""), required=True)


class _LinkLog(logging.Handler):
    """What fedlink's link logged while connecting (why a broker refused or was not reached)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _check_broker(ctx: _Context) -> Check:
    args = ctx.args
    if not args.broker:
        return Check("broker", "skip", "pass --broker URL to check the MQTT broker")
    fix = ("check the broker's host and port and that it runs (systemctl status mosquitto), the "
           "user in --broker and its password (--password-file, $FL_MQTT_PASSWORD), and --ca-file "
           "for mqtts://")
    try:
        from fedcore.errors import ConfigError
        from fedlink.cli import link_from_args
    except ImportError as exc:
        return Check("broker", "fail", "cannot check: %s" % exc, "pip install 'paho-mqtt>=2.0'",
                     True)
    log = _LinkLog()
    logger = logging.getLogger("fedlink.link")
    logger.addHandler(log)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client_id = "doctor-%s-%d" % (socket.gethostname(), os.getpid())
        link = link_from_args(args, client_id, [], keepalive=10).start()
        try:
            connected = link.wait_connected(args.timeout)
        finally:
            link.stop()
    except ConfigError as exc:
        return Check("broker", "fail", str(exc), fix, True)
    finally:
        logger.removeHandler(log)
        logger.setLevel(level)
    if not connected:
        telling = [m for m in log.messages if "refused" in m or "reachable" in m or "TLS" in m]
        why = (telling or log.messages or ["no answer"])[-1]
        return Check("broker", "fail", "no connection to %s within %.3g s: %s" % (
            args.broker, args.timeout, why), fix, True)
    return Check("broker", "ok", "connected to %s as %s" % (
        args.broker.split("@")[-1], link.address.username or "an anonymous user"), required=True)


CHECKS: List[Callable[[_Context], Check]] = [
    _check_python, _check_opencv, _check_pynq, _check_bitstream, _check_tmodel, _check_cma, _check_backbone,
    _check_camera, _check_hdmi, _check_buttons, _check_broker]


def run_checks(args: argparse.Namespace) -> List[Check]:
    ctx = _Context(args)
    out = []
    for check in CHECKS:
        try:
            out.append(check(ctx))
        except Exception as exc:  # noqa: BLE001 (a check's own bug must not hide the others)
            name = check.__name__.replace("_check_", "")
            out.append(Check(name, "fail", "the check itself failed: %s: %s" % (
                type(exc).__name__, exc), "report this with the output of --json", True))
    return out


def _parser() -> argparse.ArgumentParser:
    from .camera import parse_resolution

    p = argparse.ArgumentParser(prog="python -m device doctor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="ONNX model or its card")
    p.add_argument("--backend", default="auto", help="backend to check (default auto)")
    p.add_argument("--tmodel", help="compiled model (default beside the model, named for the "
                                    "bitstream's architecture)")
    p.add_argument("--bitstream", help="the Tensil overlay's .bit (default: what the FPGA holds)")
    p.add_argument("--camera", help="camera to check: a number, /dev/videoN, 'synthetic'")
    p.add_argument("--camera-resolution", default="160x120", type=parse_resolution, help="WxH the camera is asked for (default %(default)s)")
    p.add_argument("--hdmi", action="store_true", help="check HDMI out")
    p.add_argument("--output-resolution", default="800x600", type=parse_resolution, help="WxH of the HDMI check's frame (default %(default)s)")
    p.add_argument("--buttons", action="store_true", help="check the buttons")
    p.add_argument("--broker", help="MQTT broker: mqtt://user@host:port (mqtts:// for TLS)")
    p.add_argument("--password-file", default="", help="the MQTT password on its first line "
                                                       "(else $FL_MQTT_PASSWORD)")
    p.add_argument("--ca-file", help="CA certificate for mqtts://")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    checks = run_checks(args)
    ok = not any(c.failed for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [dataclasses.asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print("%-5s %-10s %s" % (_MARK[c.status], c.name, c.detail))
            if c.status in ("fail", "warn") and c.fix:
                print("%-16s -> %s" % ("", c.fix))
        print("ready" if ok else "not ready: %s" % ", ".join(c.name for c in checks if c.failed))
    return 0 if ok else 1
