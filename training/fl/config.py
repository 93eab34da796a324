"""The [simulation] table of a run's TOML file (the rest is fedcore.experiment's).

    [simulation]
    method = "standard"        # local training: "standard", "qat" or "lora"
    engine = "auto"            # "sequential" (one client after another, as boards), "batched" (a round's
                               # clients in lockstep: the same numbers), "vmap" (one vectorised step for
                               # them all: within float tolerance); auto: vmap on CUDA, else batched;
                               # "flower": Flower's simulation engine on Ray (the `scale` extra)
    precision = "fp32"         # "bf16": forward passes under bfloat16 autocast (reported in the summary)
    eval_every = 1             # evaluate the global model every N rounds (and the last)
    out = "runs/fl/<name>"     # where the JSONL log, summary, plots and the final model (final.fedc) go
    save_model = true          # write the final global model (float32 fedcore container)
    device = "cpu"             # "cuda" (or "cuda:1"); "auto": cuda when there is one
    threads = 1                # torch intra-op threads
    target_accuracy = 0.0      # rounds-to-target reported when > 0 (a fraction, e.g. 0.85)
    augment = false            # random crop + flip (CIFAR)
    download = false           # fetch missing datasets from their official locations
    [simulation.qat]           # method = "qat": fake quantization with a straight-through estimator
    bits = 8                   # 8, 4, 2, or 1 (BinaryConnect: sign x mean |w| per layer)
    [simulation.lora]          # method = "lora": FLoCoRA adapters on every convolution
    rank = 32
    alpha = 512
    train_full = []            # convolutions trained whole instead (e.g. ["conv1"], the stem)
    [simulation.flower]        # engine = "flower"
    client_cpus = 1            # Ray resources of one ClientApp (so how many run at once)
    client_gpus = 0.0
    num_cpus = 0               # CPUs of a local Ray (0: all); ignored with ray_address
    ray_address = ""           # a running Ray cluster ("auto" or "host:6379"): see the README
"""

import copy
import sys
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from fedcore.checks import check_table, choice, number
from fedcore.compression import CompressionConfig
from fedcore.errors import ConfigError
from fedcore.experiment import RunConfig, load_run_config

__all__ = ["METHODS", "ENGINES", "PRECISIONS", "QATConfig", "LoRAConfig", "FlowerConfig", "SimulationConfig",
           "load_config",
           "apply_overrides", "parse_assignment"]

METHODS = ("standard", "qat", "lora")
ENGINES = ("auto", "sequential", "batched", "vmap", "flower")
PRECISIONS = ("fp32", "bf16")
QAT_BITS = (1, 2, 4, 8)


@dataclass(frozen=True)
class QATConfig:
    bits: int = 8

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> "QATConfig":
        table = check_table(table, ["bits"], "simulation.qat")
        bits = table.get("bits", 8)
        if bits not in QAT_BITS or isinstance(bits, bool):
            raise ConfigError(f"simulation.qat.bits must be one of {list(QAT_BITS)} (1 = BinaryConnect), got {bits!r}")
        return cls(int(bits))


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 32
    alpha: float = 512.0
    train_full: Tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> "LoRAConfig":
        table = check_table(table, ["rank", "alpha", "train_full"], "simulation.lora")
        full = table.get("train_full", [])
        if not isinstance(full, list) or not all(isinstance(p, str) and p for p in full):
            raise ConfigError(f"simulation.lora.train_full must be a list of layer names, got {full!r}")
        return cls(number(table, "rank", 32, 1, 4096, True, "simulation.lora"),
                   number(table, "alpha", 512.0, 1e-6, 1e6, where="simulation.lora"), tuple(full))


@dataclass(frozen=True)
class FlowerConfig:
    client_cpus: float = 1.0
    client_gpus: float = 0.0
    num_cpus: int = 0
    ray_address: str = ""

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> "FlowerConfig":
        where = "simulation.flower"
        table = check_table(table, ["client_cpus", "client_gpus", "num_cpus", "ray_address"], where)
        address = table.get("ray_address", "")
        if not isinstance(address, str):
            raise ConfigError(f"{where}.ray_address must be a string, got {address!r}")
        return cls(number(table, "client_cpus", 1.0, 0.01, 1024, where=where),
                   number(table, "client_gpus", 0.0, 0.0, 64, where=where),
                   number(table, "num_cpus", 0, 0, 4096, True, where), address)


