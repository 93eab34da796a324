"""`python -m coordinator`: run a federated run over MQTT."""

import argparse
import functools
import json
import os
import sys
from typing import List, Optional

from fedcore.errors import FedCoreError
from fedcore.experiment import load_run_config
from fedlink.cli import add_link_arguments, link_from_args, setup_logging
from fedlink.protocol import Topics, to_json

from .config import initial_state, make_evaluator
from .server import Coordinator, CoordinatorSettings, LinkError
from .store import RunStore

__all__ = ["build_parser", "main"]

EXAMPLES = """examples:
  python -m coordinator --broker mqtt://127.0.0.1:1883 --config configs/testbed/fmnist_mlp128.toml
  python -m coordinator --broker mqtts://coordinator@broker.lab:8883 --ca-file ca.crt \\
      --password-file coordinator.pw --config run.toml --run-dir runs/lab-01   # TLS and a password
  python -m coordinator --broker mqtt://127.0.0.1:1883 --config configs/fl/simplecnn_prune.toml \
      --initial-model initial.fedc --evaluator training.fl.mqtt:evaluator   # a torch model of training/
A restarted coordinator with the same --run-dir resumes after the last checkpointed round.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m coordinator", description="Federated learning coordinator over MQTT (FedAvg, "
        "compressed models, deadlines, checkpoints).", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_link_arguments(parser)
    parser.add_argument("--run-dir", help="checkpoint and logs (default: runs/coordinator/<run id>)")
    parser.add_argument("--initial-model", default="", metavar="FILE",
                        help="round-0 weights as a model container (needed for models other than the numpy "
                        "mlp/softmax; python -m training.fl --export-initial FILE writes one)")
    parser.add_argument("--evaluator", default="", metavar="package.module:function",
                        help="held-out evaluation of another model, e.g. training.fl.mqtt:evaluator")
    parser.add_argument("--quiet", action="store_true", help="no per-round table on stdout")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        run = load_run_config(args.config)
        settings = CoordinatorSettings.from_run(run)
        store = RunStore(args.run_dir or os.path.join("runs", "coordinator", settings.run_id))
        initial = initial_state(run, settings, args.initial_model)
        evaluator = make_evaluator(run, settings, args.evaluator)
        topics = Topics(settings.run_id)
        link = link_from_args(args, f"coordinator-{settings.run_id}",
                              [(topics.all_presence, 1), (topics.all_updates, 1)], settings.keepalive,
                              will=(topics.base + "/coordinator", to_json({"status": "offline"})),
                              share_of=topics.sender, max_payload=settings.max_payload)
        # Restores the checkpoint of --run-dir, if any (refused if written for another config).
        coordinator = Coordinator(run, settings, link, store, initial, evaluator,
                                  show=None if args.quiet else functools.partial(print, flush=True))
    except (FedCoreError, OSError, RuntimeError) as error:
        print(f"coordinator: {error}", file=sys.stderr)
        return 2
    link.on_connect = coordinator.republish_retained
    link.start()
    try:
        report = coordinator.run()
    except LinkError as error:
        print(f"coordinator: {error}", file=sys.stderr)
        link.stop()
        return 1
    except KeyboardInterrupt:
        print("coordinator: interrupted; restart with the same --run-dir to resume", file=sys.stderr)
        link.stop()
        return 130
    link.stop(final=(topics.base + "/coordinator", to_json({"status": "done"}), True))
    print(json.dumps({k: report[k] for k in ("run", "rounds", "final_accuracy", "bytes_up", "bytes_down",
                                             "rejected", "late", "session_time_s", "stopped")}), flush=True)
    print(f"report: {store.report_path}  plot: {store.plot_path}", flush=True)
    if report["stopped"]:
        print(f"coordinator: the run stopped learning: {report['stopped']}", file=sys.stderr)
        return 1
    return 0
