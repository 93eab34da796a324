"""One interface to the machines a Tensil program runs on, and a `.tmodel` run on any of them.

    machine.run(program, dram0, dram1) -> MachineRun(dram0, dram1, cycles, detail)

`program` is `.tprog` bytes or decoded instructions; `dram0`/`dram1` are raw (vectors,
array_size) integer images from byte 0 of their windows. Machines: `tensil.emulator.EmulatorMachine`
(numpy, here and on a board; no cycle count), `tensil.driver.TcuMachine` (the TCU of a loaded
bitstream, through its AXI DMA) and `tensil_tools.cosim.CosimMachine` (the RTL in Verilator; cycles
measured). `run_model(machine, model, inputs)` builds the DRAM images a
`.tmodel` needs (its consts in DRAM1, its inputs converted to fixed point at their DRAM0 bases,
the consts preloaded to local memory when the model asks), runs the program and reads the
outputs back as floats: the same steps whatever the machine, so that a compiled model gives the
same outputs on each (the emulator = RTL tests hold the machines to that).
"""

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from .arch import Architecture
from .fixed import fixed_format, from_bytes, from_float_driver, from_float_saturating, to_float
from .isa import DataMove, DataMoveKind, Instruction, decode_program, extent, footprint
from .layout import given_name

__all__ = ["Machine", "MachineRun", "Program", "consts_to_local", "model_images", "model_outputs",
           "prologue_length", "run_model"]

Program = Union[bytes, bytearray, memoryview, Sequence[Instruction]]


@dataclasses.dataclass
class MachineRun:
    """What a machine left: the final DRAM images, the cycles it counted (None when it does not
    count them: the emulator's estimate is in its report), and its own report (`detail`)."""

    dram0: np.ndarray
    dram1: np.ndarray
    cycles: Optional[int]
    detail: Any
    saturated_inputs: int = 0  # set by run_model: input values clipped to the format's range


class Machine(Protocol):
    arch: Architecture

    def run(self, program: Program, dram0: np.ndarray, dram1: np.ndarray) -> MachineRun:
        ...


def model_images(model: Any, inputs: Mapping[str, np.ndarray], program: Sequence[Instruction],
                 saturate: bool = True) -> Tuple[np.ndarray, np.ndarray, int]:
    """(DRAM0, DRAM1, saturated input values) for a `.tmodel` (tensil.tmodel.TensilModel):
    each input flattened and converted to fixed point (saturating, or wrapping like Tensil's
    driver with `saturate=False`) at its DRAM0 base, the consts at theirs in DRAM1; each image
    as long as the program and the model reach."""
    arch, fmt = model.arch, fixed_format(model.arch.data_type)
    n = arch.array_size
    names = {v.name for v in model.inputs}
    missing, unknown = sorted(names - set(inputs)), sorted(set(inputs) - names)
    if missing:
        packed = [name for name in missing if given_name(name) in inputs]
        hint = (" (%s: the image packed by the host, as tensil.layout.input_vectors lays it out)"
                % ", ".join(packed)) if packed else ""
        raise ValueError("missing model input(s): %s%s" % (", ".join(missing), hint))
    if unknown:
        raise ValueError("unknown model input(s): %s" % ", ".join(unknown))
    dram0 = np.zeros((max([extent(program, "dram0")] + [v.base + v.size for v in model.inputs + model.outputs]),
                      n), dtype=np.int64)
    dram1 = np.zeros((max([extent(program, "dram1")] + [c.base + c.size for c in model.consts]), n),
                     dtype=np.int64)
    for consts, path in zip(model.consts, model.const_paths):
        dram1[consts.base:consts.base + consts.size] = from_bytes(path.read_bytes(), fmt, str(path)).reshape(
            consts.size, n)
    saturated = 0
    for var in model.inputs:
        values = np.asarray(inputs[var.name]).reshape(-1)
        if values.size > var.size * n:
            raise ValueError("input %r has %d values; its region holds %d vectors of %d" % (
                var.name, values.size, var.size, n))
        if saturate:
            raw, count = from_float_saturating(values, fmt)
            saturated += count
        else:
            raw = from_float_driver(values, fmt)
        dram0.reshape(-1)[var.base * n:var.base * n + values.size] = raw
    return dram0, dram1, saturated


def model_outputs(model: Any, dram0: np.ndarray) -> Dict[str, np.ndarray]:
    """The model's outputs as float64 from a final DRAM0 (entries of one name concatenated)."""
    fmt = fixed_format(model.arch.data_type)
    outputs: Dict[str, np.ndarray] = {}
    for var in model.outputs:
        values = to_float(np.asarray(dram0)[var.base:var.base + var.size].reshape(-1), fmt)
        outputs[var.name] = np.concatenate([outputs[var.name], values]) if var.name in outputs else values
    return outputs


def consts_to_local(model: Any) -> List[Instruction]:
    """The moves of a model's consts from DRAM1 to local memory when it was compiled to find them
    there (`load_consts_to_local`; Tensil's driver streams them before the program), else none."""
    if not model.load_consts_to_local:
        return []
    return [DataMove(DataMoveKind.DRAM1_TO_LOCAL, c.base, c.base, c.size - 1) for c in model.consts if c.size]


def prologue_length(program: Sequence[Instruction], after: Sequence[Instruction] = ()) -> int:
    """How many of a program's first instructions fill local memory that nothing after them
    writes, from DRAM1 that nothing writes: moves DRAM1 -> local (a prologue reading weight blocks
    kept from frame to frame: tensil_tools.compiler.kept). Running the program again without
    them leaves every memory as running it whole does, so a driver that keeps local memory between
    frames runs them once. `after`: what the driver runs after each program (its flush probe)."""
    count = 0
    for instruction in program:
        if not (isinstance(instruction, DataMove) and instruction.kind == DataMoveKind.DRAM1_TO_LOCAL):
            break
        count += 1
    while count:
        reach = {memory: max(extent(program[:count], memory), 1) for memory in ("local", "dram1")}
        written = {memory: np.zeros(size, bool) for memory, size in reach.items()}
        for instruction in list(program[count:]) + list(after):
            for touch in footprint(instruction):
                if "w" in touch.access and touch.memory in written and touch.address < reach[touch.memory]:
                    written[touch.memory][touch.address:touch.last + 1:1 << touch.stride] = True
        clean = next((index for index in range(count) if any(
            written[touch.memory][touch.address:touch.last + 1].any() for touch in footprint(program[index]))),
            count)
        if clean == count:
            break
        count = clean   # the moves from the first overwritten one run every frame: check again
    return count


def run_model(machine: Machine, model: Any, inputs: Mapping[str, np.ndarray], saturate: bool = True,
              program: Optional[Sequence[Instruction]] = None) -> Tuple[Dict[str, np.ndarray], MachineRun]:
    """Run a `.tmodel` on `machine` as Tensil's PYNQ driver would: (outputs, the machine's run).
    `program`: the model's decoded program, when the caller has it already."""
    if program is None:
        program = decode_program(model.prog_path.read_bytes(), model.arch)
    dram0, dram1, saturated = model_images(model, inputs, program, saturate)
    run = machine.run(consts_to_local(model) + list(program), dram0, dram1)
    run.saturated_inputs = saturated
    return model_outputs(model, run.dram0), run
