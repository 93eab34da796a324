"""The federated round engine, shared by the in-process simulation and the MQTT
coordinator: whatever the transport, a round is

    server.open_round(available)  -> RoundPlan (who trains, how, with which codecs)
    server.broadcast              -> the encoded global model (downlink bytes)
    client.run_round(plan, blob)  -> the encoded update (uplink bytes)
    server.submit(blob, sender)   -> Verdict (accepted, or why not)
    server.close_round()          -> RoundResult (the new model, or "no new model")

The server keeps the global model in full precision; clients see the decoded
broadcast and, for ``update_kind = "delta"``, send their change relative to
it. With ``broadcast = "delta"`` the server sends, after the first round, only
the change between its model and what the clients hold (so the downlink can be
sparsified too, its error carried to the next round); every client, selected
or not, follows each broadcast, and one that missed some asks for the full
model (``RoundServer.full_model``). Failures are data: a rejected, late or duplicate update is a Verdict, and a
round without enough updates closes with the previous model kept.
"""

import hashlib
import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .aggregate import aggregate
from .checks import is_int
from .compression import CompressionConfig, Compressor
from .container import DecodeLimits, Message, decode_message, encode_message
from .errors import ConfigError, FedCoreError, MessageError

__all__ = [
    "UPDATE_KINDS",
    "TrainConfig",
    "FederationConfig",
    "RoundPlan",
    "Verdict",
    "RoundResult",
    "RoundServer",
    "RoundClient",
    "OutOfSync",
    "select_clients",
    "client_seed",
    "simulate",
]

UPDATE_KINDS = ("delta", "weights")
Tensors = Dict[str, np.ndarray]


def _number(settings: Mapping[str, Any], key: str, default: Any, low: float, high: float = math.inf,
            integer: bool = False, where: str = "") -> Any:
    """Read settings[key] (or the default), checking type and range."""
    value = settings.get(key, default)
    label = f"{where}.{key}" if where else key
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not is_int(value)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{label} must be {kind}, got {value!r}")
    if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
        raise ConfigError(f"{label} must lie in [{low}, {high}], got {value!r}")
    return int(value) if integer else float(value)


