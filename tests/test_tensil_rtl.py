"""Emulator = RTL, bit for bit: the same programs on `tensil.emulator` and on Tensil's real
RTL (`tensil_tools.cosim`, Verilator), every memory compared at the end (DRAM0, DRAM1, local
memory and accumulators, the last two read from the RTL's block RAMs).

Programs: hand-assembled ones for every opcode and flag combination, strides on both
operands, the accumulate paths, saturation at both ends, the bias row, LoadWeights' order,
DataMove across the four memories, every SIMD op with every source, destination and flag
combination (with and without a vector waiting at the ALU's input), Configure of the DRAM
offsets, words the RTL skips or reads differently from the facts, address runs that wrap, a
program long enough to fill the instruction queues; and `tensil_tools.progen` random programs.
Local memory and the accumulators start with random data, so a write that should not happen
shows. Every case the emulator refuses is checked to jam the RTL (a canary write after it
never lands).

"RTL vs facts" comments mark where the RTL disagrees with ../shared/design/TENSIL.md (the
RTL wins). The RTL is ../shared/rtl/tensil_custom_perf or $TENSIL_RTL; without it, Verilator,
g++ or make these tests skip with the reason. About 8 s with the simulator built;
TENSIL_RTL_SWEEP=N adds N more random programs (and every jam case), `make bench-tensil`
runs a longer sweep.
"""

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from tensil.arch import load_tarch
from tensil.emulator import run as emulate
from tensil.emulator import simd_flow, simd_problem
from tensil.errors import EmulatorError
from tensil.estimate import estimate_memory_aware
from tensil.fixed import fixed_format
from tensil.isa import SIMD, SimdOp, decode_program, encode_program, parse_program
from tensil_tools import cosim
from tensil_tools.cosim import CosimHang
from tensil_tools.progen import random_data, random_program

ROOT = Path(__file__).resolve().parents[1]
ARCH = load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch")
N = ARCH.array_size
LAY = ARCH.layout
ARCH_ONE = fixed_format(ARCH.data_type).one
SWEEP = int(os.environ.get("TENSIL_RTL_SWEEP", "0") or 0)

MISSING = cosim.unavailable()
pytestmark = pytest.mark.skipif(MISSING is not None,
                                reason="co-simulation unavailable: %s" % MISSING)


def asm(text: str) -> bytes:
    """`.tasm` text (lenient: `Skipped` lines allowed) as program bytes."""
    return encode_program(parse_program(text, ARCH, strict=False), ARCH, strict=False)


def word(opcode: int, flags: int, op0: int = 0, op1: int = 0, op2: int = 0) -> bytes:
    """A raw instruction word, e.g. one the strict decoder refuses."""
    value = (op0 | op1 << LAY.operand0_bits | op2 << (LAY.operand0_bits + LAY.operand1_bits)
             | (opcode << 4 | flags) << LAY.operands_bits)
    return value.to_bytes(LAY.instruction_bytes, "little")


# These programs are written by hand (or at random) to compare the emulator with the RTL at any
# address, including the ones the compiler keeps moves away from (a move ending one beat past
# 4 KiB, which AXI forbids): they let the co-simulation serve such a burst. Compiled programs
# never get that leave (tests/test_tensil_compiler.py).
RAW_PROGRAMS = True


def memories(seed: int, dram_vectors: int = 256):
    """Random DRAM0, DRAM1, local memory and accumulators, extremes included."""
    rng = np.random.default_rng(seed)
    return (random_data(rng, dram_vectors, ARCH), random_data(rng, dram_vectors, ARCH),
            random_data(rng, ARCH.local_depth, ARCH), random_data(rng, ARCH.accumulator_depth, ARCH))


def same(program: bytes, dram0=None, dram1=None, local=None, accumulators=None, seed: int = 0,
         **cosim_options):
    """Run on both; assert every memory equal; return (RTL result, emulator report)."""
    d0, d1, lo, acc = memories(seed)
    cosim_options.setdefault("allow_boundary_crossings", RAW_PROGRAMS)
    result = cosim.compare(program, d0 if dram0 is None else dram0, d1 if dram1 is None else dram1,
                           ARCH, local=lo if local is None else local,
                           accumulators=acc if accumulators is None else accumulators,
                           **cosim_options)
    assert result.ok, "; ".join(result.mismatches)
    return result.rtl, result.emulator


CANARY_LOCAL, CANARY_ACC, CANARY_BACK = 4000, 2000, 4001


def jams_the_rtl(program: bytes) -> bool:
    """Whether the RTL fails to execute a canary placed after `program`: a vector through
    both directions of the accumulator port (local -> accumulators -> local)."""
    dram0, dram1, local, accumulators = memories(1)
    local[CANARY_LOCAL] = 1234
    canary = asm("DataMove local->acc local=%d acc=%d size=0\n"
                 "DataMove acc->local local=%d acc=%d size=0" % (
                     CANARY_LOCAL, CANARY_ACC, CANARY_BACK, CANARY_ACC))
    try:
        rtl = cosim.run(program + canary, dram0, dram1, ARCH, completion="drain", local=local,
                        allow_boundary_crossings=RAW_PROGRAMS,
                        accumulators=accumulators, hang_cycles=20000, drain_idle_cycles=10000)
    except CosimHang:
        return True
    return not ((rtl.accumulators[CANARY_ACC] == 1234).all()
                and (rtl.local[CANARY_BACK] == 1234).all())


# --------------------------------------------------------------------------- DataMove

