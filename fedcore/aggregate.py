"""Server-side aggregation of client updates: FedAvg over weights or deltas, and
the robust coordinate-wise median and trimmed mean.

Every check runs before any arithmetic so that a bad update is reported by
its index and tensor name instead of silently corrupting the global model.
`WeightedSum` is FedAvg's sum kept as the updates arrive, in memory that does not
grow with their number, and exact enough that the order they arrive in does not
change the float32 mean.
"""

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import AggregationError

__all__ = ["AGGREGATION_KINDS", "WeightedSum", "fedavg", "coordinate_median", "trimmed_mean", "median_of",
           "trimmed_mean_of", "apply_delta", "aggregate", "to_float32"]

# What a client may send: its full weights, or the change since the base model.
AGGREGATION_KINDS = ("weights", "delta")

Tensors = Mapping[str, np.ndarray]
Update = Tuple[Tensors, float]
Shapes = Dict[str, Tuple[int, ...]]


def _check_weight(weight: object, index: int) -> float:
    """Return the sample weight as a float, or raise if it cannot weigh an average."""
    if isinstance(weight, (bool, np.bool_)):
        # bool is an int subclass; True as a sample count is almost surely a bug.
        raise AggregationError(f"update {index}: weight must be a number, got bool {weight!r}")
    try:
        value = float(weight)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AggregationError(f"update {index}: weight must be a number, got {weight!r}") from None
    if not math.isfinite(value):
        raise AggregationError(f"update {index}: weight must be finite, got {value!r}")
    if value < 0:
        raise AggregationError(f"update {index}: weight must be >= 0, got {value!r}")
    return value


def _check_names(
    reference: Sequence[str], names: Sequence[str], where: str, ref_where: str
) -> None:
    """Raise naming the missing and extra tensors when two name sets differ."""
    have, want = set(names), set(reference)
    missing = [n for n in reference if n not in have]
    extra = [n for n in names if n not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"extra {extra}")
        raise AggregationError(f"{where}: tensor names differ from {ref_where}: {'; '.join(parts)}")


def _as_real_array(value: object, name: str, where: str) -> np.ndarray:
    """View a tensor as a real numeric array, rejecting strings, objects and complex."""
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise AggregationError(
            f"{where}: tensor {name!r} has dtype {array.dtype}; "
            "expected a real float or integer array"
        )
    return array


def _check_finite(array: np.ndarray, name: str, where: str) -> None:
    """Reject NaN/inf: one poisoned client would otherwise poison the global model."""
    if array.dtype.kind != "f":
        return  # integers are always finite
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise AggregationError(
            f"{where}: tensor {name!r} has {bad} non-finite value(s) (NaN or inf)"
        )


def _check_tensors(
    tensors: Tensors, reference: Optional[Shapes], where: str, ref_where: str
) -> Dict[str, np.ndarray]:
    """Validate one mapping of tensors, against reference names and shapes if given."""
    if not isinstance(tensors, Mapping):
        raise AggregationError(
            f"{where}: expected a mapping of tensor name -> array, got {type(tensors).__name__}"
        )
    names = list(tensors.keys())
    if reference is not None:
        _check_names(list(reference.keys()), names, where, ref_where)
    checked: Dict[str, np.ndarray] = {}
    for name in names:
        array = _as_real_array(tensors[name], name, where)
        if reference is not None and array.shape != reference[name]:
            raise AggregationError(
                f"{where}: tensor {name!r} has shape {array.shape} "
                f"but {ref_where} has shape {reference[name]}"
            )
        _check_finite(array, name, where)
        checked[name] = array
    return checked


def _shapes(tensors: Mapping[str, np.ndarray]) -> Shapes:
    return {name: array.shape for name, array in tensors.items()}


def to_float32(tensors: Dict[str, np.ndarray], what: str) -> Dict[str, np.ndarray]:
    """Cast float64 results to float32, refusing values that overflow float32."""
    result: Dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        with np.errstate(over="ignore", invalid="ignore"):
            cast = array.astype(np.float32)
        if not np.isfinite(cast).all():
            peak = float(np.abs(array).max())
            raise AggregationError(f"{what}: tensor {name!r} overflows float32 (max abs {peak:g})")
        result[name] = cast
    return result


