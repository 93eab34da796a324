"""Tiling a layer: strips of output rows, groups of weight blocks, accumulator tiles.

Pure functions of a layer's shapes and the memory they may use, a step of their own between
memory planning and emission (backend._Scheduler allocates what they decide and emits it).
"""

from typing import List, Sequence, Set, Tuple

from .graph import AddTerm
from .quantize import MatOp

__all__ = ["accumulator_tiles", "rows_in", "strips", "weight_groups"]

CobOps = Tuple[int, List]   # an output channel block and the ops that accumulate it


def rows_in(term: object, rows: int) -> int:
    """Input rows a term reads for `rows` output rows."""
    if isinstance(term, AddTerm):
        return rows
    return (rows - 1) * term.stride[0] + term.kernel[0]   # type: ignore[attr-defined]


def strips(height: int, rows: int) -> List[Tuple[int, int]]:
    """Output rows [i0, i1) of each strip of at most `rows` rows."""
    return [(i, min(height, i + rows)) for i in range(0, height, rows)]


def weight_groups(ops_by_cob: Sequence[List], n: int, budget: int) -> List[List[CobOps]]:
    """Groups of (cob, ops) whose distinct weight blocks fit `budget` local vectors together
    (n + 1 a block, one block of slack for the middle of local memory); a block whose ops
    alone do not fit is cut into chunks, each a group of its own."""
    per = n + 1
    capacity = max(1, (budget - n) // per)
    groups: List[List[CobOps]] = []
    current: List[CobOps] = []
    blocks: Set[int] = set()
    for cob, ops in enumerate(ops_by_cob):
        need = {op.block for op in ops if isinstance(op, MatOp)}
        if len(need) > capacity:
            if current:
                groups.append(current)
                current, blocks = [], set()
            chunk: List = []
            chunk_blocks: Set[int] = set()
            for op in ops:
                if isinstance(op, MatOp) and op.block not in chunk_blocks and \
                        len(chunk_blocks) == capacity:
                    groups.append([(cob, chunk)])
                    chunk, chunk_blocks = [], set()
                chunk.append(op)
                if isinstance(op, MatOp):
                    chunk_blocks.add(op.block)
            groups.append([(cob, chunk)])
            continue
        if len(blocks | need) > capacity and current:
            groups.append(current)
            current, blocks = [], set()
        current.append((cob, ops))
        blocks |= need
    if current:
        groups.append(current)
    return groups


def accumulator_tiles(tile: int, available: int, has_post_ops: bool, groups: List[List[CobOps]]) -> int:
    """2 when two tiles fit the accumulators and a block's post-ops can run among the next
    block's weight loads (backend._compute), else 1."""
    return 2 if has_post_ops and 2 * tile <= available and any(len(g) > 1 for g in groups) else 1
