"""A bit-exact emulator of the Tensil accelerator (numpy, vectorised over vectors and lanes).

State, as in the RTL (facts §2.5; rtl/.../tcu/*.scala): DRAM0 and DRAM1 (arrays of vectors
given by the caller), local memory, accumulators (the same 16-bit type: no wider
accumulator), the systolic array's weight registers (row 0 the bias, rows 1..N the weights
of input lanes 0..N-1), the SIMD registers of every ALU lane, the DRAM offsets that
Configure sets, and the one vector a SIMD Read can leave waiting at the ALU's input. Local
memory and the accumulators start at zero unless given; the RTL's weight and SIMD
registers reset to zero.

Semantics, with the 12x12 RTL as the judge (tests/test_tensil_rtl.py compares every memory):
- LoadWeights pushes local[a + size*step], ..., local[a] (or zero vectors) into the array;
  each push shifts every row down one (new -> bias -> w0 -> ... -> w(N-1)), so after N+1
  pushes local[a] is the bias and local[a + k] the weights of input lane k-1.
- MatMul: for each input vector x, p = bias, then p = mac(x_j, w_j, p) for j = 0..N-1
  (round half even and saturate at every step); the accumulator gets p, or sat(acc + p).
- DataMove copies vectors; local->acc with accumulate adds with saturation.
- Runs of local and accumulator addresses wrap modulo 2^address bits, as the RTL's
  address counters do; a DRAM run with a stride wraps modulo 2^DRAM address bits, a
  contiguous one is one byte-addressed request and does not. DRAM vector v lies at byte
  offset + v * vector bytes of the array given, the offset being what Configure set
  (value << 16); a Configure takes effect at once.
- SIMD follows the RTL's ALU array and its accumulator port (AccumulatorWithALUArray.scala,
  ALUArray.scala). The result always reaches the ALU output, so Write stores it in
  acc[write] (added with Accumulate) even when dest is a register. An op "takes input" when
  it is not NoOp or Zero and a source is 0 (Op.isUnary is always false in the RTL, so
  Move(r1, in) takes input too). A Read sends acc[read] to the ALU's input, which holds one
  vector: an op that takes input takes the waiting vector if there is one, else its own
  Read's; a Read whose op takes no input (Zero, register/register sources) leaves its vector
  waiting for the next input-taking SIMD, whose result then shifts by one instruction.
  `simd_problem` names the cases that jam the RTL's SIMD data path (later accumulator and
  SIMD work never completes and the instruction stream stops once its queues fill), and
  `AccumulatorPort` adds a move out of the accumulators while a vector waits and the one
  Read+Write SIMD whose fate on the RTL depends on timing (it can lose its write and hang
  the port); the emulator refuses them with EmulatorError.
- Where the RTL's result depends on timing rather than on the program, the emulator follows
  program order and records a hazard in the report: a Configure of a DRAM offset after a
  DataMove on that DRAM (the RTL applies the new offset to requests still being issued); a
  MatMul, DataMove or SIMD without Read accumulating into an address close behind another
  accumulating write to it (the RTL's accumulate reads the old value without a lock).

`run(program, dram0, dram1, arch)` mirrors `tensil_tools.cosim.run`: `.tprog` bytes are decoded as
the RTL reads them (`strict=False`), and it returns the DRAMs and a report with the final
local memory and accumulators, instruction counts per kind, MACs, hazards and Tensil's cycle
estimate; `run_model` runs a `.tmodel` with float inputs the way Tensil's PYNQ driver does.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import machine
from .arch import Architecture, instruction_layout
from .errors import EmulatorError, TensilError
from .estimate import Estimate, TensilLatencyModel
from .fixed import (
    FixedFormat,
    add,
    alu,
    fixed_format,
)
from .isa import (
    SIMD,
    ConfigRegister,
    Configure,
    DataMove,
    DataMoveKind,
    Instruction,
    LoadWeights,
    MatMul,
    NoOp,
    SimdOp,
    Skipped,
    decode_program,
    footprint,
    format_instruction,
)
from .machine import MachineRun, Program
from .tmodel import TensilModel

__all__ = ["AccumulatorPort", "DRAINING_PUSHES", "Emulator", "EmulatorReport", "lands_earlier_accumulates",
           "mac_chain", "run", "run_model", "simd_flow", "simd_problem", "simd_takes_input"]

_MAX_ONCHIP_SCALARS = 1 << 25   # local + accumulators: 256 MiB of int64 at most
_CHUNK_ELEMENTS = 1 << 16       # products held at once by the MatMul kernel
_ADDRESS_SPACE = 1 << 32         # bytes each DRAM master addresses
_JAM = ("the RTL's SIMD data path jams: %s; no later accumulator or SIMD instruction "
        "completes and the instruction stream stops once its queues fill")
_NOOP_JAM = (
    "the RTL's SIMD data path jams: the SIMD NoOp with Read/Write is the accumulator port's "
    "DataMove path used without a DataMove. With Read it leaves acc[read] at the port's "
    "output to local memory, so every later SIMD Read waits forever and every later move from "
    "the accumulators to local memory lands one vector late; with Write the port waits for a "
    "vector from local memory or the array, so the next move into the accumulators lands one "
    "vector early (its first vector at the NoOp's address). Either way one transfer stays "
    "outstanding forever: the RTL never completes the program")


@dataclasses.dataclass
class EmulatorReport:
    """What a run executed: counts and Tensil's estimate per kind, MACs, wall time."""

    instructions: int = 0
    macs: int = 0
    seconds: float = 0.0
    saturated_inputs: int = 0
    estimate: Estimate = dataclasses.field(default_factory=Estimate)
    # where the RTL's result depends on timing, not on the program (the emulator follows
    # program order), one sentence each
    hazards: List[str] = dataclasses.field(default_factory=list)
    # the final on-chip memories, set by `run` (storage type of the format)
    local: Optional[np.ndarray] = None
    accumulators: Optional[np.ndarray] = None

    @property
    def cycles(self) -> int:
        return self.estimate.cycles

    @property
    def counts(self) -> Dict[str, int]:
        return {k: t.count for k, t in sorted(self.estimate.by_kind.items())}


