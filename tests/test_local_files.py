"""Files a program reads at start-up (run files, local data archives) are untrusted:
each damage gives one clear line and exit status 2, never a traceback or a huge
allocation."""

import io
import json
import zipfile

import numpy as np
import pytest

from device.fl.cli import main as device_fl
from fedcore.errors import ConfigError
from fedcore.experiment import build_numpy_model, load_run_config
from fedcore.npzfile import load_npz


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_npz_reads_only_what_it_was_asked_for(tmp_path):
    good = write(tmp_path / "good.npz", npz_bytes(x=np.zeros((2, 3), np.uint8), y=np.array([0, 1])))
    arrays = load_npz(good, {"x": ("u1",), "y": ("i8",)}, 1 << 20)
    assert arrays["x"].shape == (2, 3) and arrays["y"].tolist() == [0, 1]
    for data, message in [
        (b"random bytes, not a zip", "not an .npz archive"),
        (npz_bytes(x=np.array([object()]), y=np.array([0])), "object arrays are refused"),
        (npz_bytes(x=np.zeros(3, np.complex64), y=np.array([0])), "not a plain numeric type|expected one of"),
        (npz_bytes(x=np.zeros(3, np.float32), y=np.array([0])), "x is f4, expected one of \\['u1'\\]"),
        (npz_bytes(x=np.zeros(3, np.uint8)), "missing \\['y'\\]"),
        (npz_bytes(x=np.zeros(3, np.uint8), y=np.array([0]), z=np.array([1])), "unexpected \\['z'\\]"),
        (npz_bytes(x=np.zeros(1 << 21, np.uint8), y=np.array([0])), "declare 2,097,[0-9]+ bytes, at most"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_npz(write(tmp_path / "bad.npz", data), {"x": ("u1",), "y": ("i8",)}, 1 << 20)


def test_a_lying_npy_header_is_refused_before_allocating(tmp_path):
    """A small member whose header declares 10^12 elements (the demonstrator's shots.npy attack)."""
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += b" " * (118 - len(header)) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", member)
    with pytest.raises(ConfigError, match="declares \\(1000000, 1000000\\) float32, more than the member holds"):
        load_npz(write(tmp_path / "lie.npz", buffer.getvalue()), {"x": ("f4",)}, 1 << 30)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00\x01binary", "not UTF-8 text"),
    (b"[" * 100_000, "invalid"),
    (b"name = 'x'\n" + b"#" * (1 << 20), "larger than 1048576 bytes"),
])
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_damaged_run_files_give_one_clear_error(tmp_path, content, message, suffix):
    with pytest.raises(ConfigError, match=message):
        load_run_config(write(tmp_path / f"run{suffix}", content))


def test_a_model_too_large_for_the_board_is_refused_before_allocating():
    run = load_run_config({"model": {"name": "mlp", "hidden": [100_000_000]}})
    with pytest.raises(ConfigError, match="parameters .* at most 16,777,216"):
        build_numpy_model(run.model, 784, 10, 0)


def device_args(tmp_path, data_dir):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"name": "t", "model": {"name": "mlp", "hidden": [8]}}))
    return ["--broker", "mqtt://127.0.0.1:9", "--config", str(config), "--client-id", "client-000",
            "--data", str(data_dir), "--timeout", "1"]


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((5, 10), np.uint8), "y": np.zeros(5, np.int64)}, "the data has \\(10,\\) features a sample, "
                                                                       "the run's mlp takes 784"),
    ({"x": np.zeros((5, 784), np.uint8), "y": np.full(5, 12)}, "labels must lie in \\[0, 10\\), got 12..12"),
    ({"x": np.array([object()] * 5), "y": np.zeros(5, np.int64)}, "object arrays are refused"),
])
def test_a_device_whose_data_does_not_fit_fails_at_start(tmp_path, capsys, arrays, message):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.npz").write_bytes(npz_bytes(**arrays))
    assert device_fl(device_args(tmp_path, folder)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err
