"""What crosses between the round engine's parties, as data: the plan a server
announces, its verdict on each update, and the record of a closed round."""

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Literal, Mapping, Tuple

from ..checks import check_table, number
from ..compression import CompressionConfig
from ..errors import ConfigError
from .config import UPDATE_KINDS, TrainConfig

__all__ = ["RoundPlan", "Verdict", "RoundResult"]


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
        data = check_table(data, ["round", "selected", "train", "update_kind", "uplink", "deadline_s", "seed"],
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
            round=number(data, "round", 0, 1, 2**31 - 1, True, "round plan"),
            selected=tuple(selected),
            train=TrainConfig.from_dict(data["train"], "round plan.train"),
            update_kind=kind,
            uplink=dict(uplink),
            deadline_s=number(data, "deadline_s", 60.0, 0.0, 86_400.0, where="round plan"),
            seed=number(data, "seed", 0, 0, 2**32 - 1, True, "round plan"),
        )


# What the server made of an update: the ack's "status" on the wire too (fedlink.protocol.ACK).
VerdictStatus = Literal["accepted", "duplicate", "late", "rejected"]


@dataclass(frozen=True)
class Verdict:
    """What the server made of one received update.

    status: "accepted"; "duplicate" (a second update from a client that already
    has one in this round: ignored, the first counts); "late" (for a round that
    is already closed); "rejected" (reason says why).
    """

    status: VerdictStatus
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
    rejected_total: int = 0  # every rejection; `rejected` keeps a bounded sample of them

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["rejected"] = [asdict(v) for v in self.rejected]
        return out
