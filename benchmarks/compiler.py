"""The ONNX -> Tensil compiler's targets, each figure next to its baseline (a section of
`make bench-tensil`; alone: `python -m benchmarks.compiler [--only ...]`).

Sections:
- compile: CPU time (one core, median of --repeats) to compile the bundled backbone
  (models/resnet9_f16_strided_32.onnx) for each .tarch; target <= 10 s.
- latency: the bundled ResNet-9 f16 strided 32x32 on the 12x12 architecture, cycles counted
  in the RTL co-simulation (tensil_tools.cosim, default DramModel) for a frame as our driver
  runs each (the program after its prologue, which reads the weights kept in local memory once,
  when the driver starts: tensil_tools.compiler.kept), the whole program beside it, against
  anchors measured the same way: the compute floor (MACs / 144 a cycle), the same network scheduled with Tensil's
  strategy (every activation back to DRAM0) by our compiler, and Tensil's own compiler's
  program when `make compile TENSIL=docker` made one. Targets: fewer cycles than Tensil's
  strategy, and MAC efficiency >= 45 % (<= 250,000 cycles; moonshot 60 %). ms at 50 and 125
  MHz, the RTL-calibrated and Tensil's estimates beside the RTL count. PEFSL's 30 ms and its
  FINN follow-up's 16.3 ms are whole demonstrator frames (camera, host and accelerator), not
  accelerator cycles: `make bench-board` compares frames with them.
- layers: where the ResNet-9's cycles go, per layer: RTL cycles (the program cut after each
  layer, run to the flush probe, differenced), the calibrated model's cycles by instruction
  class, MAC efficiency, the MatMul lanes spent on channel padding, the bounding class.
- resnet20: a CIFAR ResNet-20 (training/models.py, BatchNorm, random weights: latency does
  not depend on their values) compiled for pynqz1.tarch (8x8): cycles (RTL-calibrated model;
  the RTL at hand is the 12x12 one, where the same network is co-simulated to check the
  model) and ms at 50 MHz, next to Tensil's published 165 ms for ResNet-20 on a PYNQ-Z1 at
  50 MHz (measured end to end on the board, Python included).
- accuracy: few-shot accuracy of the bundled backbone with FP16BP8 features (the compiled
  program's arithmetic) against onnxruntime's float features, same episodes (1000 seeded,
  15 queries), same procedure (NCM on features centred on the mean of --base-images base
  images, L2-normalised): CIFAR-10 novel 5-way 1-shot and 5-shot; target |gap| <= 0.5
  point. The FP16BP8 features come from `tensil_tools.compiler.reference`, checked bit for bit
  against the emulator (and the RTL when present) on --check-images images first: the
  emulator runs a frame in about 1.5 s, the batched reference in 0.1 s. With --omniglot-onnx
  (an exported Omniglot backbone and its card), Omniglot 20-way 1-shot within-alphabet too.

JSON goes to runs/bench/compiler.json; exit status 1 if a target is missed.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Dict, List, Optional, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import selected_sections  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = pathlib.Path("runs") / "bench"
BACKBONE = ROOT / "models" / "resnet9_f16_strided_32.onnx"
CARD = ROOT / "models" / "resnet9_f16_strided_32.json"
ARCHS = {"12x12": ROOT / "tensil_arch" / "pynqz1_perf.tarch",
         "8x8": ROOT / "tensil_arch" / "pynqz1.tarch"}
COMPILE_TARGET_S = 10.0
MAC_EFFICIENCY_TARGET = 0.45      # issue 24: <= 250,000 cycles for the ResNet-9 on 12x12
MAC_EFFICIENCY_MOONSHOT = 0.60
TENSIL_RESNET20_MS = 165.0        # Tensil's ResNet-20 notebook on a PYNQ-Z1, 50 MHz, end to end
ACCURACY_GAP = 0.005

Section = Callable[[argparse.Namespace], Dict[str, Any]]


def _verdict(what: str, ok: bool, detail: str) -> str:
    line = "%s %s: %s" % ("PASS" if ok else "FAIL", what, detail)
    print(line, flush=True)
    return line


def _ms(cycles: float, mhz: float) -> float:
    return cycles / mhz / 1e3


# --------------------------------------------------------------------------- compile time

def compile_section(args: argparse.Namespace) -> Dict[str, Any]:
    from tensil_tools.compiler import compile_model

    out: Dict[str, Any] = {"verdicts": []}
    for label, arch in ARCHS.items():
        times = []
        for _ in range(args.repeats):
            started = time.process_time()
            result = compile_model(BACKBONE, arch)
            times.append(time.process_time() - started)
        median = statistics.median(times)
        print("compile %s: %.2f s CPU (median of %d; %d instructions, %d consts vectors)" % (
            label, median, len(times), len(result.instructions), result.program.dram1.shape[0]))
        out[label] = {"cpu_seconds": times, "median": median}
        out["verdicts"].append(_verdict("compile time %s" % label, median <= COMPILE_TARGET_S,
                                        "%.2f s (target <= %g s)" % (median, COMPILE_TARGET_S)))
    return out


# --------------------------------------------------------------------------- RTL latency

def _rtl_for(arch: Any) -> bool:
    """Whether the RTL at hand runs this architecture."""
    from tensil_tools import cosim

    if cosim.unavailable() is not None:
        return False
    try:
        cosim.check_arch(cosim.find_rtl(), arch)
    except cosim.CosimError:
        return False
    return True


def _rtl_figures(result: Any, label: str, x: np.ndarray) -> Dict[str, Any]:
    figures: Dict[str, Any] = {
        "calibrated_cycles": result.rtl_estimate.cycles,
        "tensil_model_cycles": result.estimate.cycles,
        "instructions": len(result.instructions), "macs": result.macs}
    figures["calibrated_frame_cycles"] = result.program.frame(result.arch).cycles
    if _rtl_for(result.arch):
        got, _ = result.run_emulator(x)
        on_rtl, run = result.run_rtl(x)
        figures.update(rtl_cycles=run.cycles, rtl_whole_program_cycles=run.cycles,
                       simulation_seconds=run.wall_seconds, rtl_equals_emulator=bool(np.array_equal(on_rtl, got)))
        if result.program.prologue:
            # a frame as our driver runs each (the prologue once, when it starts: kept.py), the
            # next image on the local memory this run left
            following = np.flip(x, axis=-1).copy()
            frame_out, frame = result.run_rtl_frame(following, run)
            figures.update(rtl_cycles=frame.cycles, simulation_seconds=run.wall_seconds + frame.wall_seconds,
                           rtl_equals_emulator=figures["rtl_equals_emulator"]
                           and bool(np.array_equal(frame_out, result.run_emulator(following)[0])))
    cycles = figures.get("rtl_cycles", figures["calibrated_frame_cycles"])
    figures["ms_50MHz"], figures["ms_125MHz"] = _ms(cycles, 50), _ms(cycles, 125)
    figures["mac_efficiency"] = result.mac_efficiency(cycles)
    source = "RTL" if "rtl_cycles" in figures else "calibrated model, no RTL of this arch here"
    kept = result.program.prologue > 0
    whole = figures.get("rtl_whole_program_cycles", figures["calibrated_cycles"])
    print("%s: %s cycles a frame (%s%s), %.2f ms at 50 MHz, %.2f ms at 125 MHz, MAC efficiency %.1f %%;"
          " calibrated model %s%s, Tensil's model %s%s" % (
              label, format(cycles, ","), source,
              "; %s kept weight vectors read once, when the driver starts: the whole program %s cycles "
              "(%.1f %%)" % (format(result.program.kept_vectors, ","), format(whole, ","),
                             100 * result.mac_efficiency(whole)) if kept else "",
              figures["ms_50MHz"], figures["ms_125MHz"],
              100 * figures["mac_efficiency"], format(figures["calibrated_frame_cycles"], ","),
              " (whole program %s)" % format(figures["calibrated_cycles"], ",") if kept else "",
              format(figures["tensil_model_cycles"], ","),
              "" if "rtl_cycles" not in figures else "; RTL outputs %s the emulator's" % (
                  "equal" if figures["rtl_equals_emulator"] else "DIFFER FROM")), flush=True)
    return figures


TENSIL_DOCKER = pathlib.Path("runs") / "tensil-docker"


def tmodel_on_rtl(path: pathlib.Path, x_vectors: np.ndarray, dram: Any = None) -> Dict[str, Any]:
    """Any .tmodel (ours, or Tensil's from `make compile TENSIL=docker`) on the RTL, its input
    given as float vectors written at the input's DRAM0 base the way the driver does;
    `dram`: the co-simulation's memory model (default: its default)."""
    from tensil.driver import prologue_at_start
    from tensil.fixed import fixed_format, from_bytes, from_float_saturating
    from tensil.isa import decode_program, encode_program
    from tensil.tmodel import load_tmodel
    from tensil_tools import cosim

    model = load_tmodel(path)
    arch, fmt = model.arch, fixed_format(model.arch.data_type)
    n = arch.array_size
    top = max(v.base + v.size for v in model.inputs + model.outputs)
    dram0 = np.zeros((top, n), np.int16)
    raw, _ = from_float_saturating(x_vectors.reshape(-1), fmt)
    base = model.inputs[0].base * n
    dram0.reshape(-1)[base:base + raw.size] = raw
    consts = [from_bytes(p.read_bytes(), fmt, str(p)).reshape(-1, n) for p in model.const_paths]
    dram1 = np.concatenate(consts).astype(np.int16) if consts else np.zeros((1, n), np.int16)
    options = {"dram": dram} if dram is not None else {}
    try:
        run = cosim.run(model.prog_path.read_bytes(), dram0, dram1, arch, **options)
        violation = ""
    except cosim.AxiViolation as error:  # (Tensil's own compiler's programs make some): counted, said
        violation = str(error)
        print("%s: %s" % (path, violation))
        run = cosim.run(model.prog_path.read_bytes(), dram0, dram1, arch, allow_boundary_crossings=True,
                        **options)
    figures = {"tmodel": str(path), "rtl_cycles": run.cycles, "instructions": run.instructions,
               "axi_violation": violation}
    program = decode_program(model.prog_path.read_bytes(), arch)
    prologue = prologue_at_start(program, arch)
    if prologue:   # our driver runs it once, when it starts: a frame is the rest
        rest = cosim.run(encode_program(program[prologue:], arch), dram0, dram1, arch, local=run.local, **options)
        figures.update(prologue=prologue, rtl_whole_program_cycles=run.cycles, rtl_cycles=rest.cycles)
    return figures


def latency_section(args: argparse.Namespace) -> Dict[str, Any]:
    from tensil_tools import cosim
    from tensil_tools.compiler import compile_model

    x = np.random.default_rng(0).standard_normal((3, 32, 32))
    out: Dict[str, Any] = {"verdicts": []}
    ours = compile_model(BACKBONE, ARCHS["12x12"])
    out["on_chip"] = _rtl_figures(ours, "ResNet-9 on 12x12, activations on chip", x)
    baseline = compile_model(BACKBONE, ARCHS["12x12"], strategy="dram0")
    out["dram0"] = _rtl_figures(baseline, "ResNet-9 on 12x12, Tensil's strategy (DRAM0)", x)
    figures = out["on_chip"]
    theirs = TENSIL_DOCKER / (ours.name + ".tmodel")
    if theirs.is_file() and "rtl_cycles" in figures:
        out["tensil_compiler"] = tmodel_on_rtl(theirs, ours.input_vectors(x))
        print("Tensil's own compiler's program (%s) on the RTL: %s cycles, ours %s" % (
            theirs, format(out["tensil_compiler"]["rtl_cycles"], ","),
            format(figures["rtl_cycles"], ",")))
    elif "rtl_cycles" in figures:
        print("Tensil's own compiler's program: not at %s (make compile TENSIL=docker needs "
              "docker and the tensilai/tensil image); our compiler's Tensil strategy stands in" % theirs)
        shipped = tmodel_on_rtl(ROOT / "models" / (ours.name + ".tmodel"), ours.input_vectors(x))
        out["shipped_tmodel_rtl_cycles"] = shipped["rtl_cycles"]
        print("the shipped %s.tmodel run like the driver runs it, on the RTL: %s cycles a frame%s" % (
            ours.name, format(shipped["rtl_cycles"], ","), " (its prologue once, when the driver starts; "
            "the whole program %s)" % format(shipped["rtl_whole_program_cycles"], ",") if "prologue" in shipped else ""))
    if "rtl_cycles" not in figures:
        out["verdicts"].append(_verdict("RTL latency", False, "no co-simulation here (%s)"
                                        % cosim.unavailable()))
        return out
    cycles = figures["rtl_cycles"]
    n = ours.arch.array_size
    floor = -(-figures["macs"] // (n * n))
    out["compute_floor_cycles"] = floor
    print("compute floor: %s MACs / %d a cycle = %s cycles; ours %.2fx it" % (
        format(figures["macs"], ","), n * n, format(floor, ","), cycles / floor))
    strategy = out["dram0"].get("rtl_cycles")
    if strategy is not None:
        out["verdicts"].append(_verdict("RTL cycles vs Tensil's strategy", cycles < strategy,
                                        "%s cycles, %s with every activation back to DRAM0 (%.2fx)" % (
                                            format(cycles, ","), format(strategy, ","), strategy / cycles)))
    if "tensil_compiler" in out:
        theirs_cycles = out["tensil_compiler"]["rtl_cycles"]
        out["verdicts"].append(_verdict("RTL cycles vs Tensil's own compiler", cycles < theirs_cycles,
                                        "%s cycles, Tensil's compiler %s" % (
                                            format(cycles, ","), format(theirs_cycles, ","))))
    efficiency = figures["mac_efficiency"]
    out["verdicts"].append(_verdict("MAC efficiency on the RTL", efficiency >= MAC_EFFICIENCY_TARGET,
                                    "%.1f %% (target >= %.0f %%: <= %s cycles; moonshot %.0f %%: <= %s)" % (
                                        100 * efficiency, 100 * MAC_EFFICIENCY_TARGET,
                                        format(int(floor / MAC_EFFICIENCY_TARGET), ","),
                                        100 * MAC_EFFICIENCY_MOONSHOT,
                                        format(int(floor / MAC_EFFICIENCY_MOONSHOT), ","))))
    out["verdicts"].append(_verdict("RTL output equals the emulator's",
                                    figures["rtl_equals_emulator"], "bit for bit"))
    return out


# --------------------------------------------------------------------------- where the cycles go

def _cycle_class(instruction: Any) -> str:
    from tensil.isa import SIMD, DataMove, DataMoveKind, LoadWeights, MatMul

    if isinstance(instruction, MatMul):
        return "matmul"
    if isinstance(instruction, LoadWeights):
        return "weights"
    if isinstance(instruction, SIMD):
        return "simd"
    if isinstance(instruction, DataMove):
        on_chip = (DataMoveKind.ACC_TO_LOCAL, DataMoveKind.LOCAL_TO_ACC, DataMoveKind.LOCAL_TO_ACC_ACCUMULATE)
        return "acc<->local" if instruction.kind in on_chip else "dram"
    return "other"


CYCLE_CLASSES = ("matmul", "weights", "simd", "acc<->local", "dram", "other")


def layers_section(args: argparse.Namespace) -> Dict[str, Any]:
    """Per layer of the bundled ResNet-9 on 12x12: cycles on the RTL (the program cut after each
    layer and run to the driver's flush probe; consecutive counts differenced, so that they add
    up to the whole program's), the calibrated model's cycles by instruction class (MatMul,
    weight loads with the array's drain, SIMD, accumulator<->local moves, DRAM moves), the lanes
    MatMul spends on channel padding, and the class that bounds the layer."""
    from tensil.estimate import MemoryAwareModel
    from tensil.isa import MatMul, encode_program
    from tensil_tools import cosim
    from tensil_tools.compiler import compile_model
    from tensil_tools.compiler.fusion import fuse
    from tensil_tools.compiler.lowering import load_onnx

    result = compile_model(BACKBONE, ARCHS["12x12"])
    arch, program = result.arch, result.program.instructions
    n = arch.array_size
    shipped = (ROOT / "models" / (result.name + ".tprog")).read_bytes()
    out: Dict[str, Any] = {"verdicts": [], "program_is_the_shipped_one": shipped == result.program_bytes}
    if not _rtl_for(arch):
        out["verdicts"].append(_verdict("per-layer RTL cycles", False, "no co-simulation here (%s)"
                                        % cosim.unavailable()))
        return out
    model = MemoryAwareModel(arch)
    estimated = [model.step(instruction)[0] for instruction in program]
    x = np.random.default_rng(0).standard_normal((3, 32, 32))
    dram0, dram1 = result.dram0_image(x).astype(np.int16), result.program.dram1.astype(np.int16)
    ends = [layer.start + layer.instructions for layer in result.program.layers]
    ends[-1] = len(program)   # whatever follows the last layer belongs to it
    # a frame as our driver runs each: the prologue (kept.py) ran when it started
    kept = cosim.run(result.program_bytes, dram0, dram1, arch).local
    rows, previous, start = [], 0, result.program.prologue
    for layer, end in zip(result.program.layers, ends):
        cumulative = cosim.run(encode_program(program[result.program.prologue:end], arch), dram0, dram1, arch,
                               local=kept).cycles
        by_class = dict.fromkeys(CYCLE_CLASSES, 0)
        for instruction, cycles in zip(program[start:end], estimated[start:end]):
            by_class[_cycle_class(instruction)] += cycles
        vectors = sum(i.size + 1 for i in program[start:end] if isinstance(i, MatMul))
        padding = 1 - layer.macs / (vectors * n * n) if vectors else 0.0
        rows.append({"layer": layer.name, "ops": layer.ops, "rtl_cycles": cumulative - previous,
                     "model_cycles": sum(estimated[start:end]), "macs": layer.macs, "matmul_vectors": vectors,
                     "padding_lanes": padding, "by_class": by_class,
                     "bound": max(by_class, key=lambda k: by_class[k])})
        previous, start = cumulative, end
    out["layers"] = rows
    out["floors"] = floors = serial_floors(result, model.memory, fuse(load_onnx(BACKBONE)))
    for row, floor in zip(rows, floors["layer_by_layer"]["each_layer"]):
        row["floor_cycles"] = floor
    print("where the cycles go, ResNet-9 on 12x12 (RTL per layer: a frame after the prologue, which the driver "
          "runs once, cut after each layer, run to the flush probe, differenced; classes: the calibrated model's cycles; padding: MatMul lanes "
          "spent on channels padded to %d; *negative where rows of zero padding, counted in the ONNX "
          "MACs, are skipped)" % n)
    print("%-22s %9s %9s %9s %6s %8s  %s" % ("layer", "RTL", "floor", "model", "MAC%", "padding*",
                                        "  ".join("%11s" % c for c in CYCLE_CLASSES) + "  bound"))
    for row in rows:
        share = {c: row["by_class"][c] / max(row["model_cycles"], 1) for c in CYCLE_CLASSES}
        print("%-22s %9s %9s %9s %5.1f%% %7.1f%%  %s  %s" % (
            row["layer"][-22:], format(row["rtl_cycles"], ","), format(int(row["floor_cycles"]), ","),
            format(row["model_cycles"], ","),
            100 * row["macs"] / (n * n * max(row["rtl_cycles"], 1)), 100 * row["padding_lanes"],
            "  ".join("%10.1f%%" % (100 * share[c]) for c in CYCLE_CLASSES), row["bound"]))
    total = sum(r["rtl_cycles"] for r in rows)
    whole = cosim.run(encode_program(program[result.program.prologue:], arch), dram0, dram1, arch,
                      local=kept).cycles
    out.update(total_rtl_cycles=total, frame_rtl_cycles=whole)
    totals = {c: sum(r["by_class"][c] for r in rows) for c in CYCLE_CLASSES}
    model_total = sum(totals.values())
    print("%-22s %9s %9s %9s %5.1f%%           %s" % (
        "all", format(total, ","), format(int(floors["layer_by_layer"]["parts"]["each layer alone"]), ","),
        format(model_total, ","), 100 * result.macs / (n * n * total),
        "  ".join("%10.1f%%" % (100 * totals[c] / model_total) for c in CYCLE_CLASSES)))
    out["verdicts"].append(_verdict("per-layer RTL cycles add up to the frame's", total == whole,
                                    "%s = %s" % (format(total, ","), format(whole, ","))))
    print("floors on this RTL (its decoder runs one instruction after another: tests/test_tensil_rtl.py"
          "::test_the_decoder_runs_instructions_one_after_another):")
    for key, what in (("layer_by_layer", "this program's work, layers one after another, weights read early "
                                         "into the local memory activations leave free"),
                      ("as_compiled", "this program's work, every overlap the RTL allows granted"),
                      ("ideal", "no padded lane, no MAC on zero padding, each weight read and pushed once "
                                "a frame, the SIMD work of unpadded outputs")):   # simd hides behind the larger of the two
        cycles = floors[key]["cycles"]
        print("  %-14s %9s cycles = MAC efficiency %5.1f %% at best  (%s: %s)" % (
            key, format(int(cycles), ","), 100 * result.macs / (n * n * cycles), what,
            ", ".join("%s %s" % (k, format(int(v), ",")) for k, v in floors[key]["parts"].items())))
    return out


def serial_floors(result: Any, memory: Any, graph: Any) -> Dict[str, Dict[str, Any]]:
    """Lower bounds of a compiled program's cycles on a TCU whose decoder runs instructions one
    after another, granting every overlap measured on the RTL (tests/test_tensil_rtl.py): a
    DRAM move hides a MatMul's drain (2n-1 cycles, before a weight load), SIMDs run beside
    weight pushes and, from the accumulator port's queue, before a DRAM move; nothing runs
    beside MatMuls or accumulator moves; a DRAM read costs its latency and setup beyond its beats,
    beside a drain too (tests/test_tensil_rtl.py::test_a_dram_read_pays_its_latency_and_hides_a_
    drain_only). So cycles >= MatMul vectors + accumulator moves + max(max(DRAM beats + latency x
    drains not hidden by writes, drains x drain) + pushes, SIMD cycles): a drain (a load after a
    MatMul) costs a read's latency where a read hides it, a whole drain (longer) where nothing
    does; the SIMDs priced at their least
    (a flagless one is free right after a Read+Write one: one such pair per Read+Write SIMD).

    as_compiled: this program's work (what any reordering of it costs at least), the SIMD work
    hiding behind DRAM and weight work anywhere in the program. layer_by_layer: the same work
    with the layers run one after another (each layer's output whole before the next starts,
    as this compiler's schedules are): a layer's SIMDs hide behind its own DRAM, drain and push
    work, behind one weight load of the next layer, and behind reads of later layers' weights
    made early into local memory, which the activations of every layer in between leave free
    (the layers' own buffers ignored, so this grants more than any schedule gets). ideal, from
    `graph` (the network before packing): the MACs of non-zero weights on pixels inside the image
    / n^2, every non-zero weight read from DRAM1 and pushed once a frame with no padding (plus a
    bias row a load), the program's SIMD and accumulator moves scaled to unpadded output
    channels: what no schedule, tiling or lane packing of this network on this RTL beats."""
    from tensil.estimate import SIMD_CYCLES, MemoryAwareModel
    from tensil.isa import SIMD, DataMove, DataMoveKind, LoadWeights, MatMul
    from tensil_tools.compiler.packing import is_packing

    arch = result.arch
    n, beats = arch.array_size, MemoryAwareModel(arch, memory).beats_per_vector
    drain, latency = 2 * n - 1, memory.read_latency + memory.read_setup

    def work(instructions: Sequence[Any]) -> Dict[str, float]:
        simds = [i for i in instructions if isinstance(i, SIMD)]
        pairs = min(sum(i.read and i.write for i in simds), sum(not (i.read or i.write) for i in simds))
        loads = [i for i in instructions if isinstance(i, LoadWeights)]
        moves = [i for i in instructions if isinstance(i, DataMove)]
        array = [i for i in instructions if isinstance(i, (MatMul, LoadWeights))]   # a load after a
        drains = sum(isinstance(a, MatMul) and isinstance(b, LoadWeights) for a, b in zip(array, array[1:]))   # MatMul waits
        return {"matmul": sum(i.size + 1 for i in instructions if isinstance(i, MatMul)),
                "acc": sum(i.size + 1 for i in moves if _cycle_class(i) == "acc<->local"),
                "dram": sum((i.size + 1) * beats for i in moves if _cycle_class(i) == "dram"),
                "written": sum(i.size + 1 for i in moves if i.kind in (DataMoveKind.LOCAL_TO_DRAM0,
                                                                       DataMoveKind.LOCAL_TO_DRAM1)),
                "drains": drains, "pushes": sum(i.size + 1 for i in loads),
                "simd": sum(SIMD_CYCLES[(i.read, i.write)] for i in simds) - SIMD_CYCLES[(False, False)] * pairs}

    def beside(w: Dict[str, float]) -> float:
        """The work SIMDs may run beside: DRAM moves sharing the drains, then the pushes. A
        move of a vector or more a drain: at most `written` drains hidden by writes."""
        hidden = w["dram"] + latency * max(0.0, w["drains"] - w["written"])
        return max(hidden, w["drains"] * drain) + w["pushes"]

    def floor(w: Dict[str, float]) -> Dict[str, Any]:
        parts = {"matmul": w["matmul"], "acc<->local": w["acc"], "dram, drains and pushes": beside(w),
                 "simd": w["simd"]}
        return {"cycles": w["matmul"] + w["acc"] + max(beside(w), w["simd"]), "parts": parts}

    compiled = result.program
    program = compiled.instructions[:]
    whole = work(program[compiled.prologue:])   # a frame: the driver runs the prologue once
    # The layers as the per-layer table cuts them (the first with what precedes the layers).
    ends = [layer.start + layer.instructions for layer in compiled.layers]
    ends[-1] = len(program)
    layers = [work(program[start:end]) for start, end in zip([compiled.prologue] + ends[:-1], ends)]
    free = [arch.local_depth - 1 - compiled.kept_vectors - layer.activations   # 1: the probe's
            for layer in compiled.layers]
    surplus = [max(0.0, w["simd"] - beside(w)) for w in layers]    # SIMD left to hide elsewhere
    spare = [min(beside(w) - w["simd"], w["dram"]) if beside(w) > w["simd"] else 0.0 for w in layers]   # reads to move
    # Reads moved early flow forward from a layer with SIMD to spare to a later one with reads to
    # spare, held in local memory meanwhile: a flow along the layers, at most beats x the free
    # vectors of both layers of each boundary it crosses (the free memory of a layer is shared by
    # all it holds, so this grants more). On a line, absorbing at the first sink is optimal.
    early, carried = 0.0, 0.0
    for k, (left, reads) in enumerate(zip(surplus, spare)):
        available = carried + left
        absorbed = min(available, reads)
        early += absorbed
        carried = min(available - absorbed, beats * min(free[k:k + 2]))
    # and each layer's SIMD left over may run beside the next layer's first weight load
    early += sum(min(left, n + 1 + drain) for left in surplus[:-1])
    each_layer = [floor(w)["cycles"] for w in layers]
    within = sum(each_layer)
    layer_by_layer = {"cycles": within - early,
                      "parts": {"each layer alone": within, "hidden across layers at most": early},
                      "each_layer": each_layer}

    # The network as written, before the compiler packs kernel columns into lanes (tensil_tools.
    # compiler.packing); non-zero weights: a global average pool is a diagonal convolution here.
    network = graph.layers
    if any(is_packing(layer) for layer in network):
        raise ValueError("serial_floors takes the graph before packing")
    weights = sum(int(np.count_nonzero(t.weight)) for layer in network for t in layer.terms if hasattr(t, "weight"))
    outputs = [(layer.output.channels, -(-layer.output.channels // n) * n) for layer in network]
    unpadded = sum(c for c, _ in outputs) / sum(p for _, p in outputs)
    # each output vector leaves the accumulators once, each residual input enters them once
    moved = sum(layer.output.channels * layer.output.height * layer.output.width
                * (1 + sum(not hasattr(t, "weight") for t in layer.terms)) for layer in network) / n
    ideal_loads = -(-weights // (n * n))
    last = network[-1].output   # its vectors may leave in writes that hide drains (free, granted)
    written = -(-last.channels // n) * last.height * last.width
    ideal = {"matmul": sum(_needed_macs(t) for layer in network for t in layer.terms if hasattr(t, "weight"))
             / (n * n), "acc": moved, "dram": -(-weights // n) * beats, "written": written,
             "drains": ideal_loads,
             "pushes": -(-weights // n) + ideal_loads, "simd": whole["simd"] * unpadded}
    return {"as_compiled": floor(whole), "layer_by_layer": layer_by_layer, "ideal": floor(ideal)}


def _needed_macs(term: Any) -> int:
    """The multiply-accumulates of a convolution term that no schedule can skip: non-zero weights
    on input positions inside the image (the ONNX count includes taps on zero padding)."""
    kh, kw = term.kernel
    return sum(int(np.count_nonzero(term.weight[:, :, k, m])) * term.inside_count((k, m))
               for k in range(kh) for m in range(kw))


# --------------------------------------------------------------------------- ResNet-20

def _resnet20_onnx(path: pathlib.Path) -> pathlib.Path:
    import warnings

    import torch

    from training.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", (3, 32, 32), 10, norm="bn").eval()
    with torch.no_grad():   # BatchNorm statistics a trained network would have
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 1.5)
                module.running_mean.normal_(0, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False,
                          opset_version=10, input_names=["x"], output_names=["Identity"],
                          do_constant_folding=True)
    return path


def resnet20_section(args: argparse.Namespace) -> Dict[str, Any]:
    from tensil_tools.compiler import compile_model

    OUT.mkdir(parents=True, exist_ok=True)
    onnx_path = _resnet20_onnx(OUT / "resnet20_cifar.onnx")
    x = np.random.default_rng(0).standard_normal((3, 32, 32))
    out: Dict[str, Any] = {"verdicts": []}
    small = compile_model(onnx_path, ARCHS["8x8"])
    out["8x8"] = _rtl_figures(small, "ResNet-20 on 8x8 (pynqz1)", x)
    out["12x12"] = _rtl_figures(compile_model(onnx_path, ARCHS["12x12"]),
                                "ResNet-20 on 12x12 (RTL check of the model)", x)
    ms = _ms(small.program.frame(small.arch).cycles, 50)   # a frame on our driver
    out["8x8"]["spilled"] = small.program.spilled
    out["verdicts"].append(_verdict(
        "ResNet-20 on pynqz1 at 50 MHz", ms < TENSIL_RESNET20_MS,
        "%.2f ms of accelerator time (calibrated model) vs Tensil's %g ms end to end" % (
            ms, TENSIL_RESNET20_MS)))
    return out


# --------------------------------------------------------------------------- accuracy

def _float_features(onnx_path: pathlib.Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1].astype(np.float32)})[0]
                           for i in range(len(x))]).reshape(len(x), -1)


def _fixed_features(result: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    from tqdm import tqdm

    from tensil_tools.compiler.reference import reference_features

    parts = [reference_features(result.qgraph, x[i:i + batch])
             for i in tqdm(range(0, len(x), batch), desc="FP16BP8 features", leave=False)]
    return np.concatenate(parts)


def _check_bit_exact(result: Any, x: np.ndarray, count: int) -> Dict[str, Any]:
    from tensil_tools.compiler.reference import reference, to_vectors

    same, rtl_same = 0, 0
    for i in range(count):
        got, _ = result.run_emulator(x[i])
        same += int(np.array_equal(got, to_vectors(reference(result.qgraph, x[i]))[0]))
        if i < 2 and _rtl_for(result.arch):
            rtl_same += int(np.array_equal(result.run_rtl(x[i])[0], got))
    return {"images": count, "emulator_equals_reference": same, "rtl_equals_emulator": rtl_same}


def _episode_accuracy(name: str, onnx_path: pathlib.Path, card_path: pathlib.Path, data: Any,
                      settings: List[tuple], args: argparse.Namespace) -> Dict[str, Any]:
    from tensil_tools.compiler import compile_model
    from training.fewshot.data import preprocess_images
    from training.fewshot.episodes import evaluate_episodes, make_episodes

    spec = json.loads(card_path.read_text())["input"]
    result = compile_model(onnx_path, ARCHS["12x12"])
    pick = np.linspace(0, len(data.base.images) - 1, min(args.base_images,
                                                         len(data.base.images))).astype(int)
    base = preprocess_images(data.base.images[pick], spec)
    novel = preprocess_images(data.novel.images, spec)
    check = _check_bit_exact(result, novel, args.check_images)
    print("%s: emulator = reference on %d/%d images, RTL = emulator on %d" % (
        name, check["emulator_equals_reference"], check["images"], check["rtl_equals_emulator"]),
        flush=True)
    started = time.time()
    float_base, float_novel = _float_features(onnx_path, base), _float_features(onnx_path, novel)
    fixed_base, fixed_novel = _fixed_features(result, base), _fixed_features(result, novel)
    seconds = time.time() - started
    rows = []
    for ways, shots, within in settings:
        groups = data.novel.groups if within else None
        episodes = make_episodes(data.novel.labels, ways, shots, 15, args.episodes, 0, groups)
        f = evaluate_episodes(float_novel, episodes, float_base.mean(0))
        q = evaluate_episodes(fixed_novel, episodes, fixed_base.mean(0))
        gap = q["accuracy"] - f["accuracy"]
        print("%s %d-way %d-shot%s: float %.2f +- %.2f %%, FP16BP8 %.2f +- %.2f %%, gap %+.2f "
              "points" % (name, ways, shots, " within-alphabet" if within else "",
                          100 * f["accuracy"], 100 * f["ci95"], 100 * q["accuracy"],
                          100 * q["ci95"], 100 * gap), flush=True)
        rows.append({"ways": ways, "shots": shots, "within_groups": within, "float": f,
                     "fp16bp8": q, "gap": gap})
    drift = float(np.abs(fixed_novel - float_novel).max())
    return {"rows": rows, "check": check, "feature_seconds": seconds,
            "max_feature_difference": drift, "base_images": len(pick),
            "novel_images": len(novel)}


def accuracy_section(args: argparse.Namespace) -> Dict[str, Any]:
    from training.fewshot.data import load_fewshot_data

    out: Dict[str, Any] = {"verdicts": []}
    targets = []
    if not args.skip_cifar:
        cifar = _episode_accuracy("CIFAR-10 novel", BACKBONE, CARD,
                                  load_fewshot_data("cifar10", 32), [(5, 1, False), (5, 5, False)],
                                  args)
        out["cifar10"] = cifar
        targets += [("CIFAR-10 5-way %d-shot" % r["shots"], r) for r in cifar["rows"]]
    if args.omniglot_onnx:
        path = pathlib.Path(args.omniglot_onnx)
        omni = _episode_accuracy("Omniglot", path, path.with_suffix(".json"),
                                 load_fewshot_data("omniglot", 32), [(20, 1, True)], args)
        out["omniglot"] = omni
        targets += [("Omniglot 20-way 1-shot within-alphabet", omni["rows"][0])]
    else:
        print("Omniglot: no --omniglot-onnx given; train one with the README's recipe and "
              "export it (python -m training.fewshot export --data omniglot ...)")
    for what, row in targets:
        out["verdicts"].append(_verdict(
            "%s FP16BP8 vs float" % what, abs(row["gap"]) <= ACCURACY_GAP,
            "%+.2f points (float %.2f %%, FP16BP8 %.2f %%; target |gap| <= %.1f)" % (
                100 * row["gap"], 100 * row["float"]["accuracy"], 100 * row["fp16bp8"]["accuracy"],
                100 * ACCURACY_GAP)))
    return out


SECTIONS: Dict[str, Section] = {"compile": compile_section, "latency": latency_section,
                                "layers": layers_section, "resnet20": resnet20_section,
                                "accuracy": accuracy_section}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, default=1000, help="few-shot episodes a setting")
    parser.add_argument("--base-images", type=int, default=10000,
                        help="base images for the mean feature (evenly spaced)")
    parser.add_argument("--check-images", type=int, default=8,
                        help="images run on the emulator to check the reference bit for bit")
    parser.add_argument("--omniglot-onnx", help="an exported Omniglot backbone (card beside it)")
    parser.add_argument("--skip-cifar", action="store_true",
                        help="accuracy: only the Omniglot backbone")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections (%s)" % ", ".join(SECTIONS))
    parser.add_argument("--repeats", type=int, default=3, help="timed compiles")
    add_arguments(parser)
    args = parser.parse_args(argv)
    chosen = selected_sections(parser, args.only, SECTIONS)
    results = {name: SECTIONS[name](args) for name in chosen}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "compiler.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print("\nwrote %s" % (OUT / "compiler.json"))
    failed = [v for r in results.values() for v in r["verdicts"] if v.startswith("FAIL")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
