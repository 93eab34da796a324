"""The trainer a device runs: the numpy MLP / softmax regression of fedcore
(what a Cortex-A9 runs), or, on request, any other trainer through a lazily
imported factory (e.g. a torch model from training/ on a workstation)."""

import re
from typing import Dict, List, Optional, Tuple

import numpy as np

from fedcore.errors import ConfigError
from fedcore.experiment import NUMPY_MODELS, MLPTrainer, RunConfig, check_local_data, import_factory
from fedcore.models import MLP
from fedcore.rounds import TrainConfig, Trainer

__all__ = ["NumpyTrainer", "make_trainer", "mlp_sizes"]


def mlp_sizes(state: Dict[str, np.ndarray]) -> List[int]:
    """Layer sizes of a numpy MLP's state (fc1.weight is (out, in), as in PyTorch)."""
    layers = sorted((int(m.group(1)), name) for name in state
                    for m in [re.match(r"^fc(\d+)\.weight$", name)] if m)
    if not layers or [n for n, _ in layers] != list(range(1, len(layers) + 1)):
        raise ConfigError(f"the global model is not a numpy MLP: tensors {sorted(state)}")
    sizes = [int(state[layers[0][1]].shape[1])]
    sizes += [int(state[name].shape[0]) for _, name in layers]
    return sizes


class NumpyTrainer:
    """MLPTrainer on this device's data; the MLP is shaped by the first model
    received, so a device needs no model dimensions of its own."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self._inner: Optional[MLPTrainer] = None

    def __call__(self, state: Dict[str, np.ndarray], train: TrainConfig, seed: int
                 ) -> Tuple[Dict[str, np.ndarray], int, Dict[str, float]]:
        if self._inner is None:
            sizes = mlp_sizes(state)
            if sizes[0] != self.x.shape[1]:
                raise ConfigError(f"the model takes {sizes[0]} inputs, the local data has {self.x.shape[1]} features")
            self._inner = MLPTrainer(MLP(sizes, seed=0), self.x, self.y)
        return self._inner(state, train, seed)


def make_trainer(run: RunConfig, x: np.ndarray, y: np.ndarray, factory: str = "") -> Trainer:
    """The numpy trainer for [model] name "mlp"/"softmax"; otherwise `factory`
    ("package.module:function", called as function(run, x, y)), imported only now."""
    if not factory:
        if run.model.name not in NUMPY_MODELS:
            raise ConfigError(
                f"model {run.model.name!r} has no numpy trainer (known: {list(NUMPY_MODELS)}); pass "
                "--trainer package.module:function to use another one (training.fl.mqtt:trainer: the torch "
                "models of training/)"
            )
        check_local_data(run, x, y, "the local data")
        return NumpyTrainer(x, y)
    return import_factory(factory, "--trainer")(run, x, y)
