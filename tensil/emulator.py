"""A bit-exact emulator of the Tensil accelerator (numpy, vectorised over vectors and lanes).

State, as in the RTL (facts §2.5; rtl/.../tcu/*.scala): DRAM0 and DRAM1 (arrays of vectors
given by the caller), local memory, accumulators (the same 16-bit type: no wider
accumulator), the systolic array's weight registers (row 0 the bias, rows 1..N the weights
of input lanes 0..N-1) and the SIMD registers of every ALU lane. Local memory and the
accumulators start at zero unless given; the RTL's weight and SIMD registers reset to zero.

Semantics:
- LoadWeights pushes local[a + size*step], ..., local[a] (or zero vectors) into the array;
  each push shifts every row down one (new -> bias -> w0 -> ... -> w(N-1)), so after N+1
  pushes local[a] is the bias and local[a + k] the weights of input lane k-1.
- MatMul: for each input vector x, p = bias, then p = mac(x_j, w_j, p) for j = 0..N-1
  (round half even and saturate at every step); the accumulator gets p, or sat(acc + p).
- DataMove copies vectors; local->acc with accumulate adds with saturation.
- SIMD follows the RTL's ALU array: the result always reaches the ALU output, so Write
  stores it in acc[write] (added with Accumulate) even when dest is a register. Where the
  RTL would hang or misroute data the emulator refuses with EmulatorError: an op that needs
  the accumulator input (any op but NoOp/Zero with a source 0) without Read (the RTL waits
  forever), Read for an op that does not take its input (the RTL leaves the vector in the
  ALU's input queue for a later SIMD), and the SIMD NoOp with Read or Write (the RTL sends
  the data to the array/local data path, which no request feeds).
- Addresses beyond a memory (a strided run past the depth, a DRAM vector past the array)
  raise EmulatorError; Tensil's compiler never emits them.

`run(program, dram0, dram1, arch)` mirrors `tensil.cosim.run` and returns the DRAMs and a
report with instruction counts per kind, MACs and Tensil's cycle estimate; `run_model`
runs a `.tmodel` with float inputs the way Tensil's PYNQ driver does.
"""

import dataclasses
import time
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .arch import Architecture
from .errors import EmulatorError, TensilError
from .estimate import Estimate, TensilLatencyModel
from .fixed import (
    FixedFormat,
    add,
    alu,
    fixed_format,
    from_bytes,
    from_float_driver,
    from_float_saturating,
    to_float,
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
    decode_program,
    format_instruction,
)
from .tmodel import TensilModel

__all__ = ["Emulator", "EmulatorReport", "dram_extent", "mac_chain", "run", "run_model",
           "simd_problem"]

Program = Union[bytes, bytearray, memoryview, Sequence[Instruction]]
_MAX_ONCHIP_SCALARS = 1 << 25   # local + accumulators: 256 MiB of int64 at most
_CHUNK_ELEMENTS = 1 << 16       # products held at once by the MatMul kernel


@dataclasses.dataclass
class EmulatorReport:
    """What a run executed: counts and Tensil's estimate per kind, MACs, wall time."""

    instructions: int = 0
    macs: int = 0
    seconds: float = 0.0
    saturated_inputs: int = 0
    estimate: Estimate = dataclasses.field(default_factory=Estimate)

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


def _needs_input(instruction: SIMD) -> bool:
    """The RTL's ALUArray.inputNeeded (Op.isUnary is always false there)."""
    if instruction.op in (SimdOp.NOOP, SimdOp.ZERO):
        return False
    return instruction.left == 0 or instruction.right == 0


