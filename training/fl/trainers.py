"""Local training of federated clients in torch: one client at a time, or a round's clients together.

A client's local training is fixed by the model it starts from, its samples, the round's
TrainConfig and its seed. The seed draws the data order and the augmentation of every step
once, before the first step (`draw_schedule`), so every engine sees exactly the same batches:

    sequential   one client after another: what a board computes (`ClientTrainer`)
    batched      the round's clients step in lockstep: their batches are gathered, augmented and
                 their SGD steps applied together, each client's forward/backward is its own call;
                 the same numbers as sequential, bit for bit
    vmap         the same lockstep with one vectorised forward/backward for all the clients
                 (torch.func.vmap over stacked parameters: grouped convolutions on a GPU); equal
                 to the others within float tolerance. BatchNorm models are refused (their running
                 statistics would have to be updated per client inside vmap)

Nothing synchronises with the host inside a round: the schedule goes to the device once, losses
add up on the device, the SGD step is a few foreach kernels, and the trained models come back
as one flat copy per client. A client whose data runs out early is masked out of the later
steps, optimizer state included; a short last batch is padded and its padding masked.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from fedcore.errors import ConfigError
from fedcore.rounds import TrainConfig

from .config import ENGINES, PRECISIONS
from .qat import fake_quantize, quantize, quantized_names

__all__ = ["Schedule", "draw_schedule", "augment", "sgd_step", "LocalJob", "TorchWorker", "ClientTrainer",
           "resolve_engine", "resolve_device"]

Tensors = Dict[str, np.ndarray]
CROP_PAD = 4  # CIFAR's usual augmentation: random 32x32 crops of the image zero-padded by 4


@dataclass
class Schedule:
    """Every step of one client's local training: which samples, in which order, augmented how."""

    positions: torch.Tensor          # int64 [steps, batch]: positions in the client's samples, -1 = padding
    sizes: List[int]                 # valid samples of each step (a short last batch per epoch)
    flips: Optional[torch.Tensor]    # bool [steps, batch]: mirror the image (augmentation only)
    shifts: Optional[torch.Tensor]   # int64 [steps, batch, 2]: crop offsets (dy, dx) in [0, 2 * CROP_PAD]


