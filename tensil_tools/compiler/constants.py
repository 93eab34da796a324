"""The constants a program brings: DRAM1's images and the SIMD constants in the accumulators.

DRAM1 holds the weight blocks, in the order they are loaded, each distinct image once, and
the SIMD constants' image. The SIMD constants (LeakyReLU slopes or slopes - 1, Clip bounds,
average-pool scales) sit at the top of the accumulators, below the last vector (the Program's scratch),
loaded once at the start of the program; the accumulators below them are the tiles'.
"""

from typing import Dict, List

import numpy as np

from tensil.arch import Architecture
from tensil.isa import DataMoveKind

from .errors import CompileError, MemoryOverflow
from .program import Allocator, Program
from .quantize import QClip, QGraph, QLeakyRelu, QScale, content_key

__all__ = ["Constants"]


class Constants:
    """DRAM1's images so far (`images`, `size` vectors) and the SIMD constants' accumulators
    (`at`: raw value -> accumulator address; `acc_avail`: the accumulators below them)."""

    def __init__(self, qgraph: QGraph):
        self.arch: Architecture = qgraph.arch
        self.images: List[np.ndarray] = []
        self.size = 0
        self._cache: Dict[bytes, int] = {}
        values: List[int] = []
        one = qgraph.fmt.one
        for q in qgraph.layers:
            for op in q.post:
                if isinstance(op, QLeakyRelu):
                    slope = op.slope_below_one(one)
                    values.append(op.alpha if slope is None else slope)
                elif isinstance(op, QClip):
                    values += [op.low, op.high]
                elif isinstance(op, QScale):
                    values += [int(v) for v in np.unique(op.factors)]
        distinct = sorted(set(values))
        top = self.arch.accumulator_depth - 1 - len(distinct)   # the last: Program's scratch
        if top < 1:
            raise CompileError("%d SIMD constants do not fit the %d accumulators" % (
                len(distinct), self.arch.accumulator_depth))
        self.at: Dict[int, int] = {v: top + i for i, v in enumerate(distinct)}
        self.acc_avail = top

    def image(self, image: np.ndarray) -> int:
        """The DRAM1 vector where `image` (raw, (vectors, N)) starts; an image already there is
        not added again."""
        key = content_key(image)
        if key in self._cache:
            return self._cache[key]
        base = self.size
        self.images.append(image)
        self.size += image.shape[0]
        if self.size > self.arch.dram1_depth:
            raise MemoryOverflow("(constants)", "DRAM1", self.size, self.arch.dram1_depth)
        self._cache[key] = base
        return base

    def load_simd_constants(self, program: Program, local: Allocator) -> None:
        """DRAM1 -> local -> their accumulators, through a scratch run of local memory."""
        if not self.at:
            return
        values = sorted(self.at, key=lambda value: self.at[value])
        image = np.repeat(np.array(values, dtype=np.int64)[:, None], self.arch.array_size, axis=1)
        dram = self.image(image)
        scratch = local.alloc(len(values))
        if scratch is None:
            raise MemoryOverflow("(constants)", "local memory", len(values), local.largest())
        program.datamove(DataMoveKind.DRAM1_TO_LOCAL, scratch, dram, len(values))
        program.datamove(DataMoveKind.LOCAL_TO_ACC, scratch, self.at[values[0]], len(values))
        local.release(scratch, len(values))
