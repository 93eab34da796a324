"""ONNX -> Tensil compiler (workstation only: imports onnx; not part of the board image).

    from tensil_tools.compiler import compile_model
    result = compile_model("model.onnx", "tensil_arch/pynqz1_perf.tarch", out_dir="out")
    print(result.summary)

Stages, each a module: `onnx_model` (strict ONNX reading) -> `lowering` (one lowering per op) ->
`fusion` (BatchNorm, affine, residual, activation and pad folding) ->
`graph` (layers of terms, float semantics) -> `quantize` (FP16BP8 weight blocks and the
ordered accumulator operations) -> `backend` (memory homes, tiling, instructions, via
`program`) -> `driver` (files and the summary). `reference` computes the quantized graph
in plain numpy, bit for bit what the program computes on the emulator and the RTL.
"""

from .driver import CompileResult, compile_graph, compile_model, model_name
from .errors import CompileError, MemoryOverflow, ModelError, UnsupportedError

__all__ = ["CompileError", "CompileResult", "MemoryOverflow", "ModelError", "UnsupportedError",
           "compile_graph", "compile_model", "model_name"]
