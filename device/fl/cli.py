"""`python -m device fl` (or `python -m device.fl`): a device's federated client."""

import argparse
import sys
from typing import List, Optional

from fedcore.errors import FedCoreError
from fedcore.experiment import load_run_config
from fedlink.cli import add_link_arguments, link_from_args, setup_logging
from fedlink.protocol import Topics, check_name, to_json
from fedlink.settings import LinkSettings

from .client import FLClient, default_capabilities
from .data import load_local_data
from .trainers import make_trainer

__all__ = ["build_parser", "main"]

EXAMPLES = """examples:
  python -m device fl --broker mqtt://192.168.2.1:1883 --config run.toml --client-id client-003
  FL_MQTT_PASSWORD=secret python -m device fl --broker mqtts://client-003@broker.lab:8883 \\
      --ca-file ca.crt --config run.json --client-id client-003 --data /home/xilinx/fl-data
Without --data the client trains on its share (by --client-id) of the run's partition of
[data]; with --data DIR on DIR/train.npz (x, y) or MNIST-format train-*-ubyte files.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device fl", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Federated learning client over MQTT: follows the global model, trains locally "
        "(numpy, or torch through --trainer), sends compressed updates; reconnects by itself.")
    add_link_arguments(parser)
    parser.add_argument("--client-id", required=True, help="this device's id, e.g. client-003")
    parser.add_argument("--data", default="", help="a folder of local data instead of the run's partition")
    parser.add_argument("--trainer", default="", help="package.module:function building another trainer, "
                        "e.g. training.fl.mqtt:trainer (a torch model of training/)")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="seconds between presence messages")
    parser.add_argument("--keepalive", type=int, default=0, help="MQTT keepalive s (default: the run's)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)  # (BLAS threads: limited in device/__main__.py, before numpy loads)
    try:
        client_id = check_name(args.client_id, "--client-id")
        run = load_run_config(args.config)
        settings = LinkSettings.from_run(run)
        if args.heartbeat <= 0:
            raise FedCoreError("--heartbeat must be > 0")
        x, y = load_local_data(run, client_id, args.data)
        trainer = make_trainer(run, x, y, args.trainer)
    except (FedCoreError, OSError) as error:
        print(f"device fl: {error}", file=sys.stderr)
        return 2
    topics = Topics(settings.run_id)
    offline = to_json({"v": 1, "status": "offline", "client": client_id})
    try:
        link = link_from_args(args, client_id, FLClient.subscriptions(topics, client_id),
                              args.keepalive or settings.keepalive, will=(topics.presence(client_id), offline),
                              max_payload=settings.max_payload)
    except FedCoreError as error:
        print(f"device fl: {error}", file=sys.stderr)
        return 2
    capabilities = default_capabilities(len(x), args.trainer or f"numpy-{run.model.name}")
    client = FLClient(client_id, settings.run_id, trainer, link, args.heartbeat, capabilities)
    link.on_connect = client.on_connect
    link.start()
    try:
        rounds = client.run(args.timeout)
    except KeyboardInterrupt:
        rounds = client.rounds_trained
    except RuntimeError as error:
        print(f"device fl: {error}", file=sys.stderr)
        link.stop(final=(topics.presence(client_id), offline, True))
        return 1
    link.stop(final=(topics.presence(client_id), offline, True))
    print(f"{client_id}: {rounds} round(s) trained", flush=True)
    return 0
