"""Where activations live: local memory planes with their zero borders, or DRAM0.

Every activation has a home, "local" or "dram0" (`schedule` moves the largest live one to
DRAM0 and plans again when a layer cannot fit). A local activation is planes (channel
block, row, column) with the zero border its convolutions read, held from its layer until
the last layer that reads it; a DRAM0 one is dense planes, bump-allocated after the input
and the output, which Tensil's driver puts pixel-major (NHWC) at DRAM0's start.

`plan_activations` decides every activation's region before any instruction is emitted,
replaying the layers' allocations and releases; when local memory runs out it raises `NoRoom`
naming the live activations, which `schedule` chooses from. Emission then keeps those regions
(`Memory` with the plan) and allocates around them only what a layer needs while it runs:
strip buffers, weight blocks, staging rows. Every such run is released before the next layer's
output is placed, and the allocator merges free runs, so its state there is the plan's.
"""

import dataclasses
from typing import Dict, List, Optional, Set, Tuple

from tensil.arch import Architecture
from tensil.driver import PROBE_VECTORS

from .errors import CompileError, MemoryOverflow
from .graph import LinearTerm, Value
from .program import Allocator
from .quantize import MatOp, QGraph, QLayer, blocks_of

__all__ = ["ActivationPlan", "Memory", "NoRoom", "Region", "dense_region", "nhwc_region", "plan_activations",
           "staging_region"]

@dataclasses.dataclass(frozen=True)
class Region:
    """Where a tensor's vectors are: addr(cb, r, c) for pixel (r, c) of channel block cb.

    Rows and columns may be negative down to -top/-left: the zero borders of local planes.
    """

    space: str          # "local" or "dram0"
    base: int
    cb_pitch: int
    row_pitch: int
    col_pitch: int
    top: int = 0
    left: int = 0
    size: int = 0

    def addr(self, cb: int, r: int, c: int) -> int:
        return self.base + cb * self.cb_pitch + (r + self.top) * self.row_pitch + (
            c + self.left) * self.col_pitch

    @property
    def blocks_per_pixel(self) -> int:
        """B when a pixel's B channel blocks are side by side (Tensil's NHWC layout, a staging
        buffer of it), else 1 (planes: a pixel's blocks a plane apart)."""
        return self.col_pitch if self.cb_pitch == 1 else 1


def nhwc_region(value: Value, n: int, base: int) -> Region:
    cb = blocks_of(value.channels, n)
    return Region("dram0", base, 1, value.width * cb, cb, size=value.height * value.width * cb)


def staging_region(base: int, width: int, rows: int, blocks: int) -> Region:
    """`rows` rows of `width` pixels of `blocks` channel blocks in local memory, laid out as a
    pixel-major DRAM0 region is (one block: a row of vectors)."""
    return Region("local", base, 1, width * blocks, blocks, size=rows * width * blocks)


def dense_region(space: str, value: Value, n: int, base: int) -> Region:
    plane = value.height * value.width
    return Region(space, base, plane, value.width, 1,
                  size=plane * blocks_of(value.channels, n))


class NoRoom(Exception):
    """Local memory ran out for `layer`; `live` are the activations holding it."""

    def __init__(self, layer: str, memory: str, needed: int, available: int, live: List[Value]):
        super().__init__(layer)
        self.layer, self.memory, self.needed, self.available, self.live = (
            layer, memory, needed, available, live)


def storage_pads(qgraph: QGraph) -> Dict[int, Tuple[int, int, int, int]]:
    """The zero border each value needs in local memory: the padding read by the MatMuls that
    cover every output pixel at their tap, a block's first op in a tile and any op carrying a
    bias (backend._compute: the others skip the rows and columns of padding). Their taps read
    the least padding first (quantize.tap_order), so a convolution whose kernel's middle tap
    lies inside the image, stride 1 or 2, needs none."""
    pads: Dict[int, Tuple[int, int, int, int]] = {}
    for q in qgraph.layers:
        for sequence in q.ops:
            first = True
            for op in sequence:
                if isinstance(op, MatOp) and not op.zeroes and (first or q.blocks[op.block][0].any()):
                    term = q.layer.terms[op.term]
                    assert isinstance(term, LinearTerm)   # a MatOp's term
                    (k, m), (sh, sw) = op.tap, term.stride
                    top, left = term.pads[0], term.pads[1]
                    ho, wo = term.output_size()
                    x = term.input
                    need = (max(0, top - k), max(0, left - m),
                            max(0, (ho - 1) * sh + k - top - (x.height - 1)),
                            max(0, (wo - 1) * sw + m - left - (x.width - 1)))
                    old = pads.get(id(x), (0, 0, 0, 0))
                    pads[id(x)] = (max(old[0], need[0]), max(old[1], need[1]),
                                   max(old[2], need[2]), max(old[3], need[3]))
                first = False
    return pads


