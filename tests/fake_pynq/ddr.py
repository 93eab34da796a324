"""One fake physical DDR space with a CMA allocator behind `pynq.allocate`, and PynqBuffer.

`FakeDDR(base, size)` stands for the board's contiguous memory (CMA) at physical addresses
`base .. base + size`. Devices (the fake DMA, the VDMA, an accelerator model) reach it by
physical address through `read(phys, nbytes)` / `write(phys, data)`; tests look without side
effects through `peek` / `poke`.

`allocate(shape, dtype="u4", cacheable=0)` follows pynq 3 on an embedded board (XRT BOs):
sizes are rounded up to pages, the physical address is aligned as Linux's contiguous
allocator aligns (the allocation's power-of-two size, at most 2^8 pages = 1 MiB, at least a
page), an exhausted CMA raises RuntimeError("BO allocation failed: ..."), and the buffer is a
`PynqBuffer` (an ndarray with `physical_address`, `device_address`, `virtual_address`, `bo`,
`device`, `flush()`, `invalidate()`, `freebuffer()`, a context manager that frees).

Caches are modelled: a non-cacheable buffer's array is the DDR itself; a cacheable one has
its own CPU-side copy, `flush()` writes its dirty bytes to DDR and `invalidate()` reloads it
from DDR, so a driver that forgets either sees the stale data a board would give it. Each
such mistake is also written to `hazards` (a device reading unflushed CPU data, a flush over
results the device wrote and the CPU never invalidated, a device touching memory no live
buffer holds, freed memory is poisoned with 0xDE); `check_no_hazards()` fails on any.
`memops` lists ("allocate" | "flush" | "invalidate" | "free", phys, nbytes) in order.
"""

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["CMA_MAX_ALIGN", "PAGE", "BufferObject", "DecodeError", "FakeDDR", "PynqBuffer"]

PAGE = 4096
CMA_MAX_ALIGN = PAGE << 8  # Linux CONFIG_CMA_ALIGNMENT's default order 8
POISON = 0xDE


class DecodeError(Exception):
    """A device addressed memory outside the fake DDR (on a board: Linux's own memory)."""


class BufferObject:
    """One contiguous allocation (pynq's `bo`); `cpu` is the cached copy of a cacheable one."""

    def __init__(self, phys: int, size: int, cacheable: bool):
        self.physical_address = phys
        self.size = size
        self.cacheable = cacheable
        self.freed = False
        self.cpu: Optional[np.ndarray] = np.zeros(size, np.uint8) if cacheable else None
        self._synced = self.cpu.copy() if cacheable else None  # the CPU copy when last in sync
        self._device_wrote = np.zeros(size, bool) if cacheable else None

    def dirty(self, start: int, stop: int) -> np.ndarray:
        """Bytes the CPU changed since the last flush/invalidate (offsets in the BO)."""
        return self.cpu[start:stop] != self._synced[start:stop]  # type: ignore[index]

    def __repr__(self) -> str:
        return "BO(0x%x, %d bytes%s)" % (self.physical_address, self.size,
                                         ", cacheable" if self.cacheable else "")


