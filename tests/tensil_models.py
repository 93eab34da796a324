"""Hand-assembled Tensil models for the board tests and benchmarks, until the compiler's
`.tmodel` of the bundled backbone lands.

`build_conv_model(folder, tarch, size, features)` writes a small backbone three ways:
- `<stem>.onnx` + its card (tests/fake_pynq/assets: Conv 3->F 3x3 stride 2 pad 1 with bias,
  Relu, GlobalAveragePool, Flatten, opset 10), what onnxruntime and OpenCV run;
- `<stem>_<arch stem>.tmodel` / `.tprog` / `.tdata`, the same network as a Tensil program
  written with tensil.isa and tensil.tmodel, named as the backends look for it.

The program follows the compiler's conventions (facts §4-§5): input NHWC at DRAM0 vector 0,
one vector a pixel; consts in DRAM1, for each output block of N channels and each kernel
tap: the bias row (tap 0 only, zeros otherwise) then the N weight rows of the input lanes,
FP16BP8 rounded half up; the input and consts moved to local memory, then per block: per
tap a LoadWeights and, per output row, MatMuls over the in-bounds pixels (local stride 2^1
for the stride 2) and Zeroes MatMuls for the padding, the first tap overwriting and the others
accumulating; Relu as SIMD Max against a zeroed register; the average pooling in two levels
(every pixel times 1/16, summed 16 at a time, then every group mean times 1/groups, summed),
scaling before adding so that no partial sum exceeds the largest value (Tensil's own
GlobalAveragePool sums first and saturates at FP16BP8's +-128 on bright images); the
block's feature vector saved. Output: ceil(F/N) vectors.
"""

import pathlib
from typing import Dict, List, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from tensil.arch import Architecture, load_tarch
from tensil.fixed import fixed_format, from_float_const, to_bytes
from tensil.isa import (
    SIMD,
    DataMove,
    DataMoveKind,
    Instruction,
    LoadWeights,
    MatMul,
    SimdOp,
    encode_program,
)
from tensil.tmodel import ConstsFile, ProgramFile, TensilModel, Vars, model_name, write_tmodel
from tests.fake_pynq.assets import make_card, make_tiny_model, write_card

__all__ = ["build_conv_model", "conv_program"]

KERNEL, STRIDE, PAD = 3, 2, 1
GROUP = 16