def test_datamove_every_kind_with_strides_on_both_operands():
    same(asm("""
        DataMove dram0->local local=0x10 dram0=0x3 size=40
        DataMove dram0->local local=0x100:4 dram0=0x7:8 size=20        ; both strided
        DataMove dram1->local local=0x1000:2 dram1=0x20 size=30
        DataMove dram1->local local=0x1200 dram1=0x1:16 size=9
        DataMove local->dram0 local=0x10 dram0=0x80 size=40
        DataMove local->dram0 local=0x100:4 dram0=0xb0:2 size=20
        DataMove local->dram1 local=0x1000:128 dram1=0x10:4 size=5
        DataMove local->acc local=0x10 acc=0x400 size=40
        DataMove local->acc local=0x10:2 acc=0x7:32 size=20
        DataMove local->acc local=0x1000 acc=0x400:2 size=30 accumulate  ; saturating adds
        DataMove local->acc local=0x1000 acc=0x400:2 size=30 accumulate
        DataMove acc->local local=0x1800:8 acc=0x400 size=60
        DataMove acc->local local=0x300 acc=0x7:32 size=20
        DataMove local->dram0 local=0x1800:8 dram0=0x20 size=60
    """))


def test_datamove_whole_local_memory_through_both_drams():
    dram = np.asarray(memories(3, ARCH.local_depth)[0])
    program = asm("".join("DataMove dram0->local local=0x%x dram0=0x%x size=1023\n" % (a, a)
                          for a in range(0, 8192, 1024))
                  + "DataMove local->dram1 local=0x0 dram1=0x0 size=4095\n"
                  + "DataMove local->dram1 local=0x1000 dram1=0x1000 size=4095\n")
    same(program, dram0=dram, dram1=np.zeros_like(dram))


def test_runs_wrap_like_the_rtl_address_counters():
    # RTL vs facts: the facts say nothing of runs past a memory's end. Local and accumulator
    # runs wrap modulo 2^13 / 2^11; a strided DRAM run wraps modulo 2^20 vectors, a
    # contiguous one is one byte-addressed request and reads on past vector 2^20 - 1.
    dram0 = np.zeros(((1 << 20) + 4, N), np.int16)
    dram0[-8:] = np.arange(8 * N).reshape(8, N) + 1
    dram0[:4] = -np.arange(4 * N).reshape(4, N) - 1
    same(asm("""
        DataMove dram0->local local=0x1ffe dram0=0xffffe size=3         ; local 8190,8191,0,1
        DataMove dram0->local local=0x1f00:64 dram0=0xfffff:2 size=3    ; DRAM 0xfffff, 1, 3, 5
        DataMove local->acc local=0x1ffe acc=0x7fe size=3               ; acc 2046, 2047, 0, 1
        DataMove local->acc local=0x1f00:64 acc=0x7f0:8 size=5
        MatMul local=0x1ffc acc=0x7fd:4 size=5
        LoadWeights local=0x1ffa size=12                                ; reads 0x1ffa..6
        SIMD out=Add(in,in) wacc=0x7ff racc=0x0 read write
    """), dram0=dram0)


# --------------------------------------------------------------------------- LoadWeights, MatMul

def test_loadweights_order_full_partial_overlong_strided_and_zeroes():
    # Facts §2.5, checked: the last pushed vector (local[a]) is the bias row, local[a + k]
    # multiplies input lane k - 1; every push shifts the array by one row.
    same(asm("""
        LoadWeights local=0x20 size=12
        MatMul local=0x100 acc=0x0 size=15
        LoadWeights local=0x40 size=0                     ; one push: new bias, rows shift
        MatMul local=0x100 acc=0x10 size=15
        LoadWeights local=0x60 size=4                     ; a partial push
        MatMul local=0x100 acc=0x20 size=15
        LoadWeights local=0x200:2 size=30                 ; overlong: only the last 13 stay
        MatMul local=0x100:2 acc=0x30 size=15
        LoadWeights local=0x0 size=3 zeroes
        MatMul local=0x100 acc=0x40 size=15
        LoadWeights local=0x0 size=12 zeroes              ; all zero: results are 0
        MatMul local=0x100 acc=0x50 size=15
    """))


def test_matmul_every_flag_combination_with_strides_saturating_at_both_ends():
    rng = np.random.default_rng(7)
    _, _, local, accumulators = memories(7)
    local[0x20:0x20 + N + 1] = rng.choice([-32768, 32767, 30000, -30000, 256, -256], (N + 1, N))
    local[0x100:0x140] = rng.choice([-32768, 32767, 1, -1, 128, 384, 0], (0x40, N))
    same(asm("""
        LoadWeights local=0x20 size=12
        MatMul local=0x100 acc=0x0 size=31
        MatMul local=0x100:2 acc=0x0 size=15 accumulate
        MatMul local=0x0 acc=0x40:4 size=9 zeroes
        MatMul local=0x0 acc=0x40:4 size=9 zeroes accumulate
        MatMul local=0x100:4 acc=0x80:128 size=7 accumulate
        MatMul local=0x100 acc=0x0:1 size=31 accumulate
    """), local=local, accumulators=accumulators)


def test_matmul_rounds_ties_to_even_at_every_step():
    _, _, local, accumulators = memories(8)
    local[0:N + 1] = 128                          # every product of an odd x is a tie
    local[0x100:0x120] = np.arange(32 * N).reshape(32, N) % 7 * 2 - 5
    same(asm("LoadWeights local=0x0 size=12\nMatMul local=0x100 acc=0x0 size=31\n"),
         local=local, accumulators=accumulators)


# --------------------------------------------------------------------------- SIMD

REGISTER_LOAD = "SIMD r1=Move(in,in) racc=0x%x read\n"


def simd_line(op: SimdOp, left: int, right: int, dest: int, flags: int, write: int,
              read: int) -> str:
    return "SIMD %s=%s(%s,%s) wacc=0x%x racc=0x%x %s" % (
        "r1" if dest else "out", "NoOp" if op == SimdOp.NOOP else "".join(
            p.capitalize() for p in op.name.split("_")),
        "r1" if left else "in", "r1" if right else "in", write, read,
        " ".join(f for bit, f in ((1, "read"), (2, "write"), (4, "accumulate")) if flags & bit))


