"""Scheduling a quantized graph onto one architecture: memory homes, tiles, instructions.

Memories (vectors of N lanes):
- DRAM0: the input at vector 0 in Tensil's NHWC layout (pixel-major, ceil(C/N) vectors a
  pixel), the output after it in the same layout, then any activation that had to leave
  the chip ("spilled"), each as dense planes (channel block, row, column).
- DRAM1: the weight blocks, in the order they are loaded, and the SIMD constants.
- Local memory: activations that stay on chip, in planes (channel block, row, column) with
  the zero borders their convolutions read, so a convolution needs no special case at the
  edges; the weight blocks of the layer being computed; strip buffers for spilled inputs.
- Accumulators: the output tile of one channel block (rows x columns; two alternating tiles
  where they fit), a window of a max pool's input, a staging row of a pixel-major DRAM0 input
  taken apart by channel block, the SIMD constants at the top (constants.py).

Every activation stays in local memory unless the layers around it cannot fit; then the
largest live one moves to DRAM0 and the plan is made again, until it fits or a layer cannot
fit even with everything else in DRAM0 (`MemoryOverflow` says which memory and by how much).

A layer runs as: zero the borders of its output planes; for each group of output channel
blocks whose weights fit, read those weights from DRAM1 once (a group of 3 blocks or more a
block at a time, just before the block's first LoadWeights and right after a MatMul, where
the read runs in the array's drain); for each strip of output rows that fits the
accumulators (the whole map when it fits), for each output block: the block's
MatOps/CopyOps in order (LoadWeights when the block changes, one MatMul per output row and
kernel tap; rows of padding that would add zero are skipped), the post-ops with SIMD, and
the rows written to their home. When two tiles fit the accumulators, blocks alternate
between them and a block's post-ops are spread among the next block's weight loads (the RTL
runs them there beside the drain and the weight read), its rows written after that block.
Convolution, bias, residual addition, activation and average scaling of a layer thus happen
in the accumulators without a round trip through memory.

Post-ops that no weight read of their own layer hides (a single tile, a layer's last block)
run in batches of EARLY_READ_WORK (SIMD cycles) with a read of a later layer's weight block
after each: the RTL runs a DRAM read beside the SIMD work queued before it. The block waits in local
memory that no activation planned in between needs and that every layer in between left free
in the plain schedule; its layer loads it without reading it (its read would have cost the
beats beyond the array's drain). `schedule` keeps that program where the calibrated model says
it is faster.
"""

import collections
import dataclasses
import itertools
import logging
from typing import AbstractSet, Callable, Deque, Dict, List, Optional, Set, Tuple, cast

import numpy as np

from tensil.arch import Architecture
from tensil.estimate import SIMD_CYCLES, Estimate, MemoryModel, estimate_memory_aware
from tensil.fixed import fixed_format
from tensil.isa import SIMD, DataMove, DataMoveKind, LoadWeights, MatMul, SimdOp

from .constants import Constants
from .early import EarlyReads, candidates, piece_vectors
from .errors import CompileError, MemoryOverflow
from .graph import LinearTerm, Value
from .kept import KeptBlocks, kept_blocks
from .memory import (
    ActivationPlan,
    Memory,
    NoRoom,
    Region,
    compact_plan,
    plan_activations,
    staging_region,
)
from .placement import clear_shift, place_dram0, place_dram1
from .program import Program
from .quantize import (
    CopyOp,
    MatOp,
    QClip,
    QGraph,
    QLayer,
    QLeakyRelu,
    QMask,
    QNegativePart,
    QRelu,
    QScale,
    blocks_of,
)
from .tiling import accumulator_tiles, rows_in, strips, weight_groups

__all__ = ["STRATEGIES", "CompiledProgram", "LayerReport", "Region", "schedule"]

K = DataMoveKind
log = logging.getLogger(__name__)
_REGISTER = 1


@dataclasses.dataclass
class LayerReport:
    name: str
    ops: str
    output: str
    strips: int
    groups: int
    weight_vectors: int
    instructions: int
    macs: int
    home: str
    start: int = 0        # index of its first instruction
    activations: int = 0  # local vectors the activations hold while it runs (its output's included)


@dataclasses.dataclass
class CompiledProgram:
    instructions: list
    dram1: np.ndarray             # raw (vectors, N)
    input_region: Region
    output_region: Region
    dram0_vectors: int
    local_peak: int
    accumulator_peak: int
    spilled: List[str]
    layers: List[LayerReport]
    regions: Dict[str, Region] = dataclasses.field(default_factory=dict)   # by value name
    axi_violations: int = 0   # DRAM moves no placement keeps inside 4 KiB (0 in every program the tests compile)
    dram: MemoryModel = dataclasses.field(default_factory=MemoryModel)   # the DRAM timing it was made for
    prologue: int = 0         # its first instructions, which read the blocks kept between frames (kept.py)
    _calibrated: Optional[Estimate] = dataclasses.field(default=None, repr=False, compare=False)
    _frame: Optional[Estimate] = dataclasses.field(default=None, repr=False, compare=False)

    def calibrated(self, arch: Architecture) -> Estimate:
        """The RTL-calibrated cycle model's estimate of the program with the DRAM timing it
        was made for (computed once)."""
        if self._calibrated is None:
            self._calibrated = estimate_memory_aware(self.instructions, arch, self.dram)
        return self._calibrated

    @property
    def kept_vectors(self) -> int:
        """The local vectors its prologue fills, which stay from one frame to the next."""
        return sum(instruction.size + 1 for instruction in self.instructions[:self.prologue])

    def frame(self, arch: Architecture) -> Estimate:
        """The same estimate of a frame on a driver that ran the prologue once, when it
        started (the program after it; the whole program where it has none)."""
        if not self.prologue:
            return self.calibrated(arch)
        if self._frame is None:
            self._frame = estimate_memory_aware(self.instructions[self.prologue:], arch, self.dram)
        return self._frame


LAZY_WEIGHT_READS = 3   # blocks a group needs before each is read just before its first load
# deferred SIMD work (priced by SIMD_CYCLES) before a weight load (see _compute): with a read,
# 8 LeakyReLU vectors' worth; without, what the drain hides whole (2 LeakyReLU vectors, 3 Mins)
HIDDEN_WORK = 58.0
HIDDEN_WORK_NO_READ = 14.5
# SIMD work (priced by SIMD_CYCLES) before each read of a later layer's block (_prefetch): 16
# LeakyReLU vectors, whose 48 cycles of queued work a 13-vector read (54 cycles) runs beside
# (at most 51 after LeakyReLUs: tensil.estimate.SIMD_QUEUE_DEPTH), the nearly free flagless
# SIMDs counted as the model prices them (1.25); measured best of 90 to 140 on the ResNet-9
EARLY_READ_WORK = 116.0
# the same before a read of two blocks (26 vectors, about 93 cycles) where the SIMDs are
# Read+Write ones alone: 30 of them queue 90 cycles of work, and the RTL runs a read beside
# that of the last 25 such SIMDs, about 100 (tensil.estimate.SIMD_QUEUE_DEPTH)
EARLY_READ_WORK_RW = 120.0
EARLY_READ_BLOCKS_RW = 2