def mac_chain(x: np.ndarray, weights: np.ndarray, fmt: FixedFormat) -> np.ndarray:
    """The systolic array on input vectors x (V, N) with weights (N+1, N): (V, N) results.

    p = bias; p = mac(x_j, w_j, p) for j in lane order. Since p << frac has no low bits,
    mac(x, w, p) = sat(c + p + (tie & (c + p) & 1)) with c = (x*w + half - 1) >> frac (the
    product rounded half down) and tie = (the product's low bits are exactly one half).
    The products are formed for all lanes at once (int32 where they fit: formats of at most
    16 bits). When no partial sum can reach the format's limits (|bias| + sum_j max|x_j|
    max|w_j| / 2^frac + 2N within range) the chain is a running sum with sparse tie fixes
    (`_exact_chain`); otherwise a loop over the N input lanes adds, fixes ties and saturates.
    """
    dtype = np.int32 if fmt.width <= 16 else np.int64
    x = np.asarray(x).astype(dtype)
    v, n = x.shape
    bias, w = weights[0].astype(np.int64), weights[1:].astype(dtype)
    f = fmt.frac_bits
    half, mask = dtype(1 << (f - 1)), dtype((1 << f) - 1)
    top = (np.abs(x).max(axis=0).astype(np.int64) * np.abs(w).max(axis=1)) >> f if v else 0
    safe = int(np.abs(bias).max()) + int(np.sum(top)) + 2 * n <= fmt.max_raw
    out = np.empty((v, n), dtype=np.int64)
    rows = max(1, _CHUNK_ELEMENTS // (n * n))
    for start in range(0, v, rows):
        xt = np.ascontiguousarray(x[start:start + rows].T)
        products = xt[:, :, None] * w[:, None, :]          # (j, rows, k)
        tie = (products & mask) == half
        products += half - 1
        products >>= f                                      # c: rounded half down
        if safe:
            out[start:start + rows] = _exact_chain(products, tie, bias)
            continue
        ties = tie.astype(dtype)
        p = np.empty((xt.shape[1], n), dtype=dtype)
        p[:] = bias
        t = np.empty_like(p)
        for j in range(n):
            p += products[j]
            np.bitwise_and(p, ties[j], out=t)
            p += t
            if not safe:
                np.minimum(p, fmt.max_raw, out=p)
                np.maximum(p, fmt.min_raw, out=p)
        out[start:start + rows] = p
    return out


def _exact_chain(c: np.ndarray, tie: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The chain without saturation: bias + sum of c, plus the tie fixes.

    A tie at step j adds 1 when the partial sum so far (bias + c_0..c_j + earlier fixes) is
    odd, so only the lanes holding a tie need the step-by-step walk; it runs on them alone.
    """
    n, rows, width = c.shape
    result = c.sum(axis=0, dtype=np.int64)
    result += bias
    lanes = np.flatnonzero(tie.any(axis=0))
    if lanes.size:
        steps = c.reshape(n, -1)[:, lanes].astype(np.int64)
        ties = tie.reshape(n, -1)[:, lanes]
        p = bias[lanes % width].astype(np.int64)
        for j in range(n):
            p += steps[j]
            p += ties[j] & p & 1
        result.reshape(-1)[lanes] = p
    return result


def simd_takes_input(instruction: SIMD) -> bool:
    """Whether the ALU consumes an input vector: the RTL's ALUArray.inputNeeded (its
    Op.isUnary is always false, so a unary op with a source 0 anywhere takes input)."""
    if instruction.op in (SimdOp.NOOP, SimdOp.ZERO):
        return False
    return instruction.left == 0 or instruction.right == 0


def simd_problem(instruction: SIMD, waiting: bool = False) -> Optional[str]:
    """Why this SIMD instruction jams the RTL, or None when it runs; `waiting`: an earlier
    SIMD Read left a vector at the ALU's input (checked on the 12x12 RTL)."""
    if instruction.op == SimdOp.NOOP:
        if instruction.read or instruction.write:
            return _NOOP_JAM
        return None
    if instruction.read and instruction.write and instruction.left and instruction.right:
        return _JAM % ("Read+Write with register/register sources issues no read and no ALU "
                       "operation, so its accumulator write waits for a result that never comes")
    takes = simd_takes_input(instruction)
    if takes and not instruction.read and not waiting:
        return _JAM % ("%s takes the accumulator input but Read is not set and no earlier Read "
                       "left a vector waiting" % instruction.op.name)
    if instruction.read and not takes and waiting:
        return _JAM % ("Read for %s, which takes no input, while an earlier Read's vector still "
                       "waits at the ALU's input (it holds one)" % instruction.op.name)
    return None


def simd_flow(instruction: SIMD, waiting: bool) -> Tuple[bool, bool]:
    """(takes the waiting vector, leaves a vector waiting) for an instruction that runs.

    An input-taking op takes the waiting vector before its own Read's; a Read that no op
    takes stays waiting for the next input-taking SIMD.
    """
    if instruction.op == SimdOp.NOOP:
        return False, waiting
    takes = simd_takes_input(instruction)
    if takes:
        return waiting, waiting and instruction.read
    return False, waiting or instruction.read


_TIMING = (
    "timing-dependent on the RTL: a Zero with Read and Write left its vector waiting, the "
    "next accumulator instruction (a SIMD without Read) took it, and now a SIMD with Read and "
    "Write follows; co-simulation shows the RTL losing this one's write when it arrives an "
    "odd number of cycles later (2 or 3 or more, depending on the one before), after which "
    "the accumulator port waits forever; the cycle distance depends on timing the program "
    "does not fix")


def run_addresses(address: int, size: int, stride: int, bits: int) -> np.ndarray:
    """The vectors of an on-chip run: address + i * 2^stride for i in 0..size, modulo
    2^bits; read-only. Short runs are cached: a program repeats its runs frame after frame."""
    if size < _CACHED_RUN:
        return _cached_run(address, size, stride, bits)
    return (address + (np.arange(size + 1, dtype=np.int64) << stride)) & ((1 << bits) - 1)


_CACHED_RUN = 64   # vectors: bounds the cache below 16384 * 64 * 8 bytes = 8 MiB


@functools.lru_cache(maxsize=16384)
def _cached_run(address: int, size: int, stride: int, bits: int) -> np.ndarray:
    addresses = (address + (np.arange(size + 1, dtype=np.int64) << stride)) & ((1 << bits) - 1)
    addresses.flags.writeable = False
    return addresses


def _uses_accumulator_port(instruction: Instruction) -> bool:
    if isinstance(instruction, SIMD):
        return instruction.op != SimdOp.NOOP or instruction.read or instruction.write
    if isinstance(instruction, DataMove):
        return instruction.kind in (DataMoveKind.ACC_TO_LOCAL, DataMoveKind.LOCAL_TO_ACC,
                                    DataMoveKind.LOCAL_TO_ACC_ACCUMULATE)
    return isinstance(instruction, MatMul)


# A LoadWeights waits for the array to drain before its pushes: from its 4th push on, the
# accumulating writes of the MatMuls before it have landed (measured on the 12x12 RTL: an
# accumulate right after a LoadWeights of 1-3 pushes reads the old value, after 4-13 never).
DRAINING_PUSHES = 4


def lands_earlier_accumulates(instruction: Instruction) -> bool:
    """Whether `instruction` is a LoadWeights after which no accumulating write of the MatMuls
    before it can still be on its way (the emulator's hazard check, the compiler's spacers)."""
    return isinstance(instruction, LoadWeights) and instruction.size + 1 >= DRAINING_PUSHES


class AccumulatorPort:
    """What the RTL's accumulator port carries from one instruction to the next, as far as it
    decides which instructions run and which results depend on timing: whether a SIMD Read's
    vector waits at the ALU's input; how far the chain that makes a Read+Write SIMD
    timing-dependent has got (1: the last port instruction was a Zero with Read and Write
    that left its vector; 2: then a SIMD without Read took it); and, per accumulator
    address, the last accumulating write that may still be on its way (the RTL's accumulate
    reads the old value as the request arrives and takes no lock, so a second accumulating
    write close behind adds to a stale value). Distances count accumulator-port operations
    (a vector of a MatMul or DataMove, a SIMD instruction), not cycles: idle cycles only
    widen them, so the check is conservative; a LoadWeights long enough to outlast the
    array's drain ends a MatMul's window. The emulator, the reference and progen share it.
    """

    def __init__(self, arch: Architecture):
        lay = instruction_layout(arch)
        self.waiting = False
        self.chain = 0
        self.bits = lay.accumulator_bits
        self.mask = (1 << self.bits) - 1
        self.ops = 0                                      # accumulator-port operations so far
        self.last = np.full(self.mask + 1, -(1 << 40), dtype=np.int64)  # op of the last
        self.window = np.zeros(self.mask + 1, dtype=np.int64)           # accumulating write
        # a MatMul's sums reach the accumulators 2N+1 cycles after its request; measured
        # stale-read windows: about 2N+5 after a MatMul, 3 after a SIMD or a DataMove
        self.windows = {MatMul: 2 * arch.array_size + 8, DataMove: 8, SIMD: 8}
        # a later MatMul's sums take the same way through the array, so only the next port
        # operation reads stale (measured on the 12x12 RTL: distance 1 lost after a MatMul
        # or a DataMove, 2 and more never, also in the emulator = RTL sweep; the compiler
        # spaces such accumulates by one Zeroes MatMul)
        self.matmul_window = 2
        self._last_writes: Tuple[Any, Tuple[Optional[np.ndarray], bool]] = (None, (None, False))

    def problem(self, instruction: Instruction) -> Optional[str]:
        """Why the RTL would jam or be timing-dependent on `instruction` now, or None."""
        if isinstance(instruction, SIMD):
            jam = simd_problem(instruction, self.waiting)
            if jam is None and self.chain == 2 and instruction.read and instruction.write:
                return _TIMING
            return jam
        if (isinstance(instruction, DataMove) and instruction.kind == DataMoveKind.ACC_TO_LOCAL
                and self.waiting):
            return _JAM % ("the accumulators' output is held by the vector an earlier SIMD "
                           "Read left waiting at the ALU's input, so the move to local memory "
                           "never gets its data")
        return None

    def _writes(self, instruction: Instruction) -> Tuple[Optional[np.ndarray], bool]:
        """(accumulator addresses the instruction writes, whether it accumulates: reads them
        as it writes). Asked twice a step (stale_accumulate, then advance): the last is kept."""
        if self._last_writes[0] is instruction:
            return self._last_writes[1]
        writes: Tuple[Optional[np.ndarray], bool] = (None, False)
        for touch in footprint(instruction):
            if touch.memory == "acc" and "w" in touch.access:
                writes = (run_addresses(touch.address, touch.vectors - 1, touch.stride, self.bits),
                          touch.access == "rw")
                break
        self._last_writes = (instruction, writes)
        return writes

    def stale_accumulate(self, instruction: Instruction) -> Optional[int]:
        """The first address a MatMul, a DataMove or a SIMD without Read accumulates into
        while an earlier accumulating write to it may not have landed (a timing-dependent
        sum), or None."""
        addresses, accumulates = self._writes(instruction)
        if addresses is None or not accumulates or (isinstance(instruction, SIMD)
                                                     and instruction.read):
            return None   # a SIMD with Read writes after its read, which waits its turn
        window = self.window[addresses]
        if isinstance(instruction, MatMul):
            window = np.minimum(window, self.matmul_window)
        close = (self.ops + np.arange(addresses.size)) - self.last[addresses] < window
        return int(addresses[np.argmax(close)]) if close.any() else None

    def advance(self, instruction: Instruction) -> None:
        """The state after `instruction` ran (it had no problem)."""
        if lands_earlier_accumulates(instruction):
            self.last[self.window == self.windows[MatMul]] = -(1 << 40)   # landed
        if not _uses_accumulator_port(instruction):
            return
        if isinstance(instruction, SIMD):
            takes_waiting, leaves = simd_flow(instruction, self.waiting)
            if instruction.read and instruction.write and leaves and not takes_waiting:
                self.chain = 1
            elif self.chain == 1 and takes_waiting and not instruction.read:
                self.chain = 2
            else:
                self.chain = 0
            self.waiting = leaves
        else:
            self.chain = 0
        addresses, accumulates = self._writes(instruction)
        count = 1 if isinstance(instruction, SIMD) else instruction.size + 1  # type: ignore
        if addresses is not None:
            if accumulates:
                self.last[addresses] = self.ops + np.arange(addresses.size)
                self.window[addresses] = self.windows[type(instruction)]
            else:          # a plain write takes the port's lock: later reads wait for it
                self.last[addresses] = -(1 << 40)
        self.ops += count


class Emulator:
    """The machine state and one instruction at a time; `run` executes whole programs."""

    def __init__(self, arch: Architecture, dram0: Optional[np.ndarray] = None,
                 dram1: Optional[np.ndarray] = None, local: Optional[np.ndarray] = None,
                 accumulators: Optional[np.ndarray] = None):
        self.arch = arch
        self.fmt = fixed_format(arch.data_type)
        n = arch.array_size
        if (arch.local_depth + arch.accumulator_depth) * n > _MAX_ONCHIP_SCALARS:
            raise EmulatorError("architecture memories of %d local + %d accumulator vectors "
                                "of %d scalars are too large to emulate" % (
                                    arch.local_depth, arch.accumulator_depth, n))
        # a DRAM array is the image of its master's byte space from 0: Configure offsets and
        # contiguous runs reach past dramX_depth vectors, up to the 32-bit address space
        window = _ADDRESS_SPACE // arch.vector_bytes
        self.dram0 = self._memory("dram0", dram0, None, window)
        self.dram1 = self._memory("dram1", dram1, None, window)
        self.local = self._memory("local", local, arch.local_depth, arch.local_depth)
        self.accumulators = self._memory("accumulators", accumulators, arch.accumulator_depth,
                                         arch.accumulator_depth)
        self.weights = np.zeros((n + 1, n), dtype=np.int64)
        self.registers = np.zeros((arch.simd_registers_depth, n), dtype=np.int64)
        self.config: Dict[ConfigRegister, int] = {}
        self.dram_offsets = [0, 0]              # bytes, as Configure set them
        self.simd_input: Optional[np.ndarray] = None   # the vector a SIMD Read left waiting
        self.port = AccumulatorPort(arch)
        self.report = EmulatorReport()
        self._latency = TensilLatencyModel(arch)
        lay = instruction_layout(arch)
        self._bits = {"local": lay.local_bits, "accumulators": lay.accumulator_bits,
                      "dram0": lay.dram0_bits, "dram1": lay.dram1_bits}
        self._dram_moved = [-1, -1]             # index of the last DataMove on each DRAM
        self._index = 0
        self._chains: Dict[int, np.ndarray] = {}  # MatMul results computed ahead by run()
        self._execute: Dict[type, Callable[[Any], None]] = {MatMul: self._matmul, DataMove: self._datamove,
                         LoadWeights: self._load_weights, SIMD: self._simd,
                         Configure: self._configure}

    def _memory(self, name: str, array: Optional[np.ndarray], vectors: Optional[int],
                depth: int) -> np.ndarray:
        n = self.arch.array_size
        if array is None:
            return np.zeros((vectors or 0, n), dtype=np.int64)
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] != n or array.dtype.kind not in "iu":
            raise ValueError("%s must be an integer array of shape (vectors, %d), got %s %s" % (
                name, n, array.dtype, array.shape))
        if vectors is not None and array.shape[0] != vectors:
            raise ValueError("%s must have %d vectors, got %d" % (name, vectors, array.shape[0]))
        if array.shape[0] > depth:
            raise ValueError("%s has %d vectors; at most %d fit (%s)" % (
                name, array.shape[0], depth, "the 32-bit address space" if vectors is None
                else "the architecture's depth"))
        raw = array.astype(np.int64)
        if raw.size and (raw.min() < self.fmt.min_raw or raw.max() > self.fmt.max_raw):
            raise ValueError("%s holds values outside the %s range %d..%d" % (
                name, self.fmt.name, self.fmt.min_raw, self.fmt.max_raw))
        return raw

    # ------------------------------------------------------------------ execution

    def run(self, program: Program, strict: bool = False) -> EmulatorReport:
        """Execute a program (`.tprog` bytes, read as the RTL reads them unless `strict`, or
        decoded instructions); returns the report."""
        if isinstance(program, (bytes, bytearray, memoryview)):
            program = decode_program(bytes(program), self.arch, strict)
        start = time.perf_counter()
        program = list(program)
        chained_until = 0
        try:
            for index, instruction in enumerate(program):
                self._index = index
                if isinstance(instruction, MatMul) and index >= chained_until:
                    chained_until = self._precompute_chains(program, index)
                try:
                    self.step(instruction)
                except EmulatorError as exc:
                    raise EmulatorError("instruction %d (%s): %s" % (
                        index, _describe(instruction), exc)) from None
        finally:
            self._chains.clear()   # step() outside run() computes its own
        self.report.seconds += time.perf_counter() - start
        return self.report

    def step(self, instruction: Instruction) -> None:
        problem = self.port.problem(instruction)
        if problem:
            raise EmulatorError(problem)
        stale = self.port.stale_accumulate(instruction)
        if stale is not None:
            self.report.hazards.append(
                "instruction %d: accumulates into acc[%d] close behind an earlier accumulating "
                "write to it: the RTL reads the old value as the request arrives "
                "(accumulating writes take no lock), so the sum depends on timing; the "
                "emulator added in program order" % (self._index, stale))
        execute = self._execute.get(type(instruction))
        if execute is None:
            if not isinstance(instruction, (NoOp, Skipped)):
                raise EmulatorError("not a Tensil instruction: %r" % (instruction,))
        else:
            execute(instruction)
        self.port.advance(instruction)
        cycles, energy = self._latency.step(instruction)
        self.report.estimate.add(instruction, cycles, energy)
        self.report.instructions += 1

    def _run(self, memory: str, address: int, size: int, stride: int) -> np.ndarray:
        """The vectors of an on-chip run: address + i * 2^stride modulo 2^address bits."""
        bits = self._bits[memory]
        addresses = run_addresses(address, size, stride, bits)
        depth = self.local.shape[0] if memory == "local" else self.accumulators.shape[0]
        if depth < 1 << bits and int(addresses.max()) >= depth:
            raise EmulatorError("%s vectors %d.. (size %d, step %d) reach vector %d, past the "
                                "%d vectors of %s: undefined on the RTL" % (
                                    memory, address, size, 1 << stride,
                                    int(addresses.max()), depth, memory))
        return addresses

    def _local(self, address: int, size: int, stride: int) -> np.ndarray:
        return self._run("local", address, size, stride)

    def _acc(self, address: int, size: int, stride: int) -> np.ndarray:
        return self._run("accumulators", address, size, stride)

    def dram_bytes(self, which: int, address: int, size: int, stride: int
                   ) -> Tuple[np.ndarray, np.ndarray]:
        """(vector addresses, byte addresses on the master's bus) of a DRAM run, as the RTL
        forms them: the Configure offset plus vector * vector bytes, 32-bit; a strided run
        wraps at the operand's width, a contiguous one does not."""
        steps = np.arange(size + 1, dtype=np.int64) << stride
        bits = self._bits["dram0" if which == 0 else "dram1"]
        vectors = address + steps if not stride else (address + steps) & ((1 << bits) - 1)
        return vectors, (self.dram_offsets[which] + vectors * self.arch.vector_bytes) % _ADDRESS_SPACE

    def _dram(self, which: int, address: int, size: int, stride: int) -> Tuple[np.ndarray, Any]:
        """(DRAM array, index) of a DRAM run: rows when the run is vector-aligned, else the
        scalar positions of every lane in the flat array."""
        name, dram = ("dram0", self.dram0) if which == 0 else ("dram1", self.dram1)
        n, scalar = self.arch.array_size, self.fmt.size_bytes
        vectors, byte = self.dram_bytes(which, address, size, stride)
        first = byte // scalar
        last = int(first.max()) + n
        if last > dram.size:
            raise EmulatorError("%s vector %d (byte 0x%x with the %s offset 0x%x) is past the "
                                "%d vectors given to the emulator" % (
                                    name, int(vectors[np.argmax(first)]),
                                    int(first.max()) * scalar, name, self.dram_offsets[which],
                                    dram.shape[0]))
        self._dram_moved[which] = self._index
        if not np.any(first % n):
            return dram, first // n
        return dram.reshape(-1), first[:, None] + np.arange(n)

    def _precompute_chains(self, program: List[Instruction], first: int) -> int:
        """One mac_chain for a run of consecutive MatMuls: between them neither local memory
        nor the weights change, so their products do not depend on the order; only the
        accumulator writes, done by each MatMul in turn, do. Saves numpy's per-call cost on
        the compiler's many short MatMuls. On any problem the run is left to step(). Returns
        the index after the run."""
        end = first
        while end < len(program) and isinstance(program[end], MatMul):
            end += 1
        runs = [(k, cast(MatMul, program[k])) for k in range(first, end)]   # all MatMuls (the loop above)
        runs = [(k, i) for k, i in runs if not i.zeroes]
        if len(runs) < 2:
            return end
        try:
            rows = [self._local(i.local_address, i.size, i.local_stride) for _, i in runs]
        except EmulatorError:
            return end  # step() reports it at the right instruction
        chained = mac_chain(self.local[np.concatenate(rows)], self.weights, self.fmt)
        start = 0
        for (k, _), r in zip(runs, rows):
            self._chains[k] = chained[start:start + r.size]
            start += r.size
        return end

    def _matmul(self, i: MatMul) -> None:
        acc = self._acc(i.acc_address, i.size, i.acc_stride)
        if i.zeroes:
            result = np.repeat(self.weights[:1], acc.size, axis=0)   # mac(0, w, p) = p
        else:
            chained = self._chains.pop(self._index, None)
            if chained is not None:
                result = chained
            else:
                x = self.local[self._local(i.local_address, i.size, i.local_stride)]
                result = mac_chain(x, self.weights, self.fmt)
            self.report.macs += acc.size * self.arch.array_size ** 2
        if i.accumulate:
            result = add(self.accumulators[acc], result, self.fmt)
        self.accumulators[acc] = result

    def _datamove(self, i: DataMove) -> None:
        local = self._local(i.local_address, i.size, i.local_stride)
        kind = i.kind
        if kind in (DataMoveKind.ACC_TO_LOCAL, DataMoveKind.LOCAL_TO_ACC,
                    DataMoveKind.LOCAL_TO_ACC_ACCUMULATE):
            acc = self._acc(i.address, i.size, i.stride)
            if kind == DataMoveKind.ACC_TO_LOCAL:
                self.local[local] = self.accumulators[acc]
            elif kind == DataMoveKind.LOCAL_TO_ACC:
                self.accumulators[acc] = self.local[local]
            else:
                self.accumulators[acc] = add(self.accumulators[acc], self.local[local], self.fmt)
            return
        which = 0 if kind in (DataMoveKind.DRAM0_TO_LOCAL, DataMoveKind.LOCAL_TO_DRAM0) else 1
        dram, index = self._dram(which, i.address, i.size, i.stride)
        if kind in (DataMoveKind.DRAM0_TO_LOCAL, DataMoveKind.DRAM1_TO_LOCAL):
            self.local[local] = dram[index]
        else:
            dram[index] = self.local[local]

    def _load_weights(self, i: LoadWeights) -> None:
        n = self.arch.array_size
        kept = min(i.size, n) + 1   # the last N+1 pushes survive; the last one is the bias
        if i.zeroes:
            rows = np.zeros((kept, n), dtype=np.int64)
        else:
            addresses = self._local(i.local_address, i.size, i.local_stride)
            rows = self.local[addresses[:kept]]
        self.weights = np.concatenate([rows, self.weights[:n + 1 - kept]])

    def _simd(self, i: SIMD) -> None:
        waiting = self.simd_input is not None
        if i.op == SimdOp.NOOP:
            return
        read = self.accumulators[self._acc(i.read_address, 0, 0)[0]].copy() if i.read else None
        takes_waiting, leaves = simd_flow(i, waiting)
        if takes_waiting:
            inp = self.simd_input
        elif read is not None and simd_takes_input(i):
            inp = read
        else:
            inp = np.zeros(self.arch.array_size, dtype=np.int64)
        self.simd_input = (read if read is not None else self.simd_input) if leaves else None
        assert inp is not None   # simd_flow: a waiting vector exists when it is taken
        left = inp if i.left == 0 else self.registers[i.left - 1]
        right = inp if i.right == 0 else self.registers[i.right - 1]
        result = alu(int(i.op), left, right, inp, self.fmt)
        if i.dest:
            self.registers[i.dest - 1] = result
        if i.write:
            address = self._acc(i.write_address, 0, 0)[0]
            if i.accumulate:
                result = add(self.accumulators[address], result, self.fmt)
            self.accumulators[address] = result

    def _configure(self, i: Configure) -> None:
        self.config[i.register] = i.value
        which = {ConfigRegister.DRAM0_OFFSET: 0, ConfigRegister.DRAM1_OFFSET: 1}.get(i.register)
        if which is None:
            return
        offset = (i.value << 16) % _ADDRESS_SPACE
        changed, self.dram_offsets[which] = offset != self.dram_offsets[which], offset
        if changed and self._dram_moved[which] >= 0:
            self.report.hazards.append(
                "instruction %d: Configure of the DRAM%d offset after the DataMove on DRAM%d at "
                "instruction %d: the RTL applies the new offset to every request not yet issued, "
                "so its result depends on timing; the emulator moved all of it first" % (
                    self._index, which, which, self._dram_moved[which]))

    # ------------------------------------------------------------------ results

    def dram(self, which: int) -> np.ndarray:
        """DRAM0 or DRAM1 as raw values in the format's storage type (int16 for FP16BP8)."""
        return (self.dram0 if which == 0 else self.dram1).astype(self.fmt.dtype)

    def finish(self) -> EmulatorReport:
        """The report with the final local memory and accumulators (storage type)."""
        self.report.local = self.local.astype(self.fmt.dtype)
        self.report.accumulators = self.accumulators.astype(self.fmt.dtype)
        if self.simd_input is not None:
            self.report.hazards.append(
                "the program ends with a vector a SIMD Read left waiting at the ALU's input: "
                "on the RTL the next program's first input-taking SIMD instruction gets it")
        return self.report


