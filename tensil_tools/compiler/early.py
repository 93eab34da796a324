"""Weight blocks read early: which blocks of later layers, and where they wait.

A layer's post-op SIMDs that no weight read of its own hides run on the RTL beside a DRAM
read issued after them (the decoder queues SIMDs and moves on). The scheduler puts, after
each batch of such SIMDs, the read of a later layer's weight block (backend._Scheduler.
_prefetch); that layer then loads the block without reading it. This module decides which
blocks, in what order, and which local memory holds each until its layer: memory that is free
now, that no activation planned in between takes, and that every layer in between left free
in the schedule without early reads (its `room`). A pure planning step: no instruction.
"""

import collections
from typing import Deque, Dict, List, Optional, Sequence, Tuple

from .memory import ActivationPlan
from .program import Allocator
from .quantize import MatOp, QGraph

__all__ = ["EarlyReads"]

Key = Tuple[int, int]   # (layer index, block index)


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

    def __init__(self, qgraph: QGraph, plan: ActivationPlan, room: Sequence[int]):
        self.q = qgraph
        self.plan = plan
        self.room = list(room)                      # local vectors each layer may give them
        self.per = qgraph.arch.array_size + 1       # a block's vectors (its bias row included)
        self.held = [0] * len(qgraph.layers)        # vectors they hold during each layer
        self.blocks: Dict[Key, Tuple[int, bool]] = {}   # -> (local address, read without its bias row)
        self.pending: Deque[Key] = collections.deque(candidates(qgraph))

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
        return key, address

    def _hold(self, index: int, key: Key, address: int, local: Allocator, taken: bool) -> None:
        """Take (or give back) a block's memory, held from layer `index` until its own."""
        (local.take if taken else local.release)(address, self.per)
        for j in range(index, key[0] + 1):
            self.held[j] += self.per if taken else -self.per

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
                break
            run.append(chosen)
        return run[::-1]

    def _address(self, index: int, layer: int, local: Allocator, half: int) -> Optional[int]:
        """The highest free run of a block held from layer `index` until `layer`: outside the
        planned regions of the activations made in between and every layer's room (the layer
        itself needs no room for it: the block replaces its own read), not across the middle
        of local memory (no LoadWeights may cross it)."""
        per = self.per
        if any(self.held[j] + per > self.room[j] for j in range(index, layer)):
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
