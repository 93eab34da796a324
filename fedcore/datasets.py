"""Read MNIST-style IDX files with numpy alone, as the board has no torchvision.

The reader trusts nothing in the header: it checks the magic, the type code
and that the data is exactly as long as the header declares, and it reads in
bounded chunks so that a corrupt header cannot make it allocate more memory
than the file really holds.
"""

import gzip
import os
import struct
import zlib
from typing import Any, BinaryIO, Dict, Optional, Tuple, Union

import numpy as np

from .errors import ConfigError, MessageError

__all__ = [
    "FASHION_MNIST_DIR",
    "IDX_DTYPES",
    "read_idx",
    "load_mnist_like",
    "load_fashion_mnist",
]

# Where Debian's dataset-fashion-mnist package installs the four files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# IDX type codes; multi-byte values are big-endian in the file.
IDX_DTYPES: Dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # 1 MiB: small next to the board's 512 MiB of RAM
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}

PathLike = Union[str, os.PathLike]


def _read_up_to(stream: BinaryIO, limit: int) -> bytearray:
    """Read at most ``limit`` bytes in chunks; stops early at end of file.

    A single ``read(limit)`` would preallocate ``limit`` bytes even when the
    file is much shorter, so a lying header could exhaust memory. A growing
    bytearray also lets numpy wrap the result without another copy.
    """
    data = bytearray()
    while len(data) < limit:
        chunk = stream.read(min(limit - len(data), _CHUNK))
        if not chunk:
            break
        data += chunk
    return data


def _parse_header(stream: BinaryIO, path: str) -> Tuple[np.dtype, Tuple[int, ...]]:
    """Read the magic and dimensions; return the element dtype and the shape."""
    magic = _read_up_to(stream, 4)
    if len(magic) < 4:
        raise MessageError(f"{path}: truncated IDX header ({len(magic)} of 4 magic bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise MessageError(
            f"{path}: not an IDX file (magic starts with {magic[:2].hex()}, expected 0000)"
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise MessageError(f"{path}: unknown IDX type code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise MessageError(f"{path}: IDX header declares 0 dimensions")
    raw_dims = _read_up_to(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise MessageError(
            f"{path}: truncated IDX header: {ndim} dimensions need {4 * ndim} bytes, "
            f"found {len(raw_dims)}"
        )
    return IDX_DTYPES[code], struct.unpack(f">{ndim}I", raw_dims)


def _read_payload(
    stream: BinaryIO, path: str, dtype: np.dtype, shape: Tuple[int, ...]
) -> bytearray:
    """Read exactly the declared data, rejecting short files and trailing bytes."""
    count = 1
    for size in shape:
        count *= size  # Python ints: a huge header cannot overflow
    expected = count * dtype.itemsize
    payload = _read_up_to(stream, expected)
    if len(payload) < expected:
        raise MessageError(
            f"{path}: header declares shape {shape} ({expected} data bytes) "
            f"but the file holds only {len(payload)}"
        )
    if stream.read(1):
        raise MessageError(
            f"{path}: trailing bytes after the {expected} data bytes of shape {shape}"
        )
    return payload


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as probe:
        return probe.read(2) == _GZIP_MAGIC


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a native-endian array.

    Raises FileNotFoundError if the file is missing and MessageError naming
    the file for any malformed content.
    """
    name = os.fspath(path)
    opener: Any = gzip.open if _is_gzip(name) else open
    try:
        with opener(name, "rb") as stream:
            dtype, shape = _parse_header(stream, name)
            payload = _read_payload(stream, name, dtype, shape)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise MessageError(f"{name}: corrupt gzip stream ({exc})") from exc
    # A bytearray buffer gives a writable array; bytes are copied only to swap order.
    data = np.frombuffer(payload, dtype=dtype).reshape(shape)
    if data.dtype.isnative:
        return data
    return data.astype(dtype.newbyteorder("="))


def _find_file(root: str, name: str, how_to_get: str) -> str:
    """Return the gzipped or plain file ``name`` in ``root``, or explain how to get it."""
    candidates = [os.path.join(root, name + ".gz"), os.path.join(root, name)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"{name} not found: looked for {' and '.join(candidates)}. {how_to_get}"
    )


def _load_split(root: str, split: str, how_to_get: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read and cross-check the images and labels of one split."""
    if split not in _SPLIT_PREFIX:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _SPLIT_PREFIX[split]
    images_path = _find_file(root, f"{prefix}-images-idx3-ubyte", how_to_get)
    labels_path = _find_file(root, f"{prefix}-labels-idx1-ubyte", how_to_get)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise MessageError(
            f"{images_path}: expected uint8 images of shape (N, H, W), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise MessageError(
            f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise MessageError(
            f"{root}: {len(images)} images in {os.path.basename(images_path)} "
            f"but {len(labels)} labels in {os.path.basename(labels_path)}"
        )
    return images, labels


def load_mnist_like(root: PathLike, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """Load an MNIST-format split from ``root``: uint8 images (N, H, W), uint8 labels (N,).

    Expects ``train-*`` or ``t10k-*`` files named as in the MNIST
    distribution, each either gzipped (``.gz``) or plain.
    """
    folder = os.fspath(root)
    how_to_get = f"Put the MNIST-format files ({split} split) into {folder}."
    return _load_split(folder, split, how_to_get)


def load_fashion_mnist(
    root: Optional[PathLike] = None, split: str = "train"
) -> Tuple[np.ndarray, np.ndarray]:
    """Load Fashion-MNIST: uint8 images (N, 28, 28) and uint8 labels (N,).

    ``root`` defaults to where ``apt-get install dataset-fashion-mnist`` puts it.
    """
    folder = FASHION_MNIST_DIR if root is None else os.fspath(root)
    how_to_get = (
        "Install it with `apt-get install dataset-fashion-mnist` (files go to "
        f"{FASHION_MNIST_DIR}), or download the four *-ubyte.gz files from the "
        f"official Fashion-MNIST location ({_FASHION_MNIST_URL}) into {folder}."
    )
    images, labels = _load_split(folder, split, how_to_get)
    if images.shape[1:] != (28, 28):
        raise MessageError(f"{folder}: Fashion-MNIST images must be 28x28, got {images.shape[1:]}")
    return images, labels
