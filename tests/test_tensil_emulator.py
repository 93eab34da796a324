"""The emulator on hand-assembled programs with hand-computed results, and against the
plain reference interpreter on random programs."""

import pathlib

import numpy as np
import pytest

from tensil.arch import Architecture, load_tarch
from tensil.emulator import Emulator, mac_chain, run, simd_flow, simd_problem
from tensil.errors import EmulatorError, FixedPointError
from tensil.fixed import FORMATS, alu, mac
from tensil.isa import (
    SIMD,
    ConfigRegister,
    Configure,
    DataMove,
    DataMoveKind,
    LoadWeights,
    MatMul,
    NoOp,
    SimdOp,
    encode_program,
    format_instruction,
    parse_program,
)
from tensil_tools.progen import random_program
from tensil_tools.reference import reference_machine

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYNQZ1 = load_tarch(ROOT / "tensil_arch" / "pynqz1.tarch")
PERF = load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch")
# A 4x4 machine small enough to compute by hand.
TINY = Architecture("FP16BP8", 4, 64, 64, 32, 16, 1, 4, 4, 1, 8)
ONE = 256
K = DataMoveKind


def _machine(arch, dram1_rows, dram0_rows=()):
    n = arch.array_size
    dram0 = np.zeros((16, n), np.int16)
    dram1 = np.zeros((16, n), np.int16)
    for i, row in enumerate(dram0_rows):
        dram0[i] = row
    for i, row in enumerate(dram1_rows):
        dram1[i] = row
    return dram0, dram1


def _asm(text, arch=TINY):
    return encode_program(parse_program(text, arch), arch)


def test_matmul_chain_rounds_and_saturates_at_every_step():
    # dram1 rows: bias, w0..w3 (row j multiplies input lane j), then the input vector.
    bias = [32512, 0, -256, 128]
    w = [[2560, 128, 0, 0], [-2560, 384, 0, 0], [0, 128, 0, 0], [0, 128, 0, 0]]
    program = _asm("""
        DataMove dram1->local local=0x0 dram1=0x0 size=5
        LoadWeights local=0x0 size=4
        MatMul local=0x5 acc=0x3 size=0
        DataMove acc->local local=0x8 acc=0x3 size=0
        DataMove local->dram0 local=0x8 dram0=0x2 size=0
    """)
    # x = (1.0, 1.0, 0, 0): lane 0 saturates at the first step (127 + 10 -> 32767) and then
    # loses 10, giving 30207 instead of the exact 32512; lane 1 adds 0.5 + 1.5 -> 512.
    out0, _, report = run(program, *_machine(TINY, [bias] + w + [[256, 256, 0, 0]]), TINY)
    assert out0[2].tolist() == [30207, 512, -256, 128]
    assert report.macs == 16   # one vector through a 4x4 array
    # x = 1/256 in every lane: lane 1's products are 0.5, 1.5, 0.5, 0.5 LSB and each step
    # rounds half to even: 0 -> 2 -> 2 (2.5) -> 2 (2.5), not the exact 3.
    out0, _, _ = run(program, *_machine(TINY, [bias] + w + [[1, 1, 1, 1]]), TINY)
    assert out0[2].tolist() == [32512, 2, -256, 128]


