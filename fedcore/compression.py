"""What a participant does to its tensors before they go on the wire:
magnitude pruning, top-k sparsification with error feedback, and the choice of
a wire codec per layer kind. `Compressor` chains them from one config (a dict,
as read from the [compression] table of a TOML file).
"""

import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .checks import boolean, check_number, check_table
from .container import (
    DecodeLimits,
    EncodeReport,
    Message,
    TensorCodec,
    decode_message,
    encode_message,
)
from .errors import ConfigError

__all__ = [
    "LAYER_KINDS",
    "PRUNABLE_KINDS",
    "tensor_kind",
    "magnitude_prune",
    "filter_prune",
    "topk_sparsify",
    "ErrorFeedback",
    "CodecPolicy",
    "PruneConfig",
    "SparsifyConfig",
    "CompressionConfig",
    "Compressor",
]

LAYER_KINDS = ("conv", "linear", "bias", "norm", "other")
PRUNABLE_KINDS = ("conv", "linear")
_NORM_NAME = re.compile(r"(^|[._])(bn|norm|gn|ln)[a-z_]*\d*\.", re.IGNORECASE)

Tensors = Dict[str, np.ndarray]


def tensor_kind(name: str, shape: Sequence[int]) -> str:
    """The layer kind of a parameter, from its shape and (PyTorch) name:
    conv (3+ dims), linear (2 dims), bias, norm (1-dim scales, shifts and
    running statistics of normalization layers), other (scalars)."""
    if len(shape) >= 3:
        return "conv"
    if len(shape) == 2:
        return "linear"
    if len(shape) == 0:
        return "other"
    if name.endswith("bias") and not _NORM_NAME.search(name):
        return "bias"
    return "norm"


def _check_rate(value: Any, what: str, allow_one: bool = True) -> float:
    return check_number(value, what, 0.0, 1.0, open_high=not allow_one)


def _check_kinds(kinds: Sequence[str]) -> Tuple[str, ...]:
    unknown = [k for k in kinds if k not in LAYER_KINDS]
    if unknown:
        raise ConfigError("unknown layer kind(s) %s; known: %s" % (unknown, list(LAYER_KINDS)))
    return tuple(kinds)


def _selected(tensors: Mapping[str, np.ndarray], kinds: Sequence[str]) -> Tuple[str, ...]:
    return tuple(n for n, a in tensors.items() if tensor_kind(n, np.shape(a)) in kinds)


