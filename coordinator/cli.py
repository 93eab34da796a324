"""`python -m coordinator`: run a federated run over MQTT."""

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from fedcore.errors import FedCoreError
from fedcore.experiment import load_run_config

from .config import initial_state, make_evaluator
from .protocol import Topics, parse_broker, to_json
from .server import Coordinator, CoordinatorSettings
from .store import RunStore
from .transport import MqttLink

__all__ = ["build_parser", "main", "add_link_arguments", "setup_logging"]

EXAMPLES = """examples:
  python -m coordinator --broker mqtt://127.0.0.1:1883 --config configs/testbed/fmnist_mlp128.toml
  python -m coordinator --broker mqtts://coordinator:secret@broker.lab:8883 --ca-file ca.crt \\
      --config run.toml --run-dir runs/lab-01        # TLS and a password (see brokers/README.md)
  python -m coordinator --broker mqtt://127.0.0.1:1883 --config configs/fl/simplecnn_prune.toml \
      --initial-model initial.fedc --evaluator training.fl.mqtt:evaluator   # a torch model of training/
A restarted coordinator with the same --run-dir resumes after the last checkpointed round.
"""


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """What every MQTT program of the run takes: the broker, the run file, TLS, logging."""
    parser.add_argument("--broker", required=True, help="mqtt://[user[:password]@]host[:port] or mqtts://...")
    parser.add_argument("--config", required=True, help="the run's TOML file (or JSON with the same tables)")
    parser.add_argument("--ca-file", help="CA certificate for mqtts:// (default: the system's)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


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
        address = parse_broker(args.broker)
        store = RunStore(args.run_dir or os.path.join("runs", "coordinator", settings.run_id))
        initial = initial_state(run, settings, args.initial_model)
        evaluator = make_evaluator(run, settings, args.evaluator)
        topics = Topics(settings.run_id)
        link = MqttLink(address, f"coordinator-{settings.run_id}",
                        [(topics.all_presence, 1), (topics.all_updates, 1)],
                        keepalive=settings.keepalive, ca_file=args.ca_file,
                        will=(topics.base + "/coordinator", to_json({"status": "offline"})))
        # Restores the checkpoint of --run-dir, if any (refused if written for another config).
        coordinator = Coordinator(run, settings, link, store, initial, evaluator, quiet=args.quiet)
    except (FedCoreError, OSError, RuntimeError) as error:
        print(f"coordinator: {error}", file=sys.stderr)
        return 2
    link.on_connect = coordinator.republish_retained
    link.start()
    try:
        report = coordinator.run()
    except KeyboardInterrupt:
        print("coordinator: interrupted; restart with the same --run-dir to resume", file=sys.stderr)
        link.stop()
        return 130
    link.stop(final=(topics.base + "/coordinator", to_json({"status": "done"}), True))
    print(json.dumps({k: report[k] for k in ("run", "rounds", "final_accuracy", "bytes_up", "bytes_down",
                                             "rejected", "late", "session_time_s")}), flush=True)
    print(f"report: {store.report_path}  plot: {store.plot_path}", flush=True)
    return 0
