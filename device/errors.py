"""The errors device/ reports: each names the file, field or hardware at fault."""

__all__ = [
    "DeviceError",
    "ModelError",
    "BackendError",
    "CameraError",
    "MemoryFileError",
    "HardwareError",
]


class DeviceError(Exception):
    """Base class of every error raised by device/."""


class ModelError(DeviceError, ValueError):
    """A model file or model card is missing, corrupt or inconsistent."""


class BackendError(DeviceError, RuntimeError):
    """A backbone backend is unknown or cannot run here (a library or the hardware is missing)."""


class CameraError(DeviceError, RuntimeError):
    """A camera could not be opened, or stopped delivering frames."""


class MemoryFileError(DeviceError, ValueError):
    """A saved few-shot memory file is malformed."""


class HardwareError(DeviceError, RuntimeError):
    """A board library (pynq, the Tensil driver) or a board peripheral is missing."""
