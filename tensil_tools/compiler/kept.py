"""Weight blocks kept in local memory from one frame to the next.

The weights are read from DRAM1 every frame, 3 cycles a vector on the PYNQ-Z1's 64-bit port,
and the last layers of a backbone, with few output pixels a block, wait on those reads. Local
memory keeps its contents between programs, and the activations leave its top free for the
whole frame. So the blocks of the layers read last are placed there, read by the program's
first instructions (its prologue, one DataMove of one DRAM1 image), and loaded by their layers
without a read. Nothing after the prologue writes there, so a driver that keeps local memory
between frames runs the prologue once, when it starts, as Tensil's driver copies the consts of
a model compiled with `load_consts_to_local` (`tensil.machine.prologue_length` finds the
prologue in any program; our driver runs it with the consts). Any other driver runs the whole
program each frame and gets the same outputs, the prologue's cycles more.

A pure planning step: which blocks, at which addresses, and the architecture the rest of the
program is scheduled for (the same, with a local memory that ends below them).
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from tensil.arch import Architecture

from .early import Key, candidates
from .quantize import QGraph

__all__ = ["KeptBlocks", "kept_blocks"]


@dataclasses.dataclass(frozen=True)
class KeptBlocks:
    """Blocks kept in local memory: each block's local address and whether it is kept without
    its zero bias row (the address is then the vector below its first weight row, like a block
    read early without it: backend._load_block), the run of local memory [base, base + vectors)
    they fill, and the architecture the rest of the program is scheduled for (its local memory
    ends at base, its last vector, which a program without kept blocks leaves to the probe)."""

    blocks: Dict[Key, Tuple[int, bool]]
    base: int
    vectors: int
    arch: Architecture          # the real one: its local memory's middle is the RTL's
    scheduled: Architecture     # the one the rest is scheduled for

    def image(self, qgraph: QGraph) -> np.ndarray:
        """The prologue's DRAM1 image: every block's rows in address order."""
        rows: List[np.ndarray] = []
        for (layer, block), (_, headless) in sorted(self.blocks.items(), key=lambda item: item[1][0]):
            q = qgraph.layers[layer]
            rows.append(q.blocks[block][int(headless):q.block_rows[block] + 1])
        return np.concatenate(rows)


def kept_blocks(qgraph: QGraph, vectors: int) -> Optional[KeptBlocks]:
    """The blocks of the layers run last (the far end of candidates order, which early reads
    reach last) that fit in `vectors` of local memory and in its upper half (no LoadWeights may
    cross its middle), kept at its top, below its last vector (the driver's probe); None where
    none fits."""
    arch = qgraph.arch
    top = arch.local_depth - 1
    kept: List[Tuple[Key, int, bool]] = []
    room = min(vectors, top - arch.local_depth // 2)
    for layer, block in reversed(candidates(qgraph)):
        q = qgraph.layers[layer]
        headless = not q.blocks[block][0].any()
        size = q.block_rows[block] + 1 - int(headless)
        if size > room:
            break
        kept.append(((layer, block), size, headless))
        room -= size
    if not kept:
        return None
    base = top - sum(size for _, size, _ in kept)
    scheduled = dataclasses.replace(arch, local_depth=base + 1)
    if scheduled.layout != arch.layout:   # the same instruction fields, or none kept
        return None
    blocks: Dict[Key, Tuple[int, bool]] = {}
    cursor = base
    for key, size, headless in kept:
        blocks[key] = (cursor - int(headless), headless)
        cursor += size
    return KeptBlocks(blocks, base, top - base, arch, scheduled)