def simd_combinations():
    """Every (op, left, right, dest, flags) of the 12x12 architecture (one register)."""
    return list(itertools.product(SimdOp, (0, 1), (0, 1), (0, 1), range(8)))


@pytest.mark.parametrize("waiting", [False, True], ids=["nothing waiting", "a vector waiting"])
def test_simd_every_op_source_destination_and_flag(waiting):
    # Every combination that runs on the RTL, each after a register load from a fresh vector
    # and, with `waiting`, after a Zero with Read that leaves a vector at the ALU's input.
    # RTL vs facts: the facts say "NoOp passes input" (only true without flags: with Read or
    # Write it jams) and that an op needing input without Read stalls (it takes a waiting
    # vector when there is one); Abs(-32768) is -32768.
    lines, target = [], 0x80
    for k, (op, left, right, dest, flags) in enumerate(simd_combinations()):
        instruction = SIMD(op, left, right, dest, read=bool(flags & 1), write=bool(flags & 2),
                           accumulate=bool(flags & 4))
        if simd_problem(instruction, waiting):
            continue
        lines.append(REGISTER_LOAD % (k % 256))
        if waiting:
            lines.append("SIMD out=Zero(in,in) racc=0x%x read\n" % ((k + 7) % 256))
        lines.append(simd_line(op, left, right, dest, flags, target + k % 1400, (k + 3) % 256)
                     + "\n")
        if simd_flow(instruction, waiting)[1]:        # drain what is left waiting
            lines.append("SIMD out=Add(in,r1) wacc=0x%x write\n" % (target + 1400 + k % 150))
    assert len(lines) > 400
    same(asm("".join(lines)))


def test_simd_relu_and_leaky_relu_as_a_compiler_emits_them():
    same(asm("""
        SIMD r1=Zero(in,in)
        SIMD out=Max(in,r1) wacc=0x100 racc=0x0 read write
        SIMD r1=Move(in,in) racc=0x1 read
        SIMD r1=Multiply(in,r1) racc=0x2 read
        SIMD out=Max(in,r1) wacc=0x101 racc=0x2 read write
        SIMD out=Add(in,r1) wacc=0x102 racc=0x3 read write accumulate
    """))


def test_leaky_relu_by_accumulating_the_slope_below_zero_is_the_same_and_faster():
    # The compiler's LeakyReLU for 0 < alpha < 1: r1 = min(x, 0); x += r1 * (alpha - 1)
    # instead of r1 = alpha; r1 = x * r1; x = max(x, r1) (QLeakyRelu.slope_below_one): alpha
    # need not come back into the one register each vector. Same values on the RTL as the
    # emulator's and as the three-instruction form, in about 3/4 of its cycles, the estimate
    # within 5 % of both.
    alpha, vectors = 26, 300   # 0.1 in FP16BP8
    d0, d1, local, accumulators = memories(5)
    accumulators[1900], accumulators[1901] = alpha, alpha - ARCH_ONE
    by_max, by_accumulate = [], []
    for v in range(vectors):
        by_max += ["SIMD r1=Move(in,in) racc=1900 read", "SIMD r1=Multiply(in,r1) racc=%d read" % v,
                   "SIMD out=Max(in,r1) wacc=%d racc=%d read write" % (v, v)]
        by_accumulate += ["SIMD r1=Zero(in,in)", "SIMD r1=Min(in,r1) racc=%d read" % v,
                          "SIMD out=Multiply(in,r1) wacc=%d racc=1901 read write accumulate" % v]
    cycles = {}
    for name, lines in (("max", by_max), ("accumulate", by_accumulate)):
        program = asm("\n".join(lines))
        rtl, report = same(program, d0, d1, local, accumulators)
        cycles[name] = rtl.cycles
        estimate = estimate_memory_aware(decode_program(program, ARCH), ARCH).cycles
        assert abs(estimate / rtl.cycles - 1) < 0.05, (name, estimate, rtl.cycles)
        if name == "max":
            first = rtl.accumulators[:vectors]
        else:
            assert np.array_equal(rtl.accumulators[:vectors], first)
    assert cycles["accumulate"] < 0.8 * cycles["max"], cycles


def test_a_read_no_op_takes_waits_and_shifts_later_results_by_one():
    # RTL vs facts (co-simulation engineer's finding, modelled): Zero with Read writes 0 but
    # leaves acc[read] at the ALU's input; the next input-taking SIMD takes it and leaves
    # its own Read's vector, so results shift by one; a flagless or write-only input-taking
    # op drains it.
    rtl, report = same(asm("""
        SIMD out=Zero(in,in) wacc=0x100 racc=0x5 read write
        SIMD out=Move(in,in) wacc=0x101 racc=0x6 read write
        SIMD out=Move(in,in) wacc=0x102 racc=0x7 read write
        SIMD out=Move(in,in) wacc=0x103 write
        SIMD r1=Move(r1,r1) racc=0x8 read
        SIMD out=Add(in,in) wacc=0x104 racc=0x9 read write
        SIMD out=Move(in,r1) wacc=0x105 write
    """))
    accumulators = memories(0)[3]
    for target, source in ((0x101, 5), (0x102, 6), (0x103, 7), (0x105, 9)):
        assert rtl.accumulators[target].tolist() == accumulators[source].tolist()
    assert not report.hazards    # the last instruction took the last waiting vector


