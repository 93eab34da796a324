"""The compiler's errors: each names the model, node, op or memory at fault."""

from tensil.errors import TensilError

__all__ = ["CompileError", "MemoryOverflow", "ModelError", "UnsupportedError"]


class CompileError(TensilError, ValueError):
    """A model cannot be compiled (the message says where and why)."""


class ModelError(CompileError):
    """The ONNX file is malformed: unreadable, truncated, inconsistent, wrong opset, dynamic."""


class UnsupportedError(CompileError):
    """A valid model uses an op or an attribute the compiler cannot honour exactly."""


class MemoryOverflow(CompileError):
    """A layer does not fit the architecture's memories even at the smallest tiling."""

    def __init__(self, layer: str, memory: str, needed: int, available: int, detail: str = ""):
        self.layer, self.memory, self.needed, self.available = layer, memory, needed, available
        message = "layer %s does not fit: it needs %d vectors of %s, the architecture has %d " \
                  "(%d over)" % (layer, needed, memory, available, needed - available)
        super().__init__(message + ("; " + detail if detail else ""))
