"""device.ncm, the one few-shot classifier: preprocessing and distances by hand, the kNN
tie rule, and the board's FewShotMemory deciding exactly as the episode benchmark does."""

import numpy as np
import pytest

from device import ncm
from device.memory import FewShotMemory


def test_features_are_centred_then_l2_normalised_in_float32():
    out = ncm.preprocess(np.array([[4.0, 4.0], [1.0, 1.0]]), np.array([1.0, 0.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(ncm.preprocess(np.array([[1.0, 0.0]]), np.array([1.0, 0.0])),
                                  [[0.0, 0.0]])  # eps: no division by zero
    np.testing.assert_allclose(ncm.preprocess(np.array([[[3.0, 4.0]]]), None), [[[0.6, 0.8]]])


def test_distances_against_direct_numpy():
    rng = np.random.default_rng(0)
    queries = ncm.preprocess(rng.standard_normal((3, 5, 8)), None)
    points = ncm.preprocess(rng.standard_normal((3, 4, 8)), None)
    direct = np.linalg.norm(queries.astype(np.float64)[:, :, None] - points[:, None], axis=-1)
    np.testing.assert_allclose(ncm.distances(queries, points), direct, atol=1e-5)
    assert ncm.distances(queries, queries).min() >= 0.0  # no NaN from rounding below zero


def test_knn_votes_and_tie_rule_by_hand():
    owner = np.array([0, 1, 1, 0, 2])
    dist = np.array([[[0.1, 0.2, 0.3, 0.9, 2.0]]])
    scores = ncm.knn_scores(dist, owner, 3, k=4)[0, 0]
    # 2 votes each for classes 0 and 1; class 1's voters are nearer on the whole although
    # class 0 holds the nearest shot (and the lower index): class 1 wins
    bonus0 = (1 / 1.1 + 1 / 1.9) / 5
    bonus1 = (1 / 1.2 + 1 / 1.3) / 5
    np.testing.assert_allclose(scores, [2 + bonus0, 2 + bonus1, 0.0], rtol=1e-6)
    assert scores.argmax() == 1
    np.testing.assert_array_equal(np.floor(scores), [2, 2, 0])  # the integer part: votes
    # a clear majority is never overturned by closeness
    assert ncm.knn_scores(np.array([[[0.0, 1.9, 1.9, 1.95, 2.0]]]), owner, 3, 3)[0, 0].argmax() == 1
    # k larger than the shots held: every shot votes
    np.testing.assert_array_equal(np.floor(ncm.knn_scores(dist, owner, 3, 50)[0, 0]), [2, 2, 1])
    with pytest.raises(ValueError, match="k must be >= 1"):
        ncm.knn_scores(dist, owner, 3, 0)


def test_knn_against_direct_numpy():
    rng = np.random.default_rng(1)
    dist = rng.uniform(0, 2, (4, 7, 15)).astype(np.float32)
    dist[0, 0, 3] = dist[0, 0, 7]  # an exact distance tie: shot order decides
    owner = np.repeat(np.arange(3), 5)
    scores = ncm.knn_scores(dist, owner, 3, k=4)
    for b in range(4):
        for m in range(7):
            near = np.argsort(dist[b, m], kind="stable")[:4]
            votes = np.bincount(owner[near], minlength=3)
            close = np.bincount(owner[near], 1 / (1 + dist[b, m, near].astype(np.float64)), 3)
            np.testing.assert_allclose(scores[b, m], votes + close / 5, rtol=1e-6)


@pytest.mark.parametrize("classifier, k", [("ncm", 1), ("knn", 1), ("knn", 2), ("knn", 4)])
def test_the_board_decides_as_the_benchmark(classifier, k):
    """FewShotMemory.predict (a frame at a time) == ncm.predict (batched episodes), ties
    included: features on a coarse grid make equal distances and equal votes common."""
    rng = np.random.default_rng(2)
    ways, shots, queries, dim = 4, 3, 6, 5
    raw = rng.integers(0, 2, (20, ways, shots + queries, dim)).astype(np.float32)
    base_mean = np.full(dim, 0.5, np.float32)
    pre = ncm.preprocess(raw, base_mean)
    support = pre[:, :, :shots]
    query = pre[:, :, shots:].reshape(20, ways * queries, dim)
    expected = ncm.predict(support, query, classifier, k)
    for e in range(20):
        memory = FewShotMemory(dim, ways, classifier=classifier, k=k)
        memory.set_base_mean(base_mean)
        for way in range(ways):
            memory.register(way, raw[e, way, :shots])
        got = [memory.predict(f, smooth=False).index for f in raw[e, :, shots:].reshape(-1, dim)]
        assert got == expected[e].tolist()


def test_unknown_classifier_is_refused():
    with pytest.raises(ValueError, match="unknown classifier 'svm'"):
        ncm.predict(np.zeros((1, 2, 1, 3), np.float32), np.zeros((1, 1, 3), np.float32), "svm")
