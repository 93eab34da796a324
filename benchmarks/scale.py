"""1,000 simulated clients on our engine and on Flower's (Ray): `make bench-scale`.

    python -m benchmarks.scale                     # 1,000 clients, 10 % a round, 20 rounds, each engine
    python -m benchmarks.scale --clients 200 --rounds 5

The UNIFESP setup scaled out: Fashion-MNIST, MLP-128, Flower's equal-size Dirichlet split
(alpha 0.5) over 1,000 clients of 60 images, 100 selected a round, 1 local epoch, 8-bit
updates. Each engine runs the same config in turn and prints seconds a round (median) and
peak memory: our process, or for Flower the driver and every Ray process (sampled every
0.2 s). The one target: on a CPU both engines end with the same accuracy and bytes (our
batched engine and Flower's sequential clients compute the same numbers); the figures say
when Flower's engine is worth its cost (a cluster).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

from benchmarks.memory import PeakMemory  # noqa: E402
from benchmarks.verdict import Verdict, fashion_mnist_missing  # noqa: E402
from fedcore.experiment import read_toml  # noqa: E402
from training.fl.config import apply_overrides, load_config  # noqa: E402
from training.fl.report import format_table  # noqa: E402


def scale_settings(clients: int, rounds: int) -> Dict[str, Any]:
    settings = read_toml(os.path.join("configs", "fl", "fmnist_mlp.toml"))
    return apply_overrides(settings, {
        "name": f"scale-{clients}", "data.num_clients": clients, "data.partition": "by-client", "data.alpha": 0.5,
        "data.test_limit": 2000, "federation.rounds": rounds, "federation.fraction": 0.1,
        "federation.min_clients": max(1, clients // 10), "federation.update_kind": "delta",
        "compression.uplink": {"wire": {"bits": 8}}, "simulation.eval_every": rounds, "simulation.threads": 1,
        "simulation.save_model": False})


def measure(settings: Dict[str, Any], engine: str, data) -> Dict[str, Any]:
    from training.fl.simulation import build, run_setup

    run, sim = load_config(apply_overrides(settings, {"simulation.engine": engine}))
    began = time.perf_counter()
    with PeakMemory(ray=engine == "flower") as memory:
        rows, summary = run_setup(build(run, sim, data), progress=False)
    seconds = [r["train_s"] for r in rows]
    return {"engine": summary["engine"], "median_s": statistics.median(seconds), "first_s": seconds[0],
            "wall_s": time.perf_counter() - began, "peak_mb": memory.peak / 1e6,
            "accuracy": summary["final_accuracy"], "bytes": summary["total_bytes"]}


def main(argv: Optional[List[str]] = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000, help="simulated clients (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds (default %(default)s)")
    args = parser.parse_args(argv)
    verdict = Verdict("bench-scale")
    missing = fashion_mnist_missing()
    if missing:
        verdict.not_run("scale", "Fashion-MNIST", "apt-get install dataset-fashion-mnist")
        return verdict.finish()
    from training.fl.simulation import load_data

    torch.set_num_threads(1)
    settings = scale_settings(args.clients, args.rounds)
    run, sim = load_config(settings)
    data = load_data(run, sim)
    engines = ["auto"]
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401

        engines.append("flower")
    except ImportError:
        verdict.not_run("flower", "flwr and ray", 'pip install -e ".[scale]"')
    print(f"{args.clients} clients (Fashion-MNIST, MLP-128, by-client alpha 0.5), {max(1, args.clients // 10)} "
          f"a round, {args.rounds} rounds, 8-bit updates; {os.cpu_count()} CPUs", flush=True)
    results = []
    for engine in engines:
        result = measure(settings, engine, data)
        results.append(result)
        print(f"  {result['engine']}: {result['median_s']:.2f} s a round (first {result['first_s']:.2f}), "
              f"peak {result['peak_mb']:.0f} MB, {result['wall_s']:.0f} s in all", flush=True)
    base = results[0]
    for other in results[1:]:
        if base["engine"] != "vmap":
            same = (other["accuracy"], other["bytes"]) == (base["accuracy"], base["bytes"])
            verdict.target(f"{other['engine']} = {base['engine']}: accuracy {100 * other['accuracy']:.2f} vs "
                           f"{100 * base['accuracy']:.2f} %, {other['bytes']:,d} vs {base['bytes']:,d} bytes", same)
    print(format_table(["engine", "s a round (median)", "first round s", "peak MB", "accuracy %", "MB sent",
                        "vs ours"],
                       [[r["engine"], f"{r['median_s']:.2f}", f"{r['first_s']:.2f}", f"{r['peak_mb']:.0f}",
                         f"{100 * r['accuracy']:.2f}", f"{r['bytes'] / 1e6:.1f}",
                         f"{r['median_s'] / base['median_s']:.1f}x slower" if r is not base else "1x"]
                        for r in results]))
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