class PynqBuffer(np.ndarray):
    """pynq.buffer.PynqBuffer over the fake DDR. As in pynq 3 (XRT), `coherent` is False for
    every buffer, so `cacheable` reads True even for cacheable=0; `bo.cacheable` tells."""

    def __new__(cls, shape: Any, dtype: Any, buffer: Any = None, device: Any = None,
                device_address: int = 0, bo: Any = None) -> "PynqBuffer":
        self = super().__new__(cls, shape, dtype, buffer=buffer)
        self.device_address = device_address
        self.coherent = False
        self.bo = bo
        self.device = device
        self.offset = 0
        self.freed = False
        return self

    def __array_finalize__(self, obj: Any) -> None:
        if isinstance(obj, PynqBuffer) and getattr(obj, "coherent", None) is not None:
            offset = self.virtual_address - obj.virtual_address
            self.coherent = obj.coherent
            self.device_address = obj.device_address + offset
            self.offset = obj.offset + offset
            self.device = obj.device
            self.bo = obj.bo
        else:
            self.device_address = None
            self.coherent = None

    def __del__(self) -> None:
        try:
            self.freebuffer()
        except Exception:  # noqa: BLE001 (garbage collection must not raise)
            pass

    @property
    def device(self) -> Any:  # numpy 2's ndarray.device is read-only; pynq's boards run numpy 1
        return self.__dict__.get("_device")

    @device.setter
    def device(self, value: Any) -> None:
        self.__dict__["_device"] = value

    @property
    def physical_address(self) -> int:
        return self.device_address  # type: ignore[return-value]

    @property
    def virtual_address(self) -> int:
        return self.__array_interface__["data"][0]

    @property
    def cacheable(self) -> bool:
        return not self.coherent

    def freebuffer(self) -> None:
        """Free the memory now (views and other references become dangling, as on a board)."""
        if hasattr(self, "memory") and not self.freed:
            self.freed = True
            self.memory.free(self.bo)
            del self.bo

    def close(self) -> None:
        """Does nothing in pynq 3 but warn: buffers are freed by freebuffer() or a `with`."""
        warnings.warn(".close no longer functional - use scopes to manage buffers",
                      DeprecationWarning, stacklevel=2)

    def flush(self) -> None:
        if not self.coherent:
            self.device.flush(self.bo, self.offset, self.virtual_address, self.nbytes)

    def invalidate(self) -> None:
        if not self.coherent:
            self.device.invalidate(self.bo, self.offset, self.virtual_address, self.nbytes)

    def sync_to_device(self) -> None:
        self.flush()

    def sync_from_device(self) -> None:
        self.invalidate()

    def __enter__(self) -> "PynqBuffer":
        return self

    def __exit__(self, *exc: object) -> int:
        self.freebuffer()
        return 0


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def cma_alignment(size: int) -> int:
    """A page times the allocation's page count rounded up to a power of two, at most 1 MiB."""
    pages = max(1, size // PAGE)
    return min(PAGE << (pages - 1).bit_length(), CMA_MAX_ALIGN)


class FakeDDR:
    """`size` bytes of contiguous memory at physical `base`, with pynq's allocate on top."""

    def __init__(self, base: int = 0x1000_0000, size: int = 128 << 20, strict: bool = False,
                 ranged_sync: bool = False):
        if base % PAGE or size <= 0 or size % PAGE:
            raise ValueError("base and size must be positive multiples of %d" % PAGE)
        self.base = base
        self.size = size
        self.strict = strict
        # pynq 3 (pyxrt) syncs a whole buffer object whatever view is flushed; pynq 2.x's
        # xclSyncBO takes the view's offset and size: only those bytes (and a driver that flushes
        # too little shows it)
        self.ranged_sync = ranged_sync
        self._mem = np.zeros(size, np.uint8)
        self._free: List[Tuple[int, int]] = [(base, size)]  # (phys, length), sorted
        self.buffers: Dict[int, BufferObject] = {}
        self.memops: List[Tuple[str, int, int]] = []
        self.hazards: List[str] = []

    # --- the devices' side ---------------------------------------------------------------

    def read(self, phys: int, nbytes: int) -> bytes:
        """What a bus master (DMA, VDMA, accelerator) reads: DDR as it is, not the caches."""
        start = self._offset(phys, nbytes)
        for bo, lo, hi in self._overlapping(phys, nbytes):
            if bo.cacheable and bo.dirty(lo, hi).any():
                self.hazard("device read of 0x%x+%d saw stale memory: %d bytes of %r were "
                             "written by the CPU and not flushed" % (
                                 phys, nbytes, int(bo.dirty(lo, hi).sum()), bo))
        return self._mem[start:start + nbytes].tobytes()

    def write(self, phys: int, data: bytes) -> None:
        """What a bus master writes: DDR only; a cacheable buffer's CPU copy stays stale."""
        data = bytes(data)
        start = self._offset(phys, len(data))
        self._mem[start:start + len(data)] = np.frombuffer(data, np.uint8)
        for bo, lo, hi in self._overlapping(phys, len(data)):
            if bo.cacheable:
                bo._device_wrote[lo:hi] = True  # type: ignore[index]

    def peek(self, phys: int, nbytes: int) -> bytes:
        """DDR content for a test's eyes (no hazard checks)."""
        start = self._offset(phys, nbytes, check_live=False)
        return self._mem[start:start + nbytes].tobytes()

    def poke(self, phys: int, data: bytes) -> None:
        start = self._offset(phys, len(data), check_live=False)
        self._mem[start:start + len(data)] = np.frombuffer(bytes(data), np.uint8)

    def _offset(self, phys: int, nbytes: int, check_live: bool = True) -> int:
        if nbytes < 0 or phys < self.base or phys + nbytes > self.base + self.size:
            raise DecodeError("0x%x+%d is outside the DDR window 0x%x..0x%x" % (
                phys, nbytes, self.base, self.base + self.size))
        if check_live and nbytes:
            held = sum(hi - lo for _, lo, hi in self._overlapping(phys, nbytes))
            if held < nbytes:
                self.hazard("device access to 0x%x+%d: %d bytes of it are in no live buffer "
                             "(freed, or never allocated)" % (phys, nbytes, nbytes - held))
        return phys - self.base

    def _overlapping(self, phys: int, nbytes: int) -> List[Tuple[BufferObject, int, int]]:
        """(bo, start, stop) in BO offsets for every live buffer overlapping the range."""
        out = []
        for bo in self.buffers.values():
            lo = max(phys, bo.physical_address)
            hi = min(phys + nbytes, bo.physical_address + bo.size)
            if lo < hi:
                out.append((bo, lo - bo.physical_address, hi - bo.physical_address))
        return out

    def hazard(self, message: str) -> None:
        """Record a mistake a board would not report (or raise it when strict)."""
        if self.strict:
            raise AssertionError(message)
        self.hazards.append(message)

    # --- the allocator (pynq.allocate, the XRT device's flush/invalidate) ---------------

    def allocate(self, shape: Any, dtype: Any = "u4", cacheable: int = 0) -> PynqBuffer:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = max(PAGE, _round_up(nbytes, PAGE))
        phys = self._take(size, cma_alignment(size))
        if phys is None:
            raise RuntimeError("BO allocation failed: no %d contiguous bytes (CMA %d of %d bytes "
                               "free, largest block %d)" % (size, self.available, self.size,
                                                            self.largest_free))
        bo = BufferObject(phys, size, bool(cacheable))
        start = phys - self.base
        self._mem[start:start + size] = 0
        self.buffers[phys] = bo
        self.memops.append(("allocate", phys, size))
        backing = bo.cpu if bo.cacheable else self._mem[start:start + size]
        buf = PynqBuffer(shape, dtype, buffer=backing[:nbytes] if nbytes else backing[:0],
                         device=self, device_address=phys, bo=bo)
        buf.memory = self
        return buf

    def _synced_range(self, bo: BufferObject, offset: int, length: int) -> Tuple[int, int]:
        """The BO bytes a sync of the view (offset, length) covers: all of them (pynq 3) or the
        view's, widened to whole 32-byte cache lines (pynq 2.x)."""
        if not self.ranged_sync:
            return 0, bo.size
        return offset // 32 * 32, min(bo.size, -(-(offset + length) // 32) * 32)

    def flush(self, bo: BufferObject, offset: int, vaddr: int, length: int) -> None:
        """XRT syncs the whole BO to the device, whatever part of it the buffer was (pynq 3;
        with `ranged_sync`, the view's bytes: pynq 2.x)."""
        self._live(bo, "flush()")
        lo, hi = self._synced_range(bo, offset, length)
        self.memops.append(("flush", bo.physical_address + lo, hi - lo))
        if not bo.cacheable:
            return
        dirty = bo.dirty(lo, hi)
        lost = dirty & bo._device_wrote[lo:hi]  # type: ignore[index]
        if lost.any():
            self.hazard("flush() of %r wrote %d CPU bytes over data the device had written "
                         "there (invalidate() first)" % (bo, int(lost.sum())))
        start = bo.physical_address - self.base + lo
        self._mem[start:start + hi - lo][dirty] = bo.cpu[lo:hi][dirty]  # type: ignore[index]
        bo._synced[lo:hi] = bo.cpu[lo:hi]  # type: ignore[index]

    def invalidate(self, bo: BufferObject, offset: int, vaddr: int, length: int) -> None:
        self._live(bo, "invalidate()")
        lo, hi = self._synced_range(bo, offset, length)
        self.memops.append(("invalidate", bo.physical_address + lo, hi - lo))
        if not bo.cacheable:
            return
        start = bo.physical_address - self.base + lo
        bo.cpu[lo:hi] = self._mem[start:start + hi - lo]  # type: ignore[index]
        bo._synced[lo:hi] = bo.cpu[lo:hi]  # type: ignore[index]
        bo._device_wrote[lo:hi] = False  # type: ignore[index]

    def free(self, bo: BufferObject) -> None:
        self._live(bo, "freebuffer()")
        bo.freed = True
        del self.buffers[bo.physical_address]
        self.memops.append(("free", bo.physical_address, bo.size))
        start = bo.physical_address - self.base
        self._mem[start:start + bo.size] = POISON
        self._give_back(bo.physical_address, bo.size)

    def _live(self, bo: BufferObject, what: str) -> None:
        if bo.freed or self.buffers.get(bo.physical_address) is not bo:
            raise RuntimeError("%s of %r, which was already freed" % (what, bo))

    def _take(self, size: int, align: int) -> Optional[int]:
        for i, (start, length) in enumerate(self._free):
            phys = _round_up(start, align)
            if phys + size <= start + length:
                rest = [(start, phys - start), (phys + size, start + length - phys - size)]
                self._free[i:i + 1] = [(s, n) for s, n in rest if n]
                return phys
        return None

    def _give_back(self, phys: int, size: int) -> None:
        blocks = sorted(self._free + [(phys, size)])
        merged: List[Tuple[int, int]] = []
        for start, length in blocks:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self._free = merged

    # --- what a test asks ------------------------------------------------------------------

    @property
    def used(self) -> int:
        return sum(bo.size for bo in self.buffers.values())

    @property
    def available(self) -> int:
        return self.size - self.used

    @property
    def largest_free(self) -> int:
        return max((n for _, n in self._free), default=0)

    def check_memops(self, expected: Sequence[Tuple[str, int, int]]) -> None:
        """Assert the memory operations since the last check were exactly `expected`."""
        actual, self.memops = self.memops, []
        if actual != list(expected):
            raise AssertionError("memory operations differ\n  actual:   %s\n  expected: %s"
                                 % (actual, list(expected)))

    def check_no_hazards(self) -> None:
        hazards, self.hazards = self.hazards, []
        if hazards:
            raise AssertionError("coherence/lifetime hazards:\n  " + "\n  ".join(hazards))
