"""IDX reading: round trips, every malformed file rejected, helpful missing-file errors."""

import gzip
import struct

import numpy as np
import pytest

from fedcore.datasets import load_fashion_mnist, load_mnist_like, read_idx
from fedcore.errors import ConfigError, MessageError

_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def _idx_bytes(array: np.ndarray, big_endian_dtype=None) -> bytes:
    """Encode an array as IDX: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    dtype = np.dtype(big_endian_dtype or array.dtype)
    header = bytes([0, 0, _CODES[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _write(path, data: bytes, compress: bool = False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_uint8_images_round_trip(tmp_path, compress):
    # Prepare
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    name = "x-idx3-ubyte" + (".gz" if compress else "")
    path = _write(tmp_path / name, _idx_bytes(images), compress)

    # Execute
    result = read_idx(str(path))

    # Assert
    assert result.dtype == np.uint8 and result.shape == (2, 3, 4)
    np.testing.assert_array_equal(result, images)
    result[0, 0, 0] = 7  # callers may modify what they get


@pytest.mark.parametrize("dtype", [np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_multi_byte_types_are_big_endian_and_returned_native(tmp_path, dtype):
    values = np.array([[-3, 2], [1, 100]]).astype(np.dtype(dtype).newbyteorder("="))
    path = _write(tmp_path / "v.idx", _idx_bytes(values, dtype))
    result = read_idx(path)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, values)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    path = _write(tmp_path / "labels-no-suffix", _idx_bytes(labels), compress=True)
    np.testing.assert_array_equal(read_idx(path), labels)


def _valid() -> bytes:
    return _idx_bytes(np.zeros((4, 5), dtype=np.uint8))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "data, message",
    [
        (_valid()[:-1], "holds only 19"),
        (_valid()[:6], "truncated IDX header"),
        (_valid()[:2], "truncated IDX header"),
        (_valid() + b"\x00", "trailing bytes"),
        (b"\x01\x00" + _valid()[2:], "not an IDX file"),
        (_valid()[:2] + b"\x07" + _valid()[3:], "unknown IDX type code 0x07"),
        (bytes([0, 0, 8, 0]), "0 dimensions"),
        # Declares 2**32-1 x 2**32-1 bytes; must fail fast without allocating them.
        (
            bytes([0, 0, 8, 2]) + struct.pack(">II", 2**32 - 1, 2**32 - 1) + b"\x00" * 20,
            "holds only 20",
        ),
    ],
)
def test_malformed_files_raise_message_error_naming_file(tmp_path, data, message, compress):
    path = _write(tmp_path / "bad.idx", data, compress)
    with pytest.raises(MessageError, match=message) as info:
        read_idx(str(path))
    assert str(path) in str(info.value)


def test_corrupt_gzip_raises_message_error(tmp_path):
    good = gzip.compress(_valid())
    path = _write(tmp_path / "cut.gz", good[: len(good) // 2])
    with pytest.raises(MessageError, match="cut.gz"):
        read_idx(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nothing.idx")


def _write_split(root, prefix: str, count: int, compress: bool = True, size=(28, 28)):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(count,) + size, dtype=np.uint8)
    labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write(root / f"{prefix}-images-idx3-ubyte{suffix}", _idx_bytes(images), compress)
    _write(root / f"{prefix}-labels-idx1-ubyte{suffix}", _idx_bytes(labels), compress)
    return images, labels


def test_load_fashion_mnist_reads_both_splits(tmp_path):
    # Prepare: gzipped train split, plain test split, as either may be found.
    train = _write_split(tmp_path, "train", 6)
    test = _write_split(tmp_path, "t10k", 3, compress=False)

    # Execute
    train_images, train_labels = load_fashion_mnist(tmp_path, "train")
    test_images, test_labels = load_fashion_mnist(str(tmp_path), split="test")

    # Assert
    np.testing.assert_array_equal(train_images, train[0])
    np.testing.assert_array_equal(train_labels, train[1])
    np.testing.assert_array_equal(test_images, test[0])
    np.testing.assert_array_equal(test_labels, test[1])
    assert train_images.dtype == np.uint8 and train_labels.dtype == np.uint8


def test_load_mnist_like_accepts_other_image_sizes(tmp_path):
    images, _ = _write_split(tmp_path, "train", 2, size=(8, 8))
    result, _ = load_mnist_like(tmp_path, "train")
    np.testing.assert_array_equal(result, images)
    with pytest.raises(MessageError, match="28x28"):
        load_fashion_mnist(tmp_path, "train")


def test_image_and_label_counts_must_agree(tmp_path):
    _write_split(tmp_path, "train", 4)
    labels = np.zeros(3, dtype=np.uint8)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", _idx_bytes(labels), compress=True)
    with pytest.raises(MessageError, match="4 images .* but 3 labels"):
        load_mnist_like(tmp_path, "train")


def test_labels_file_must_be_one_dimensional_uint8(tmp_path):
    _write_split(tmp_path, "train", 4)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", _idx_bytes(np.zeros((4, 1), np.uint8)), True)
    with pytest.raises(MessageError, match="expected uint8 labels"):
        load_mnist_like(tmp_path, "train")


def test_missing_fashion_mnist_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(tmp_path / "empty", "test")
    text = str(info.value)
    assert str(tmp_path / "empty" / "t10k-images-idx3-ubyte.gz") in text
    assert "apt-get install dataset-fashion-mnist" in text
    assert "fashion-mnist" in text.lower()


def test_unknown_split_raises(tmp_path):
    with pytest.raises(ConfigError, match="'validation'"):
        load_mnist_like(tmp_path, "validation")
