"""The errors hwflow reports: each names the file, tool or device at fault and what to do."""

__all__ = ["HwflowError", "ToolMissing", "ImageError", "FlashRefused", "TimingFailed"]


class HwflowError(Exception):
    """Base class of every error raised by hwflow; the CLI prints it and exits with status 2."""


class ToolMissing(HwflowError, RuntimeError):
    """A program (docker, Vivado, yosys, debugfs, ...) or a checkout (PYNQ) is not available."""


class ImageError(HwflowError, ValueError):
    """A disk image is corrupt, not PYNQ's, or has no room for the payload."""


class FlashRefused(HwflowError, RuntimeError):
    """`flash` will not write to this target (mounted, not removable, too large, the system disk)."""


class TimingFailed(HwflowError, RuntimeError):
    """The implemented design has a negative slack at the requested clock."""
