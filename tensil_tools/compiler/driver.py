"""From an ONNX file to `<name>.tmodel`, `.tprog`, `.tdata` (and `.tasm`, `.dot`), with a
compile summary in the shape of Tensil's.

    result = compile_model("models/resnet9_f16_strided_32.onnx", "tensil_arch/pynqz1_perf.tarch",
                           out_dir="models")
    print(result.summary)

The name follows Tensil's rule: the model file name with every character outside
[A-Za-z0-9 :] replaced by `_`, then `_` and the architecture file's stem
(`resnet9_f16_strided_32_onnx_pynqz1_perf`). The `.tmodel` has exactly the keys Tensil's
PYNQ driver unpacks; the input is DRAM0 vector 0 onwards in Tensil's NHWC vector layout
(ceil(C/N) vectors a pixel, padding lanes zero) or, for a narrow image whose packing the host
does (the default where it applies; `host_pack=False` keeps Tensil's layout), in the packed
layout its name gives (tensil.layout); the output follows it in Tensil's layout, the `.tdata`
is the DRAM1 image from vector 0.
"""

import dataclasses
import pathlib
import time
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from tensil import emulator
from tensil.arch import Architecture, format_table, load_tarch
from tensil.emulator import EmulatorReport
from tensil.estimate import Estimate, MemoryModel, estimate, estimate_memory_aware
from tensil.fixed import from_float_saturating, to_bytes, to_float
from tensil.isa import encode_program, format_program
from tensil.layout import from_vectors, input_vectors
from tensil.tmodel import ConstsFile, ProgramFile, TensilModel, Vars, model_name, write_tmodel

from .backend import CompiledProgram, schedule
from .errors import CompileError
from .fusion import fuse
from .graph import Graph, LinearTerm, MaxTerm
from .kept import kept_blocks
from .lowering import load_onnx
from .packing import host_packs_input, host_packs_phases, pack_columns
from .quantize import QGraph, quantize

__all__ = ["CompileResult", "compile_graph", "compile_model", "model_name"]

CLOCKS_MHZ = (50.0, 125.0)


@dataclasses.dataclass
class CompileResult:
    name: str
    arch: Architecture
    graph: Graph
    qgraph: QGraph
    program: CompiledProgram
    tmodel: TensilModel
    estimate: Estimate
    rtl_estimate: Estimate        # the RTL-calibrated cycle model (tensil.estimate.MemoryAwareModel)
    seconds: float
    files: Dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)
    clock_mhz: float = 50.0       # the TCU clock it was made for (its DRAM latency in cycles)

    @property
    def instructions(self) -> list:
        return self.program.instructions

    @property
    def program_bytes(self) -> bytes:
        return encode_program(self.program.instructions, self.arch)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.graph.layers)

    def mac_efficiency(self, cycles: int) -> float:
        return self.macs / (self.arch.array_size ** 2 * cycles) if cycles else 0.0

    @property
    def summary(self) -> str:
        return summary(self)

    # running the program ------------------------------------------------------------
    def input_vectors(self, x: np.ndarray) -> np.ndarray:
        """A float input (C, H, W) as the driver is given it -> the program's input vectors
        (tensil.layout: Tensil's layout, packed by the host where the model says so)."""
        x = np.asarray(x, np.float64).reshape((1,) + self.graph.image_shape)
        return input_vectors(self.graph.input_name, x, self.arch.array_size)

    def dram0_image(self, x: np.ndarray) -> np.ndarray:
        """Raw DRAM0 with the input converted like our driver does (half even, saturated)."""
        raw, _ = from_float_saturating(self.input_vectors(x), self.qgraph.fmt)
        image = np.zeros((self.program.dram0_vectors, self.arch.array_size), np.int64)
        image[:raw.shape[0]] = raw
        return image

    def output_vectors(self, dram0: np.ndarray) -> np.ndarray:
        region = self.program.output_region
        return np.asarray(dram0)[region.base:region.base + region.size].astype(np.int64)

    def output_floats(self, vectors: np.ndarray) -> np.ndarray:
        """Raw output vectors -> float (C, H, W) without the padding lanes (tensil.layout)."""
        value = self.graph.output
        return from_vectors(to_float(vectors, self.qgraph.fmt), (1,) + tuple(value.shape), self.arch.array_size)[0]

    def run_emulator(self, x: np.ndarray) -> Tuple[np.ndarray, EmulatorReport]:
        """(raw output vectors, report) of the program on the emulator."""
        dram0, _, report = emulator.run(self.program.instructions, self.dram0_image(x),
                                        self.program.dram1, self.arch)
        return self.output_vectors(dram0), report

    def run_rtl(self, x: np.ndarray, **options: Any) -> Tuple[np.ndarray, object]:
        """(raw output vectors, CosimResult) of the program on the RTL (tensil_tools.cosim)."""
        from tensil_tools import cosim

        result = cosim.run(self.program_bytes, self.dram0_image(x).astype(np.int16),
                           self.program.dram1.astype(np.int16), self.arch, **options)
        return self.output_vectors(result.dram0), result

    def run_rtl_frame(self, x: np.ndarray, previous: Any, **options: Any) -> Tuple[np.ndarray, object]:
        """(raw output vectors, CosimResult) of a frame as our driver runs each one, its prologue
        run once when it started (kept.py): the program after the prologue, on the local memory
        that `previous` (the CosimResult of an earlier run of this program) left."""
        from tensil_tools import cosim

        rest = encode_program(self.program.instructions[self.program.prologue:], self.arch)
        result = cosim.run(rest, self.dram0_image(x).astype(np.int16), self.program.dram1.astype(np.int16),
                           self.arch, local=previous.local, **options)
        return self.output_vectors(result.dram0), result


