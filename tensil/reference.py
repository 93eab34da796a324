"""A plain, slow interpreter of the same machine: the yardstick of `tensil.emulator`.

It walks every vector in Python and every MAC step with `fixed.mac` over the output lanes,
pushes weights one vector at a time, and keeps its own state, so a test that compares it
with the emulator checks the emulator's vectorised kernels and address arithmetic. The
refusals (RTL hangs, addresses past a memory) are the emulator's rules, shared.
"""

from typing import List, Sequence, Tuple, Union

import numpy as np

from .arch import Architecture
from .emulator import simd_problem
from .errors import EmulatorError
from .fixed import add, alu, fixed_format, mac
from .isa import (
    SIMD,
    Configure,
    DataMove,
    DataMoveKind,
    Instruction,
    LoadWeights,
    MatMul,
    NoOp,
    SimdOp,
    decode_program,
)

__all__ = ["ReferenceMachine", "reference_run"]


class ReferenceMachine:
    def __init__(self, arch: Architecture, dram0: np.ndarray, dram1: np.ndarray):
        self.arch = arch
        self.fmt = fixed_format(arch.data_type)
        n = arch.array_size
        self.memories = {
            "dram0": np.array(dram0, dtype=np.int64), "dram1": np.array(dram1, dtype=np.int64),
            "local": np.zeros((arch.local_depth, n), dtype=np.int64),
            "acc": np.zeros((arch.accumulator_depth, n), dtype=np.int64)}
        self.array: List[np.ndarray] = [np.zeros(n, dtype=np.int64) for _ in range(n + 1)]
        self.registers = np.zeros((arch.simd_registers_depth, n), dtype=np.int64)
        self.macs = 0

    def vector(self, memory: str, address: int) -> np.ndarray:
        rows = self.memories[memory]
        if not 0 <= address < rows.shape[0]:
            raise EmulatorError("%s vector %d is past its %d vectors" % (
                memory, address, rows.shape[0]))
        return rows[address].copy()

    def store(self, memory: str, address: int, value: np.ndarray) -> None:
        self.vector(memory, address)   # bounds
        self.memories[memory][address] = value

    def execute(self, i: Instruction) -> None:
        if isinstance(i, (NoOp, Configure)):
            return
        if isinstance(i, LoadWeights):
            for k in range(i.size, -1, -1):   # the RTL reads the run backwards
                pushed = (np.zeros(self.arch.array_size, dtype=np.int64) if i.zeroes
                          else self.vector("local", i.local_address + (k << i.local_stride)))
                self.array = [pushed] + self.array[:-1]   # new -> bias -> w0 -> ... -> w(N-1)
        elif isinstance(i, MatMul):
            for k in range(i.size + 1):
                x = (np.zeros(self.arch.array_size, dtype=np.int64) if i.zeroes
                     else self.vector("local", i.local_address + (k << i.local_stride)))
                p = self.array[0]
                for j in range(self.arch.array_size):
                    p = mac(x[j], self.array[1 + j], p, self.fmt)
                    self.macs += 0 if i.zeroes else self.arch.array_size
                address = i.acc_address + (k << i.acc_stride)
                if i.accumulate:
                    p = add(self.vector("acc", address), p, self.fmt)
                self.store("acc", address, p)
        elif isinstance(i, DataMove):
            self._datamove(i)
        elif isinstance(i, SIMD):
            self._simd(i)

    def _datamove(self, i: DataMove) -> None:
        source, target = {
            DataMoveKind.DRAM0_TO_LOCAL: ("dram0", "local"),
            DataMoveKind.LOCAL_TO_DRAM0: ("local", "dram0"),
            DataMoveKind.DRAM1_TO_LOCAL: ("dram1", "local"),
            DataMoveKind.LOCAL_TO_DRAM1: ("local", "dram1"),
            DataMoveKind.ACC_TO_LOCAL: ("acc", "local"),
            DataMoveKind.LOCAL_TO_ACC: ("local", "acc"),
            DataMoveKind.LOCAL_TO_ACC_ACCUMULATE: ("local", "acc"),
        }[i.kind]
        for k in range(i.size + 1):
            local = i.local_address + (k << i.local_stride)
            other = i.address + (k << i.stride)
            src, dst = (local, other) if source == "local" else (other, local)
            value = self.vector(source, src)
            if i.kind == DataMoveKind.LOCAL_TO_ACC_ACCUMULATE:
                value = add(self.vector("acc", dst), value, self.fmt)
            self.store(target, dst, value)

    def _simd(self, i: SIMD) -> None:
        problem = simd_problem(i)
        if problem:
            raise EmulatorError(problem)
        if i.op == SimdOp.NOOP:
            return
        for lane in range(self.arch.array_size):
            inp = int(self.vector("acc", i.read_address)[lane]) if i.read else 0
            regs = [int(r[lane]) for r in self.registers]
            left = inp if i.left == 0 else regs[i.left - 1]
            right = inp if i.right == 0 else regs[i.right - 1]
            result = int(alu(int(i.op), left, right, inp, self.fmt))
            if i.dest:
                self.registers[i.dest - 1][lane] = result
            if i.write:
                if i.accumulate:
                    result = int(add(int(self.vector("acc", i.write_address)[lane]), result,
                                     self.fmt))
                self.memories["acc"][i.write_address][lane] = result


def reference_run(program: Union[bytes, Sequence[Instruction]], dram0: np.ndarray,
                  dram1: np.ndarray, arch: Architecture) -> Tuple[np.ndarray, np.ndarray, int]:
    """Run like `emulator.run`; returns DRAM0, DRAM1 (int64) and the MACs executed."""
    if isinstance(program, (bytes, bytearray)):
        program = decode_program(bytes(program), arch)
    machine = ReferenceMachine(arch, dram0, dram1)
    for index, instruction in enumerate(program):
        try:
            machine.execute(instruction)
        except EmulatorError as exc:
            raise EmulatorError("instruction %d: %s" % (index, exc)) from None
    return machine.memories["dram0"], machine.memories["dram1"], machine.macs
