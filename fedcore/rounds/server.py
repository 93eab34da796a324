"""The server side of the round engine: broadcast, validation of every update,
the strategy's aggregation, and checkpoints a restarted server resumes from.
`simulate` runs the whole round loop in process, as the simulation does."""

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..compression import CompressionConfig, Compressor
from ..container import DecodeLimits, Message, decode_message, encode_message
from ..errors import ConfigError, FedCoreError, MessageError
from .client import RoundClient, TrainResult, float32_copy
from .config import FederationConfig
from .gather import Gatherer
from .records import RoundPlan, RoundResult, Verdict
from .strategy import Strategy, make_strategy

__all__ = ["RoundServer", "RoundTrainer", "simulate"]

Tensors = Dict[str, np.ndarray]
# Checkpoint tensors of the strategy's state carry this prefix (model names never start with '@').
_STATE_PREFIX = "@strategy/"
NORM_HISTORY = 20  # accepted updates whose norms set the "auto" bound
# No client's FedAvg weight exceeds this many times the median data size the round's selected
# clients announced (RoundServer.announced_samples): one lying client cannot take the average.
WEIGHT_CAP_FACTOR = 10
# Rejections a round's result keeps (the rest are counted in rejected_total): of each selected
# client, and of all the others together.
KEPT_REJECTIONS_PER_CLIENT = 5
KEPT_REJECTIONS = 20


@dataclass
class _OpenRound:
    plan: RoundPlan
    blob: bytes
    base: Tensors
    followers: int
    gathered: Gatherer  # the strategy's: a running sum, or every update (on disk beyond a bound)
    layout: Dict[str, Tuple[int, ...]] = field(default_factory=dict)  # {name: shape} every update must have
    samples: Dict[str, int] = field(default_factory=dict)  # of each accepted sender
    metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)
    rejected: List[Verdict] = field(default_factory=list)  # a bounded sample: see _reject
    rejected_total: int = 0
    weight_cap: Optional[int] = None  # the most samples one update may weigh, when clients announced sizes


def _sum_of_squares(values: np.ndarray) -> float:
    """Of a flat array, in float64 (one BLAS dot product, no squared copy)."""
    wide = np.asarray(values, dtype=np.float64)
    return float(np.dot(wide, wide))


