"""Placing DRAM images and regions once a program is made: the AXI 4 KiB rule.

The RTL sends a DRAM request whose last beat alone lies past a 4 KiB boundary as one burst
across it, which AXI forbids (tensil.estimate.axi_requests). Each DRAM1 image and each DRAM0
region is moved up by the fewest vectors that keep every move touching it clear of that,
and those moves follow. Where no shift does (strided moves over a region longer than the
boundaries' period: a multi-block input read a column at a time), the region stays put and
its crossing moves are counted: the compile summary says how many, and the RTL
co-simulation refuses such a program.

A step of its own: `place_dram1` and `place_dram0` take the finished instruction list (moves
are rewritten in place) and the images or regions, nothing of the scheduler.
"""

import bisect
import dataclasses
import itertools
import logging
import math
from typing import Dict, List, Sequence, Tuple, cast

import numpy as np

from tensil.arch import Architecture
from tensil.driver import PROBE_VECTORS
from tensil.estimate import crosses_boundary
from tensil.isa import DataMove, DataMoveKind, Instruction

from .errors import MemoryOverflow

__all__ = ["clear_shift", "place_dram0", "place_dram1"]

log = logging.getLogger(__name__)
K = DataMoveKind

def clear_shift(instructions: Sequence[Instruction], movers: List[int], arch: Architecture,
                delta: int) -> Tuple[int, int]:
    """(pad, crossing moves): the least pad >= 0 such that the moves at `movers`, their
    addresses moved by delta + pad, make no burst across a 4 KiB boundary, and 0; where none
    does, (0, how many of them cross at delta)."""
    def crosses(i: int, shift: int) -> bool:
        return crosses_boundary(cast(DataMove, instructions[i]), arch, shift)   # movers are DataMoves

    period = 4096 // math.gcd(arch.vector_bytes, 4096)   # vectors after which it all repeats
    for pad in range(period):
        if not any(crosses(i, delta + pad) for i in movers):
            return pad, 0
    return 0, sum(1 for i in movers if crosses(i, delta))


def _movers(instructions: Sequence[Instruction], kinds: Tuple[DataMoveKind, ...],
            bases: List[int]) -> Dict[int, List[int]]:
    """Indices of the moves of `kinds`, by the base (of the sorted `bases`) they fall in."""
    found: Dict[int, List[int]] = {base: [] for base in bases}
    for index, instruction in enumerate(instructions):
        if isinstance(instruction, DataMove) and instruction.kind in kinds:
            found[bases[bisect.bisect_right(bases, instruction.address) - 1]].append(index)
    return found


def _follow(instructions: List[Instruction], movers: List[int], delta: int) -> None:
    for i in movers:
        move = cast(DataMove, instructions[i])   # movers are DataMoves
        instructions[i] = dataclasses.replace(move, address=move.address + delta)


def _place(instructions: List[Instruction], arch: Architecture, kinds: Tuple[DataMoveKind, ...],
           sizes: Dict[int, int], what: str) -> Tuple[Dict[int, int], int, int]:
    """Move the areas {base: size} (bump-allocated, disjoint) up where the rule needs it:
    ({old base: new base}, the end of the last, crossing moves left)."""
    bases = sorted(sizes)
    movers = _movers(instructions, kinds, bases)
    moved: Dict[int, int] = {}
    cursor, violations = 0, 0
    for base in bases:
        pad, crossing = clear_shift(instructions, movers[base], arch, cursor - base)
        if crossing:
            violations += crossing
            log.warning("%s at %d: %d move(s) cross a 4 KiB boundary wherever it is placed (AXI forbids "
                        "it; the RTL co-simulation refuses the program)", what, base, crossing)
        _follow(instructions, movers[base], cursor + pad - base)
        moved[base] = cursor + pad
        cursor += pad + sizes[base]
    return moved, cursor, violations


def place_dram1(instructions: List[Instruction], arch: Architecture, images: List[np.ndarray]
                ) -> Tuple[np.ndarray, int]:
    """DRAM1's contents (the images in order, zero vectors where one moved up) and the moves
    left crossing a boundary; the moves from and to DRAM1 follow their image."""
    if not images:
        return np.zeros((0, arch.array_size), np.int64), 0
    bases = list(itertools.accumulate([0] + [image.shape[0] for image in images[:-1]]))
    moved, top, violations = _place(instructions, arch, (K.DRAM1_TO_LOCAL, K.LOCAL_TO_DRAM1),
                                    {base: image.shape[0] for base, image in zip(bases, images)},
                                    "DRAM1 image")
    if top > arch.dram1_depth:
        raise MemoryOverflow("(constants)", "DRAM1", top, arch.dram1_depth)
    out = np.zeros((top, arch.array_size), np.int64)
    for base, image in zip(bases, images):
        out[moved[base]:moved[base] + image.shape[0]] = image
    return out, violations


def place_dram0(instructions: List[Instruction], arch: Architecture, regions: Sequence[object]
                ) -> Tuple[Dict[int, int], int, int]:
    """The DRAM0 regions' new bases ({old base: new base}), the end of the last and the moves
    left crossing a boundary; the moves from and to DRAM0 follow their region. A region is
    anything with `base` and `size` (the scheduler's Region)."""
    sizes: Dict[int, int] = {}
    for region in regions:
        sizes.setdefault(region.base, region.size)   # type: ignore[attr-defined]
    moved, top, violations = _place(instructions, arch, (K.DRAM0_TO_LOCAL, K.LOCAL_TO_DRAM0),
                                    sizes, "DRAM0 region")
    if top > arch.dram0_depth - PROBE_VECTORS:
        raise MemoryOverflow("(activations)", "DRAM0", top, arch.dram0_depth - PROBE_VECTORS)
    return moved, top, violations
