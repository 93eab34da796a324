"""The server's strategy: two paired hooks, in the spirit of Flower's ``Strategy``.

    configure_round(number, available, config) -> RoundPlan   who trains, and how
    aggregate(plan, model, updates, failures)   -> new model, or None ("no new model")

and how a round's updates wait for the close (``gather``, then ``finish``): FedAvg and
FedAvgM add each one to a running weighted sum as it arrives (memory of a few models,
whatever the number of clients); the robust statistics, which need every value of a
coordinate, keep every update (on disk beyond a bound, fedcore.rounds.gather) and work
through the coordinates a slice at a time.

The round engine (fedcore.rounds.server) owns the protocol: broadcasts, decoding and
validating updates, byte counts, checkpoints. A strategy owns the policy. Its state
(e.g. FedAvgM's momentum) travels in the server's checkpoint, so a restarted server
resumes bit for bit. The arithmetic lives in fedcore.aggregate as plain numpy functions.

Select one in the run file: ``[federation] strategy = "fedavgm"`` or
``[federation.strategy]`` with ``name = "fedavgm"`` and its options.
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import numpy as np

from ..aggregate import apply_delta, median_of, to_float32, trimmed_mean_of
from ..checks import check_table, number
from ..container import Message
from ..errors import ConfigError
from ..registry import Registry
from .config import FederationConfig
from .gather import Gatherer, KeepAll, RunningMean
from .records import RoundPlan, Verdict

__all__ = ["Strategy", "FedAvg", "FedAvgM", "Median", "TrimmedMean", "STRATEGIES", "register_strategy", "make_strategy",
           "select_clients"]

Tensors = Dict[str, np.ndarray]
# (sender, decoded update) of every accepted update, sorted by sender.
Updates = Sequence[Tuple[str, Message]]


def select_clients(available: Sequence[str], round: int, fraction: float, min_clients: int, seed: int
                   ) -> List[str]:
    """The clients that train in `round`: max(min_clients, ceil(fraction * n))
    of the available ones, drawn with a generator seeded by (seed, round) so a
    restarted coordinator draws the same clients. Returned sorted."""
    pool = sorted(set(available))
    if len(pool) < min_clients:
        raise RuntimeError(
            f"round {round}: {len(pool)} client(s) available, at least {min_clients} needed"
        )
    count = min(len(pool), max(min_clients, int(math.ceil(fraction * len(pool) - 1e-9))))
    rng = np.random.default_rng([seed, round])
    chosen = rng.choice(len(pool), size=count, replace=False)
    return sorted(pool[i] for i in chosen)


class Strategy:
    """Base class: FedAvg's client selection, no aggregation of its own."""

    name = ""
    options: Tuple[str, ...] = ()  # the keys its table may carry besides `name`

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "Strategy":
        check_table(table, ("name",) + cls.options, f"federation.strategy ({cls.name})")
        return cls()

    def configure_round(self, number: int, available: Sequence[str], config: FederationConfig) -> RoundPlan:
        """Who trains in round `number` among `available`, and with which settings."""
        selected = select_clients(available, number, config.fraction, config.min_clients, config.seed)
        return RoundPlan(number, tuple(selected), config.train, config.update_kind, dict(config.uplink),
                         config.deadline_s, config.seed)

    def aggregate(self, plan: RoundPlan, model: Tensors, updates: Updates,
                  failures: Sequence[Verdict]) -> Optional[Tensors]:
        """The next global model from `model` and the round's accepted `updates`
        (`failures`: the rejected ones), or None to keep `model`."""
        raise NotImplementedError

    def gather(self, plan: RoundPlan, model: Tensors, spill_dir: Optional[str] = None) -> Gatherer:
        """Where this round's accepted updates wait for the close: by default all of them are
        kept (on disk beyond a bound, under `spill_dir`) for `aggregate`."""
        return KeepAll(directory=spill_dir)

    def finish(self, plan: RoundPlan, model: Tensors, gathered: Gatherer,
               failures: Sequence[Verdict]) -> Optional[Tensors]:
        """The round's close: `aggregate` over what `gather` kept."""
        assert isinstance(gathered, KeepAll)
        return self.aggregate(plan, model, gathered.updates(), failures)

    def state(self) -> Tensors:
        """Tensors to checkpoint with the model (names without the server's prefix)."""
        return {}

    def load_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        if tensors:
            raise ConfigError(f"strategy {self.name!r} keeps no state, the checkpoint has {sorted(tensors)}")


STRATEGIES: "Registry[Type[Strategy]]" = Registry("strategy", error=ConfigError, hint="federation.strategy",
                                                 plural="strategies")


def register_strategy(cls: Type[Strategy]) -> Type[Strategy]:
    """Class decorator: make `cls` selectable by its `name` in run files."""
    return STRATEGIES.register(cls.name)(cls)


def make_strategy(table: Mapping[str, Any]) -> Strategy:
    """The strategy a ``federation.strategy`` table names, its options checked."""
    return STRATEGIES.get(table.get("name")).from_options(table)


