"""AXI DMA in simple (direct register) mode: the IP's registers (Xilinx PG021) and
pynq.lib.dma.DMA over them.

Per channel (MM2S at 0x00, S2MM at 0x30): DMACR +0x00 (RS bit 0, reset bit 2, IOC_IrqEn bit
12), DMASR +0x04 (Halted bit 0, Idle bit 1, DMAIntErr 0x10, DMASlvErr 0x20, DMADecErr 0x40,
IOC_Irq 0x1000 write-1-to-clear), SA/DA +0x18 (+0x1C high word), LENGTH +0x28 (writing it
starts the transfer; it has C_SG_LENGTH_WIDTH bits). After a reset the channel is halted and
not idle (so pynq allows its first transfer without Idle). A transfer reads DDR by physical
address and hands the bytes to the MM2S stream sink (`mm2s_sink`, a callable taking bytes:
the place an accelerator model plugs in; by default the packets are kept in `mm2s_packets`),
or writes what `s2mm_source(max_bytes)` returns to DDR. `latency` DMASR reads see a transfer
busy before it completes (0: done at once). An address outside the DDR sets DMADecErr and
halts the channel, a zero length DMAIntErr; an exception of the sink or source propagates
out of the register access that completed the transfer (the LENGTH write, or a DMASR read).

`DMA(description)` follows pynq's driver: `sendchannel` / `recvchannel` with `transfer(array,
start=0, nbytes=0)`, `wait()`, `wait_async()`, `running`, `idle`, `error`, `start()`, `stop()`,
`transferred`; `buffer_max_size` = 2**c_sg_length_width - 1; `description`. It refuses what
pynq refuses (a stopped channel, a busy one, more than buffer_max_size bytes, an address not
aligned to the data width without DRE, a plain ndarray has no physical_address) and, like a
board, streams raw memory for a non-contiguous view or a range past the buffer's end; both
are also written to the DDR's hazards.
"""

from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .ddr import DecodeError, FakeDDR
from .ip import DefaultIP
from .mmio import RegisterWindow

__all__ = ["DMA", "AxiDmaHardware", "MAX_C_SG_LENGTH_WIDTH"]

MAX_C_SG_LENGTH_WIDTH = 26
MM2S, S2MM = 0x00, 0x30
DMACR, DMASR, ADDR, ADDR_MSB, LENGTH = 0x00, 0x04, 0x18, 0x1C, 0x28
HALTED, IDLE, INT_ERR, SLV_ERR, DEC_ERR, IOC_IRQ, ERR_IRQ = 0x1, 0x2, 0x10, 0x20, 0x40, 0x1000, 0x4000


class _ChannelState:
    def __init__(self) -> None:
        self.control = 0
        self.status = HALTED
        self.address = 0
        self.address_msb = 0
        self.length = 0
        self.polls_left: Optional[int] = None  # set while a transfer is in flight


