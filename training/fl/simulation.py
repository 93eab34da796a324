"""One federated run in process: fedcore's RoundServer and RoundClients with
torch trainers, evaluated every `eval_every` rounds.

    summary = run("configs/fl/fmnist_mlp.toml", {"federation.rounds": 5})

Every round is ``fedcore.rounds.simulate(server, clients, 1)``: the broadcast,
each selected client's encoded update and the server's validation and FedAvg
are the engine's, and bytes_up / bytes_down are its encoded message lengths.
With the batched or vmap engine (training.fl.trainers) the selected clients of
a round train together first; each then encodes its own update as it would have.
The data lives on the training device for the whole run.
"""

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from coordinator.dashboard import render_report, view_from_run_dir
from fedcore.atomic import atomic_write
from fedcore.compression import CompressionConfig, Compressor
from fedcore.container import Message, decode_message, encode_message
from fedcore.experiment import RunConfig, limit_rows, partition_clients
from fedcore.rounds import RoundClient, RoundResult, RoundServer, simulate

from ..datasets import input_shape, load_split, num_classes, to_float_nchw
from ..models import count_parameters, create_model
from .config import SimulationConfig, load_config
from .lora import apply_lora, exchanged_names
from .trainers import ClientTrainer, TorchWorker, resolve_engine

__all__ = ["Data", "Setup", "load_data", "build", "play_round", "run_rounds", "run_setup", "run", "describe_run"]


@dataclass
class Data:
    x: torch.Tensor        # float32 N x C x H x W, standardized
    y: torch.Tensor        # int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int


