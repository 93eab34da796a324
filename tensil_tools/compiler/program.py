"""An instruction stream under construction: the RTL's local-memory rule, rollups, allocators.

The RTL's decoder orders the two local-memory ports (A: MatMul, LoadWeights, accumulator
moves; B: DRAM moves) with one lock per half of local memory, taken by the half of a
request's first address (Decoder.scala, LockPool with numLocks = 2). A request that crosses
the middle would not be ordered against the other port in its second half, so `emit` cuts
every DataMove and MatMul at the middle; weight blocks are placed so that no LoadWeights
crosses it. `emit` also merges an instruction into the previous one when it continues it
exactly (same kind, flags and strides, both addresses contiguous): per-row moves of dense
rows become one instruction.

The RTL also loses an accumulation that starts at the very accumulator vector the previous
access of the accumulator memory wrote (MatMul after MatMul, or DataMove after DataMove,
into the same vector back to back: the second reads it before the first one's write lands;
found on the RTL). A SIMD NoOp in between does not help (it touches no memory), an access
of another vector does: `emit` puts a MatMul with Zeroes into a scratch accumulator there.
A LoadWeights long enough to outlast the array's drain in between does too
(`tensil.emulator.lands_earlier_accumulates`).
"""

import dataclasses
from typing import List, Optional, Tuple, Union, cast

from tensil.arch import Architecture
from tensil.emulator import lands_earlier_accumulates
from tensil.isa import SIMD, DataMove, DataMoveKind, Instruction, LoadWeights, MatMul, footprint

from .errors import CompileError

__all__ = ["Allocator", "Program", "split_at"]


def _local_extent(instruction: Instruction) -> Optional[Tuple[int, int, int]]:
    """(first local vector, count, step) an instruction reads or writes, or None."""
    for touch in footprint(instruction):
        if touch.memory == "local":
            return touch.address, touch.vectors, 1 << touch.stride
    return None


_TO_ACC = (DataMoveKind.LOCAL_TO_ACC, DataMoveKind.LOCAL_TO_ACC_ACCUMULATE)


def _in_acc_stream(instruction: Instruction) -> bool:
    return isinstance(instruction, (MatMul, SIMD)) or (
        isinstance(instruction, DataMove) and instruction.kind in _TO_ACC + (
            DataMoveKind.ACC_TO_LOCAL,))


def _acc_writes(instruction: Instruction) -> Optional[int]:
    """The last accumulator vector an instruction writes, or None."""
    for touch in footprint(instruction):
        if touch.memory == "acc" and "w" in touch.access:
            return touch.last
    return None


def _accumulating_write(instruction: Instruction) -> Optional[int]:
    """The first accumulator vector of an accumulating write, or None."""
    if isinstance(instruction, MatMul) and instruction.accumulate:
        return instruction.acc_address
    if isinstance(instruction, DataMove) and instruction.kind == \
            DataMoveKind.LOCAL_TO_ACC_ACCUMULATE:
        return instruction.address
    return None


Run = Union[DataMove, MatMul]   # the kinds `emit` cuts at the middle and merges


def split_at(instruction: Run, count: int) -> Tuple[Run, Run]:
    """The first `count` vectors of a DataMove or MatMul and the rest."""
    step_local = 1 << instruction.local_stride
    head = dataclasses.replace(instruction, size=count - 1)
    tail: Run
    if isinstance(instruction, DataMove):
        tail = dataclasses.replace(instruction, local_address=instruction.local_address
                                   + count * step_local,
                                   address=instruction.address + count * (1 << instruction.stride),
                                   size=instruction.size - count)
    else:
        tail = dataclasses.replace(instruction, local_address=instruction.local_address
                                   + (0 if instruction.zeroes else count * step_local),
                                   acc_address=instruction.acc_address + count * (1 << instruction.acc_stride),
                                   size=instruction.size - count)
    return head, tail


def _continues(prev: Instruction, new: Instruction) -> bool:
    if isinstance(prev, DataMove) and isinstance(new, DataMove):
        count = prev.size + 1
        return (prev.kind == new.kind and prev.local_stride == new.local_stride
                and prev.stride == new.stride
                and new.local_address == prev.local_address + count * (1 << prev.local_stride)
                and new.address == prev.address + count * (1 << prev.stride))
    if not (isinstance(prev, MatMul) and isinstance(new, MatMul)):
        return False
    count = prev.size + 1
    return (prev.accumulate == new.accumulate and prev.zeroes == new.zeroes
            and prev.local_stride == new.local_stride and prev.acc_stride == new.acc_stride
            and (new.zeroes or new.local_address == prev.local_address
                 + count * (1 << prev.local_stride))
            and new.acc_address == prev.acc_address + count * (1 << prev.acc_stride))


