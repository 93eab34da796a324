"""The client side of the round engine: follow the broadcasts, train, encode the update."""

import json
import zlib
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from ..compression import CompressionConfig, Compressor
from ..container import DecodeLimits, decode_message
from ..errors import ConfigError, FedCoreError, MessageError
from .config import TrainConfig
from .records import RoundPlan

__all__ = ["Trainer", "TrainResult", "OutOfSync", "RoundClient", "client_seed", "float32_copy"]

Tensors = Dict[str, np.ndarray]


def float32_copy(tensors: Mapping[str, np.ndarray]) -> Tensors:
    """A float32 copy the caller may change (trainers get one, never the held model)."""
    return {name: np.array(value, dtype=np.float32, copy=True) for name, value in tensors.items()}


def client_seed(seed: int, client_id: str, round: int) -> int:
    """The seed of one client's local training in one round: the same for the
    same run wherever the client runs (simulation or a board)."""
    mixed = np.random.SeedSequence([seed, zlib.crc32(client_id.encode("utf-8")), round])
    return int(mixed.generate_state(1)[0])


# A trainer takes the global model, the round's training settings and a seed,
# and returns (new model, number of samples it trained on, metrics).
TrainResult = Tuple[Tensors, int, Dict[str, float]]
Trainer = Callable[[Tensors, TrainConfig, int], TrainResult]


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
        # A model laid out otherwise than the one held is refused before its payload is decoded.
        held = {n: v.shape for n, v in self.model.items()} if self.model is not None else None
        message = decode_message(model_blob, self.limits, layout=held)
        if message.kind == "weights":
            self.model = {n: np.array(a, np.float32) for n, a in message.tensors.items()}
        elif message.kind == "delta":
            base_round = message.extra.get("base_round")
            if self.model is None or base_round != self.model_round:
                raise OutOfSync(
                    f"{self.client_id}: broadcast of round {message.round} is a delta on round "
                    f"{base_round!r}, this client holds round {self.model_round}"
                )
            self.model = {n: self.model[n] + message.tensors[n] for n in self.model}
        else:
            raise MessageError(f"broadcast of kind {message.kind!r}; expected 'weights' or 'delta'")
        self.model_round = message.round
        return message.round

    def run_round(self, plan: RoundPlan, model_blob: Optional[bytes] = None,
                  trained: Optional[TrainResult] = None) -> bytes:
        """Train on the round's model and return the encoded update. Pass the
        broadcast here unless it was already applied with follow(). `trained`: this
        client's training result when it was computed elsewhere (a simulation that
        trains the round's clients together, from `train_input`)."""
        if self.client_id not in plan.selected:
            raise RuntimeError(f"{self.client_id!r} is not selected for round {plan.round}")
        if model_blob is not None:
            self.follow(model_blob)
        base, seed = self.train_input(plan)
        if trained is None:
            trained = self.trainer(float32_copy(base), plan.train, seed)
        state, num_samples, metrics = trained
        if set(state) != set(base):
            raise FedCoreError(f"trainer returned tensors {sorted(state)}, model has {sorted(base)}")
        if plan.update_kind == "delta":
            update = {n: np.asarray(state[n], np.float32) - base[n] for n in base}
        else:
            update = {n: np.asarray(state[n], np.float32) for n in base}
        extra = {"metrics": {k: float(v) for k, v in metrics.items()}}
        blob, _ = self._compressor_for(plan.uplink).compress(
            update, round=plan.round, sender=self.client_id, num_samples=int(num_samples),
            kind=plan.update_kind, extra=extra,
        )
        return blob

    def forget_model(self) -> None:
        """Drop the model held since the last broadcast (whole-model broadcasts bring a new one
        each round); the error-feedback residual stays."""
        self.model, self.model_round = None, -1

    def carried(self) -> Tensors:
        """What this client carries from round to round beyond the broadcast: its
        error-feedback residual (empty without error feedback)."""
        feedback = self._compressor.feedback if self._compressor is not None else None
        return dict(feedback.residual) if feedback is not None else {}

    def restore_carried(self, uplink: Mapping[str, Any], residual: Mapping[str, np.ndarray]) -> None:
        """Take up what `carried` gave, for the codecs of `uplink` (a client whose state
        lives elsewhere between rounds: a Flower node's context)."""
        compressor = self._compressor_for(uplink)
        if compressor.feedback is not None:
            compressor.feedback.residual = {n: np.asarray(v, np.float32) for n, v in residual.items()}

    def train_input(self, plan: RoundPlan) -> Tuple[Tensors, int]:
        """(the model this client trains from in this round, its training seed)."""
        if self.model is None or self.model_round != plan.round:
            raise OutOfSync(f"{self.client_id}: holds the model of round {self.model_round}, round {plan.round} needs its own")
        return self.model, client_seed(plan.seed, self.client_id, plan.round)