def _describe(instruction: Instruction) -> str:
    try:
        return format_instruction(instruction)
    except TensilError:
        return repr(instruction)


def run(program: Program, dram0: np.ndarray, dram1: np.ndarray, arch: Architecture, *,
        local: Optional[np.ndarray] = None, accumulators: Optional[np.ndarray] = None,
        strict: bool = False) -> Tuple[np.ndarray, np.ndarray, EmulatorReport]:
    """Run a program on copies of DRAM0/DRAM1 ((vectors, array_size) raw integer arrays).

    Returns the final DRAM0, DRAM1 (the format's storage type) and the report, which holds
    the final `local` memory and `accumulators` too. Local memory and the accumulators start
    at zero unless given (`local_depth`/`accumulator_depth` vectors, like `cosim.run`'s).
    Program bytes are read as the RTL reads them; `strict=True` refuses what
    `isa.decode_program` refuses.
    """
    machine = Emulator(arch, dram0, dram1, local, accumulators)
    machine.run(program, strict)
    return machine.dram(0), machine.dram(1), machine.finish()


class EmulatorMachine:
    """The emulator as a `tensil.machine.Machine`: runs on copies of the images; no cycle count
    (the report's estimate is a model, not a measurement)."""

    def __init__(self, arch: Architecture, strict: bool = False):
        self.arch, self.strict = arch, strict

    def run(self, program: Program, dram0: np.ndarray, dram1: np.ndarray) -> MachineRun:
        final0, final1, report = run(program, dram0, dram1, self.arch, strict=self.strict)
        return MachineRun(final0, final1, None, report)


def run_model(model: TensilModel, inputs: Dict[str, np.ndarray], saturate: bool = True,
              program: Optional[Sequence[Instruction]] = None
              ) -> Tuple[Dict[str, np.ndarray], EmulatorReport]:
    """Run a `.tmodel` as Tensil's PYNQ driver would, on the emulator (`tensil.machine.run_model`
    with an EmulatorMachine): (outputs as float64, the report, with `saturated_inputs`)."""
    outputs, result = machine.run_model(EmulatorMachine(model.arch), model, inputs, saturate, program)
    result.detail.saturated_inputs = result.saturated_inputs
    return outputs, result.detail
