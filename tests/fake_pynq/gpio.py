"""AXI GPIO: the IP's registers (Xilinx PG144) and pynq.lib.AxiGPIO over them.

Registers: channel 1 DATA 0x0 / TRI 0x4, channel 2 DATA 0x8 / TRI 0xC, GIER 0x11C (bit 31),
IP ISR 0x120 and IP IER 0x128 (bit 0 channel 1, bit 1 channel 2). Reading DATA gives the pins
of the bits whose TRI bit is 1 (inputs) and the written value of the others; bits beyond the
channel's width read 0. An input change sets the channel's ISR bit; writing 1 to an ISR bit
toggles it (clears a set one); the interrupt line is GIER[31] and any(ISR & IER).

The pins are the board's (buttons, switches): a test scripts them with `PinScript` (one value
a DATA read of that channel, the last one repeating; an `Interrupt.wait` lets one step pass).

`AxiGPIO` follows pynq.lib.axigpio: `channel1` / `channel2` with `read()` (DATA, unmasked: the
length only bounds indexing), `write(val, mask)`, `setlength`, `setdirection('in' | 'out' |
'inout' or the classes)`, `trimask`, `wait_for_interrupt_async`; slices `channel[i]` and
`channel[a:b]` of type Input / Output / InOut with `read`, `write`, `on`, `off`, `toggle`,
`wait_for_value(_async)`. A channel refuses `write` when set to 'in' and `read` when 'out'.
Only an InOut slice touches TRI; the constructor writes GIER when the IP has ip2intc_irpt.
"""

from typing import Any, Dict, List, Optional, Sequence

from .ip import DefaultIP, run_blocking
from .mmio import RegisterWindow

__all__ = ["AxiGPIO", "AxiGpioHardware", "PinScript"]

DATA, TRI, DATA2, TRI2 = 0x0, 0x4, 0x8, 0xC
GIER, ISR, IER = 0x11C, 0x120, 0x128


class PinScript:
    """Input pin values over time: `values[i]` at the i-th step, the last one held."""

    def __init__(self, values: Sequence[int] = (0,)):
        if not values:
            raise ValueError("a pin script needs at least one value")
        self.values = [int(v) for v in values]
        self.position = 0

    @property
    def current(self) -> int:
        return self.values[min(self.position, len(self.values) - 1)]

    def step(self) -> bool:
        """Move one step on; False once the last value is held for good."""
        if self.position >= len(self.values) - 1:
            self.position = len(self.values)
            return False
        self.position += 1
        return True


class AxiGpioHardware(RegisterWindow):
    """The AXI GPIO IP configured by its hwh parameters (C_GPIO_WIDTH, C_IS_DUAL, ...)."""

    def __init__(self, name: str, phys_addr: int, addr_range: int, parameters: Dict[str, str],
                 pins: Optional[Dict[int, PinScript]] = None):
        super().__init__(name, phys_addr, addr_range)
        dual = parameters.get("C_IS_DUAL", "0") == "1"
        self.width = {1: int(parameters.get("C_GPIO_WIDTH", "32")),
                      2: int(parameters.get("C_GPIO2_WIDTH", "32")) if dual else 0}
        self.has_interrupt = parameters.get("C_INTERRUPT_PRESENT", "0") == "1"
        self.pins = {1: PinScript(), 2: PinScript()}
        self.pins.update(pins or {})
        self._out = {1: 0, 2: 0}
        self._tri = {1: 0xFFFFFFFF, 2: 0xFFFFFFFF}  # C_TRI_DEFAULT: all inputs
        self._seen = {c: self._inputs(c) for c in (1, 2)}
        self.gier = self.isr = self.ier = 0

    def _mask(self, channel: int) -> int:
        return (1 << self.width[channel]) - 1

    def _inputs(self, channel: int) -> int:
        return self.pins[channel].current & self._tri[channel] & self._mask(channel)

    def _notice_changes(self) -> None:
        for channel in (1, 2):
            now = self._inputs(channel)
            if now != self._seen[channel] and self.has_interrupt:
                self.isr |= channel  # bit 0 for channel 1, bit 1 for channel 2
            self._seen[channel] = now

    def load(self, offset: int) -> int:
        channel = {DATA: 1, DATA2: 2}.get(offset)
        if channel is not None:
            value = (self._inputs(channel) | self._out[channel] & ~self._tri[channel]) \
                & self._mask(channel)
            if self.pins[channel].step():
                self._notice_changes()
            return value
        if offset in (TRI, TRI2):
            channel = 1 if offset == TRI else 2
            return self._tri[channel] & self._mask(channel)
        if self.has_interrupt:
            return {GIER: self.gier, ISR: self.isr, IER: self.ier}.get(offset, 0)
        return 0

    def store(self, offset: int, value: int) -> None:
        if offset in (DATA, DATA2):
            channel = 1 if offset == DATA else 2
            self._out[channel] = value & self._mask(channel)
        elif offset in (TRI, TRI2):
            self._tri[1 if offset == TRI else 2] = value
            self._notice_changes()
        elif self.has_interrupt and offset == GIER:
            self.gier = value & 0x80000000
        elif self.has_interrupt and offset == IER:
            self.ier = value & 0x3
        elif self.has_interrupt and offset == ISR:
            self.isr ^= value & 0x3  # toggle on write

    # --- the interrupt line, for pynq.Interrupt -----------------------------------------

    def irq_line(self, pin: str) -> bool:
        return bool(self.has_interrupt and self.gier and self.isr & self.ier)

    def advance(self) -> bool:
        """Let time pass: every scripted channel takes its next value."""
        moved = [self.pins[c].step() for c in (1, 2)]
        self._notice_changes()
        return any(moved)