class RoundServer:
    """The server side of the rounds: broadcast, validation of every update, the
    strategy's selection and aggregation (config.strategy, FedAvg by default), and
    checkpoints a restarted server resumes from."""

    def __init__(self, initial: Mapping[str, np.ndarray], config: FederationConfig,
                 limits: DecodeLimits = DecodeLimits(), completed_rounds: int = 0, name: str = "server",
                 strategy: Optional[Strategy] = None, spill_dir: Optional[str] = None):
        if not initial:
            raise ConfigError("RoundServer: the initial model has no tensors")
        self.config = config
        self.strategy = strategy if strategy is not None else make_strategy(config.strategy)
        self.limits = limits
        self.name = name
        self.global_state = float32_copy(initial)
        self.completed_rounds = completed_rounds
        downlink = CompressionConfig.from_dict(config.downlink)
        self._downlink = Compressor(downlink, limits)
        # A whole model in delta mode: the wire codec only; pruning/sparsifying
        # are for the changes, not for the first model.
        self._full = self._downlink if config.broadcast == "weights" else Compressor(
            CompressionConfig(wire=downlink.wire), limits)
        self._open: Optional[_OpenRound] = None
        self._client_view: Optional[Tensors] = None
        self.update_norms: List[float] = []  # of the last accepted updates (the "auto" norm bound)
        # Data sizes the clients announced (their presence): an update may claim no more samples than
        # its sender announced, and weighs at most WEIGHT_CAP_FACTOR x the selected clients' median.
        self.announced_samples: Dict[str, int] = {}
        self._norm_of: Optional[Tensors] = None  # the model whose norm _norm is
        self._norm = 0.0
        self.spill_dir = spill_dir  # where a strategy that keeps every update puts them beyond its bound

    @property
    def round_open(self) -> bool:
        return self._open is not None

    @property
    def plan(self) -> RoundPlan:
        return self._require_open().plan

    @property
    def broadcast(self) -> bytes:
        """The encoded global model of the open round, as every selected client receives it."""
        return self._require_open().blob

    def _require_open(self) -> _OpenRound:
        if self._open is None:
            raise RuntimeError("no round is open: call open_round() first")
        return self._open

    def open_round(self, available: Sequence[str]) -> RoundPlan:
        """Select the round's clients among `available` and encode the broadcast."""
        if self._open is not None:
            raise RuntimeError(f"round {self._open.plan.round} is still open: close it first")
        config = self.config
        number = self.completed_rounds + 1
        plan = self.strategy.configure_round(number, available, config)
        if config.broadcast == "delta" and self._client_view is not None:
            change = {n: self.global_state[n] - self._client_view[n] for n in self.global_state}
            extra = {"base_round": self.completed_rounds}
            blob, _ = self._downlink.compress(change, round=number, sender=self.name, kind="delta", extra=extra)
            decoded = decode_message(blob, self.limits).tensors
            # What the clients will hold; what the codec dropped stays in global - view.
            view = {n: self._client_view[n] + decoded[n] for n in decoded}
        else:
            blob, _ = self._full.compress(self.global_state, round=number, sender=self.name, kind="weights")
            view = decode_message(blob, self.limits).tensors
        self._client_view = view
        # Clients compute deltas against what they decode, not against our exact model.
        gathered = self.strategy.gather(plan, self.global_state, self.spill_dir)
        layout = {name: tuple(value.shape) for name, value in view.items()}
        self._open = _OpenRound(plan, blob, view, len(set(available)), gathered, layout)
        sizes = [self.announced_samples[c] for c in plan.selected if c in self.announced_samples]
        if sizes:
            self._open.weight_cap = int(WEIGHT_CAP_FACTOR * statistics.median(sizes))
        return plan

    def full_model(self) -> bytes:
        """The model the clients hold now, whole and lossless: for a client that
        joins late or missed a delta broadcast."""
        if self._client_view is None:
            raise RuntimeError("no model has been broadcast yet")
        message = Message(self._client_view, self.completed_rounds + int(self._open is not None),
                          self.name, 0, "weights", {"full": True})
        return encode_message(message)[0]

    def submit(self, blob: bytes, sender: Optional[str] = None) -> Verdict:
        """Validate one update; `sender` is who the transport says sent it."""
        nbytes = len(blob) if isinstance(blob, (bytes, bytearray, memoryview)) else 0
        who = sender or "?"
        current = self._open
        if current is None:
            return Verdict("late", who, 0, nbytes, "no round is open")
        number = current.plan.round
        # What the transport vouches for is checked before any decoding: bytes from a client
        # that may not send now cost nothing to refuse, whatever they hold.
        if sender is not None and sender not in current.plan.selected:
            return self._reject(current, who, number, nbytes, f"{who!r} was not selected for round {number}")
        if sender is not None and sender in current.samples:
            return Verdict("duplicate", who, number, nbytes, "an update from this client was already accepted")
        try:  # a header that does not describe our model is refused before its payload is decoded
            message = decode_message(blob, self.limits, layout=current.layout)
        except MessageError as error:
            return self._reject(current, who, current.plan.round, nbytes, f"undecodable: {error}")
        who = message.sender if sender is None else sender
        if message.round < number:
            return Verdict("late", who, message.round, nbytes, f"round {message.round} is closed; round {number} is open")
        if message.round > number:
            return self._reject(current, who, message.round, nbytes, f"round {message.round} has not started")
        if sender is not None and message.sender != sender:
            return self._reject(current, who, number, nbytes,
                                f"message says sender {message.sender!r} but arrived from {sender!r}")
        if who not in current.plan.selected:
            return self._reject(current, who, number, nbytes, f"{who!r} was not selected for round {number}")
        if who in current.samples:
            return Verdict("duplicate", who, number, nbytes, "an update from this client was already accepted")
        problem, norm = self._problem(message, current)
        if problem:
            return self._reject(current, who, number, nbytes, problem)
        self.update_norms = (self.update_norms + [norm])[-NORM_HISTORY:]
        note = ""
        if current.weight_cap is not None and message.num_samples > current.weight_cap:
            note = (f"weight capped at {current.weight_cap} samples (claimed {message.num_samples}; "
                    f"{WEIGHT_CAP_FACTOR} x the median size the selected clients announced)")
            message.num_samples = current.weight_cap
        current.gathered.add(who, message)  # a running sum drops it here: memory does not grow with clients
        current.samples[who] = message.num_samples
        current.metrics[who] = _metrics(message)
        current.sizes[who] = nbytes
        return Verdict("accepted", who, number, nbytes, note)

    def _reject(self, current: _OpenRound, who: str, number: int, nbytes: int, reason: str) -> Verdict:
        verdict = Verdict("rejected", who, number, nbytes, reason)
        current.rejected_total += 1
        # Kept: a selected client's first few (the round's record says why it failed), and the first
        # few of everyone else together; a flood of them is counted, not kept.
        if who in current.plan.selected:
            kept = sum(v.sender == who for v in current.rejected) < KEPT_REJECTIONS_PER_CLIENT
        else:
            kept = sum(v.sender not in current.plan.selected for v in current.rejected) < KEPT_REJECTIONS
        if kept:
            current.rejected.append(verdict)
        return verdict

    def _problem(self, message: Message, current: _OpenRound) -> Tuple[Optional[str], float]:
        """(why this decoded update cannot count, or None; the L2 norm of its change)."""
        if message.kind != current.plan.update_kind:
            return f"kind {message.kind!r}, expected {current.plan.update_kind!r}", 0.0
        if message.num_samples < 1:
            return f"num_samples must be >= 1, got {message.num_samples}", 0.0
        announced = self.announced_samples.get(message.sender)
        if announced is not None and message.num_samples > announced:
            return (f"num_samples {message.num_samples} exceeds the {announced} samples "
                    f"{message.sender!r} announced"), 0.0
        squared = 0.0  # names and shapes: decode_message checked them against current.layout
        for name, base in current.base.items():
            value = message.tensors[name]
            if message.kind == "delta":  # a sparse delta is zero off its support: only its values count
                positions = message.support.get(name)
                change = value.astype(np.float64).ravel() if positions is None else value.ravel()[positions]
            else:
                change = value.astype(np.float64).ravel() - base.ravel()
            # One pass for both checks: a NaN or inf makes the float64 sum of squares NaN or
            # inf, and finite float32 values cannot overflow it (at most 1.2e77 each).
            tensor_squared = _sum_of_squares(change)
            if not math.isfinite(tensor_squared):
                return f"{name}: non-finite values", 0.0
            squared += tensor_squared
        norm = math.sqrt(squared)
        bound, why = self.norm_bound()
        if bound and not norm <= bound:  # `not <=`: an infinite norm (3e38 values) is refused too
            return f"update norm {norm:.4g} exceeds {why}", norm
        return None, norm

    def norm_bound(self) -> Tuple[float, str]:
        """(the largest L2 norm an update may have now, or 0 for none; where it comes from).
        max_update_norm = "auto": update_norm_factor times the median norm of the last
        accepted updates (robust to one outlier), or, before three were accepted, times
        the model's own norm (at least 1): an update that moves the model by ten times
        its size is not training."""
        setting = self.config.max_update_norm
        if setting != "auto":
            return float(setting), f"max_update_norm {float(setting):.4g}"
        factor = self.config.update_norm_factor
        if len(self.update_norms) >= 3:
            bound = factor * statistics.median(self.update_norms)
            return bound, (f"the automatic bound {bound:.4g} ({factor:g} x the median norm of the last "
                           f"{len(self.update_norms)} accepted updates; set federation.max_update_norm)")
        size = self._model_norm()
        bound = factor * max(size, 1.0)
        return bound, (f"the automatic bound {bound:.4g} ({factor:g} x the model's norm, at least {factor:g}; "
                       "set federation.max_update_norm)")

    def _model_norm(self) -> float:
        """The L2 norm of the global model (kept until the model changes)."""
        if self._norm_of is not self.global_state:
            self._norm = math.sqrt(sum(_sum_of_squares(v.ravel()) for v in self.global_state.values()))
            self._norm_of = self.global_state
        return self._norm

    def close_round(self) -> RoundResult:
        current = self._require_open()
        plan = current.plan
        senders = sorted(current.samples)
        new_model = None
        try:
            if len(senders) >= self.config.min_updates:
                new_model = self.strategy.finish(plan, self.global_state, current.gathered, list(current.rejected))
        finally:
            current.gathered.close()
        aggregated = new_model is not None
        if new_model is not None:
            self.global_state = float32_copy(new_model)
        result = RoundResult(
            round=plan.round,
            selected=list(plan.selected),
            accepted=senders,
            rejected=list(current.rejected),
            missing=[c for c in plan.selected if c not in current.samples],
            aggregated=aggregated,
            bytes_up=sum(current.sizes.values()),
            # Weights go to the selected clients; a delta must reach everyone who follows.
            bytes_down=len(current.blob) * (current.followers if self.config.broadcast == "delta" else len(plan.selected)),
            num_samples=sum(current.samples[s] for s in senders),
            client_metrics={s: current.metrics[s] for s in senders},
            rejected_total=current.rejected_total,
        )
        self.completed_rounds = plan.round
        self._open = None
        return result

    def checkpoint(self) -> bytes:
        """The state a restarted server resumes from, in the lossless container."""
        extra = {"fingerprint": self.config.fingerprint(), "update_norms": list(self.update_norms)}
        tensors = dict(self.global_state)
        tensors.update({_STATE_PREFIX + n: v for n, v in self.strategy.state().items()})
        message = Message(tensors, self.completed_rounds, self.name, 0, "checkpoint", extra)
        return encode_message(message)[0]

    @classmethod
    def restore(cls, blob: bytes, config: FederationConfig, limits: DecodeLimits = DecodeLimits(),
                name: str = "server") -> "RoundServer":
        message = decode_message(blob, limits)
        if message.kind != "checkpoint":
            raise MessageError(f"not a checkpoint: kind {message.kind!r}")
        written_for = message.extra.get("fingerprint")
        if written_for != config.fingerprint():
            raise ConfigError(
                f"the checkpoint was written for another configuration (fingerprint {written_for!r}, "
                f"this run {config.fingerprint()!r}); use a new run directory or the original config"
            )
        model = {n: v for n, v in message.tensors.items() if not n.startswith(_STATE_PREFIX)}
        server = cls(model, config, limits, message.round, name)
        server.strategy.load_state({n[len(_STATE_PREFIX):]: v for n, v in message.tensors.items()
                                    if n.startswith(_STATE_PREFIX)})
        norms = message.extra.get("update_norms", [])
        if not isinstance(norms, list) or len(norms) > NORM_HISTORY or not all(
                isinstance(v, float) and math.isfinite(v) and v >= 0 for v in norms):
            raise MessageError("checkpoint: update_norms must be a list of at most "
                               f"{NORM_HISTORY} finite norms")
        server.update_norms = norms
        return server


