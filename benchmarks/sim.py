"""The simulation's engines side by side: `make bench-sim`.

    python -m benchmarks.sim                      # every section on this machine's device
    python -m benchmarks.sim --only cifar --rounds 3 --device cuda

Each section runs one config with every engine in this process, from the same data and
model, a few rounds each, and prints seconds a round (median; the server's aggregation and
every client's encoding included, the evaluation not) and images trained a second:

  cifar    the FLoCoRA thesis' Table-7 FedAvg round (configs/fl/studies/flocora_table7.toml:
           ResNet-8 64/128/256, 10 of 100 clients of 500 CIFAR-10 images, 5 local epochs of
           batch 32); on a CPU with 1 local epoch (--epochs), the full round being minutes there
  fmnist   the UNIFESP setup (MLP-128, Fashion-MNIST, 10 clients, 1 epoch)

Engines: sequential (one client after another), batched (the clients in lockstep), vmap
(one vectorised step for all of them) and, where flwr and ray are installed (the `scale`
extra), flower: Flower's simulation engine on a local Ray, each ClientApp with the run's
threads (on a GPU, 8 ClientApps sharing it). Targets: on a GPU the Table-7 round with vmap
in at most 1.8 s and at least 5x Flower's engine; on a CPU the engine `auto` picks (batched)
no slower than sequential (a ratio of at least 0.95: the machines are noisy). Exit status as
benchmarks/verdict.py says.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

from benchmarks import selected_sections  # noqa: E402
from benchmarks.verdict import SHARED_DATA, Verdict, fashion_mnist_missing  # noqa: E402
from fedcore.experiment import read_toml  # noqa: E402
from training.fl.config import apply_overrides, load_config  # noqa: E402
from training.fl.report import format_table  # noqa: E402

CIFAR = os.path.join(SHARED_DATA, "cifar10", "cifar10-jpg.tar.gz")
GPU_ROUND_TARGET_S = 1.8
GPU_FLOWER_RATIO_TARGET = 5.0
CPU_RATIO_TARGET = 0.95
GPU_ACTORS = 8  # Flower ClientApps sharing the GPU


def _cifar_settings(device: str, epochs: Optional[int]) -> Dict[str, Any]:
    from training.fl.study import load_study

    study = load_study("flocora_table7")
    settings = study.settings(study.variants[0], 0)
    overrides: Dict[str, Any] = {"simulation.device": device, "data.path": CIFAR, "data.test_limit": 1000}
    if epochs:
        overrides["federation.train.epochs"] = epochs
    return apply_overrides(settings, overrides)


def _fmnist_settings(device: str, epochs: Optional[int]) -> Dict[str, Any]:
    settings = read_toml(os.path.join("configs", "fl", "fmnist_mlp.toml"))
    overrides: Dict[str, Any] = {"simulation.device": device, "data.test_limit": 1000}
    if epochs:
        overrides["federation.train.epochs"] = epochs
    return apply_overrides(settings, overrides)


def time_engines(settings: Dict[str, Any], engines: List[str], rounds: int) -> List[Dict[str, Any]]:
    """Run `rounds` rounds of `settings` with each engine on the same data; per engine the
    seconds of each round and its images a second."""
    import torch

    from training.fl.simulation import build, load_data, run_setup

    settings = apply_overrides(settings, {"federation.rounds": rounds, "simulation.eval_every": 10 ** 6})
    run, base = load_config(settings)
    torch.set_num_threads(base.threads)
    data = load_data(run, base)
    out = []
    for engine in engines:
        overrides: Dict[str, Any] = {"simulation.engine": engine}
        if engine == "flower":
            on_gpu = base.device.startswith("cuda") or (base.device == "auto" and torch.cuda.is_available())
            overrides["simulation.flower"] = {"client_cpus": 1, "client_gpus": 1 / GPU_ACTORS} if on_gpu else {
                "client_cpus": base.threads}
        run, sim = load_config(apply_overrides(settings, overrides))
        setup = build(run, sim, data)
        rows, _ = run_setup(setup, progress=False)
        seconds = [r["train_s"] for r in rows]
        selected = rows[0]["selected"]
        images = sum(len(c.trainer) for c in setup.clients.values()) / len(setup.clients) * selected
        images *= run.federation.train.epochs
        median = statistics.median(seconds)
        out.append({"engine": engine, "device": str(setup.worker.device), "rounds": seconds,
                    "median_s": median, "images_per_s": images / median, "clients": selected})
        print(f"  {engine:10s} {', '.join(f'{s:.2f}' for s in seconds)} s a round", flush=True)
    return out


def report(name: str, results: List[Dict[str, Any]], verdict: Verdict, target_engine: str, on_gpu: bool) -> None:
    base = next(r for r in results if r["engine"] == "sequential")
    rows = [[r["engine"], r["device"], f"{r['median_s']:.2f}", f"{r['images_per_s']:.0f}",
             f"{base['median_s'] / r['median_s']:.2f}x"] for r in results]
    print(format_table(["engine", "device", "s a round (median)", "images/s", "speed vs sequential"], rows))
    chosen = next(r for r in results if r["engine"] == target_engine)
    ratio = base["median_s"] / chosen["median_s"]
    flower = next((r for r in results if r["engine"] == "flower"), None)
    if on_gpu and name == "cifar":
        verdict.target(f"{name}: Table-7 FedAvg round with {target_engine} {chosen['median_s']:.2f} s "
                       f"(<= {GPU_ROUND_TARGET_S} s; sequential {base['median_s']:.2f} s, {ratio:.1f}x)",
                       chosen["median_s"] <= GPU_ROUND_TARGET_S)
        if flower is not None:
            speed = flower["median_s"] / chosen["median_s"]
            verdict.target(f"{name}: {target_engine} {speed:.1f}x Flower's engine (>= {GPU_FLOWER_RATIO_TARGET}x)",
                           speed >= GPU_FLOWER_RATIO_TARGET)
    elif not on_gpu:
        verdict.target(f"{name}: {target_engine} {ratio:.2f}x the sequential engine's speed on the CPU "
                       f"(>= {CPU_RATIO_TARGET})", ratio >= CPU_RATIO_TARGET)


def main(argv: Optional[List[str]] = None) -> int:
    import torch

    sections = {"cifar": _cifar_settings, "fmnist": _fmnist_settings}
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(sections), help="sections: " + ", ".join(sections))
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per engine (default 3)")
    parser.add_argument("--epochs", type=int, help="local epochs (default: the config's on a GPU, 1 on a CPU)")
    args = parser.parse_args(argv)
    chosen = selected_sections(parser, args.only, sections)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    on_gpu = device.startswith("cuda")
    verdict = Verdict("bench-sim")
    engines = ["sequential", "batched", "vmap"]
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401

        engines.append("flower")
    except ImportError:
        verdict.not_run("flower", "flwr and ray", 'pip install -e ".[scale]"')
    target_engine = "vmap" if on_gpu else "batched"  # what engine = "auto" picks there
    for name in chosen:
        epochs = args.epochs or (None if on_gpu else 1)
        if name == "cifar" and not os.path.isfile(CIFAR):
            verdict.not_run("cifar", f"the CIFAR-10 archive {CIFAR}", "see ../shared/data/README.md")
            continue
        if name == "fmnist" and fashion_mnist_missing():
            verdict.not_run("fmnist", "Fashion-MNIST", "apt-get install dataset-fashion-mnist")
            continue
        settings = sections[name](device, epochs)
        run, _ = load_config(settings)
        print(f"\n{name}: {run.name}, model {run.model.name}, {run.data.num_clients} clients, "
              f"{run.federation.train.epochs} local epoch(s), {args.rounds} rounds per engine on {device}", flush=True)
        began = time.perf_counter()
        results = time_engines(settings, engines, args.rounds)
        report(name, results, verdict, target_engine, on_gpu)
        print(f"  ({time.perf_counter() - began:.0f} s)")
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
