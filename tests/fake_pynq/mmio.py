"""Register windows (the hardware side of an IP's AXI-Lite registers) and pynq.MMIO over them.

A `RegisterWindow` is what the bus sees of one IP: 32-bit words, every access recorded as a
`Read(offset, value)` or `Write(offset, value)` in `transactions`. Subclasses model the IP's
behaviour by overriding `load` / `store`. `check_transactions(expected)` fails on a missing,
an extra or a different access (the strictness of pynq's tests/mock_devices.py), then clears
the log; `expect(expected)` is the same as a context manager.

`MMIO(base_addr, length, device)` follows pynq.mmio.MMIO: `read(offset, length=4,
word_order="little")` and `write(offset, data)` with pynq's argument checks (negative offsets
ValueError, unaligned MemoryError, lengths 1/2/4/8), over the window of `device` (a
`FakeBoard`) that holds the address.
"""

import contextlib
from typing import Any, Iterator, List, Sequence, Union

__all__ = ["MMIO", "Read", "RegisterWindow", "Transaction", "Write"]

WORD = 4


class _Access:
    kind = ""

    def __init__(self, offset: int, value: int):
        self.offset = offset
        self.value = value

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and (self.offset, self.value)
                == (other.offset, other.value))  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.kind, self.offset, self.value))

    def __repr__(self) -> str:
        return "%s(0x%x, 0x%x)" % (self.kind, self.offset, self.value)


class Read(_Access):
    """The driver read `value` from the register at `offset`."""

    kind = "Read"


class Write(_Access):
    """The driver wrote `value` to the register at `offset`."""

    kind = "Write"


Transaction = Union[Read, Write]


class RegisterWindow:
    """`addr_range` bytes of 32-bit registers at `phys_addr`; a plain register file by default."""

    def __init__(self, name: str, phys_addr: int, addr_range: int):
        self.name = name
        self.phys_addr = phys_addr
        self.addr_range = addr_range
        self.transactions: List[Transaction] = []
        self._words: dict = {}

    # --- the bus side (drivers) ---------------------------------------------------------

    def bus_read(self, offset: int) -> int:
        self._check(offset)
        value = self.load(offset) & 0xFFFFFFFF
        self.transactions.append(Read(offset, value))
        return value

    def bus_write(self, offset: int, value: int) -> None:
        self._check(offset)
        value &= 0xFFFFFFFF
        self.transactions.append(Write(offset, value))
        self.store(offset, value)

    def _check(self, offset: int) -> None:
        if offset % WORD or not 0 <= offset < self.addr_range:
            raise IndexError("%s: register offset 0x%x is not a word inside the 0x%x-byte window"
                             % (self.name, offset, self.addr_range))

    # --- the hardware behaviour (subclasses override) ----------------------------------

    def load(self, offset: int) -> int:
        return self._words.get(offset, 0)

    def store(self, offset: int, value: int) -> None:
        self._words[offset] = value

    # --- the test side ------------------------------------------------------------------

    def check_transactions(self, expected: Sequence[Transaction]) -> None:
        """Assert the accesses since the last check were exactly `expected`; then forget them."""
        actual, self.transactions = self.transactions, []
        expected = list(expected)
        if actual == expected:
            return
        common = next((i for i, (a, e) in enumerate(zip(actual, expected)) if a != e),
                      min(len(actual), len(expected)))
        if common == len(actual):
            problem = "missing %s" % expected[common:]
        elif common == len(expected):
            problem = "extra %s" % actual[common:]
        else:
            problem = "access #%d is %r, expected %r" % (common, actual[common], expected[common])
        raise AssertionError("%s: %s\n  actual:   %s\n  expected: %s"
                             % (self.name, problem, actual, expected))

    @contextlib.contextmanager
    def expect(self, expected: Sequence[Transaction]) -> Iterator[None]:
        """`with window.expect([...]):` checks the block's accesses when it ends."""
        self.transactions = []
        yield
        self.check_transactions(expected)

    def writes_to(self, offset: int) -> List[int]:
        """The values written to one register so far (the log is kept)."""
        return [t.value for t in self.transactions if isinstance(t, Write) and t.offset == offset]


class MMIO:
    """pynq.MMIO over the fake board's register windows."""

    def __init__(self, base_addr: int, length: int = 4, device: Any = None):
        if base_addr < 0 or length < 0:
            raise ValueError("Base address or length cannot be negative.")
        if device is None:
            raise RuntimeError("the fake MMIO needs device= (the FakeBoard); pynq would use "
                               "Device.active_device")
        self.device = device
        self.base_addr = base_addr
        self.length = length
        self._window = device.window_at(base_addr, length)
        self._start = base_addr - self._window.phys_addr

    def read(self, offset: int = 0, length: int = 4, word_order: str = "little") -> int:
        if length not in (1, 2, 4, 8):
            raise ValueError("MMIO currently only supports 1, 2, 4 and 8-byte reads.")
        if offset < 0:
            raise ValueError("Offset cannot be negative.")
        if length == 8 and word_order not in ("big", "little"):
            raise ValueError("MMIO only supports big and little endian.")
        if offset % WORD:
            raise MemoryError("Unaligned read: offset must be multiple of 4.")
        low = self._word(offset)
        if length == 8:
            high = self._word(offset + WORD)
            return (high << 32) + low if word_order == "little" else (low << 32) + high
        return low & ((1 << (8 * length)) - 1)

    def write(self, offset: int, data: Union[int, bytes]) -> None:
        if offset < 0:
            raise ValueError("Offset cannot be negative.")
        if offset % WORD:
            raise MemoryError("Unaligned write: offset must be multiple of 4.")
        if type(data) is int:
            self._store(offset, data & 0xFFFFFFFF)  # numpy 1.x on the board wraps negatives
        elif type(data) is bytes:
            if len(data) % WORD:
                raise MemoryError("Unaligned write: data length must be multiple of 4.")
            for i in range(0, len(data), WORD):
                self._store(offset + i, int.from_bytes(data[i:i + WORD], "little"))
        else:
            raise ValueError("Data type must be int or bytes.")

    def _word(self, offset: int) -> int:
        if offset + WORD > self.length:
            raise IndexError("MMIO read at 0x%x beyond its 0x%x bytes" % (offset, self.length))
        return self._window.bus_read(self._start + offset)

    def _store(self, offset: int, value: int) -> None:
        if offset + WORD > self.length:
            raise IndexError("MMIO write at 0x%x beyond its 0x%x bytes" % (offset, self.length))
        self._window.bus_write(self._start + offset, value)
