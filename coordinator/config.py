"""Reading a run's config for the MQTT programs, and what follows from it: the
initial model and the held-out evaluation."""

import json
import logging
from typing import Dict, Optional

import numpy as np

from fedcore.errors import ConfigError
from fedcore.experiment import (
    NUMPY_DATASETS,
    RunConfig,
    build_numpy_model,
    load_numpy_dataset,
    load_run_config,
)

from .server import CoordinatorSettings, Evaluator

__all__ = ["load_config", "initial_state", "make_evaluator"]

log = logging.getLogger(__name__)

def load_config(path: str) -> RunConfig:
    """A run's TOML file (Python 3.11+ or tomli), or the same tables as a JSON
    file (``.json``): a Python 3.8 board without tomli reads that."""
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as handle:
                settings = json.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except ValueError as error:
            raise ConfigError(f"{path}: invalid JSON: {error}") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: expected a JSON object of tables")
        return load_run_config(settings)
    return load_run_config(path)


def initial_state(run: RunConfig, settings: CoordinatorSettings) -> Dict[str, np.ndarray]:
    """The round-0 model: built from [model] with the run's seed, as the simulation does."""
    if run.data.dataset in NUMPY_DATASETS:
        in_features, classes = 784, 10
    else:
        in_features, classes = settings.in_features, settings.num_classes
    return build_numpy_model(run.model, in_features, classes, run.federation.seed).state_dict()


def make_evaluator(run: RunConfig, settings: CoordinatorSettings) -> Optional[Evaluator]:
    """Accuracy of the global model on the dataset's test split (data.test_limit
    samples), or None when evaluation is off or the data cannot be read."""
    if not settings.evaluate:
        return None
    try:
        x, y = load_numpy_dataset(run.data, "test")
    except (ConfigError, FileNotFoundError, OSError, ValueError) as error:
        log.warning("no held-out evaluation: %s", error)
        return None
    if run.data.dataset in NUMPY_DATASETS:
        in_features, classes = 784, 10
    else:
        in_features, classes = settings.in_features, settings.num_classes
    model = build_numpy_model(run.model, in_features, classes, 0)
    log.info("held-out evaluation on %d samples of %s (%s)", len(x), run.data.dataset,
             run.data.path or "default location")

    def evaluate(state: Dict[str, np.ndarray]) -> Dict[str, float]:
        model.load_state_dict(state)
        accuracy, loss = model.evaluate(x, y)
        return {"accuracy": float(accuracy), "loss": float(loss)}

    return evaluate