def _pow2_stride(step: int, depth: int) -> Optional[int]:
    """The stride exponent of a step, when the architecture has it."""
    if step >= 1 and step & (step - 1) == 0:
        exponent = step.bit_length() - 1
        if exponent < depth:
            return exponent
    return None


class _Scheduler:
    """One attempt at a program for the given homes and their activation plan (memory.py):
    constants (constants.py), tiling (tiling.py) and the run-time buffers as the layers run,
    emission here, placement (placement.py) at the end."""

    def __init__(self, qgraph: QGraph, homes: Dict[int, str], plan: ActivationPlan,
                 dram: MemoryModel, prefetch_room: Optional[List[int]] = None,
                 pieces_of: AbstractSet[Tuple[int, int]] = frozenset(),
                 kept: Optional[KeptBlocks] = None):
        self.q = qgraph
        self.arch: Architecture = qgraph.arch
        self.n = qgraph.arch.array_size
        self.fmt = fixed_format(qgraph.arch.data_type)
        # the middle of local memory is the real one's where kept blocks fill its top
        self.program = Program(kept.arch if kept else self.arch, self.arch.accumulator_depth - 1)
        self.kept = kept
        self.memory = Memory(qgraph, homes, plan)
        self.loaded_block: Optional[Tuple[int, int]] = None   # (local address, block key)
        self.unread_blocks: Dict[Tuple[int, int], int] = {}   # (local address, block) -> its DRAM1 vector
        self.headless_blocks: Set[Tuple[int, int]] = set()   # read without their zero bias row
        self.pieced_blocks: Dict[Tuple[int, int], Tuple[int, int]] = {}   # -> (piece address, rows after it)
        self.hidden: Deque[SIMD] = collections.deque()   # deferred post-ops of the previous block
        self.register: Optional[object] = None
        self.reports: List[LayerReport] = []
        self.acc_peak = 0
        graph = qgraph.graph
        if graph.output is graph.input:
            raise CompileError("the graph output is its input")
        self.constants = Constants(qgraph)
        self.acc_avail = self.constants.acc_avail   # accumulators for tiles and windows
        self.axi_violations = 0              # moves no placement could keep inside 4 KiB
        self.layer_peaks: List[int] = []     # local vectors in use at most, layer by layer
        self.index = -1                      # the layer being scheduled
        # weight blocks read early (_prefetch), given each layer's room for them
        self.dram = dram
        self.early = (EarlyReads(qgraph, plan, prefetch_room, pieces_of, piece_vectors(self.arch, dram),
                                 kept.blocks if kept else ())
                      if prefetch_room is not None else None)

    # ------------------------------------------------------------------ zeroing
    def _zero_runs(self, runs: List[Tuple[int, int]]) -> None:
        """Write zeros to local runs (address, count) from a zero accumulator window."""
        runs = [r for r in runs if r[1] > 0]
        if not runs:
            return
        window = min(self.acc_avail, max(c for _, c in runs))
        self.program.emit(LoadWeights(0, self.n, zeroes=True))
        self.loaded_block = None
        self.program.emit(MatMul(0, 0, window - 1, zeroes=True))
        self.acc_peak = max(self.acc_peak, window)
        for address, count in runs:
            for start in range(0, count, window):
                self.program.datamove(K.ACC_TO_LOCAL, address + start, 0,
                                      min(window, count - start))

    def _border_runs(self, region: Region, value: Value) -> List[Tuple[int, int]]:
        """The contiguous runs of a local region that are zero border, not pixels."""
        runs: List[Tuple[int, int]] = []
        for cb in range(blocks_of(value.channels, self.n)):
            start = region.base + cb * region.cb_pitch
            for r in range(value.height):
                first = region.addr(cb, r, 0)
                runs.append((start, first - start))
                start = first + value.width
            runs.append((start, region.base + (cb + 1) * region.cb_pitch - start))
        merged: List[Tuple[int, int]] = []
        for a, c in runs:
            if c <= 0:
                continue
            if merged and merged[-1][0] + merged[-1][1] == a:
                merged[-1] = (merged[-1][0], merged[-1][1] + c)
            else:
                merged.append((a, c))
        return merged

    # ------------------------------------------------------------------ moving rows
    def _move_row(self, kind: DataMoveKind, local: int, dram: Region, cb: int, r: int,
                  count: int) -> None:
        """`count` pixels of row r from column 0 between local (contiguous) and DRAM0."""
        step = _pow2_stride(dram.col_pitch, self.arch.stride1_depth)
        address = dram.addr(cb, r, 0)
        if step is not None:
            self.program.datamove(kind, local, address, count, 0, step)
        else:
            for c in range(count):
                self.program.datamove(kind, local + c, address + c * dram.col_pitch, 1)

    def _read_row(self, destinations: List[int], home: Region, r: int, count: int) -> None:
        """Row r of every channel block of a DRAM0 region into local (block cb's `count` pixels
        to destinations[cb], contiguous). A pixel-major (NHWC) region with several blocks would
        need a strided read, one AXI request a vector, and some vector of a region longer than
        the 4 KiB boundaries' period then crosses one wherever the region sits; instead the
        row's blocks are read contiguously into a local staging row, moved to the accumulators,
        and each block taken back with a stride. Without room for that, the strided reads."""
        blocks = len(destinations)
        vectors = count * blocks
        staged = 1 < blocks == home.blocks_per_pixel and vectors <= self.acc_avail
        staging = self.memory.local.alloc(vectors) if staged else None
        if staging is None:
            for cb, local in enumerate(destinations):
                self._move_row(K.DRAM0_TO_LOCAL, local, home, cb, r, count)
            return
        self.acc_peak = max(self.acc_peak, vectors)
        self.program.datamove(K.DRAM0_TO_LOCAL, staging, home.addr(0, r, 0), vectors)
        self.program.datamove(K.LOCAL_TO_ACC, staging, 0, vectors)
        step = _pow2_stride(blocks, self.arch.stride1_depth)
        for cb, local in enumerate(destinations):
            if step is not None:
                self.program.datamove(K.ACC_TO_LOCAL, local, cb, count, 0, step)
            else:
                for c in range(count):
                    self.program.datamove(K.ACC_TO_LOCAL, local + c, cb + c * blocks, 1)
        self.memory.local.release(staging, vectors)

    # ------------------------------------------------------------------ the program
    def run(self) -> CompiledProgram:
        if self.kept is not None:   # the prologue
            self.program.datamove(K.DRAM1_TO_LOCAL, self.kept.base,
                                  self.constants.image(self.kept.image(self.q)), self.kept.vectors)
        prologue = len(self.program)
        self.constants.load_simd_constants(self.program, self.memory.local)
        graph = self.q.graph
        region = self.memory.place_input()
        if region.space == "local":
            self._import_input(region)
        local = self.memory.local
        for index, q in enumerate(self.q.layers):
            self.program.barrier()    # per-layer instruction slices stay exact
            start = len(self.program)
            self.index = index
            peak, local.peak = local.peak, local.used
            self._layer(index, q)
            self.layer_peaks.append(local.peak)
            local.peak = max(peak, local.peak)
            self.reports[-1].instructions = len(self.program) - start
            self.reports[-1].start = start
            if self.early is not None:
                self.early.release(index, local)
            self.memory.release_after(index, q)
        dram1 = self._place_dram1()
        self._place_dram0()
        spilled = [v.name for v in graph.values()[1:-1] if self.memory.homes.get(id(v)) == "dram0"]
        if self.memory.homes.get(id(graph.input)) != "local":
            spilled.insert(0, graph.input.name + " (read from DRAM0)")
        regions = {v.name: self.memory.regions[id(v)] for v in graph.values() if id(v) in self.memory.regions}
        return CompiledProgram(self.program.instructions, dram1, self.memory.input_dram,
                               self.memory.output_dram, self.memory.dram0_top, self.memory.local.peak,
                               self.acc_peak, spilled, self.reports, regions, self.axi_violations, self.dram,
                               prologue)

    # ------------------------------------------------------------------ placement
    def _place_dram1(self) -> np.ndarray:
        dram1, violations = place_dram1(self.program.instructions, self.arch, self.constants.images)
        self.axi_violations += violations
        return dram1

    def _place_dram0(self) -> None:
        """The input, the output and the spilled activations (disjoint: DRAM0 is bump-allocated)."""
        regions = [self.memory.input_dram, self.memory.output_dram] + [r for r in self.memory.regions.values() if r.space == "dram0"]
        moved, self.memory.dram0_top, violations = place_dram0(self.program.instructions, self.arch, regions)
        self.axi_violations += violations

        def follow(region: Region) -> Region:
            return dataclasses.replace(region, base=moved[region.base])
        self.memory.input_dram, self.memory.output_dram = follow(self.memory.input_dram), follow(self.memory.output_dram)
        self.memory.regions = {key: follow(r) if r.space == "dram0" else r for key, r in self.memory.regions.items()}

    def _import_input(self, region: Region) -> None:
        x = self.q.graph.input
        self._zero_runs(self._border_runs(region, x))
        for r in range(x.height):
            self._read_row([region.addr(cb, r, 0) for cb in range(blocks_of(x.channels, self.n))],
                           self.memory.input_dram, r, x.width)

    # ------------------------------------------------------------------ one layer
    def _layer(self, index: int, q: QLayer) -> None:
        out = q.layer.output
        region = self.memory.place_output(q)
        if region.space == "local":
            self._zero_runs(self._border_runs(region, out))
        if q.max_term is not None:
            self._max_layer(q, region)
        else:
            self._linear_layer(q, region)

    # strips, buffers, weights ---------------------------------------------------------
    def _strip_plan(self, q: QLayer, rows_limit: int, staged_blocks: int = 1
                    ) -> Tuple[int, Dict[int, Region], Optional[Region], List[Tuple[int, int]]]:
        """The largest strip height whose buffers fit; allocates them and returns
        (rows, strip buffers by term index, staging, weight budget runs). A DRAM0 output is
        staged in local memory, `staged_blocks` channel blocks of it at a time."""
        out = q.layer.output
        spilled_terms = [(t, term) for t, term in enumerate(q.layer.terms)
                         if self.memory.regions[id(term.input)].space == "dram0"]
        needs_staging = self.memory.regions[id(out)].space == "dram0"
        rows = rows_limit
        while True:
            held: List[Tuple[int, int]] = []
            buffers: Dict[int, Region] = {}
            staging = None
            ok = True
            for t, term in spilled_terms:
                x = term.input
                left, right = (term.pads[1], term.pads[3]) if isinstance(term, LinearTerm) \
                    else (0, 0)
                pitch = x.width + left + right
                plane = rows_in(term, rows) * pitch
                size = plane * blocks_of(x.channels, self.n)
                address = self.memory.local.alloc(size)
                if address is None:
                    ok = False
                    break
                held.append((address, size))
                buffers[t] = Region("local", address, plane, pitch, 1, 0, left, size)
            if ok and needs_staging:
                size = rows * out.width * staged_blocks
                address = self.memory.local.alloc(size)
                if address is None:
                    ok = False
                else:
                    held.append((address, size))
                    staging = staging_region(address, out.width, rows, staged_blocks)
            if ok and self.memory.local.largest() >= self.n + 1:
                return rows, buffers, staging, held
            for address, size in held:
                self.memory.local.release(address, size)
            if rows == 1:
                needed = sum(s for _, s in held) + self.n + 1
                raise NoRoom(q.name, "local memory", needed, self.memory.local.largest(), self.memory.live())
            rows = max(1, rows // 2)

    def _load_weights(self, q: QLayer, group: List[Tuple[int, List]]) -> Tuple[Dict[int, int],
                                                                              Tuple[int, int]]:
        """Put a group's distinct blocks in local memory (one DRAM1 image, one or two
        DataMoves); returns block -> local address and the allocation to free."""
        order: List[int] = []
        for _, ops in group:
            for op in ops:
                if isinstance(op, MatOp) and op.block not in order:
                    order.append(op.block)
        per = self.n + 1
        self.headless_blocks.clear()   # the blocks of earlier groups are gone
        self.pieced_blocks.clear()
        addresses: Dict[int, int] = {}
        for block in order:   # read early, during an earlier layer (_prefetch), or kept (kept.py)
            ready = self._in_local(block)
            if ready is not None:
                address, headless = ready
                addresses[block] = address
                if headless:
                    self.headless_blocks.add((address, block))
        order = [block for block in order if block not in addresses]
        size = len(order) * per + (self.n if order else 0)
        base = self.memory.alloc(size, q.name)
        half = self.program.half
        cursor = base
        for block in order:
            if cursor < half < cursor + per:
                cursor = half   # no LoadWeights may cross the middle of local memory
            addresses[block] = cursor
            cursor += per
        if len(order) >= LAZY_WEIGHT_READS and self._placeable_block_reads(len(order)):
            # Each block is read from DRAM1 just before its first LoadWeights (_compute), right
            # after a MatMul: the read runs while the array drains, which a LoadWeights waits for
            # anyway (measured on the RTL: about 22 of its cycles hidden, 7 net a block; the
            # first block, after no MatMul, costs a request's 15 more than in one bulk read).
            dram = self.constants.image(np.concatenate([q.blocks[b] for b in order]))
            for k, block in enumerate(order):
                self.unread_blocks[(addresses[block], block)] = dram + k * per
        elif order:
            dram = self.constants.image(np.concatenate([q.blocks[b] for b in order]))
            start = 0
            for k in range(1, len(order) + 1):
                if k == len(order) or addresses[order[k]] != addresses[order[k - 1]] + per:
                    self.program.datamove(K.DRAM1_TO_LOCAL, addresses[order[start]],
                                          dram + start * per, (k - start) * per)
                    start = k
        self.loaded_block = None
        return addresses, (base, size)

    def _in_local(self, block: int) -> Optional[Tuple[int, bool]]:
        """(local address, kept without its zero bias row) of a block of the layer being
        scheduled that needs no read: kept between frames, or read early; else None."""
        key = (self.index, block)
        if self.kept is not None and key in self.kept.blocks:
            return self.kept.blocks[key]
        return self.early.blocks.get(key) if self.early is not None else None

    @staticmethod
    def _gathered_blocks(region: Region, pixels: int) -> int:
        """How many channel blocks of a DRAM0 output to stage and write together: all of a
        pixel-major (NHWC) region's, a strip at a time, contiguously (a block at a time it would
        be one AXI request a vector, some of which cross a 4 KiB boundary); 1 for planes, and
        for a single pixel, whose block vectors are requests of their own anyway."""
        return region.blocks_per_pixel if region.space == "dram0" and pixels > 1 else 1

    def _placeable_block_reads(self, blocks: int) -> bool:
        """Whether an image of `blocks` weight blocks read a block at a time can sit where none
        of the reads sends a burst across a 4 KiB boundary (placement.py; with some 450 blocks
        or more on 12 lanes, every position has one: then the group is read in bulk)."""
        per = self.n + 1
        reads = [DataMove(K.DRAM1_TO_LOCAL, 0, k * per, per - 1) for k in range(blocks)]
        return clear_shift(reads, list(range(blocks)), self.arch, 0)[1] == 0

    # linear and add layers -------------------------------------------------------------
    def _linear_layer(self, q: QLayer, region: Region) -> None:
        _, ho, wo = q.layer.computed   # the output's, or one column phase's (graph.Layer.phases)
        if q.layer.phases[0] > 1 and region.space != "local":
            raise CompileError("layer %s: its column phases are stored interleaved into local memory; "
                               "its output did not fit there" % q.name)
        if wo > self.acc_avail:
            raise MemoryOverflow(q.name, "accumulators", wo, self.acc_avail,
                                 "one output row of %d pixels" % wo)
        rows_limit = min(ho, self.acc_avail // wo)
        gather = self._gathered_blocks(region, ho * wo)
        while True:
            rows, buffers, staging, held = self._strip_plan(q, rows_limit, gather)
            groups = weight_groups(q.ops, self.n, self.memory.local.largest())
            chunked = any(len(g) == 1 and g[0][1] is not q.ops[g[0][0]] for g in groups)
            if gather == 1 or (len(groups) == 1 and not chunked):
                break
            for address, size in held:   # the blocks are not all computed strip by strip
                self.memory.local.release(address, size)
            gather = 1
        row_strips = strips(ho, rows)
        weight_vectors = 0
        tile = rows * wo
        tiles = accumulator_tiles(tile, self.acc_avail, bool(q.post), groups)
        self.acc_peak = max(self.acc_peak, tiles * tile)
        if not chunked:
            for group in groups:
                addresses, allocation = self._load_weights(q, group)
                weight_vectors += allocation[1]
                for s, (i0, i1) in enumerate(row_strips):
                    views = self._load_strips(q, buffers, i0, i1, s)
                    runs = self._runs_across(q, group, views) if tile == 1 else []
                    if any(plan is not None for _, plan in runs):
                        for run, plan in runs:
                            if plan is not None:
                                self._compute_across(q, len(run), plan, addresses)
                            else:
                                self._compute(q, run[0][0], run[0][1], True, views, addresses, i0, i1)
                            for k, (cob, _) in enumerate(run):
                                self._finish(q, cob, region, staging, i0, i1, k)
                        continue
                    finish: Optional[Callable[[], None]] = None
                    for k, (cob, ops) in enumerate(group):
                        base = tile * (k % tiles)
                        self._compute(q, cob, ops, True, views, addresses, i0, i1, base)
                        if finish is not None:
                            finish()
                        finish = self._deferred_finish(q, cob, region, staging, i0, i1, base)
                        if tiles == 1:
                            finish()
                            finish = None
                    if finish is not None:
                        finish()
                self.memory.local.release(*allocation)
        else:
            # some block's weights exceed local memory: chunks, reloaded for every strip
            order = [(g, cob) for g, group in enumerate(groups) for cob, _ in group]
            last_chunk = {cob: g for g, cob in order}
            for s, (i0, i1) in enumerate(row_strips):
                views = self._load_strips(q, buffers, i0, i1, s)
                started: Set[int] = set()
                for g, group in enumerate(groups):
                    addresses, allocation = self._load_weights(q, group)
                    weight_vectors += allocation[1]
                    for cob, ops in group:
                        self._compute(q, cob, ops, cob not in started, views, addresses, i0, i1)
                        started.add(cob)
                        if last_chunk[cob] == g:
                            self._finish(q, cob, region, staging, i0, i1)
                    self.memory.local.release(*allocation)
        for address, size in held:
            self.memory.local.release(address, size)
        self._report(q, len(row_strips), len(groups), weight_vectors, region)

    def _load_strips(self, q: QLayer, buffers: Dict[int, Region], i0: int, i1: int,
                     strip: int) -> Dict[int, Region]:
        """The region each term reads for output rows [i0, i1): its home when resident,
        else its strip buffer, filled from DRAM0 after its border is zeroed (the whole
        buffer before the first strip, the rows outside the image afterwards)."""
        views: Dict[int, Region] = {}
        zero_runs: List[Tuple[int, int]] = []
        loads: List[Tuple[List[int], Region, int, int]] = []   # destinations, home, row, pixels
        for t, term in enumerate(q.layer.terms):
            home = self.memory.regions[id(term.input)]
            if home.space == "local":
                views[t] = home
                continue
            buffer = buffers[t]
            x = term.input
            if isinstance(term, LinearTerm):
                first = i0 * term.stride[0] - term.pads[0]
                count = rows_in(term, i1 - i0)
            else:
                first, count = i0, i1 - i0
            view = dataclasses.replace(buffer, top=-first)
            views[t] = view
            if strip == 0:
                zero_runs.append((buffer.base, buffer.size))
            blocks = range(blocks_of(x.channels, self.n))
            for r in range(first, first + count):
                if 0 <= r < x.height:
                    loads.append(([view.addr(cb, r, 0) for cb in blocks], home, r, x.width))
                elif strip > 0:
                    zero_runs += [(view.addr(cb, r, -view.left), view.row_pitch) for cb in blocks]
        self._zero_runs(zero_runs)   # borrows the accumulator tile and the array
        for destinations, home, r, width in loads:
            self._read_row(destinations, home, r, width)   # may borrow the accumulators too
        return views

    def _compute(self, q: QLayer, cob: int, ops: List, first: bool, views: Dict[int, Region],
                 addresses: Dict[int, int], i0: int, i1: int, base: int = 0) -> None:
        """Accumulate a block's ops for output rows [i0, i1) into the tile at acc `base`.
        Before each weight load, some of the previous block's deferred post-ops (self.hidden):
        right after a MatMul they wait for the array to drain while the decoder moves on, and
        run beside the DRAM read and the load that follow (measured on the RTL: 24 SIMDs cost
        about 1 cycle each there instead of 2.6, beyond which they cost their own time; before
        a load without a read, about 12 cycles of SIMD work, two LeakyReLU vectors or three
        Mins, cost nothing: tests/test_tensil_rtl.py::test_post_ops_hide_in_the_drain_before_a_
        load_without_a_read); so they go there by their work as SIMD_CYCLES prices it
        (HIDDEN_WORK, HIDDEN_WORK_NO_READ), not by their count."""
        wo = q.layer.computed[2]
        for op in ops:
            term = q.layer.terms[op.term]
            view = views[op.term]
            if isinstance(op, CopyOp):
                kind = K.LOCAL_TO_ACC if first else K.LOCAL_TO_ACC_ACCUMULATE
                for i in range(i0, i1):
                    self.program.datamove(kind, view.addr(cob, i, 0), base + (i - i0) * wo, wo)
                first = False
                continue
            key = (addresses[op.block], op.block)
            has_bias = bool(q.blocks[op.block][0].any())
            if self.loaded_block != key:
                self._load_block(q, op.block, key, has_bias)
            if op.zeroes:
                self.program.emit(MatMul(0, base, (i1 - i0) * wo - 1, accumulate=not first,
                                         zeroes=True))
                first = False
                continue
            k, m = op.tap
            sh, sw = term.stride
            step = _pow2_stride(sw, self.arch.stride0_depth)
            # Rows and columns of zero padding add exactly zero, once the tile's first op has
            # written every accumulator and where the block adds no bias.
            (r0, r1), (j0, j1) = term.inside(op.tap) if not first and not has_bias else ((i0, i1), (0, wo))
            for i in range(max(i0, r0), min(i1, r1)) if j0 < j1 else ():
                r = i * sh + k - term.pads[0]
                local = view.addr(op.cib, r, m - term.pads[1])
                acc = base + (i - i0) * wo
                if step is not None:
                    self.program.emit(MatMul(local + j0 * sw, acc + j0, j1 - j0 - 1, step, 0, not first))
                else:
                    for j in range(j0, j1):
                        self.program.emit(MatMul(local + j * sw, acc + j, 0, 0, 0, not first))
            first = False

    def _runs_across(self, q: QLayer, group: List[Tuple[int, List]], views: Dict[int, Region]
                     ) -> List[Tuple[List[Tuple[int, List]], Optional[List]]]:
        """A one-pixel output's blocks in runs, each with its plan for _compute_across where it
        has two blocks or more that take the same weight blocks in the same order, each from
        its own input block, consecutive in the input's planes (a global average pool's,
        but for a last block of fewer channels, whose weight blocks differ), else None."""
        runs: List[Tuple[List[Tuple[int, List]], Optional[List]]] = []
        k = 0
        while k < len(group):
            run, plan = group[k:k + 1], None
            while k + len(run) < len(group):
                longer = self._plan_across(q, group[k:k + len(run) + 1], views)
                if longer is None:
                    break
                run, plan = group[k:k + len(run) + 1], longer
            runs.append((run, plan))
            k += len(run)
        return runs

    def _plan_across(self, q: QLayer, run: List[Tuple[int, List]], views: Dict[int, Region]
                     ) -> Optional[List[Tuple[MatOp, int, int]]]:
        """(op, local address of the run's first input block, stride exponent between blocks)
        for each op position of the run, or None where its ops or planes do not line up."""
        sequences = [ops for _, ops in run]
        cobs = [cob for cob, _ in run]
        if any(len(ops) != len(sequences[0]) for ops in sequences) or cobs != list(range(cobs[0], cobs[0] + len(run))):
            return None
        plan = []
        for position, first in enumerate(sequences[0]):
            term = q.layer.terms[first.term]
            if not isinstance(first, MatOp) or first.zeroes or not isinstance(term, LinearTerm):
                return None
            if any(not isinstance(op, MatOp) or (op.term, op.tap, op.block, op.zeroes, op.cib - cob) != (
                    first.term, first.tap, first.block, False, first.cib - run[0][0])
                    for op, (cob, _) in zip((ops[position] for ops in sequences), run)):
                return None
            k, m = first.tap
            r, c = k - term.pads[0], m - term.pads[1]
            view = views[first.term]
            step = _pow2_stride(view.cb_pitch, self.arch.stride0_depth)
            if not (0 <= r < term.input.height and 0 <= c < term.input.width) or step is None:
                return None
            plan.append((first, view.addr(first.cib, r, c), step))
        return plan

    def _compute_across(self, q: QLayer, blocks: int, plan: List[Tuple[MatOp, int, int]],
                        addresses: Dict[int, int]) -> None:
        """Each op of a run of a one-pixel output's blocks (_runs_across) a MatMul across them into
        accumulators 0, 1, ..., instead of a block at a time, where each op would accumulate
        right behind the one before into the same accumulator and wait a MatMul's time for it
        (program.py's RTL rule: 356 cycles fewer on the ResNet-9's global average pool)."""
        self.acc_peak = max(self.acc_peak, blocks)
        for position, (op, local, step) in enumerate(plan):
            key = (addresses[op.block], op.block)
            if self.loaded_block != key:
                self._load_block(q, op.block, key, bool(q.blocks[op.block][0].any()))
            self.program.emit(MatMul(local, 0, blocks - 1, step, 0, position > 0))

    def _load_block(self, q: QLayer, block: int, key: Tuple[int, int], has_bias: bool) -> None:
        """Load weight block `block` at local key[0] into the array: some deferred post-ops
        first (see _compute), and its DRAM read where it waits for one (or a piece of a later
        layer's block where it does not, _piece)."""
        unread = key in self.unread_blocks
        piece = None if unread else self._piece()
        self._emit_hidden(HIDDEN_WORK if unread else HIDDEN_WORK_NO_READ, past=False)
        if piece is not None:
            self._read_piece(piece)
        rows = q.block_rows[block]   # the rows after them meet zero inputs only
        if unread:
            # A zero bias row stays in DRAM1: the weight rows are read alone and pushed
            # before one zero vector (the last pushed is the bias row): a vector's beats
            # less a block for a one-push load (RTL: ResNet-9 303,544 -> 299,182 cycles).
            skip = int(not has_bias)
            if skip:
                self.headless_blocks.add(key)
            head = skip
            early = self.early
            if early is not None and (self.index, block) in early.pieces:   # its first rows: an earlier drain's
                head += early.piece
                self.pieced_blocks[key] = (early.pieces[(self.index, block)], head)
            self.program.datamove(K.DRAM1_TO_LOCAL, key[0] + head, self.unread_blocks.pop(key) + head,
                                  rows + 1 - head)
        if key in self.pieced_blocks:   # the rest first: the last pushed are the first rows
            piece_address, head = self.pieced_blocks[key]
            self.program.emit(LoadWeights(key[0] + head, rows - head))
            assert self.early is not None   # a pieced block was read early in part
            self.program.emit(LoadWeights(piece_address, self.early.piece - 1))
        elif key in self.headless_blocks:   # its bias row's vector in local memory was never written
            self.program.emit(LoadWeights(key[0] + 1, rows - 1))
        else:
            self.program.emit(LoadWeights(key[0], rows))
        if key in self.headless_blocks:
            self.program.emit(LoadWeights(0, 0, zeroes=True))
        self.loaded_block = key

    # post-ops and output ----------------------------------------------------------------
    def _simd(self, op: SimdOp, read: Optional[int] = None, write: Optional[int] = None,
              to_register: bool = False, right: int = _REGISTER, accumulate: bool = False) -> None:
        self.program.emit(SIMD(op, left=0 if read is not None else _REGISTER, right=right,
                               dest=_REGISTER if to_register else 0,
                               write_address=write or 0, read_address=read or 0,
                               read=read is not None, write=write is not None,
                               accumulate=accumulate))

    def _set_register(self, raw: Optional[int]) -> None:
        """Register 1 := a constant (None: zero)."""
        if self.register == ("const", raw):
            return
        if raw is None or raw == 0:
            self.program.emit(SIMD(SimdOp.ZERO, dest=_REGISTER))
        else:
            self._simd(SimdOp.MOVE, read=self.constants.at[raw], to_register=True, right=0)
        self.register = ("const", raw)

    def _by_lane_vector(self, op: SimdOp, vector: int, addresses: List[int]) -> None:
        """acc[a] = op(acc[a], the lane vector at accumulator `vector`) for each address: the
        vector moved into the register first (it is no constant of _set_register's after)."""
        self._simd(SimdOp.MOVE, read=vector, to_register=True, right=0)
        for a in addresses:
            self._simd(op, read=a, write=a)
        self.register = None

    def _post(self, q: QLayer, cob: int, vectors: List[Tuple[int, int, int]]) -> None:
        """The post-ops on output block `cob`'s tile vectors (acc address, row, col)."""
        fmt = self.fmt
        for op in q.post:
            if isinstance(op, QRelu):
                self._set_register(None)
                for a, _, _ in vectors:
                    self._simd(SimdOp.MAX, read=a, write=a)
            elif isinstance(op, QLeakyRelu):
                combine = SimdOp.MIN if op.use_min else SimdOp.MAX
                if op.alpha == 0:
                    self._set_register(None)
                    for a, _, _ in vectors:
                        self._simd(combine, read=a, write=a)
                    continue
                slope = op.slope_below_one(fmt.one)
                for a, _, _ in vectors:
                    self.register = None
                    if slope is not None:   # x += min(x, 0) * (alpha - 1): alpha stays in the accumulators
                        self._set_register(None)
                        self._simd(SimdOp.MIN, read=a, to_register=True)
                        self._simd(SimdOp.MULTIPLY, read=self.constants.at[slope], write=a, accumulate=True)
                        continue
                    self._set_register(op.alpha)
                    self._simd(SimdOp.MULTIPLY, read=a, to_register=True)
                    self._simd(combine, read=a, write=a)
                self.register = None
            elif isinstance(op, QClip):
                low = op.low if op.low > fmt.min_raw else None
                high = op.high if op.high < fmt.max_raw else None
                if low is not None and high is not None:
                    for a, _, _ in vectors:
                        self.register = None
                        self._set_register(low)
                        self._simd(SimdOp.MAX, read=a, to_register=True)
                        self._simd(SimdOp.MIN, read=self.constants.at[high], write=a)
                    self.register = None
                elif low is not None or high is not None:
                    self._set_register(low if low is not None else high)
                    for a, _, _ in vectors:
                        self._simd(SimdOp.MAX if low is not None else SimdOp.MIN, read=a, write=a)
            elif isinstance(op, QMask):   # lanes times one or zero, a mask a column
                by_mask: Dict[Tuple[bool, ...], List[int]] = {}
                for a, _, j in vectors:
                    by_mask.setdefault(op.lanes(cob, self.n, j), []).append(a)
                for lanes, addresses in sorted(by_mask.items()):
                    if not all(lanes):
                        self._by_lane_vector(SimdOp.MULTIPLY, self.constants.mask_at(lanes, fmt.one), addresses)
            elif isinstance(op, QNegativePart):   # Min with 0 in its lanes, the top elsewhere
                self._by_lane_vector(SimdOp.MIN, self.constants.ceiling_at(op.lanes(cob, self.n)),
                                     [a for a, _, _ in vectors])
            elif isinstance(op, QScale):
                by_factor: Dict[int, List[int]] = {}
                for a, i, j in vectors:
                    by_factor.setdefault(int(op.factors[i, j]), []).append(a)
                for factor, addresses in sorted(by_factor.items()):
                    if factor == fmt.one:
                        continue
                    self._set_register(factor)
                    for a in addresses:
                        self._simd(SimdOp.MULTIPLY, read=a, write=a)

    def _finish(self, q: QLayer, cob: int, region: Region, staging: Optional[Region],
                i0: int, i1: int, base: int = 0) -> None:
        self._deferred_finish(q, cob, region, staging, i0, i1, base)()

    def _deferred_finish(self, q: QLayer, cob: int, region: Region, staging: Optional[Region],
                         i0: int, i1: int, base: int) -> Callable[[], None]:
        """The post-ops of the tile at `base` as SIMDs put in self.hidden (for the next block's
        _compute to take some), and what finishes it: the SIMDs left, then the rows to their home."""
        wo = q.layer.computed[2]
        vectors = [(base + (i - i0) * wo + j, i, j) for i in range(i0, i1) for j in range(wo)]
        program = self.program
        start, last_write = len(program.instructions), program.last_acc_write
        self._post(q, cob, vectors)
        simds = [cast(SIMD, i) for i in program.instructions[start:]]   # _post emits SIMDs only
        del program.instructions[start:]
        program.last_acc_write = last_write
        self.hidden = collections.deque(simds)

        def finish() -> None:
            while self.hidden:
                # Read+Write SIMDs alone (a ReLU's Max, a negative part's Min) leave more work
                # queued for a read to run beside than LeakyReLU vectors do: two blocks a read
                batch = itertools.islice(self.hidden, int(EARLY_READ_WORK_RW // SIMD_CYCLES[(True, True)]))
                work, blocks = ((EARLY_READ_WORK_RW, EARLY_READ_BLOCKS_RW) if all(i.read and i.write for i in batch)
                                else (EARLY_READ_WORK, 1))
                if self._emit_hidden(work, past=True) >= work:
                    self._prefetch(blocks)   # later layers' blocks read beside these SIMDs
            self._write(cob, region, staging, i0, i1, wo, base, q.layer.phases[0])
        return finish

    def _emit_hidden(self, work: float, past: bool) -> float:
        """Emit deferred post-ops (self.hidden) worth `work` cycles as SIMD_CYCLES prices them:
        up to it, or (`past`) until it is reached, the last SIMD going past it; their work."""
        done = 0.0
        while self.hidden and done < work:
            cycles = SIMD_CYCLES[(self.hidden[0].read, self.hidden[0].write)]
            if not past and done + cycles > work:
                break
            done += cycles
            self.program.emit(self.hidden.popleft())
        return done

    # early weight reads -------------------------------------------------------------------
    def _piece(self) -> Optional[Tuple[int, np.ndarray]]:
        """Where the instruction about to be emitted (a weight load, a move out of the
        accumulators) waits for the array to drain after a MatMul with no read beside the
        drain, the first vectors of a later layer's block to read there (early.py: a piece,
        which its layer then does not read), as (local address, rows); else None. The read
        is _read_piece's, once whatever goes before it is emitted."""
        if self.early is None:
            return None
        for instruction in reversed(self.program.instructions):
            if not isinstance(instruction, SIMD):
                if not isinstance(instruction, MatMul):
                    return None
                break
        else:
            return None
        piece = self.early.next_piece(self.index, self.memory.local, self.program.half)
        if piece is None:
            return None
        (layer, block), address, first = piece
        return address, self.q.layers[layer].blocks[block][first:first + self.early.piece]

    def _read_piece(self, piece: Tuple[int, np.ndarray]) -> None:
        address, rows = piece
        self.program.datamove(K.DRAM1_TO_LOCAL, address, self.constants.image(rows), len(rows))

    def _prefetch(self, count: int = 1) -> None:
        """Read the next `count` candidate blocks of later layers into local memory, in one
        move, where they wait for their layers (which then read them no more): beside the
        SIMDs just emitted, the read costs little, and their layers save the read's beats
        (early.py)."""
        if self.early is None:
            return
        run = self.early.next_run(self.index, self.memory.local, self.program.half, count)
        if not run:
            return
        parts: List[np.ndarray] = []
        for k, ((layer, block), address) in enumerate(run):
            q = self.q.layers[layer]
            headless = k == 0 and not q.blocks[block][0].any()   # the run's first alone skips its zero bias row
            skip = int(headless)
            part = q.blocks[block][skip:q.block_rows[block] + 1]
            if k < len(run) - 1:   # the next block's memory starts a block's vectors after this one's
                part = np.concatenate([part, np.zeros((self.early.per - skip - len(part), self.n), part.dtype)])
            parts.append(part)
            self.early.blocks[(layer, block)] = (address, headless)
        image = np.concatenate(parts)
        start = run[0][1] + int(self.early.blocks[run[0][0]][1])   # past a headless first block's bias row
        self.program.datamove(K.DRAM1_TO_LOCAL, start, self.constants.image(image), len(image))

    def _write(self, cob: int, region: Region, staging: Optional[Region], i0: int, i1: int,
               wo: int, base: int = 0, phases: int = 1) -> None:
        """Tile rows [i0, i1) of block cob (acc pitch wo, at acc `base`) to the value's home; of
        `phases` column phases, block cob is phase cob // (the output's blocks) of its block
        cob % (its blocks), every phases-th column from the phase's (graph.Layer.phases)."""
        # the first move waits for the array's drain too (right after a MatMul: a piece there)
        last = self.program.instructions[-1] if self.program.instructions else None
        piece = self._piece() if isinstance(last, MatMul) else None
        if piece is not None:
            self._read_piece(piece)
        if region.space == "local":
            phase, cob = divmod(cob, region.size // region.cb_pitch) if phases > 1 else (0, cob)
            step = _pow2_stride(phases, self.arch.stride0_depth)
            if step is None:
                raise CompileError("%d column phases: the local stride %d is not one of the architecture's"
                                   % (phases, phases))
            for i in range(i0, i1):
                self.program.datamove(K.ACC_TO_LOCAL, region.addr(cob, i, phase), base + (i - i0) * wo, wo, step)
            return
        if staging is None:
            raise CompileError("internal: a DRAM0 output without a staging buffer")
        blocks = staging.blocks_per_pixel
        if blocks > 1:   # interleave the blocks as the region does, write once all are in
            vectors = (i1 - i0) * wo
            step = _pow2_stride(blocks, self.arch.stride0_depth)
            if step is not None:
                self.program.datamove(K.ACC_TO_LOCAL, staging.base + cob, base, vectors, step)
            else:
                for v in range(vectors):
                    self.program.datamove(K.ACC_TO_LOCAL, staging.base + cob + v * blocks, base + v, 1)
            if cob == blocks - 1:
                self.program.datamove(K.LOCAL_TO_DRAM0, staging.base, region.addr(0, i0, 0),
                                      vectors * blocks)
            return
        self.program.datamove(K.ACC_TO_LOCAL, staging.base, base, (i1 - i0) * wo)
        for i in range(i0, i1):
            self._move_row(K.LOCAL_TO_DRAM0, staging.base + (i - i0) * wo, region, cob, i, wo)

    # max pools ---------------------------------------------------------------------------
    def _max_layer(self, q: QLayer, region: Region) -> None:
        term = q.max_term
        assert term is not None   # called for max layers only
        out, x = q.layer.output, term.input
        ho, wo = out.height, out.width

        def window(rows: int) -> int:
            return min(x.height, (rows - 1) * term.stride[0] + term.kernel[0]) * x.width

        rows = ho
        while rows > 1 and rows * wo + window(rows) > self.acc_avail:
            rows -= 1
        if rows * wo + window(rows) > self.acc_avail:
            raise MemoryOverflow(q.name, "accumulators", wo + window(1), self.acc_avail,
                                 "one output row and its input window")
        home = self.memory.regions[id(x)]
        held: List[Tuple[int, int]] = []
        staging = None
        if region.space == "dram0":   # all blocks of a strip staged together, as _linear_layer does
            gather = self._gathered_blocks(region, ho * wo)
            address = self.memory.local.alloc(rows * wo * gather) if gather > 1 else None
            if address is None:
                gather = 1
                address = self.memory.alloc(rows * wo, q.name)
            staging = staging_region(address, wo, rows, gather)
            held.append((address, staging.size))
        blocks = blocks_of(x.channels, self.n)
        strip_buffer = None
        whole_rows = False   # the strip's rows of every block read together (one buffer each)
        size = window(rows)
        if home.space == "dram0" and home.blocks_per_pixel > 1:
            # A pixel-major input of several blocks: a block's row alone is a strided read,
            # one AXI request a vector, some across a 4 KiB boundary; _read_row reads a row of
            # all blocks contiguously instead, into one window buffer a block.
            address = self.memory.local.alloc(size * blocks)
            if address is not None:
                held.append((address, size * blocks))
                strip_buffer, whole_rows = address, True
        if home.space == "dram0" and strip_buffer is None:
            address = self.memory.alloc(size, q.name)
            held.append((address, size))
            strip_buffer = address
        self.acc_peak = max(self.acc_peak, rows * wo + window(rows))
        max_strips = strips(ho, rows)
        base = rows * wo
        for i0, i1 in max_strips:
            r0 = max(0, i0 * term.stride[0] - term.pads[0])
            r1 = min(x.height, (i1 - 1) * term.stride[0] - term.pads[0] + term.kernel[0])
            if whole_rows and strip_buffer is not None:   # the accumulators are free between
                for r in range(r0, r1):                    # strips: _read_row may stage there
                    rows_at = [strip_buffer + cb * size + (r - r0) * x.width for cb in range(blocks)]
                    self._read_row(rows_at, home, r, x.width)
            for cb in range(blocks):
                for r in range(r0, r1):
                    if strip_buffer is None:
                        self.program.datamove(K.LOCAL_TO_ACC, home.addr(cb, r, 0),
                                              base + (r - r0) * x.width, x.width)
                    elif not whole_rows:
                        local = strip_buffer + (r - r0) * x.width
                        self._move_row(K.DRAM0_TO_LOCAL, local, home, cb, r, x.width)
                if strip_buffer is not None:
                    window_at = strip_buffer + (cb * size if whole_rows else 0)
                    self.program.datamove(K.LOCAL_TO_ACC, window_at, base, (r1 - r0) * x.width)
                for i in range(i0, i1):
                    for j in range(wo):
                        taps = [base + (r - r0) * x.width + c for r, c in term.taps(i, j)]
                        target = (i - i0) * wo + j
                        if len(taps) == 1:
                            self._simd(SimdOp.MOVE, read=taps[0], write=target, right=0)
                            continue
                        self._simd(SimdOp.MOVE, read=taps[0], to_register=True, right=0)
                        for a in taps[1:-1]:
                            self._simd(SimdOp.MAX, read=a, to_register=True)
                        self._simd(SimdOp.MAX, read=taps[-1], write=target)
                self.register = None
                self._finish(q, cb, region, staging, i0, i1)
        for address, size in held:
            self.memory.local.release(address, size)
        self._report(q, len(max_strips), 0, 0, region)

    def _report(self, q: QLayer, strips: int, groups: int, weights: int, region: Region) -> None:
        out = q.layer.output
        self.reports.append(LayerReport(
            q.name, "+".join(q.layer.ops), "%s %dx%dx%d" % (out.name, *out.shape), strips,
            groups, weights, 0, q.layer.macs, region.space,
            activations=sum(self.memory.regions[id(v)].size for v in self.memory.resident)))


STRATEGIES = ("on-chip", "dram0")


def schedule(qgraph: QGraph, strategy: str = "on-chip", max_attempts: int = 64,
             dram: Optional[MemoryModel] = None, keep: int = 0) -> CompiledProgram:
    """Plan the activations' memory, then emit the program; spill the largest live activation
    to DRAM0 and plan again until every layer fits, its activations in the plan and its buffers
    at emission (MemoryOverflow when one cannot fit even then).

    Then the same plan again with weights read early (_with_early_reads), if that is faster,
    and the same activations placed compactly (memory.compact_plan: largest first, each as low
    as what is live beside it allows) where that ends lower, the faster program kept: the
    first-fit plan can climb to the top of local memory, where the early reads wait.
    Planes of channel blocks are freed after their last reader (memory.blocks_read); where that
    plan spills activations, the plan freeing whole activations only is made too, and the
    faster program (RTL-calibrated model) kept: the holes early frees leave can split the room
    a later activation needs.

    `strategy="dram0"` puts every activation in DRAM0 from the start, as Tensil's own
    compiler does (its LocalIsolated strategy): a baseline to measure the on-chip plan by.
    `dram`: the DRAM timing the program is made for (tensil.estimate.MemoryModel.at_clock;
    default 50 MHz), which prices every choice above and sizes the pieces (early.py).
    `keep`: local vectors for weight blocks kept from one frame to the next (kept.py), the
    rest scheduled below them; every choice above then weighs a frame, the program after its
    prologue.
    """
    if strategy not in STRATEGIES:
        raise ValueError("strategy must be one of %s, got %r" % (", ".join(STRATEGIES), strategy))
    dram = dram or MemoryModel()
    kept = kept_blocks(qgraph, keep) if strategy == "on-chip" else None
    if kept is not None:   # the rest scheduled for the local memory below the kept blocks
        qgraph = dataclasses.replace(qgraph, arch=kept.scheduled)
    program = _schedule(qgraph, strategy, max_attempts, True, dram, kept)
    if not program.spilled or strategy != "on-chip":
        return program
    return _faster(program, _schedule(qgraph, strategy, max_attempts, False, dram, kept), qgraph.arch)


def _faster(program: CompiledProgram, other: CompiledProgram, arch: Architecture) -> CompiledProgram:
    """`other` where the RTL-calibrated model says its frame takes fewer cycles, else `program`."""
    return other if other.frame(arch).cycles < program.frame(arch).cycles else program


def _schedule(qgraph: QGraph, strategy: str, max_attempts: int, free_planes: bool,
              dram: MemoryModel, kept: Optional[KeptBlocks] = None) -> CompiledProgram:
    start = "local" if strategy == "on-chip" else "dram0"
    homes: Dict[int, str] = {id(v): start for v in qgraph.graph.values()}
    homes[id(qgraph.graph.output)] = "dram0"
    for _ in range(max_attempts):
        try:
            plan = plan_activations(qgraph, homes, free_planes)
            program = _planned(qgraph, homes, plan, dram, kept)
        except NoRoom as full:
            spillable = [v for v in full.live if homes.get(id(v)) == "local"]
            if not spillable:
                raise MemoryOverflow(full.layer, full.memory, full.needed + 0,
                                     full.available,
                                     "even with every activation in DRAM0") from None
            victim = max(spillable, key=lambda v: v.channels * v.height * v.width)
            homes[id(victim)] = "dram0"
            continue
        compact = compact_plan(qgraph, plan)
        if compact is not None:
            try:
                program = _faster(program, _planned(qgraph, homes, compact, dram, kept), qgraph.arch)
            except (NoRoom, CompileError):   # a layer's buffers found no room around it
                pass
        return program
    raise CompileError("no memory plan found in %d attempts" % max_attempts)


def _planned(qgraph: QGraph, homes: Dict[int, str], plan: ActivationPlan, dram: MemoryModel,
             kept: Optional[KeptBlocks] = None) -> CompiledProgram:
    """The program of a plan, with weights read early where that is faster."""
    scheduler = _Scheduler(qgraph, homes, plan, dram, kept=kept)
    program = scheduler.run()
    return _with_early_reads(qgraph, homes, plan, program, scheduler.layer_peaks, dram, kept)


def _with_early_reads(qgraph: QGraph, homes: Dict[int, str], plan: ActivationPlan,
                      program: CompiledProgram, peaks: List[int], dram: MemoryModel,
                      kept: Optional[KeptBlocks] = None) -> CompiledProgram:
    """The program again with weight blocks read early (_Scheduler._prefetch), each layer giving
    them what it left free in `program`, and that again with pieces (early.py) of the blocks
    it still read in their own layers: the fastest of the three by the RTL-calibrated cycle
    model (pieces of blocks early reads would have taken cost more than they save; none where
    the DRAM's latency leaves a drain no room for one, early.piece_vectors)."""
    room = [qgraph.arch.local_depth - 1 - peak for peak in peaks]
    try:
        scheduler = _Scheduler(qgraph, homes, plan, dram, room, kept=kept)
        program = _faster(program, scheduler.run(), qgraph.arch)
        assert scheduler.early is not None
        if not scheduler.early.piece:
            return program
        # then pieces of the blocks it read in their own layers, in the drains it left exposed
        direct = set(candidates(qgraph)) - scheduler.early.read_early   # kept ones are never pending
        return _faster(program, _Scheduler(qgraph, homes, plan, dram, room, direct, kept).run(), qgraph.arch)
    except (NoRoom, CompileError):
        return program
