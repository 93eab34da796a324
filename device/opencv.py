"""OpenCV (`cv2`), imported when it is first used, so that `--help`, the doctor and every part
that does not touch images work without it; without it, using it raises HardwareError saying
how to install it (a DeviceError: the demonstrator reports it, the doctor lists it)."""

from typing import Any

from .errors import HardwareError

__all__ = ["INSTALL", "cv2", "load"]

INSTALL = ("pip install opencv-python-headless (or, on a PYNQ image, apt-get install python3-opencv; "
           "pip install -e '.[device]' installs it with the rest)")


def load() -> Any:
    try:
        import cv2 as module
    except ImportError as exc:
        raise HardwareError("OpenCV (cv2) is not installed (%s): %s" % (exc, INSTALL)) from None
    return module


class _Cv2:
    """Stands for the cv2 module until an attribute is used; each attribute is then kept, so
    that the next use is a plain lookup (the UI uses a dozen a frame; an import statement
    each cost more than some of the drawing)."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(load(), name)
        setattr(self, name, value)
        return value


cv2 = _Cv2()
