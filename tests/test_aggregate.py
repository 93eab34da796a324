"""FedAvg and delta aggregation: exact results and every rejected input."""

import math

import numpy as np
import pytest

from fedcore.aggregate import aggregate, apply_delta, fedavg
from fedcore.errors import AggregationError


def _update(a: float, b: float) -> dict:
    """A two-tensor update whose values are easy to average by hand."""
    return {
        "fc1.weight": np.full((2, 3), a, dtype=np.float32),
        "fc1.bias": np.array([b, -b], dtype=np.float32),
    }


def test_fedavg_matches_hand_computed_weighted_average():
    # Prepare: three clients with 10, 30 and 60 samples.
    updates = [(_update(1.0, 2.0), 10), (_update(2.0, 4.0), 30), (_update(4.0, 8.0), 60)]
    # (1*10 + 2*30 + 4*60) / 100 = 3.1 and (2*10 + 4*30 + 8*60) / 100 = 6.2
    expected_weight = np.full((2, 3), 3.1, dtype=np.float32)
    expected_bias = np.array([6.2, -6.2], dtype=np.float32)

    # Execute
    result = fedavg(updates)

    # Assert
    assert list(result) == ["fc1.weight", "fc1.bias"]
    assert all(array.dtype == np.float32 for array in result.values())
    np.testing.assert_allclose(result["fc1.weight"], expected_weight, rtol=1e-6)
    np.testing.assert_allclose(result["fc1.bias"], expected_bias, rtol=1e-6)


def test_fedavg_keeps_first_update_order_and_ignores_later_order():
    # Prepare: the second update lists its tensors in reverse order.
    first = _update(1.0, 1.0)
    second = dict(reversed(list(_update(3.0, 3.0).items())))

    # Execute
    result = fedavg([(first, 1.0), (second, 1.0)])

    # Assert
    assert list(result) == list(first)
    np.testing.assert_allclose(result["fc1.weight"], 2.0)


def test_fedavg_accumulates_in_float64():
    # Prepare: in a float32 running sum 1e8 + 1 rounds back to 1e8 and the 1 is lost.
    updates = [({"w": np.array([v], dtype=np.float32)}, 1.0) for v in (1e8, 1.0, -1e8)]

    # Execute
    result = fedavg(updates)

    # Assert
    np.testing.assert_allclose(result["w"], [1.0 / 3.0], rtol=1e-6)


def test_fedavg_zero_weight_client_contributes_nothing():
    result = fedavg([(_update(1.0, 1.0), 5), (_update(100.0, 100.0), 0)])
    np.testing.assert_allclose(result["fc1.weight"], 1.0)


def test_fedavg_does_not_modify_inputs():
    first, second = _update(1.0, 2.0), _update(3.0, 4.0)
    fedavg([(first, 1), (second, 1)])
    np.testing.assert_array_equal(first["fc1.weight"], 1.0)
    np.testing.assert_array_equal(second["fc1.bias"], [4.0, -4.0])


def test_delta_aggregation_adds_weighted_mean_delta_to_base():
    # Prepare
    base = _update(10.0, 20.0)
    updates = [(_update(1.0, -1.0), 1), (_update(3.0, 1.0), 3)]

    # Execute
    result = aggregate(updates, "delta", base=base)

    # Assert: mean delta is 2.5 for the weight and 0.5 for the bias.
    np.testing.assert_allclose(result["fc1.weight"], 12.5)
    np.testing.assert_allclose(result["fc1.bias"], [20.5, -20.5])


def test_weights_kind_is_plain_fedavg():
    updates = [(_update(1.0, 1.0), 1), (_update(3.0, 3.0), 1)]
    result = aggregate(updates, "weights")
    for name, array in fedavg(updates).items():
        np.testing.assert_array_equal(result[name], array)


