"""A federated run's configuration file, read the same way by the simulation
(training/), the coordinator and the device clients, so that one TOML file
describes one run wherever it executes:

    [data]        dataset, path, num_clients, alpha, partition, min_samples, seed, val_fraction, train_limit,
                  test_limit
    [model]       name ("mlp", "softmax" on numpy; more in training/) and its options (hidden = [128])
    [federation]  rounds, fraction, min_clients, ... (see rounds.FederationConfig)
    [federation.train]               local SGD settings
    [compression.uplink|downlink]    codec settings (see compression.CompressionConfig)

Only the numpy side lives here: MNIST-style datasets and the numpy models.
"""

import importlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .checks import check_table, choice, is_int, number, text
from .datasets import load_fashion_mnist, load_mnist_like
from .errors import ConfigError
from .models import MLP
from .partition import PARTITIONS, client_dirichlet_partition, dirichlet_partition
from .registry import Registry
from .rounds import FederationConfig, TrainConfig

__all__ = [
    "NUMPY_DATASETS",
    "NUMPY_MODELS",
    "PROGRAM_TABLES",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "read_toml",
    "read_run_file",
    "load_run_config",
    "import_factory",
    "limit_rows",
    "client_ids",
    "partition_clients",
    "load_numpy_dataset",
    "build_numpy_model",
    "numpy_model_dims",
    "check_local_data",
    "MLPTrainer",
]

NUMPY_DATASETS = ("fashion-mnist", "mnist")
NUMPY_MODELS: "Registry[Callable[..., MLP]]" = Registry("numpy model", error=ConfigError,
                        hint="it has no numpy implementation: use the torch trainer from training/")


