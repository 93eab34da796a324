"""python -m demo_app: the few-shot camera demonstrator.

Examples:
  # laptop, USB camera, OpenCV window (keys: 1-4 register a class, i infer, r reset, p pause, q quit)
  python -m demo_app --camera 0
  # no camera/screen: replay labelled images, scripted buttons, annotated frames + summary
  python -m demo_app --replay tests/fixtures/demo --headless --out-dir runs/demo
  # whatever this machine has: live with a camera and a display, else the headless replay
  python -m demo_app --demo
  # PYNQ-Z1: HDMI out 800x600, board buttons; watch from another machine's browser on port 8080
  python -m demo_app --hdmi --buttons --camera 0 --camera-resolution 160x120
  python -m demo_app --headless --mjpeg-port 8080 --mjpeg-host 0.0.0.0 --camera 0 --script "wait*30,shot,infer"
Buttons: 0 shot of the current class, 1 next class and shot, 2 infer, 3 reset, 4 pause, 5 quit.
"""

import argparse
import json
import os
import pathlib
import sys
from typing import Any, List, Optional

from device.backends import create_backbone, list_backends
from device.camera import Camera, ImageFolderCamera, open_camera, parse_resolution
from device.display import (
    Display,
    HdmiDisplay,
    HeadlessDisplay,
    TeeDisplay,
    WindowDisplay,
    opencv_has_gui,
)
from device.errors import DeviceError
from device.inputs import ButtonInput, InputSource, KeyboardInput, ScriptInput
from device.memory import FewShotMemory
from fedcore.atomic import atomic_write
from fedcore.console import add_verbosity, show_logs

from .app import DemoApp
from .replay import build_replay_plan

__all__ = ["DEFAULT_MODEL", "DEFAULT_REPLAY", "build_parser", "main"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "resnet9_f16_strided_32.onnx"
DEFAULT_REPLAY = ROOT / "tests" / "fixtures" / "demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo_app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_verbosity(p)
    p.add_argument("--backend", default=None,
                   help="backbone backend: %s (default onnxruntime, with --demo auto: tensil with a "
                        "loaded Tensil overlay, else onnxruntime, else opencv)" % ", ".join(list_backends()))
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="ONNX model or its card (.json); default %(default)s")
    p.add_argument("--tmodel", help="Tensil .tmodel (tensil, tensil-emu; default beside the "
                                    "model: <model file name, . as _>_<arch stem>.tmodel, Tensil's naming)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the backbone")
    p.add_argument("--camera", default="0",
                   help="camera number, /dev/videoN, 'synthetic', an image folder or a video")
    p.add_argument("--camera-resolution", default="160x120", type=parse_resolution, help="WxH the camera is asked for (default %(default)s)")
    p.add_argument("--output-resolution", default="800x600", type=parse_resolution, help="WxH of the output frame (default %(default)s)")
    p.add_argument("--replay", metavar="FOLDER",
                   help="replay FOLDER/<class>/*.png with a generated button script")
    p.add_argument("--demo", action="store_true",
                   help="live if a camera and a display exist, else the headless replay of "
                        "the bundled novel-class images")
    p.add_argument("--hdmi", action="store_true", help="PYNQ HDMI out (needs pynq)")
    p.add_argument("--buttons", action="store_true", help="PYNQ buttons/switches (needs pynq)")
    p.add_argument("--overlay", default="base.bit",
                   help="PYNQ overlay for --hdmi/--buttons and the tensil backend (the Tensil "
                        "bitstream's .bit, its .hwh beside it)")
    p.add_argument("--headless", action="store_true", help="no window: files and/or MJPEG")
    p.add_argument("--out-dir", default="runs/demo", help="annotated frames + summary.json")
    p.add_argument("--save-every", type=int, default=0,
                   help="headless: save every Nth annotated frame as PNG (0: never)")
    p.add_argument("--video", help="headless: also write all annotated frames to this video (H.264 MP4 when "
                                   "OpenCV can, else VP8 WebM beside it, else MPEG-4 MP4)")
    p.add_argument("--fps", type=float, default=None,
                   help="frames a second of the video and, while a browser watches, of the MJPEG stream "
                        "(default 15; a camera sets its own rate unless this is given)")
    p.add_argument("--mjpeg-port", type=int, help="also stream MJPEG over HTTP on this port")
    p.add_argument("--mjpeg-host", default="127.0.0.1",
                   help="address the MJPEG server listens on (default loopback; 0.0.0.0 lets every "
                        "machine that reaches the board watch)")
    p.add_argument("--mjpeg-wait", type=float,
                   help="seconds to wait for a viewer before the first frame (default 30 for a "
                        "replay, so it does not end before the browser connects; 0 live)")
    p.add_argument("--script", help="scripted events, a file or a string: 'shot*5,next,infer'")
    p.add_argument("--classes", type=int, default=5, help="class slots (default 5)")
    p.add_argument("--shots", type=int, default=5, help="frames registered by one shot press")
    p.add_argument("--init-frames", type=int, default=10,
                   help="background frames for the base mean (0: the card's feature_mean)")
    p.add_argument("--queries", type=int, help="replay: held-out frames a class")
    p.add_argument("--temperature", type=float, default=0.1, help="softmax temperature of the class scores (default %(default)s)")
    p.add_argument("--smoothing", type=float, default=0.0,
                   help="moving average of probabilities over frames, in [0, 1)")
    p.add_argument("--classifier", choices=("ncm", "knn"), default="ncm", help="nearest class mean or k nearest shots (default %(default)s)")
    p.add_argument("--k", type=int, default=3, help="neighbours of the knn classifier")
    p.add_argument("--memory", help="few-shot memory file (.npz): loaded at start, saved on change")
    p.add_argument("--max-frames", type=int, help="stop after this many frames (default: the end of the camera or q)")
    p.add_argument("--summary", help="summary JSON (default OUT_DIR/summary.json)")
    return p


