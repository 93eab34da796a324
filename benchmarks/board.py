"""Board benchmark: `make bench-board`. What the backbone costs on each backend here, and what
a PYNQ-Z1 frame will cost, projected, next to PEFSL's 30 ms frame.

Sections:
1. demo: the headless demonstrator (demo_app.DemoApp) on the same replayed CIFAR-10
   novel-class frames with each backend in one run: FPS of the inference frames and the
   latency of each stage (medians), and how far each backend's features are from
   onnxruntime's on those frames: the bundled ResNet-9 with onnxruntime, opencv and
   tensil-emu (its compiled models/<stem>_onnx_pynqz1_perf.tmodel, shipped; should it be
   missing, tensil-emu runs a labelled stand-in of the same input and output, 3x32x32 -> 80
   features hand-assembled from tests/tensil_models.py).
2. driver: tensil.driver's host-side time per frame against the pynq fakes (the fake AXI DMA
   and DDR), with a TCU that executes only the driver's own probe (the real one computes in
   parallel, in hardware): input conversion, DMA setup (the fake TCU's own time taken out),
   the probe poll and the readback, medians over --driver-frames frames; the A9 projection
   multiplies host CPU time by --a9-factor (10: a 650 MHz Cortex-A9 running numpy against
   one core of this machine, the issue's figure; 20 is printed as the pessimistic bound).
3. tcu: the compiled ResNet-9 program as the driver streams it, on the real RTL (Verilator
   co-simulation, where present) with the DRAM model of a PYNQ-Z1 at 50 and 125 MHz, next to
   Tensil's estimate and ours (with the stand-in: a ResNet-9's MatMul work instead).
4. projection: a board frame = a9_factor x (the demo's non-backbone stages with onnxruntime
   + the driver's host time) + the TCU time, next to the two published whole-frame figures:
   PEFSL's demonstrator, 30 ms a frame (camera, host and accelerator; ISCAS 2024, arXiv
   2404.19354; clock not stated, its bitstream defaults to 50 MHz), the target; and its
   FINN-based follow-up, 16.3 ms (arXiv 2602.16024).

JSON: runs/bench/board.json. Exit status 1 when the projected frame at 50 MHz is longer than
PEFSL's 30 ms or the driver's host side of a frame here takes more than 0.2 ms.

    python -m benchmarks.board                    # all sections, 4 queries a class
    python -m benchmarks.board --only driver,tcu
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Dict, List, Optional  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import selected_sections  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.demo import ARCHIVE, NOVEL, extract_cifar_novel, run_demo  # noqa: E402
from benchmarks.tensil import RESNET9_LAYERS, _machine, _macs, matmul_program  # noqa: E402
from device.backends import create_backbone, tmodel_path  # noqa: E402
from device.model_card import load_card  # noqa: E402
from device.preprocess import Preprocessor  # noqa: E402
from tensil.arch import load_tarch  # noqa: E402
from tensil.driver import TensilDriver, prologue_at_start  # noqa: E402
from tensil.estimate import estimate, estimate_memory_aware  # noqa: E402
from tensil.isa import Configure, DataMove, decode_program, encode_program  # noqa: E402
from tensil.tmodel import load_tmodel  # noqa: E402
from tensil_tools import cosim  # noqa: E402
from tests.fake_pynq import TENSIL_BITFILE, FakeBoard, FakeDDR, FakeOverlay, FakeTcu  # noqa: E402
from tests.tensil_models import build_conv_model  # noqa: E402

OUT = ROOT / "runs" / "bench"
ARCH = ROOT / "tensil_arch" / "pynqz1_perf.tarch"
BUNDLED = ROOT / "models" / "resnet9_f16_strided_32.onnx"
PEFSL_FRAME_MS = 30.0  # PEFSL's demonstrator, whole frame (ISCAS 2024, arXiv 2404.19354)
FINN_FRAME_MS = 16.3   # its FINN-based follow-up (arXiv 2602.16024)
BACKENDS = ("onnxruntime", "opencv", "tensil-emu")
HOST_TARGET_MS = 0.2    # issue 24: the driver's host side of a frame, on this machine
HOST_STAGES = ("capture", "preprocess", "ncm", "ui", "display")
Section = Callable[[argparse.Namespace, Dict[str, Any]], Dict[str, Any]]


def backbone_model(folder: pathlib.Path) -> Dict[str, Any]:
    """The bundled backbone if compiled for pynqz1_perf, else the stand-in (built once)."""
    card = load_card(BUNDLED)
    if tmodel_path(card, ARCH.stem).is_file():
        return {"card": BUNDLED.with_suffix(".json"), "tmodel": tmodel_path(card, ARCH.stem),
                "stand_in": False, "what": "the bundled ResNet-9 and its compiled .tmodel"}
    paths = build_conv_model(folder / "stand_in", ARCH, size=32, features=80, stem="stand_in")
    return {"card": paths["card"], "tmodel": paths["tmodel"], "stand_in": True,
            "what": "a STAND-IN (the compiled ResNet-9 is not here yet): 3x32x32 -> Conv 3x3 "
                    "stride 2 -> 80 channels, Relu, average pool; 0.55 M MACs against the "
                    "backbone's 16 M"}


def _demo_table(title: str, runs: Dict[str, Dict[str, Any]], differences: Dict[str, float]) -> None:
    print("\n== demo: headless, the same %d frames a backend; model: %s ==" % (
        runs["onnxruntime"]["frames"], title))
    print("%-12s %9s %9s %11s %10s  %s" % ("backend", "FPS", "frame ms", "backbone ms",
                                          "|f - ort|", "other stages, median ms"))
    for backend, run in runs.items():
        lat = run["latency"]
        print("%-12s %9.1f %9.2f %11.3f %10s  %s" % (
            backend, run["inference_fps"], run["inference_frame_ms"], lat["backbone"]["p50_ms"],
            "%.2g" % differences[backend] if backend in differences else "-",
            ", ".join("%s %.3f" % (s, lat[s]["p50_ms"]) for s in HOST_STAGES if s in lat)))
    ort, cv = runs["onnxruntime"]["inference_fps"], runs["opencv"]["inference_fps"]
    print("opencv: %.2fx onnxruntime's FPS on the same frames" % (cv / ort))


def _differences(card: pathlib.Path, backends: Dict[str, Dict[str, Any]], images: List[pathlib.Path]
                 ) -> Dict[str, float]:
    """Largest |feature - onnxruntime's feature| of each backend on the same frames."""
    batch = np.concatenate([Preprocessor(load_card(card).input)(cv2.imread(str(p)))
                            for p in images])
    reference = create_backbone("onnxruntime", card).features(batch)
    return {name: float(np.abs(create_backbone(name, card, **options).features(batch)
                               - reference).max()) for name, options in backends.items()}