@dataclass(frozen=True)
class SimulationConfig:
    method: str = "standard"
    engine: str = "auto"
    precision: str = "fp32"
    eval_every: int = 1
    out: str = ""
    device: str = "cpu"
    threads: int = 1
    target_accuracy: float = 0.0
    augment: bool = False
    download: bool = False
    save_model: bool = True
    qat: QATConfig = QATConfig()
    lora: LoRAConfig = LoRAConfig()
    flower: FlowerConfig = FlowerConfig()

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> "SimulationConfig":
        keys = ["method", "engine", "precision", "eval_every", "out", "device", "threads", "target_accuracy",
                "augment", "download", "save_model", "qat", "lora", "flower"]
        table = check_table(table, keys, "simulation")
        method = table.get("method", "standard")
        if method not in METHODS:
            raise ConfigError(f"simulation.method: unknown method {method!r}; known: {list(METHODS)} "
                              "(pruning, sparsification and quantization of messages go in [compression.*])")
        engine = choice(table, "engine", "auto", ENGINES, "simulation")
        precision = choice(table, "precision", "fp32", PRECISIONS, "simulation")
        for key in ("out", "device"):
            if not isinstance(table.get(key, ""), str):
                raise ConfigError(f"simulation.{key} must be a string, got {table[key]!r}")
        for key in ("augment", "download", "save_model"):
            if not isinstance(table.get(key, False), bool):
                raise ConfigError(f"simulation.{key} must be true or false, got {table[key]!r}")
        for key in ("qat", "lora"):
            if table.get(key) and method != key:  # an empty table says nothing
                raise ConfigError(f"[simulation.{key}] is given but simulation.method is {method!r}")
        return cls(
            method=method,
            engine=engine,
            precision=precision,
            eval_every=number(table, "eval_every", 1, 1, 1e9, True, "simulation"),
            out=table.get("out", ""),
            device=table.get("device", "cpu"),
            threads=number(table, "threads", 1, 1, 1024, True, "simulation"),
            target_accuracy=number(table, "target_accuracy", 0.0, 0.0, 1.0, where="simulation"),
            augment=table.get("augment", False),
            download=table.get("download", False),
            save_model=table.get("save_model", True),
            qat=QATConfig.from_dict(table.get("qat", {})),
            lora=LoRAConfig.from_dict(table.get("lora", {})),
            flower=FlowerConfig.from_dict(table.get("flower", {})),
        )


def _check_compression(settings: Mapping[str, Any]) -> None:
    """Parse each side here so an error names the table it is in."""
    compression = settings.get("compression", {})
    if not isinstance(compression, Mapping):
        raise ConfigError("[compression] must be a table")
    for side in ("uplink", "downlink"):
        table = compression.get(side, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[compression.{side}] must be a table")
        try:
            parsed = CompressionConfig.from_dict(table)
        except ConfigError as error:
            raise ConfigError(f"[compression.{side}]: {error}") from None
        if parsed.sparsify is not None and parsed.sparsify.keep <= 0:
            raise ConfigError(f"[compression.{side}]: sparsify keep must be > 0 (0 would send nothing)")
        if parsed.prune is not None and parsed.prune.rate >= 1:
            raise ConfigError(f"[compression.{side}]: prune rate must be < 1 (1 would zero the whole model)")


def load_config(source: Any, overrides: Optional[Mapping[str, Any]] = None):
    """(RunConfig, SimulationConfig) from a TOML (or JSON) path or a mapping, with dotted-key overrides."""
    from fedcore.experiment import read_run_file

    settings = dict(source) if isinstance(source, Mapping) else read_run_file(source)
    settings = apply_overrides(settings, overrides or {})
    _check_compression(settings)
    run: RunConfig = load_run_config(settings)
    return run, SimulationConfig.from_dict(settings.get("simulation", {}))


def apply_overrides(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """A deep copy of settings with {"federation.rounds": 5, ...} set."""
    out = copy.deepcopy(dict(settings))
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        table = out
        for key in keys[:-1]:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise ConfigError(f"override {dotted!r}: {key!r} is not a table")
        table[keys[-1]] = value
    return out


def parse_assignment(text: str) -> Dict[str, Any]:
    """"compression.uplink.sparsify.keep=0.1" -> {dotted key: TOML value} (bare words are strings)."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    if sys.version_info >= (3, 11):
        import tomllib as toml_module
    else:  # pragma: no cover - the training side runs on 3.11 here
        import tomli as toml_module
    try:
        value = toml_module.loads(f"v = {raw}")["v"]
    except toml_module.TOMLDecodeError:
        value = raw
    return {key.strip(): value}
