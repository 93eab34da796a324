"""Weight blocks read early: which blocks of later layers, and where they wait.

A layer's post-op SIMDs that no weight read of its own hides run on the RTL beside a DRAM
read issued after them (the decoder queues SIMDs and moves on). The scheduler puts, after
each batch of such SIMDs, the read of a later layer's weight block (backend._Scheduler.
_prefetch); that layer then loads the block without reading it. This module decides which
blocks, in what order, and which local memory holds each until its layer: memory that is free
now, that no activation planned in between takes, and that every layer in between left free
in the schedule without early reads (its `room`). A pure planning step: no instruction.

A weight load after a MatMul waits for the array to drain; a DRAM read there runs beside the
drain, and one of `piece_vectors` vectors costs about a cycle more: 3 at 50 MHz, where the
read latency and setup take 15 cycles of the drain's 23 (measured on the RTL:
tests/test_tensil_rtl.py::test_a_read_of_three_vectors_hides_in_a_drain; on the ResNet-9,
pieces of 1 to 5 vectors: 254,582, 254,195, 253,764, 254,265 and 254,813 cycles), none at
125 MHz, where the latency alone is longer than the drain. Where no read of its
own hides a drain (its block was read early), the scheduler reads there the first vectors of
a block read in its own layer later (a piece, `next_piece`); that layer then reads the rest
and pushes both. Pieces are of the blocks that a schedule without them read in their own
layers (`pieces_of`), from the far end of the candidates, which early reads reach last.
"""

import collections
from typing import AbstractSet, Collection, Deque, Dict, List, Optional, Sequence, Set, Tuple

from tensil.arch import Architecture
from tensil.emulator import DRAINING_PUSHES
from tensil.estimate import MemoryAwareModel, MemoryModel

from .memory import ActivationPlan
from .program import Allocator
from .quantize import MatOp, QGraph

__all__ = ["EarlyReads", "candidates", "piece_vectors"]

Key = Tuple[int, int]   # (layer index, block index)


