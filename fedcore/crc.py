"""CRC-32 of the wire format (zlib's and gzip's polynomial): zlib's, or libdeflate's where the
system has it (Debian's libdeflate0, loaded with ctypes at first use, never required). The same
checksum, four to five times faster on large buffers (103 KB: 18 -> 4 us on this project's x86
machines); checked against zlib's on a probe before it is used."""

import ctypes
import zlib
from typing import Any, Callable, Optional, Union

import numpy as np

__all__ = ["crc32", "implementation"]

Buffer = Union[bytes, bytearray, memoryview]
_LIBRARIES = ("libdeflate.so.0", "libdeflate.0.dylib")
_LARGE = 4096  # bytes: below this, a ctypes call costs more than zlib's whole checksum
_UNSET: Any = object()
_libdeflate_crc32: Any = _UNSET  # the C function, None without one, _UNSET before the first look


def crc32(data: Buffer, value: int = 0, size: Optional[int] = None) -> int:
    """zlib.crc32 of `data` (of its first `size` bytes when given) continuing `value`, whichever
    library computes it. Bytes reach libdeflate as they are; another buffer by its address, with
    no copy (ctypes for a writable one, numpy's for a read-only one: a few us more)."""
    view = None if type(data) is bytes else memoryview(data).cast("B")  # any format, contiguous as zlib wants
    total = len(data) if view is None else view.nbytes
    if size is None:
        size = total
    elif not 0 <= size <= total:
        raise ValueError("a checksum of %d bytes of a %d-byte buffer" % (size, total))
    function = _function() if size >= _LARGE else None
    if function is None:
        whole = data if view is None else view
        return zlib.crc32(whole if size == total else memoryview(whole)[:size], value)
    if view is None:
        return function(value, data, size)
    if not view.readonly:
        return function(value, (ctypes.c_char * size).from_buffer(view), size)
    array = np.frombuffer(view, dtype=np.uint8, count=size)
    return function(value, array.ctypes.data, size)


def _function() -> Optional[Callable[..., int]]:
    return _libdeflate() if _libdeflate_crc32 is _UNSET else _libdeflate_crc32


def implementation() -> str:
    """Which library computes large checksums here: "libdeflate" or "zlib"."""
    return "zlib" if _function() is None else "libdeflate"


def _libdeflate() -> Optional[Callable[..., int]]:
    """libdeflate_crc32 when a libdeflate loads and agrees with zlib, else None (looked for once)."""
    global _libdeflate_crc32
    _libdeflate_crc32 = None
    probe = bytes(range(256)) * 32
    for name in _LIBRARIES:
        try:
            function = ctypes.CDLL(name).libdeflate_crc32
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_uint32
        function.argtypes = (ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t)
        if function(0x1234ABCD, probe, len(probe)) == zlib.crc32(probe, 0x1234ABCD):
            _libdeflate_crc32 = function
            break
    return _libdeflate_crc32