JAMS = [
    # RTL vs facts: the SIMD NoOp with Read or Write (the accumulator port's DataMove path
    # without a DataMove): later local<->accumulator moves shift by one vector, one never lands
    ("", "SIMD out=NoOp(in,in) racc=0x5 read"),
    ("", "SIMD out=NoOp(in,in) wacc=0x5 write"),
    ("", "SIMD out=NoOp(in,r1) wacc=0x5 racc=0x6 read write"),
    # register/register sources with Read and Write: no read, no ALU op, the write waits
    ("", "SIMD out=Add(r1,r1) wacc=0x5 racc=0x6 read write"),
    ("", "SIMD r1=Zero(r1,r1) wacc=0x5 racc=0x6 read write"),
    # an input-taking op without Read and nothing waiting (facts: "stalls forever", right)
    ("", "SIMD out=Add(in,r1) wacc=0x5 write"),
    ("", "SIMD r1=Move(r1,in)"),
    # a second vector left waiting: the ALU's input holds one
    ("SIMD out=Zero(in,in) racc=0x5 read", "SIMD r1=Zero(in,in) racc=0x6 read"),
    ("SIMD out=Zero(in,in) racc=0x5 read", "SIMD out=Move(r1,r1) wacc=0x7 racc=0x6 read"),
    # a move out of the accumulators while a vector waits
    ("SIMD out=Zero(in,in) racc=0x5 read", "DataMove acc->local local=0x10 acc=0x0 size=0"),
]


@pytest.mark.parametrize("setup, line", JAMS, ids=[line for _, line in JAMS])
def test_what_the_emulator_refuses_jams_the_rtl(setup, line):
    program = asm(setup + "\n" + line)
    with pytest.raises(EmulatorError, match="the RTL's SIMD data path jams"):
        emulate(program, *memories(1)[:2], ARCH)
    assert jams_the_rtl(program)
    fine = "SIMD out=Add(in,in) wacc=0x9 write" if setup else \
        "SIMD out=Add(in,in) wacc=0x9 racc=0x8 read write"
    assert not jams_the_rtl(asm(setup + "\n" + fine))


def test_every_simd_refusal_jams_the_rtl_and_nothing_else_does():
    # All combinations in both input states under TENSIL_RTL_SWEEP; a sample otherwise.
    rng = np.random.default_rng(0)
    cases = [(c, w) for c in simd_combinations() for w in (False, True)]
    if not SWEEP:
        cases = [cases[i] for i in rng.choice(len(cases), 24, replace=False)]
    for (op, left, right, dest, flags), waiting in cases:
        line = simd_line(op, left, right, dest, flags, 0x10, 0x11)
        setup = "SIMD out=Zero(in,in) racc=0x12 read\n" if waiting else ""
        instruction = parse_program(line, ARCH)[0]
        refused = simd_problem(instruction, waiting) is not None
        assert jams_the_rtl(asm(setup + line + "\n" + (
            "SIMD out=Move(in,in) wacc=0x13 write\n" if simd_flow(instruction, waiting)[1]
            and not refused else ""))) == refused, (line, waiting)


@pytest.mark.parametrize("taker", ["SIMD r1=Subtract(r1,in) wacc=0x7ee write", "SIMD r1=Subtract(r1,in)"])
def test_a_read_write_simd_after_the_zero_chain_is_refused_as_timing_dependent(taker):
    # RTL (found by the sweep): after a Zero with Read and Write leaves its vector and the
    # next accumulator instruction, a SIMD without Read, takes it, the next Read+Write SIMD
    # loses its write at some cycle distances (here: some numbers of NoOps before it), and
    # the accumulator port then waits forever. The emulator refuses it whatever the distance.
    chain = ["SIMD out=Zero(in,in) wacc=0x7d3 racc=0x7e1 read write", taker]
    last = "SIMD out=Add(r1,in) wacc=0x7c7 racc=0x7cc read write"
    lost = []
    for gap in range(6):
        program = asm("\n".join(chain + ["NoOp"] * gap + [last]))
        with pytest.raises(EmulatorError, match="timing-dependent on the RTL"):
            emulate(program, *memories(0)[:2], ARCH)
        d0, d1, local, accumulators = memories(0)
        rtl = cosim.run(program, d0, d1, ARCH, completion="drain", local=local,
                        allow_boundary_crossings=RAW_PROGRAMS,
                        accumulators=accumulators)
        lost.append(bool((rtl.accumulators[0x7c7] == accumulators[0x7c7]).all()))
    assert any(lost) and not all(lost), lost   # lost at some distances, not at others
    # anything else on the accumulator port in between ends the chain
    same(asm("\n".join(chain + ["SIMD out=Zero(in,in) wacc=0x7c0 write", "NoOp", "NoOp", "NoOp",
                                last])))


def stale_on_the_rtl(program: bytes) -> None:
    """The emulator notes a stale accumulate into acc[16], and the RTL's sum there differs."""
    d0, d1, local, accumulators = memories(4)
    rtl = cosim.run(program, d0, d1, ARCH, completion="drain", local=local,
                        allow_boundary_crossings=RAW_PROGRAMS,
                    accumulators=accumulators)
    _, _, report = emulate(program, d0, d1, ARCH, local=local, accumulators=accumulators)
    assert "accumulates into acc[16] close behind" in report.hazards[0]
    assert not np.array_equal(rtl.accumulators[0x10], report.accumulators[0x10])


def test_an_accumulate_close_behind_another_to_the_same_address_is_a_hazard():
    # RTL (found by the sweep): an accumulating write reads the old value as its request
    # arrives, without the lock a plain write takes, so a second accumulate to the same
    # address close behind a MatMul's (whose sums land 2N+1 cycles later) adds to a stale
    # value. The sum depends on timing: the emulator adds in program order and says so.
    first = "LoadWeights local=0x40 size=12\nMatMul local=0x5 acc=0x10 size=0 accumulate\n"
    stale_on_the_rtl(asm(first + "DataMove local->acc local=0x6 acc=0x10 size=0 accumulate"))
    # a plain write first (it takes the lock), or the MatMul long done: no hazard, same sums
    rtl, report = same(asm(first.replace(" accumulate", "") +
                           "DataMove local->acc local=0x6 acc=0x10 size=0 accumulate"))
    assert not report.hazards
    rtl, report = same(asm(first + "DataMove local->acc local=0x100 acc=0x100 size=40\n"
                           "DataMove local->acc local=0x6 acc=0x10 size=0 accumulate"))
    assert not report.hazards


