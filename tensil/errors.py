"""The errors the Tensil toolchain raises; each names the file, field or offset at fault."""

__all__ = ["TensilError", "ArchError", "ProgramError", "FixedPointError", "TmodelError",
           "EmulatorError", "HwhError", "ArchMismatch", "DriverError", "TcuTimeout"]


class TensilError(Exception):
    """Base class of every error raised by the tensil package."""


class ArchError(TensilError, ValueError):
    """A `.tarch` architecture is malformed or out of range."""


class ProgramError(TensilError, ValueError):
    """An instruction, a `.tprog` or a `.tasm` text is malformed (the message names where)."""


class FixedPointError(TensilError, ValueError):
    """Fixed-point data (a `.tdata` image, raw values) is malformed."""


class TmodelError(TensilError, ValueError):
    """A `.tmodel` manifest is malformed or inconsistent with its files."""


class EmulatorError(TensilError, RuntimeError):
    """A valid program asks the machine for something it cannot do (the message says what)."""


class HwhError(TensilError, ValueError):
    """A Vivado `.hwh` (or the bitstream's JSON beside it) is malformed or lacks the TCU."""


class ArchMismatch(TensilError, ValueError):
    """A `.tmodel`'s architecture differs from the bitstream's (the message names both values)."""


class DriverError(TensilError, RuntimeError):
    """The board driver cannot do what was asked here (memory, DMA, a wrong state)."""


class TcuTimeout(DriverError):
    """The accelerator did not finish in time; the message names what was pending."""