def draw_schedule(num_samples: int, epochs: int, batch_size: int, seed: int, augment: bool) -> Schedule:
    """A new permutation each epoch (PyTorch's DataLoader with shuffle=True, drop_last=False) and,
    with `augment`, one flip and one crop offset for each sample of each epoch, from `seed` alone."""
    if num_samples < 1:
        raise ValueError("a client has no training samples")
    generator = torch.Generator().manual_seed(int(seed))
    per_epoch = -(-num_samples // batch_size)
    width = per_epoch * batch_size

    def padded(values: torch.Tensor, fill) -> torch.Tensor:
        out = torch.full((epochs, width) + values.shape[2:], fill, dtype=values.dtype)
        out[:, :num_samples] = values
        return out.view((epochs * per_epoch, batch_size) + values.shape[2:])

    orders = torch.stack([torch.randperm(num_samples, generator=generator) for _ in range(epochs)])
    flips = shifts = None
    if augment:
        flips = padded(torch.rand(epochs, num_samples, generator=generator) < 0.5, False)
        shifts = padded(torch.randint(0, 2 * CROP_PAD + 1, (epochs, num_samples, 2), generator=generator), 0)
    sizes = [min(batch_size, num_samples - s * batch_size) for s in range(per_epoch)] * epochs
    return Schedule(padded(orders, -1), sizes, flips, shifts)


def augment(x: torch.Tensor, flips: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Mirror the flagged images, then crop each at its offset from the zero-padded batch."""
    n, c, h, w = x.shape
    x = torch.where(flips.view(n, 1, 1, 1), x.flip(3), x)
    padded = nn.functional.pad(x, (CROP_PAD,) * 4)
    rows = (shifts[:, 0].view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    padded = padded.gather(2, rows.expand(n, c, h, padded.shape[3]))
    cols = (shifts[:, 1].view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    return padded.gather(3, cols.expand(n, c, h, w))


@torch.no_grad()
def sgd_step(params: List[torch.Tensor], grads: List[torch.Tensor], buffers: List[torch.Tensor],
             config: TrainConfig, active: Optional[torch.Tensor] = None) -> None:
    """torch.optim.SGD's update (weight decay, momentum with zero-started buffers, Nesterov), the
    same arithmetic in the same order, as foreach kernels. `active` (bool [K]) masks the clients
    of stacked [K, ...] tensors that have no step now: their parameters and buffers stay as they are."""
    def masked(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(active.view((-1,) + (1,) * (old.dim() - 1)), new, old)

    if config.weight_decay:
        grads = torch._foreach_add(grads, params, alpha=config.weight_decay)
    step = grads
    if config.momentum:
        if active is None:
            torch._foreach_mul_(buffers, config.momentum)
            torch._foreach_add_(buffers, grads)
        else:
            moved = torch._foreach_mul(buffers, config.momentum)
            torch._foreach_add_(moved, grads)
            for buffer, new in zip(buffers, moved):
                buffer.copy_(masked(new, buffer))
        step = torch._foreach_add(grads, buffers, alpha=config.momentum) if config.nesterov else buffers
    if active is not None:
        step = [masked(s, torch.zeros_like(s)) for s in step]
    torch._foreach_add_(params, step, alpha=-config.lr)


@dataclass
class LocalJob:
    """One client's local training: the model it starts from (the exchanged tensors), the
    indices of its samples in the shared data tensors, and its seed."""

    state: Mapping[str, np.ndarray]
    rows: torch.Tensor
    seed: int


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def resolve_device(requested: str) -> torch.device:
    """The torch device of a run: "auto" is the GPU when there is one; a GPU asked for that
    is not there is a clear error, not a crash in the first round."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ConfigError(f"simulation.device: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"simulation.device = {requested!r} but this torch ({torch.__version__}) sees no CUDA "
                          "GPU: use device = \"cpu\" (or \"auto\")")
    return device


def resolve_engine(requested: str, model: nn.Module, device: torch.device) -> str:
    """The engine a run uses: "auto" is vmap on a GPU, batched elsewhere or for BatchNorm models
    ("flower" is Flower's engine, whose clients train one at a time, as sequential)."""
    if requested not in ENGINES:
        raise ConfigError(f"simulation.engine must be one of {list(ENGINES)}, got {requested!r}")
    if requested == "vmap" and has_batchnorm(model):
        raise ConfigError("simulation.engine = \"vmap\" cannot train a BatchNorm model (its running statistics "
                          "would change inside vmap): use model norm = \"gn\", or engine \"batched\"")
    if requested == "auto":
        return "vmap" if device.type == "cuda" and not has_batchnorm(model) else "batched"
    return requested


class TorchWorker:
    """The torch model of a run, how its state maps to fedcore tensors, and its local training.

    exchanged: the state-dict entries that travel (all float parameters and buffers, or for
    LoRA only the trainable ones); qat_bits: train with fake-quantized weights and return the
    quantized ones; precision "bf16": forward passes under bfloat16 autocast (CUDA).
    """

    def __init__(self, model: nn.Module, exchanged: Optional[Sequence[str]] = None, device="cpu",
                 qat_bits: int = 0, augment: bool = False, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ConfigError(f"simulation.precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device)
        state = self.model.state_dict()
        if exchanged is None:
            exchanged = [n for n, v in state.items() if v.is_floating_point()]
        missing = [n for n in exchanged if n not in state]
        if missing:
            raise RuntimeError(f"exchanged tensors not in the model: {missing}")
        self.exchanged: List[str] = list(exchanged)
        self.qat_bits = int(qat_bits)
        self.augment = augment
        self.precision = precision
        self.trainable = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self._quantized = {f"{m}.weight" if m else "weight" for m in quantized_names(self.model)}

    def get_state(self) -> Tensors:
        state = self.model.state_dict()
        return {n: state[n].detach().cpu().numpy().astype(np.float32, copy=True) for n in self.exchanged}

    def set_state(self, tensors: Mapping[str, np.ndarray]) -> None:
        if set(tensors) != set(self.exchanged):
            raise RuntimeError(f"state has tensors {sorted(set(tensors) ^ set(self.exchanged))} "
                               "that the model does not exchange (or lacks some)")
        current = self.model.state_dict()
        with torch.no_grad():
            for name, value in tensors.items():
                current[name].copy_(torch.from_numpy(np.asarray(value, np.float32)).view_as(current[name]))

    def _logits(self, tensors: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The model's output with `tensors` in place of its own (weights fake-quantized under QAT)."""
        if self.qat_bits:
            tensors = {n: fake_quantize(v, self.qat_bits) if n in self._quantized else v
                       for n, v in tensors.items()}
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            return functional_call(self.model, dict(tensors), (x,)).float()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> Tuple[float, float]:
        """(accuracy, mean cross-entropy) of the current model; one host sync at the end."""
        self.model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        own = dict(self.model.named_parameters())
        own.update(self.model.named_buffers())
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].to(self.device, non_blocking=True)
            target = y[start:start + batch_size].to(self.device, non_blocking=True)
            logits = self._logits(own, batch)
            loss += nn.functional.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(1) == target).sum()
        count = max(len(x), 1)
        return int(correct) / count, float(loss) / count

    # ------------------------------------------------------------------ local training

    def _start(self, job: LocalJob) -> Dict[str, torch.Tensor]:
        """The full tensor set a client starts from: its exchanged state over the model's own."""
        names = self.exchanged
        flat = torch.from_numpy(np.concatenate([np.asarray(job.state[n], np.float32).ravel() for n in names]))
        if self.device.type == "cuda":
            flat = flat.pin_memory()
        flat = flat.to(self.device, non_blocking=True)
        own = dict(self.model.named_parameters())
        own.update(self.model.named_buffers())
        out = {n: t.detach() for n, t in own.items()}
        start = 0
        for name in names:
            size = own[name].numel()
            out[name] = flat[start:start + size].view_as(own[name])
            start += size
        return out

    def train_clients(self, x: torch.Tensor, y: torch.Tensor, jobs: Sequence[LocalJob], config: TrainConfig,
                      engine: str = "batched") -> List[Tuple[Tensors, int, Dict[str, float]]]:
        """Train each job's client from its model on its rows of (x, y); return, per job,
        (trained exchanged tensors, number of samples, {"loss": mean training loss})."""
        if engine not in ("sequential", "batched", "vmap"):
            raise ValueError(f"engine must be sequential, batched or vmap here, got {engine!r}")
        if engine == "sequential":
            return [result for job in jobs for result in self.train_clients(x, y, [job], config, "batched")]
        schedules = [draw_schedule(len(job.rows), config.epochs, config.batch_size, job.seed, self.augment)
                     for job in jobs]
        starts = [self._start(job) for job in jobs]
        self.model.train()
        if engine == "vmap":
            if has_batchnorm(self.model):
                raise ConfigError("the vmap engine cannot train a BatchNorm model: use norm = \"gn\"")
            trained, loss_sums = self._train_vmap(x, y, jobs, schedules, starts, config)
        else:
            trained, loss_sums = self._train_lockstep(x, y, jobs, schedules, starts, config)
        if self.qat_bits:
            with torch.no_grad():  # what the client sends is the quantized model
                for tensors in trained:
                    for name in self._quantized:
                        tensors[name] = quantize(tensors[name], self.qat_bits)
        seen = [sum(s.sizes) for s in schedules]
        losses = loss_sums.cpu().tolist()
        return [(self._to_numpy(tensors), len(job.rows), {"loss": loss / count})
                for tensors, job, loss, count in zip(trained, jobs, losses, seen)]

    def _to_numpy(self, tensors: Mapping[str, torch.Tensor]) -> Tensors:
        """The exchanged tensors, brought back to the host in one copy."""
        flat = torch.cat([tensors[n].detach().reshape(-1).float() for n in self.exchanged]).cpu().numpy()
        out, start = {}, 0
        for name in self.exchanged:
            shape = tuple(tensors[name].shape)
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = flat[start:start + size].reshape(shape).copy()
            start += size
        return out

    def _batch(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, schedule: Schedule, step: int,
               size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        index = rows[schedule.positions[step, :size]]
        batch = x[index]
        if self.augment:
            batch = augment(batch, schedule.flips[step, :size], schedule.shifts[step, :size])
        return batch, y[index]

    def _train_lockstep(self, x, y, jobs, schedules, starts, config):
        """Each client's own forward/backward, one SGD step for every active client."""
        params = [{n: t[n].clone().requires_grad_() for n in self.trainable} for t in starts]
        # Buffers change as the model trains (BatchNorm's running statistics): each client its own.
        owned = {n for n, _ in self.model.named_buffers()} | set(self.exchanged)
        others = [{n: v.clone() if n in owned else v for n, v in t.items() if n not in self.trainable}
                  for t in starts]
        buffers = [{n: torch.zeros_like(p) for n, p in client.items()} for client in params]
        schedules = [_on(s, self.device) for s in schedules]
        loss_sums = torch.zeros(len(jobs), dtype=torch.float64, device=self.device)
        for step in range(max(len(s.sizes) for s in schedules)):
            active = [k for k, s in enumerate(schedules) if step < len(s.sizes)]
            flat_params, flat_grads, flat_buffers = [], [], []
            for k in active:
                size = schedules[k].sizes[step]
                batch, target = self._batch(x, y, jobs[k].rows, schedules[k], step, size)
                loss = nn.functional.cross_entropy(self._logits({**others[k], **params[k]}, batch), target)
                own = [params[k][n] for n in self.trainable]
                flat_params += own
                flat_grads += torch.autograd.grad(loss, own)
                flat_buffers += [buffers[k][n] for n in self.trainable]
                loss_sums[k] += loss.detach() * size
            sgd_step(flat_params, flat_grads, flat_buffers, config)
        return [{**o, **{n: p.detach() for n, p in c.items()}} for o, c in zip(others, params)], loss_sums

    def _train_vmap(self, x, y, jobs, schedules, starts, config):
        """One vectorised forward/backward over the stacked parameters of every client."""
        from torch.func import vmap

        k_count = len(jobs)
        stacked = {n: torch.stack([t[n] for t in starts]).requires_grad_() for n in self.trainable}
        shared = {n: t for n, t in starts[0].items() if n not in self.trainable}
        differs = [n for n in shared if n in self.exchanged
                   and any(not torch.equal(t[n], shared[n]) for t in starts[1:])]
        if differs:  # a frozen tensor that differs between clients would have to be stacked too
            raise RuntimeError(f"clients start from different frozen tensors {differs[:3]}: not vectorisable")
        buffers = [torch.zeros_like(p) for p in stacked.values()]
        steps = [len(s.sizes) for s in schedules]
        total = max(steps)
        batch = schedules[0].positions.shape[1]
        positions = torch.full((k_count, total, batch), -1, dtype=torch.int64)
        for k, s in enumerate(schedules):
            positions[k, :steps[k]] = s.positions
        longest = max(len(job.rows) for job in jobs)
        rows = torch.zeros((k_count, longest), dtype=torch.int64, device=self.device)
        for k, job in enumerate(jobs):
            rows[k, :len(job.rows)] = job.rows
        flips = shifts = None
        if self.augment:
            flips = torch.zeros((k_count, total, batch), dtype=torch.bool)
            shifts = torch.zeros((k_count, total, batch, 2), dtype=torch.int64)
            for k, s in enumerate(schedules):
                flips[k, :steps[k]], shifts[k, :steps[k]] = s.flips, s.shifts
            flips, shifts = _to_device(flips, self.device), _to_device(shifts, self.device)
        positions = _to_device(positions, self.device)
        valid_all = positions >= 0
        counts_all = valid_all.sum(2).clamp_min(1)
        active_all = valid_all.any(2)  # [K, steps]: a client takes a step while its schedule lasts
        forward = vmap(lambda tensors, xs: self._logits({**shared, **tensors}, xs))
        loss_sums = torch.zeros(k_count, dtype=torch.float64, device=self.device)
        names = list(stacked)
        for step in range(total):
            valid = valid_all[:, step]
            index = rows.gather(1, positions[:, step].clamp_min(0))
            images = x[index.view(-1)]
            if self.augment:
                images = augment(images, flips[:, step].reshape(-1), shifts[:, step].reshape(-1, 2))
            logits = forward(stacked, images.view((k_count, batch) + images.shape[1:]))
            losses = nn.functional.cross_entropy(logits.flatten(0, 1), y[index.view(-1)],
                                                 reduction="none").view(k_count, batch)
            per_client = (losses * valid).sum(1) / counts_all[:, step]
            grads = torch.autograd.grad(per_client.sum(), [stacked[n] for n in names])
            active = None if all(step < s for s in steps) else active_all[:, step]
            sgd_step([stacked[n] for n in names], list(grads), buffers, config, active)
            loss_sums += per_client.detach() * counts_all[:, step]  # zero for a client without a step
        return [{**shared, **{n: p[k].detach() for n, p in stacked.items()}} for k in range(k_count)], loss_sums


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One host-to-device copy (pinned, asynchronous on a GPU)."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _on(schedule: Schedule, device: torch.device) -> Schedule:
    def move(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if tensor is None else _to_device(tensor, device)

    return Schedule(move(schedule.positions), schedule.sizes, move(schedule.flips), move(schedule.shifts))


class ClientTrainer:
    """One client's data: the fedcore.rounds trainer callable ``(state, config, seed) ->
    (state, num_samples, metrics)``. `rows` picks the client's samples out of shared
    (x, y) tensors (the simulation's); without it, x and y are the client's own."""

    def __init__(self, worker: TorchWorker, x: torch.Tensor, y: torch.Tensor,
                 rows: Optional[torch.Tensor] = None):
        if (len(x) if rows is None else len(rows)) == 0:
            raise ValueError("a client has no training samples")
        device = worker.device
        self.worker = worker
        self.x, self.y = x.to(device), y.to(device)
        self.rows = (torch.arange(len(x)) if rows is None else rows).to(device)

    def __len__(self) -> int:
        return len(self.rows)

    def job(self, state: Mapping[str, np.ndarray], seed: int) -> LocalJob:
        return LocalJob(state, self.rows, seed)

    def __call__(self, state: Tensors, config: TrainConfig, seed: int) -> Tuple[Tensors, int, Dict[str, float]]:
        return self.worker.train_clients(self.x, self.y, [self.job(state, seed)], config, "sequential")[0]


def steps_per_round(num_samples: int, config: TrainConfig) -> int:
    """The SGD steps one client takes in a round."""
    return config.epochs * math.ceil(num_samples / config.batch_size)
