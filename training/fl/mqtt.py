"""training/'s torch models in a federated run over MQTT: the hooks the
board-side programs import by name, only when asked to.

    python -m training.fl --config run.toml --export-initial runs/initial.fedc
    python -m coordinator --broker ... --config run.toml --initial-model runs/initial.fedc \\
        --evaluator training.fl.mqtt:evaluator
    python -m device fl --broker ... --config run.toml --client-id client-003 \\
        --trainer training.fl.mqtt:trainer

The model, its [simulation] method (standard, qat, lora) and the data
conversion are the simulation's own (build_worker, standardize), so a run over
MQTT and `python -m training.fl` with the same config give the same numbers
(bit for bit on the same machine: [simulation] threads fixes torch's thread
count on both sides, and float sums depend on it).
"""

from typing import Dict, Tuple

import numpy as np
import torch

from fedcore.atomic import atomic_write
from fedcore.container import Message, encode_message
from fedcore.errors import ConfigError
from fedcore.experiment import RunConfig

from ..datasets import input_shape, num_classes, standardize
from .config import SimulationConfig, load_config
from .simulation import build_worker, load_limited
from .trainers import ClientTrainer, TorchWorker

__all__ = ["trainer", "evaluator", "initial_state", "export_initial", "to_model_input"]


def _worker(run: RunConfig) -> Tuple[TorchWorker, SimulationConfig]:
    """The run's torch model (initialised from its seed, as in the simulation: a LoRA run's
    frozen base is rebuilt identically on every participant) on the run's thread count."""
    run, sim = load_config(dict(run.settings))
    torch.set_num_threads(sim.threads)
    return build_worker(run, sim, input_shape(run.data.dataset), num_classes(run.data.dataset))[0], sim


def to_model_input(x: np.ndarray, dataset: str) -> torch.Tensor:
    """A device's rows (N x H*W*C floats in [0, 1], pixels in H, W, C order as the
    board-side loaders flatten them) -> the standardized N x C x H x W batch of the simulation."""
    channels, height, width = input_shape(dataset)
    if x.ndim != 2 or x.shape[1] != channels * height * width:
        raise ConfigError(f"{dataset} images are {height}x{width}x{channels} = {channels * height * width} "
                          f"values a sample; the local data has shape {x.shape}")
    images = np.asarray(x, np.float32).reshape(len(x), height, width, channels).transpose(0, 3, 1, 2)
    return torch.from_numpy(standardize(images, dataset))


def trainer(run: RunConfig, x: np.ndarray, y: np.ndarray) -> ClientTrainer:
    """`python -m device fl --trainer training.fl.mqtt:trainer`: the run's torch model on this device's data."""
    classes = num_classes(run.data.dataset)
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise ConfigError(f"labels must lie in [0, {classes}) for {run.data.dataset}, got {y.min()}..{y.max()}")
    return ClientTrainer(_worker(run)[0], to_model_input(x, run.data.dataset), torch.from_numpy(y.astype(np.int64)))


def evaluator(run: RunConfig):
    """`python -m coordinator --evaluator training.fl.mqtt:evaluator`: accuracy and loss of a
    global model on the run's test split (data.test_limit samples, the simulation's subset)."""
    worker, sim = _worker(run)
    x, y = load_limited(run, "test", sim.download)

    def evaluate(state: Dict[str, np.ndarray]) -> Dict[str, float]:
        worker.set_state(dict(state))
        accuracy, loss = worker.evaluate(x, y)
        return {"accuracy": float(accuracy), "loss": float(loss)}

    return evaluate


def initial_state(run: RunConfig) -> Dict[str, np.ndarray]:
    """The round-0 global model of the run: the tensors its clients exchange."""
    return _worker(run)[0].get_state()


def export_initial(run: RunConfig, path: str) -> int:
    """Write the round-0 model as a float32 container (the coordinator's --initial-model); its length."""
    blob, _ = encode_message(Message(initial_state(run), 0, "initial", 0, "weights",
                                     {"run": run.name, "model": run.model.name}))
    atomic_write(path, blob)
    return len(blob)
