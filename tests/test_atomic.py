"""fedcore.atomic, the one whole-file writer: the old or the new file, never a part; file and
folder fsync'd; nothing left behind on an error; used by checkpoints, cards and memories."""

import hashlib
import os
import stat

import numpy as np
import pytest

import fedcore.atomic
from fedcore.atomic import atomic_open, atomic_write


@pytest.fixture
def fsyncs(monkeypatch):
    """What os.fsync was called on ("file" or "dir"); the real fsync still runs."""
    seen = []
    real = os.fsync

    def spy(descriptor):
        seen.append("dir" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file")
        real(descriptor)

    monkeypatch.setattr(fedcore.atomic.os, "fsync", spy)
    return seen


def test_replaces_whole_files_and_syncs_file_then_folder(tmp_path, fsyncs):
    path = tmp_path / "checkpoint.fedc"
    atomic_write(path, b"one")
    atomic_write(str(path), "twö")  # str is written as UTF-8
    assert path.read_bytes() == "twö".encode()
    assert os.listdir(tmp_path) == ["checkpoint.fedc"]  # no temporary file left
    assert fsyncs == ["file", "dir", "file", "dir"]


def test_an_error_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "memory.npz"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError, match="camera unplugged"):
        with atomic_open(path) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("camera unplugged")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["memory.npz"]


def test_text_mode_permissions_and_bad_modes(tmp_path):
    path = tmp_path / "dse.csv"
    with atomic_open(path, "w", newline="") as handle:
        handle.write("a,b\r\n")
    assert path.read_bytes() == b"a,b\r\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask  # like open(), not mkstemp's 0600
    with pytest.raises(ValueError, match="mode 'wb' or 'w', not 'a'"):
        with atomic_open(path, "a"):
            pass


def test_the_few_shot_memory_is_written_atomically(tmp_path, fsyncs):
    from device.memory import FewShotMemory

    memory = FewShotMemory(3, 2)
    memory.register(1, np.ones((2, 3), np.float32))
    memory.save(tmp_path / "memory.npz")
    assert fsyncs == ["file", "dir"] and os.listdir(tmp_path) == ["memory.npz"]
    assert FewShotMemory.load(tmp_path / "memory.npz").shot_counts() == [0, 2]


def test_a_model_card_is_written_atomically(tmp_path, fsyncs):
    pytest.importorskip("onnx")
    from device.model_card import write_card
    from tests.fake_pynq.assets import make_card, make_tiny_model

    model = make_tiny_model(tmp_path)
    assert write_card(make_card(model), tmp_path / "tiny.json").feature_dim == 8
    assert fsyncs == ["file", "dir"] and sorted(os.listdir(tmp_path)) == ["tiny.json", "tiny.onnx"]


def test_a_corrupt_download_leaves_no_file(tmp_path):
    pytest.importorskip("torch")  # training/ is a workstation package
    from training.datasets import Dataset, _download

    source = tmp_path / "archive.bin"
    source.write_bytes(b"official bytes")
    good = hashlib.md5(b"official bytes").hexdigest()
    spec = Dataset("toy", 2, (0.0,), (1.0,), {"archive.bin": (source.as_uri(), good)})
    folder = _download(spec, str(tmp_path / "cache"))
    assert open(os.path.join(folder, "archive.bin"), "rb").read() == b"official bytes"
    spec.urls["other.bin"] = (source.as_uri(), "0" * 32)
    with pytest.raises(RuntimeError, match="MD5 .* differs from the official 0{32}; download discarded"):
        _download(spec, str(tmp_path / "cache"))
    assert sorted(os.listdir(folder)) == ["archive.bin"]
