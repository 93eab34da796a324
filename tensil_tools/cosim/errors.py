"""The co-simulation's errors."""

from ..errors import CosimError, CosimUnavailable, RtlMismatch, RtlNotFound

__all__ = ["AxiViolation", "CosimError", "CosimUnavailable", "RtlMismatch", "RtlNotFound", "CosimBuildError",
           "CosimHang"]


class CosimBuildError(CosimError):
    """Verilator or the C++ compiler failed; the message carries the end of the build log."""


class CosimHang(CosimError):
    """The simulated RTL hung or ran past its cycle budget; the message names what was pending."""


class AxiViolation(CosimError):
    """The program made the RTL send a burst across a 4 KiB boundary, which AXI forbids (what a
    Zynq HP port does with one is undefined): the compiler must place data so that none does."""