@pytest.mark.parametrize("then", ["MatMul local=0x6 acc=0x10 size=0 accumulate",
                                  "DataMove local->acc local=0x6 acc=0x10 size=0 accumulate"])
def test_a_load_of_four_or_more_pushes_lets_a_matmuls_accumulate_land(then):
    # RTL (found when the compiler's one-vector MatMul chains were reported as hazards, yet ran
    # bit for bit): a LoadWeights waits for the array to drain, and from its 4th push on the
    # accumulating write of the MatMul before it has landed; with 1-3 pushes the next
    # accumulate to the same address still reads the old value. The emulator says so.
    first = "LoadWeights local=0x40 size=12\nMatMul local=0x5 acc=0x10 size=0 accumulate\n"
    for size in range(13):
        program = asm(first + "LoadWeights local=0x60 size=%d\n" % size + then)
        if size + 1 >= 4:
            rtl, report = same(program)
            assert not report.hazards, size
        else:
            stale_on_the_rtl(program)


def test_a_matmul_accumulating_behind_another_is_stale_only_right_behind_it():
    # RTL: a later MatMul's sums take the same way through the array as an earlier one's, so
    # only the very next port operation reads stale; one op between (the compiler's Zeroes
    # spacer, or the next rows of a longer run) and the sums are exact. Without this the
    # compiled backbone drew 1,778 false hazard notes a frame.
    first = "LoadWeights local=0x40 size=12\nMatMul local=0x100 acc=0x10 size=0 accumulate\n"
    stale_on_the_rtl(asm(first + "MatMul local=0x200 acc=0x10 size=0 accumulate"))
    for spacer in ("MatMul local=0x0 acc=0x7ff size=0 zeroes",
                   "DataMove local->acc local=0x7 acc=0x50 size=0"):
        _, report = same(asm(first + spacer + "\nMatMul local=0x200 acc=0x10 size=0 accumulate"))
        assert not report.hazards
    # the compiled convolutions: runs of 4 rows into 3 accumulator blocks, new weights, again
    conv = ["LoadWeights local=0x40 size=12"] + [
        "MatMul local=0x%x acc=0x%x size=3 accumulate" % (0x100 + 0x20 * j, 4 * j)
        for j in range(3)] + ["LoadWeights local=0x60 size=12"] + [
        "MatMul local=0x%x acc=0x%x size=3 accumulate" % (0x200 + 0x20 * j, 4 * j)
        for j in range(3)]
    _, report = same(asm("\n".join(conv)))
    assert not report.hazards


# --------------------------------------------------------------------------- Configure, words

def test_configure_dram_offsets_move_both_windows():
    # DRAM offset 3 = byte 3 * 64 KiB = vector 8192 of a 12-lane image. Value bits above
    # the 16 the RTL keeps (value << 16 in a 32-bit register) are dropped.
    rng = np.random.default_rng(5)
    dram0 = random_data(rng, 8400, ARCH)
    dram1 = random_data(rng, 12000, ARCH)     # offset 4: byte 0x40000, not a whole vector
    program = asm("""
        Configure dram0_offset=0x3
        Configure dram1_offset=0x4
        DataMove dram0->local local=0x0 dram0=0x5 size=20
        DataMove dram1->local local=0x100 dram1=0x7:4 size=20
        DataMove local->dram0 local=0x100 dram0=0x30 size=20
        DataMove local->dram1 local=0x0:2 dram1=0x40 size=10
    """) + word(0xF, 0, 0x0030, 0x10) + asm(       # dram0_offset 0x10003: the RTL keeps 0x3
        "DataMove local->dram0 local=0x0 dram0=0x60 size=3")
    rtl, report = same(program, dram0=dram0, dram1=dram1)
    assert not report.hazards      # the last Configure leaves the offset as it was


def test_words_the_rtl_skips_or_reads_otherwise():
    # RTL vs facts: the facts call MatMul flags >= 4 and LoadWeights flags >= 2 invalid; the
    # RTL ignores the extra bits (MatMul 0x4 = plain MatMul, LoadWeights 0x3 = Zeroes).
    # Padding, bits above an address or size, NoOp's operands and Configure's flags are
    # ignored; reserved opcodes, DataMove kinds and Configure registers are skipped.
    program = b"".join([
        word(0x3, 0xE, 0x20, 12 | 1 << 20, 0xFFFF),        # LoadWeights local=0x20 size=12
        word(0x1, 0x4, 0x100, 0x10 | 1 << 23, 3 | 7 << 13),   # MatMul size 3, padding set
        word(0x3, 0x3, 0x0, 12),                             # LoadWeights zeroes
        word(0x1, 0xC, 0x100, 0x20, 0),
        word(0x0, 0xF, 0xFFFF, 0xFFFFFF, 0xFFFF),
        word(0x4, 0xA, 0x800 + 0x30, 0, 1 << 3 | 0x1FF << 7),     # SIMD Zero write acc 0x30
        word(0x4, 0x3, 0x31, (1 << 23) + 0x40, 2 << 3),            # SIMD Move 0x40 -> 0x31
        word(0x2, 0xD, 0x200, 0x800 + 0x50 | 1 << 23, 0xE001),    # local->acc size 1
        word(0xF, 0xF, 0x8 | 0xFFF0, 0xFFFFFF, 0xFFFF),           # Configure timeout
        word(0xF, 0x0, 0x3, 0, 0),                                # reserved register: skipped
    ] + [word(opcode, flags, 0x1234, 0x56789, 3) for opcode in range(5, 15)
         for flags in (0, 0xF)]
      + [word(0x2, kind, 0x10, 0x2, 1) for kind in list(range(4, 12)) + [14]])
    same(program)


