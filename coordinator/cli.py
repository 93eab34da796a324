"""`python -m coordinator`: run a federated run over MQTT."""

import argparse
import functools
import json
import os
import sys
from typing import List, Optional, Tuple

from fedcore.atomic import atomic_write
from fedcore.errors import FedCoreError
from fedcore.experiment import load_run_config
from fedlink.cli import add_link_arguments, link_from_args, setup_logging
from fedlink.protocol import Topics, to_json

from .config import initial_state, make_evaluator
from .dashboard import (
    DashboardServer,
    RunView,
    is_loopback,
    new_token,
    render_report,
    view_from_run_dir,
)
from .server import Coordinator, CoordinatorSettings, LinkError
from .store import RunStore

__all__ = ["build_parser", "main"]

EXAMPLES = """examples:
  python -m coordinator --broker mqtt://127.0.0.1:1883 --config configs/testbed/fmnist_mlp128.toml
  python -m coordinator --broker mqtts://coordinator@broker.lab:8883 --ca-file ca.crt \\
      --password-file coordinator.pw --config run.toml --run-dir runs/lab-01   # TLS and a password
  python -m coordinator --broker mqtt://127.0.0.1:1883 --config configs/fl/simplecnn_prune.toml \
      --initial-model initial.fedc --evaluator training.fl.mqtt:evaluator   # a torch model of training/
  python -m coordinator --broker mqtt://127.0.0.1:1883 --config run.toml --dashboard 127.0.0.1:8080
  python -m coordinator report runs/coordinator/fmnist   # one HTML file of a run folder, no server needed
A restarted coordinator with the same --run-dir resumes after the last checkpointed round.
"""
TOKEN_ENV = "FL_DASHBOARD_TOKEN"


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
    parser.add_argument("--dashboard", default="", metavar="HOST:PORT",
                        help="serve the live dashboard there, e.g. 127.0.0.1:8080 (port 0: any free one); "
                        "an address beyond loopback needs a token")
    parser.add_argument("--dashboard-token", default=os.environ.get(TOKEN_ENV, ""), metavar="TOKEN",
                        help=f"what a remote page must give as ?token= (default: ${TOKEN_ENV}; beyond loopback "
                        "without one, a random token is made and printed with the URL)")
    return parser


def report_main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator report",
                                     description="One self-contained HTML file (data inlined) of a run folder: "
                                     "the dashboard of a finished run, opened without a server.")
    parser.add_argument("run_dir", help="a run folder (rounds.jsonl, events.jsonl, report.json)")
    parser.add_argument("--out", default="", help="the HTML file (default: RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    try:
        view = view_from_run_dir(args.run_dir)
    except (OSError, ValueError) as error:
        print(f"coordinator report: {error}", file=sys.stderr)
        return 2
    out = args.out or os.path.join(args.run_dir, "report.html")
    atomic_write(out, render_report(view))
    print(f"report: {out}")
    return 0


def parse_address(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise FedCoreError(f"--dashboard must be HOST:PORT, e.g. 127.0.0.1:8080, got {text!r}")
    return host, int(port)


def start_dashboard(args: argparse.Namespace, view: RunView) -> Optional[DashboardServer]:
    if not args.dashboard:
        return None
    host, port = parse_address(args.dashboard)
    token = args.dashboard_token
    if not token and not is_loopback(host):
        token = new_token()
    try:
        server = DashboardServer(view, host, port, token).start()
    except OSError as error:  # the port is taken: any free one beats no dashboard
        if port == 0:
            raise FedCoreError(f"--dashboard {args.dashboard}: {error.strerror or error}") from None
        server = DashboardServer(view, host, 0, token).start()
        print(f"coordinator: port {port} is taken ({error.strerror}); the dashboard took {server.port}",
              file=sys.stderr)
    print(f"dashboard: {server.url}", flush=True)
    return server


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
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
        view = RunView()
        coordinator = Coordinator(run, settings, link, store, initial, evaluator,
                                  show=None if args.quiet else functools.partial(print, flush=True), view=view)
        dashboard = start_dashboard(args, view)
    except (FedCoreError, OSError, RuntimeError, ValueError) as error:
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
    atomic_write(os.path.join(store.root, "report.html"), render_report(view))
    print(f"report: {store.report_path}  plot: {store.plot_path}  page: {os.path.join(store.root, 'report.html')}",
          flush=True)
    if dashboard is not None:
        dashboard.stop()
    if report["stopped"]:
        print(f"coordinator: the run stopped learning: {report['stopped']}", file=sys.stderr)
        return 1
    return 0
