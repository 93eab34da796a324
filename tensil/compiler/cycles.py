"""A cycle model of compiled programs calibrated on the RTL (tensil.cosim, default DRAM model).

Tensil's per-instruction model (`tensil.estimate`) counts a vector a cycle everywhere; the
RTL of the 12x12 architecture measured with small programs (and whole compiled layers)
differs where it matters for our programs:

    MatMul        size+1, plus `matmul_after_weights` cycles of array refill after a
                  LoadWeights (LoadWeights itself: size+1)
    SIMD          `simd_write` cycles with Write (read-modify-write of the accumulators),
                  `simd_read` without
    DataMove      local <-> accumulators: size+1 + `move_overhead`;
                  DRAM: `dram_latency` + beats per vector (vector bytes / 8 on the 64-bit
                  port) for each request (strided: a request per vector)

`rtl_cycles(program, arch)` sums them. On the bundled ResNet-9 it lands within a few per cent
of the co-simulated count (benchmarks/compiler.py prints both); it is the latency the
design-space table uses where no RTL is at hand (the 8x8 architecture, large inputs).
"""

import dataclasses
from typing import Iterable, Tuple

from ..arch import Architecture
from ..estimate import Estimate
from ..isa import SIMD, DataMove, DataMoveKind, Instruction, LoadWeights, MatMul, NoOp

__all__ = ["RtlCycleModel", "RtlCycles", "rtl_cycles"]

_DRAM = (DataMoveKind.DRAM0_TO_LOCAL, DataMoveKind.LOCAL_TO_DRAM0, DataMoveKind.DRAM1_TO_LOCAL,
         DataMoveKind.LOCAL_TO_DRAM1)


@dataclasses.dataclass(frozen=True)
class RtlCycles:
    """The calibration (TCU cycles), measured on the 12x12 RTL with DramModel()."""

    matmul_after_weights: int = 24
    simd_write: int = 4
    simd_read: int = 2
    move_overhead: int = 2
    dram_latency: int = 17
    bus_bytes: int = 8


class RtlCycleModel:
    def __init__(self, arch: Architecture, calibration: RtlCycles = RtlCycles()):
        self.arch, self.c = arch, calibration
        self.beats = -(-arch.vector_bytes // calibration.bus_bytes)
        self.previous: type = NoOp

    def step(self, instruction: Instruction) -> Tuple[int, int]:
        c = self.c
        if isinstance(instruction, MatMul):
            cycles = instruction.size + 1 + (c.matmul_after_weights
                                             if self.previous is LoadWeights else 0)
        elif isinstance(instruction, LoadWeights):
            cycles = instruction.size + 1
        elif isinstance(instruction, SIMD):
            cycles = c.simd_write if instruction.write else c.simd_read
        elif isinstance(instruction, DataMove):
            vectors = instruction.size + 1
            if instruction.kind in _DRAM:
                requests = vectors if instruction.stride else 1
                cycles = requests * c.dram_latency + vectors * self.beats
            else:
                cycles = vectors + c.move_overhead
        elif isinstance(instruction, NoOp):
            cycles = 1
        else:
            cycles = 0
        self.previous = type(instruction)
        return cycles, 0


def rtl_cycles(program: Iterable[Instruction], arch: Architecture,
               calibration: RtlCycles = RtlCycles()) -> Estimate:
    model = RtlCycleModel(arch, calibration)
    result = Estimate()
    for instruction in program:
        cycles, energy = model.step(instruction)
        result.add(instruction, cycles, energy)
    return result