class AxiGPIO(DefaultIP):
    """pynq.lib.AxiGPIO(description)."""

    class _Wires:
        """Wires start..stop-1 of a channel."""

        def __init__(self, parent: "AxiGPIO.Channel", start: int, stop: int):
            self._parent = parent
            self._start = start
            self._stop = stop
            self._mask = (1 << (stop - start)) - 1

    class Input(_Wires):
        def read(self) -> int:
            return (self._parent.read() >> self._start) & self._mask

        async def wait_for_value_async(self, value: int) -> None:
            while self.read() != value:
                await self._parent.wait_for_interrupt_async()

        def wait_for_value(self, value: int) -> None:
            run_blocking(self.wait_for_value_async(value))

    class Output(_Wires):
        def read(self) -> int:
            return (self._parent._val >> self._start) & self._mask

        def write(self, val: int) -> None:
            if val > self._mask:
                raise ValueError("%d too large for %d bits" % (val, self._stop - self._start))
            self._parent.write(val << self._start, self._mask << self._start)

        def on(self) -> None:
            self.write(self._mask)

        def off(self) -> None:
            self.write(0)

        def toggle(self) -> None:
            self.write((~self._parent._val >> self._start) & self._mask)

    class InOut(Input, Output):
        def __init__(self, parent: "AxiGPIO.Channel", start: int, stop: int):
            super().__init__(parent, start, stop)
            self._trimask = self._mask << start

        def read(self) -> int:
            self._parent.trimask |= self._trimask
            return AxiGPIO.Input.read(self)

        def write(self, val: int) -> None:
            self._parent.trimask &= ~self._trimask
            AxiGPIO.Output.write(self, val)

    class Channel:
        def __init__(self, parent: "AxiGPIO", channel: int):
            self._parent = parent
            self._channel = channel  # 0 or 1
            self.slicetype: Any = AxiGPIO.InOut
            self.length = 32
            self._val = 0
            self._waiter_count = 0

        def __getitem__(self, idx: Any) -> Any:
            if isinstance(idx, slice):
                if idx.step is not None and idx.step != 1:
                    raise IndexError("Steps other than 1 not supported")
                return self.slicetype(self, idx.start, idx.stop)
            if idx >= self.length:
                raise IndexError()
            return self.slicetype(self, idx, idx + 1)

        def __len__(self) -> int:
            return self.length

        def write(self, val: int, mask: int) -> None:
            if self.slicetype == AxiGPIO.Input:
                raise RuntimeError("You cannot write to an Input")
            self._val = (self._val & ~mask) | (val & mask)
            self._parent.write(self._channel * 8, self._val)

        def read(self) -> int:
            if self.slicetype == AxiGPIO.Output:
                raise RuntimeError("You cannot read from an output")
            return self._parent.read(self._channel * 8)

        @property
        def trimask(self) -> int:
            return self._parent.read(self._channel * 8 + 4)

        @trimask.setter
        def trimask(self, value: int) -> None:
            self._parent.write(self._channel * 8 + 4, value)

        def setlength(self, length: int) -> None:
            self.length = length

        def setdirection(self, direction: Any) -> None:
            self.slicetype = _direction(direction)

        async def wait_for_interrupt_async(self) -> None:
            if not self._parent.has_interrupts:
                raise RuntimeError("Interrupts not available for this IP")
            mask = 1 << self._channel
            if self._waiter_count == 0:
                self._parent.write(IER, self._parent.read(IER) | mask)
            self._waiter_count += 1
            await self._parent.ip2intc_irpt.wait()
            if self._parent.read(ISR) & mask:
                self._parent.write(ISR, mask)
            self._waiter_count -= 1
            if self._waiter_count == 0:
                self._parent.write(IER, self._parent.read(IER) & ~mask)

    bindto = ["xilinx.com:ip:axi_gpio:2.0"]

    def __init__(self, description: Dict[str, Any]):
        super().__init__(description)
        self._channels: List[AxiGPIO.Channel] = [AxiGPIO.Channel(self, i) for i in range(2)]
        self.channel1 = self._channels[0]
        self.channel2 = self._channels[1]
        self.has_interrupts = "ip2intc_irpt" in description["interrupts"]
        if self.has_interrupts:
            self.write(GIER, 0x80000000)

    def setlength(self, length: int, channel: int = 1) -> None:
        self._channels[channel - 1].length = length

    def setdirection(self, direction: Any, channel: int = 1) -> None:
        self._channels[channel - 1].slicetype = _direction(direction)

    def __getitem__(self, idx: Any) -> Any:
        return self.channel1[idx]


_DIRECTIONS = {"in": AxiGPIO.Input, "out": AxiGPIO.Output, "inout": AxiGPIO.InOut}


def _direction(direction: Any) -> Any:
    if isinstance(direction, str):
        direction = _DIRECTIONS.get(direction, direction)
    if direction not in (AxiGPIO.Input, AxiGPIO.Output, AxiGPIO.InOut):
        raise ValueError("direction should be one of AxiGPIO.{Input,Output,InOut} "
                         "or the string 'in', 'out' or 'inout'")
    return direction