def read_toml(path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """Parse a TOML file with tomllib (Python 3.11+) or tomli (older Pythons)."""
    if sys.version_info >= (3, 11):
        import tomllib as toml_module  # novermin: guarded by the version check
    else:
        try:
            import tomli as toml_module
        except ImportError:
            raise ConfigError(
                f"reading {os.fspath(path)} needs Python 3.11+ or the tomli package (pip install tomli)"
            ) from None
    text = _read_text(path)
    try:
        return toml_module.loads(text)
    except (toml_module.TOMLDecodeError, RecursionError) as error:
        raise ConfigError(f"{os.fspath(path)}: invalid TOML: {error}") from None


MAX_CONFIG_BYTES = 1 << 20


def _read_text(path: Union[str, "os.PathLike[str]"]) -> str:
    """A config file's text: at most MAX_CONFIG_BYTES of UTF-8, else one clear ConfigError."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {os.fspath(path)}") from None
    except OSError as error:
        raise ConfigError(f"{os.fspath(path)}: cannot read it: {error.strerror or error}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{os.fspath(path)}: larger than {MAX_CONFIG_BYTES} bytes; not a run file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{os.fspath(path)}: not UTF-8 text (byte {error.start}): not a TOML or JSON "
                          "run file") from None


def read_run_file(path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """A run's tables from its TOML file, or from a JSON file (``.json``) with the
    same tables: a Python 3.8 board without tomli reads that."""
    if not os.fspath(path).endswith(".json"):
        return read_toml(path)
    text = _read_text(path)
    try:
        settings = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ConfigError(f"{os.fspath(path)}: invalid JSON: {error}") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{os.fspath(path)}: expected a JSON object of tables")
    return settings


@dataclass(frozen=True)
class DataConfig:
    """The [data] table. alpha is the Dirichlet concentration ("iid" or inf for
    an IID split); partition "by-class" (each class split over the clients: sizes
    differ) or "by-client" (each client's label mix drawn, equal sizes: Flower's
    split, see fedcore.partition); seed drives the partition (None: the run's seed);
    train_limit/test_limit keep a fixed random subset of N samples (0: all;
    see limit_rows: every program of a run picks the same one)."""

    dataset: str = "fashion-mnist"
    path: str = ""
    num_clients: int = 10
    alpha: float = math.inf
    partition: str = "by-class"
    min_samples: int = 10
    seed: Optional[int] = None
    val_fraction: float = 0.0
    train_limit: int = 0
    test_limit: int = 0

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> "DataConfig":
        settings = check_table(settings, list(cls.__dataclass_fields__), "data")
        dataset = text(settings, "dataset", cls.dataset, "data", empty=False) or cls.dataset  # a non-None default
        path = text(settings, "path", "", "data") or ""
        alpha = settings.get("alpha", "iid")
        if alpha == "iid":
            alpha = math.inf
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ConfigError(f"data.alpha must be a number > 0 or \"iid\", got {alpha!r}")
        fraction = number(settings, "val_fraction", 0.0, 0.0, 1.0, where="data")
        if fraction == 1.0:
            raise ConfigError("data.val_fraction must lie in [0, 1): nothing would be left to train on")
        seed = settings.get("seed")
        if seed is not None:
            seed = number(settings, "seed", None, 0, 2**32 - 1, integer=True, where="data")
        return cls(
            dataset=dataset.lower(),
            path=path,
            num_clients=number(settings, "num_clients", cls.num_clients, 1, integer=True, where="data"),
            alpha=float(alpha),
            partition=choice(settings, "partition", "by-class", PARTITIONS, "data"),
            min_samples=number(settings, "min_samples", cls.min_samples, 0, integer=True, where="data"),
            seed=seed,
            val_fraction=fraction,
            train_limit=number(settings, "train_limit", 0, 0, integer=True, where="data"),
            test_limit=number(settings, "test_limit", 0, 0, integer=True, where="data"),
        )


@dataclass(frozen=True)
class ModelConfig:
    """The [model] table: a model name and its options (e.g. hidden = [128])."""

    name: str = "mlp"
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> "ModelConfig":
        name = settings.get("name", cls.name)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"model.name must be a name, got {name!r}")
        return cls(name.lower(), {k: v for k, v in settings.items() if k != "name"})


@dataclass(frozen=True)
class RunConfig:
    name: str
    data: DataConfig
    model: ModelConfig
    federation: FederationConfig
    settings: Mapping[str, Any]

    @property
    def data_seed(self) -> int:
        return self.federation.seed if self.data.seed is None else self.data.seed


_RUN_TABLES = ("name", "data", "model", "federation", "compression")
# Each program's own table; one run file may carry all of them, each program
# reads its own and leaves the others alone.
PROGRAM_TABLES = ("coordinator", "device", "simulation", "testbed")


def load_run_config(source: Union[str, "os.PathLike[str]", Mapping[str, Any]],
                    extra_tables: Sequence[str] = PROGRAM_TABLES) -> RunConfig:
    """Read a run's TOML or JSON file (or an already parsed mapping). Tables other than
    the shared ones and extra_tables (by default the programs' own:
    [coordinator], [device], [simulation], [testbed]) are an error."""
    settings = dict(source) if isinstance(source, Mapping) else read_run_file(source)
    unknown = sorted(set(settings) - set(_RUN_TABLES) - set(extra_tables))
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown}; expected some of {sorted(set(_RUN_TABLES) | set(extra_tables))}")
    name = settings.get("name", "run")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty string, got {name!r}")
    return RunConfig(
        name=name,
        data=DataConfig.from_dict(settings.get("data", {})),
        model=ModelConfig.from_dict(settings.get("model", {})),
        federation=FederationConfig.from_dict(settings.get("federation", {}), settings.get("compression", {})),
        settings=settings,
    )


def import_factory(spec: str, option: str) -> Callable[..., Any]:
    """The function named by "package.module:function" (a command-line hook such as
    --trainer), imported only now: the board side never imports torch on its own."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"{option} must look like package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{option} {spec}: cannot import {module_name} ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"{option} {spec}: {module_name} has no function {function_name}")
    return function


def limit_rows(total: int, limit: int) -> Union[slice, np.ndarray]:
    """The rows [data] train_limit / test_limit keep: a fixed random subset of `limit` of
    `total` rows (seed 0, in their original order), or all of them (a slice: no copy) when
    limit is 0 or >= total. Random because image trees come sorted by class."""
    if not limit or limit >= total:
        return slice(None)
    return np.sort(np.random.default_rng(0).permutation(total)[:limit])


def client_ids(num_clients: int) -> List[str]:
    """The ids of a run's clients, in the same order everywhere: client-000, ..."""
    return [f"client-{i:03d}" for i in range(num_clients)]


def partition_clients(labels: np.ndarray, config: RunConfig) -> Dict[str, np.ndarray]:
    """Each client's sample indices, by the shared Dirichlet partitioner."""
    data = config.data
    if data.partition == "by-client":
        parts = client_dirichlet_partition(labels, data.num_clients, data.alpha, config.data_seed)
    else:
        parts = dirichlet_partition(labels, data.num_clients, data.alpha, data.min_samples, config.data_seed)
    return dict(zip(client_ids(data.num_clients), parts))


def load_numpy_dataset(data: DataConfig, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST as float32 (N, 784) in [0, 1] and int64 labels,
    the input convention of the numpy MLP (and of training/'s MLP)."""
    if data.dataset == "fashion-mnist":
        images, labels = load_fashion_mnist(data.path or None, split)
    elif data.dataset == "mnist":
        if not data.path:
            raise ConfigError("data.path must name the folder with the MNIST *-ubyte(.gz) files")
        images, labels = load_mnist_like(data.path, split)
    else:
        raise ConfigError(
            f"dataset {data.dataset!r} has no numpy loader (known: {list(NUMPY_DATASETS)}); "
            "other datasets need the torch simulation in training/"
        )
    keep = limit_rows(len(labels), data.train_limit if split == "train" else data.test_limit)
    images, labels = images[keep], labels[keep]
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def numpy_model_dims(run: RunConfig) -> Tuple[int, int]:
    """(input features, classes) of a run's numpy model: 784 and 10 for the MNIST-style
    datasets, else [coordinator] in_features / num_classes (defaults 784 and 10)."""
    if run.data.dataset in NUMPY_DATASETS:
        return 784, 10
    table = run.settings.get("coordinator", {})
    table = table if isinstance(table, Mapping) else {}
    return (number(table, "in_features", 784, 1, 1 << 24, True, "coordinator"),
            number(table, "num_classes", 10, 2, 1 << 20, True, "coordinator"))


def check_local_data(run: RunConfig, x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Refuse, at start, local data the run's numpy model cannot train on."""
    features, classes = numpy_model_dims(run)
    if x.ndim != 2 or x.shape[1] != features:
        raise ConfigError(f"{where}: the data has {x.shape[1:]} features a sample, the run's {run.model.name} "
                          f"takes {features} (data.dataset {run.data.dataset!r})")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ConfigError(f"{where}: labels must lie in [0, {classes}), got {int(y.min())}..{int(y.max())}")


def build_numpy_model(model: ModelConfig, in_features: int, num_classes: int, seed: int) -> MLP:
    """The numpy model a board trains, by [model] name from NUMPY_MODELS."""
    return NUMPY_MODELS.get(model.name)(dict(model.options), in_features, num_classes, seed)


@NUMPY_MODELS.register("mlp")
def _mlp(options: Dict[str, Any], in_features: int, num_classes: int, seed: int) -> MLP:
    """An MLP with hidden layers `hidden` (default [128])."""
    hidden = options.pop("hidden", [128])
    if options:
        raise ConfigError(f"model mlp: unknown option(s) {sorted(options)}; expected hidden")
    if not isinstance(hidden, list) or not all(is_int(h) and int(h) >= 1 for h in hidden):
        raise ConfigError(f"model.hidden must be a list of positive integers, got {hidden!r}")
    return MLP([in_features] + [int(h) for h in hidden] + [num_classes], seed=seed)


@NUMPY_MODELS.register("softmax")
def _softmax(options: Dict[str, Any], in_features: int, num_classes: int, seed: int) -> MLP:
    """Softmax regression: an MLP without hidden layers."""
    if options:
        raise ConfigError(f"model softmax takes no options, got {sorted(options)}")
    return MLP([in_features, num_classes], seed=seed)


class MLPTrainer:
    """Local SGD of the numpy MLP on one client's data: a RoundClient trainer."""

    def __init__(self, model: MLP, x: np.ndarray, y: np.ndarray):
        if len(x) == 0:
            raise ConfigError("MLPTrainer: the client has no samples")
        self.model, self.x, self.y = model, x, y

    def __call__(self, state: Dict[str, np.ndarray], train: TrainConfig, seed: int
                 ) -> Tuple[Dict[str, np.ndarray], int, Dict[str, float]]:
        self.model.load_state_dict(state)
        loss = self.model.train_epochs(self.x, self.y, train.epochs, train.batch_size, train.lr,
                                       train.momentum, train.weight_decay, seed=seed,
                                       nesterov=train.nesterov)
        return self.model.state_dict(), len(self.x), {"loss": float(loss)}
