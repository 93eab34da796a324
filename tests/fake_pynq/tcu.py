"""The Tensil TCU behind axi_dma_0's MM2S stream: what a board's accelerator does with the
bytes a driver streams, against the fake DDR by physical address.

- `FakeTcu(arch, ddr)`: decodes the stream as it arrives (instructions may straddle DMA
  transfers) and runs every instruction on the bit-exact emulator (`tensil.emulator`); its
  DataMoves to and from DRAM0/DRAM1 go to the DDR at the byte address the RTL forms,
  (Configure offset << 16) + vector * vector_bytes, 32-bit, through `ddr.read` / `ddr.write`,
  so the DDR's hazards see a driver that forgot to flush or invalidate, or a window outside
  its buffers. It keeps its state between transfers as the hardware does (local memory,
  accumulators, the array's weights, SIMD registers, Configure registers).
  `lag=True` queues what arrives until `advance()` (a driver's sleep hook can call it: the
  driver must then really wait); `hang_after=k` executes k instructions and then swallows the
  rest (a hung TCU). `received` is every byte of the stream, `bus` every DRAM access
  (kind, physical address, bytes).
- `CosimTcu(arch, ddr)`: each MM2S transfer is one run of the real RTL (tensil_tools.cosim, where
  Verilator and the RTL are present), on images of the whole fake DDR (which must start at
  physical address 0, where the co-simulation maps memory) for both masters; the vectors the
  RTL changed are written back to the DDR. Between transfers it carries local memory, the
  accumulators and the Configure registers; the array's weights and the SIMD registers start
  from zero each transfer, so a transfer whose MatMul needs weights loaded by an earlier
  transfer is refused.
"""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from tensil.arch import Architecture
from tensil.emulator import Emulator
from tensil.fixed import fixed_format, from_bytes, to_bytes
from tensil.isa import (
    ConfigRegister,
    Configure,
    DataMove,
    DataMoveKind,
    Instruction,
    LoadWeights,
    MatMul,
    decode_program,
    encode_program,
)

__all__ = ["CosimTcu", "FakeTcu"]

_READS = {DataMoveKind.DRAM0_TO_LOCAL: 0, DataMoveKind.DRAM1_TO_LOCAL: 1}
_WRITES = {DataMoveKind.LOCAL_TO_DRAM0: 0, DataMoveKind.LOCAL_TO_DRAM1: 1}
_OFFSETS = (ConfigRegister.DRAM0_OFFSET, ConfigRegister.DRAM1_OFFSET)


class _BusEmulator(Emulator):
    """The emulator with its DRAMs on the bus: DDR by physical address, not arrays."""

    def __init__(self, arch: Architecture, ddr: Any):
        super().__init__(arch)
        self.ddr = ddr
        self.bus: List[Tuple[str, int, int]] = []

    def _runs(self, i: DataMove, which: int) -> List[Tuple[int, np.ndarray]]:
        """(byte address, local vectors) of each AXI request: one for a unit stride."""
        _, byte = self.dram_bytes(which, i.address, i.size, i.stride)
        local = self._local(i.local_address, i.size, i.local_stride)
        self._dram_moved[which] = self._index
        if i.stride == 0:
            return [(int(byte[0]), local)]
        return [(int(a), local[k:k + 1]) for k, a in enumerate(byte)]

    def _datamove(self, i: DataMove) -> None:
        if i.kind in _READS:
            for phys, local in self._runs(i, _READS[i.kind]):
                data = self.ddr.read(phys, local.size * self.arch.vector_bytes)
                self.bus.append(("read", phys, len(data)))
                self.local[local] = from_bytes(data, self.fmt).reshape(local.size, -1)
        elif i.kind in _WRITES:
            for phys, local in self._runs(i, _WRITES[i.kind]):
                data = to_bytes(self.local[local], self.fmt)
                self.bus.append(("write", phys, len(data)))
                self.ddr.write(phys, data)
        else:
            super()._datamove(i)