def _metrics(message: Message) -> Dict[str, float]:
    metrics = message.extra.get("metrics", {})
    if not isinstance(metrics, dict):
        return {}
    # A client's metrics are for the logs: keep the plain finite numbers, drop the rest
    # (a 400-digit integer must not raise OverflowError when the round closes).
    return {k: float(v) for k, v in metrics.items()
            if isinstance(k, str) and not isinstance(v, bool)
            and ((isinstance(v, int) and abs(v) < 2**53) or (isinstance(v, float) and math.isfinite(v)))}


# Trains a round's selected clients together: (plan, {client id: client}) -> {client id: result}.
RoundTrainer = Callable[[RoundPlan, Mapping[str, RoundClient]], Mapping[str, TrainResult]]


def simulate(server: RoundServer, clients: Mapping[str, RoundClient], rounds: int,
             on_round: Optional[Callable[[RoundResult], None]] = None,
             train_round: Optional[RoundTrainer] = None) -> List[RoundResult]:
    """Run `rounds` rounds in process: the same engine as over MQTT, with every
    byte counted from the encoded messages. Every client follows every
    broadcast, as MQTT subscribers do. `train_round`, when given, trains the
    selected clients of a round together (each from `RoundClient.train_input`);
    each client then encodes its own update as it would have."""
    results = []
    for _ in range(rounds):
        plan = server.open_round(list(clients))
        blob = server.broadcast
        for client_id in sorted(clients):
            if client_id in plan.selected or server.config.broadcast == "delta":
                clients[client_id].follow(blob)
        trained = train_round(plan, {c: clients[c] for c in plan.selected}) if train_round else {}
        for client_id in plan.selected:
            verdict = server.submit(clients[client_id].run_round(plan, trained=trained.get(client_id)),
                                    sender=client_id)
            if not verdict.accepted:
                raise FedCoreError(f"simulated client {client_id}: update {verdict.status}: {verdict.reason}")
            if server.config.broadcast == "weights":
                # Its next round brings a whole model: a copy held till then would only add up
                # (a thousand simulated clients, a thousand models).
                clients[client_id].forget_model()
        result = server.close_round()
        if on_round is not None:
            on_round(result)
        results.append(result)
    return results