def test_load_weights_order_bias_row_and_partial_pushes():
    # Unit inputs read the weight rows back: with x = 1.0 in lane j only, every step but j
    # adds mac(0, w, p) = p exactly, and step j adds w_j: result = sat(bias + w_j).
    rows = [[100 * r + c for c in range(4)] for r in range(1, 8)]   # local 0..6
    units = [[ONE if c == j else 0 for c in range(4)] for j in range(4)]
    program = _asm("""
        DataMove dram1->local local=0x0 dram1=0x0 size=10
        LoadWeights local=0x0:2 size=4        ; pushes local 8, 6, 4, 2, 0: bias = local 0
        MatMul local=0x7 acc=0x0 size=3       ; x = unit vectors 7..10
        MatMul local=0x0 acc=0x4 size=0 zeroes
        LoadWeights local=0x1 size=1          ; pushes local 2, 1: bias = local 1, w0 = local 2
        MatMul local=0x7 acc=0x5 size=3
        MatMul local=0x0 acc=0x9 size=0 zeroes
        DataMove acc->local local=0x10 acc=0x0 size=9
        DataMove local->dram0 local=0x10 dram0=0x0 size=9
    """)
    dram0, dram1 = _machine(TINY, rows + units)
    out0, _, _ = run(program, dram0, dram1, TINY)
    local = np.array(rows)
    bias, weights = local[0], [local[2], local[4], local[6], np.zeros(4, int)]
    # the fifth push (local 8) is zero: local has only rows 0..6 defined, row 8 is unit 1
    weights[3] = np.array(units[1])
    for j in range(4):
        assert out0[j].tolist() == (bias + weights[j]).tolist()
    assert out0[4].tolist() == bias.tolist()
    # after the partial load: bias = local 1, w0 = local 2, w1 = old bias, w2 = old w0 ...
    bias2, weights2 = local[1], [local[2], bias, weights[0], weights[1]]
    for j in range(4):
        assert out0[5 + j].tolist() == (bias2 + weights2[j]).tolist()
    assert out0[9].tolist() == bias2.tolist()


def test_matmul_accumulate_and_zeroes_saturate_both_ends():
    program = _asm("""
        DataMove dram1->local local=0x0 dram1=0x0 size=4
        LoadWeights local=0x0 size=4
        DataMove dram0->local local=0x8 dram0=0x0 size=0
        DataMove local->acc local=0x8 acc=0x0 size=0
        MatMul local=0x0 acc=0x0 size=0 zeroes accumulate
        MatMul local=0x0 acc=0x0 size=0 zeroes accumulate
        DataMove acc->local local=0x9 acc=0x0 size=0
        DataMove local->dram0 local=0x9 dram0=0x1 size=0
    """)
    dram0, dram1 = _machine(TINY, [[20000, -20000, 5, 0]], [[10000, -10000, -5, 7]])
    out0, _, report = run(program, dram0, dram1, TINY)
    assert out0[1].tolist() == [32767, -32768, 5, 7]
    assert report.macs == 0   # Zeroes multiplies nothing


def test_datamoves_with_strides_and_saturating_accumulate():
    program = _asm("""
        DataMove dram0->local local=0x0:2 dram0=0x1 size=2       ; dram0 1,2,3 -> local 0,2,4
        DataMove local->dram1 local=0x0:4 dram1=0x8:2 size=1     ; local 0,4 -> dram1 8,10
        DataMove local->acc local=0x0 acc=0x0:8 size=1           ; local 0,1 -> acc 0,8
        DataMove local->acc local=0x2 acc=0x0 size=0 accumulate  ; acc 0 += local 2
        DataMove local->acc local=0x2 acc=0x0 size=0 accumulate
        DataMove acc->local local=0x10:1 acc=0x0:8 size=1
        DataMove local->dram0 local=0x10 dram0=0x8 size=1
    """)
    rows = [[0, 0, 0, 0], [30000, -30000, 1, 2], [3000, -3000, -1, 3], [4, 5, 6, 7]]
    dram0, dram1 = _machine(TINY, [], rows)
    out0, out1, _ = run(program, dram0, dram1, TINY)
    assert out1[8].tolist() == rows[1] and out1[10].tolist() == rows[3]
    assert out1[9].tolist() == [0, 0, 0, 0]
    assert out0[8].tolist() == [32767, -32768, -1, 8]   # 30000 + 2 * 3000 saturates
    assert out0[9].tolist() == [0, 0, 0, 0]             # local 1 was never written


def _simd_run(text, rows):
    dram0, dram1 = _machine(TINY, [], rows)
    program = _asm("DataMove dram0->local local=0x0 dram0=0x0 size=3\n"
                   "DataMove local->acc local=0x0 acc=0x0 size=3\n" + text +
                   "\nDataMove acc->local local=0x4 acc=0x0 size=3"
                   "\nDataMove local->dram0 local=0x4 dram0=0x4 size=3")
    return run(program, dram0, dram1, TINY)[0][4:8]


