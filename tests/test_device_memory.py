"""Few-shot memory: NCM on centred, normalised features; save/load; malformed files."""

import json
import zipfile

import numpy as np
import pytest

from device.errors import MemoryFileError
from device.memory import FewShotMemory


def _memory(**options):
    memory = FewShotMemory(3, num_classes=4, temperature=0.5, **options)
    memory.set_base_mean([1.0, 0.0, 0.0])
    memory.register(0, np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))   # -> [1,0,0], [0,1,0]
    memory.register(2, np.array([[1.0, 0.0, 3.0]]))                    # -> [0,0,1]
    return memory


def test_ncm_distances_and_softmax_by_hand():
    memory = _memory()
    prediction = memory.predict(np.array([1.0, 0.0, 5.0]), smooth=False)  # -> [0, 0, 1]

    centroid0 = np.array([0.5, 0.5, 0.0])  # mean of the shots, not re-normalised
    d0, d2 = np.linalg.norm(centroid0 - [0, 0, 1]), 0.0
    p = np.exp(-np.array([d0, d2]) / 0.5)
    p /= p.sum()
    assert prediction.index == 2
    np.testing.assert_allclose(prediction.probabilities, [p[0], 0.0, p[1], 0.0], rtol=1e-5)
    np.testing.assert_allclose(prediction.distances[[0, 2]], [d0, d2], atol=1e-6)
    assert np.isinf(prediction.distances[[1, 3]]).all()  # slots with no shot never win


def test_smoothing_is_a_moving_average_over_frames():
    memory = _memory(smoothing=0.75)
    first = memory.predict(np.array([3.0, 0.0, 0.0])).probabilities
    raw = memory.predict(np.array([1.0, 0.0, 5.0]), smooth=False).probabilities
    second = memory.predict(np.array([1.0, 0.0, 5.0])).probabilities
    np.testing.assert_allclose(second, 0.75 * first + 0.25 * raw, rtol=1e-6)
    memory.reset_smoothing()
    np.testing.assert_allclose(memory.predict(np.array([1.0, 0.0, 5.0])).probabilities, raw)


def test_knn_votes_among_the_nearest_shots():
    memory = _memory(classifier="knn", k=3)
    prediction = memory.predict(np.array([1.0, 2.0, 0.1]), smooth=False)  # near [0,1,0]
    assert prediction.index == 0
    np.testing.assert_allclose(prediction.probabilities, [2 / 3, 0, 1 / 3, 0], rtol=1e-6)
    f = np.array([0.0, 2.0, 0.1]) / np.linalg.norm([0.0, 2.0, 0.1])
    nearest = [np.linalg.norm(f - [0, 1, 0]), np.linalg.norm(f - [0, 0, 1])]  # a class's nearest shot
    np.testing.assert_allclose(prediction.distances[[0, 2]], nearest, atol=1e-6)
    assert np.isinf(prediction.distances[[1, 3]]).all()


def test_a_tie_in_smoothed_probabilities_goes_to_the_current_frame():
    memory = _memory(classifier="knn", k=1, smoothing=0.5)
    assert memory.predict(np.array([3.0, 0.0, 0.0])).index == 0   # nearest shot: slot 0
    tied = memory.predict(np.array([1.0, 0.0, 5.0]))              # nearest shot: slot 2
    np.testing.assert_allclose(tied.probabilities, [0.5, 0, 0.5, 0])
    assert tied.index == 2


def test_base_mean_from_background_frames():
    memory = FewShotMemory(2, 2)
    memory.add_background(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert memory.add_background(np.array([5.0, 6.0])) == 3
    memory.finish_background()
    np.testing.assert_allclose(memory.base_mean, [3.0, 4.0])
    assert memory.base_source == "background"
    with pytest.raises(RuntimeError, match="no background frames"):
        memory.finish_background()


def test_no_shot_no_inference():
    memory = FewShotMemory(3, 4)
    assert not memory.ready
    with pytest.raises(RuntimeError, match="no class has a shot yet"):
        memory.predict(np.ones(3))


@pytest.mark.parametrize("call, message", [
    (lambda m: m.register(4, np.ones((1, 3))), "out of range"),
    (lambda m: m.register(0, np.ones((1, 2))), r"features must be \(N, 3\)"),
    (lambda m: m.register(0, np.array([[np.nan, 0, 0]])), "NaN or Inf"),
    (lambda m: m.set_base_mean([1.0, 2.0]), "base mean must be 3 finite floats"),
])
def test_bad_arguments_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call(FewShotMemory(3, 4))


def test_save_load_round_trip(tmp_path):
    memory = _memory()
    memory.names[0] = "dog"
    memory.register(0, np.array([[0.0, 1.0, 2.0]]), thumbnail=np.full((20, 30, 3), 7, np.uint8))
    path = tmp_path / "memory.npz"
    memory.save(path, model="tiny")

    loaded = FewShotMemory.load(path, feature_dim=3, model="tiny", temperature=0.5)

    assert loaded.shot_counts() == memory.shot_counts() == [3, 0, 1, 0]
    assert loaded.names == memory.names and loaded.base_source == "given"
    np.testing.assert_array_equal(loaded.base_mean, memory.base_mean)
    assert loaded.thumbnails[0].shape == (48, 48, 3) and (loaded.thumbnails[0] == 7).all()
    assert loaded.thumbnails[2] is None
    query = np.array([1.0, 0.3, 2.0])
    np.testing.assert_array_equal(loaded.predict(query).probabilities,
                                  memory.predict(query).probabilities)


def _saved(tmp_path):
    path = tmp_path / "memory.npz"
    _memory().save(path, model="tiny")
    with np.load(str(path)) as data:
        return path, {k: data[k] for k in data.files}


def _write(path, arrays):
    with open(str(path), "wb") as handle:
        np.savez(handle, **arrays)


def _header(arrays, **changes):
    header = json.loads(arrays["header"].tobytes())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)


