"""Reading a run's config for the MQTT programs, and what follows from it: the
initial model and the held-out evaluation."""

import logging
from typing import Dict, Optional

import numpy as np

from fedcore.container import decode_message
from fedcore.errors import ConfigError, MessageError
from fedcore.experiment import (
    NUMPY_MODELS,
    RunConfig,
    build_numpy_model,
    import_factory,
    load_numpy_dataset,
    numpy_model_dims,
)

from .server import CoordinatorSettings, Evaluator, same_layout

__all__ = ["initial_state", "read_model_file", "make_evaluator"]

log = logging.getLogger(__name__)

def initial_state(run: RunConfig, settings: CoordinatorSettings, path: str = "") -> Dict[str, np.ndarray]:
    """The round-0 model: the container file at `path` (e.g. written by `python -m training.fl
    --export-initial` for a torch model), or else built from [model] with the run's seed, as the
    simulation does (numpy models)."""
    if path:
        state = read_model_file(path)
        if run.model.name in NUMPY_MODELS:  # a torch model's layout is the evaluator's to know
            expected = build_numpy_model(run.model, *numpy_model_dims(run), 0).state_dict()
            problem = same_layout(state, expected)
            if problem:
                raise ConfigError(f"--initial-model {path}: not a model of this run ({run.model.name}): {problem}")
        return state
    if run.model.name not in NUMPY_MODELS:
        raise ConfigError(
            f"model {run.model.name!r} is not a numpy model ({', '.join(NUMPY_MODELS)}): give its round-0 "
            f"weights with --initial-model FILE (python -m training.fl --config ... --export-initial FILE)")
    return build_numpy_model(run.model, *numpy_model_dims(run), run.federation.seed).state_dict()


def read_model_file(path: str) -> Dict[str, np.ndarray]:
    """The tensors of a model container file (finite float32, the container's decode limits)."""
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError as error:
        raise ConfigError(f"--initial-model {path}: {error.strerror or error}") from None
    try:
        tensors = decode_message(blob).tensors
    except MessageError as error:
        raise ConfigError(f"--initial-model {path}: not a valid model container: {error}") from None
    if not tensors:
        raise ConfigError(f"--initial-model {path}: the container holds no tensors")
    return tensors


def make_evaluator(run: RunConfig, settings: CoordinatorSettings, factory: str = "") -> Optional[Evaluator]:
    """Accuracy of the global model on the dataset's test split (data.test_limit
    samples): through `factory` ("package.module:function", called with the run,
    e.g. training.fl.mqtt:evaluator for a torch model) when given, else the numpy
    model's; None when evaluation is off or the data cannot be read."""
    if not settings.evaluate:
        return None
    if factory:
        return import_factory(factory, "--evaluator")(run)
    if run.model.name not in NUMPY_MODELS:
        log.warning("no held-out evaluation: model %r is not a numpy model (pass --evaluator, e.g. "
                    "training.fl.mqtt:evaluator)", run.model.name)
        return None
    try:
        x, y = load_numpy_dataset(run.data, "test")
    except (ConfigError, FileNotFoundError, OSError, ValueError) as error:
        log.warning("no held-out evaluation: %s", error)
        return None
    model = build_numpy_model(run.model, *numpy_model_dims(run), 0)
    log.info("held-out evaluation on %d samples of %s (%s)", len(x), run.data.dataset,
             run.data.path or "default location")

    def evaluate(state: Dict[str, np.ndarray]) -> Dict[str, float]:
        model.load_state_dict(state)
        accuracy, loss = model.evaluate(x, y)
        return {"accuracy": float(accuracy), "loss": float(loss)}

    return evaluate