def test_simd_relu_and_leaky_relu_as_the_compiler_emits_them():
    rows = [[-512, 512, 0, -1], [26, 26, 26, 26], [0, 0, 0, 0], [0, 0, 0, 0]]
    out = _simd_run("""
        SIMD r1=Zero(in,in)
        SIMD out=Max(in,r1) wacc=0x2 racc=0x0 read write
        SIMD r1=Move(in,in) racc=0x1 read
        SIMD r1=Multiply(in,r1) racc=0x0 read
        SIMD out=Max(in,r1) wacc=0x3 racc=0x0 read write
    """, rows)
    assert out[2].tolist() == [0, 512, 0, 0]
    # alpha = 26/256: -512 * 26 / 256 = -52; -1 * 26 / 256 = -0.1 -> 0 (rounded), max(-1, 0) = 0
    assert out[3].tolist() == [-52, 512, 0, 0]


def test_simd_write_with_a_register_destination_writes_the_accumulator_too():
    rows = [[100, -100, 32767, -32768], [1, 1, 1, 1], [5, 5, 5, 5], [0, 0, 0, 0]]
    out = _simd_run("""
        SIMD r1=Add(in,in) wacc=0x2 racc=0x0 read write accumulate
        SIMD out=Move(r1,r1) wacc=0x3 write
    """, rows)
    assert out[2].tolist() == [205, -195, 32767, -32763]   # 2x saturates, then + 5
    assert out[3].tolist() == [200, -200, 32767, -32768]   # the register kept 2x


def test_simd_every_op_from_registers_and_input():
    rows = [[-32768, 384, 0, 256], [256, 384, 5, -256], [0] * 4, [0] * 4]
    for op in SimdOp:
        if op in (SimdOp.NOOP, SimdOp.ZERO):
            continue
        line = format_instruction(SIMD(op, 0, 1, 0, write_address=2, read=True, write=True))
        out = _simd_run("SIMD r1=Move(in,in) racc=0x1 read\n" + line, rows)
        expected = alu(int(op), rows[0], rows[1], rows[0], FORMATS["FP16BP8"])
        assert out[2].tolist() == expected.tolist(), op


@pytest.mark.parametrize("line, problem", [
    ("SIMD out=Add(in,r1) wacc=0x1 write", "ADD takes the accumulator input but Read is not set"),
    ("SIMD r1=Move(r1,in)", "MOVE takes the accumulator input"),
    ("SIMD out=Add(r1,r1) wacc=0x1 racc=0x0 read write", "register/register sources issues no read"),
    ("SIMD out=NoOp(in,in) racc=0x0 read", "the SIMD NoOp with Read/Write"),
    ("SIMD out=NoOp(in,in) wacc=0x0 write", "the SIMD NoOp with Read/Write"),
])
def test_simd_cases_that_jam_the_rtl_are_refused(line, problem):
    program = _asm("NoOp\n" + line)
    with pytest.raises(EmulatorError, match=r"instruction 1 \(SIMD .*\): the RTL's SIMD data path "
                                            r"jams: .*" + problem):
        run(program, *_machine(TINY, []), TINY)
    assert simd_problem(parse_program(line, TINY)[0]) is not None


@pytest.mark.parametrize("line, problem", [
    ("SIMD r1=Zero(in,in) racc=0x1 read", "Read for ZERO, which takes no input, while"),
    ("SIMD r1=Move(r1,r1) racc=0x1 read", "Read for MOVE"),
    ("DataMove acc->local local=0x4 acc=0x0 size=0", "the accumulators' output is held"),
])
def test_a_waiting_simd_input_jams_these(line, problem):
    # RTL: the ALU's input holds one vector; a Read that no op takes leaves it there.
    program = _asm("SIMD r1=Zero(in,in) racc=0x0 read\n" + line)
    with pytest.raises(EmulatorError, match="instruction 1 .*" + problem):
        run(program, *_machine(TINY, []), TINY)


def test_simd_input_queue_shifts_results_like_the_rtl():
    rows = [[100] * 4, [200] * 4, [300] * 4, [400] * 4]
    out = _simd_run("""
        SIMD out=Zero(in,in) wacc=0x3 racc=0x0 read write
        SIMD out=Move(in,in) wacc=0x2 racc=0x1 read write
        SIMD r1=Move(in,in)
        SIMD out=Move(r1,r1) wacc=0x1 write
    """, rows)
    # acc3 = 0 and 100 waits; acc2 = 100 and 200 (acc1) waits; the flagless Move takes 200
    # into r1; acc1 = r1 = 200
    assert out[:, 0].tolist() == [100, 200, 100, 0]


