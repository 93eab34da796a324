"""Dirichlet label partitioning: a true partition, reproducible, skew follows alpha."""

import math

import numpy as np
import pytest

from fedcore.errors import PartitionError
from fedcore.partition import (
    client_dirichlet_partition,
    dirichlet_partition,
    label_histograms,
    label_skew,
)


def _labels(num_classes: int = 10, per_class: int = 500, seed: int = 0) -> np.ndarray:
    """Balanced labels in a shuffled order, like a real training set."""
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def _assert_is_partition(parts, num_samples):
    everything = np.concatenate(parts)
    assert len(everything) == num_samples, "indices lost or duplicated"
    np.testing.assert_array_equal(np.sort(everything), np.arange(num_samples))
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0), "each part must be sorted and unique"


@pytest.mark.parametrize("alpha", [0.05, 0.5, 5.0, math.inf])
def test_partition_is_disjoint_and_complete(alpha):
    # Prepare
    labels = _labels(num_classes=5, per_class=60)

    # Execute
    parts = dirichlet_partition(labels, num_clients=7, alpha=alpha, min_samples=0, seed=3)

    # Assert
    assert len(parts) == 7
    _assert_is_partition(parts, len(labels))


def test_min_samples_is_respected():
    labels = _labels(num_classes=10, per_class=50)
    parts = dirichlet_partition(labels, num_clients=10, alpha=0.3, min_samples=20, seed=1)
    assert min(len(part) for part in parts) >= 20
    _assert_is_partition(parts, len(labels))


def test_same_seed_same_partition_and_different_seed_differs():
    labels = _labels()
    first = dirichlet_partition(labels, 10, alpha=0.5, seed=42)
    again = dirichlet_partition(labels, 10, alpha=0.5, seed=42)
    other = dirichlet_partition(labels, 10, alpha=0.5, seed=43)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_iid_gives_near_equal_sizes_and_low_skew():
    # Prepare
    labels = _labels()

    # Execute
    parts = dirichlet_partition(labels, num_clients=7, alpha=float("inf"), seed=0)

    # Assert: 5000 / 7 is 714.3, so sizes are 714 or 715.
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == len(labels)
    assert label_skew(labels, parts) < 0.1
    _assert_is_partition(parts, len(labels))


def test_iid_is_seedable_too():
    labels = _labels(per_class=20)
    first = dirichlet_partition(labels, 4, alpha=math.inf, seed=5)
    again = dirichlet_partition(labels, 4, alpha=math.inf, seed=5)
    other = dirichlet_partition(labels, 4, alpha=math.inf, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_label_skew_grows_as_alpha_shrinks():
    # Prepare: 10 classes x 500 samples, 10 clients, averaged over a few seeds.
    labels = _labels()

    # Execute
    skews = {}
    for alpha in (100.0, 1.0, 0.1):
        values = [
            label_skew(labels, dirichlet_partition(labels, 10, alpha=alpha, seed=seed))
            for seed in range(4)
        ]
        skews[alpha] = float(np.mean(values))

    # Assert
    assert skews[100.0] < skews[1.0] < skews[0.1]
    assert skews[100.0] < 0.15
    assert skews[0.1] > 0.5


def test_single_client_gets_everything():
    labels = _labels(per_class=3)
    parts = dirichlet_partition(labels, num_clients=1, alpha=0.1)
    np.testing.assert_array_equal(parts[0], np.arange(len(labels)))
    assert label_skew(labels, parts) == 0.0


def test_unreachable_min_samples_raises_with_advice():
    # 10 samples of one class spread by a very peaked Dirichlet rarely give all 5 clients 2.
    labels = np.zeros(10, dtype=np.int64)
    with pytest.raises(PartitionError, match="raise alpha, lower min_samples") as info:
        dirichlet_partition(labels, num_clients=5, alpha=0.01, min_samples=2, max_tries=5)
    assert "5 clients" in str(info.value)


def test_min_samples_more_than_samples_raises_with_numbers():
    with pytest.raises(PartitionError, match="needs 60 samples but there are only 50"):
        dirichlet_partition(_labels(per_class=5), num_clients=6, alpha=1.0, min_samples=10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 2.5}, "num_clients"),
        ({"num_clients": True}, "num_clients"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"alpha": "big"}, "alpha"),
        ({"min_samples": -1}, "min_samples"),
        ({"max_tries": 0}, "max_tries"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    arguments = {"num_clients": 3, "alpha": 1.0}
    arguments.update(kwargs)
    with pytest.raises(PartitionError, match=message):
        dirichlet_partition(_labels(per_class=5), **arguments)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.zeros((4, 2), dtype=np.int64), "1-D"),
        (np.array([0.0, 1.0, 2.0]), "integers"),
        (np.array([0, -1, 2]), ">= 0"),
    ],
)
def test_bad_labels_raise(labels, message):
    with pytest.raises(PartitionError, match=message):
        dirichlet_partition(labels, num_clients=1, alpha=1.0)