def simd_problem(instruction: SIMD) -> Optional[str]:
    """Why the RTL would hang or misroute this SIMD instruction, or None when it runs."""
    if instruction.op == SimdOp.NOOP:
        if instruction.read or instruction.write:
            return ("the SIMD NoOp with Read/Write moves data between the accumulators and the "
                    "array/local data path, which no request feeds: the RTL hangs")
        return None
    needs = _needs_input(instruction)
    if needs and not instruction.read:
        return ("%s with a source 0 needs the accumulator input but Read is not set: the RTL "
                "waits for it forever" % instruction.op.name)
    if instruction.read and not needs:
        return ("Read is set but %s with these sources does not take the input: the RTL leaves "
                "the vector in the ALU's input queue for a later SIMD" % instruction.op.name)
    return None


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
        self.dram0 = self._memory("dram0", dram0, None, arch.dram0_depth)
        self.dram1 = self._memory("dram1", dram1, None, arch.dram1_depth)
        self.local = self._memory("local", local, arch.local_depth, arch.local_depth)
        self.accumulators = self._memory("accumulators", accumulators, arch.accumulator_depth,
                                         arch.accumulator_depth)
        self.weights = np.zeros((n + 1, n), dtype=np.int64)
        self.registers = np.zeros((arch.simd_registers_depth, n), dtype=np.int64)
        self.config: Dict[ConfigRegister, int] = {}
        self.report = EmulatorReport()
        self._latency = TensilLatencyModel(arch)

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
            raise ValueError("%s has %d vectors; the architecture has %d" % (
                name, array.shape[0], depth))
        raw = array.astype(np.int64)
        if raw.size and (raw.min() < self.fmt.min_raw or raw.max() > self.fmt.max_raw):
            raise ValueError("%s holds values outside the %s range %d..%d" % (
                name, self.fmt.name, self.fmt.min_raw, self.fmt.max_raw))
        return raw

    # ------------------------------------------------------------------ execution

    def run(self, program: Program) -> EmulatorReport:
        """Execute a program (`.tprog` bytes or decoded instructions); returns the report."""
        if isinstance(program, (bytes, bytearray, memoryview)):
            program = decode_program(bytes(program), self.arch)
        start = time.perf_counter()
        for index, instruction in enumerate(program):
            try:
                self.step(instruction)
            except EmulatorError as exc:
                raise EmulatorError("instruction %d (%s): %s" % (
                    index, _describe(instruction), exc)) from None
        self.report.seconds += time.perf_counter() - start
        return self.report

    def step(self, instruction: Instruction) -> None:
        if isinstance(instruction, MatMul):
            self._matmul(instruction)
        elif isinstance(instruction, DataMove):
            self._datamove(instruction)
        elif isinstance(instruction, LoadWeights):
            self._load_weights(instruction)
        elif isinstance(instruction, SIMD):
            self._simd(instruction)
        elif isinstance(instruction, Configure):
            self.config[instruction.register] = instruction.value
        elif not isinstance(instruction, NoOp):
            raise EmulatorError("not a Tensil instruction: %r" % (instruction,))
        cycles, energy = self._latency.step(instruction)
        self.report.estimate.add(instruction, cycles, energy)
        self.report.instructions += 1

    def _addresses(self, memory: str, limit: int, address: int, size: int,
                   stride: int) -> np.ndarray:
        step = 1 << stride
        last = address + size * step
        if last >= limit:
            raise EmulatorError("%s vectors %d..%d (size %d, step %d) exceed the %d vectors "
                                "of %s" % (memory, address, last, size, step, limit, memory))
        return np.arange(address, last + 1, step)

    def _local(self, address: int, size: int, stride: int) -> np.ndarray:
        return self._addresses("local", self.local.shape[0], address, size, stride)

    def _acc(self, address: int, size: int, stride: int) -> np.ndarray:
        return self._addresses("accumulators", self.accumulators.shape[0], address, size, stride)

    def _matmul(self, i: MatMul) -> None:
        acc = self._acc(i.acc_address, i.size, i.acc_stride)
        if i.zeroes:
            result = np.repeat(self.weights[:1], acc.size, axis=0)   # mac(0, w, p) = p
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
        if kind in (DataMoveKind.DRAM0_TO_LOCAL, DataMoveKind.LOCAL_TO_DRAM0):
            dram, name = self.dram0, "dram0"
        elif kind in (DataMoveKind.DRAM1_TO_LOCAL, DataMoveKind.LOCAL_TO_DRAM1):
            dram, name = self.dram1, "dram1"
        else:
            acc = self._acc(i.address, i.size, i.stride)
            if kind == DataMoveKind.ACC_TO_LOCAL:
                self.local[local] = self.accumulators[acc]
            elif kind == DataMoveKind.LOCAL_TO_ACC:
                self.accumulators[acc] = self.local[local]
            else:
                self.accumulators[acc] = add(self.accumulators[acc], self.local[local], self.fmt)
            return
        other = self._addresses(name, dram.shape[0], i.address, i.size, i.stride)
        if kind in (DataMoveKind.DRAM0_TO_LOCAL, DataMoveKind.DRAM1_TO_LOCAL):
            self.local[local] = dram[other]
        else:
            dram[other] = self.local[local]

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
        problem = simd_problem(i)
        if problem:
            raise EmulatorError(problem)
        if i.op == SimdOp.NOOP:
            return
        n = self.arch.array_size
        if i.read:
            inp = self.accumulators[self._acc(i.read_address, 0, 0)[0]]
        else:
            inp = np.zeros(n, dtype=np.int64)
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

    # ------------------------------------------------------------------ results

    def dram(self, which: int) -> np.ndarray:
        """DRAM0 or DRAM1 as raw values in the format's storage type (int16 for FP16BP8)."""
        return (self.dram0 if which == 0 else self.dram1).astype(self.fmt.dtype)