class _Streaming(Strategy):
    """A strategy over the sample-weighted mean: each update joins a running sum as it
    arrives (RunningMean); `aggregate` over a list of updates does the same, in order.
    A subclass that overrides `aggregate` gets every update kept for it instead."""

    def gather(self, plan: RoundPlan, model: Tensors, spill_dir: Optional[str] = None) -> Gatherer:
        if type(self).aggregate is not _Streaming.aggregate:
            return super().gather(plan, model, spill_dir)
        return RunningMean(model)

    def aggregate(self, plan: RoundPlan, model: Tensors, updates: Updates,
                  failures: Sequence[Verdict]) -> Optional[Tensors]:
        gathered = self.gather(plan, model)
        for sender, message in updates:
            gathered.add(sender, message)
        return self.finish(plan, model, gathered, failures)

    def finish(self, plan: RoundPlan, model: Tensors, gathered: Gatherer,
               failures: Sequence[Verdict]) -> Optional[Tensors]:
        if isinstance(gathered, RunningMean):
            return self.from_mean(plan, model, gathered.mean())
        return super().finish(plan, model, gathered, failures)

    def from_mean(self, plan: RoundPlan, model: Tensors, mean: Tensors) -> Optional[Tensors]:
        raise NotImplementedError


@register_strategy
class FedAvg(_Streaming):
    """McMahan et al. 2017: the sample-weighted mean of the updates."""

    name = "fedavg"

    def from_mean(self, plan: RoundPlan, model: Tensors, mean: Tensors) -> Optional[Tensors]:
        # Deltas were taken from the decoded broadcast; apply them to the exact model.
        return apply_delta(model, mean) if plan.update_kind == "delta" else mean


@register_strategy
class FedAvgM(_Streaming):
    """FedAvg with server momentum (Hsu et al. 2019): with d the weighted mean
    change of the round, v <- momentum * v + d and model <- model + server_lr * v.
    momentum = 0 and server_lr = 1 is FedAvg."""

    name = "fedavgm"
    options = ("momentum", "server_lr")

    def __init__(self, momentum: float = 0.9, server_lr: float = 1.0):
        self.momentum = momentum
        self.server_lr = server_lr
        self.velocity: Tensors = {}

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "FedAvgM":
        where = "federation.strategy"
        table = check_table(table, ("name",) + cls.options, where)
        return cls(number(table, "momentum", 0.9, 0.0, 0.999, where=where),
                   number(table, "server_lr", 1.0, 0.001, 100.0, where=where))

    def from_mean(self, plan: RoundPlan, model: Tensors, mean: Tensors) -> Optional[Tensors]:
        new_model = {}
        for name, weights in model.items():
            change = mean[name].astype(np.float64)
            if plan.update_kind == "weights":
                change = change - weights
            previous = self.velocity.get(name)
            velocity = change if previous is None else self.momentum * previous.astype(np.float64) + change
            # float32 state: what the checkpoint keeps is exactly what the next round uses.
            self.velocity[name] = velocity.astype(np.float32)
            new_model[name] = (weights.astype(np.float64) + self.server_lr * velocity).astype(np.float32)
        return new_model

    def state(self) -> Tensors:
        return {f"velocity/{name}": value for name, value in self.velocity.items()}

    def load_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        unknown = [n for n in tensors if not n.startswith("velocity/")]
        if unknown:
            raise ConfigError(f"strategy fedavgm: unexpected state tensors {sorted(unknown)}")
        self.velocity = {n[len("velocity/"):]: np.array(v, np.float32) for n, v in tensors.items()}



# Values of one coordinate slice a robust statistic holds at once (float64: 64 MiB).
SLICE_VALUES = 1 << 23


class _Robust(Strategy):
    """A coordinate-wise statistic of the updates, unweighted (a client cannot buy
    influence with a large num_samples), applied like FedAvg's mean. It needs every
    update's value of a coordinate, so it keeps every update (fedcore.rounds.gather.KeepAll)
    and goes through the coordinates a slice at a time: memory of a slice, not of all the
    updates stacked."""

    def statistic(self, stacked: np.ndarray) -> np.ndarray:
        """The statistic over axis 0 of one slice of coordinates (rows: the updates)."""
        raise NotImplementedError

    def aggregate(self, plan: RoundPlan, model: Tensors, updates: Updates,
                  failures: Sequence[Verdict]) -> Optional[Tensors]:
        combined = {}
        for name, base in model.items():
            values = [np.asarray(message.tensors[name]).reshape(-1) for _, message in updates]
            out = np.empty(base.size, np.float64)
            step = max(1, SLICE_VALUES // max(1, len(values)))
            for start in range(0, base.size, step):
                out[start:start + step] = self.statistic(
                    np.stack([v[start:start + step] for v in values]).astype(np.float64))
            combined[name] = out.reshape(np.shape(base))
        combined = to_float32(combined, self.name)
        return apply_delta(model, combined) if plan.update_kind == "delta" else combined


@register_strategy
class Median(_Robust):
    """Coordinate-wise median (Yin et al. 2018): robust to fewer than half bad updates."""

    name = "median"

    def statistic(self, stacked: np.ndarray) -> np.ndarray:
        return median_of(stacked)


@register_strategy
class TrimmedMean(_Robust):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drops the floor(trim * n)
    largest and smallest values of each coordinate, then averages."""

    name = "trimmed_mean"
    options = ("trim",)

    def __init__(self, trim: float = 0.1):
        self.trim = trim

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "TrimmedMean":
        table = check_table(table, ("name",) + cls.options, "federation.strategy")
        return cls(number(table, "trim", 0.1, 0.0, 0.49, where="federation.strategy"))

    def statistic(self, stacked: np.ndarray) -> np.ndarray:
        return trimmed_mean_of(stacked, self.trim)
