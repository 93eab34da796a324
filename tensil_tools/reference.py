"""A plain, slow interpreter of the same machine: the yardstick of `tensil.emulator`.

It walks every vector in Python and every MAC step with `fixed.mac` over the output lanes,
pushes weights one vector at a time, addresses DRAM byte by vector through the Configure
offsets, and keeps its own state, so a test that compares it with the emulator checks the
emulator's vectorised kernels and address arithmetic. The rules of the SIMD input (which
instruction takes which vector, what jams the RTL or depends on its timing) are the emulator's
`AccumulatorPort`, shared.
"""

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from tensil.arch import Architecture, instruction_layout
from tensil.emulator import AccumulatorPort, simd_flow, simd_takes_input
from tensil.errors import EmulatorError
from tensil.fixed import add, alu, fixed_format, mac
from tensil.isa import (
    SIMD,
    ConfigRegister,
    Configure,
    DataMove,
    DataMoveKind,
    Instruction,
    LoadWeights,
    MatMul,
    SimdOp,
    decode_program,
)

__all__ = ["ReferenceMachine", "reference_machine", "reference_run"]

_DIRECTIONS = {
    DataMoveKind.DRAM0_TO_LOCAL: ("dram0", "local"),
    DataMoveKind.LOCAL_TO_DRAM0: ("local", "dram0"),
    DataMoveKind.DRAM1_TO_LOCAL: ("dram1", "local"),
    DataMoveKind.LOCAL_TO_DRAM1: ("local", "dram1"),
    DataMoveKind.ACC_TO_LOCAL: ("acc", "local"),
    DataMoveKind.LOCAL_TO_ACC: ("local", "acc"),
    DataMoveKind.LOCAL_TO_ACC_ACCUMULATE: ("local", "acc"),
}