class Program:
    """Instructions for one architecture, with the half rule and rollups applied."""

    def __init__(self, arch: Architecture, scratch_acc: int):
        self.arch = arch
        self.scratch_acc = scratch_acc
        self.half = arch.local_depth // 2
        self.max_vectors = 1 << arch.layout.operand2_address_bits
        self.instructions: List[Instruction] = []
        self.merge_barrier = 0     # instructions before this index are never merged into
        self.last_acc_write: Optional[int] = None   # last vector the accumulator stream wrote

    def barrier(self) -> None:
        self.merge_barrier = len(self.instructions)

    def emit(self, instruction: Instruction) -> None:
        if type(instruction) is SIMD:   # the hot path: touches no local memory, never merges
            self.instructions.append(instruction)
            self.last_acc_write = instruction.write_address if instruction.write else None
            return
        extent = _local_extent(instruction)
        if extent is not None and not isinstance(instruction, LoadWeights):
            first, count, step = extent
            last = first + (count - 1) * step
            if first < self.half <= last:
                head, tail = split_at(cast(Run, instruction), -(-(self.half - first) // step))
                self.emit(head)
                self.emit(tail)
                return
            if count > self.max_vectors:
                head, tail = split_at(cast(Run, instruction), self.max_vectors)
                self.emit(head)
                self.emit(tail)
                return
        elif isinstance(instruction, LoadWeights):
            first, count, step = extent if extent else (0, 0, 1)
            if extent and first < self.half <= first + (count - 1) * step:
                raise CompileError("internal: a weight block at local %d crosses the middle of "
                                   "local memory" % first)
        if len(self.instructions) > self.merge_barrier and _continues(self.instructions[-1],
                                                                      instruction):
            prev = cast(Run, self.instructions[-1])   # _continues: both DataMoves or both MatMuls
            merged = dataclasses.replace(prev, size=prev.size + cast(Run, instruction).size + 1)
            extent = _local_extent(merged)
            fits = merged.size < self.max_vectors
            if extent is not None:
                first, count, step = extent
                fits = fits and (first >= self.half or first + (count - 1) * step < self.half)
            if fits:
                self.instructions[-1] = merged
                self._track(merged)
                return
        start = _accumulating_write(instruction)
        if start is not None and start == self.last_acc_write:
            self.instructions.append(MatMul(0, self.scratch_acc, 0, zeroes=True))
        self.instructions.append(instruction)
        self._track(instruction)

    def _track(self, instruction: Instruction) -> None:
        if lands_earlier_accumulates(instruction):
            self.last_acc_write = None
        written = _acc_writes(instruction)
        if written is not None:
            self.last_acc_write = written
        elif _in_acc_stream(instruction):
            self.last_acc_write = None

    def datamove(self, kind: DataMoveKind, local: int, address: int, vectors: int,
                 local_stride: int = 0, stride: int = 0) -> None:
        if vectors > 0:
            self.emit(DataMove(kind, local, address, vectors - 1, local_stride, stride))

    def __len__(self) -> int:
        return len(self.instructions)


class Allocator:
    """Lowest-address best-fit allocation of vectors in [0, depth)."""

    def __init__(self, depth: int, name: str):
        self.depth, self.name = depth, name
        self.free: List[Tuple[int, int]] = [(0, depth)] if depth > 0 else []
        self.used = 0
        self.peak = 0

    def largest(self) -> int:
        return max((size for _, size in self.free), default=0)

    def alloc(self, size: int) -> Optional[int]:
        if size <= 0:
            return 0
        fits = [(s, a) for a, s in self.free if s >= size]
        if not fits:
            return None
        _, address = min(fits)
        index = next(i for i, (a, _) in enumerate(self.free) if a == address)
        a, s = self.free[index]
        if s == size:
            self.free.pop(index)
        else:
            self.free[index] = (a + size, s - size)
        self.used += size
        self.peak = max(self.peak, self.used)
        return address

    def take(self, address: int, size: int) -> None:
        """Allocate [address, address + size), which must be free: a run planned beforehand
        (an allocator replaying the same allocations and releases finds it free there)."""
        if size <= 0:
            return
        index = next((i for i, (a, s) in enumerate(self.free) if a <= address and address + size <= a + s), None)
        if index is None:
            raise ValueError("%s: vectors %d..%d are not free" % (self.name, address, address + size - 1))
        a, s = self.free.pop(index)
        self.free[index:index] = [run for run in ((a, address - a), (address + size, a + s - address - size))
                                  if run[1] > 0]
        self.used += size
        self.peak = max(self.peak, self.used)

    def release(self, address: int, size: int) -> None:
        if size <= 0:
            return
        self.free.append((address, size))
        self.free.sort()
        merged: List[Tuple[int, int]] = []
        for a, s in self.free:
            if merged and merged[-1][0] + merged[-1][1] == a:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((a, s))
        self.free = merged
        self.used -= size
