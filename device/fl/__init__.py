"""device.fl: the device's federated-learning client over MQTT (docs/protocol.md).

Entry point: ``device.fl.cli.main(argv)`` (``python -m device fl ...``)."""

from .client import Announcement, FLClient
from .trainers import NumpyTrainer, make_trainer

__all__ = ["Announcement", "FLClient", "NumpyTrainer", "make_trainer"]
