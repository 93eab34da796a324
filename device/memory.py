"""Few-shot memory: the classes a device learned from a few frames, and its NCM classifier.

Features are centred on a base mean (measured from background frames at start-up, or
the model card's `feature_mean` until then) and L2-normalised (EASY/PEFSL). A class
centroid is the mean of its preprocessed shots (not re-normalised); the score of a class
is minus the Euclidean distance to its centroid; probabilities are
softmax(-distance / temperature), smoothed over frames by an exponential moving average.
`classifier="knn"` votes among the k nearest shots instead (probabilities: the vote
shares). The arithmetic and the tie rules are `device.ncm`'s, which the few-shot
benchmark also runs; ties in smoothed probabilities go to the class the current frame
scores higher.

Save/load: one `.npz` file (numpy's zip of .npy arrays, read with allow_pickle=False)
holding a JSON header as bytes, the base mean, the raw shot features with their class
slot, and one thumbnail a class. `load` checks every array and header field.
"""

import json
import pathlib
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from fedcore.atomic import atomic_open
from fedcore.errors import ConfigError
from fedcore.npzfile import load_npz

from . import ncm
from .errors import MemoryFileError

__all__ = ["MEMORY_FORMAT", "FewShotMemory", "Prediction"]

MEMORY_FORMAT = "pynq-fewshot-memory"
MEMORY_VERSION = 1
THUMB = 48  # side of the stored shot thumbnails, pixels
_DTYPES = {"header": ("u1",), "base_mean": ("f4",), "shots": ("f4",), "labels": ("i4",),
           "thumbnails": ("u1",)}
# 10,000 shots of 2,048 features with 100 thumbnails take 84 MB; a real demo a few hundred kB.
MAX_MEMORY_BYTES = 96 << 20
MAX_HEADER_BYTES = 64 << 10
PathLike = Union[str, pathlib.Path]


class Prediction:
    """One classified frame: probabilities over every class slot (0 for slots with no shot)."""

    def __init__(self, index: int, probabilities: np.ndarray, distances: np.ndarray):
        self.index = index
        self.probabilities = probabilities
        self.distances = distances

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.index])