def _consts(weight: np.ndarray, bias: np.ndarray, n: int, pixels: int) -> np.ndarray:
    """Float consts vectors: per block, per tap (N+1 rows), then the two pool multipliers."""
    co, ci = weight.shape[:2]
    blocks = -(-co // n)
    rows: List[np.ndarray] = []
    for b in range(blocks):
        lanes = slice(b * n, min(co, (b + 1) * n))
        for kh in range(KERNEL):
            for kw in range(KERNEL):
                tap = np.zeros((n + 1, n), np.float32)
                if kh == kw == 0:
                    tap[0, :lanes.stop - lanes.start] = bias[lanes]
                tap[1:ci + 1, :lanes.stop - lanes.start] = weight[lanes, :, kh, kw].T
                rows.append(tap)
    group = min(GROUP, pixels)
    rows.append(np.full((1, n), 1.0 / group, np.float32))
    rows.append(np.full((1, n), group / pixels, np.float32))
    return np.concatenate(rows)


def _runs(lo: int, hi: int, count: int) -> List[Tuple[int, int, bool]]:
    """(first, last, in_bounds) runs of output columns 0..count-1, in bounds for lo..hi."""
    runs = []
    if lo > 0:
        runs.append((0, min(lo, count) - 1, False))
    if lo <= hi:
        runs.append((lo, hi, True))
    if hi + 1 < count:
        runs.append((max(hi + 1, 0), count - 1, False))
    return runs


def _mean(addresses: List[int], group: int, multiplier: int, first_out: int) -> List[Instruction]:
    """Means of consecutive groups of accumulators into first_out, first_out + 1, ...: each
    value scaled by 1/group in place (the multiplier vector at acc `multiplier`), then summed,
    so no partial sum exceeds the largest value (FP16BP8 saturates at +-128)."""
    program: List[Instruction] = [SIMD(SimdOp.MOVE, 0, 1, 1, 0, multiplier, read=True)]
    program += [SIMD(SimdOp.MULTIPLY, 0, 1, 0, a, a, read=True, write=True) for a in addresses]
    for g in range(len(addresses) // group):
        program.append(SIMD(SimdOp.ZERO, dest=1))
        program += [SIMD(SimdOp.ADD, 0, 1, 1, 0, a, read=True)
                    for a in addresses[g * group:(g + 1) * group]]
        program.append(SIMD(SimdOp.MOVE, 1, 1, 0, first_out + g, write=True))
    return program


def conv_program(arch: Architecture, size: int, features: int,
                 consts_in_local: bool = False) -> List[Instruction]:
    """The network's instructions (see the module docstring) for a size x size input; with
    `consts_in_local` the consts are already at local vector 0 (load_consts_to_local) and the
    input goes after them."""
    n = arch.array_size
    out = (size + 2 * PAD - KERNEL) // STRIDE + 1
    pixels, blocks = out * out, -(-features // n)
    group = min(GROUP, pixels)
    if size * size + blocks * 9 * (n + 1) + 2 + blocks > arch.local_depth or pixels % group:
        raise ValueError("a %dx%d input does not fit this hand-made program" % (size, size))
    consts = blocks * 9 * (n + 1) + 2
    consts_local, image = (0, consts) if consts_in_local else (size * size, 0)
    mult_local = consts_local + consts - 2
    save_local = consts + size * size
    temps, mult_acc = pixels, pixels + pixels // group
    results = mult_acc + 2
    program: List[Instruction] = [DataMove(DataMoveKind.DRAM0_TO_LOCAL, image, 0, size * size - 1)]
    if not consts_in_local:
        program.append(DataMove(DataMoveKind.DRAM1_TO_LOCAL, consts_local, 0, consts - 1))
    program.append(DataMove(DataMoveKind.LOCAL_TO_ACC, mult_local, mult_acc, 1))
    for b in range(blocks):
        for tap in range(KERNEL * KERNEL):
            kh, kw = divmod(tap, KERNEL)
            program.append(LoadWeights(consts_local + (b * 9 + tap) * (n + 1), n))
            # output columns whose input column STRIDE*ow + kw - PAD is inside the image
            lo = max(0, -(-(PAD - kw) // STRIDE))
            hi = min(out - 1, (size - 1 + PAD - kw) // STRIDE)
            for oh in range(out):
                ih = STRIDE * oh + kh - PAD
                row = oh * out
                runs = _runs(lo, hi, out) if 0 <= ih < size else [(0, out - 1, False)]
                for first, last, inside in runs:
                    local = image + ih * size + STRIDE * first + kw - PAD if inside else 0
                    program.append(MatMul(local, row + first, last - first,
                                          local_stride=1 if inside else 0,
                                          accumulate=tap > 0, zeroes=not inside))
        program.append(SIMD(SimdOp.ZERO, dest=1))
        program += [SIMD(SimdOp.MAX, 0, 1, 0, a, a, read=True, write=True) for a in range(pixels)]
        program += _mean(list(range(pixels)), group, mult_acc, temps)
        program += _mean([temps + g for g in range(pixels // group)], pixels // group,
                         mult_acc + 1, results + b)
    program.append(DataMove(DataMoveKind.ACC_TO_LOCAL, save_local, results, blocks - 1))
    program.append(DataMove(DataMoveKind.LOCAL_TO_DRAM0, save_local, size * size, blocks - 1))
    return program


def build_conv_model(folder: pathlib.Path, tarch: pathlib.Path, size: int = 16,
                     features: int = 8, seed: int = 0, stem: str = "tiny",
                     load_consts_to_local: bool = False) -> Dict[str, pathlib.Path]:
    """ONNX + card + .tmodel/.tprog/.tdata of one network; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    arch = load_tarch(tarch)
    fmt = fixed_format(arch.data_type)
    model = make_tiny_model(folder, stem + ".onnx", seed=seed, size=size, features=features)
    card = write_card(model, make_card(model, features=features, size=size))
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    out = (size + 2 * PAD - KERNEL) // STRIDE + 1
    consts = _consts(weights["conv.weight"], weights["conv.bias"], arch.array_size, out * out)
    program = conv_program(arch, size, features, load_consts_to_local)
    name = model_name(model, tarch)  # the name the compiler gives and the backends look for
    code = encode_program(program, arch)
    (folder / (name + ".tprog")).write_bytes(code)
    (folder / (name + ".tdata")).write_bytes(to_bytes(from_float_const(consts, fmt), fmt))
    blocks = -(-features // arch.array_size)
    tmodel = TensilModel(name, ProgramFile(name + ".tprog", len(code)),
                         (ConstsFile(name + ".tdata", 0, consts.shape[0]),),
                         (Vars("Input", 0, size * size),),
                         (Vars("Output", size * size, blocks),), arch, load_consts_to_local)
    path = write_tmodel(tmodel, folder / (name + ".tmodel"))
    return {"onnx": model, "card": card, "tmodel": path}