# --------------------------------------------------------------------------- whole programs

def test_a_long_program_fills_the_instruction_queues():
    lines = ["DataMove dram0->local local=0x%x dram0=0x%x size=0" % (i, i % 256) for i in range(600)]
    lines += ["DataMove local->acc local=0x%x acc=0x%x size=0 accumulate" % (i, i % 50)
              for i in range(600)]
    lines += ["LoadWeights local=0x0 size=12"] + [
        "MatMul local=0x%x acc=0x%x size=0 accumulate" % (i, i % 64) for i in range(400)]
    lines += ["SIMD out=Max(in,r1) wacc=0x%x racc=0x%x read write" % (i % 64, i % 64)
              for i in range(400)]
    lines += ["DataMove acc->local local=0x1000 acc=0x0 size=99",
              "DataMove local->dram0 local=0x1000 dram0=0x0 size=99"]
    rtl, report = same(asm("\n".join(lines)))
    assert rtl.instructions == 2003 and rtl.stats["stream_stall_cycles"] > 0


def test_the_flush_probe_can_land_before_the_last_accumulator_writes():
    # RTL vs facts: the driver's completion check (the probe in DRAM0) says nothing about the
    # accumulators: the decoder issues the probe as soon as the last SIMD instruction enters
    # the accumulator port's queue, so it lands while queued SIMD writes are still to come.
    program = asm("".join("SIMD out=Move(in,in) wacc=0x%x racc=0x%x read write\n" % (i, 1000 + i)
                          for i in range(100)))
    d0, d1, local, accumulators = memories(2)
    probe = cosim.run(program, d0, d1, ARCH, local=local, accumulators=accumulators,
                      allow_boundary_crossings=RAW_PROGRAMS)
    assert probe.cycles < probe.stats["last_accumulator_write_cycle"]
    same(program, d0, d1, local, accumulators)


SEEDS = list(range(6)) + list(range(100, 100 + SWEEP))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_programs(seed):
    weights = [None, (6, 1, 1, 1, 1), (1, 2, 6, 1, 0.5), (1, 1, 1, 6, 1)][seed % 4]
    generated = random_program(ARCH, seed, length=250, window=40, weights=weights)
    program = encode_program(generated.instructions, ARCH, strict=False)
    rtl, report = same(program, generated.dram0, generated.dram1, seed=seed)
    assert not report.hazards


# --------------------------------------------------------------------------- cycle estimate

def test_the_estimate_stands_next_to_the_rtl_count():
    # The memory-aware estimate is calibrated on this RTL with the default memory model;
    # `make bench-tensil` prints the table for more programs. Estimates never replace counts.
    programs = [("random %d" % seed, random_program(ARCH, seed, length=250, window=40))
                for seed in range(4)]
    rows = []
    for name, generated in programs:
        program = encode_program(generated.instructions, ARCH, strict=False)
        rtl, _ = same(program, generated.dram0, generated.dram1, seed=1)
        estimated = estimate_memory_aware(decode_program(program, ARCH, strict=False), ARCH)
        rows.append((name, estimated.cycles, rtl.drain_cycles,
                     estimated.cycles / rtl.drain_cycles))
    ratios = [r[3] for r in rows]
    table = "\n".join("%-10s estimate %7d  RTL %7d  ratio %.3f" % r for r in rows)
    print("\n" + table)
    assert 0.9 <= float(np.median(ratios)) <= 1.1 and 0.8 <= min(ratios) <= max(ratios) <= 1.25, \
        table


@pytest.mark.parametrize("then_move", [False, True])
def test_the_estimate_prices_simds_between_a_matmul_and_its_drain(then_move):
    # Measured on this RTL: SIMDs right after a MatMul run once the array has drained (2n-1
    # cycles); a LoadWeights after them runs beside them (up to its own pushes), an
    # accumulator->local move after them does not. The model said "no drain" as soon as
    # anything came between (the compiled matmul_chain at 0.950 of the RTL).
    rows = []
    for simds in range(7):
        group = ["LoadWeights local=0x0 size=12", "MatMul local=0x64 acc=0x%x size=15"]
        group += ["SIMD out=Max(in,r1) wacc=0x%x racc=0x%x read write" % (1024 + j, 1024 + j)
                  for j in range(simds)]
        if then_move:
            group += ["DataMove acc->local local=0xfa0 acc=0x5dc size=0"]
        program = asm("\n".join(line % (16 * g) if "%" in line else line
                                for g in range(24) for line in group))
        d0, d1, local, accumulators = memories(3)
        rtl = cosim.run(program, d0, d1, ARCH, local=local, accumulators=accumulators,
                        completion="drain")
        estimated = estimate_memory_aware(decode_program(program, ARCH), ARCH).cycles
        rows.append((simds, estimated, rtl.cycles, estimated / rtl.cycles))
    table = "\n".join("%d SIMDs: estimate %5d  RTL %5d  ratio %.3f" % r for r in rows)
    assert all(0.97 <= r[3] <= 1.03 for r in rows), table