def _describe(instruction: Instruction) -> str:
    try:
        return format_instruction(instruction)
    except TensilError:
        return repr(instruction)


def run(program: Program, dram0: np.ndarray, dram1: np.ndarray,
        arch: Architecture) -> Tuple[np.ndarray, np.ndarray, EmulatorReport]:
    """Run a program on copies of DRAM0/DRAM1 ((vectors, array_size) raw integer arrays).

    Returns the final DRAM0, DRAM1 (the format's storage type) and the report; local memory
    and the accumulators start at zero.
    """
    machine = Emulator(arch, dram0, dram1)
    report = machine.run(program)
    return machine.dram(0), machine.dram(1), report


def dram_extent(program: Sequence[Instruction], which: int) -> int:
    """Vectors of DRAM0 (which=0) or DRAM1 (1) that a decoded program's DataMoves reach."""
    kinds = ((DataMoveKind.DRAM0_TO_LOCAL, DataMoveKind.LOCAL_TO_DRAM0) if which == 0
             else (DataMoveKind.DRAM1_TO_LOCAL, DataMoveKind.LOCAL_TO_DRAM1))
    extent = 0
    for i in program:
        if isinstance(i, DataMove) and i.kind in kinds:
            extent = max(extent, i.address + i.size * (1 << i.stride) + 1)
    return extent


def run_model(model: TensilModel, inputs: Dict[str, np.ndarray], saturate: bool = True,
              program: Optional[Sequence[Instruction]] = None
              ) -> Tuple[Dict[str, np.ndarray], EmulatorReport]:
    """Run a `.tmodel` as Tensil's PYNQ driver would, on the emulator.

    Each input is flattened and converted to fixed point (saturating and counted in
    `report.saturated_inputs`, or wrapping like Tensil's driver with `saturate=False`),
    written at its DRAM0 base; the consts go to DRAM1 (and to local memory first when the
    model says so); the outputs come back as float64, entries of the same name concatenated.
    """
    arch, fmt = model.arch, fixed_format(model.arch.data_type)
    n = arch.array_size
    if program is None:
        program = decode_program(model.prog_path.read_bytes(), arch)
    missing = sorted({v.name for v in model.inputs} - set(inputs))
    if missing:
        raise ValueError("missing model input(s): %s" % ", ".join(missing))
    unknown = sorted(set(inputs) - {v.name for v in model.inputs})
    if unknown:
        raise ValueError("unknown model input(s): %s" % ", ".join(unknown))
    dram0_vectors = max([dram_extent(program, 0)] + [v.base + v.size
                                                      for v in model.inputs + model.outputs])
    dram1_vectors = max([dram_extent(program, 1)] + [c.base + c.size for c in model.consts])
    dram0 = np.zeros((dram0_vectors, n), dtype=np.int64)
    dram1 = np.zeros((dram1_vectors, n), dtype=np.int64)
    for consts, path in zip(model.consts, model.const_paths):
        raw = from_bytes(path.read_bytes(), fmt, str(path))
        dram1[consts.base:consts.base + consts.size] = raw.reshape(consts.size, n)
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
    machine = Emulator(arch, dram0, dram1)
    if model.load_consts_to_local:
        for consts in model.consts:
            if consts.size:
                machine.step(DataMove(DataMoveKind.DRAM1_TO_LOCAL, consts.base, consts.base,
                                      consts.size - 1))
    report = machine.run(program)
    report.saturated_inputs = saturated
    outputs: Dict[str, np.ndarray] = {}
    for var in model.outputs:
        values = to_float(machine.dram0[var.base:var.base + var.size].reshape(-1), fmt)
        outputs[var.name] = (np.concatenate([outputs[var.name], values])
                             if var.name in outputs else values)
    return outputs, report
