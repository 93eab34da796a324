"""The compiler's tiling, placement, memory and constants steps, each run alone (no scheduler)."""

from pathlib import Path

import numpy as np
import pytest

from tensil.arch import load_tarch
from tensil.estimate import boundary_violations
from tensil.isa import DataMove, DataMoveKind, MatMul
from tensil_tools.compiler.errors import MemoryOverflow
from tensil_tools.compiler.graph import AddTerm, LinearTerm, Value
from tensil_tools.compiler.placement import place_dram0, place_dram1
from tensil_tools.compiler.quantize import CopyOp, MatOp
from tensil_tools.compiler.tiling import accumulator_tiles, rows_in, strips, weight_groups

ROOT = Path(__file__).resolve().parents[1]
ARCH12 = load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch")
K = DataMoveKind


def test_strips_and_the_rows_a_term_reads():
    assert strips(10, 4) == [(0, 4), (4, 8), (8, 10)] and strips(3, 8) == [(0, 3)]
    x = Value("x", 3, 9, 9)
    conv = LinearTerm(x, np.zeros((4, 3, 3, 3)), stride=(2, 2), pads=(1, 1, 1, 1))
    assert rows_in(conv, 4) == 9 and rows_in(AddTerm(x), 4) == 4


def _ops(*blocks):
    return [MatOp(0, (0, 0), 0, b) for b in blocks] + [CopyOp(1)]


def test_weight_groups_share_blocks_until_the_budget_then_cut_a_block_too_big_into_chunks():
    n = 4   # 5 vectors a block; budget 24 holds (24 - 4) // 5 = 4 blocks
    ops = [_ops(0, 1), _ops(1, 2), _ops(3, 4), _ops(5, 6, 7, 8, 9)]
    groups = weight_groups(ops, n, 24)
    assert [[cob for cob, _ in g] for g in groups] == [[0, 1], [2], [3], [3]]
    assert [len(group[0][1]) for group in groups[2:]] == [4, 2]   # 4 blocks, then 1 and the copy
    assert weight_groups(ops, n, 1000) == [list(enumerate(ops))]


def test_two_accumulator_tiles_only_where_they_fit_and_there_are_post_ops_to_spread():
    two_blocks = [[(0, []), (1, [])]]
    assert accumulator_tiles(1000, 2045, True, two_blocks) == 2
    assert accumulator_tiles(1024, 2045, True, two_blocks) == 1
    assert accumulator_tiles(1000, 2045, False, two_blocks) == 1
    assert accumulator_tiles(1000, 2045, True, [[(0, [])], [(1, [])]]) == 1


def test_dram1_images_move_up_until_no_read_crosses_a_4k_boundary():
    # 12 FP16 lanes are 24 bytes: vector 170 spans bytes 4080..4103, its last beat alone past
    # the boundary, which the RTL sends as one burst across it
    images = [np.full((200, 12), 7, np.int64), np.full((20, 12), 9, np.int64)]
    program = [DataMove(K.DRAM1_TO_LOCAL, 0, 170, 0), MatMul(0, 0, 0),
               DataMove(K.DRAM1_TO_LOCAL, 0, 205, 3)]
    assert boundary_violations(program, ARCH12)
    dram1, violations = place_dram1(program, ARCH12, images)
    assert violations == 0 and not boundary_violations(program, ARCH12)
    first, second = program[0].address - 170, program[2].address - 5   # the images' new bases
    assert first >= 1 and second >= first + 200   # each image moved up, its moves with it
    assert (dram1[first:first + 200] == 7).all() and (dram1[second:second + 20] == 9).all()
    assert not dram1[:first].any() and not dram1[first + 200:second].any()
    assert dram1.shape[0] == second + 20


def test_a_strided_read_over_more_than_the_boundary_period_is_counted_not_moved():
    # one request a vector over 2 x 512 vectors: some vector crosses wherever the region sits
    program = [DataMove(K.DRAM0_TO_LOCAL, 0, 0, 511, 0, 1), DataMove(K.DRAM0_TO_LOCAL, 0, 1, 511, 0, 1)]
    region = type("Region", (), {"base": 0, "size": 1024})()
    moved, top, violations = place_dram0(program, ARCH12, [region])
    assert moved == {0: 0} and top == 1024 and violations > 0 and program[0].address == 0
    with pytest.raises(MemoryOverflow, match="DRAM0"):
        big = type("Region", (), {"base": 0, "size": ARCH12.dram0_depth})()
        place_dram0([], ARCH12, [big])


def _qgraph(arch):
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from onnx_kit import ModelBuilder

    from tensil_tools.compiler.fusion import fuse
    from tensil_tools.compiler.lowering import load_onnx
    from tensil_tools.compiler.quantize import quantize

    b = ModelBuilder((1, 5, 8, 8), 0)   # pads 2: a 10 x 10 output, each tap reading padding
    y = b.op("LeakyRelu", [b.conv(b.input, 5, 14, 3, pads=2)], alpha=0.1)
    return quantize(fuse(load_onnx(b.model(b.op("Relu", [b.conv(y, 14, 6, 1)])))), arch)


