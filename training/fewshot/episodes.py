"""Seeded few-shot episodes scored with the board's classifier, accuracy ± 95% CI.

Episodes are drawn once (numpy Generator, seeded) as index arrays and scored
in vectorised batches, as EASY does. Within an episode the K shots and Q
queries of a class are drawn together without replacement, so a query image
is never a shot. The feature preprocessing, NCM / kNN and their tie rules are
`device.ncm`'s: the code a board runs on its camera frames.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from device import ncm

__all__ = [
    "Episodes",
    "make_episodes",
    "evaluate_episodes",
    "mean_ci95",
]


@dataclass
class Episodes:
    """``support`` E×N×K and ``query`` E×N×Q are indices into the dataset;
    ``classes`` E×N the dataset labels of each episode's ways (way i of
    episode e is class ``classes[e, i]``)."""

    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray

    @property
    def shape(self):
        return self.support.shape[:2] + (self.support.shape[2], self.query.shape[2])


def make_episodes(
    labels: np.ndarray,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    seed: int = 0,
    groups: Optional[Sequence[str]] = None,
) -> Episodes:
    """Draw ``episodes`` N-way K-shot Q-query episodes from ``labels``.

    With ``groups`` (one group name per class, e.g. Omniglot alphabets) every
    episode takes its N classes from one group, chosen uniformly among the
    groups that have at least N classes with K+Q images each.
    """
    labels = np.asarray(labels)
    if min(ways, shots, queries, episodes) < 1:
        raise ValueError("ways, shots, queries and episodes must be >= 1")
    per_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    usable = [c for c, idx in enumerate(per_class) if len(idx) >= shots + queries]
    if groups is None:
        pools = [np.asarray(usable)]
    else:
        by_group: Dict[str, list] = {}
        for c in usable:
            by_group.setdefault(groups[c], []).append(c)
        pools = [np.asarray(v) for _, v in sorted(by_group.items()) if len(v) >= ways]
    if not pools or max(len(p) for p in pools) < ways:
        raise ValueError(
            f"cannot draw {ways}-way episodes with {shots}+{queries} images a class: "
            f"only {max([len(p) for p in pools] or [0])} classes qualify"
            + (" in any one group" if groups is not None else "")
        )
    rng = np.random.default_rng(seed)
    classes = np.empty((episodes, ways), np.int64)
    picks = np.empty((episodes, ways, shots + queries), np.int64)
    for e in range(episodes):
        pool = pools[rng.integers(len(pools))]
        classes[e] = rng.choice(pool, ways, replace=False)
        for i, c in enumerate(classes[e]):
            picks[e, i] = rng.choice(per_class[c], shots + queries, replace=False)
    return Episodes(classes, picks[:, :, :shots].copy(), picks[:, :, shots:].copy())


def mean_ci95(accuracies: np.ndarray) -> Dict[str, float]:
    """Mean and the half-width of its normal 95% confidence interval."""
    acc = np.asarray(accuracies, dtype=np.float64)
    ci = 1.96 * acc.std(ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else float("nan")
    return {"accuracy": float(acc.mean()), "ci95": float(ci), "episodes": int(len(acc))}


def evaluate_episodes(
    features: np.ndarray,
    episodes: Episodes,
    base_mean: Optional[np.ndarray],
    classifier: str = "ncm",
    k: int = 1,
    batch: int = 100,
) -> Dict[str, float]:
    """Accuracy ± 95% CI of NCM (or kNN) over the episodes, from the raw
    features of every dataset image (N_images×D); float32, as on the board."""
    if classifier not in ("ncm", "knn"):
        raise ValueError(f"unknown classifier {classifier!r} (ncm or knn)")
    feats = ncm.preprocess(features, base_mean)
    e, n, _, q = episodes.shape
    truth = np.repeat(np.arange(n), q)
    accs = np.empty(e)
    for start in range(0, e, batch):
        sup = feats[episodes.support[start : start + batch]]  # B×N×K×D
        qry = feats[episodes.query[start : start + batch]]  # B×N×Q×D
        qry = qry.reshape(qry.shape[0], n * q, -1)
        pred = ncm.predict(sup, qry, classifier, k)
        accs[start : start + batch] = (pred == truth).mean(-1)
    return mean_ci95(accs)