class ReferenceMachine:
    def __init__(self, arch: Architecture, dram0: np.ndarray, dram1: np.ndarray,
                 local: Optional[np.ndarray] = None, accumulators: Optional[np.ndarray] = None):
        self.arch = arch
        self.fmt = fixed_format(arch.data_type)
        n = arch.array_size
        self.memories = {
            "dram0": np.array(dram0, dtype=np.int64), "dram1": np.array(dram1, dtype=np.int64),
            "local": (np.zeros((arch.local_depth, n), dtype=np.int64) if local is None
                      else np.array(local, dtype=np.int64)),
            "acc": (np.zeros((arch.accumulator_depth, n), dtype=np.int64) if accumulators is None
                    else np.array(accumulators, dtype=np.int64))}
        self.array: List[np.ndarray] = [np.zeros(n, dtype=np.int64) for _ in range(n + 1)]
        self.registers = np.zeros((arch.simd_registers_depth, n), dtype=np.int64)
        self.offsets = {"dram0": 0, "dram1": 0}
        self.waiting: Optional[np.ndarray] = None
        self.port = AccumulatorPort(arch)   # the emulator's rules of what runs on the RTL
        self.macs = 0
        lay = instruction_layout(arch)
        self.bits = {"local": lay.local_bits, "acc": lay.accumulator_bits,
                     "dram0": lay.dram0_bits, "dram1": lay.dram1_bits}

    def address(self, memory: str, start: int, k: int, stride: int) -> int:
        """The k-th address of a run; DRAM addresses are the scalar index of lane 0."""
        n = self.arch.array_size
        if memory in ("local", "acc"):
            return (start + (k << stride)) % (1 << self.bits[memory])
        vector = start + (k << stride)
        if stride:
            vector %= 1 << self.bits[memory]
        size = self.fmt.size_bytes
        return (self.offsets[memory] + vector * n * size) % (1 << 32) // size

    def vector(self, memory: str, address: int) -> np.ndarray:
        n = self.arch.array_size
        if memory in ("dram0", "dram1"):
            flat = self.memories[memory].reshape(-1)
            if address + n > flat.size:
                raise EmulatorError("%s scalar %d is past its %d vectors" % (
                    memory, address, flat.size // n))
            return flat[address:address + n].copy()
        rows = self.memories[memory]
        if not 0 <= address < rows.shape[0]:
            raise EmulatorError("%s vector %d is past its %d vectors" % (
                memory, address, rows.shape[0]))
        return rows[address].copy()

    def store(self, memory: str, address: int, value: np.ndarray) -> None:
        self.vector(memory, address)   # bounds
        if memory in ("dram0", "dram1"):
            self.memories[memory].reshape(-1)[address:address + self.arch.array_size] = value
        else:
            self.memories[memory][address] = value

    def execute(self, i: Instruction) -> None:
        problem = self.port.problem(i)
        if problem:
            raise EmulatorError(problem)
        self._execute(i)
        self.port.advance(i)

    def _execute(self, i: Instruction) -> None:
        if isinstance(i, Configure):
            if i.register in (ConfigRegister.DRAM0_OFFSET, ConfigRegister.DRAM1_OFFSET):
                memory = "dram0" if i.register == ConfigRegister.DRAM0_OFFSET else "dram1"
                self.offsets[memory] = (i.value << 16) % (1 << 32)
        elif isinstance(i, LoadWeights):
            for k in range(i.size, -1, -1):   # the RTL reads the run backwards
                pushed = (np.zeros(self.arch.array_size, dtype=np.int64) if i.zeroes
                          else self.vector("local", self.address("local", i.local_address, k,
                                                                 i.local_stride)))
                self.array = [pushed] + self.array[:-1]   # new -> bias -> w0 -> ... -> w(N-1)
        elif isinstance(i, MatMul):
            self._matmul(i)
        elif isinstance(i, DataMove):
            self._datamove(i)
        elif isinstance(i, SIMD):
            self._simd(i)

    def _matmul(self, i: MatMul) -> None:
        for k in range(i.size + 1):
            x = (np.zeros(self.arch.array_size, dtype=np.int64) if i.zeroes
                 else self.vector("local", self.address("local", i.local_address, k,
                                                        i.local_stride)))
            p = self.array[0]
            for j in range(self.arch.array_size):
                p = mac(x[j], self.array[1 + j], p, self.fmt)
                self.macs += 0 if i.zeroes else self.arch.array_size
            address = self.address("acc", i.acc_address, k, i.acc_stride)
            if i.accumulate:
                p = add(self.vector("acc", address), p, self.fmt)
            self.store("acc", address, p)

    def _datamove(self, i: DataMove) -> None:
        source, target = _DIRECTIONS[i.kind]
        other = target if source == "local" else source
        for k in range(i.size + 1):
            local = self.address("local", i.local_address, k, i.local_stride)
            far = self.address(other, i.address, k, i.stride)
            src, dst = (local, far) if source == "local" else (far, local)
            value = self.vector(source, src)
            if i.kind == DataMoveKind.LOCAL_TO_ACC_ACCUMULATE:
                value = add(self.vector("acc", dst), value, self.fmt)
            self.store(target, dst, value)

    def _simd(self, i: SIMD) -> None:
        if i.op == SimdOp.NOOP:
            return
        read = self.vector("acc", i.read_address) if i.read else None
        takes_waiting, leaves = simd_flow(i, self.waiting is not None)
        source = self.waiting if takes_waiting else read if simd_takes_input(i) else None
        if leaves:
            self.waiting = read if read is not None else self.waiting
        else:
            self.waiting = None
        for lane in range(self.arch.array_size):
            inp = int(source[lane]) if source is not None else 0
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
                  dram1: np.ndarray, arch: Architecture, local: Optional[np.ndarray] = None,
                  accumulators: Optional[np.ndarray] = None
                  ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Run like `emulator.run`; returns DRAM0, DRAM1 (int64) and the MACs executed (the final
    local memory and accumulators stay in `ReferenceMachine.memories` via `reference_machine`)."""
    machine = reference_machine(program, dram0, dram1, arch, local, accumulators)
    return machine.memories["dram0"], machine.memories["dram1"], machine.macs


def reference_machine(program: Union[bytes, Sequence[Instruction]], dram0: np.ndarray,
                      dram1: np.ndarray, arch: Architecture, local: Optional[np.ndarray] = None,
                      accumulators: Optional[np.ndarray] = None) -> ReferenceMachine:
    """The machine after running `program` (bytes are read as the RTL reads them)."""
    if isinstance(program, (bytes, bytearray)):
        program = decode_program(bytes(program), arch, strict=False)
    machine = ReferenceMachine(arch, dram0, dram1, local, accumulators)
    for index, instruction in enumerate(program):
        try:
            machine.execute(instruction)
        except EmulatorError as exc:
            raise EmulatorError("instruction %d: %s" % (index, exc)) from None
    return machine
