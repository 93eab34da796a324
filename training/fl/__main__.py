"""python -m training.fl --config configs/fl/fmnist_mlp.toml [overrides]

Runs one federated simulation on fedcore's round engine and writes, under
[simulation] out (default runs/fl/<name>/): rounds.jsonl (one JSON object a
round: accuracy, loss, bytes up/down, cumulative bytes, wall time, accepted /
rejected updates), summary.json, accuracy.png (accuracy against rounds and
against cumulative bytes), final.fedc (the global model, a lossless fedcore
container) and prints the summary table.

Examples:
  python -m training.fl --config configs/fl/fmnist_mlp.toml --rounds 5
  python -m training.fl --config configs/fl/fmnist_headline.toml --seed 2 --out runs/fl/h2
  python -m training.fl --config configs/fl/fmnist_mlp.toml --set compression.uplink.sparsify.keep=0.1
  python -m training.fl --config configs/fl/cifar10_flocora.toml --describe
  python -m training.fl --config configs/fl/fmnist_mlp.toml --engine flower   # on Flower's engine (Ray)
  python -m training.fl --config run.toml --export-initial initial.fedc   # for an MQTT run of
      a torch model: see training/fl/mqtt.py and docs/protocol.md
"""

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")

from fedcore.errors import ConfigError, FedCoreError  # noqa: E402

from .config import load_config, parse_assignment  # noqa: E402
from .report import format_table  # noqa: E402

__all__ = ["main"]


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for flag, key in (("rounds", "federation.rounds"), ("seed", "federation.seed"), ("out", "simulation.out"),
                      ("alpha", "data.alpha"), ("clients", "data.num_clients"), ("device", "simulation.device"),
                      ("threads", "simulation.threads"), ("eval_every", "simulation.eval_every"),
                      ("method", "simulation.method"), ("data_path", "data.path"),
                      ("engine", "simulation.engine"), ("precision", "simulation.precision")):
        value = getattr(args, flag)
        if value is not None:
            out[key] = value
    if args.download:
        out["simulation.download"] = True
    for text in args.set or []:
        out.update(parse_assignment(text))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the run's TOML file")
    parser.add_argument("--rounds", type=int, help="rounds to run (default: the config's federation.rounds)")
    parser.add_argument("--seed", type=int, help="the run's seed (model init, partition, data order)")
    parser.add_argument("--out", help="output folder (default runs/fl/<name>)")
    parser.add_argument("--alpha", type=float, help="Dirichlet concentration of the partition")
    parser.add_argument("--clients", type=int, help="number of clients")
    parser.add_argument("--method", help="standard, qat or lora")
    parser.add_argument("--device", help="torch device (cpu, cuda, auto: cuda when there is one)")
    parser.add_argument("--engine", help="sequential, batched, vmap or auto (vmap on CUDA, else batched)")
    parser.add_argument("--precision", help="fp32 or bf16 (autocast of the forward passes)")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--eval-every", dest="eval_every", type=int, help="evaluate the model every N rounds (default: the config's simulation.eval_every)")
    parser.add_argument("--data-path", dest="data_path", help="dataset folder or image archive")
    parser.add_argument("--download", action="store_true", help="fetch a missing dataset (MD5 checked)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override any config key, e.g. compression.uplink.wire.bits=4 (repeatable)")
    parser.add_argument("--describe", action="store_true", help="print the model's parameters and exit")
    parser.add_argument("--export-initial", metavar="FILE",
                        help="write the round-0 model (a fedcore container) for `python -m coordinator "
                        "--initial-model FILE` and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="write no PNG")
    args = parser.parse_args(argv)
    from .simulation import (  # torch is imported here, after the arguments
        describe_run,
        output_dir,
        run,
    )

    try:
        overrides = _overrides(args)
        if args.describe:
            print(describe_run(args.config, overrides))
            return 0
        if args.export_initial:
            from .mqtt import export_initial

            run_config, _ = load_config(args.config, overrides)
            size = export_initial(run_config, args.export_initial)
            print(f"{args.export_initial}: round-0 model of {run_config.name} ({size:,d} bytes)")
            return 0
        summary = run(args.config, overrides, progress=not args.quiet, plots=args.plots)
    except (ConfigError, FedCoreError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = output_dir(*load_config(args.config, overrides))
    rows = [[key, f"{value:.4f}" if isinstance(value, float) else value] for key, value in summary.items()]
    print(format_table(["summary", "value"], rows))
    print(f"outputs: {output}/ (rounds.jsonl, summary.json, config.json, final.fedc, accuracy.png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