def _zero_smallest(flat_abs: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask that keeps all but exactly `count` smallest entries (ties broken by position)."""
    keep = np.ones(flat_abs.size, dtype=bool)
    if count >= flat_abs.size:
        keep[:] = False
    elif count > 0:
        keep[np.argpartition(flat_abs, count - 1, kind="introselect")[:count]] = False
    return keep


def magnitude_prune(
    tensors: Mapping[str, np.ndarray],
    rate: float,
    scope: str = "global",
    kinds: Sequence[str] = PRUNABLE_KINDS,
) -> Tensors:
    """Zero exactly round(rate * N) of the smallest |w|.

    scope "global": N counts every tensor of `kinds` together (one threshold
    for the model, as in the seed study); "layer": each tensor on its own.
    Tensors of other kinds (biases, norms by default) pass unchanged.
    """
    rate = _check_rate(rate, "prune rate")
    names = _selected(tensors, _check_kinds(kinds))
    out = {n: np.array(a, dtype=np.float32) for n, a in tensors.items()}
    if scope == "layer":
        for n in names:
            flat = out[n].reshape(-1)
            flat[~_zero_smallest(np.abs(flat), int(round(rate * flat.size)))] = 0.0
    elif scope == "global":
        if not names:
            return out
        flat_abs = np.concatenate([np.abs(out[n]).ravel() for n in names])
        keep = _zero_smallest(flat_abs, int(round(rate * flat_abs.size)))
        start = 0
        for n in names:
            size = out[n].size
            out[n].reshape(-1)[~keep[start:start + size]] = 0.0
            start += size
    else:
        raise ConfigError("prune scope must be 'global' or 'layer', got %r" % (scope,))
    return out


def filter_prune(
    tensors: Mapping[str, np.ndarray],
    rate: float,
    norm: float = 1.0,
    kinds: Sequence[str] = ("conv",),
) -> Tensors:
    """Structured pruning: in each tensor of `kinds`, zero the round(rate * F)
    output filters (slices along axis 0) of smallest L_norm norm, whole.
    Per layer, as in the pruning study; other tensors pass unchanged."""
    rate = _check_rate(rate, "prune rate")
    if isinstance(norm, bool) or not isinstance(norm, (int, float)) or not norm > 0 or not math.isfinite(norm):
        raise ConfigError("prune norm must be a finite number > 0, got %r" % (norm,))
    out = {n: np.array(a, dtype=np.float32) for n, a in tensors.items()}
    for n in _selected(tensors, _check_kinds(kinds)):
        filters = out[n].reshape(out[n].shape[0], -1).astype(np.float64)
        strength = np.power(np.sum(np.power(np.abs(filters), norm), axis=1), 1.0 / norm)
        drop = ~_zero_smallest(strength, int(round(rate * len(strength))))
        out[n][drop] = 0.0
    return out


def topk_sparsify(
    tensors: Mapping[str, np.ndarray],
    keep: float,
    scope: str = "layer",
    kinds: Sequence[str] = LAYER_KINDS,
) -> Tensors:
    """Keep the round(keep * N) largest |u| of an update and zero the rest
    (per tensor, or over all selected tensors with scope "global")."""
    keep = _check_rate(keep, "sparsify keep")
    return magnitude_prune(tensors, 1.0 - keep, scope, kinds)


class ErrorFeedback:
    """Carries what was not transmitted to the next round.

    compensate() adds the residual to the new update; record() stores
    (compensated - what the receiver decodes), so pruning, sparsification and
    quantization errors are all fed back.
    """

    def __init__(self):
        self.residual: Tensors = {}

    def compensate(self, tensors: Mapping[str, np.ndarray]) -> Tensors:
        out = {}
        for name, value in tensors.items():
            value = np.asarray(value, dtype=np.float32)
            residual = self.residual.get(name)
            out[name] = value + residual if residual is not None and residual.shape == value.shape else value
        return out

    def record(self, compensated: Mapping[str, np.ndarray], transmitted: Mapping[str, np.ndarray]):
        self.residual = {n: (compensated[n] - transmitted[n]).astype(np.float32) for n in compensated}

    def reset(self):
        self.residual = {}


class CodecPolicy:
    """Chooses the TensorCodec of each tensor: the first matching name pattern
    of `overrides`, else the codec of its layer kind, else `default`."""

    def __init__(
        self,
        default: TensorCodec = TensorCodec(),
        kinds: Optional[Mapping[str, TensorCodec]] = None,
        overrides: Sequence[Tuple[str, TensorCodec]] = (),
    ):
        self.default = default
        self.kinds = dict(kinds or {})
        _check_kinds(list(self.kinds))
        self.overrides = list(overrides)
        self._chosen: Dict[Tuple[str, Tuple[int, ...]], TensorCodec] = {}  # a model's few (name, shape)

    def __call__(self, name: str, array: np.ndarray) -> TensorCodec:
        key = (name, array.shape)
        codec = self._chosen.get(key)
        if codec is None:
            if len(self._chosen) >= 4096:
                self._chosen.clear()
            codec = self._chosen[key] = self._choose(name, array.shape)
        return codec

    def _choose(self, name: str, shape: Tuple[int, ...]) -> TensorCodec:
        for pattern, codec in self.overrides:
            if fnmatch.fnmatchcase(name, pattern):
                return codec
        return self.kinds.get(tensor_kind(name, shape), self.default)

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> "CodecPolicy":
        """{"bits": 8, ..., "kinds": {"bias": {...}}, "overrides": {"fc2.*": {...}}}.

        Biases and normalization parameters travel as float32 unless "kinds"
        says otherwise: they are few, and quantizing them costs accuracy.
        """
        settings = dict(settings)
        kinds = settings.pop("kinds", {})
        overrides = settings.pop("overrides", {})
        if not isinstance(kinds, Mapping) or not isinstance(overrides, Mapping):
            raise ConfigError("'kinds' and 'overrides' must be tables")
        default = TensorCodec.from_dict(settings)
        dense = TensorCodec(sparse=default.sparse, entropy=default.entropy, level=default.level)
        kind_codecs = {"bias": dense, "norm": dense}
        for kind, table in kinds.items():
            kind_codecs[kind] = TensorCodec.from_dict({**settings, **table})
        rules = [(p, TensorCodec.from_dict({**settings, **t})) for p, t in overrides.items()]
        return cls(default, kind_codecs, rules)


@dataclass(frozen=True)
class PruneConfig:
    """structure "element": magnitude pruning (scope global or layer);
    "filter": whole output filters by their L_norm norm, per layer.
    exclude: name patterns left unpruned (e.g. the classifier "fc2.*")."""

    rate: float
    scope: str = "global"
    kinds: Tuple[str, ...] = PRUNABLE_KINDS
    structure: str = "element"
    norm: float = 1.0
    exclude: Tuple[str, ...] = ()

    def __post_init__(self):
        _check_rate(self.rate, "prune rate")
        if self.scope not in ("global", "layer"):
            raise ConfigError("prune scope must be 'global' or 'layer', got %r" % (self.scope,))
        _check_kinds(self.kinds)
        if self.structure not in ("element", "filter"):
            raise ConfigError("prune structure must be 'element' or 'filter', got %r" % (self.structure,))
        if self.structure == "filter" and self.scope != "layer":
            raise ConfigError("prune structure 'filter' ranks filters within each layer: set scope = 'layer'")
        if isinstance(self.norm, bool) or not isinstance(self.norm, (int, float)) or not self.norm > 0:
            raise ConfigError("prune norm must be a number > 0, got %r" % (self.norm,))


@dataclass(frozen=True)
class SparsifyConfig:
    keep: float
    scope: str = "layer"
    kinds: Tuple[str, ...] = LAYER_KINDS

    def __post_init__(self):
        _check_rate(self.keep, "sparsify keep")
        if self.scope not in ("global", "layer"):
            raise ConfigError("sparsify scope must be 'global' or 'layer', got %r" % (self.scope,))
        _check_kinds(self.kinds)


def _table(settings: Mapping[str, Any], key: str, cls: Any):
    table = settings.get(key)
    if table is None:
        return None
    table = check_table(table, list(cls.__dataclass_fields__), key)
    values = table
    for key in ("kinds", "exclude"):
        if key in values:
            values[key] = tuple(values[key])
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError("[%s]: %s" % (key, exc)) from None


@dataclass(frozen=True)
class CompressionConfig:
    """One side's compression: optional pruning, optional top-k sparsification,
    optional error feedback, and the wire codecs."""

    prune: Optional[PruneConfig] = None
    sparsify: Optional[SparsifyConfig] = None
    error_feedback: bool = False
    wire: CodecPolicy = CodecPolicy()

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> "CompressionConfig":
        settings = check_table(settings, ["prune", "sparsify", "error_feedback", "wire"], "compression")
        feedback = boolean(settings, "error_feedback", False)
        return cls(
            prune=_table(settings, "prune", PruneConfig),
            sparsify=_table(settings, "sparsify", SparsifyConfig),
            error_feedback=feedback,
            wire=CodecPolicy.from_dict(settings.get("wire", {})),
        )


class Compressor:
    """Turns tensors into a message, the same way every round, keeping the
    error-feedback residual between rounds."""

    def __init__(self, config: CompressionConfig = CompressionConfig(), limits: DecodeLimits = DecodeLimits()):
        self.config = config
        self.limits = limits
        self.feedback = ErrorFeedback() if config.error_feedback else None

    def transform(self, tensors: Mapping[str, np.ndarray]) -> Tensors:
        """Pruning then sparsification: the values that will be encoded."""
        out = {n: np.asarray(a, dtype=np.float32) for n, a in tensors.items()}
        prune, sparsify = self.config.prune, self.config.sparsify
        if prune is not None and prune.rate > 0:
            kept = {n for n in out if any(fnmatch.fnmatchcase(n, p) for p in prune.exclude)}
            rest = {n: a for n, a in out.items() if n not in kept}
            if prune.structure == "filter":
                rest = filter_prune(rest, prune.rate, prune.norm, prune.kinds)
            else:
                rest = magnitude_prune(rest, prune.rate, prune.scope, prune.kinds)
            out = {n: out[n] if n in kept else rest[n] for n in out}
        if sparsify is not None and sparsify.keep < 1:
            out = topk_sparsify(out, sparsify.keep, sparsify.scope, sparsify.kinds)
        return out

    def compress(
        self,
        tensors: Mapping[str, np.ndarray],
        round: int = 0,
        sender: str = "",
        num_samples: int = 0,
        kind: str = "weights",
        extra: Optional[Dict[str, Any]] = None,
    ) -> Tuple[bytes, EncodeReport]:
        compensated = self.feedback.compensate(tensors) if self.feedback else dict(tensors)
        message = Message(self.transform(compensated), round, sender, num_samples, kind, dict(extra or {}))
        blob, report = encode_message(message, self.config.wire)
        if self.feedback is not None:
            # What the receiver will see, exactly: decode our own bytes.
            self.feedback.record(compensated, decode_message(blob, self.limits).tensors)
        return blob, report
