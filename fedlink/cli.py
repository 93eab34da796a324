"""What every MQTT program of a run takes on its command line (the broker, the run
file, TLS, the password, logging), and the link built from it."""

import argparse
import logging
import os
import sys
from typing import Callable, List, Optional, Tuple

from .chunks import check_max_payload
from .link import DEFAULT_MAX_PAYLOAD, MqttLink
from .settings import BROKER_ENV, PASSWORD_ENV, parse_broker, with_password

__all__ = ["add_link_arguments", "setup_logging", "link_from_args"]


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default=os.environ.get(BROKER_ENV), required=not os.environ.get(BROKER_ENV),
                        help=f"mqtt://[user@]host[:port] or mqtts://... (default: ${BROKER_ENV}; a password in "
                        f"the URL shows in `ps`: prefer --password-file or ${PASSWORD_ENV})")
    parser.add_argument("--config", required=True, help="the run's TOML file (or JSON with the same tables)")
    parser.add_argument("--ca-file", help="CA certificate for mqtts:// (default: the system's)")
    parser.add_argument("--password-file", default="", metavar="FILE",
                        help=f"the MQTT password on this file's first line (else ${PASSWORD_ENV})")
    parser.add_argument("--max-payload", type=int, default=None, metavar="BYTES",
                        help="largest MQTT message a model or update is sent in; larger ones travel as chunks "
                        "(default: the run's [coordinator] max_payload, 131072; 0: one message each)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level (default %(default)s)")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def link_from_args(args: argparse.Namespace, client_id: str, subscriptions: List[Tuple[str, int]],
                   keepalive: int, will: Optional[Tuple[str, bytes]] = None,
                   share_of: Optional[Callable[[str], str]] = None, max_payload: int = DEFAULT_MAX_PAYLOAD
                   ) -> MqttLink:
    """The MqttLink of add_link_arguments' options (ConfigError for a bad URL or password).
    `share_of(topic)`: the sender whose share of the inbox a message counts against;
    `max_payload`: the run's (LinkSettings), unless --max-payload says otherwise."""
    address = with_password(parse_broker(args.broker), args.password_file)
    if getattr(args, "max_payload", None) is not None:  # (the doctor's options have none)
        max_payload = check_max_payload(args.max_payload, "--max-payload")
    return MqttLink(address, client_id, subscriptions, keepalive=keepalive, ca_file=args.ca_file, will=will,
                    share_of=share_of or (lambda topic: topic), max_payload=max_payload)
