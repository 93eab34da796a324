"""Cycle estimates of a Tensil program: Tensil's latency model and a memory-aware variant.

`TensilLatencyModel` is the compiler's per-instruction model (tools/.../compiler/Estimator.scala),
"size" being the encoded field (vectors - 1):

    NoOp, Skipped     1 cycle (Skipped: a word the RTL ignores)
    MatMul            size+1 after a MatMul, size+1+N after a LoadWeights, else size+1+2N
    SIMD              1
    LoadWeights       size+1
    DataMove          size+1 (DRAM and local<->accumulator alike)
    Configure         0

`MemoryAwareModel` is calibrated against the RTL (co-simulation of the 12x12 RTL with the
default memory model, `tensil_tools.cosim.DramModel()`, whose latencies `MemoryModel`'s defaults
equal; `make bench-tensil` prints estimate vs RTL per program). It keeps the instruction
stream serial, as the RTL's decoder, local-memory ports and routers make it in practice, and
prices each instruction as the RTL was measured to run it:

    NoOp, Skipped, Configure   1 (the decoder takes one word a cycle)
    LoadWeights                size+1, plus 2N-1 right after a MatMul (the array drains)
    MatMul                     size+1, plus 1 when it accumulates and the instruction before
                               is not an accumulating MatMul (the array switches mode)
    DataMove local<->acc       size+1 (acc->local +2), plus 2N-1 right after a MatMul
    SIMD                       1.25 (no flags), 1.5 (Write), 2 (Read), 4 (Read and Write);
                               0 with no flags right after a Read and Write one (it runs
                               while that one writes)
    DataMove DRAM -> local     max(beats, (requests - 1) * 4.34 + N/4) + read_latency + 5,
                               after the last DRAM write's answer: write_latency + 3 after
                               that write ends (the host router waits for it), less what
                               ran in between
    DataMove local -> DRAM     max(beats, requests * 14/3) + 1; an on-chip instruction right
                               after it hides up to 13 cycles of it (the write's last beats
                               stream meanwhile)

and the last instruction's drain (2N+1 after a MatMul, write_latency + 4 after a DRAM
write). A vector of N scalars is ceil(N * bytes * 8 / bus_bits) beats (N/4 for FP16 on the
64-bit bus), each `beat_cycles`; a contiguous run is cut into requests of whole vectors of
at most 256 beats (85 vectors for N = 12), each split again where it crosses a 4 KiB
boundary, except that a request whose only beat past the boundary is its last goes out whole
(the RTL's MemBoundarySplitter misses that case); a strided run is one request per vector.
Fractions of a cycle are carried, not rounded away per instruction.
"""

import collections
import dataclasses
import math
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from .arch import Architecture
from .isa import (
    SIMD,
    Configure,
    DataMove,
    DataMoveKind,
    Instruction,
    LoadWeights,
    MatMul,
    NoOp,
    Skipped,
)
from .isa import mnemonic as kind_name

__all__ = ["DRAM_LATENCY_NS", "Estimate", "KindTotals", "MemoryAwareModel", "MemoryModel", "TensilLatencyModel", "axi_requests",
           "boundary_violations", "crosses_boundary", "estimate", "estimate_memory_aware"]

_DRAM_READS = (DataMoveKind.DRAM0_TO_LOCAL, DataMoveKind.DRAM1_TO_LOCAL)
_DRAM_WRITES = (DataMoveKind.LOCAL_TO_DRAM0, DataMoveKind.LOCAL_TO_DRAM1)
_DRAM_KINDS = _DRAM_READS + _DRAM_WRITES


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

    def add_drain(self, cycles: int) -> None:
        """Cycles after the last instruction until its effects land (row "(drain)")."""
        self.cycles += cycles
        self.by_kind["(drain)"] = KindTotals(0, cycles, 0)

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


DRAM_LATENCY_NS = 200.0   # an unloaded read through a Zynq HP port (cosim.DramModel's estimate)