def test_memory_gives_each_local_activation_its_bordered_planes_and_names_the_live_ones_when_full():
    import dataclasses

    from tensil_tools.compiler.memory import Memory, NoRoom

    arch = dataclasses.replace(ARCH12, local_depth=512)
    q = _qgraph(arch)
    memory = Memory(q, {id(v): "local" for v in q.graph.values()})
    x, hidden = q.graph.input, q.layers[0].layer.output
    region = memory.local_region(x, "(input)")     # its first MatMul, at tap (0, 0), reads a border of 2
    assert (region.top, region.left, region.row_pitch, region.cb_pitch) == (2, 2, 10, 100)
    assert region.addr(0, -2, -2) == region.base and memory.live() == [x]
    second = memory.output_region(q.layers[0])   # 14 channels: two blocks of 10 x 10, no border
    assert second.space == "local" and second.size == 200 and memory.resident == [x, hidden]
    with pytest.raises(NoRoom) as full:
        memory.alloc(1000, "big")
    assert full.value.live == [x, hidden] and full.value.available == memory.local.largest()
    memory.regions.update({id(x): region, id(hidden): second})
    memory.release_after(0, q.layers[0])         # the input's last reader: its planes go
    assert memory.resident == [hidden] and memory.local.largest() >= 100


def test_the_activation_plan_runs_alone_keeps_live_planes_apart_and_is_what_emission_uses():
    import dataclasses

    from tensil_tools.compiler.backend import schedule
    from tensil_tools.compiler.memory import NoRoom, last_use, plan_activations

    q = _qgraph(ARCH12)
    homes = {id(v): "local" for v in q.graph.values()}
    homes[id(q.graph.output)] = "dram0"
    plan = plan_activations(q, homes)          # no instruction emitted
    x, hidden, out = q.graph.input, q.layers[0].layer.output, q.graph.output
    assert [plan.regions[id(v)].space for v in (x, hidden, out)] == ["local", "local", "dram0"]
    local = [v for v in q.graph.values() if plan.regions[id(v)].space == "local"]
    lives = last_use(q)
    born = {id(x): -1, **{id(layer.layer.output): i for i, layer in enumerate(q.layers)}}
    for a in local:                            # planes alive at once never share a vector
        for b in local:
            ra, rb = plan.regions[id(a)], plan.regions[id(b)]
            together = born[id(a)] <= lives[id(b)] and born[id(b)] <= lives[id(a)]
            if a is not b and together:
                assert ra.base + ra.size <= rb.base or rb.base + rb.size <= ra.base
    compiled = schedule(q)
    assert all(compiled.regions[v.name] == plan.regions[id(v)] for v in local)
    assert plan.dram0_top == compiled.output_region.base + compiled.output_region.size

    tight = _qgraph(dataclasses.replace(ARCH12, local_depth=200))
    with pytest.raises(NoRoom) as full:        # the input's planes (100) and the hidden ones (200)
        plan_activations(tight, {id(v): "local" for v in tight.graph.values()})
    assert full.value.layer == q.layers[0].name and full.value.live == [tight.graph.input,
                                                                          tight.layers[0].layer.output]


def test_a_packed_channel_block_frees_its_plane_after_its_packing_layer(monkeypatch):
    # memory.blocks_read / Memory.release_after: a 16-channel map on 12 lanes is two planes;
    # its convolution reads the first (its last 4 channels come packed, packing.py), so the
    # second plane is free once the packing layer has read it, not only after the convolution.
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from onnx_kit import ModelBuilder

    from tensil_tools.compiler import packing
    from tensil_tools.compiler.fusion import fuse
    from tensil_tools.compiler.lowering import load_onnx
    from tensil_tools.compiler.memory import Memory, blocks_read
    from tensil_tools.compiler.packing import pack_columns
    from tensil_tools.compiler.quantize import quantize

    monkeypatch.setattr(packing, "_post_ops_after_packing", lambda graph, n: graph)   # no layer split
    b = ModelBuilder((1, 16, 8, 8), 0)
    y = b.op("LeakyRelu", [b.conv(b.input, 16, 16, 3, pads=1)], alpha=0.1)
    y = b.op("LeakyRelu", [b.conv(y, 16, 16, 3, pads=1)], alpha=0.1)
    q = quantize(pack_columns(fuse(load_onnx(b.model(b.conv(y, 16, 6, 1)))), 12), ARCH12)
    assert [layer.layer.ops for layer in q.layers][:4] == [["Pack"], ["Conv", "LeakyRelu"], ["Pack"],
                                                            ["Conv", "LeakyRelu"]]
    x, hidden = q.graph.input, q.layers[1].layer.output
    assert blocks_read(q.layers[0], 12) == {id(x): {1}}
    assert blocks_read(q.layers[1], 12) == {id(x): {0}, id(q.layers[0].layer.output): {0}}
    assert blocks_read(q.layers[2], 12) == {id(hidden): {1}}
    memory = Memory(q, {id(v): "local" for v in q.graph.values()})
    memory.regions[id(x)] = memory.place_input()
    freed = []
    for index, layer in enumerate(q.layers):
        memory.place_output(layer)
        used = memory.local.used
        memory.release_after(index, layer)
        freed.append(used - memory.local.used)
    plane = 8 * 8     # no border: the 3 x 3 convolutions' middle taps, their first, read no padding
    packed = 8 * 8    # 12 lanes of 3 columns x 4 channels
    assert freed[:4] == [plane, plane + packed, plane, plane + packed]   # a plane at each packing


