"""The constants a program brings: DRAM1's images and the SIMD constants in the accumulators.

DRAM1 holds the weight blocks, in the order they are loaded, each distinct image once, and
the SIMD constants' image. The SIMD constants (LeakyReLU slopes or slopes - 1, Clip bounds,
average-pool scales, each in every lane; the lane masks of tap partial sums and the lane bounds
of negative parts, packing.py) sit
at the top of the accumulators, below the last vector (the Program's scratch),
loaded once at the start of the program; the accumulators below them are the tiles'.
"""

from typing import Dict, List, Set, Tuple

import numpy as np

from tensil.arch import Architecture
from tensil.isa import DataMoveKind

from .errors import CompileError, MemoryOverflow
from .program import Allocator, Program
from .quantize import QClip, QGraph, QLeakyRelu, QMask, QNegativePart, QScale, content_key

__all__ = ["Constants"]


def _mask_vector(lanes: Tuple[bool, ...], one: int) -> Tuple[int, ...]:
    """A lane mask as raw values: `one` in the kept lanes, 0 in the others."""
    return tuple(one if kept else 0 for kept in lanes)


def _ceiling_vector(lanes: Tuple[bool, ...], top: int) -> Tuple[int, ...]:
    """The bounds of a negative part (a Min with it): 0 in its lanes, the format's top elsewhere."""
    return tuple(0 if negative else top for negative in lanes)


class Constants:
    """DRAM1's images so far (`images`, `size` vectors) and the SIMD constants' accumulators
    (`at`: raw value -> the accumulator of that value in every lane; `vector_at`: a vector's
    lanes -> its accumulator, masks included; `acc_avail`: the accumulators below them)."""

    def __init__(self, qgraph: QGraph):
        self.arch: Architecture = qgraph.arch
        self.images: List[np.ndarray] = []
        self.size = 0
        self._cache: Dict[bytes, int] = {}
        values: List[int] = []
        masks: Set[Tuple[int, ...]] = set()       # of tap partial sums
        ceilings: Set[Tuple[int, ...]] = set()    # of negative parts
        one, n = qgraph.fmt.one, self.arch.array_size
        self.top = qgraph.fmt.max_raw
        for q in qgraph.layers:
            blocks = range(-(-q.layer.computed[0] // n))
            for op in q.post:
                if isinstance(op, QLeakyRelu):
                    slope = op.slope_below_one(one)
                    values.append(op.alpha if slope is None else slope)
                elif isinstance(op, QClip):
                    values += [op.low, op.high]
                elif isinstance(op, QScale):
                    values += [int(v) for v in np.unique(op.factors)]
                elif isinstance(op, QMask):
                    masks.update(_mask_vector(lanes, one) for lanes in (
                        op.lanes(cob, n, j) for cob in blocks for j in range(op.keep.shape[1])) if not all(lanes))
                elif isinstance(op, QNegativePart):
                    ceilings.update(_ceiling_vector(op.lanes(cob, n), self.top) for cob in blocks)
        # each vector once: a lane vector may equal a constant in every lane
        vectors = list(dict.fromkeys([(v,) * n for v in sorted(set(values))] + sorted(masks) + sorted(ceilings)))
        top = self.arch.accumulator_depth - 1 - len(vectors)   # the last: Program's scratch
        if top < 1:
            raise CompileError("%d SIMD constants do not fit the %d accumulators" % (
                len(vectors), self.arch.accumulator_depth))
        self.vector_at: Dict[Tuple[int, ...], int] = {v: top + i for i, v in enumerate(vectors)}
        self.at: Dict[int, int] = {v[0]: a for v, a in self.vector_at.items() if len(set(v)) == 1}
        self.acc_avail = top

    def mask_at(self, lanes: Tuple[bool, ...], one: int) -> int:
        """The accumulator of a mask vector: `one` in the kept lanes, 0 in the others."""
        return self.vector_at[_mask_vector(lanes, one)]

    def ceiling_at(self, lanes: Tuple[bool, ...]) -> int:
        """The accumulator of a negative part's bounds: 0 in its lanes, the format's top elsewhere."""
        return self.vector_at[_ceiling_vector(lanes, self.top)]

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
        if not self.vector_at:
            return
        vectors = sorted(self.vector_at, key=lambda vector: self.vector_at[vector])
        dram = self.image(np.array(vectors, dtype=np.int64))
        scratch = local.alloc(len(vectors))
        if scratch is None:
            raise MemoryOverflow("(constants)", "local memory", len(vectors), local.largest())
        program.datamove(DataMoveKind.DRAM1_TO_LOCAL, scratch, dram, len(vectors))
        program.datamove(DataMoveKind.LOCAL_TO_ACC, scratch, self.vector_at[vectors[0]], len(vectors))
        local.release(scratch, len(vectors))
