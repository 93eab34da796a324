"""The co-simulation's errors."""

__all__ = ["AxiViolation", "CosimError", "CosimUnavailable", "RtlMismatch", "CosimBuildError", "CosimHang"]


class CosimError(RuntimeError):
    """Something went wrong running the RTL co-simulation."""


class CosimUnavailable(CosimError):
    """A prerequisite (the RTL, Verilator, g++, make) is missing; the message says how to get it."""


class RtlMismatch(CosimError, ValueError):
    """The RTL was generated for another architecture than the one asked for."""


class CosimBuildError(CosimError):
    """Verilator or the C++ compiler failed; the message carries the end of the build log."""


class CosimHang(CosimError):
    """The simulated RTL hung or ran past its cycle budget; the message names what was pending."""


class AxiViolation(CosimError):
    """The program made the RTL send a burst across a 4 KiB boundary, which AXI forbids (what a
    Zynq HP port does with one is undefined): the compiler must place data so that none does."""
