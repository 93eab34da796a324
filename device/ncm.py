"""The few-shot classifier: EASY's feature preprocessing, NCM and kNN (numpy, float32).

One implementation for the board (`device.memory.FewShotMemory`, one frame at a time)
and for the few-shot benchmark (`training.fewshot.episodes`, batches of episodes), so
that what the benchmark measures is what the board does.

- `preprocess`: centre on a base mean feature, then L2-normalise each row (EASY/PEFSL).
- NCM: the class score is minus the Euclidean distance to the class centroid, the mean
  of its preprocessed shots (not re-normalised).
- kNN: the score is the number of votes among the k nearest shots, plus a tie-break
  sub-vote below 1: among classes with equally many votes, the one whose voting shots
  are nearer (a larger sum of 1 / (1 + distance)) wins. Equal distances rank in shot
  order (a stable sort).
- The decision is the highest score; exact NCM ties go to the lower class index.
"""

from typing import Optional

import numpy as np

__all__ = ["EPS", "preprocess", "distances", "knn_scores", "predict"]

EPS = 1e-12  # floor of a norm: a feature equal to the base mean stays zero


def preprocess(features: np.ndarray, base_mean: Optional[np.ndarray]) -> np.ndarray:
    """(..., D) raw features -> float32, centred on `base_mean` (None: not centred),
    each feature vector L2-normalised."""
    centred = np.asarray(features, dtype=np.float32)
    if base_mean is not None:
        centred = centred - np.asarray(base_mean, dtype=np.float32)
    norms = np.sqrt(np.einsum("...d,...d->...", centred, centred))[..., None]
    return centred / np.maximum(norms, np.float32(EPS))


def distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Euclidean distances, batched: queries B×M×D, points B×P×D -> B×M×P (float32)."""
    squared = np.einsum("bmd,bmd->bm", queries, queries)[:, :, None]
    squared = squared + np.einsum("bpd,bpd->bp", points, points)[:, None, :]
    squared -= 2.0 * np.matmul(queries, points.transpose(0, 2, 1))
    return np.sqrt(np.maximum(squared, 0.0))


def knn_scores(dist: np.ndarray, owner: np.ndarray, num_classes: int, k: int) -> np.ndarray:
    """kNN scores B×M×N from the distances B×M×P of each query to each shot, `owner`
    (P,) giving each shot's class in 0..N-1. The integer part is the class's votes among
    the k nearest shots; the fraction, sum(1 / (1 + d)) over those voting shots divided
    by k + 1 (always < 1), breaks ties towards the class whose voters are nearer."""
    if k < 1:
        raise ValueError("k must be >= 1, not %r" % k)
    k = min(int(k), dist.shape[-1])
    nearest = np.argsort(dist, axis=-1, kind="stable")[..., :k]  # B×M×k
    closeness = 1.0 / (1.0 + np.take_along_axis(dist, nearest, axis=-1))  # in (0, 1]
    hits = np.asarray(owner)[nearest][..., None] == np.arange(num_classes)  # B×M×k×N
    votes = hits.sum(axis=-2, dtype=np.float32)
    return votes + np.einsum("bmk,bmkn->bmn", closeness, hits) / np.float32(k + 1)


def predict(support: np.ndarray, queries: np.ndarray, classifier: str = "ncm",
            k: int = 1) -> np.ndarray:
    """The class index of each query for a batch of episodes: preprocessed support
    B×N×K×D (way, shot) and queries B×M×D -> B×M."""
    batch, ways, shots, dim = support.shape
    if classifier == "ncm":
        return distances(queries, support.mean(axis=2)).argmin(axis=-1)
    if classifier == "knn":
        flat = support.reshape(batch, ways * shots, dim)
        owner = np.repeat(np.arange(ways), shots)
        return knn_scores(distances(queries, flat), owner, ways, k).argmax(axis=-1)
    raise ValueError("unknown classifier %r (ncm or knn)" % classifier)
