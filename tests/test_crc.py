"""fedcore.crc: the wire format's CRC-32 is zlib's, whichever library computes it."""

import ctypes
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcore import crc


@pytest.fixture
def fresh_lookup(monkeypatch):
    """The library looked for again at the next checksum, as in a new process."""
    monkeypatch.setattr(crc, "_libdeflate_crc32", crc._UNSET)


@given(size=st.sampled_from([0, 1, 4095, 4096, 4097, 70001]), value=st.integers(0, 2**32 - 1), seed=st.integers(0, 9))
def test_every_buffer_kind_gives_zlibs_checksum(size, value, seed):
    data = np.random.default_rng(seed).integers(0, 256, size + 3, dtype=np.uint8).tobytes()
    expected = zlib.crc32(data[3:], value)
    for buffer in (data[3:], bytearray(data[3:]), memoryview(data)[3:], np.frombuffer(data, np.uint8)[3:].data,
                   np.frombuffer(data[3:3 + size // 4 * 4], np.float32).data):
        assert crc.crc32(buffer, value) == zlib.crc32(buffer, value)
    assert crc.crc32(data[3:], value) == expected
    for buffer in (data, bytearray(data), memoryview(data)):  # a prefix, of bytes or not
        assert crc.crc32(buffer, value, size) == zlib.crc32(data[:size], value)


def test_a_prefix_longer_than_the_buffer_is_refused():
    for buffer in (bytes(5000), bytearray(5000), memoryview(bytes(5000))):
        with pytest.raises(ValueError, match="5001 bytes of a 5000-byte buffer"):
            crc.crc32(buffer, 0, 5001)


def test_libdeflate_is_used_where_the_system_has_it(fresh_lookup):
    try:
        ctypes.CDLL("libdeflate.so.0")
    except OSError:
        pytest.skip("libdeflate is not installed (apt-get install libdeflate0; `make test` does as root)")
    data = bytes(range(256)) * 100
    assert crc.crc32(data, 5) == zlib.crc32(data, 5)
    assert crc._libdeflate_crc32 is not None


def test_without_libdeflate_zlib_computes_it(fresh_lookup, monkeypatch):
    monkeypatch.setattr(crc, "_LIBRARIES", ("libnothing-here.so.0",))
    data = bytes(range(256)) * 100
    assert crc.crc32(data) == zlib.crc32(data)
    assert crc._libdeflate_crc32 is None


def test_a_library_that_disagrees_with_zlib_is_not_used(fresh_lookup, monkeypatch):
    class Wrong:
        @staticmethod
        def libdeflate_crc32(value, data, size):
            return 0

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Wrong())
    data = bytes(range(256)) * 100
    assert crc.crc32(data) == zlib.crc32(data) != 0
    assert crc._libdeflate_crc32 is None