@pytest.mark.parametrize("corrupt, message", [
    (lambda a: a.pop("labels"), r"missing \['labels'\]"),
    (lambda a: a.update(extra=np.zeros(1)), r"unexpected \['extra'\]"),
    (lambda a: a.update(shots=a["shots"].astype(np.float64)), r"shots is f8, expected one of \['f4'\]"),
    (lambda a: a.update(shots=a["shots"][:2]), r"array 'shots' is float32 \(2, 3\)"),
    (lambda a: a.update(labels=np.array([0, 0, 9], np.int32)), "labels outside 0..3"),
    (lambda a: a.update(labels=np.array([0, 1, 2], np.int32)), "do not add up"),
    (lambda a: a.update(base_mean=np.array([np.inf, 0, 0], np.float32)), "NaN or Inf"),
    (lambda a: a.update(header=np.frombuffer(b"{oops", np.uint8)), "header is not UTF-8 JSON"),
    (lambda a: _header(a, format="other"), "header format/version"),
    (lambda a: _header(a, feature_dim=-3), "'feature_dim' must be a positive integer"),
    (lambda a: _header(a, names=["a"]), "'names' must be a list of 4 str"),
    (lambda a: _header(a, shot_counts=[2, 0, 1, True]), "'shot_counts' must be a list of 4 int"),
    (lambda a: _header(a, model=3), "'model' must be a string"),
])
def test_malformed_memory_files_are_rejected(tmp_path, corrupt, message):
    path, arrays = _saved(tmp_path)
    corrupt(arrays)
    _write(path, arrays)
    with pytest.raises(MemoryFileError, match=message) as info:
        FewShotMemory.load(path)
    assert str(path) in str(info.value)


def test_pickled_arrays_are_refused(tmp_path):
    path, arrays = _saved(tmp_path)
    arrays["labels"] = np.array([0, 0, 2], dtype=object)
    _write(path, arrays)
    with pytest.raises(MemoryFileError, match="object arrays are refused"):
        FewShotMemory.load(path)


def test_truncated_and_foreign_files_are_rejected(tmp_path):
    path, _ = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MemoryFileError, match="not an .npz archive"):
        FewShotMemory.load(path)
    with zipfile.ZipFile(str(path), "w") as archive:
        archive.writestr("header.npy", b"junk")
    with pytest.raises(MemoryFileError):
        FewShotMemory.load(path)
    with pytest.raises(MemoryFileError, match="no such file"):
        FewShotMemory.load(tmp_path / "absent.npz")


def test_memory_for_another_backbone_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    with pytest.raises(MemoryFileError, match="feature_dim is 3, the loaded backbone gives 80"):
        FewShotMemory.load(path, feature_dim=80)
    with pytest.raises(MemoryFileError, match="was saved for model 'tiny', not 'resnet9'"):
        FewShotMemory.load(path, model="resnet9")


def test_hostile_memory_files_are_refused_before_allocating(tmp_path):
    """Issue 13: a nested header (RecursionError), a shots.npy declaring 10^12 elements
    (MemoryError) and a small archive that inflates to gigabytes, each one clear error."""
    path, arrays = _saved(tmp_path)
    arrays["header"] = np.frombuffer(b"[" * 60000, np.uint8)
    _write(path, arrays)
    with pytest.raises(MemoryFileError, match="header"):
        FewShotMemory.load(path)
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += b" " * (118 - len(header)) + b"\n"
    with zipfile.ZipFile(str(path), "w") as archive:
        for name in ("header", "base_mean", "labels", "thumbnails"):
            archive.writestr(name + ".npy", b"")
        archive.writestr("shots.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    with pytest.raises(MemoryFileError, match="more than the member holds|not a .npy array"):
        FewShotMemory.load(path)
    with zipfile.ZipFile(str(path), "w", zipfile.ZIP_DEFLATED) as archive:  # ~1 MB on disk
        for name in ("header", "base_mean", "labels", "thumbnails"):
            archive.writestr(name + ".npy", b"")
        archive.writestr("shots.npy", bytes(1 << 30))
    assert path.stat().st_size < 2 << 20
    with pytest.raises(MemoryFileError, match="declare 1,07[0-9,]+ bytes, at most"):
        FewShotMemory.load(path)