def fedavg(updates: Sequence[Update]) -> Dict[str, np.ndarray]:
    """Average client tensors weighted by their sample counts (FedAvg).

    ``updates`` is a sequence of ``(tensors, weight)`` pairs. The sum runs in
    float64 so that many small contributions do not lose precision; the result
    is float32 and keeps the tensor order of the first update.
    """
    if len(updates) == 0:
        raise AggregationError("fedavg: no updates to aggregate")
    checked: List[Tuple[Dict[str, np.ndarray], float]] = []
    reference: Optional[Shapes] = None
    for index, update in enumerate(updates):
        if not isinstance(update, (tuple, list)) or len(update) != 2:
            raise AggregationError(f"update {index}: expected a (tensors, weight) pair")
        tensors = _check_tensors(update[0], reference, f"update {index}", "update 0")
        weight = _check_weight(update[1], index)
        if reference is None:
            reference = _shapes(tensors)
        checked.append((tensors, weight))
    total = math.fsum(weight for _, weight in checked)
    if total <= 0:
        raise AggregationError(
            f"fedavg: total weight is zero across {len(checked)} update(s); nothing to average"
        )
    assert reference is not None  # set by the first loop iteration
    sums = {name: np.zeros(shape, dtype=np.float64) for name, shape in reference.items()}
    for tensors, weight in checked:
        if weight == 0:
            continue  # contributes nothing; skipping also avoids 0 * huge arithmetic
        for name, array in tensors.items():
            sums[name] += weight * array.astype(np.float64)
    averaged = {name: acc / total for name, acc in sums.items()}
    return to_float32(averaged, "fedavg")


def _two_sum(high: np.ndarray, values: np.ndarray, weight: float,
             scratch: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(total, error) with total + error == high + weight * values exactly (Knuth's two-sum on
    float64; weight * a float32 value is exact in float64 for integer weights below 2**29),
    written into the `scratch` arrays shaped like `high` (total, error, and one for the product)."""
    total, part, product = scratch
    np.multiply(values, weight, out=product, dtype=np.float64)  # converts as it multiplies: one pass
    np.add(high, product, out=total)
    np.subtract(total, high, out=part)         # the part of product that reached total
    np.subtract(product, part, out=product)
    np.subtract(total, part, out=part)
    np.subtract(high, part, out=part)
    np.add(part, product, out=part)            # the error of the addition
    return total, part


class WeightedSum:
    """The sample-weighted sum of updates, one update at a time (FedAvg as they arrive).

    Each tensor's sum is a double-double (two float64 arrays, Knuth's two-sum): a float32
    value times an integer weight below 2**29 is exact in float64, and the running sum
    keeps about 100 bits, so the float32 mean comes out the same whatever the order the
    updates were added in (but with a probability of about 2**-47 a coordinate). Memory:
    five float64 copies of the model, whatever the number of updates. The caller checks
    each update's values (finite, within its bounds) before adding it.
    """

    def __init__(self, shapes: Mapping[str, Tuple[int, ...]]):
        self._shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self._high = {n: np.zeros(s, np.float64) for n, s in self._shapes.items()}
        self._low = {n: np.zeros(s, np.float64) for n, s in self._shapes.items()}
        self._scratch: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {
            n: (np.empty(s, np.float64), np.empty(s, np.float64), np.empty(s, np.float64)) for n, s in self._shapes.items()}
        self.weights: List[float] = []

    def add(self, tensors: Tensors, weight: float, support: Optional[Mapping[str, np.ndarray]] = None) -> None:
        """Add `weight` times `tensors`. `support` (optional, as Message.support) names, per
        tensor, the sorted flat positions outside which it is zero: the sum then works on
        those positions only, with the same result (adding zero changes neither array)."""
        value = _check_weight(weight, len(self.weights))
        _check_names(list(self._shapes), list(tensors), f"update {len(self.weights)}", "the model")
        for name, shape in self._shapes.items():
            if np.shape(tensors[name]) != shape:
                raise AggregationError(f"update {len(self.weights)}: tensor {name!r} has shape "
                                       f"{np.shape(tensors[name])} but the model has shape {shape}")
        self.weights.append(value)
        if value == 0:
            return  # contributes nothing; skipping also avoids 0 * huge arithmetic
        for name in self._shapes:
            positions = support.get(name) if support else None
            if positions is not None and 4 * positions.size < self._high[name].size:
                self._add_at(name, np.asarray(tensors[name]).ravel()[positions], value, positions)
                continue
            total, error = _two_sum(self._high[name], tensors[name], value, self._scratch[name])
            self._low[name] += error
            self._scratch[name] = (self._high[name], error, self._scratch[name][2])
            self._high[name] = total

    def _add_at(self, name: str, values: np.ndarray, weight: float, positions: np.ndarray) -> None:
        """The two-sum of `add` at `positions` only (gathered, summed, scattered back)."""
        high, low = self._high[name].reshape(-1), self._low[name].reshape(-1)  # views
        scratch = (np.empty(positions.size, np.float64), np.empty(positions.size, np.float64),
                   np.empty(positions.size, np.float64))
        total, error = _two_sum(high[positions], values, weight, scratch)
        high[positions] = total
        low[positions] += error  # the positions are distinct: no update is lost to buffering

    def mean(self) -> Dict[str, np.ndarray]:
        """The weighted mean as float32 (AggregationError when the weights add up to zero)."""
        total = math.fsum(self.weights)
        if total <= 0:
            raise AggregationError(
                f"fedavg: total weight is zero across {len(self.weights)} update(s); nothing to average"
            )
        return to_float32({n: (h + self._low[n]) / total for n, h in self._high.items()}, "fedavg")


def _stacked(updates: Sequence[Tensors], what: str) -> Dict[str, np.ndarray]:
    """Each tensor name -> the updates' values stacked on a new first axis, in float64."""
    if len(updates) == 0:
        raise AggregationError(f"{what}: no updates to aggregate")
    reference: Optional[Shapes] = None
    checked = []
    for index, tensors in enumerate(updates):
        arrays = _check_tensors(tensors, reference, f"update {index}", "update 0")
        reference = reference or _shapes(arrays)
        checked.append(arrays)
    return {name: np.stack([c[name].astype(np.float64) for c in checked]) for name in checked[0]}


