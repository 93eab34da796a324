"""Seeded random Tensil programs that are valid, deterministic and comparable with the RTL.

`random_program(arch, seed)` returns instructions plus the initial DRAM0/DRAM1 contents.
Every program:
- starts by defining the on-chip memory it uses (DRAM1 -> local windows, local -> accumulator
  windows): the RTL's block RAMs are not reset, so nothing reads a vector no instruction
  wrote;
- loads weights before its first MatMul;
- exercises every opcode and flag: all DataMove kinds with strides on both sides,
  LoadWeights (whole, partial and overlong pushes, Zeroes), MatMul with Accumulate/Zeroes
  and strides, every SIMD op with input and register sources, register and output
  destinations and Read/Write/Accumulate, harmless Configures (timeout, tracepoint), NoOps;
- uses data with extreme values so MACs, adds and accumulations saturate at both ends;
- uses the SIMD input the way the RTL does: Reads whose op takes no input leave their vector
  waiting, and a later input-taking SIMD (with or without its own Read) takes it;
- emits words the RTL skips (reserved opcodes and DataMove kinds, as `isa.Skipped`);
- accumulates into an accumulator only where no earlier accumulating write to it may still
  be on its way (`AccumulatorPort.stale_accumulate`: the RTL's sum would depend on timing);
- keeps each local-memory run inside one half of local memory (the RTL's decoder locks
  local memory by halves, by the run's first address), never emits what jams the RTL
  or depends on its timing (`emulator.AccumulatorPort`), and
  never changes the DRAM offsets;
- ends by copying every local and accumulator window out to DRAM0, so comparing the two
  DRAMs after a run compares the whole machine state that matters.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np

from tensil.arch import Architecture
from tensil.emulator import AccumulatorPort
from tensil.fixed import fixed_format
from tensil.isa import (
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
)

__all__ = ["GeneratedProgram", "random_data", "random_program"]

K = DataMoveKind


@dataclasses.dataclass
class GeneratedProgram:
    seed: int
    instructions: List[Instruction]
    dram0: np.ndarray   # (vectors, N) raw values in the format's storage type
    dram1: np.ndarray
    local_windows: Tuple[Tuple[int, int], ...]   # (first vector, vectors)
    acc_windows: Tuple[Tuple[int, int], ...]
    output_base: int    # DRAM0 vector where the epilogue dumps the windows


def random_data(rng: np.random.Generator, vectors: int, arch: Architecture) -> np.ndarray:
    """Raw values: mostly small (|x| < 2), some large, some at the extremes of the format."""
    fmt = fixed_format(arch.data_type)
    shape = (vectors, arch.array_size)
    small = rng.integers(-2 * fmt.one, 2 * fmt.one + 1, shape)
    large = rng.integers(fmt.min_raw, fmt.max_raw + 1, shape)
    extreme = rng.choice(np.array([fmt.min_raw, fmt.min_raw + 1, -1, 0, 1, fmt.max_raw - 1,
                                   fmt.max_raw]), shape)
    pick = rng.random(shape)
    data = np.where(pick < 0.7, small, np.where(pick < 0.9, large, extreme))
    return data.astype(fmt.dtype)


class _Builder:
    def __init__(self, arch: Architecture, rng: np.random.Generator, window: int,
                 dram_vectors: int):
        self.arch, self.rng = arch, rng
        n_local, n_acc = arch.local_depth, arch.accumulator_depth
        w = max(1, min(window, n_local // 2))
        # one window at the bottom and one at the top of local memory: both halves, both
        # ends of the address range (the top one is entirely inside the upper half)
        self.local = [(0, w)] + ([(n_local - w, w)] if n_local >= 2 * w else [])
        wa = max(1, min(window, n_acc // 2))
        self.acc = [(0, wa)] + ([(n_acc - wa, wa)] if n_acc >= 2 * wa else [])
        self.input_vectors = dram_vectors
        self.output_base = dram_vectors
        self.dram0_vectors = dram_vectors + sum(s for _, s in self.local + self.acc)
        self.dram1_vectors = max(dram_vectors, sum(s for _, s in self.local))
        self.out: List[Instruction] = []
        self.port = AccumulatorPort(arch)   # what the RTL's accumulator port carries over

    def emit(self, instruction: Instruction) -> None:
        problem = self.port.problem(instruction)
        assert problem is None, problem
        if self.port.stale_accumulate(instruction) is not None:   # a timing-dependent sum
            if isinstance(instruction, DataMove):
                instruction = dataclasses.replace(instruction, kind=K.LOCAL_TO_ACC)
            elif isinstance(instruction, (MatMul, SIMD)):
                instruction = dataclasses.replace(instruction, accumulate=False)
        self.port.advance(instruction)
        self.out.append(instruction)

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def run_in(self, windows: Sequence[Tuple[int, int]], size: int,
               stride_depth: int) -> Tuple[int, int, int]:
        """(start, size, stride) of a run of size+1 vectors inside one window."""
        base, length = windows[self.integer(0, len(windows) - 1)]
        size = min(size, length - 1)
        stride = self.integer(0, stride_depth - 1) if self.rng.random() < 0.4 else 0
        while stride and size * (1 << stride) >= length:
            stride -= 1
        start = base + self.integer(0, length - 1 - size * (1 << stride))
        return start, size, stride

    def dram_run(self, vectors: int, size: int) -> Tuple[int, int]:
        stride = self.integer(0, self.arch.stride1_depth - 1) if self.rng.random() < 0.3 else 0
        while stride and size * (1 << stride) >= vectors:
            stride -= 1
        return self.integer(0, vectors - 1 - size * (1 << stride)), stride

    def size(self) -> int:
        longest = max(s for _, s in self.local)
        return self.integer(0, longest - 1) if self.rng.random() < 0.5 else self.integer(0, 3)

    # ------------------------------------------------------------------ instructions

    def datamove(self) -> None:
        kind = list(DataMoveKind)[self.integer(0, len(DataMoveKind) - 1)]
        local, size, local_stride = self.run_in(self.local, self.size(),
                                                self.arch.stride0_depth)
        if kind in (K.ACC_TO_LOCAL, K.LOCAL_TO_ACC, K.LOCAL_TO_ACC_ACCUMULATE):
            if kind == K.ACC_TO_LOCAL:
                self.take_waiting()
            address, size, stride = self.run_in(self.acc, size, self.arch.stride1_depth)
        else:
            vectors = self.dram0_vectors if kind in (K.DRAM0_TO_LOCAL, K.LOCAL_TO_DRAM0) \
                else self.dram1_vectors
            size = min(size, vectors - 1)
            address, stride = self.dram_run(vectors, size)
        self.emit(DataMove(kind, local, address, size, local_stride, stride))

    def load_weights(self) -> None:
        n = self.arch.array_size
        size = n if self.rng.random() < 0.6 else self.integer(0, 2 * n)
        if self.rng.random() < 0.1:
            self.emit(LoadWeights(0, size, 0, zeroes=True))
            return
        local, size, stride = self.run_in(self.local, size, self.arch.stride0_depth)
        self.emit(LoadWeights(local, size, stride))

    def matmul(self) -> None:
        local, size, local_stride = self.run_in(self.local, self.size(), self.arch.stride0_depth)
        acc, size, acc_stride = self.run_in(self.acc, size, self.arch.stride1_depth)
        zeroes = self.rng.random() < 0.15
        if zeroes:
            local, local_stride = self.integer(0, self.arch.local_depth - 1), 0
        self.emit(MatMul(local, acc, size, local_stride, acc_stride,
                               accumulate=bool(self.rng.random() < 0.5), zeroes=zeroes))

    def simd(self) -> None:
        registers = self.arch.simd_registers_depth
        while True:
            op = SimdOp(self.integer(0, 15))
            left, right, dest = (self.integer(0, registers) for _ in range(3))
            needs = op not in (SimdOp.NOOP, SimdOp.ZERO) and (left == 0 or right == 0)
            read = op != SimdOp.NOOP and (needs or self.rng.random() < 0.25) and (
                not needs or not self.port.waiting or self.rng.random() < 0.7)
            write = op != SimdOp.NOOP and (dest == 0 or self.rng.random() < 0.3)
            accumulate = bool(self.rng.random() < 0.3)
            read_address = self.run_in(self.acc, 0, 1)[0]
            write_address = self.run_in(self.acc, 0, 1)[0]
            instruction = SIMD(op, left, right, dest, write_address, read_address,
                               read=read, write=write, accumulate=accumulate)
            if self.port.problem(instruction) is None:
                self.emit(instruction)
                return

    def take_waiting(self) -> None:
        """An input-taking SIMD without Read, so that no vector waits at the ALU's input."""
        if self.port.waiting:
            op = SimdOp(self.integer(2, 15))
            write = bool(self.rng.random() < 0.5)
            self.emit(SIMD(op, 0, self.integer(0, self.arch.simd_registers_depth),
                                 0 if write else self.integer(1, self.arch.simd_registers_depth),
                                 self.run_in(self.acc, 0, 1)[0], write=write))

    def other(self) -> None:
        pick = self.rng.random()
        if pick < 0.4:
            self.emit(NoOp())
        elif pick < 0.7:
            # words the RTL consumes without effect: a reserved opcode or DataMove kind
            lay = self.arch.layout
            arguments = self.integer(0, (1 << min(lay.operands_bits, 62)) - 1)
            if self.rng.random() < 0.5:
                self.emit(Skipped(self.integer(5, 14), self.integer(0, 15), arguments))
            else:
                kind = int(self.rng.choice([4, 5, 6, 7, 8, 9, 10, 11, 14]))
                self.emit(Skipped(2, kind, arguments))
        else:
            register = ConfigRegister.TIMEOUT if self.rng.random() < 0.5 \
                else ConfigRegister.TRACEPOINT
            self.emit(Configure(register, self.integer(100, 1000)))

    # ------------------------------------------------------------------ frame

    def prologue(self) -> None:
        for base, length in self.local:
            self.emit(DataMove(K.DRAM1_TO_LOCAL, base, self.integer(
                0, self.dram1_vectors - length), length - 1))
        local_base, local_length = self.local[0]
        for base, length in self.acc:
            for offset in range(0, length, local_length):
                count = min(local_length, length - offset)
                self.emit(DataMove(K.LOCAL_TO_ACC, local_base, base + offset, count - 1))
        self.load_weights()

    def epilogue(self) -> None:
        self.take_waiting()
        out = self.output_base
        for base, length in self.local:
            self.emit(DataMove(K.LOCAL_TO_DRAM0, base, out, length - 1))
            out += length
        local_base, local_length = self.local[0]
        for base, length in self.acc:
            for offset in range(0, length, local_length):
                count = min(local_length, length - offset)
                self.emit(DataMove(K.ACC_TO_LOCAL, local_base, base + offset, count - 1))
                self.emit(DataMove(K.LOCAL_TO_DRAM0, local_base, out, count - 1))
                out += count