def _live_possible(args: argparse.Namespace) -> bool:
    has_camera = pathlib.Path("/dev/video0").exists()
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return has_camera and has_display and not args.headless and opencv_has_gui()


def _overlay(args: argparse.Namespace) -> Any:
    # auto without HDMI/buttons loads nothing: it looks at what the FPGA already holds
    if not (args.hdmi or args.buttons or args.backend == "tensil"):
        return None
    from device.board import require_pynq

    return require_pynq().Overlay(args.overlay)


def _display(args: argparse.Namespace, overlay: Any) -> Display:
    out = pathlib.Path(args.out_dir)
    wait = args.mjpeg_wait if args.mjpeg_wait is not None else (30.0 if args.replay else 0.0)
    # A replay runs as fast as it can: paced to --fps (default 15) while a browser watches; a camera
    # sets its own rate unless --fps is given.
    pace = args.fps or (15.0 if args.replay else None)
    stream = {"mjpeg_port": args.mjpeg_port, "mjpeg_host": args.mjpeg_host, "mjpeg_wait": wait,
              "fps": args.fps or 15.0, "pace": pace}
    if args.headless:
        return HeadlessDisplay(out / "frames" if args.save_every else None, args.save_every,
                               args.video, **stream)
    screen = (HdmiDisplay.from_overlay(overlay, tuple(args.output_resolution)) if args.hdmi
              else WindowDisplay())
    if args.mjpeg_port is None:
        return screen
    return TeeDisplay([screen, HeadlessDisplay(**stream)])


def _inputs(args: argparse.Namespace, overlay: Any, script: Optional[str]) -> List[InputSource]:
    sources: List[InputSource] = []
    if script:
        sources.append(ScriptInput(script))
    if args.buttons:
        sources.append(ButtonInput.from_overlay(overlay))
    if not args.headless and not args.hdmi:
        sources.append(KeyboardInput())
    return sources


def _backend_options(args: argparse.Namespace, overlay: Any) -> dict:
    """What each backend takes of the command line."""
    if args.backend == "tensil":
        return {"tmodel": args.tmodel, "overlay": overlay}
    if args.backend == "tensil-emu":
        return {"tmodel": args.tmodel}
    if args.backend == "auto":
        return {"tmodel": args.tmodel, "overlay": overlay, "threads": args.threads}
    return {"threads": args.threads}


def build_app(args: argparse.Namespace) -> DemoApp:
    """The parts, in order; when one cannot be made, those already made are closed."""
    if args.backend is None:  # `make demo` installs no onnxruntime: OpenCV's DNN runs the backbone then
        args.backend = "auto" if args.demo else "onnxruntime"
    overlay = _overlay(args)
    made: List[Any] = []
    try:
        backbone = create_backbone(args.backend, args.model, **_backend_options(args, overlay))
        made.append(backbone)
        for line in (getattr(backbone, "selection", None), getattr(backbone, "note", None)):
            if line:
                print(line)
        script = args.script
        init_frames = args.init_frames
        if args.replay:
            plan = build_replay_plan(args.replay, args.shots, init_frames, args.queries)
            camera: Camera = ImageFolderCamera(plan.items, name="replay %s" % args.replay)
            script = script or plan.script
        else:
            camera = open_camera(args.camera, tuple(args.camera_resolution))
        made.append(camera)
        memory = FewShotMemory(backbone.feature_dim, args.classes, args.temperature, args.smoothing,
                               args.classifier, args.k)
        display = _display(args, overlay)
        made.append(display)
        inputs = _inputs(args, overlay, script)
    except BaseException:
        for part in reversed(made):
            try:
                part.close()
            except Exception as exc:  # noqa: BLE001 (the first error is the one to report)
                print("warning: closing %s failed: %s" % (type(part).__name__, exc), file=sys.stderr)
        raise
    # Headless with no buttons nobody can press reset: a camera error then ends the run.
    unattended = args.headless and not args.buttons
    return DemoApp(backbone, camera, display, inputs, memory, init_frames, args.shots,
                   tuple(args.output_resolution), pathlib.Path(args.memory) if args.memory else None,
                   unattended=unattended)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    show_logs(args)
    if args.demo:
        if _live_possible(args):
            print("demo: camera and display found: live demonstrator (keys 1-4, i, r, p, q)")
        else:
            print("demo: no camera+display here: headless replay of %s" % DEFAULT_REPLAY)
            args.headless = True
            args.replay = args.replay or str(DEFAULT_REPLAY)
            if not args.save_every:
                args.save_every = 10
    try:
        app = build_app(args)
        summary = app.run(args.max_frames)
    except (DeviceError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    out = pathlib.Path(args.summary) if args.summary else pathlib.Path(args.out_dir) / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _print_summary(summary, out)
    return 130 if summary["interrupted"] else 0  # 128 + SIGINT, as a shell reports Ctrl-C


def _print_summary(summary: dict, path: pathlib.Path) -> None:
    print("frames %d, %.1f FPS end to end; final state %s %s" % (
        summary["frames"], summary["fps"] or 0.0, summary["final_state"], summary["message"]))
    for name, entry in sorted(summary["per_class"].items()):
        print("  %-10s %3d/%3d  %.1f%%" % (name, entry["correct"], entry["frames"],
                                           100 * entry["accuracy"]))
    if summary["accuracy"] is not None:
        print("  accuracy of the inference frames: %.2f%%" % (100 * summary["accuracy"]))
    for stage, entry in summary["latency"].items():
        print("  %-10s %.3f ms" % (stage, entry["mean_ms"]))
    print("summary: %s" % path)