class FakeTcu:
    """The accelerator as an MM2S sink (see the module docstring)."""

    def __init__(self, arch: Architecture, ddr: Any, lag: bool = False,
                 hang_after: Optional[int] = None):
        self.arch = arch
        self.machine = _BusEmulator(arch, ddr)
        self.lag = lag
        self.hang_after = hang_after
        self.received = bytearray()
        self.executed: List[Instruction] = []
        self._pending = b""
        self._queue: List[Instruction] = []

    @property
    def bus(self) -> List[Tuple[str, int, int]]:
        return self.machine.bus

    def attach(self, board: Any, dma: str = "axi_dma_0") -> "FakeTcu":
        board.hardware(dma).mm2s_sink = self.feed
        return self

    def feed(self, data: bytes) -> None:
        self.received += data
        size = self.arch.layout.instruction_bytes
        whole = (len(self._pending) + len(data)) // size * size
        stream, self._pending = (self._pending + data)[:whole], (self._pending + data)[whole:]
        self._queue.extend(decode_program(stream, self.arch))
        if not self.lag:
            self.advance()

    def advance(self, *_: Any) -> None:
        """Execute what arrived (a driver's sleep hook may call it with the poll interval)."""
        queue, self._queue = self._queue, []
        for instruction in queue:
            if self.hang_after is not None and len(self.executed) >= self.hang_after:
                return
            self.machine.step(instruction)
            self.executed.append(instruction)


class CosimTcu:
    """Each MM2S transfer a run of the real RTL (see the module docstring)."""

    def __init__(self, arch: Architecture, ddr: Any):
        from tensil_tools import cosim

        if ddr.base != 0:
            raise ValueError("the co-simulated TCU needs a FakeDDR at physical address 0")
        self.cosim = cosim
        self.arch = arch
        self.ddr = ddr
        self.fmt = fixed_format(arch.data_type)
        n = arch.array_size
        self.local = np.zeros((arch.local_depth, n), np.int16)
        self.accumulators = np.zeros((arch.accumulator_depth, n), np.int16)
        self.config: Dict[ConfigRegister, int] = {}
        self.cycles: List[int] = []
        self.received = bytearray()

    def attach(self, board: Any, dma: str = "axi_dma_0") -> "CosimTcu":
        board.hardware(dma).mm2s_sink = self.feed
        return self

    def feed(self, data: bytes) -> None:
        self.received += data
        program = decode_program(bytes(data), self.arch)
        for i in program:
            if isinstance(i, LoadWeights):
                break
            if isinstance(i, MatMul):
                raise AssertionError("a MatMul before any LoadWeights in this DMA transfer: the "
                                     "co-simulated TCU cannot carry the array's weights across "
                                     "transfers")
        prefix = encode_program([Configure(r, v) for r, v in self.config.items()], self.arch)
        self.config.update({i.register: i.value for i in program if isinstance(i, Configure)})
        vb = self.arch.vector_bytes
        memory = self.ddr.peek(0, self.ddr.size)
        memory += bytes(-len(memory) % vb)
        image = np.frombuffer(memory, "<i2").reshape(-1, self.arch.array_size)
        result = self.cosim.run(prefix + bytes(data), image, image, self.arch,
                                completion="drain", local=self.local,
                                accumulators=self.accumulators)
        for after in (result.dram0, result.dram1):
            self._write_back(image, after)
        self.local, self.accumulators = result.local, result.accumulators
        self.cycles.append(result.cycles)

    def _write_back(self, before: np.ndarray, after: np.ndarray) -> None:
        changed = np.flatnonzero(np.any(before != after, axis=1))
        vb = self.arch.vector_bytes
        start = 0
        while start < changed.size:   # one write a run of consecutive changed vectors
            stop = start
            while stop + 1 < changed.size and changed[stop + 1] == changed[stop] + 1:
                stop += 1
            first, last = int(changed[start]), int(changed[stop])
            self.ddr.write(first * vb, after[first:last + 1].astype("<i2").tobytes())
            start = stop + 1