class AxiDmaHardware(RegisterWindow):
    """The AXI DMA IP over the board's DDR."""

    def __init__(self, name: str, phys_addr: int, addr_range: int, parameters: Dict[str, str],
                 ddr: FakeDDR, latency: int = 0):
        super().__init__(name, phys_addr, addr_range)
        self.ddr = ddr
        self.latency = latency
        self.length_mask = (1 << int(parameters.get("c_sg_length_width", "14"))) - 1
        self.channels = {MM2S: _ChannelState(), S2MM: _ChannelState()}
        self.mm2s_packets: List[bytes] = []
        self.mm2s_sink: Callable[[bytes], Any] = self.mm2s_packets.append
        self.s2mm_source: Optional[Callable[[int], bytes]] = None

    def _split(self, offset: int) -> Any:
        base = S2MM if offset >= S2MM else MM2S
        return base, self.channels[base], offset - base

    def load(self, offset: int) -> int:
        base, channel, register = self._split(offset)
        if register == DMACR:
            return channel.control
        if register == DMASR:
            if channel.polls_left is not None:
                if channel.polls_left == 0:
                    self._complete(base, channel)
                else:
                    channel.polls_left -= 1
            return channel.status
        return {ADDR: channel.address, ADDR_MSB: channel.address_msb,
                LENGTH: channel.length}.get(register, 0)

    def store(self, offset: int, value: int) -> None:
        base, channel, register = self._split(offset)
        if register == DMACR:
            if value & 0x4:  # soft reset: back to the power-on state
                self.channels[base] = _ChannelState()
                return
            channel.control = value
            if value & 0x1 and not channel.status & (INT_ERR | SLV_ERR | DEC_ERR):
                channel.status &= ~HALTED
            elif not value & 0x1:
                channel.status |= HALTED
                channel.polls_left = None
        elif register == DMASR:
            channel.status &= ~(value & (IOC_IRQ | ERR_IRQ))
        elif register == ADDR:
            channel.address = value
        elif register == ADDR_MSB:
            channel.address_msb = value
        elif register == LENGTH and not channel.status & HALTED:
            channel.length = value & self.length_mask
            channel.status &= ~IDLE
            channel.polls_left = self.latency
            if self.latency == 0:
                self._complete(base, channel)

    def _complete(self, base: int, channel: _ChannelState) -> None:
        channel.polls_left = None
        address = channel.address_msb << 32 | channel.address
        if channel.length == 0:
            return self._fail(channel, INT_ERR)
        try:
            if base == MM2S:
                data = self.ddr.read(address, channel.length)
                self.mm2s_sink(data)
            else:
                if self.s2mm_source is None:
                    raise RuntimeError("%s: S2MM transfer with no stream source connected (a "
                                       "board would wait forever)" % self.name)
                data = bytes(self.s2mm_source(channel.length))[:channel.length]
                self.ddr.write(address, data)
                channel.length = len(data)
        except DecodeError:
            return self._fail(channel, DEC_ERR)
        channel.status |= IDLE | IOC_IRQ

    @staticmethod
    def _fail(channel: _ChannelState, error: int) -> None:
        channel.status |= error | ERR_IRQ | HALTED
        channel.control &= ~0x1

    def irq_line(self, pin: str) -> bool:
        channel = self.channels[MM2S if pin.startswith("mm2s") else S2MM]
        return bool(channel.status & IOC_IRQ and channel.control & 0x1000
                    or channel.status & ERR_IRQ and channel.control & 0x4000)

    def advance(self) -> bool:
        """Let time pass: every transfer in flight completes."""
        moved = False
        for base, channel in self.channels.items():
            if channel.polls_left is not None:
                self._complete(base, channel)
                moved = True
        return moved