class FewShotMemory:
    """Registered classes (slot -> shots) and the NCM / kNN classifier over them."""

    def __init__(self, feature_dim: int, num_classes: int = 10, temperature: float = 0.1,
                 smoothing: float = 0.5, classifier: str = "ncm", k: int = 3,
                 names: Optional[Sequence[str]] = None):
        if feature_dim <= 0 or num_classes <= 0:
            raise ValueError("feature_dim and num_classes must be positive")
        if temperature <= 0:
            raise ValueError("temperature must be positive, not %r" % temperature)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError("smoothing must be in [0, 1), not %r" % smoothing)
        if classifier not in ("ncm", "knn") or k < 1:
            raise ValueError("classifier must be 'ncm' or 'knn' with k >= 1")
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.smoothing = float(smoothing)
        self.classifier = classifier
        self.k = int(k)
        self.names: List[str] = list(names) if names else ["class %d" % (i + 1)
                                                           for i in range(num_classes)]
        if len(self.names) != num_classes:
            raise ValueError("%d names for %d classes" % (len(self.names), num_classes))
        self.base_mean = np.zeros(feature_dim, dtype=np.float32)
        self.base_source = "zero"
        self._background: List[np.ndarray] = []
        self.clear()

    # --- base mean ---------------------------------------------------------------------

    def set_base_mean(self, mean: Union[Sequence[float], np.ndarray], source: str = "given") -> None:
        values = np.asarray(mean, dtype=np.float32).reshape(-1)
        if values.shape != (self.feature_dim,) or not np.all(np.isfinite(values)):
            raise ValueError("base mean must be %d finite floats" % self.feature_dim)
        self.base_mean = values
        self.base_source = source
        self._refresh()

    def add_background(self, features: np.ndarray) -> int:
        """Accumulate background frames' features; returns how many are held."""
        self._background.append(self._check(features))
        return sum(len(b) for b in self._background)

    def finish_background(self) -> None:
        if not self._background:
            raise RuntimeError("no background frames were added before finish_background()")
        self.set_base_mean(np.concatenate(self._background).mean(axis=0), "background")
        self._background = []

    # --- registration ------------------------------------------------------------------

    def clear(self) -> None:
        self._shots: List[np.ndarray] = [np.zeros((0, self.feature_dim), np.float32)
                                         for _ in range(self.num_classes)]
        self.thumbnails: List[Optional[np.ndarray]] = [None] * self.num_classes
        self._smoothed: Optional[np.ndarray] = None
        self._refresh()

    def register(self, slot: int, features: np.ndarray,
                 thumbnail: Optional[np.ndarray] = None) -> int:
        """Add shots (N, D) to class `slot`; returns the class's shot count."""
        if not 0 <= slot < self.num_classes:
            raise ValueError("class slot %d out of range 0..%d" % (slot, self.num_classes - 1))
        self._shots[slot] = np.concatenate([self._shots[slot], self._check(features)])
        if thumbnail is not None:
            self.thumbnails[slot] = _thumbnail(thumbnail)
        self._refresh()
        return len(self._shots[slot])

    def shot_counts(self) -> List[int]:
        return [len(s) for s in self._shots]

    @property
    def registered(self) -> List[int]:
        """Slots with at least one shot: the classes inference can choose from."""
        return [i for i, s in enumerate(self._shots) if len(s)]

    @property
    def ready(self) -> bool:
        return len(self._slots) > 0

    # --- classification ----------------------------------------------------------------

    def predict(self, feature: np.ndarray, smooth: bool = True) -> Prediction:
        """Classify one feature vector (D,) among the registered classes."""
        if not self.ready:
            raise RuntimeError("no class has a shot yet: register at least one before inference")
        f = np.asarray(feature, dtype=np.float32).reshape(-1)
        if f.shape[0] != self.feature_dim or not np.isfinite(f).all():
            raise ValueError("a feature must be %d finite floats" % self.feature_dim)
        f = ncm.preprocess(f, self.base_mean)[None, None]  # 1×1×D
        if self.classifier == "ncm":
            dist = ncm.distances(f, self._centroids[None])[0, 0]
            scores = -dist
            logits = scores / self.temperature
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
        else:
            shot_dist = ncm.distances(f, self._shot_matrix[None])
            scores = ncm.knn_scores(shot_dist, self._shot_slot_pos, len(self._slots), self.k)[0, 0]
            probs = np.floor(scores) / np.floor(scores).sum()  # the vote shares
            dist = np.minimum.reduceat(shot_dist[0, 0], self._shot_starts)  # nearest shot a class
        full = np.zeros(self.num_classes, dtype=np.float32)
        full[self._slots] = probs
        distances = np.full(self.num_classes, np.inf, dtype=np.float32)
        distances[self._slots] = dist
        if smooth:
            if self._smoothed is not None:
                full = self.smoothing * self._smoothed + (1.0 - self.smoothing) * full
            self._smoothed = full
        return Prediction(self._best(full, scores), full, distances)

    def _best(self, probabilities: np.ndarray, scores: np.ndarray) -> int:
        """The most probable slot; a tie goes to the slot this frame scores higher."""
        held = probabilities[self._slots]
        tied = np.flatnonzero(held == held.max())
        return int(self._slots[tied[0] if len(tied) == 1 else tied[np.argmax(scores[tied])]])

    def reset_smoothing(self) -> None:
        self._smoothed = None

    def _refresh(self) -> None:
        """Recompute the preprocessed shots and centroids after any change."""
        self._slots = np.array(self.registered, dtype=np.int64)
        if len(self._slots) == 0:
            self._centroids = np.zeros((0, self.feature_dim), np.float32)
            return
        shots = [ncm.preprocess(self._shots[s], self.base_mean) for s in self._slots]
        self._centroids = np.stack([s.mean(axis=0) for s in shots]).astype(np.float32)
        self._shot_matrix = np.concatenate(shots)
        self._shot_slot_pos = np.concatenate([np.full(len(s), j) for j, s in enumerate(shots)])
        self._shot_starts = np.cumsum([0] + [len(s) for s in shots[:-1]])  # slots are contiguous
        self._smoothed = None

    def _check(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim == 1:
            features = features[None]
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError("features must be (N, %d), not %s" % (self.feature_dim,
                                                                   features.shape))
        if not np.isfinite(features).all():
            raise ValueError("features contain NaN or Inf")
        return features

    # --- persistence -------------------------------------------------------------------

    def save(self, path: PathLike, model: str = "") -> None:
        """Write the registered classes to `path` (.npz; no pickle), atomically and durably."""
        path = pathlib.Path(path)
        header = {"format": MEMORY_FORMAT, "version": MEMORY_VERSION, "model": model,
                  "feature_dim": self.feature_dim, "num_classes": self.num_classes,
                  "names": self.names, "base_source": self.base_source,
                  "shot_counts": self.shot_counts(), "thumbnail_size": THUMB,
                  "has_thumbnail": [t is not None for t in self.thumbnails]}
        thumbs = np.zeros((self.num_classes, THUMB, THUMB, 3), np.uint8)
        for i, t in enumerate(self.thumbnails):
            if t is not None:
                thumbs[i] = t
        labels = np.concatenate([np.full(len(s), i, np.int32) for i, s in enumerate(self._shots)])
        with atomic_open(path) as handle:
            np.savez(handle, header=np.frombuffer(json.dumps(header, sort_keys=True).encode(),
                                                  np.uint8),
                     base_mean=self.base_mean, shots=np.concatenate(self._shots),
                     labels=labels, thumbnails=thumbs)

    @classmethod
    def load(cls, path: PathLike, feature_dim: Optional[int] = None, model: Optional[str] = None,
             **options: Any) -> "FewShotMemory":
        """Read a saved memory; every malformed part raises MemoryFileError naming the file."""
        path = pathlib.Path(path)
        arrays = _read_npz(path)
        header = _read_header(path, arrays["header"])
        where = str(path)
        dim, count = header["feature_dim"], header["num_classes"]
        if feature_dim is not None and dim != feature_dim:
            _fail(where, "feature_dim is %d, the loaded backbone gives %d" % (dim, feature_dim))
        if model is not None and header["model"] not in ("", model):
            _fail(where, "was saved for model %r, not %r" % (header["model"], model))
        total = sum(header["shot_counts"])
        _expect(where, arrays, "base_mean", np.float32, (dim,))
        _expect(where, arrays, "shots", np.float32, (total, dim))
        _expect(where, arrays, "labels", np.int32, (total,))
        _expect(where, arrays, "thumbnails", np.uint8, (count, THUMB, THUMB, 3))
        labels = arrays["labels"]
        if total and (labels.min() < 0 or labels.max() >= count):
            _fail(where, "labels outside 0..%d" % (count - 1))
        if np.bincount(labels, minlength=count).tolist() != header["shot_counts"]:
            _fail(where, "labels do not add up to the header's shot_counts")
        if not (np.all(np.isfinite(arrays["shots"])) and np.all(np.isfinite(arrays["base_mean"]))):
            _fail(where, "features contain NaN or Inf")
        memory = cls(dim, count, names=header["names"], **options)
        memory.set_base_mean(arrays["base_mean"], header["base_source"])
        for slot in range(count):
            shots = arrays["shots"][labels == slot]
            if len(shots):
                thumb = arrays["thumbnails"][slot] if header["has_thumbnail"][slot] else None
                memory.register(slot, shots, thumb)
        return memory


def _thumbnail(image: np.ndarray) -> np.ndarray:
    import cv2  # only where thumbnails are made (a camera frame)

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return cv2.resize(np.ascontiguousarray(image, dtype=np.uint8), (THUMB, THUMB),
                      interpolation=cv2.INTER_AREA)


def _fail(where: str, problem: str) -> None:
    raise MemoryFileError("%s: not a valid few-shot memory file: %s" % (where, problem))


def _read_npz(path: pathlib.Path) -> Dict[str, np.ndarray]:
    """The five arrays, their declared sizes bounded before anything is read (a 1 MB
    archive can declare gigabytes: a PYNQ-Z1 has 512 MB)."""
    if not path.is_file():
        _fail(str(path), "no such file")
    try:
        return load_npz(str(path), _DTYPES, MAX_MEMORY_BYTES)
    except ConfigError as exc:
        raise MemoryFileError("%s: not a valid few-shot memory file: %s" % (
            path, str(exc).replace(str(path) + ": ", ""))) from None


def _read_header(path: pathlib.Path, raw: np.ndarray) -> Dict[str, Any]:
    where = str(path)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        _fail(where, "header must be a 1-D uint8 array of JSON bytes")
    if raw.size > MAX_HEADER_BYTES:
        _fail(where, "header of %d bytes, at most %d" % (raw.size, MAX_HEADER_BYTES))
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        _fail(where, "header is not UTF-8 JSON (%s)" % exc)
    if not isinstance(header, dict):
        _fail(where, "header must be a JSON object")
    if header.get("format") != MEMORY_FORMAT or header.get("version") != MEMORY_VERSION:
        _fail(where, "header format/version must be %r/%d" % (MEMORY_FORMAT, MEMORY_VERSION))
    for key in ("feature_dim", "num_classes", "thumbnail_size"):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            _fail(where, "header field %r must be a positive integer" % key)
    count = header["num_classes"]
    if header["thumbnail_size"] != THUMB:
        _fail(where, "header field 'thumbnail_size' must be %d" % THUMB)
    checks = (("names", str), ("shot_counts", int), ("has_thumbnail", bool))
    for key, kind in checks:
        value = header.get(key)
        if (not isinstance(value, list) or len(value) != count
                or not all(isinstance(v, kind) and (kind is bool or not isinstance(v, bool))
                           for v in value)):
            _fail(where, "header field %r must be a list of %d %s" % (key, count, kind.__name__))
    if any(c < 0 for c in header["shot_counts"]):
        _fail(where, "header field 'shot_counts' must be non-negative")
    for key in ("model", "base_source"):
        if not isinstance(header.get(key), str):
            _fail(where, "header field %r must be a string" % key)
    return header


def _expect(where: str, arrays: Dict[str, np.ndarray], key: str, dtype: Any, shape: tuple) -> None:
    array = arrays[key]
    if array.dtype != dtype or array.shape != shape:
        _fail(where, "array %r is %s %s, expected %s %s" % (key, array.dtype, array.shape,
                                                           np.dtype(dtype), shape))