def test_apply_delta_returns_float32_sum():
    result = apply_delta({"w": np.ones(3, np.float32)}, {"w": np.arange(3, dtype=np.float64)})
    assert result["w"].dtype == np.float32
    np.testing.assert_array_equal(result["w"], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "updates, message",
    [
        ([], "no updates"),
        ([(_update(1, 1), -1)], "weight must be >= 0"),
        ([(_update(1, 1), math.nan)], "weight must be finite"),
        ([(_update(1, 1), math.inf)], "weight must be finite"),
        ([(_update(1, 1), "ten")], "weight must be a number"),
        ([(_update(1, 1), True)], "bool"),
        ([(_update(1, 1), 0), (_update(2, 2), 0.0)], "total weight is zero"),
        ([(_update(1, 1),)], "pair"),
        ([(["fc1.weight"], 1)], "mapping"),
    ],
)
def test_fedavg_rejects_bad_updates(updates, message):
    with pytest.raises(AggregationError, match=message):
        fedavg(updates)


def test_fedavg_names_missing_and_extra_tensors_and_update_index():
    # Prepare: update 2 lacks fc1.bias and brings fc2.weight.
    odd = {"fc1.weight": np.zeros((2, 3), np.float32), "fc2.weight": np.zeros(1, np.float32)}
    updates = [(_update(1, 1), 1), (_update(2, 2), 1), (odd, 1)]

    # Execute / Assert
    with pytest.raises(AggregationError) as info:
        fedavg(updates)
    text = str(info.value)
    assert "update 2" in text
    assert "missing ['fc1.bias']" in text
    assert "extra ['fc2.weight']" in text


def test_fedavg_names_both_shapes_on_mismatch():
    odd = _update(1, 1)
    odd["fc1.weight"] = np.zeros((3, 2), np.float32)
    with pytest.raises(AggregationError) as info:
        fedavg([(_update(1, 1), 1), (odd, 1)])
    text = str(info.value)
    assert "'fc1.weight'" in text and "(3, 2)" in text and "(2, 3)" in text


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fedavg_rejects_non_finite_values(bad):
    poisoned = _update(1, 1)
    poisoned["fc1.bias"][0] = bad
    with pytest.raises(AggregationError, match="update 1: tensor 'fc1.bias' has 1 non-finite"):
        fedavg([(_update(1, 1), 1), (poisoned, 1)])


def test_fedavg_rejects_non_numeric_tensor():
    with pytest.raises(AggregationError, match="dtype"):
        fedavg([({"w": np.array(["a", "b"])}, 1)])


def test_fedavg_rejects_float32_overflow():
    huge = {"w": np.array([1e300], dtype=np.float64)}
    with pytest.raises(AggregationError, match="overflows float32"):
        fedavg([(huge, 1)])


def test_apply_delta_checks_names_shapes_and_values():
    base = _update(1, 1)
    with pytest.raises(AggregationError, match="missing \\['fc1.bias'\\]"):
        apply_delta(base, {"fc1.weight": np.zeros((2, 3), np.float32)})
    with pytest.raises(AggregationError, match="shape"):
        apply_delta(base, {"fc1.weight": np.zeros((2, 3)), "fc1.bias": np.zeros(3)})
    with pytest.raises(AggregationError, match="non-finite"):
        apply_delta(base, {"fc1.weight": np.zeros((2, 3)), "fc1.bias": np.array([0, np.nan])})
    with pytest.raises(AggregationError, match="base: tensor 'fc1.bias' has 1 non-finite"):
        apply_delta({"fc1.bias": np.array([np.inf])}, {"fc1.bias": np.zeros(1)})


def test_aggregate_delta_without_base_raises():
    with pytest.raises(AggregationError, match="base"):
        aggregate([(_update(1, 1), 1)], "delta")


def test_aggregate_unknown_kind_raises():
    with pytest.raises(AggregationError, match="unknown kind 'gradients'"):
        aggregate([(_update(1, 1), 1)], "gradients")