def piece_vectors(arch: Architecture, memory: MemoryModel) -> int:
    """The vectors a DRAM read in the array's drain (2n - 1 cycles) takes for a cycle more at
    most: its latency and setup first, then each vector's beats; 0 where none fit."""
    beats = MemoryAwareModel(arch, memory).beats_per_vector * memory.beat_cycles
    spare = 2 * arch.array_size - memory.read_latency - memory.read_setup   # the drain and a cycle
    return max(0, int(spare // beats))


def candidates(qgraph: QGraph) -> List[Key]:
    """The blocks worth reading early: every weight block of every layer, nearest layer first.
    None is kept for a read of its own to hide the post-ops of the block before: a load without
    a read hides two LeakyReLU vectors whole in the array's drain (12 cycles saved, backend.
    HIDDEN_WORK_NO_READ), a read of its own three cycles of each vector's six."""
    keys: List[Key] = []
    for index, q in enumerate(qgraph.layers):
        if q.max_term is not None:
            continue
        keys += [(index, block) for block in dict.fromkeys(
            op.block for ops in q.ops for op in ops if isinstance(op, MatOp))]
    return keys


class EarlyReads:
    """The blocks read early so far and the memory they hold, for one scheduling attempt."""

    def __init__(self, qgraph: QGraph, plan: ActivationPlan, room: Sequence[int],
                 pieces_of: AbstractSet[Key] = frozenset(), piece: int = 0,
                 kept: Collection[Key] = ()):
        self.q = qgraph
        self.pieces_of = pieces_of                  # the blocks a piece may be read of
        self.piece = piece                          # a piece's vectors (piece_vectors)
        self.plan = plan
        self.room = list(room)                      # local vectors each layer may give them
        self.per = qgraph.arch.array_size + 1       # a block's vectors (its bias row included)
        self.held = [0] * len(qgraph.layers)        # vectors they hold during each layer
        self.blocks: Dict[Key, Tuple[int, bool]] = {}   # -> (local address, read without its bias row)
        self.pieces: Dict[Key, int] = {}             # -> local address of its first vectors
        self.read_early: Set[Key] = set()            # every block read early so far
        self.pending: Deque[Key] = collections.deque(   # kept blocks are never read (kept.py)
            key for key in candidates(qgraph) if key not in kept)

    def next(self, index: int, local: Allocator, half: int) -> Optional[Tuple[Key, int]]:
        """The next block to read during layer `index` and the local address it takes (taken
        from `local`), or None: none left, or no room for it (nor for any later, which would
        be held longer)."""
        while self.pending and self.pending[0][0] <= index:
            self.pending.popleft()
        if not self.pending:
            return None
        key = self.pending[0]
        address = self._address(index, key[0], local, half)
        if address is None:
            return None
        self.pending.popleft()
        self._hold(index, key, address, local, True)
        self.read_early.add(key)
        return key, address

    def _hold(self, index: int, key: Key, address: int, local: Allocator, taken: bool,
              size: Optional[int] = None) -> None:
        """Take (or give back) a block's memory (or `size` vectors of it), held from layer
        `index` until its own."""
        size = self.per if size is None else size
        (local.take if taken else local.release)(address, size)
        for j in range(index, key[0] + 1):
            self.held[j] += size if taken else -size

    def next_piece(self, index: int, local: Allocator, half: int) -> Optional[Tuple[Key, int, int]]:
        """A block to read the first vectors of during layer `index`, the local address they
        take and the block's first row read (1 past a zero bias row, which stays in DRAM1);
        None where no later layer's block has room for them. The block is then no candidate
        for an early read: its layer reads the rest."""
        if not self.piece:
            return None
        tried = set()
        for key in reversed(self.pending):
            if key[0] <= index:
                break
            if key[0] in tried or key not in self.pieces_of:
                continue
            tried.add(key[0])
            q = self.q.layers[key[0]]
            first = int(not q.blocks[key[1]][0].any())
            # the rest is the first load after MatMuls: it must wait for their writes
            if q.block_rows[key[1]] + 1 - first - self.piece < DRAINING_PUSHES:
                continue
            address = self._address(index, key[0], local, half, self.piece)
            if address is None:
                continue
            self.pending.remove(key)
            self._hold(index, key, address, local, True, self.piece)
            self.pieces[key] = address
            return key, address, first
        return None

    def next_run(self, index: int, local: Allocator, half: int, count: int) -> List[Tuple[Key, int]]:
        """Up to `count` next blocks to read in one move during layer `index`, lowest address
        first, each block's memory right above the one before it; [] when none fits."""
        run: List[Tuple[Key, int]] = []
        while len(run) < count:
            chosen = self.next(index, local, half)
            if chosen is None:
                break
            if run and chosen[1] != run[-1][1] - self.per:   # not adjacent: left for the next read
                self.pending.appendleft(chosen[0])
                self._hold(index, *chosen, local, False)
                self.read_early.discard(chosen[0])
                break
            run.append(chosen)
        return run[::-1]

    def _address(self, index: int, layer: int, local: Allocator, half: int,
                 size: Optional[int] = None) -> Optional[int]:
        """The highest free run of a block (or `size` vectors) held from layer `index` until
        `layer`: outside the planned regions of the activations made in between and every
        layer's room (the layer itself needs no room for it: the block replaces its own read),
        not across the middle of local memory (no LoadWeights may cross it)."""
        per = self.per if size is None else size
        last = layer if size is None else layer + 1   # a piece is memory its layer needs too
        if any(self.held[j] + per > self.room[j] for j in range(index, last)):
            return None
        taken: List[Tuple[int, int]] = []
        for j in range(index + 1, layer + 1):
            region = self.plan.regions.get(id(self.q.layers[j].layer.output))
            if region is not None and region.space == "local":
                taken.append((region.base, region.base + region.size))
        for start, size in sorted(local.free, reverse=True):
            top = start + size
            while top - per >= start:
                low = top - per
                if low < half < top:
                    top = half
                    continue
                clashes = [a for a, b in taken if a < top and low < b]
                if not clashes:
                    return low
                top = min(clashes)
        return None

    def release(self, index: int, local: Allocator) -> None:
        """Free the blocks of layer `index` once it has run."""
        for key in [k for k in self.blocks if k[0] == index]:
            local.release(self.blocks.pop(key)[0], self.per)
        for key in [k for k in self.pieces if k[0] == index]:
            local.release(self.pieces.pop(key), self.piece)