def demo_section(args: argparse.Namespace, model: Dict[str, Any]) -> Dict[str, Any]:
    folder = OUT / "demo_replay"
    per_class = args.queries + args.shots + -(-args.init_frames // len(NOVEL))
    extract_cifar_novel(ARCHIVE, folder, per_class)
    images = sorted(folder.glob("*/*.png"))[:args.feature_frames]
    cpu = {"onnxruntime": {"threads": 1}, "opencv": {"threads": 1}}
    tables = [("the bundled ResNet-9 (onnxruntime, opencv)", BUNDLED.with_suffix(".json"), cpu)]
    if model["stand_in"]:
        tables.append((model["what"], model["card"],
                       dict(cpu, **{"tensil-emu": {"tmodel": model["tmodel"]}})))
    else:
        tables[0] = ("the bundled ResNet-9", model["card"],
                     dict(cpu, **{"tensil-emu": {"tmodel": model["tmodel"]}}))
    out: Dict[str, Any] = {}
    for title, card, backends in tables:
        runs = {name: run_demo(folder, card, args.shots, args.queries, args.init_frames, None, 0,
                               name, **options) for name, options in backends.items()}
        differences = _differences(card, {k: v for k, v in backends.items()
                                          if k != "onnxruntime"}, images)
        _demo_table(title, runs, differences)
        out[title] = {"runs": runs, "max_abs_difference": differences}
    out["host_stages"] = out[tables[0][0]]["runs"]["onnxruntime"]["latency"]
    return out


class _ProbeOnlyTcu(FakeTcu):
    """Executes only what goes through the driver's probe vector (Configure, the self-test,
    the probe); the program's work is the hardware's, in parallel. It decodes no more than
    that either: a short transfer whole (the start segment: Configure and the self-test) and
    a long one's last two instructions, where the driver puts the flush probe. Decoding a
    40,000-instruction program in the fake took ten times the driver's own time and its
    cache misses were counted as the driver's."""

    def feed(self, data: bytes) -> None:
        size = self.arch.layout.instruction_bytes
        whole = len(data) // size * size
        tail = data[:whole] if whole <= 64 * size else data[whole - 2 * size:whole]
        self._queue.extend(decode_program(tail, self.arch, strict=False))
        self.advance()

    def advance(self, *_: Any) -> None:
        queue, self._queue = self._queue, []
        last = self.arch.local_depth - 1
        for i in queue:
            if isinstance(i, Configure) or isinstance(i, DataMove) and i.local_address == last:
                self.machine.step(i)


class _TimedSink:
    def __init__(self, tcu: FakeTcu):
        self.tcu = tcu
        self.seconds = 0.0

    def feed(self, data: bytes) -> None:
        start = time.process_time()
        self.tcu.feed(data)
        self.seconds += time.process_time() - start


def driver_section(args: argparse.Namespace, model: Dict[str, Any]) -> Dict[str, Any]:
    tmodel = load_tmodel(model["tmodel"])
    board = FakeBoard(ddr=FakeDDR(size=32 << 20))
    overlay = FakeOverlay(TENSIL_BITFILE, device=board)
    sink = _TimedSink(_ProbeOnlyTcu(tmodel.arch, board.ddr))
    board.hardware("axi_dma_0").mm2s_sink = sink.feed
    driver = TensilDriver.from_overlay(overlay, tmodel, allocate=board.allocate,
                                       clock=time.process_time)
    rng = np.random.default_rng(0)
    shape = load_card(model["card"]).input.shape
    samples: Dict[str, List[float]] = {k: [] for k in ("convert", "dma", "wait", "read", "host")}
    for _ in range(args.driver_frames):
        x = rng.normal(size=shape).astype(np.float32)
        before = sink.seconds
        driver.run({"Input": x})
        r = driver.last_run
        dma = r.stream_s - (sink.seconds - before)
        for key, value in (("convert", r.convert_s), ("dma", dma), ("wait", r.wait_s),
                           ("read", r.read_s)):
            samples[key].append(value)
        samples["host"].append(r.convert_s + dma + r.wait_s + r.read_s)
    driver.close()
    ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
    print("\n== driver: host side a frame, fake DMA, CPU-time medians of %d frames ==" %
          args.driver_frames)
    for key, what in (("convert", "input NCHW -> NHWC padded, FP16BP8 saturating, probe, flush"),
                      ("dma", "DMA setup: transfer (%d B), registers, wait" % r.stream_bytes),
                      ("wait", "probe poll (invalidate, compare)"),
                      ("read", "outputs: invalidated DRAM0 -> float"),
                      ("host", "total")):
        print("  %-8s %8.3f ms  x%g on the A9: %7.2f ms   %s" % (
            key, ms[key], args.a9_factor, ms[key] * args.a9_factor, what))
    verdict = "%s host side of a frame here: %.3f ms (target <= %.1f ms)" % (
        "PASS" if ms["host"] <= HOST_TARGET_MS else "FAIL", ms["host"], HOST_TARGET_MS)
    print(verdict)
    return {"ms": ms, "cma_bytes": driver.plan.cma_bytes, "transfers": r.transfers,
            "stream_bytes": r.stream_bytes, "verdict": verdict}


def tcu_section(args: argparse.Namespace, model: Dict[str, Any]) -> Dict[str, Any]:
    """The backbone's TCU time: the compiled .tmodel on the RTL as the driver runs it (a
    stand-in has no such program: then a ResNet-9's MatMul work stands for it)."""
    arch = load_tarch(ARCH)
    missing = cosim.unavailable()
    if not model["stand_in"]:
        from benchmarks.compiler import tmodel_on_rtl

        compiled = load_tmodel(model["tmodel"])
        x = np.random.default_rng(0).uniform(-2, 2, (compiled.inputs[0].size, arch.array_size))
        out: Dict[str, Any] = {"program": "the compiled %s" % compiled.name}
        print("\n== tcu: %s on the RTL, as the driver runs it ==" % compiled.name)
        if missing is None:
            for mhz in (50.0, 125.0):
                cycles = tmodel_on_rtl(model["tmodel"], x, cosim.DramModel.zynq_hp(mhz))["rtl_cycles"]
                out["rtl_cycles_%gmhz" % mhz] = cycles
                print("  RTL (Verilator), DRAM model at %g MHz: %d cycles = %.2f ms" % (
                    mhz, cycles, cycles / (mhz * 1e3)))
        program = decode_program(compiled.prog_path.read_bytes(), arch)
        # a frame: the driver runs the prologue (the weights kept in local memory) once, at start
        program = program[prologue_at_start(program, arch):]
    else:
        program = matmul_program(arch, RESNET9_LAYERS)
        out = {"program": "a ResNet-9's MatMul work (stand-in)", "macs": _macs(program, arch.array_size)}
        print("\n== tcu: ResNet-9 f=16 32x32 MatMul work, %d instructions, %.1f M MACs (padded) ==" % (
            len(program), out["macs"] / 1e6))
        if missing is None:
            dram0, dram1 = _machine(arch, "nn")
            code = encode_program(program, arch)
            for mhz in (50.0, 125.0):
                result = cosim.run(code, dram0, dram1, arch, dram=cosim.DramModel.zynq_hp(mhz))
                out["rtl_cycles_%gmhz" % mhz] = result.cycles
                print("  RTL (Verilator), DRAM model at %g MHz: %d cycles = %.2f ms" % (
                    mhz, result.cycles, result.cycles / (mhz * 1e3)))
    if missing is not None:
        print("  RTL co-simulation unavailable (%s): Tensil's estimates only" % missing)
    out["instructions"] = len(program)
    out["tensil_estimate"] = estimate(program, arch).cycles
    out["memory_aware_estimate"] = estimate_memory_aware(program, arch).cycles
    print("  a frame: Tensil's estimate %d cycles, memory-aware %d cycles" % (
        out["tensil_estimate"], out["memory_aware_estimate"]))
    return out


def projection(args: argparse.Namespace, results: Dict[str, Any]) -> Dict[str, Any]:
    if not {"demo", "driver", "tcu"} <= set(results):
        return {}
    lat = results["demo"]["host_stages"]
    host_ms = sum(lat[s]["p50_ms"] for s in HOST_STAGES if s in lat) + results["driver"]["ms"]["host"]
    tcu = results["tcu"]
    rows = {}
    print("\n== projection: a PYNQ-Z1 frame (host x factor + TCU), next to PEFSL's %.0f ms and its FINN "
          "follow-up's %.1f ms (whole frames) ==" % (PEFSL_FRAME_MS, FINN_FRAME_MS))
    for mhz in (50.0, 125.0):
        cycles = tcu.get("rtl_cycles_%gmhz" % mhz, tcu["memory_aware_estimate"])
        tcu_ms = cycles / (mhz * 1e3)
        for factor in (args.a9_factor, 2 * args.a9_factor):
            frame_ms = host_ms * factor + tcu_ms
            rows["%gmhz_x%g" % (mhz, factor)] = {"frame_ms": frame_ms, "fps": 1e3 / frame_ms}
            print("  TCU %3.0f MHz %6.2f ms + host %6.3f ms x%-3g = %6.2f ms: %5.1f FPS" % (
                mhz, tcu_ms, host_ms, factor, frame_ms, 1e3 / frame_ms))
    headline = rows["50mhz_x%g" % args.a9_factor]["frame_ms"]
    verdict = "%s projected board frame at 50 MHz, A9 x%g: %.1f ms, %.1f FPS (target <= PEFSL's %.0f ms; " \
        "its FINN follow-up: %.1f ms)" % ("PASS" if headline <= PEFSL_FRAME_MS else "FAIL", args.a9_factor,
                                         headline, 1e3 / headline, PEFSL_FRAME_MS, FINN_FRAME_MS)
    print(verdict)
    return {"host_ms_here": host_ms, "rows": rows, "verdict": verdict}


SECTIONS: Dict[str, Section] = {"demo": demo_section, "driver": driver_section, "tcu": tcu_section}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections: %s (the "
                        "projection needs all three)" % ", ".join(SECTIONS))
    parser.add_argument("--queries", type=int, default=4, help="held-out frames a class")
    parser.add_argument("--shots", type=int, default=5, help="shots a class of the replay (default %(default)s)")
    parser.add_argument("--init-frames", type=int, default=10, help="frames of the base mean before the shots (default %(default)s)")
    parser.add_argument("--feature-frames", type=int, default=20,
                        help="frames on which the backends' features are compared")
    parser.add_argument("--driver-frames", type=int, default=200, help="frames through the driver's host path (default %(default)s)")
    parser.add_argument("--a9-factor", type=float, default=10.0,
                        help="how much slower the board's Cortex-A9 runs the host code")
    parser.add_argument("--out", default=str(OUT / "board.json"), help="the JSON report (default %(default)s)")
    args = parser.parse_args(argv)
    chosen = selected_sections(parser, args.only, SECTIONS)
    OUT.mkdir(parents=True, exist_ok=True)
    model = backbone_model(OUT / "board")
    results: Dict[str, Any] = {name: SECTIONS[name](args, model) for name in chosen}
    results["projection"] = projection(args, results)
    out = pathlib.Path(args.out)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\nwrote %s" % out)
    verdicts = [results[name].get("verdict", "") for name in ("driver", "projection") if name in results]
    return 1 if any(v.startswith("FAIL") for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
