"""`python -m coordinator.broker`: the embedded MQTT broker (amqtt, pure
Python) so that `make testbed` needs nothing beyond the Python extras. For
real testbeds use Mosquitto (brokers/mosquitto.conf, `make broker`).

amqtt needs Python 3.10+; it is imported only when this program runs.
"""

import argparse
import asyncio
import logging
import sys
from typing import Any, Dict, List, Optional

log = logging.getLogger(__name__)

__all__ = ["broker_config", "main"]


def broker_config(host: str, port: int) -> Dict[str, Any]:
    """A loopback-or-LAN listener, anonymous clients, no $SYS chatter."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def _serve(host: str, port: int) -> None:
    from amqtt.broker import Broker

    broker = Broker(broker_config(host, port))
    await broker.start()
    log.info("embedded MQTT broker (amqtt) listening on mqtt://%s:%d", host, port)
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        await broker.shutdown()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator.broker",
                                     description="Embedded MQTT broker (amqtt) for local testbeds.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=1883, help="TCP port on loopback (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # our one line (where it listens), not amqtt's chatter
    try:
        import amqtt  # noqa: F401
    except ImportError:
        print("coordinator.broker: amqtt is not installed (pip install -e '.[coordinator]', Python 3.10+), "
              "or use Mosquitto: make broker", file=sys.stderr)
        return 1
    try:
        asyncio.run(_serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
