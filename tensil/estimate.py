"""Cycle estimates of a Tensil program: Tensil's latency model and a memory-aware variant.

`TensilLatencyModel` is the compiler's per-instruction model (tools/.../compiler/Estimator.scala),
"size" being the encoded field (vectors - 1):

    NoOp, Skipped     1 cycle (Skipped: a word the RTL ignores)
    MatMul            size+1 after a MatMul, size+1+N after a LoadWeights, else size+1+2N
    SIMD              1
    LoadWeights       size+1
    DataMove          size+1 (DRAM and local<->accumulator alike)
    Configure         0

`MemoryAwareModel` keeps that for the on-chip work and prices DataMoves to and from DRAM as
AXI traffic: a vector of N scalars is ceil(N * bytes * 8 / bus_bits) beats (N/4 for FP16 on
the 64-bit bus); a contiguous run is cut into requests of whole vectors of at most 256 beats
(85 vectors for N = 12), each split again where it crosses a 4 KiB boundary (the RTL's
Converter and MemBoundarySplitter); a strided run is one request per vector. Each burst
waits `read_latency` or `write_latency` cycles before its beats. The latencies are guesses
(Tensil's own commented-out model used 32 read setup cycles), to be calibrated against the
RTL's cycle counts.
"""

import dataclasses
from typing import Dict, Iterable, List, Optional, Tuple

from .arch import Architecture
from .isa import SIMD, DataMove, DataMoveKind, Instruction, LoadWeights, MatMul, NoOp, Skipped
from .isa import mnemonic as kind_name

__all__ = ["Estimate", "KindTotals", "MemoryAwareModel", "MemoryModel", "TensilLatencyModel",
           "estimate", "estimate_memory_aware"]

_DRAM_READS = (DataMoveKind.DRAM0_TO_LOCAL, DataMoveKind.DRAM1_TO_LOCAL)
_DRAM_WRITES = (DataMoveKind.LOCAL_TO_DRAM0, DataMoveKind.LOCAL_TO_DRAM1)


@dataclasses.dataclass
class KindTotals:
    count: int = 0
    cycles: int = 0
    energy: int = 0


@dataclasses.dataclass
class Estimate:
    """Totals of a program and per instruction kind (`isa.mnemonic` names)."""

    cycles: int = 0
    energy: int = 0
    by_kind: Dict[str, KindTotals] = dataclasses.field(default_factory=dict)

    def add(self, instruction: Instruction, cycles: int, energy: int) -> None:
        self.cycles += cycles
        self.energy += energy
        totals = self.by_kind.setdefault(kind_name(instruction), KindTotals())
        totals.count += 1
        totals.cycles += cycles
        totals.energy += energy

    def table(self) -> List[Tuple[str, int, int, int]]:
        """(kind, count, cycles, energy) rows, most cycles first."""
        rows = [(k, t.count, t.cycles, t.energy) for k, t in self.by_kind.items()]
        return sorted(rows, key=lambda r: (-r[2], r[0]))


class TensilLatencyModel:
    """Tensil's Estimator: per-instruction cycles and energy, remembering the previous opcode."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.previous: type = NoOp

    def step(self, instruction: Instruction) -> Tuple[int, int]:
        n = self.arch.array_size
        if isinstance(instruction, (NoOp, Skipped)):
            result = (1, 0)
        elif isinstance(instruction, MatMul):
            vectors = instruction.size + 1
            fill = 0 if self.previous is MatMul else n if self.previous is LoadWeights else 2 * n
            result = (vectors + fill, vectors * n * n)
        elif isinstance(instruction, SIMD):
            result = (1, n)
        elif isinstance(instruction, LoadWeights):
            result = (instruction.size + 1, 10 * (instruction.size + 1))
        elif isinstance(instruction, DataMove):
            vectors = instruction.size + 1
            dram = instruction.kind in _DRAM_READS + _DRAM_WRITES
            result = (vectors, (100 if dram else 10) * vectors)
        else:   # Configure
            result = (0, 0)
        self.previous = type(instruction)
        return result


@dataclasses.dataclass(frozen=True)
class MemoryModel:
    """AXI timing of the DRAM ports (cycles of the accelerator clock)."""

    bus_bits: int = 64
    read_latency: int = 32
    write_latency: int = 32
    beat_cycles: int = 1
    max_burst_beats: int = 256
    boundary_bytes: int = 4096

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            low = 0 if field.name.endswith("latency") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError("MemoryModel.%s is %r; must be an integer >= %d" % (
                    field.name, value, low))
        if self.bus_bits % 8:
            raise ValueError("MemoryModel.bus_bits must be a whole number of bytes")


class MemoryAwareModel(TensilLatencyModel):
    """Tensil's model with DRAM DataMoves priced as AXI bursts and beats."""

    def __init__(self, arch: Architecture, memory: Optional[MemoryModel] = None):
        super().__init__(arch)
        self.memory = memory = memory or MemoryModel()
        self.beats_per_vector = -(-arch.vector_bytes * 8 // memory.bus_bits)

    def bursts(self, address: int, vectors: int, stride: int) -> int:
        """AXI bursts of a move of `vectors` vectors from DRAM vector `address`.

        A contiguous move is cut into requests of whole vectors of at most max_burst_beats
        beats, each split again where it crosses a boundary; a strided move is one request
        per vector.
        """
        size = self.arch.vector_bytes
        per_request = 1 if stride else max(1, self.memory.max_burst_beats
                                           // self.beats_per_vector)
        step = 1 << stride
        boundary = self.memory.boundary_bytes
        count = 0
        for first in range(0, vectors, per_request):
            lo = (address + first * step) * size
            hi = lo + min(per_request, vectors - first) * size
            count += 1 + (hi - 1) // boundary - lo // boundary
        return count

    def step(self, instruction: Instruction) -> Tuple[int, int]:
        cycles, energy = super().step(instruction)
        if isinstance(instruction, DataMove) and instruction.kind in _DRAM_READS + _DRAM_WRITES:
            vectors = instruction.size + 1
            latency = (self.memory.read_latency if instruction.kind in _DRAM_READS
                       else self.memory.write_latency)
            bursts = self.bursts(instruction.address, vectors, instruction.stride)
            cycles = bursts * latency + vectors * self.beats_per_vector * self.memory.beat_cycles
        return cycles, energy


def _run(model: TensilLatencyModel, program: Iterable[Instruction]) -> Estimate:
    result = Estimate()
    for instruction in program:
        cycles, energy = model.step(instruction)
        result.add(instruction, cycles, energy)
    return result


def estimate(program: Iterable[Instruction], arch: Architecture) -> Estimate:
    """Tensil's cycle and energy estimate of a decoded program."""
    return _run(TensilLatencyModel(arch), program)


def estimate_memory_aware(program: Iterable[Instruction], arch: Architecture,
                          memory: Optional[MemoryModel] = None) -> Estimate:
    """The estimate with DRAM traffic counted in AXI beats and bursts."""
    return _run(MemoryAwareModel(arch, memory), program)