def test_where_the_plane_freeing_plan_spills_the_whole_activation_plan_is_made_too(monkeypatch):
    # backend.schedule: freeing planes early can leave holes that split the room a later
    # activation needs; where that plan spills, the plan freeing whole activations is made too
    # and the faster program (calibrated model) kept. Without a spill, one plan only.
    import dataclasses

    from tensil.estimate import estimate_memory_aware
    from tensil_tools.compiler import backend

    made = []
    plain = backend._schedule

    def recording(qgraph, strategy, attempts, free_planes, dram, kept=None):
        program = plain(qgraph, strategy, attempts, free_planes, dram, kept)
        made.append((free_planes, program))
        return program
    monkeypatch.setattr(backend, "_schedule", recording)
    tight = dataclasses.replace(ARCH12, local_depth=200)
    chosen = backend.schedule(_qgraph(tight))
    assert [free for free, _ in made] == [True, False] and made[0][1].spilled
    cycles = [estimate_memory_aware(program.instructions, tight).cycles for _, program in made]
    assert chosen is made[cycles.index(min(cycles))][1]
    made.clear()
    assert not backend.schedule(_qgraph(ARCH12)).spilled and [free for free, _ in made] == [True]


def test_early_reads_hold_blocks_where_no_activation_planned_in_between_goes_and_within_room():
    # early.EarlyReads alone: the blocks of later layers, each held in the highest free run that the activations
    # made before its layer do not take and that crosses no middle of local memory, while
    # every layer in between has room for it; then freed after its layer.
    from tensil_tools.compiler.early import EarlyReads, candidates
    from tensil_tools.compiler.memory import Memory, plan_activations
    from tensil_tools.compiler.program import Allocator

    q = _qgraph(ARCH12)
    homes = {id(v): "local" for v in q.graph.values()}
    homes[id(q.graph.output)] = "dram0"
    plan = plan_activations(q, homes)
    every = candidates(q)                      # every block, once, layer by layer
    blocks = [(i, op.block) for i, layer in enumerate(q.layers) for ops in layer.ops for op in ops]
    assert every == list(dict.fromkeys(blocks))

    early = EarlyReads(q, plan, [10 ** 6] * len(q.layers))
    memory = Memory(q, homes, plan)
    memory.place_input()
    memory.place_output(q.layers[0])           # layer 0 runs: its blocks are no candidates now
    local, used = memory.local, memory.local.used
    half = ARCH12.local_depth // 2
    got = early.next(0, local, half)
    assert got is not None and got[0] == every[[k for k, _ in every].index(1)]
    address = got[1]                           # the highest free run, clear of the middle
    assert address + 13 == half or address + 13 == local.depth
    assert local.used == used + 13 and early.held[:2] == [13, 13]
    early.blocks[got[0]] = (address, False)
    early.release(1, local)
    assert not early.blocks and local.used == used
    tight = EarlyReads(q, plan, [0] * len(q.layers))   # no room in layer 0: nothing held across it
    assert tight.next(0, Allocator(ARCH12.local_depth - 1, "local"), half) is None


def test_the_allocator_takes_a_planned_run_only_where_it_is_free():
    from tensil_tools.compiler.program import Allocator

    memory = Allocator(100, "local memory")
    memory.take(10, 20)
    assert memory.free == [(0, 10), (30, 70)] and memory.used == memory.peak == 20
    assert memory.alloc(10) == 0                 # best fit: the run below the taken one
    with pytest.raises(ValueError, match="vectors 25..34 are not free"):
        memory.take(25, 10)
    memory.release(10, 20)
    assert memory.free == [(10, 90)] and memory.used == 10


def test_constants_keep_each_dram1_image_once_and_the_simd_constants_at_the_accumulators_top():
    from tensil_tools.compiler.constants import Constants

    q = _qgraph(ARCH12)
    constants = Constants(q)
    top = ARCH12.accumulator_depth - 1            # the Program's scratch
    assert list(constants.at.values()) == [top - 1] and constants.acc_avail == top - 1   # alpha only
    image = np.ones((13, 12), np.int64)
    assert constants.image(image) == 0 and constants.image(image.copy()) == 0
    assert constants.image(2 * image) == 13 and constants.size == 26
    with pytest.raises(MemoryOverflow, match="DRAM1"):
        constants.image(np.zeros((ARCH12.dram1_depth, 12), np.int64))
