"""pynq's driver model: DefaultIP, drivers bound by IP type (`bindto`), interrupts.

As in pynq.overlay: a subclass of `DefaultIP` with a `bindto` list of VLNVs registers itself
as the driver of those IP types (and of their version-less VLN, which an overlay uses only
with ignore_version=True, warning and falling back to DefaultIP otherwise). A driver gets its
IP's `description` (an ip_dict entry whose "device" is the fake board), an `mmio` over the
IP's register window and one `Interrupt` attribute per entry of description["interrupts"].
"""

import asyncio
import warnings
from typing import Any, Dict, Type

from .mmio import MMIO

__all__ = ["DefaultHierarchy", "DefaultIP", "Interrupt", "UnsupportedConfiguration",
           "driver_for", "run_blocking"]

_ip_drivers: Dict[str, Type["DefaultIP"]] = {}


class UnsupportedConfiguration(Exception):
    """pynq.UnsupportedConfiguration: the IP is configured in a way the driver cannot use."""


class Interrupt:
    """pynq.Interrupt(pinname): `await wait()` until the IP raises its interrupt line.

    The fake IP behind the pin says whether its line is high (`irq_line(pin)`) and, while
    it is low, lets scripted time pass (`advance()`); an interrupt that can never come raises
    RuntimeError instead of hanging the test."""

    def __init__(self, pinname: str, device: Any):
        self.pinname = pinname
        self._ip, _, self._pin = pinname.rpartition("/")
        self._device = device

    async def wait(self) -> None:
        hardware = self._device.hardware(self._ip)
        while not hardware.irq_line(self._pin):
            if not hardware.advance():
                raise RuntimeError("%s: waiting for an interrupt that the scripted inputs never "
                                   "raise" % self.pinname)
            await asyncio.sleep(0)


def run_blocking(awaitable: Any) -> Any:
    """Block on a coroutine as pynq's blocking twins do (a fresh loop, closed afterwards)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(awaitable)
    finally:
        loop.close()


class DefaultIP:
    """Driver of an IP without a more specific one: `mmio`, `read(offset)`, `write(...)`."""

    bindto: list = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for vlnv in cls.__dict__.get("bindto", []):
            _ip_drivers[vlnv] = cls
            _ip_drivers[vlnv.rpartition(":")[0]] = cls

    def __init__(self, description: Dict[str, Any]):
        self.device = description["device"]
        self.mmio = MMIO(description["phys_addr"], description["addr_range"], device=self.device)
        self._interrupts = description.get("interrupts", {})
        for name, details in self._interrupts.items():
            setattr(self, name, Interrupt(details["fullpath"], self.device))

    def read(self, offset: int = 0) -> int:
        return self.mmio.read(offset)

    def write(self, offset: int, value: Any) -> None:
        self.mmio.write(offset, value)


class DefaultHierarchy:
    """A hierarchy whose IPs and sub-hierarchies are built lazily on first attribute access."""

    def __init__(self, description: Dict[str, Any]):
        self.description = description
        self.device = description["device"]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or key in ("description", "device"):
            raise AttributeError(key)
        for kind in ("hierarchies", "ip"):
            entry = self.description.get(kind, {}).get(key)
            if entry is not None:
                driver = entry["driver"](entry)
                setattr(self, key, driver)
                return driver
        raise AttributeError("Could not find IP or hierarchy %s in overlay" % key)


def driver_for(ip_type: str, fullpath: str, ignore_version: bool) -> Type[DefaultIP]:
    """pynq's rule: the exact VLNV's driver; another version only with ignore_version."""
    if ip_type in _ip_drivers:
        return _ip_drivers[ip_type]
    unversioned = ip_type.rpartition(":")[0]
    if unversioned in _ip_drivers:
        if ignore_version:
            return _ip_drivers[unversioned]
        known = [v for v in _ip_drivers if v.startswith(unversioned + ":")]
        warnings.warn("IP %s is of type %s and driver found for [%s]. Use ignore_version=True "
                      "to use this driver." % (fullpath, ip_type, ", ".join(known)), UserWarning,
                      stacklevel=3)
    return DefaultIP