class _SimpleChannel:
    """pynq.lib.dma._SDMAChannel: one direction of the simple-mode DMA."""

    def __init__(self, dma: "DMA", offset: int, max_size: int, width: int, dre: bool,
                 interrupt: Any = None):
        self._dma = dma
        self._mmio = dma.mmio
        self._offset = offset
        self._max_size = max_size
        self._align = width
        self._dre = dre
        self._interrupt = interrupt
        self._flush_before = offset == MM2S
        self._active_buffer: Any = None
        self._first_transfer = True
        self.transferred = 0
        self.start()

    def _status(self) -> int:
        return self._mmio.read(self._offset + DMASR)

    @property
    def running(self) -> bool:
        return self._status() & HALTED == 0

    @property
    def idle(self) -> bool:
        return self._status() & IDLE == IDLE

    @property
    def error(self) -> bool:
        return self._status() & 0x70 != 0

    def start(self) -> None:
        self._mmio.write(self._offset + DMACR, 0x1001 if self._interrupt else 0x0001)
        while not self.running:
            pass
        self._first_transfer = True

    def stop(self) -> None:
        self._mmio.write(self._offset + DMACR, 0x0000)
        while self.running:
            pass

    def transfer(self, array: Any, start: int = 0, nbytes: int = 0) -> None:
        if not self.running:
            raise RuntimeError("DMA channel not started")
        if not self.idle and not self._first_transfer:
            raise RuntimeError("DMA channel not idle")
        if nbytes == 0:
            nbytes = array.nbytes - start
        if nbytes > self._max_size:
            raise ValueError("Transfer size is %d bytes, which exceeds the maximum DMA buffer "
                             "size %d." % (nbytes, self._max_size))
        address = array.physical_address + start
        if not self._dre and address % self._align:
            raise RuntimeError("DMA does not support unaligned transfers; Starting address must "
                               "be aligned to %d bytes." % self._align)
        self._note_raw_memory(array, start, nbytes)
        if self._flush_before:
            array.flush()
        self.transferred = 0
        self._mmio.write(self._offset + ADDR, address & 0xFFFFFFFF)
        self._mmio.write(self._offset + ADDR_MSB, (address >> 32) & 0xFFFFFFFF)
        self._mmio.write(self._offset + LENGTH, nbytes)
        self._active_buffer = array
        self._first_transfer = False

    def _note_raw_memory(self, array: Any, start: int, nbytes: int) -> None:
        """The DMA moves bytes from an address: say when those are not the array's elements."""
        ddr = self._dma.device.ddr
        if isinstance(array, np.ndarray) and not array.flags.c_contiguous:
            ddr.hazard("DMA transfer of a non-contiguous view at 0x%x: the DMA moves %d bytes of "
                       "raw memory from there, not the view's elements"
                       % (array.physical_address, nbytes))
        if start < 0 or start + nbytes > array.nbytes:
            ddr.hazard("DMA transfer of bytes %d..%d of a %d-byte buffer at 0x%x runs outside it"
                       % (start, start + nbytes, array.nbytes, array.physical_address))

    def wait(self) -> None:
        if not self.running:
            raise RuntimeError("DMA channel not started")
        while True:
            status = self._status()
            if self.error:
                if status & INT_ERR:
                    raise RuntimeError("DMA Internal Error (transfer length 0?)")
                if status & SLV_ERR:
                    raise RuntimeError("DMA Slave Error (cannot access memory map interface)")
                if status & DEC_ERR:
                    raise RuntimeError("DMA Decode Error (invalid address)")
            if self.idle:
                break
        self._finish()

    async def wait_async(self) -> None:
        if not self.running:
            raise RuntimeError("DMA channel not started")
        while not self.idle:
            await self._interrupt.wait()
        self._mmio.write(self._offset + DMASR, IOC_IRQ)
        self._finish()

    def _finish(self) -> None:
        if not self._flush_before:
            self._active_buffer.invalidate()
        self.transferred = self._mmio.read(self._offset + LENGTH)
        self._active_buffer = None


class DMA(DefaultIP):
    """pynq.lib.dma.DMA(description) for an AXI DMA without scatter-gather."""

    bindto = ["xilinx.com:ip:axi_dma:7.1"]

    def __init__(self, description: Dict[str, Any], *args: Any, **kwargs: Any):
        if not isinstance(description, dict) or args or kwargs:
            raise RuntimeError("You appear to want the old DMA driver which has been deprecated "
                               "and moved to pynq.lib.deprecated")
        super().__init__(description)
        self.description = description
        if "parameters" not in description:
            raise RuntimeError("Unable to get parameters from description; Users must use *.hwh "
                               "files for overlays.")
        parameters = description["parameters"]
        if parameters.get("c_include_sg", "0") == "1" or parameters.get("c_micro_dma", "0") == "1":
            raise NotImplementedError("the fake DMA models simple (direct register) mode only")
        width = int(parameters.get("c_sg_length_width", MAX_C_SG_LENGTH_WIDTH))
        self.buffer_max_size = (1 << width) - 1
        self.sendchannel = self._channel("mm2s", MM2S)
        self.recvchannel = self._channel("s2mm", S2MM)

    def _channel(self, name: str, offset: int) -> Optional[_SimpleChannel]:
        parameters = self.description["parameters"]
        if parameters.get("c_include_" + name, "0") != "1":
            return None
        dre = parameters.get("c_include_%s_dre" % name, "0") == "1"
        width = int(parameters["c_m_axi_%s_data_width" % name]) >> 3
        interrupt = getattr(self, name + "_introut", None)
        return _SimpleChannel(self, offset, self.buffer_max_size, width, dre, interrupt)
