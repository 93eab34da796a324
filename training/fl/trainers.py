"""Torch trainers for fedcore's RoundClient: numpy state in, numpy state out.

One `TorchWorker` holds the torch model (clients of a simulation train one
after the other, so they share it); a `ClientTrainer` is one client's data
and is the callable ``(state, train_config, seed) -> (state, num_samples,
metrics)`` that fedcore.rounds expects. The same seed gives the same result:
the data order comes from a torch.Generator seeded with it.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from fedcore.rounds import TrainConfig

from .qat import quantized_parameters

__all__ = ["TorchWorker", "ClientTrainer", "augment_batch"]

Tensors = Dict[str, np.ndarray]


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flips and random crops of a zero-padded batch (CIFAR's usual augmentation)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    return _crop(padded, dy, dx, h, w)


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Each image's h x w window at (dy, dx) of the padded batch."""
    n, c = padded.shape[:2]
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, padded.shape[3])
    padded = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(3, cols)


class TorchWorker:
    """The torch model of a simulation and how its state maps to fedcore tensors.

    exchanged: the state-dict entries that travel (all float parameters and
    buffers, or for LoRA only the trainable ones); qat_bits: train with
    fake-quantized weights and return the quantized ones.
    """

    def __init__(self, model: nn.Module, exchanged: Optional[Sequence[str]] = None,
                 device: str = "cpu", qat_bits: int = 0, augment: bool = False):
        self.model = model.to(device)
        self.device = torch.device(device)
        state = self.model.state_dict()
        if exchanged is None:
            exchanged = [n for n, v in state.items() if v.is_floating_point()]
        missing = [n for n in exchanged if n not in state]
        if missing:
            raise RuntimeError(f"exchanged tensors not in the model: {missing}")
        self.exchanged: List[str] = list(exchanged)
        self.qat_bits = int(qat_bits)
        self.augment = augment

    def get_state(self) -> Tensors:
        state = self.model.state_dict()
        return {n: state[n].detach().cpu().numpy().astype(np.float32, copy=True) for n in self.exchanged}

    def set_state(self, tensors: Tensors) -> None:
        if set(tensors) != set(self.exchanged):
            raise RuntimeError(f"state has tensors {sorted(set(tensors) ^ set(self.exchanged))} "
                               "that the model does not exchange (or lacks some)")
        current = self.model.state_dict()
        with torch.no_grad():
            for name, value in tensors.items():
                current[name].copy_(torch.from_numpy(np.asarray(value, np.float32)).view_as(current[name]))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.qat_bits:
            return functional_call(self.model, quantized_parameters(self.model, self.qat_bits), (x,))
        return self.model(x)

    def train(self, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, seed: int) -> float:
        """Local SGD with momentum (fresh optimizer each round); returns the mean loss."""
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, foreach=False)
        self.model.train()
        total, count = 0.0, 0
        for _ in range(config.epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), config.batch_size):
                index = order[start:start + config.batch_size]
                batch = x[index]
                if self.augment:
                    batch = augment_batch(batch, generator)
                batch, target = batch.to(self.device), y[index].to(self.device)
                loss = nn.functional.cross_entropy(self._forward(batch), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(index)
                count += len(index)
        if self.qat_bits:
            # What the client sends is the quantized model.
            with torch.no_grad():
                for name, value in quantized_parameters(self.model, self.qat_bits, False).items():
                    self.model.get_parameter(name).copy_(value)
        return total / max(count, 1)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> Tuple[float, float]:
        """(accuracy, mean cross-entropy) of the current model."""
        self.model.eval()
        correct, loss = 0, 0.0
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].to(self.device)
            target = y[start:start + batch_size].to(self.device)
            logits = self._forward(batch)
            loss += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
        return correct / max(len(x), 1), loss / max(len(x), 1)


class ClientTrainer:
    """One client's data: the fedcore.rounds trainer callable."""

    def __init__(self, worker: TorchWorker, x: torch.Tensor, y: torch.Tensor):
        if len(x) == 0:
            raise ValueError("a client has no training samples")
        self.worker, self.x, self.y = worker, x, y

    def __call__(self, state: Tensors, config: TrainConfig, seed: int) -> Tuple[Tensors, int, Dict[str, float]]:
        self.worker.set_state(state)
        loss = self.worker.train(self.x, self.y, config, seed)
        return self.worker.get_state(), len(self.x), {"loss": loss}