@dataclasses.dataclass(frozen=True)
class MemoryModel:
    """AXI timing of the DRAM ports (cycles of the accelerator clock): the latencies of
    `tensil_tools.cosim.DramModel` plus the RTL's own costs, measured in co-simulation."""

    bus_bits: int = 64
    read_latency: int = 10          # AR handshake to the first R beat (DramModel's default)
    write_latency: int = 10         # last W beat to the B response (DramModel's default)
    beat_cycles: int = 1            # cycles per data beat (DramModel.beat_interval)
    max_burst_beats: int = 256
    boundary_bytes: int = 4096
    read_setup: float = 5.0         # cycles a DRAM read adds to read_latency (RTL, measured)
    read_request_cycles: float = 4.34    # the RTL issues a read request at most this often
    write_request_cycles: float = 14 / 3    # ... and a write request
    write_setup: float = 1.0
    turnaround: float = 3.0         # a read after a write waits write_latency + this
    write_overlap: float = 13.0     # an on-chip instruction after a DRAM write overlaps it

    @classmethod
    def at_clock(cls, clock_mhz: float, latency_ns: float = DRAM_LATENCY_NS) -> "MemoryModel":
        """The model for a TCU clocked at `clock_mhz`: a DRAM answering reads and writes after
        `latency_ns` (an unloaded Zynq HP port's by default), in its cycles; the one conversion
        `tensil_tools.cosim.DramModel.zynq_hp` uses too."""
        if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) or not 1.0 <= clock_mhz <= 1000.0:
            raise ValueError("clock_mhz must be a number in [1, 1000], got %r" % (clock_mhz,))
        cycles = max(1, int(math.ceil(latency_ns * clock_mhz / 1000.0)))
        return cls(read_latency=cycles, write_latency=cycles)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            low = 0 if field.name.endswith(("latency", "setup", "turnaround", "overlap")) else 1
            number = (int, float) if field.type is float else (int,)
            if isinstance(value, bool) or not isinstance(value, number) or value < low:
                raise ValueError("MemoryModel.%s is %r; must be %s >= %d" % (
                    field.name, value, "a number" if field.type is float else "an integer",
                    low))
        if self.bus_bits % 8:
            raise ValueError("MemoryModel.bus_bits must be a whole number of bytes")