def _check_keys(settings: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    if not isinstance(settings, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ConfigError(f"[{where}]: unknown key(s) {unknown}; expected some of {sorted(allowed)}")


@dataclass(frozen=True)
class TrainConfig:
    """Local training of one client in one round (SGD with momentum)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], where: str = "federation.train") -> "TrainConfig":
        _check_keys(settings, [f.name for f in cls.__dataclass_fields__.values()], where)
        return cls(
            epochs=_number(settings, "epochs", cls.epochs, 1, 10_000, True, where),
            batch_size=_number(settings, "batch_size", cls.batch_size, 1, 1 << 20, True, where),
            lr=_number(settings, "lr", cls.lr, 0.0, 100.0, where=where),
            momentum=_number(settings, "momentum", cls.momentum, 0.0, 1.0, where=where),
            weight_decay=_number(settings, "weight_decay", cls.weight_decay, 0.0, 1.0, where=where),
        )

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FederationConfig:
    """How rounds run: the ``[federation]`` table of a run's TOML file, with
    the ``[compression.uplink]`` / ``[compression.downlink]`` codec settings.

    rounds: rounds to run; fraction, min_clients: clients selected per round
    (at least min_clients, at most all available); min_updates: accepted
    updates needed to aggregate; deadline_s: how long a networked round waits
    for updates; update_kind: "delta" (change from the broadcast model) or
    "weights"; max_update_norm: L2 bound on an update's change, 0 for none;
    seed: drives client selection and each client's data order.
    """

    rounds: int = 10
    fraction: float = 1.0
    min_clients: int = 1
    min_updates: int = 1
    deadline_s: float = 60.0
    update_kind: str = "delta"
    max_update_norm: float = 0.0
    broadcast: str = "weights"
    seed: int = 0
    train: TrainConfig = TrainConfig()
    uplink: Mapping[str, Any] = field(default_factory=dict)
    downlink: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.update_kind not in UPDATE_KINDS:
            raise ConfigError(f"update_kind must be one of {list(UPDATE_KINDS)}, got {self.update_kind!r}")
        if self.broadcast not in UPDATE_KINDS:
            raise ConfigError(f"broadcast must be one of {list(UPDATE_KINDS)}, got {self.broadcast!r}")
        if self.min_updates > self.min_clients:
            raise ConfigError(
                f"min_updates ({self.min_updates}) cannot exceed min_clients ({self.min_clients}): "
                "a round could never aggregate"
            )
        # Parse now so a bad codec setting fails at start-up, not in round 7.
        CompressionConfig.from_dict(self.uplink)
        down = CompressionConfig.from_dict(self.downlink)
        if down.error_feedback:
            raise ConfigError(
                "compression.downlink.error_feedback is not supported: the server keeps the "
                "full-precision model, so broadcast error never accumulates"
            )

    @classmethod
    def from_dict(cls, federation: Mapping[str, Any], compression: Optional[Mapping[str, Any]] = None
                  ) -> "FederationConfig":
        """Build from the ``[federation]`` and ``[compression]`` tables."""
        keys = ["rounds", "fraction", "min_clients", "min_updates", "deadline_s", "update_kind",
                "max_update_norm", "broadcast", "seed", "train"]
        _check_keys(federation, keys, "federation")
        compression = dict(compression or {})
        _check_keys(compression, ["uplink", "downlink"], "compression")
        kind = federation.get("update_kind", cls.update_kind)
        broadcast = federation.get("broadcast", cls.broadcast)
        for key, value in (("update_kind", kind), ("broadcast", broadcast)):
            if not isinstance(value, str):
                raise ConfigError(f"federation.{key} must be a string, got {value!r}")
        return cls(
            rounds=_number(federation, "rounds", cls.rounds, 1, 1_000_000, True, "federation"),
            fraction=_number(federation, "fraction", cls.fraction, 0.0, 1.0, where="federation"),
            min_clients=_number(federation, "min_clients", cls.min_clients, 1, 1 << 20, True, "federation"),
            min_updates=_number(federation, "min_updates", cls.min_updates, 1, 1 << 20, True, "federation"),
            deadline_s=_number(federation, "deadline_s", cls.deadline_s, 0.001, 86_400.0, where="federation"),
            update_kind=kind,
            max_update_norm=_number(federation, "max_update_norm", 0.0, 0.0, where="federation"),
            broadcast=broadcast,
            seed=_number(federation, "seed", cls.seed, 0, 2**32 - 1, True, "federation"),
            train=TrainConfig.from_dict(federation.get("train", {})),
            uplink=dict(compression.get("uplink", {})),
            downlink=dict(compression.get("downlink", {})),
        )

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["uplink"], out["downlink"] = dict(self.uplink), dict(self.downlink)
        return out

    def fingerprint(self) -> str:
        """A short hash of the settings that shape the model: a checkpoint only
        resumes the same run (raising `rounds` or the deadline extends it)."""
        settings = {k: v for k, v in self.to_dict().items() if k not in ("rounds", "deadline_s")}
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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


def client_seed(seed: int, client_id: str, round: int) -> int:
    """The seed of one client's local training in one round: the same for the
    same run wherever the client runs (simulation or a board)."""
    mixed = np.random.SeedSequence([seed, zlib.crc32(client_id.encode("utf-8")), round])
    return int(mixed.generate_state(1)[0])


@dataclass(frozen=True)
class RoundPlan:
    """What the server announces: who trains in this round and how."""

    round: int
    selected: Tuple[str, ...]
    train: TrainConfig
    update_kind: str
    uplink: Mapping[str, Any]
    deadline_s: float
    seed: int

    def to_dict(self) -> Dict[str, Any]:
        return {
            "round": self.round,
            "selected": list(self.selected),
            "train": self.train.to_dict(),
            "update_kind": self.update_kind,
            "uplink": dict(self.uplink),
            "deadline_s": self.deadline_s,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoundPlan":
        """Parse an announcement received from the network; every field is checked."""
        _check_keys(data, ["round", "selected", "train", "update_kind", "uplink", "deadline_s", "seed"],
                    "round plan")
        missing = sorted({"round", "selected", "train", "update_kind", "uplink"} - set(data))
        if missing:
            raise ConfigError(f"round plan: missing field(s) {missing}")
        selected = data["selected"]
        if not isinstance(selected, list) or not all(isinstance(s, str) and s for s in selected):
            raise ConfigError(f"round plan: selected must be a list of client ids, got {selected!r}")
        kind = data["update_kind"]
        if kind not in UPDATE_KINDS:
            raise ConfigError(f"round plan: update_kind must be one of {list(UPDATE_KINDS)}, got {kind!r}")
        uplink = data["uplink"]
        if not isinstance(uplink, Mapping):
            raise ConfigError(f"round plan: uplink must be a table, got {uplink!r}")
        CompressionConfig.from_dict(uplink)
        return cls(
            round=_number(data, "round", 0, 1, 2**31 - 1, True, "round plan"),
            selected=tuple(selected),
            train=TrainConfig.from_dict(data["train"], "round plan.train"),
            update_kind=kind,
            uplink=dict(uplink),
            deadline_s=_number(data, "deadline_s", 60.0, 0.0, 86_400.0, where="round plan"),
            seed=_number(data, "seed", 0, 0, 2**32 - 1, True, "round plan"),
        )


@dataclass(frozen=True)
class Verdict:
    """What the server made of one received update.

    status: "accepted"; "duplicate" (a second update from a client that already
    has one in this round: ignored, the first counts); "late" (for a round that
    is already closed); "rejected" (reason says why).
    """

    status: str
    sender: str
    round: int
    nbytes: int
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


@dataclass
class RoundResult:
    """One closed round. aggregated is False when too few updates arrived: the
    global model is then unchanged."""

    round: int
    selected: List[str]
    accepted: List[str]
    rejected: List[Verdict]
    missing: List[str]
    aggregated: bool
    bytes_up: int
    bytes_down: int
    num_samples: int
    client_metrics: Dict[str, Dict[str, float]]

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["rejected"] = [asdict(v) for v in self.rejected]
        return out


@dataclass
class _OpenRound:
    plan: RoundPlan
    blob: bytes
    base: Tensors
    followers: int
    updates: Dict[str, Message] = field(default_factory=dict)
    sizes: Dict[str, int] = field(default_factory=dict)
    rejected: List[Verdict] = field(default_factory=list)


def _copy(tensors: Mapping[str, np.ndarray]) -> Tensors:
    return {name: np.array(value, dtype=np.float32, copy=True) for name, value in tensors.items()}


class RoundServer:
    """The server side of the rounds: selection, broadcast, validation of every
    update, FedAvg, and checkpoints a restarted server resumes from."""

    def __init__(self, initial: Mapping[str, np.ndarray], config: FederationConfig,
                 limits: DecodeLimits = DecodeLimits(), completed_rounds: int = 0, name: str = "server"):
        if not initial:
            raise ConfigError("RoundServer: the initial model has no tensors")
        self.config = config
        self.limits = limits
        self.name = name
        self.global_state = _copy(initial)
        self.completed_rounds = completed_rounds
        downlink = CompressionConfig.from_dict(config.downlink)
        self._downlink = Compressor(downlink, limits)
        # A whole model in delta mode: the wire codec only; pruning/sparsifying
        # are for the changes, not for the first model.
        self._full = self._downlink if config.broadcast == "weights" else Compressor(
            CompressionConfig(wire=downlink.wire), limits)
        self._open: Optional[_OpenRound] = None
        self._client_view: Optional[Tensors] = None

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
        selected = select_clients(available, number, config.fraction, config.min_clients, config.seed)
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
        plan = RoundPlan(number, tuple(selected), config.train, config.update_kind, dict(config.uplink),
                         config.deadline_s, config.seed)
        # Clients compute deltas against what they decode, not against our exact model.
        self._open = _OpenRound(plan, blob, view, len(set(available)))
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
        try:
            message = decode_message(blob, self.limits)
        except MessageError as error:
            return self._reject(current, who, current.plan.round, nbytes, f"undecodable: {error}")
        who = message.sender if sender is None else sender
        number = current.plan.round
        if message.round < number:
            return Verdict("late", who, message.round, nbytes, f"round {message.round} is closed; round {number} is open")
        if message.round > number:
            return self._reject(current, who, message.round, nbytes, f"round {message.round} has not started")
        if sender is not None and message.sender != sender:
            return self._reject(current, who, number, nbytes,
                                f"message says sender {message.sender!r} but arrived from {sender!r}")
        if who not in current.plan.selected:
            return self._reject(current, who, number, nbytes, f"{who!r} was not selected for round {number}")
        if who in current.updates:
            return Verdict("duplicate", who, number, nbytes, "an update from this client was already accepted")
        problem = self._problem(message, current)
        if problem:
            return self._reject(current, who, number, nbytes, problem)
        current.updates[who] = message
        current.sizes[who] = nbytes
        return Verdict("accepted", who, number, nbytes)

    def _reject(self, current: _OpenRound, who: str, number: int, nbytes: int, reason: str) -> Verdict:
        verdict = Verdict("rejected", who, number, nbytes, reason)
        current.rejected.append(verdict)
        return verdict

    def _problem(self, message: Message, current: _OpenRound) -> str:
        """Why this decoded update cannot count, or "" if it can."""
        if message.kind != current.plan.update_kind:
            return f"kind {message.kind!r}, expected {current.plan.update_kind!r}"
        if message.num_samples < 1:
            return f"num_samples must be >= 1, got {message.num_samples}"
        expected, got = set(current.base), set(message.tensors)
        if expected != got:
            return f"tensor names differ from the model: missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"
        squared = 0.0
        for name, base in current.base.items():
            value = message.tensors[name]
            if value.shape != base.shape:
                return f"{name}: shape {list(value.shape)}, model has {list(base.shape)}"
            if not np.all(np.isfinite(value)):
                return f"{name}: non-finite values"
            change = value if message.kind == "delta" else value.astype(np.float64) - base
            squared += float(np.sum(np.square(change, dtype=np.float64)))
        bound = self.config.max_update_norm
        if bound > 0 and math.sqrt(squared) > bound:
            return f"update norm {math.sqrt(squared):.4g} exceeds max_update_norm {bound:.4g}"
        return ""

    def close_round(self) -> RoundResult:
        current = self._require_open()
        plan = current.plan
        senders = sorted(current.updates)  # a fixed order: arrival order must not change the sums
        aggregated = len(senders) >= self.config.min_updates
        if aggregated:
            updates = [(current.updates[s].tensors, current.updates[s].num_samples) for s in senders]
            if plan.update_kind == "delta":
                # Deltas were taken from the decoded broadcast; apply them to the exact model.
                self.global_state = aggregate(updates, "delta", self.global_state)
            else:
                self.global_state = aggregate(updates, "weights")
        result = RoundResult(
            round=plan.round,
            selected=list(plan.selected),
            accepted=senders,
            rejected=list(current.rejected),
            missing=[c for c in plan.selected if c not in current.updates],
            aggregated=aggregated,
            bytes_up=sum(current.sizes.values()),
            # Weights go to the selected clients; a delta must reach everyone who follows.
            bytes_down=len(current.blob) * (current.followers if self.config.broadcast == "delta" else len(plan.selected)),
            num_samples=sum(current.updates[s].num_samples for s in senders),
            client_metrics={s: _metrics(current.updates[s]) for s in senders},
        )
        self.completed_rounds = plan.round
        self._open = None
        return result

    def checkpoint(self) -> bytes:
        """The state a restarted server resumes from, in the lossless container."""
        extra = {"fingerprint": self.config.fingerprint()}
        message = Message(self.global_state, self.completed_rounds, self.name, 0, "checkpoint", extra)
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
        return cls(message.tensors, config, limits, message.round, name)


def _metrics(message: Message) -> Dict[str, float]:
    metrics = message.extra.get("metrics", {})
    if not isinstance(metrics, dict):
        return {}
    return {k: float(v) for k, v in metrics.items()
            if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)}


# A trainer takes the global model, the round's training settings and a seed,
# and returns (new model, number of samples it trained on, metrics).
Trainer = Callable[[Tensors, TrainConfig, int], Tuple[Tensors, int, Dict[str, float]]]


class OutOfSync(FedCoreError):
    """A delta broadcast arrived for a model this client does not hold: it
    must load the full model (RoundServer.full_model) first."""


class RoundClient:
    """The client side: follow the broadcasts, train, encode the update.
    Keeps the model it was sent and its compressor (so its error-feedback
    residual) between rounds."""

    def __init__(self, client_id: str, trainer: Trainer, limits: DecodeLimits = DecodeLimits()):
        if not isinstance(client_id, str) or not client_id:
            raise ConfigError(f"client_id must be a non-empty string, got {client_id!r}")
        self.client_id = client_id
        self.trainer = trainer
        self.limits = limits
        self.model: Optional[Tensors] = None
        self.model_round = -1
        self._compressor: Optional[Compressor] = None
        self._uplink_key = ""

    def _compressor_for(self, uplink: Mapping[str, Any]) -> Compressor:
        key = json.dumps(uplink, sort_keys=True, default=str)
        if self._compressor is None or key != self._uplink_key:
            # A new codec config starts a new residual: the old one meant other codecs.
            self._compressor = Compressor(CompressionConfig.from_dict(uplink), self.limits)
            self._uplink_key = key
        return self._compressor

    def follow(self, model_blob: bytes) -> int:
        """Apply a broadcast (whole weights, or a delta on the model we hold);
        returns its round. Raises OutOfSync for a delta we cannot apply."""
        message = decode_message(model_blob, self.limits)
        if message.kind == "weights":
            self.model = {n: np.array(a, np.float32) for n, a in message.tensors.items()}
        elif message.kind == "delta":
            base_round = message.extra.get("base_round")
            if self.model is None or base_round != self.model_round:
                raise OutOfSync(
                    f"{self.client_id}: broadcast of round {message.round} is a delta on round "
                    f"{base_round!r}, this client holds round {self.model_round}"
                )
            if set(message.tensors) != set(self.model) or any(
                message.tensors[n].shape != self.model[n].shape for n in self.model
            ):
                raise MessageError(f"round {message.round}: delta broadcast does not match the model held")
            self.model = {n: self.model[n] + message.tensors[n] for n in self.model}
        else:
            raise MessageError(f"broadcast of kind {message.kind!r}; expected 'weights' or 'delta'")
        self.model_round = message.round
        return message.round

    def run_round(self, plan: RoundPlan, model_blob: Optional[bytes] = None) -> bytes:
        """Train on the round's model and return the encoded update. Pass the
        broadcast here unless it was already applied with follow()."""
        if self.client_id not in plan.selected:
            raise RuntimeError(f"{self.client_id!r} is not selected for round {plan.round}")
        if model_blob is not None:
            self.follow(model_blob)
        if self.model is None or self.model_round != plan.round:
            raise OutOfSync(f"{self.client_id}: holds the model of round {self.model_round}, round {plan.round} needs its own")
        base = self.model
        trained, num_samples, metrics = self.trainer(_copy(base), plan.train,
                                                     client_seed(plan.seed, self.client_id, plan.round))
        if set(trained) != set(base):
            raise FedCoreError(f"trainer returned tensors {sorted(trained)}, model has {sorted(base)}")
        if plan.update_kind == "delta":
            update = {n: np.asarray(trained[n], np.float32) - base[n] for n in base}
        else:
            update = {n: np.asarray(trained[n], np.float32) for n in base}
        extra = {"metrics": {k: float(v) for k, v in metrics.items()}}
        blob, _ = self._compressor_for(plan.uplink).compress(
            update, round=plan.round, sender=self.client_id, num_samples=int(num_samples),
            kind=plan.update_kind, extra=extra,
        )
        return blob


def simulate(server: RoundServer, clients: Mapping[str, RoundClient], rounds: int,
             on_round: Optional[Callable[[RoundResult], None]] = None) -> List[RoundResult]:
    """Run `rounds` rounds in process: the same engine as over MQTT, with every
    byte counted from the encoded messages. Every client follows every
    broadcast, as MQTT subscribers do."""
    results = []
    for _ in range(rounds):
        plan = server.open_round(list(clients))
        blob = server.broadcast
        for client_id in sorted(clients):
            if client_id in plan.selected or server.config.broadcast == "delta":
                clients[client_id].follow(blob)
        for client_id in plan.selected:
            verdict = server.submit(clients[client_id].run_round(plan), sender=client_id)
            if not verdict.accepted:
                raise FedCoreError(f"simulated client {client_id}: update {verdict.status}: {verdict.reason}")
        result = server.close_round()
        if on_round is not None:
            on_round(result)
        results.append(result)
    return results