def median_of(stacked: np.ndarray) -> np.ndarray:
    """The median over axis 0 of updates stacked as rows (float64)."""
    return np.median(stacked, axis=0)


def trimmed_mean_of(stacked: np.ndarray, trim: float) -> np.ndarray:
    """The mean over axis 0 after dropping the floor(trim * n) largest and as many smallest rows' values."""
    if not 0.0 <= trim < 0.5:
        raise AggregationError(f"trimmed_mean: trim must lie in [0, 0.5), got {trim!r}")
    count = stacked.shape[0]
    cut = int(math.floor(trim * count))
    return np.sort(stacked, axis=0)[cut:count - cut].mean(axis=0)


def coordinate_median(updates: Sequence[Tensors]) -> Dict[str, np.ndarray]:
    """The median of every coordinate over the updates (Yin et al. 2018), unweighted:
    up to half of the updates minus one can be arbitrary without moving it outside
    the range of the honest values."""
    return to_float32({n: median_of(v) for n, v in _stacked(updates, "median").items()}, "median")


def trimmed_mean(updates: Sequence[Tensors], trim: float) -> Dict[str, np.ndarray]:
    """Per coordinate, the mean after dropping the floor(trim * n) largest and as many
    smallest values (Yin et al. 2018), unweighted. 0 <= trim < 0.5."""
    if not 0.0 <= trim < 0.5:
        raise AggregationError(f"trimmed_mean: trim must lie in [0, 0.5), got {trim!r}")
    stacked = _stacked(updates, "trimmed_mean")
    return to_float32({n: trimmed_mean_of(v, trim) for n, v in stacked.items()}, "trimmed_mean")


def apply_delta(base: Tensors, delta: Tensors) -> Dict[str, np.ndarray]:
    """Return ``base + delta`` per tensor, as float32 in the order of ``base``."""
    base_arrays = _check_tensors(base, None, "base", "")
    delta_arrays = _check_tensors(delta, _shapes(base_arrays), "delta", "base")
    summed = {
        name: array.astype(np.float64) + delta_arrays[name].astype(np.float64)
        for name, array in base_arrays.items()
    }
    return to_float32(summed, "apply_delta")


def aggregate(
    updates: Sequence[Update], kind: str, base: Optional[Tensors] = None
) -> Dict[str, np.ndarray]:
    """Aggregate one round: ``kind`` says whether clients sent weights or deltas.

    For ``"delta"`` the averaged delta is added to ``base``, the global model
    the clients started the round from.
    """
    if kind == "weights":
        return fedavg(updates)
    if kind == "delta":
        if base is None:
            raise AggregationError(
                "aggregate: kind 'delta' needs the base model the deltas were computed from"
            )
        return apply_delta(base, fedavg(updates))
    raise AggregationError(
        f"aggregate: unknown kind {kind!r}; expected one of {list(AGGREGATION_KINDS)}"
    )
