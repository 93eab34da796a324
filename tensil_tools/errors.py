"""The errors of reading Tensil RTL and of the co-simulation built on it (the co-simulation's
own are in `tensil_tools.cosim.errors`, which re-exports these)."""

__all__ = ["CosimError", "CosimUnavailable", "RtlNotFound", "RtlMismatch"]


class CosimError(RuntimeError):
    """Something went wrong running the RTL co-simulation."""


class CosimUnavailable(CosimError):
    """A prerequisite (the RTL, Verilator, g++, make) is missing; the message says how to get it."""


class RtlNotFound(CosimUnavailable):
    """No usable RTL folder: missing, or without exactly one top_<arch>.v and its memories."""


class RtlMismatch(CosimError, ValueError):
    """The RTL is not what it must be: generated for another architecture, or files that do not
    say what their names do."""
