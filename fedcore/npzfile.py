"""Reading `.npz` archives that may be damaged or hostile, within a memory bound.

``np.load(path, allow_pickle=False)`` refuses pickles, but a 1 MB archive can still
declare a 100 GB array (the zip stores sizes, deflate expands), random bytes give a
misleading "pickled data" message, and an object array another. `load_npz` checks
the zip's declared sizes and every member's .npy header (dtype, shape, element
count) against its limits before it reads a byte of array data.

    arrays = load_npz("train.npz", {"x": ("u1", "f4"), "y": ("i8", "i4", "u1")},
                      max_bytes=256 << 20, what="--data")
"""

import ast
import zipfile
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["load_npz"]

_MAX_HEADER = 4096  # a real .npy header is under 200 bytes


def load_npz(path: str, expected: Mapping[str, Sequence[str]], max_bytes: int,
             what: str = "", optional: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """The arrays named in `expected` (name -> accepted dtype codes such as "f4",
    "u1"; any byte order), refusing with ConfigError anything else: not a zip,
    missing or extra members, object or unexpected dtypes, arrays whose declared
    sizes add up to more than `max_bytes`. `optional` names may be absent."""
    label = f"{what} {path}" if what else path
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ConfigError(f"{label}: not an .npz archive (a zip of .npy files): {error}") from None
    with archive:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        others = sorted(info.filename for info in archive.infolist() if not info.filename.endswith(".npy"))
        unknown = sorted(set(members) - set(expected)) + others
        missing = sorted(set(expected) - set(members) - set(optional))
        if unknown or missing:
            raise ConfigError(f"{label}: needs arrays {sorted(expected)}; missing {missing}, unexpected {unknown}")
        declared = sum(info.file_size for info in members.values())
        if declared > max_bytes:
            raise ConfigError(f"{label}: its arrays declare {declared:,} bytes, at most {max_bytes:,} are read")
        return {name: _read_member(archive, info, expected[name], label) for name, info in members.items()}


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dtypes: Sequence[str],
                 label: str) -> np.ndarray:
    name = info.filename[:-4]
    try:
        with archive.open(info) as stream:
            header = _header(stream.read(min(info.file_size, _MAX_HEADER)), f"{label}: {name}")
        dtype, shape = header
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if dtype.str[1:] not in dtypes:
            raise ConfigError(f"{label}: {name} is {dtype.str[1:]}, expected one of {list(dtypes)}")
        if count * dtype.itemsize > info.file_size:
            raise ConfigError(f"{label}: {name} declares {shape} {dtype}, more than the member holds")
        with archive.open(info) as stream:
            array = np.lib.format.read_array(stream, allow_pickle=False)
    except ConfigError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise ConfigError(f"{label}: {name} is damaged: {error}") from None
    if array.shape != tuple(shape) or array.dtype != dtype:
        raise ConfigError(f"{label}: {name} does not match its header")
    return array


def _header(head: bytes, label: str):
    """(dtype, shape) from the start of a .npy member, parsed without eval of code."""
    if head[:6] != b"\x93NUMPY" or len(head) < 10:
        raise ConfigError(f"{label}: not a .npy array")
    major = head[6]
    if major == 1:
        size, start = int.from_bytes(head[8:10], "little"), 10
    elif major in (2, 3):
        size, start = int.from_bytes(head[8:12], "little"), 12
    else:
        raise ConfigError(f"{label}: .npy format version {major} is not supported")
    if start + size > len(head):
        raise ConfigError(f"{label}: .npy header of {size} bytes is too long or truncated")
    try:
        meta = ast.literal_eval(head[start:start + size].decode("latin1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        raise ConfigError(f"{label}: unreadable .npy header ({type(error).__name__})") from None
    if not isinstance(meta, dict) or set(meta) != {"descr", "fortran_order", "shape"}:
        raise ConfigError(f"{label}: .npy header must hold descr, fortran_order and shape")
    shape, descr = meta["shape"], meta["descr"]
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape):
        raise ConfigError(f"{label}: .npy shape {shape!r} is not a tuple of sizes")
    if not isinstance(descr, str) or meta["fortran_order"] not in (False, True):
        raise ConfigError(f"{label}: .npy dtype {descr!r} is not a plain numeric type (object arrays are refused)")
    dtype = _plain_dtype(descr)
    if dtype is None:
        raise ConfigError(f"{label}: .npy dtype {descr!r} is not a plain numeric type (object arrays are refused)")
    return dtype, shape


def _plain_dtype(descr: str) -> Optional[np.dtype]:
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        return None
    return dtype if dtype.kind in "biuf" and not dtype.hasobject else None