def test_addresses_wrap_like_the_rtl_address_counters():
    # RTL: local/accumulator runs wrap modulo 2^address bits; a strided DRAM run modulo 2^DRAM
    # bits, a contiguous one does not (one byte-addressed request).
    program = _asm("""
        DataMove dram0->local local=0x1e dram0=0x0 size=3     ; local 30, 31, 0, 1
        DataMove local->acc local=0x1e acc=0xe:2 size=3       ; acc 14, 0, 2, 4
        DataMove acc->local local=0x8 acc=0x0:2 size=2
        DataMove local->dram0 local=0x8 dram0=0x8 size=2
    """)
    rows = [[1] * 4, [2] * 4, [3] * 4, [4] * 4]
    out0, _, report = run(program, *_machine(TINY, [], rows), TINY)
    assert out0[8:11, 0].tolist() == [2, 3, 4]
    assert report.accumulators[14, 0] == 1 and report.local[0, 0] == 3
    assert report.local.dtype == np.int16 and report.local.shape == (32, 4)


@pytest.mark.parametrize("line, message", [
    ("MatMul local=0x14:2 acc=0x0 size=1", r"local vectors 20.. \(size 1, step 2\) reach "
                                           r"vector 22, past the 21 vectors"),
    ("MatMul local=0x0 acc=0xa size=1", "accumulators vectors 10.. .* reach vector 11, past"),
    ("DataMove dram0->local local=0x0 dram0=0xf size=1", "dram0 vector 16 .* past the 16 vectors"),
    ("LoadWeights local=0x14 size=1", "reach vector 21"),
])
def test_addresses_past_a_memory_of_odd_depth_are_refused(line, message):
    odd = Architecture("FP16BP8", 4, 64, 64, 21, 11, 1, 4, 4, 1, 8)
    with pytest.raises(EmulatorError, match=message):
        run(encode_program(parse_program(line, odd, strict=False), odd, strict=False),
            *_machine(odd, []), odd)


def test_configure_moves_the_dram_windows_and_reports_the_timing_hazard():
    # DRAM0 offset 1 = byte 65536 = vector 8192 of a 4-lane FP16 image (8 bytes a vector)
    program = parse_program("""
        Configure dram0_offset=0x1
        DataMove dram0->local local=0x0 dram0=0x2 size=0
        Configure dram0_offset=0x0
        DataMove local->dram0 local=0x0 dram0=0x1 size=0
    """, TINY)
    big = Architecture("FP16BP8", 4, 1 << 14, 64, 32, 16, 1, 4, 4, 1, 8)
    dram0 = np.zeros((8200, 4), np.int16)
    dram0[8194] = 77
    out0, _, report = run(program, dram0, np.zeros((1, 4), np.int16), big)
    assert out0[1].tolist() == [77] * 4
    assert len(report.hazards) == 1 and "depends on timing" in report.hazards[0]


def test_report_counts_macs_and_tensils_cycle_estimate():
    program = _asm("""
        LoadWeights local=0x0 size=4
        MatMul local=0x0 acc=0x0 size=1
        MatMul local=0x0 acc=0x0 size=0
        SIMD r1=Zero(in,in)
        NoOp
        DataMove local->acc local=0x0 acc=0x0 size=3
        MatMul local=0x0 acc=0x0 size=0
        Configure timeout=0x10
    """)
    emulator = Emulator(TINY, *_machine(TINY, []))
    report = emulator.run(program)
    # 5 + (2 + 4) + 1 + 1 + 1 + 4 + (1 + 8) + 0
    assert report.cycles == 27 and report.instructions == 8
    assert report.macs == 4 * 16
    assert report.counts == {"Configure": 1, "DataMove(local->acc)": 1, "LoadWeights": 1,
                             "MatMul": 3, "NoOp": 1, "SIMD": 1}
    assert emulator.config and report.seconds > 0


