"""How rounds run: the ``[federation]`` table of a run file (with its
``train`` and ``strategy`` sub-tables) and the ``[compression.uplink|downlink]``
codec settings, parsed and checked once at start-up."""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

from ..checks import boolean, check_table, number
from ..compression import CompressionConfig
from ..errors import ConfigError

__all__ = ["UPDATE_KINDS", "TrainConfig", "FederationConfig"]

UPDATE_KINDS = ("delta", "weights")


@dataclass(frozen=True)
class TrainConfig:
    """Local training of one client in one round (SGD with momentum, PyTorch's update;
    nesterov: Nesterov momentum, as the FLoCoRA authors' clients use)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], where: str = "federation.train") -> "TrainConfig":
        settings = check_table(settings, list(cls.__dataclass_fields__), where)
        return cls(
            epochs=number(settings, "epochs", cls.epochs, 1, 10_000, True, where),
            batch_size=number(settings, "batch_size", cls.batch_size, 1, 1 << 20, True, where),
            lr=number(settings, "lr", cls.lr, 0.0, 100.0, where=where),
            momentum=number(settings, "momentum", cls.momentum, 0.0, 1.0, where=where),
            weight_decay=number(settings, "weight_decay", cls.weight_decay, 0.0, 1.0, where=where),
            nesterov=boolean(settings, "nesterov", False, where),
        )

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        if not self.nesterov:
            del out["nesterov"]  # plans and fingerprints of plain-momentum runs stay as they were
        return out


@dataclass(frozen=True)
class FederationConfig:
    """How rounds run: the ``[federation]`` table of a run's TOML file, with
    the ``[compression.uplink]`` / ``[compression.downlink]`` codec settings.

    rounds: rounds to run; fraction, min_clients: clients selected per round
    (at least min_clients, at most all available); min_updates: accepted
    updates needed to aggregate; deadline_s: how long a networked round waits
    for updates; update_kind: "delta" (change from the broadcast model) or
    "weights"; max_update_norm: L2 bound on an update's change: "auto" (default:
    update_norm_factor times the median of recent accepted norms, see
    RoundServer.norm_bound), a number, or 0 for none;
    seed: drives client selection and each client's data order; strategy: how
    the server selects and combines (``{name = "fedavg"}`` by default, see
    fedcore.rounds.strategy).
    """

    rounds: int = 10
    fraction: float = 1.0
    min_clients: int = 1
    min_updates: int = 1
    deadline_s: float = 60.0
    update_kind: str = "delta"
    max_update_norm: Union[float, str] = "auto"
    update_norm_factor: float = 10.0
    broadcast: str = "weights"
    seed: int = 0
    train: TrainConfig = TrainConfig()
    uplink: Mapping[str, Any] = field(default_factory=dict)
    downlink: Mapping[str, Any] = field(default_factory=dict)
    strategy: Mapping[str, Any] = field(default_factory=lambda: {"name": "fedavg"})

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
        # Parse now so a bad codec or strategy setting fails at start-up, not in round 7.
        CompressionConfig.from_dict(self.uplink)
        down = CompressionConfig.from_dict(self.downlink)
        if down.error_feedback:
            raise ConfigError(
                "compression.downlink.error_feedback is not supported: the server keeps the "
                "full-precision model, so broadcast error never accumulates"
            )
        from .strategy import make_strategy  # the strategies read this config: import late

        make_strategy(self.strategy)

    @classmethod
    def from_dict(cls, federation: Mapping[str, Any], compression: Optional[Mapping[str, Any]] = None
                  ) -> "FederationConfig":
        """Build from the ``[federation]`` and ``[compression]`` tables."""
        keys = ["rounds", "fraction", "min_clients", "min_updates", "deadline_s", "update_kind",
                "max_update_norm", "update_norm_factor", "broadcast", "seed", "train", "strategy"]
        federation = check_table(federation, keys, "federation")
        compression = check_table(compression or {}, ["uplink", "downlink"], "compression")
        kind = federation.get("update_kind", cls.update_kind)
        broadcast = federation.get("broadcast", cls.broadcast)
        for key, value in (("update_kind", kind), ("broadcast", broadcast)):
            if not isinstance(value, str):
                raise ConfigError(f"federation.{key} must be a string, got {value!r}")
        where = "federation"
        return cls(
            rounds=number(federation, "rounds", cls.rounds, 1, 1_000_000, True, where),
            fraction=number(federation, "fraction", cls.fraction, 0.0, 1.0, where=where),
            min_clients=number(federation, "min_clients", cls.min_clients, 1, 1 << 20, True, where),
            min_updates=number(federation, "min_updates", cls.min_updates, 1, 1 << 20, True, where),
            deadline_s=number(federation, "deadline_s", cls.deadline_s, 0.001, 86_400.0, where=where),
            update_kind=kind,
            max_update_norm=_norm_setting(federation.get("max_update_norm", "auto")),
            update_norm_factor=number(federation, "update_norm_factor", 10.0, 1.0, 1e6, where=where),
            broadcast=broadcast,
            seed=number(federation, "seed", cls.seed, 0, 2**32 - 1, True, where),
            train=TrainConfig.from_dict(federation.get("train", {})),
            uplink=dict(compression.get("uplink", {})),
            downlink=dict(compression.get("downlink", {})),
            strategy=_strategy_table(federation.get("strategy", "fedavg")),
        )

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["uplink"], out["downlink"] = dict(self.uplink), dict(self.downlink)
        out["strategy"] = dict(self.strategy)
        return out

    def fingerprint(self) -> str:
        """A short hash of the settings that shape the model: a checkpoint only
        resumes the same run (raising `rounds` or the deadline extends it)."""
        settings = {k: v for k, v in self.to_dict().items() if k not in ("rounds", "deadline_s")}
        if settings["strategy"] == {"name": "fedavg"}:
            del settings["strategy"]  # runs from before the strategy seam keep their fingerprint
        text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _norm_setting(value: Any) -> Union[float, str]:
    if value == "auto":
        return "auto"
    return number({"max_update_norm": value}, "max_update_norm", 0.0, 0.0, 1e30, where="federation")


def _strategy_table(value: Any) -> Dict[str, Any]:
    """``strategy = "fedavgm"`` or ``[federation.strategy] name = "fedavgm", momentum = 0.9``."""
    if isinstance(value, str):
        return {"name": value}
    table = dict(check_table(value, list(value) if isinstance(value, Mapping) else [], "federation.strategy"))
    if not isinstance(table.get("name"), str):
        raise ConfigError(f"federation.strategy.name must name a strategy, got {table.get('name')!r}")
    return table
