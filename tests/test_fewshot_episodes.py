"""Episodes never leak queries into shots, respect alphabets; their NCM accuracy against
direct NumPy (the classifier itself, device.ncm, is pinned in test_ncm.py)."""

import numpy as np
import pytest

from device import ncm
from training.fewshot.episodes import evaluate_episodes, make_episodes, mean_ci95


def _labels(classes=12, per_class=7):
    return np.repeat(np.arange(classes), per_class)


def test_no_query_is_a_shot_and_labels_match():
    labels = _labels()
    eps = make_episodes(labels, ways=5, shots=2, queries=4, episodes=300, seed=3)
    assert eps.shape == (300, 5, 2, 4)
    for e in range(300):
        assert len(set(eps.classes[e])) == 5
        shots, queries = set(eps.support[e].ravel()), set(eps.query[e].ravel())
        assert not shots & queries
        assert len(shots) == 10 and len(queries) == 20
        for i, c in enumerate(eps.classes[e]):
            assert (labels[eps.support[e, i]] == c).all()
            assert (labels[eps.query[e, i]] == c).all()


def test_seeded_and_varied():
    labels = _labels()
    a = make_episodes(labels, 5, 1, 3, 50, seed=1)
    b = make_episodes(labels, 5, 1, 3, 50, seed=1)
    c = make_episodes(labels, 5, 1, 3, 50, seed=2)
    np.testing.assert_array_equal(a.support, b.support)
    assert not np.array_equal(a.support, c.support)


def test_within_alphabet_episodes():
    labels = _labels(classes=12)
    groups = ["A"] * 5 + ["B"] * 4 + ["C"] * 3  # C is too small for 4-way
    eps = make_episodes(labels, 4, 1, 2, 200, seed=0, groups=groups)
    used = set()
    for row in eps.classes:
        alphabets = {groups[c] for c in row}
        assert len(alphabets) == 1
        used |= alphabets
    assert used == {"A", "B"}
    with pytest.raises(ValueError, match="in any one group"):
        make_episodes(labels, 6, 1, 2, 5, groups=groups)


def test_preprocessing_and_ncm_against_direct_numpy():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((60, 8)).astype(np.float32) + 1.0
    labels = _labels(classes=6, per_class=10)
    base_mean = rng.standard_normal(8)
    eps = make_episodes(labels, 3, 2, 3, 40, seed=5)
    pre = ncm.preprocess(feats, base_mean)
    correct = []
    for e in range(40):
        cents, dists = [], []
        for i in range(3):
            shots = []
            for j in eps.support[e, i]:
                f = feats[j].astype(np.float64) - base_mean
                shots.append(f / np.linalg.norm(f))
            cents.append(np.mean(shots, axis=0))
        hits = 0
        for i in range(3):
            for j in eps.query[e, i]:
                f = feats[j].astype(np.float64) - base_mean
                f = f / np.linalg.norm(f)
                d = [np.sqrt(((f - c) ** 2).sum()) for c in cents]
                dists.append(d)
                hits += int(np.argmin(d) == i)
        got = ncm.distances(pre[eps.query[e]].reshape(1, 9, 8), pre[eps.support[e]].mean(1)[None])
        np.testing.assert_allclose(got[0], np.array(dists), atol=1e-5)
        correct.append(hits / 9)
    res = evaluate_episodes(feats, eps, base_mean, "ncm", batch=7)
    assert res["accuracy"] == pytest.approx(np.mean(correct))
    assert res["ci95"] == pytest.approx(1.96 * np.std(correct, ddof=1) / np.sqrt(40))


def test_mean_and_ci():
    r = mean_ci95(np.array([0.5, 1.0, 0.75, 0.75]))
    assert r["accuracy"] == 0.75 and r["ci95"] == pytest.approx(1.96 * np.std([0.5, 1, .75, .75], ddof=1) / 2)