def test_inputs_are_validated():
    with pytest.raises(ValueError, match=r"dram0 must be an integer array of shape \(vectors, 4\)"):
        Emulator(TINY, np.zeros((4, 3), np.int16))
    with pytest.raises(ValueError, match="dram1 holds values outside the FP16BP8 range"):
        Emulator(TINY, None, np.full((4, 4), 40000))
    with pytest.raises(ValueError, match="local must have 32 vectors"):
        Emulator(TINY, local=np.zeros((4, 4), np.int16))
    too_big = np.broadcast_to(np.zeros((1, 4), np.int16), ((1 << 29) + 1, 4))   # > 4 GiB
    with pytest.raises(ValueError, match="has 536870913 vectors; at most 536870912 fit "
                                         r"\(the 32-bit address space\)"):
        Emulator(TINY, too_big)
    with pytest.raises(FixedPointError, match="FLOAT32"):
        Emulator(Architecture("FLOAT32", 4, 64, 64, 32, 16, 1, 4, 4, 1, 8))
    with pytest.raises(EmulatorError, match="too large to emulate"):
        Emulator(Architecture("FP16BP8", 4, 64, 64, 1 << 30, 16, 1, 4, 4, 1, 8))
    out0, out1, _ = run(b"", np.zeros((2, 4), np.int16), np.ones((3, 4), np.int16), TINY)
    assert out0.dtype == np.int16 and out1.tolist() == [[1] * 4] * 3


