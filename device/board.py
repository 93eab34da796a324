"""Lazy access to the board's library: `pynq` exists only on a PYNQ image (the Tensil
driver is ours: tensil.driver).

Nothing here is imported at module import time; callers ask when they are on the board
path, and a missing library raises `HardwareError` saying what is missing and where it
comes from.
"""

import importlib
from types import ModuleType

from .errors import HardwareError

__all__ = ["require_module", "require_pynq"]


def require_module(name: str, why: str) -> ModuleType:
    """Import `name` or raise HardwareError with `why` (what needs it and how to get it)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise HardwareError("%s is not available here (%s): %s" % (name, exc, why)) from None


def require_pynq() -> ModuleType:
    return require_module(
        "pynq", "it is preinstalled on PYNQ board images (the project's `board` extra names it); "
                "off the board use --hdmi/--buttons only with the fakes in tests")