def last_use(qgraph: QGraph) -> Dict[int, int]:
    """The index of the last layer that reads each value."""
    last: Dict[int, int] = {}
    for index, q in enumerate(qgraph.layers):
        for value in q.layer.inputs:
            last[id(value)] = index
    return last


def blocks_read(q: QLayer, n: int) -> Dict[int, Set[int]]:
    """The channel blocks layer q reads of each value (by id) it reads: of a convolution's
    input, the blocks its MatMuls read (none of a block whose weights are all zero: a packed
    input's other terms leave it to its packing layer); all of them for any other term."""
    read: Dict[int, Set[int]] = {}
    convolved: Set[int] = set()
    for ops in q.ops:
        for op in ops:
            if isinstance(op, MatOp):
                convolved.add(op.term)
                if not op.zeroes:
                    read.setdefault(id(q.layer.terms[op.term].input), set()).add(op.cib)
    for t, term in enumerate(q.layer.terms):
        if t not in convolved or not isinstance(term, LinearTerm):
            read[id(term.input)] = set(range(blocks_of(term.input.channels, n)))
    return read


@dataclasses.dataclass(frozen=True)
class ActivationPlan:
    """Every activation's region for the whole program (by value id), and DRAM0's top."""

    regions: Dict[int, Region]
    dram0_top: int
    free_planes: bool = True   # a channel block's plane freed after its last reader (release_after)

    @property
    def local_top(self) -> int:
        """The end of the highest local region: what lies above is free all along."""
        return max((r.base + r.size for r in self.regions.values() if r.space == "local"), default=0)