def _step_by_step(x, w, fmt):
    p = np.repeat(w[:1], x.shape[0], axis=0)
    for j in range(x.shape[1]):
        p = mac(x[:, j:j + 1], w[1 + j][None, :], p, fmt)
    return p


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_mac_chain_equals_step_by_step_macs(name):
    # three regimes of the kernel: saturating (extremes), no saturation with ties on every
    # product (x odd, w an odd multiple of one half LSB), and small values with few ties
    fmt = FORMATS[name]
    rng = np.random.default_rng(3)
    half = 1 << (fmt.frac_bits - 1)
    for n in (1, 4, 12):
        for v in (1, 16, 700):
            extremes = [fmt.min_raw, fmt.min_raw + 1, -1, 0, 1, half, fmt.one - 1, fmt.max_raw]
            cases = [(rng.choice(extremes, (v, n)), rng.choice(extremes, (n + 1, n))),
                     (rng.integers(-20, 20, (v, n)) * 2 + 1,
                      (rng.integers(-3, 3, (n + 1, n)) * 2 + 1) * half),
                     (rng.integers(-4 * fmt.one, 4 * fmt.one, (v, n)),
                      rng.integers(-fmt.one // 4, fmt.one // 4, (n + 1, n)))]
            for x, w in cases:
                assert mac_chain(x, w, fmt).tolist() == _step_by_step(x, w, fmt).tolist()


ARCHES = [PYNQZ1, PERF, TINY,
          Architecture("FP16BP8", 4, 4096, 32768, 4096, 4096, 1, 8, 8, 1, 8),    # cmoda7
          Architecture("FP16BP8", 8, 256, 256, 96, 40, 3, 3, 2, 1, 8),            # 3 registers
          Architecture("FP8BP4", 8, 256, 256, 64, 64, 1, 4, 4, 1, 8),
          Architecture("FP32BP16", 4, 256, 256, 64, 64, 1, 4, 4, 1, 8)]


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: "%s-%d" % (a.data_type, a.array_size))
def test_emulator_equals_the_reference_on_random_programs(arch):
    for seed in range(3):
        generated = random_program(arch, seed, length=120, window=12, dram_vectors=24)
        program = encode_program(generated.instructions, arch, strict=False)
        got0, got1, report = run(program, generated.dram0, generated.dram1, arch)
        ref = reference_machine(program, generated.dram0, generated.dram1, arch)
        assert np.array_equal(got0, ref.memories["dram0"]), seed
        assert np.array_equal(got1, ref.memories["dram1"]), seed
        assert np.array_equal(report.local, ref.memories["local"]), seed
        assert np.array_equal(report.accumulators, ref.memories["acc"]), seed
        assert report.macs == ref.macs and not report.hazards


def test_generated_programs_never_read_undefined_on_chip_memory():
    # The RTL's block RAMs start undefined: a program must give the same DRAMs whatever the
    # local memory and accumulators held at the start.
    rng = np.random.default_rng(0)
    for arch in (PERF, TINY):
        for seed in range(4):
            g = random_program(arch, seed, length=150, window=10, dram_vectors=16)
            clean = Emulator(arch, g.dram0, g.dram1)
            clean.run(g.instructions)
            noisy = Emulator(arch, g.dram0, g.dram1,
                             local=rng.integers(-32768, 32768, (arch.local_depth, arch.array_size)),
                             accumulators=rng.integers(-32768, 32768, (arch.accumulator_depth,
                                                                       arch.array_size)))
            noisy.run(g.instructions)
            assert np.array_equal(clean.dram(0), noisy.dram(0))
            assert np.array_equal(clean.dram(1), noisy.dram(1))


def test_generated_programs_cover_every_opcode_flag_and_op():
    seen = set()
    for seed in range(6):
        waiting = False
        for i in random_program(PERF, seed, length=300).instructions:
            if isinstance(i, MatMul):
                seen.add(("MatMul", i.accumulate, i.zeroes, i.local_stride > 0, i.acc_stride > 0))
            elif isinstance(i, DataMove):
                seen.add(("DataMove", i.kind, i.local_stride > 0, i.stride > 0))
            elif isinstance(i, LoadWeights):
                seen.add(("LoadWeights", i.zeroes, i.size < PERF.array_size,
                          i.size > PERF.array_size))
            elif isinstance(i, SIMD):
                seen.add(("SIMD", i.op))
                waits = simd_flow(i, waiting)
                seen.add(("SIMD waiting", waiting, waits[0], waits[1]))
                waiting = waits[1]
                seen.add(("SIMD flags", i.read, i.write, i.accumulate))
                seen.add(("SIMD sources", i.left, i.right, i.dest))
            else:
                seen.add(type(i).__name__)
    for accumulate in (False, True):
        for zeroes in (False, True):
            assert ("MatMul", accumulate, zeroes, False, False) in seen
    assert ("MatMul", False, False, True, True) in seen or ("MatMul", True, False, True, True) \
        in seen
    for kind in DataMoveKind:
        assert any(k[:2] == ("DataMove", kind) for k in seen if k[0] == "DataMove"), kind
        assert ("DataMove", kind, True, True) in seen or kind in (
            K.ACC_TO_LOCAL, K.LOCAL_TO_ACC, K.LOCAL_TO_ACC_ACCUMULATE), kind
    assert {("LoadWeights", True, False, False), ("LoadWeights", False, True, False),
            ("LoadWeights", False, False, True)} <= seen
    assert {("SIMD", op) for op in SimdOp} <= seen
    assert {("SIMD flags", r, w, a) for r in (False, True) for w in (False, True)
            for a in (False, True)} <= seen
    assert {("SIMD sources", left, right, dest) for left in (0, 1) for right in (0, 1)
            for dest in (0, 1)} <= seen
    assert {"NoOp", "Configure", "Skipped"} <= seen
    # a Read leaves its vector waiting; a later SIMD takes it and leaves its own, or not
    assert {("SIMD waiting", False, False, True), ("SIMD waiting", True, True, True),
            ("SIMD waiting", True, True, False)} <= seen


def test_generated_programs_keep_local_runs_in_one_half_and_saturate():
    g = random_program(PERF, 1, length=400)
    half = PERF.local_depth // 2
    for i in g.instructions:
        if isinstance(i, (MatMul, DataMove, LoadWeights)) and not getattr(i, "zeroes", False):
            last = i.local_address + i.size * (1 << i.local_stride)
            assert i.local_address // half == last // half, i
    out0, _, _ = run(g.instructions, g.dram0, g.dram1, PERF)
    dumped = out0[g.output_base:]
    assert (dumped == 32767).any() and (dumped == -32768).any()
    assert len(g.instructions) > 400 and isinstance(g.instructions[-1], DataMove)
    spared = random_program(PERF, 1, length=400, dram0_spare=2)
    assert spared.instructions == g.instructions and spared.dram0.shape[0] == out0.shape[0] + 2
    out0, _, _ = run(spared.instructions, spared.dram0, spared.dram1, PERF)
    assert not out0[-2:].any()


def test_close_accumulates_to_one_address_are_reported_as_hazards():
    # tests/test_tensil_rtl.py shows the RTL adding to a stale value here
    program = _asm("""
        LoadWeights local=0x0 size=4
        MatMul local=0x0 acc=0x3 size=0 accumulate
        SIMD out=Zero(r1,r1) wacc=0x3 write accumulate
        MatMul local=0x0 acc=0x4 size=0 accumulate
        DataMove local->acc local=0x0 acc=0x6 size=0
        DataMove local->acc local=0x0 acc=0x6 size=0 accumulate
        SIMD out=Add(in,in) wacc=0x4 racc=0x5 read write accumulate
    """)
    _, _, report = run(program, *_machine(TINY, []), TINY)
    assert len(report.hazards) == 1 and report.hazards[0].startswith(
        "instruction 2: accumulates into acc[3] close behind")


# ---------------------------------------------------------------- the field table's footprint

def test_footprint_names_what_each_kind_touches():
    from tensil.isa import Touch, footprint

    assert footprint(MatMul(8, 4, 2, local_stride=1, accumulate=True)) == (
        Touch("local", 8, 3, 1, "r"), Touch("acc", 4, 3, 0, "rw"))
    assert footprint(MatMul(8, 4, 2, zeroes=True)) == (Touch("acc", 4, 3, 0, "w"),)
    assert footprint(DataMove(DataMoveKind.LOCAL_TO_DRAM1, 1, 100, 9, stride=2)) == (
        Touch("local", 1, 10, 0, "r"), Touch("dram1", 100, 10, 2, "w"))
    assert footprint(DataMove(DataMoveKind.ACC_TO_LOCAL, 1, 5, 0))[1] == Touch("acc", 5, 1, 0, "r")
    assert footprint(SIMD(SimdOp.MAX, write_address=3, read_address=7, read=True, write=True,
                          accumulate=True)) == (Touch("acc", 3, 1, 0, "rw"), Touch("acc", 7, 1, 0, "r"))
    assert footprint(SIMD(SimdOp.ZERO, dest=1)) == () and footprint(NoOp()) == ()
    assert footprint(Configure(ConfigRegister.DRAM0_OFFSET, 1)) == ()


@pytest.mark.parametrize("arch", [PERF, TINY], ids=["perf", "tiny"])
def test_the_emulator_writes_only_what_footprint_says(arch):
    """Each step of random programs (every kind, flag and stride) changes no on-chip or DRAM
    vector outside the writes `footprint` names, on random memory contents."""
    from tensil.emulator import run_addresses
    from tensil.isa import extent, footprint
    from tensil_tools.progen import random_data

    rng = np.random.default_rng(5)
    lay = arch.layout
    bits = {"local": lay.local_bits, "acc": lay.accumulator_bits}
    for seed in range(4):
        generated = random_program(arch, seed, length=150, window=10, dram_vectors=16)
        machine = Emulator(arch, generated.dram0.copy(), generated.dram1.copy(),
                           random_data(rng, arch.local_depth, arch), random_data(rng, arch.accumulator_depth, arch))
        assert extent(generated.instructions, "dram0") <= len(generated.dram0)
        for instruction in generated.instructions:
            before = {"local": machine.local.copy(), "acc": machine.accumulators.copy(),
                      "dram0": machine.dram0.copy(), "dram1": machine.dram1.copy()}
            machine.step(instruction)
            after = {"local": machine.local, "acc": machine.accumulators, "dram0": machine.dram0,
                     "dram1": machine.dram1}
            allowed = {memory: np.zeros(len(before[memory]), dtype=bool) for memory in before}
            for touch in footprint(instruction):
                if "w" in touch.access:
                    where = run_addresses(touch.address, touch.vectors - 1, touch.stride,
                                          bits.get(touch.memory, 62))
                    allowed[touch.memory][where[where < len(allowed[touch.memory])]] = True
            for memory in before:
                changed = np.any(before[memory] != after[memory], axis=1)
                assert not np.any(changed & ~allowed[memory]), (seed, instruction, memory)