# Weights kept between frames where the calibrated model says a frame is this much faster: below
# it, its difference between two schedules of nearly the same work is noise (a CIFAR ResNet-20
# with 321 kept vectors: -22 cycles by the model, +110 on the RTL).
KEEP_MIN_SAVING = 0.005


def compile_graph(graph: Graph, arch: Architecture, name: str, strategy: str = "on-chip",
                  pack: bool = True, host_pack: bool = True, clock_mhz: float = 50.0,
                  keep_weights: bool = True) -> CompileResult:
    """Quantize, schedule and package a (fused) graph; no files written. `strategy`:
    "on-chip" (activations stay in local memory when they fit) or "dram0" (every activation
    goes back to DRAM0 like Tensil's compiler does; for comparisons). With `pack`, the graph
    with narrow inputs' kernel columns packed into lanes (packing.py) where the calibrated
    cycle model says its program is faster; with `host_pack` too, the input's packing left to
    the host (packing.host_packs_input: the `.tmodel` input then names its packing, which our
    driver does and Tensil's refuses), and where it pays two pixels a vector, the layers reading
    them run as column phases (packing.host_packs_phases). `clock_mhz`: the TCU clock the program is made for,
    whose DRAM latency in cycles (tensil.estimate.MemoryModel.at_clock) prices every choice.
    With `keep_weights`, the last layers' weight blocks fill the local memory the frame leaves
    free, read by the program's first instruction, which our driver runs once (kept.py), where
    the model says a frame is KEEP_MIN_SAVING faster; the choices above are made without them."""
    started = time.process_time()
    dram = MemoryModel.at_clock(clock_mhz)
    qgraph = quantize(graph, arch)
    program = schedule(qgraph, strategy, dram=dram)
    calibrated = program.calibrated(arch)
    packed = pack_columns(graph, arch.array_size) if pack else graph
    candidates = [packed]
    if host_pack:
        packed = host_packs_input(packed)
        candidates = [packed, host_packs_phases(packed, arch.array_size)]
    for k, packed in enumerate(candidates):
        if packed is graph or any(packed is c for c in candidates[:k]):
            continue
        try:
            packed_qgraph = quantize(packed, arch)
            packed_program = schedule(packed_qgraph, strategy, dram=dram)
        except CompileError:   # the packed inputs did not fit where the plain graph does
            continue
        packed_calibrated = packed_program.calibrated(arch)
        if packed_calibrated.cycles < calibrated.cycles:
            graph, qgraph, program, calibrated = packed, packed_qgraph, packed_program, packed_calibrated
    room = arch.local_depth - 1 - program.local_peak   # what the frame leaves free at its peak
    if keep_weights and strategy == "on-chip" and kept_blocks(qgraph, room) is not None:
        kept = schedule(qgraph, strategy, dram=dram, keep=room)
        if kept.frame(arch).cycles < (1 - KEEP_MIN_SAVING) * program.frame(arch).cycles:
            program, calibrated = kept, kept.calibrated(arch)
    size = len(program.instructions) * arch.layout.instruction_bytes
    tmodel = TensilModel(
        name, ProgramFile(name + ".tprog", size),
        (ConstsFile(name + ".tdata", 0, int(program.dram1.shape[0])),),
        (Vars(graph.input_name, program.input_region.base, program.input_region.size),),
        (Vars(graph.output_name, program.output_region.base, program.output_region.size),),
        arch, False)
    tensil = estimate(program.instructions, arch)
    return CompileResult(name, arch, graph, qgraph, program, tmodel, tensil, calibrated,
                         time.process_time() - started, clock_mhz=clock_mhz)