class Memory:
    """The homes, the local allocator and the regions of one scheduling attempt. Without a
    plan it places each activation as its layer comes (`plan_activations` runs it so); with
    one, it takes the planned regions."""

    def __init__(self, qgraph: QGraph, homes: Dict[int, str], plan: Optional[ActivationPlan] = None,
                 free_planes: bool = True):
        self.plan = plan
        self.free_planes = plan.free_planes if plan is not None else free_planes
        self.graph = qgraph.graph
        self.arch: Architecture = qgraph.arch
        self.n = self.arch.array_size
        self.homes = homes
        self.local = Allocator(self.arch.local_depth - 1, "local memory")  # last: driver probe
        self.pads = storage_pads(qgraph)
        self.last_use = last_use(qgraph)
        # each (value id, channel block): the last layer reading it, and the planes freed early
        self.block_last_use: Dict[Tuple[int, int], int] = {}
        for index, q in enumerate(qgraph.layers):
            for key, blocks in blocks_read(q, self.n).items():
                self.block_last_use.update(((key, cb), index) for cb in blocks)
        self.freed_planes: Dict[int, Set[int]] = {}
        # each local value's runs (offset, vectors, the layer after which they were freed)
        self.freed: Dict[int, List[Tuple[int, int, int]]] = {}
        self.regions: Dict[int, Region] = {}
        self.resident: List[Value] = []      # values holding local memory now
        self.pending: List[Value] = []       # values the current layer needs
        self.input_dram = nhwc_region(self.graph.input, self.n, 0)
        self.output_dram = nhwc_region(self.graph.output, self.n, self.input_dram.size)
        self.dram0_top = self.output_dram.base + self.output_dram.size if plan is None else plan.dram0_top

    def alloc(self, size: int, layer: str) -> int:
        address = self.local.alloc(size)
        if address is None:
            raise NoRoom(layer, "local memory", size, self.local.largest(), self.live())
        return address

    def live(self) -> List[Value]:
        return list(self.resident) + [v for v in self.pending if all(
            v is not r for r in self.resident)]

    def place_input(self) -> Region:
        """The graph input's region: local planes when its home is local (imported there before
        the first layer), else its NHWC image at DRAM0's start."""
        x = self.graph.input
        if self.homes.get(id(x)) == "local":
            self.pending = [x]
            region = self.local_region(x, "(input)")
        else:
            region = self.input_dram
        self.regions[id(x)] = region
        return region

    def place_output(self, q: QLayer) -> Region:
        """Layer q runs next: its output's region (the values the layer holds are named if memory
        runs out)."""
        out = q.layer.output
        if out is self.graph.output and self.last_use.get(id(out)) is not None:
            raise CompileError("the graph output %r is also read by other layers; that is not "
                               "supported" % out.name)
        self.pending = [out] + [v for v in q.layer.inputs if v is not self.graph.input
                                or self.homes.get(id(v)) == "local"]
        region = self.regions[id(out)] = self.output_region(q)
        return region

    def local_region(self, value: Value, layer: str) -> Region:
        if self.plan is not None:
            region = self.plan.regions[id(value)]
            self.local.take(region.base, region.size)
            self.resident.append(value)
            return region
        top, left, bottom, right = self.pads.get(id(value), (0, 0, 0, 0))
        pitch = value.width + left + right
        plane = (value.height + top + bottom) * pitch
        size = plane * blocks_of(value.channels, self.n)
        base = self.alloc(size, layer)
        self.resident.append(value)
        return Region("local", base, plane, pitch, 1, top, left, size)

    def spill_region(self, value: Value) -> Region:
        region = dense_region("dram0", value, self.n, self.dram0_top)
        self.dram0_top += region.size
        if self.dram0_top > self.arch.dram0_depth - PROBE_VECTORS:
            raise MemoryOverflow(value.name, "DRAM0", self.dram0_top, self.arch.dram0_depth - PROBE_VECTORS)
        return region

    def output_region(self, q: QLayer) -> Region:
        """The home of a layer's output, allocated now."""
        out = q.layer.output
        if out is self.graph.output:
            return self.output_dram
        if self.homes.get(id(out), "local") == "local":
            return self.local_region(out, q.name)
        return self.spill_region(out) if self.plan is None else self.plan.regions[id(out)]

    def release_after(self, index: int, q: QLayer) -> None:
        """Free the local memory of the values layer `index` read last, and the planes of the
        channel blocks it read last of the others (a packed block's plane after its packing)."""
        for value in q.layer.inputs:
            region = self.regions.get(id(value))
            if region is None or region.space != "local":
                continue
            freed = self.freed_planes.setdefault(id(value), set())
            runs = self.freed.setdefault(id(value), [])
            if self.last_use.get(id(value)) == index:
                left = [(0, region.size)] if not freed else [
                    (cb * region.cb_pitch, region.cb_pitch)
                    for cb in range(region.size // region.cb_pitch) if cb not in freed]
                for offset, size in left:
                    self.local.release(region.base + offset, size)
                    runs.append((offset, size, index))
                self.resident = [v for v in self.resident if v is not value]
                continue
            blocks = blocks_of(value.channels, self.n)
            if not self.free_planes or region.cb_pitch * blocks != region.size:   # not one plane a block
                continue
            for cb in range(blocks):
                if cb not in freed and self.block_last_use.get((id(value), cb), -1) <= index:
                    self.local.release(region.base + cb * region.cb_pitch, region.cb_pitch)
                    runs.append((cb * region.cb_pitch, region.cb_pitch, index))
                    freed.add(cb)


def plan_activations(qgraph: QGraph, homes: Dict[int, str], free_planes: bool = True) -> ActivationPlan:
    """Every activation's region, decided before any instruction: the input's planes when it
    is imported (if its home is local), each layer's output when the layer runs, local planes
    released after their last reader (with `free_planes`, a channel block's plane after the
    last reader of that block). Raises NoRoom when one does not fit."""
    memory = Memory(qgraph, homes, free_planes=free_planes)
    memory.place_input()
    for index, q in enumerate(qgraph.layers):
        memory.place_output(q)
        memory.release_after(index, q)
    return ActivationPlan(dict(memory.regions), memory.dram0_top, free_planes)


def compact_plan(qgraph: QGraph, plan: ActivationPlan) -> Optional[ActivationPlan]:
    """The same homes and lifetimes with every local region placed again, largest first, at the
    lowest address where no run of a region live at the same time overlaps it (the plan's
    allocations and releases replayed: Memory.freed): the activations kept low, one free run
    left above them for the weights read early. None where they do not fit or end no lower
    than `plan`'s."""
    memory = Memory(qgraph, {key: region.space for key, region in plan.regions.items()}, plan)
    memory.place_input()
    for index, q in enumerate(qgraph.layers):
        memory.place_output(q)
        memory.release_after(index, q)
    born = {id(qgraph.graph.input): -1, **{id(q.layer.output): i for i, q in enumerate(qgraph.layers)}}
    local = {key: region for key, region in plan.regions.items() if region.space == "local"}
    placed: List[Tuple[int, int, int, int]] = []   # (address, size, first layer, last layer)
    regions = dict(plan.regions)
    for key in sorted(local, key=lambda k: (-local[k].size, born[k])):
        region = local[key]
        runs = [(offset, size, born[key], last) for offset, size, last in
                memory.freed.get(key) or [(0, region.size, len(qgraph.layers))]]
        for base in sorted({0} | {a + s for a, s, _, _ in placed}):
            if not any(a < base + o + s and base + o < a + size and t0 <= u1 and u0 <= t1
                       for o, s, t0, t1 in runs for a, size, u0, u1 in placed):
                break
        if base + region.size > qgraph.arch.local_depth - 1:
            return None
        placed += [(base + o, s, t0, t1) for o, s, t0, t1 in runs]
        regions[key] = dataclasses.replace(region, base=base)
    compact = ActivationPlan(regions, plan.dram0_top, plan.free_planes)
    return compact if compact.local_top < plan.local_top else None