def random_program(arch: Architecture, seed: int, length: int = 200, window: int = 24,
                   dram_vectors: int = 64, weights: Optional[Sequence[float]] = None,
                   dram0_spare: int = 0) -> GeneratedProgram:
    """A random valid program of about `length` body instructions (plus prologue/epilogue).

    `window`: vectors in each local/accumulator window; `dram_vectors`: DRAM0 input vectors
    (DRAM0 also holds the epilogue's dump after them); `weights`: relative frequencies of
    DataMove, LoadWeights, MatMul, SIMD and NoOp/Configure; `dram0_spare`: zero vectors
    at the end of DRAM0 that the program never touches (room for a driver-style flush probe,
    which uses the last two).
    """
    if length < 0 or window < 1 or dram_vectors < 1 or dram0_spare < 0:
        raise ValueError("length >= 0, window >= 1, dram_vectors >= 1 and dram0_spare >= 0 "
                         "are needed")
    rng = np.random.default_rng(seed)
    b = _Builder(arch, rng, window, dram_vectors)
    b.prologue()
    makers = (b.datamove, b.load_weights, b.matmul, b.simd, b.other)
    p = np.asarray(weights if weights is not None else (3, 2, 3, 3, 0.5), dtype=float)
    if p.shape != (5,) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("weights are 5 non-negative frequencies, not all zero")
    for choice in rng.choice(5, size=length, p=p / p.sum()):
        makers[choice]()
    b.epilogue()
    dram0 = random_data(rng, b.dram0_vectors, arch)
    spare = np.zeros((dram0_spare, arch.array_size), dtype=dram0.dtype)
    return GeneratedProgram(seed, b.out, np.concatenate([dram0, spare]),
                            random_data(rng, b.dram1_vectors, arch), tuple(b.local),
                            tuple(b.acc), b.output_base)