def test_the_decoder_runs_instructions_one_after_another():
    # Why scheduling alone cannot reach the 45 % MAC efficiency with today's channel
    # padding (benchmarks/compiler.py serial_floors): with one thread, a DRAM move into the
    # other half of local memory, MatMuls and SIMDs on other accumulators run one after the
    # other. What is shared: a MatMul's drain (2n-1 cycles) with what follows it, and the tail
    # of a SIMD run with a DRAM move after it, through the accumulator port's queue: about 26
    # SIMDs (105 cycles) whatever the run's length.
    dram_move = "DataMove dram1->local local=0x%x dram1=0x0 size=511" % (ARCH.local_depth // 2 + 16)
    matmuls = "LoadWeights local=0x0 size=12\n" + "\n".join(
        "MatMul local=0x%x acc=0x%x size=63" % (16 + 64 * k, 64 * k) for k in range(8))

    def simds(count):
        return "\n".join("SIMD out=Max(in,r1) wacc=0x%x racc=0x%x read write" % (1024 + j, 1024 + j)
                         for j in range(count))
    d0, d1, local, accumulators = memories(4, dram_vectors=1024)

    def cycles(*texts):
        return cosim.run(asm("\n".join(texts)), d0, d1, ARCH, local=local, accumulators=accumulators,
                         completion="drain").cycles

    def shared(first, second):
        return cycles(first) + cycles(second) - cycles(first, second)

    drain = 2 * ARCH.array_size - 1
    assert shared(dram_move, matmuls) <= 2
    assert shared(matmuls, dram_move) <= drain + 2
    assert shared(simds(128), matmuls) <= drain
    assert shared(simds(128), dram_move) == shared(simds(512), dram_move) <= 110


def _leaky_relu_simds(v):
    """The compiler's LeakyReLU of accumulator v (backend._post), its slope less one at 2000."""
    return [SIMD(SimdOp.ZERO, dest=1),
            SIMD(SimdOp.MIN, left=0, right=1, dest=1, read_address=v, read=True),
            SIMD(SimdOp.MULTIPLY, left=0, right=1, write_address=v, read_address=2000, read=True,
                 write=True, accumulate=True)]


def _drained_cycles(program):
    """RTL cycles of a program on the 4-filled memories, run until every queue drains."""
    d0, d1, local, accumulators = memories(4, dram_vectors=1024)
    return cosim.run(encode_program(program, ARCH), d0, d1, ARCH, local=local, accumulators=accumulators,
                     completion="drain").cycles


def test_a_dram_read_after_simds_runs_beside_the_simd_work_queued():
    # What backend._Scheduler._prefetch relies on, and tensil.estimate.MemoryAwareModel prices:
    # a weight block's read (13 vectors, 54 cycles alone) after k LeakyReLU vectors (the
    # compiler's three SIMDs each) costs 54 - 3k cycles beyond the SIMDs, 3 at least: the
    # decoder queues each SIMD in a cycle and moves on to the read while they run.
    from tensil.estimate import READ_BESIDE_SIMDS
    from tensil.isa import DataMove, DataMoveKind

    def read(k):
        return [DataMove(DataMoveKind.DRAM1_TO_LOCAL, 5000 + 16 * k, 16 * k, 12)]

    cycles = _drained_cycles
    tail, reads = [DataMove(DataMoveKind.ACC_TO_LOCAL, 100, 0, 31)], 8
    alone = (cycles(sum((read(k) for k in range(reads)), []) + tail) - cycles(tail)) / reads
    assert alone == 54
    for vectors in (4, 8, 12, 16, 24):
        runs = [sum((_leaky_relu_simds(vectors * k + j) for j in range(vectors)), []) for k in range(reads)]
        simds = sum(runs, []) + tail
        both = sum((run + read(k) for k, run in enumerate(runs)), []) + tail
        added = (cycles(both) - cycles(simds)) / reads
        assert abs(added - max(alone - 3 * vectors, READ_BESIDE_SIMDS)) <= 1, (vectors, added)
        modelled = (estimate_memory_aware(both, ARCH).cycles - estimate_memory_aware(simds, ARCH).cycles) / reads
        assert abs(modelled - added) <= 1.5, (vectors, added, modelled)


def test_a_dram_read_runs_beside_the_work_of_the_last_25_simds_at_most():
    # tensil.estimate.SIMD_QUEUE_DEPTH: however long the run of SIMDs before it, a DRAM read
    # runs beside the work of its last 25 SIMDs at most: 51 cycles after LeakyReLU vectors
    # (eight and a half of them), about 100 after Read+Write Mins, 50 after read-only Maxes. A
    # 13-vector weight block (54 cycles) hides whole after enough of any; a read of two or
    # three blocks (93, 132 cycles) does not, which is why the early reads stay one block each
    # (the model priced 105 cycles of any SIMDs until 2026-12-05, and chose two-block reads the
    # RTL ran 4,780 cycles slower on the ResNet-9).
    from tensil.estimate import SIMD_QUEUE_DEPTH
    from tensil.isa import DataMove, DataMoveKind

    def read(k, size):
        return [DataMove(DataMoveKind.DRAM1_TO_LOCAL, 4000 + 48 * k, 48 * k, size - 1)]

    def minimum(v):
        return [SIMD(SimdOp.MIN, left=0, right=1, write_address=v, read_address=v, read=True, write=True)]

    def maximum(v):
        return [SIMD(SimdOp.MAX, left=0, right=1, dest=1, read_address=v, read=True)]

    cycles, tail, reads = _drained_cycles, [DataMove(DataMoveKind.ACC_TO_LOCAL, 100, 0, 31)], 4
    assert SIMD_QUEUE_DEPTH == 25
    for post, count, most in ((_leaky_relu_simds, 32, 51), (minimum, 64, 103), (maximum, 96, 50)):
        runs = [sum((post(500 + count * k + j) for j in range(count)), []) for k in range(reads)]
        simds = sum(runs, []) + tail
        for size in (26, 39):
            alone = (cycles(sum((read(k, size) for k in range(reads)), []) + tail) - cycles(tail)) / reads
            both = sum((run + read(k, size) for k, run in enumerate(runs)), []) + tail
            added = (cycles(both) - cycles(simds)) / reads
            assert abs(alone - added - min(most, alone)) <= 1.5, (post.__name__, size, alone - added)
            modelled = (estimate_memory_aware(both, ARCH).cycles - estimate_memory_aware(simds, ARCH).cycles) / reads
            assert abs(modelled - added) <= 3.5, (post.__name__, size, added, modelled)


def test_post_ops_hide_in_the_drain_before_a_load_without_a_read():
    # backend.HIDDEN_WORK_NO_READ: between a MatMul and a weight load that reads nothing (its
    # block read early), about 12 cycles of SIMD work run while the array drains and cost
    # nothing: two LeakyReLU vectors (the compiler's three SIMDs each), a third costing 4 of its
    # 6; three Read+Write Mins (a negative part's), a fourth costing 3 of its 4. The calibrated
    # model agrees, but prices the third LeakyReLU vector at its whole 6.
    from tensil.isa import DataMove, DataMoveKind, LoadWeights, MatMul

    def minimum(v):
        return [SIMD(SimdOp.MIN, left=0, right=1, write_address=v, read_address=v, read=True, write=True)]

    def program(post, vectors):
        loads = 8
        code = [LoadWeights(200, 12)]
        for k in range(loads):
            code += [MatMul(16, 0, 15, accumulate=True)]
            code += sum((post(1000 + vectors * k + j) for j in range(vectors)), [])
            code += [LoadWeights(200, 12)]
        return code + [DataMove(DataMoveKind.ACC_TO_LOCAL, 100, 0, 31)], loads

    base, loads = program(minimum, 0)
    for post, vectors, added, beyond in ((_leaky_relu_simds, 2, 0, 0), (_leaky_relu_simds, 3, 4, 2),
                                         (minimum, 3, 0, 0), (minimum, 4, 3, 0)):
        code, _ = program(post, vectors)
        measured = (_drained_cycles(code) - _drained_cycles(base)) / loads
        assert abs(measured - added) <= 0.5, (vectors, measured)
        modelled = (estimate_memory_aware(code, ARCH).cycles - estimate_memory_aware(base, ARCH).cycles) / loads
        assert abs(modelled - measured - beyond) <= 0.5, (vectors, measured, modelled)


def test_a_dram_read_pays_its_latency_and_hides_a_drain_only():
    # The read latency of benchmarks/compiler.py serial_floors: a DRAM read between a MatMul
    # and the next LoadWeights runs beside the array's drain (2n-1), latency included, but
    # costs its beats plus the read's latency and setup beyond that; two reads in a row pay
    # the latency twice. So every drain costs at least the latency beyond the beats of the
    # reads, whether a read hides it or not (an exposed drain is longer than the latency).
    from tensil.estimate import MemoryModel

    memory = MemoryModel()
    latency = memory.read_latency + memory.read_setup
    drain = 2 * ARCH.array_size - 1
    beats = -(-ARCH.vector_bytes * 8 // memory.bus_bits)
    d0, d1, local, accumulators = memories(4, dram_vectors=1024)

    def cycles(*texts):
        return cosim.run(asm("\n".join(texts)), d0, d1, ARCH, local=local, accumulators=accumulators,
                         completion="drain").cycles

    def read(vectors, at=0):
        return "DataMove dram1->local local=0x%x dram1=0x%x size=%d" % (
            ARCH.local_depth // 2 + at, at, vectors - 1)
    load, matmul = "LoadWeights local=0x0 size=12", "MatMul local=0x10 acc=0x0 size=15"
    without = cycles(load, matmul, load, matmul)
    for vectors in (1, 4, 12, 24):
        added = cycles(load, matmul, read(vectors), load, matmul) - without
        assert added >= max(0, vectors * beats + latency - drain), vectors
    assert cycles(read(12), read(12, 16)) - cycles(read(24)) >= latency
    # nor does a read from the other DRAM run beside it: DRAM0 and DRAM1 reads one after the other
    other = "DataMove dram0->local local=0x%x dram0=0x0 size=11" % (ARCH.local_depth // 2 + 64)
    both = cycles(read(12), other)
    assert both == cycles(other, read(12)) and both >= cycles(read(12)) + cycles(other) - 1   # the run's start once


def test_a_read_of_three_vectors_hides_in_a_drain():
    # Why the compiler reads the first vectors of a later layer's weight block where a weight
    # load waits for the array to drain with no read beside it (early.py, pieces): a read of up
    # to early.piece_vectors vectors there (3 with the default DRAM model, 50 MHz's) adds a
    # cycle at most, each vector more its beats; the calibrated model prices that (a read
    # right after a MatMul costs the drain at least).
    from tensil.estimate import MemoryModel
    from tensil_tools.compiler.early import piece_vectors

    piece = piece_vectors(ARCH, MemoryModel())
    assert piece == 3 and piece_vectors(ARCH, MemoryModel.at_clock(125)) == 0   # 25 cycles' latency: none
    beats = -(-ARCH.vector_bytes * 8 // MemoryModel().bus_bits)
    d0, d1, local, accumulators = memories(4, dram_vectors=1024)

    def blocks(vectors):
        text = []
        for r in range(8):
            text += ["LoadWeights local=0x%x size=12" % (64 * r), "MatMul local=0x%x acc=0x%x size=63" % (2000 + 64 * r, 64 * r)]
            if vectors:
                text.append("DataMove dram1->local local=0x%x dram1=0x%x size=%d" % (5000 + 16 * r, 16 * r, vectors - 1))
        return "\n".join(text)

    def rtl(vectors):
        return cosim.run(asm(blocks(vectors)), d0, d1, ARCH, local=local, accumulators=accumulators,
                         completion="drain").cycles

    def model(vectors):
        return estimate_memory_aware(parse_program(blocks(vectors), ARCH, strict=False), ARCH).cycles

    without, priced = rtl(0), model(0)
    for vectors in range(1, piece + 3):
        added = (rtl(vectors) - without) / 8
        assert added <= 1 + max(0, vectors - piece) * beats, vectors
        assert abs((model(vectors) - priced) / 8 - added) <= 0.5, vectors