def axi_requests(arch: Architecture, address: int, vectors: int, stride: int,
                 memory: Optional["MemoryModel"] = None) -> Iterator[Tuple[int, int, bool]]:
    """The AXI requests the RTL makes for a DRAM move of `vectors` vectors from DRAM vector
    `address`: (first byte, end byte, whether it crosses a boundary with its last beat alone).

    A contiguous move is cut into requests of whole vectors of at most max_burst_beats beats,
    each split again where it crosses a boundary, except that a request whose only beat past
    the boundary is its last goes out whole, as one burst across it (an AXI violation the RTL
    makes: tests/test_tensil_cosim.py shows it); a strided move is one request per vector."""
    memory = memory or MemoryModel()
    size = arch.vector_bytes
    beat = memory.bus_bits // 8
    per_request = 1 if stride else max(1, memory.max_burst_beats // -(-size // beat))
    step = 1 << stride
    boundary = memory.boundary_bytes
    for first in range(0, vectors, per_request):
        lo = (address + first * step) * size
        hi = lo + min(per_request, vectors - first) * size
        alone = (hi - 1) // boundary - lo // boundary == 1 and hi - (hi - 1) // boundary * boundary <= beat
        yield lo, hi, alone


def crosses_boundary(move: DataMove, arch: Architecture, shift: int = 0,
                     memory: Optional["MemoryModel"] = None) -> bool:
    """Whether a DRAM move, its address moved by `shift` vectors, makes the RTL send a burst
    across a 4 KiB boundary (axi_requests)."""
    return any(alone for _, _, alone in axi_requests(arch, move.address + shift, move.size + 1, move.stride,
                                                      memory))


def boundary_violations(instructions: Sequence[Instruction], arch: Architecture,
                        memory: Optional["MemoryModel"] = None) -> List[Tuple[int, DataMove]]:
    """(index, instruction) of every DRAM move that crosses_boundary: what a program must not contain."""
    return [(index, instruction) for index, instruction in enumerate(instructions)
            if isinstance(instruction, DataMove) and instruction.kind in _DRAM_KINDS
            and crosses_boundary(instruction, arch, 0, memory)]


SIMD_CYCLES = {(False, False): 1.25, (False, True): 1.5, (True, False): 2.0, (True, True): 4.0}
# A DRAM move after a run of SIMDs runs beside the work still queued of the run's last
# SIMD_QUEUE_DEPTH SIMDs at most (measured: 25 Read+Write SIMDs' 100 cycles, 25 read-only ones'
# 50, eight and a half LeakyReLU vectors' 51, whatever the run's length)
SIMD_QUEUE_DEPTH = 25
READ_BESIDE_SIMDS = 3.0     # what such a read costs at least


class MemoryAwareModel(TensilLatencyModel):
    """The RTL-calibrated model: serial instructions, DRAM moves priced as AXI requests and
    beats, the array's fill and drain, the routers' turnarounds."""

    def __init__(self, arch: Architecture, memory: Optional[MemoryModel] = None):
        super().__init__(arch)
        self.memory = memory = memory or MemoryModel()
        self.beats_per_vector = -(-arch.vector_bytes * 8 // memory.bus_bits)
        self._exact = 0.0           # cycles so far, fractions kept
        self._write_answered = 0.0  # when the last DRAM write's response is back (cycles)
        self._last: Optional[Instruction] = None
        self._write_tail = 0.0      # cycles of the last DRAM write the next instruction hides
        # SIMD cycles since the last MatMul when only SIMDs followed it (its drain still
        # pending for the array and the accumulator moves), else None
        self._simd_since_matmul: Optional[float] = None
        self._simds_since_matmul = 0   # how many SIMDs that is
        # the SIMD work the decoder has queued ahead of their execution: each SIMD of the run
        # since the last other instruction, its cycles less the decoder's one; and the cycles of
        # the run's last SIMD_QUEUE_DEPTH SIMDs, which bound what a DRAM move runs beside
        self._simd_queue = 0.0
        self._simd_tail: Deque[float] = collections.deque(maxlen=SIMD_QUEUE_DEPTH)

    def bursts(self, address: int, vectors: int, stride: int) -> int:
        """AXI bursts of a move of `vectors` vectors from DRAM vector `address` (axi_requests)."""
        boundary = self.memory.boundary_bytes
        count = 0
        for lo, hi, alone in axi_requests(self.arch, address, vectors, stride, self.memory):
            count += 1 + (0 if alone else (hi - 1) // boundary - lo // boundary)
        return count

    def _cost(self, instruction: Instruction) -> float:
        n, m = self.arch.array_size, self.memory
        previous = self.previous
        if isinstance(instruction, (NoOp, Skipped, Configure)):
            return 1.0
        array_drain = 2 * n - 1   # a MatMul's results land this long after its last vector
        drain = array_drain if self._simd_since_matmul is not None else 0
        if isinstance(instruction, LoadWeights):
            # The array drains the last MatMul first; SIMDs after that MatMul run once it has
            # drained, beside this load (measured: up to the load's own size+1 cycles of them).
            pushes = instruction.size + 1.0
            return pushes + drain - min(self._simd_since_matmul or 0.0, pushes)
        if isinstance(instruction, MatMul):   # the array switches into accumulating: a cycle
            switch = instruction.accumulate and not (previous is MatMul and self._last.accumulate)  # type: ignore
            return instruction.size + 1.0 + switch
        if isinstance(instruction, SIMD):
            if not (instruction.read or instruction.write) and isinstance(self._last, SIMD) and (
                    self._last.read and self._last.write):
                return 0.0   # measured: runs while the Read+Write SIMD before it writes
            return SIMD_CYCLES[(instruction.read, instruction.write)]
        assert isinstance(instruction, DataMove)
        vectors = instruction.size + 1
        if instruction.kind not in _DRAM_READS + _DRAM_WRITES:
            extra = 2 if instruction.kind == DataMoveKind.ACC_TO_LOCAL else 0
            return vectors + extra + drain   # SIMDs since the MatMul do not run beside it
        beats = vectors * self.beats_per_vector * m.beat_cycles
        requests = self.bursts(instruction.address, vectors, instruction.stride)
        if instruction.kind in _DRAM_READS:
            wait = max(0.0, self._write_answered - self._exact)   # the host router waits for it
            first = self.beats_per_vector * m.beat_cycles   # the first request's beats
            # SIMDs between a MatMul and this read waited for the array's drain while the
            # decoder went on: the read and the drain run beside them, each SIMD then costing
            # the decoder's cycle (measured: up to the drain and the read's latency)
            cost = wait + max(beats, (requests - 1) * m.read_request_cycles + first) + m.read_latency + m.read_setup
            if self._simd_since_matmul == 0.0:   # right after a MatMul: the load waits for its
                return max(cost, array_drain)     # drain however short the read (measured)
            if self._simd_since_matmul:
                return cost - min(self._simd_since_matmul - self._simds_since_matmul,
                                  array_drain + m.read_latency + m.read_setup)
            # After SIMDs alone, the read runs beside the SIMD work still queued (measured:
            # at most the last SIMD_QUEUE_DEPTH SIMDs' cycles, and the read costs
            # READ_BESIDE_SIMDS at least).
            return cost - max(0.0, min(self._simd_queue, sum(self._simd_tail), cost - READ_BESIDE_SIMDS))
        return max(beats, requests * m.write_request_cycles) + m.write_setup

    def step(self, instruction: Instruction) -> Tuple[int, int]:
        cost = self._cost(instruction)           # reads the previous instruction's kind
        kind = instruction.kind if isinstance(instruction, DataMove) else None
        dram = kind in _DRAM_READS + _DRAM_WRITES
        writes = kind in _DRAM_WRITES
        if self._write_tail and not dram:        # runs while the write's last beats stream
            hidden = min(self._write_tail, cost)
            cost -= hidden
        self._write_tail = min(self.memory.write_overlap, cost) if writes else 0.0
        if isinstance(instruction, SIMD):
            self._simd_queue += cost - 1.0
            self._simd_tail.append(cost)
        else:
            self._simd_queue = 0.0
            self._simd_tail.clear()
        if isinstance(instruction, MatMul):
            self._simd_since_matmul, self._simds_since_matmul = 0.0, 0
        elif isinstance(instruction, SIMD) and self._simd_since_matmul is not None:
            self._simd_since_matmul += cost
            self._simds_since_matmul += 1
        else:
            self._simd_since_matmul = None
        _, energy = super().step(instruction)    # Tensil's energy; records this kind
        self._last = instruction
        before = round(self._exact)
        self._exact += cost
        if writes:
            self._write_answered = self._exact + self.memory.write_latency + self.memory.turnaround
        return round(self._exact) - before, energy

    def drain(self) -> int:
        """Cycles after the last instruction until its effects have landed."""
        n, m = self.arch.array_size, self.memory
        last = self._last
        if isinstance(last, MatMul):
            return 2 * n + 1
        if isinstance(last, DataMove) and last.kind in _DRAM_WRITES:
            return m.write_latency + 4
        return 0


def _run(model: TensilLatencyModel, program: Iterable[Instruction]) -> Estimate:
    result = Estimate()
    for instruction in program:
        cycles, energy = model.step(instruction)
        result.add(instruction, cycles, energy)
    if isinstance(model, MemoryAwareModel):
        result.add_drain(model.drain())
    return result


def estimate(program: Iterable[Instruction], arch: Architecture) -> Estimate:
    """Tensil's cycle and energy estimate of a decoded program."""
    return _run(TensilLatencyModel(arch), program)


def estimate_memory_aware(program: Iterable[Instruction], arch: Architecture,
                          memory: Optional[MemoryModel] = None) -> Estimate:
    """The RTL-calibrated estimate: DRAM traffic in AXI requests and beats, the array's fill
    and drain, the routers' turnarounds (a "(drain)" row holds the last instruction's)."""
    return _run(MemoryAwareModel(arch, memory), program)