def load_limited(run: RunConfig, split: str, download: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """One split of the run's dataset as standardized NCHW tensors, limited to train_limit / test_limit."""
    spec = run.data
    limit = spec.train_limit if split == "train" else spec.test_limit
    images, labels = load_split(spec.dataset, split, spec.path, download=download)
    keep = limit_rows(len(labels), limit)
    images, labels = images[keep], labels[keep]
    return torch.from_numpy(to_float_nchw(images, spec.dataset)), torch.from_numpy(labels)


def load_data(run: RunConfig, sim: SimulationConfig) -> Data:
    """Both splits of the run's dataset, limited to train_limit / test_limit."""
    return Data(*load_limited(run, "train", sim.download), *load_limited(run, "test", sim.download),
                classes=num_classes(run.data.dataset))


@dataclass
class Setup:
    """Everything a run needs, built from its config and data."""

    run: RunConfig
    sim: SimulationConfig
    data: Data
    worker: TorchWorker
    server: RoundServer
    clients: Dict[str, RoundClient]
    validation: Dict[str, Tuple[torch.Tensor, torch.Tensor]]
    params_total: int
    engine: str = "sequential"

    def train_round(self, plan, selected: Mapping[str, RoundClient]):
        """The batched/vmap engines' hook for fedcore.rounds.simulate: every selected client's
        training result, computed together (None for the sequential engine)."""
        jobs = [client.trainer.job(*client.train_input(plan)) for client in selected.values()]
        results = self.worker.train_clients(self.data.x, self.data.y, jobs, plan.train, self.engine)
        return dict(zip(selected, results))


def build_worker(run: RunConfig, sim: SimulationConfig, in_shape, classes: int) -> Tuple[TorchWorker, int]:
    """The model, initialised from the run's seed (so every participant starts from it)."""
    torch.manual_seed(run.federation.seed)
    model = create_model(run.model.name, in_shape, classes, **dict(run.model.options))
    total = count_parameters(model)
    exchanged = None
    if sim.method == "lora":
        apply_lora(model, sim.lora.rank, sim.lora.alpha, sim.lora.train_full)
        exchanged = exchanged_names(model)
    qat_bits = sim.qat.bits if sim.method == "qat" else 0
    return TorchWorker(model, exchanged, sim.device, qat_bits, sim.augment, sim.precision), total


def _on_device(data: Data, device: torch.device) -> Data:
    """The run's data on its training device, copied once (pinned, asynchronously, to a GPU)."""
    def move(t: torch.Tensor) -> torch.Tensor:
        if device.type == "cuda":
            return t.pin_memory().to(device, non_blocking=True)
        return t.to(device)
    return Data(move(data.x), move(data.y), move(data.test_x), move(data.test_y), data.classes)


def build(run: RunConfig, sim: SimulationConfig, data: Data) -> Setup:
    worker, total = build_worker(run, sim, tuple(data.x.shape[1:]), data.classes)
    engine = resolve_engine(sim.engine, worker.model, worker.device)
    server = RoundServer(worker.get_state(), run.federation)
    parts = partition_clients(data.y.numpy(), run)
    data = _on_device(data, worker.device)
    clients, validation = {}, {}
    for client_id, index in parts.items():
        index = np.asarray(index)
        held = int(round(run.data.val_fraction * len(index)))
        if held:
            # The client's last samples (in the partition's shuffled order) are its validation set.
            val = torch.from_numpy(index[-held:]).to(worker.device)
            validation[client_id] = (data.x[val], data.y[val])
            index = index[:-held]
        rows = torch.from_numpy(index)
        clients[client_id] = RoundClient(client_id, ClientTrainer(worker, data.x, data.y, rows))
    return Setup(run, sim, data, worker, server, clients, validation, total, engine)


def machine_name(device: torch.device) -> str:
    """What a run ran on, for its tables: the GPU's name, or the CPU and its cores; torch's version."""
    import platform

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


def _float32_bytes(state: Mapping[str, np.ndarray]) -> int:
    """The length of one uncompressed float32 message of these tensors."""
    return len(encode_message(Message(dict(state), 1, "client-000", 1, "delta", {}))[0])


def _received_state(setup: Setup) -> Dict[str, np.ndarray]:
    """The final global model as a client decodes a whole-model broadcast of it."""
    downlink = CompressionConfig.from_dict(setup.run.federation.downlink)
    if setup.run.federation.broadcast == "delta":
        downlink = CompressionConfig(wire=downlink.wire)
    blob, _ = Compressor(downlink).compress(setup.server.global_state, round=1, sender="server")
    return decode_message(blob).tensors


def _evaluate(setup: Setup, state: Mapping[str, np.ndarray]) -> Dict[str, float]:
    setup.worker.set_state(dict(state))
    accuracy, loss = setup.worker.evaluate(setup.data.test_x, setup.data.test_y)
    out = {"accuracy": accuracy, "loss": loss}
    if setup.validation:
        correct = count = 0
        for x, y in setup.validation.values():
            acc, _ = setup.worker.evaluate(x, y)
            correct, count = correct + acc * len(y), count + len(y)
        out["val_accuracy"] = correct / max(count, 1)
    return out


def play_round(setup: Setup) -> RoundResult:
    """One round in this process: fedcore.rounds.simulate, the batched/vmap engines training
    the selected clients together."""
    together = setup.train_round if setup.engine not in ("sequential", "flower") else None
    return simulate(setup.server, setup.clients, 1, train_round=together)[0]


def run_rounds(setup: Setup, log: Optional[Callable[[Dict[str, Any]], None]] = None,
               progress: bool = True, play: Optional[Callable[[], RoundResult]] = None
               ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Run every round (each `play()`, by default `play_round(setup)`); return the per-round
    rows and the summary."""
    fed, sim = setup.run.federation, setup.sim
    reference = _float32_bytes(setup.server.global_state)
    rows: List[Dict[str, Any]] = []
    totals = {"up": 0, "down": 0, "float32": 0}
    reached: Optional[int] = None
    start = time.perf_counter()
    bar = _progress(range(1, fed.rounds + 1), setup.run.name, progress)
    for number in bar:
        began = time.perf_counter()
        result = play() if play is not None else play_round(setup)
        totals["up"] += result.bytes_up
        totals["down"] += result.bytes_down
        totals["float32"] += 2 * reference * len(result.selected)
        row: Dict[str, Any] = {
            "round": result.round, "selected": len(result.selected), "accepted": len(result.accepted),
            "rejected": len(result.rejected), "aggregated": result.aggregated,
            "bytes_up": result.bytes_up, "bytes_down": result.bytes_down,
            "cum_bytes_up": totals["up"], "cum_bytes_down": totals["down"],
            "cum_bytes": totals["up"] + totals["down"],
            "train_loss": float(np.mean([m.get("loss", math.nan) for m in result.client_metrics.values()]))
            if result.client_metrics else math.nan,
            "train_s": round(time.perf_counter() - began, 4),
        }
        if number % sim.eval_every == 0 or number == fed.rounds:
            row.update(_evaluate(setup, setup.server.global_state))
            if reached is None and sim.target_accuracy > 0 and row["accuracy"] >= sim.target_accuracy:
                reached = number
            bar.set_postfix(acc=f"{row['accuracy']:.4f}", MB=f"{row['cum_bytes'] / 1e6:.2f}")
        row["elapsed_s"] = round(time.perf_counter() - start, 3)
        rows.append(row)
        if log is not None:
            log(row)
    bar.close()
    evaluated = [r for r in rows if "accuracy" in r]
    received = _evaluate(setup, _received_state(setup))
    total = totals["up"] + totals["down"]
    summary = {
        "name": setup.run.name, "method": sim.method, "model": setup.run.model.name,
        "engine": setup.engine, "device": str(setup.worker.device), "precision": sim.precision,
        "machine": machine_name(setup.worker.device),
        "dataset": setup.run.data.dataset, "alpha": setup.run.data.alpha, "seed": fed.seed,
        "rounds": fed.rounds, "clients": len(setup.clients),
        "params_total": setup.params_total,
        "params_exchanged": int(sum(v.size for v in setup.server.global_state.values())),
        "final_accuracy": evaluated[-1]["accuracy"], "final_loss": evaluated[-1]["loss"],
        "best_accuracy": max(r["accuracy"] for r in evaluated),
        "final_accuracy_received": received["accuracy"],
        "bytes_up": totals["up"], "bytes_down": totals["down"], "total_bytes": total,
        "float32_total_bytes": totals["float32"],
        "ratio_vs_float32": totals["float32"] / total if total else math.inf,
        "target_accuracy": sim.target_accuracy or None, "rounds_to_target": reached,
        "wall_s": round(time.perf_counter() - start, 2),
    }
    if "val_accuracy" in evaluated[-1]:
        summary["final_val_accuracy"] = evaluated[-1]["val_accuracy"]
    return rows, summary


class _NoBar:
    """What run_rounds needs of a tqdm bar, where tqdm is not installed (a bare GPU image)."""

    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def _progress(iterable, name: str, shown: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, desc=name, disable=not shown, leave=False)


def run_setup(setup: Setup, log: Optional[Callable[[Dict[str, Any]], None]] = None,
              progress: bool = True) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """run_rounds on the setup's engine: in this process, or on Flower's (Ray)."""
    if setup.engine == "flower":
        from .flower import run_on_flower  # flwr and ray: the `scale` extra

        return run_on_flower(setup, log, progress)
    return run_rounds(setup, log, progress)


def output_dir(run: RunConfig, sim: SimulationConfig) -> str:
    return sim.out or os.path.join("runs", "fl", run.name)


def run(source: Any, overrides: Optional[Mapping[str, Any]] = None, progress: bool = True,
        plots: bool = True, data: Optional[Data] = None) -> Dict[str, Any]:
    """Load the config, run it, write rounds.jsonl, summary.json, report.html and the plots; return
    the summary."""
    run_config, sim = load_config(source, overrides)
    torch.set_num_threads(sim.threads)
    data = data if data is not None else load_data(run_config, sim)
    setup = build(run_config, sim, data)
    out = output_dir(run_config, sim)
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, "config.json"), json.dumps(run_config.settings, indent=1, default=str))
    with open(os.path.join(out, "rounds.jsonl"), "w") as handle:
        def log(row: Dict[str, Any]) -> None:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
        rows, summary = run_setup(setup, log, progress)
    atomic_write(os.path.join(out, "summary.json"), json.dumps(summary, indent=1))
    if sim.save_model:  # the global model, lossless, in our own container (no pickle)
        message = Message(setup.server.global_state, summary["rounds"], "server", 0, "weights",
                          {"run": run_config.name, "model": run_config.model.name})
        atomic_write(os.path.join(out, "final.fedc"), encode_message(message)[0])
    # The page a testbed run gets (coordinator.dashboard), so a simulated and a physical run look alike.
    atomic_write(os.path.join(out, "report.html"), render_report(view_from_run_dir(out)))
    if plots:
        from .report import plot_rounds
        plot_rounds({run_config.name: rows}, os.path.join(out, "accuracy.png"),
                    f"{run_config.name}: {run_config.data.dataset}, {summary['clients']} clients, "
                    f"{summary['rounds']} rounds, seed {summary['seed']}")
    return summary


def describe_run(source: Any, overrides: Optional[Mapping[str, Any]] = None) -> str:
    """Parameter counts of a config's model: total, exchanged, and one float32 message."""
    run_config, sim = load_config(source, overrides)
    in_shape = input_shape(run_config.data.dataset)
    classes = num_classes(run_config.data.dataset)
    worker, total = build_worker(run_config, sim, in_shape, classes)
    state = worker.get_state()
    lines = [f"{run_config.name}: model {run_config.model.name} {dict(run_config.model.options)}, "
             f"method {sim.method}, input {in_shape}, {classes} classes"]
    for name, value in state.items():
        lines.append(f"  {name:44s} {str(value.shape):22s} {value.size:>10,d}")
    exchanged = sum(v.size for v in state.values())
    lines.append(f"  parameters: {total:,d} in the model, {exchanged:,d} exchanged "
                 f"({_float32_bytes(state):,d} bytes as one float32 message)")
    return "\n".join(lines)