def compile_model(model: Union[str, pathlib.Path, bytes], arch: Union[str, pathlib.Path, Architecture],
                  out_dir: Optional[Union[str, pathlib.Path]] = None, name: Optional[str] = None,
                  write_tasm: bool = False, write_graph: bool = False,
                  strategy: str = "on-chip", pack: bool = True, host_pack: bool = True,
                  clock_mhz: float = 50.0, keep_weights: bool = True) -> CompileResult:
    """Compile an ONNX file for a `.tarch` (and the TCU clock `clock_mhz`: compile_graph); with
    `out_dir`, write the files there."""
    started = time.process_time()
    if isinstance(arch, Architecture):
        architecture, arch_path = arch, "arch"
    else:
        architecture, arch_path = load_tarch(arch), str(arch)
    if name is None:
        if isinstance(model, (bytes, bytearray)):
            raise ValueError("compiling ONNX bytes needs a name")
        name = model_name(model, arch_path)
    graph = fuse(load_onnx(model))
    result = compile_graph(graph, architecture, name, strategy, pack, host_pack, clock_mhz, keep_weights)
    result.seconds = time.process_time() - started
    if out_dir is not None:
        write_files(result, pathlib.Path(out_dir), write_tasm, write_graph)
    return result


def write_files(result: CompileResult, out_dir: pathlib.Path, write_tasm: bool = False,
                write_graph: bool = False) -> Dict[str, pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    arch, name = result.arch, result.name
    files = {"tprog": out_dir / (name + ".tprog"), "tdata": out_dir / (name + ".tdata"),
             "tmodel": out_dir / (name + ".tmodel")}
    files["tprog"].write_bytes(result.program_bytes)
    files["tdata"].write_bytes(to_bytes(result.program.dram1, result.qgraph.fmt))
    write_tmodel(dataclasses.replace(result.tmodel, path=files["tmodel"]), files["tmodel"])
    if write_tasm:
        files["tasm"] = out_dir / (name + ".tasm")
        files["tasm"].write_text(format_program(result.program.instructions, arch),
                                 encoding="utf-8")
    if write_graph:
        files["dot"] = out_dir / (name + ".dot")
        files["dot"].write_text(layer_graph(result), encoding="utf-8")
    result.files = files
    return files


def layer_graph(result: CompileResult) -> str:
    """The layers and the activations between them as Graphviz DOT."""
    graph = result.graph
    reports = {r.name: r for r in result.program.layers}
    lines = ["digraph \"%s\" {" % result.name, "  rankdir=TB; node [shape=box, fontsize=10];"]
    ids = {id(graph.input): "input"}
    lines.append("  input [label=\"%s\\n%dx%dx%d\", shape=ellipse];" % (
        graph.input.name, *graph.input.shape))
    for index, layer in enumerate(graph.layers):
        node = "layer%d" % index
        ids[id(layer.output)] = node
        report = reports.get(layer.name)
        extra = "\\n%d instructions, %s" % (report.instructions, report.home) if report else ""
        lines.append("  %s [label=\"%s\\n%s\\n%dx%dx%d%s\"];" % (
            node, layer.name.replace('"', "'"), "+".join(layer.ops), *layer.output.shape, extra))
        for term in layer.terms:
            kind = "conv %dx%d/%d" % (term.kernel + (term.stride[0],)) if isinstance(
                term, (LinearTerm, MaxTerm)) else "add"
            lines.append("  %s -> %s [label=\"%s\", fontsize=8];" % (ids[id(term.input)], node,
                                                                     kind))
    lines.append("}")
    return "\n".join(lines) + "\n"


def summary(result: CompileResult) -> str:
    """COMPILER SUMMARY, LAYERS SUMMARY, instruction composition, overflow summaries."""
    arch, program = result.arch, result.program
    n, vector = arch.array_size, arch.vector_bytes
    cycles = result.estimate.cycles
    rtl = result.rtl_estimate.cycles
    frame = program.frame(arch).cycles
    rows: List[tuple] = [
        ("Model", result.name),
        ("Data type", arch.data_type),
        ("Array size", n),
        ("Number of layers", len(result.graph.layers)),
        ("Total number of instructions", len(program.instructions)),
        ("Program size (bytes)", len(program.instructions) * arch.layout.instruction_bytes),
        ("DRAM0 usage (vectors/bytes)", program.dram0_vectors, program.dram0_vectors * vector),
        ("DRAM1 usage, consts (vectors/bytes)", int(program.dram1.shape[0]),
         int(program.dram1.shape[0]) * vector),
        ("Local memory peak (vectors, of %d)" % arch.local_depth, program.local_peak),
        ("Weights kept in local memory between frames (vectors; the prologue, run once by our driver)",
         "%d; %d instructions" % (program.kept_vectors, program.prologue)),
        ("Accumulator peak (vectors, of %d)" % arch.accumulator_depth, program.accumulator_peak),
        ("Activations in DRAM0", ", ".join(program.spilled) or "none (all on chip)"),
        ("DRAM moves across a 4 KiB boundary (AXI forbids)", "%d%s" % (
            program.axi_violations, ": the RTL co-simulation refuses this program" if program.axi_violations
            else "")),
        ("True MACs", result.macs),
        ("TCU clock it is made for (MHz: its DRAM latency in cycles)", "%g" % result.clock_mhz),
        ("Execution latency, RTL-calibrated model (cycles)", rtl),
        ("A frame after the prologue, RTL-calibrated model (cycles)", frame),
        ("Execution latency, Tensil's model (cycles)", cycles),
    ]
    for mhz in CLOCKS_MHZ:
        rows.append(("Latency at %g MHz, RTL-calibrated / Tensil's model (ms)" % mhz,
                     "%.3f / %.3f" % (rtl / mhz / 1e3, cycles / mhz / 1e3)))
    rows += [("MAC efficiency, RTL-calibrated (a frame after the prologue) / Tensil's model (%)",
              "%.1f (%.1f) / %.1f" % (100 * result.mac_efficiency(rtl), 100 * result.mac_efficiency(frame),
                                      100 * result.mac_efficiency(cycles))),
             ("Compilation time (seconds, CPU)", "%.2f" % result.seconds)]
    stats = result.qgraph.stats
    rows += [("Consts overflow / underflow count", "%d / %d" % (stats.overflow_count,
                                                             stats.underflow_count))]
    text = format_table("COMPILER SUMMARY", rows)
    layer_rows = []
    for r in program.layers:
        part = estimate_memory_aware(program.instructions[r.start:r.start + r.instructions], arch, program.dram)
        layer_rows.append((r.name, r.ops, r.output, "strips %d" % r.strips,
                           "weights %d" % r.weight_vectors, "instr %d" % r.instructions,
                           "cycles %d" % part.cycles, "MACs %d" % r.macs, r.home))
    text += format_table("LAYERS SUMMARY", layer_rows)
    kinds = [(kind, count, c) for kind, count, c, _ in result.estimate.table()]
    text += format_table("TOTAL INSTRUCTIONS COMPOSITION (count/cycles, Tensil's model)", kinds)
    text += stats.report()
    return text