def test_label_histograms_counts_per_client():
    # Prepare
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 3]), np.array([1, 2, 4, 5])]

    # Execute
    histograms = label_histograms(labels, parts, num_classes=4)

    # Assert
    np.testing.assert_array_equal(histograms, [[1, 0, 1, 0], [0, 2, 2, 0]])
    assert histograms.dtype == np.int64


def test_label_histograms_rejects_bad_inputs():
    labels = np.array([0, 1, 2])
    with pytest.raises(PartitionError, match="num_classes=2"):
        label_histograms(labels, [np.array([0, 1, 2])], num_classes=2)
    with pytest.raises(PartitionError, match=r"client 1: indices must lie in \[0, 3\)"):
        label_histograms(labels, [np.array([0]), np.array([3])])


def test_label_skew_extremes():
    # Two classes, each client holds exactly one: distance 0.5 from the 50/50 mix.
    labels = np.array([0, 0, 1, 1])
    assert label_skew(labels, [np.array([0, 1]), np.array([2, 3])]) == pytest.approx(0.5)
    assert label_skew(labels, [np.array([0, 2]), np.array([1, 3])]) == pytest.approx(0.0)
    # An empty client has no distribution and does not count.
    assert label_skew(labels, [np.array([0, 2, 1, 3]), np.array([], dtype=np.int64)]) == 0.0


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0, math.inf])
def test_by_client_partition_gives_equal_shares_of_every_sample(alpha):
    # Prepare: 5,000 samples over 100 clients, as the FLoCoRA split does with 50,000.
    labels = _labels(num_classes=10, per_class=500, seed=3)
    # Execute
    parts = client_dirichlet_partition(labels, 100, alpha, seed=7)
    # Assert
    _assert_is_partition(parts, len(labels))
    assert {len(p) for p in parts} == {50}
    again = client_dirichlet_partition(labels, 100, alpha, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_by_client_partition_skew_follows_alpha_and_uneven_totals_spread_by_one():
    labels = _labels(num_classes=10, per_class=203, seed=1)
    skews = [label_skew(labels, client_dirichlet_partition(labels, 30, a, seed=0)) for a in (0.1, 0.5, 100.0)]
    assert skews[0] > skews[1] > skews[2] and skews[2] < 0.2
    sizes = sorted(len(p) for p in client_dirichlet_partition(labels, 30, 0.5, seed=0))
    assert sizes[0] == 2030 // 30 and sizes[-1] == sizes[0] + 1


def test_by_client_partition_refuses_bad_arguments():
    with pytest.raises(PartitionError, match="alpha"):
        client_dirichlet_partition(_labels(), 10, 0.0)
    with pytest.raises(PartitionError, match="num_clients"):
        client_dirichlet_partition(_labels(), 0, 0.5)
