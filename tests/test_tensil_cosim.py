"""Co-simulation on the real Tensil RTL (Verilator): hand-assembled programs, results predicted
from ../shared/design/TENSIL.md, bit for bit.

Where the RTL and the facts file disagree the RTL wins: those tests say so in a comment
starting with "RTL vs facts". The RTL is ../shared/rtl/tensil_custom_perf (or $TENSIL_RTL);
without it, Verilator, g++ or make the RTL tests skip with the reason. The first test builds
the simulator (about 35 s on 2 cores, cached in build/cosim/ afterwards).
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tensil.arch import load_tarch
from tensil_tools import cosim
from tensil_tools.cosim import AxiViolation, CosimHang, CosimUnavailable, DramModel, RtlMismatch

ROOT = Path(__file__).resolve().parents[1]
ARCH = load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch")
N = ARCH.array_size
ONE = 256  # FP16BP8 1.0

MISSING = cosim.unavailable()
needs_rtl = pytest.mark.skipif(MISSING is not None, reason="co-simulation unavailable: %s" % MISSING)


# ---------------------------------------------------------------------------------------------
# Instructions by hand, from TENSIL.md §2.4 (pynqz1/custom_perf: 8 bytes; operand0 = 13-bit
# address + 3-bit stride, operand1 = 20-bit address + 3-bit stride + pad, operand2 = 16 bits,
# header byte = opcode << 4 | flags, little-endian).


def instr(opcode, flags, op0=0, op1=0, op2=0):
    return (op0 | op1 << 16 | op2 << 40 | (opcode << 4 | flags) << 56).to_bytes(8, "little")


def datamove(kind, local, other, size=0, s0=0, s1=0):
    return instr(0x2, kind, local | s0 << 13, other | s1 << 20, size)


def load_weights(local, size, s0=0, zeroes=False):
    return instr(0x3, int(zeroes), local | s0 << 13, size)


def matmul(local, acc, size=0, s0=0, s1=0, accumulate=False, zeroes=False):
    return instr(0x1, int(accumulate) | int(zeroes) << 1, local | s0 << 13, acc | s1 << 20, size)


def simd(op, write=0, read=0, left=0, right=0, dest=0, r=False, w=False, a=False):
    sub = dest | right << 1 | left << 2 | op << 3
    return instr(0x4, int(r) | int(w) << 1 | int(a) << 2, write, read, sub)


def configure(register, value):
    return ((register | value << 4) | 0xF0 << 56).to_bytes(8, "little")


DRAM0_TO_LOCAL, LOCAL_TO_DRAM0, DRAM1_TO_LOCAL, LOCAL_TO_DRAM1 = 0x0, 0x1, 0x2, 0x3
ACC_TO_LOCAL, LOCAL_TO_ACC, LOCAL_TO_ACC_ADD = 0xC, 0xD, 0xF
INPUT, REGISTER = 0, 1


def test_hand_encoder_matches_the_facts_byte_strings():
    def b(text):
        return bytes.fromhex(text.replace(" ", ""))

    assert matmul(0x100, 0x10, 7) == b("00 01 10 00 00 07 00 10")
    assert matmul(0, 0x7FF, 3, s1=1, accumulate=True, zeroes=True) == b("00 00 ff 07 10 03 00 13")
    assert datamove(DRAM0_TO_LOCAL, 0, 0x12345, 1023) == b("00 00 45 23 01 ff 03 20")
    assert datamove(LOCAL_TO_DRAM0, 8191, 0xFFFFE) == b("ff 1f fe ff 0f 00 00 21")
    assert datamove(LOCAL_TO_ACC_ADD, 0x1000, 5, 15) == b("00 10 05 00 00 0f 00 2f")
    assert load_weights(0x200, 8) == b("00 02 08 00 00 00 00 30")
    assert load_weights(0, 0, zeroes=True) == b("00 00 00 00 00 00 00 31")
    assert simd(1, dest=REGISTER) == b("00 00 00 00 00 09 00 40")
    assert simd(15, write=0x20, read=0x10, right=REGISTER, r=True, w=True) == b(
        "20 00 10 00 00 7a 00 43"
    )
    assert configure(0x0, 0x1234) == b("40 23 01 00 00 00 00 f0")
    assert configure(0x8, 100) == b("48 06 00 00 00 00 00 f0")


# ---------------------------------------------------------------------------------------------
# FP16BP8 arithmetic from the facts (§3.4): MAC with round-half-even and saturation every step.


def sat(x):
    return np.clip(np.asarray(x, np.int64), -32768, 32767)


def mac(x, w, z):
    m = np.asarray(x, np.int64) * np.asarray(w, np.int64) + (np.asarray(z, np.int64) << 8)
    q, low = m >> 8, m & 0xFF
    adjust = ((low & 0x80) != 0) & (((low & 0x7F) != 0) | ((q & 1) != 0))
    return sat(q + adjust)


def matmul_ref(x, weights, bias):
    """Column partial sums start at the bias row and take input lanes in order (§3.4)."""
    p = np.asarray(bias, np.int64)
    for j in range(N):
        p = mac(x[j], weights[j], p)
    return p


def zeros(rows=1):
    return np.zeros((rows, N), np.int16)


def local_image():
    return zeros(ARCH.local_depth)


def acc_image():
    return zeros(ARCH.accumulator_depth)


def run(program, dram0=None, dram1=None, **kwargs):
    """A hand-written program on the RTL. These probe the ISA at every address, including the
    ones the compiler keeps moves away from (a move ending one beat past 4 KiB), so they let the
    co-simulation serve a burst across the boundary; compiled programs never get that leave."""
    kwargs.setdefault("allow_boundary_crossings", True)
    return cosim.run(
        b"".join(program) if isinstance(program, list) else program,
        zeros() if dram0 is None else dram0,
        zeros() if dram1 is None else dram1,
        ARCH,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# DataMove


@needs_rtl
def test_build_is_cached():
    first = cosim.build()
    again = cosim.build()
    assert again.cached and again.executable == first.executable and again.key == first.key
    assert first.executable.is_file()
    assert not list(first.executable.parent.parent.glob(".tmp-*")), "a build left its work dir"


@needs_rtl
@pytest.mark.parametrize("completion", ["probe", "drain"])
def test_datamove_dram0_local_dram0(completion):
    rng = np.random.default_rng(1)
    dram0 = rng.integers(-32768, 32768, (600, N)).astype(np.int16)
    program = [datamove(DRAM0_TO_LOCAL, 100, 3, 19), datamove(LOCAL_TO_DRAM0, 100, 500, 19)]
    result = run(program, dram0, completion=completion)
    expected = dram0.copy()
    expected[500:520] = dram0[3:23]
    np.testing.assert_array_equal(result.dram0, expected)
    np.testing.assert_array_equal(result.local[100:120], dram0[3:23])
    assert not result.local[:100].any() and not result.local[120:8191].any()
    assert not result.accumulators.any()
    assert 0 < result.cycles <= result.drain_cycles + 1 and result.instructions == 2


@needs_rtl
def test_datamove_dram1_local_dram1():
    rng = np.random.default_rng(2)
    dram1 = rng.integers(-32768, 32768, (64, N)).astype(np.int16)
    result = run(
        [datamove(DRAM1_TO_LOCAL, 7, 10, 29), datamove(LOCAL_TO_DRAM1, 7, 0, 4)], dram1=dram1
    )
    np.testing.assert_array_equal(result.local[7:37], dram1[10:40])
    expected = dram1.copy()
    expected[0:5] = dram1[10:15]
    np.testing.assert_array_equal(result.dram1, expected)
    assert result.stats["dram1"]["read_beats"] == 30 * N // 4
    assert result.stats["dram0"]["write_beats"] == N // 4  # only the flush probe


@needs_rtl
def test_datamove_local_to_accumulators_overwrite_accumulate_saturate_and_back():
    local = local_image()
    local[0] = [32767, -32768, 1000, -1000, 0, 1, -1, 20000, -20000, 32000, -32000, 5]
    local[1] = [1, -1, 31767, -31768, 0, -1, 1, 20000, -20000, 767, -768, -5]
    local[2] = 9
    accumulators = acc_image()
    accumulators[9] = 1234
    program = [
        datamove(LOCAL_TO_ACC, 0, 4),  # acc[4] = local[0]
        datamove(LOCAL_TO_ACC_ADD, 1, 4),  # acc[4] = sat(acc[4] + local[1])
        datamove(LOCAL_TO_ACC, 2, 5),  # overwrite
        datamove(LOCAL_TO_ACC_ADD, 2, 9),  # into a preloaded accumulator
        datamove(ACC_TO_LOCAL, 20, 4, 1),  # acc[4..5] -> local[20..21]
    ]
    result = run(program, local=local, accumulators=accumulators)
    summed = sat(local[0].astype(np.int64) + local[1])
    assert summed[0] == 32767 and summed[1] == -32768 and summed[7] == 32767 and summed[8] == -32768
    np.testing.assert_array_equal(result.accumulators[4], summed)
    np.testing.assert_array_equal(result.accumulators[5], local[2])
    np.testing.assert_array_equal(result.accumulators[9], 1234 + 9)
    np.testing.assert_array_equal(result.local[20], summed)
    np.testing.assert_array_equal(result.local[21], local[2])


@needs_rtl
def test_accumulators_to_local_to_dram0():
    accumulators = acc_image()
    accumulators[100:110] = np.arange(10 * N).reshape(10, N) - 60
    program = [datamove(ACC_TO_LOCAL, 3000, 100, 9), datamove(LOCAL_TO_DRAM0, 3000, 2, 9)]
    result = run(program, zeros(20), accumulators=accumulators)
    np.testing.assert_array_equal(result.dram0[2:12], accumulators[100:110])
    np.testing.assert_array_equal(result.accumulators, accumulators)


@needs_rtl
def test_datamove_strides_on_both_operands():
    rng = np.random.default_rng(3)
    dram0 = rng.integers(-32768, 32768, (700, N)).astype(np.int16)
    program = [
        datamove(DRAM0_TO_LOCAL, 40, 1, 4, s0=1, s1=2),  # local 40,42,.. <- DRAM0 1,5,9,..
        datamove(LOCAL_TO_DRAM0, 40, 600, 4, s0=1, s1=3),  # DRAM0 600,608,.. <- local 40,42,..
        datamove(LOCAL_TO_ACC, 40, 7, 4, s0=1, s1=7),  # acc 7,135,263,.. <- local 40,42,..
    ]
    result = run(program, dram0)
    np.testing.assert_array_equal(result.local[40:50:2], dram0[1:21:4])
    assert not result.local[41:50:2].any()
    np.testing.assert_array_equal(result.dram0[600:640:8], dram0[1:21:4])
    np.testing.assert_array_equal(result.dram0[601:608], dram0[601:608])
    np.testing.assert_array_equal(result.accumulators[7:7 + 5 * 128:128], dram0[1:21:4])


@needs_rtl
def test_bursts_cross_4kib_boundaries_split_by_the_rtl():
    rng = np.random.default_rng(4)
    dram0 = rng.integers(-32768, 32768, (2400, N)).astype(np.int16)
    # 300 vectors from byte 170 * 24 = 4080: crosses 4 KiB after 16 bytes and again later.
    program = [datamove(DRAM0_TO_LOCAL, 1000, 170, 299), datamove(LOCAL_TO_DRAM0, 1000, 2000, 299)]
    result = run(program, dram0)
    np.testing.assert_array_equal(result.local[1000:1300], dram0[170:470])
    np.testing.assert_array_equal(result.dram0[2000:2300], dram0[170:470])
    stats = result.stats["dram0"]
    # 900 beats need at least 4 bursts of <= 256 beats, plus the splits at 4 KiB.
    assert stats["read_beats"] == 900 + N // 4 and stats["max_burst_beats"] <= 256
    assert stats["read_bursts"] >= 900 * 8 // 4096 + 2
    assert stats["boundary_crossings"] == 0


@needs_rtl
def test_requests_ending_one_beat_past_4kib_are_not_split():
    # RTL vs facts: the facts say requests are split at 4 KiB boundaries. The RTL misses the
    # case where only the last beat lies past the boundary: a request ending at 4 KiB*k + 8
    # goes out as one burst across the boundary (an AXI violation; the harness serves it from
    # flat memory and counts it). Vector 170 is bytes 0xff0..0x1007: one 3-beat burst.
    rng = np.random.default_rng(13)
    dram0 = rng.integers(-32768, 32768, (400, N)).astype(np.int16)
    for start, size in ((170, 0), (169, 1), (168, 2)):
        result = run([datamove(DRAM0_TO_LOCAL, 0, start, size)], dram0)
        np.testing.assert_array_equal(result.local[: size + 1], dram0[start : start + size + 1])
        stats = result.stats["dram0"]
        assert stats["boundary_crossings"] == 1 and stats["read_bursts"] == 2  # + the probe
        assert stats["first_crossing"] == "read 0x%x x%d" % (start * 24, 3 * (size + 1))
    # The co-simulation refuses such a program unless asked to serve it (AXI forbids the burst).
    with pytest.raises(AxiViolation, match=r"1 dram0 burst\(s\) across a 4 KiB boundary \(first: dram0 read 0xff0"):
        run([datamove(DRAM0_TO_LOCAL, 0, 170, 0)], dram0, allow_boundary_crossings=False)
    split = run([datamove(DRAM0_TO_LOCAL, 0, 341, 0)], dram0)  # 0x1ff8..0x200f: split in two
    assert split.stats["dram0"]["boundary_crossings"] == 0
    assert split.stats["dram0"]["read_bursts"] == 3


@needs_rtl
def test_configure_dram_offsets_move_the_windows():
    rng = np.random.default_rng(5)
    dram0 = rng.integers(-32768, 32768, (8300, N)).astype(np.int16)
    dram1 = rng.integers(-32768, 32768, (8300, N)).astype(np.int16)
    # Offset 3 = 3 * 64 KiB = byte 196608 = vector 8192 of a 12-lane image.
    program = [
        configure(0x0, 3),
        configure(0x4, 3),
        datamove(DRAM0_TO_LOCAL, 300, 5),
        datamove(DRAM1_TO_LOCAL, 301, 7),
        datamove(LOCAL_TO_DRAM0, 300, 10),
        datamove(LOCAL_TO_DRAM1, 301, 20),
    ]
    result = run(program, dram0, dram1)
    np.testing.assert_array_equal(result.local[300], dram0[8192 + 5])
    np.testing.assert_array_equal(result.local[301], dram1[8192 + 7])
    np.testing.assert_array_equal(result.dram0[8192 + 10], dram0[8192 + 5])
    np.testing.assert_array_equal(result.dram1[8192 + 20], dram1[8192 + 7])
    np.testing.assert_array_equal(result.dram0[:8192], dram0[:8192])


@needs_rtl
def test_configure_takes_effect_on_datamoves_still_in_flight():
    # RTL vs facts: "Configure sets registers immediately" has a consequence the facts do not
    # spell out: the AXI converter adds the offset as it issues each request, so a strided
    # DataMove (one request per vector) still in flight when a later Configure arrives sends
    # its remaining vectors to the new window. (The driver configures only before a program.)
    dram0 = np.arange(8400 * N, dtype=np.int64).reshape(8400, N).astype(np.int16)
    program = [
        datamove(DRAM0_TO_LOCAL, 0, 0, 7),
        datamove(LOCAL_TO_DRAM0, 0, 100, 7, s1=3),  # DRAM0 100, 108, ..., 156
        configure(0x0, 3),
    ]
    result = run(program, dram0)
    old = [i for i in range(8) if (result.dram0[100 + 8 * i] == dram0[i]).all()]
    new = [i for i in range(8) if (result.dram0[8192 + 100 + 8 * i] == dram0[i]).all()]
    assert old and new and old + new == list(range(8)), (old, new)


@needs_rtl
def test_reserved_opcodes_kinds_and_flag_bits_are_ignored():
    rng = np.random.default_rng(6)
    local = local_image()
    local[0 : N + 1] = rng.integers(-300, 300, (N + 1, N))
    local[100] = rng.integers(-300, 300, N)
    accumulators = acc_image()
    accumulators[:4] = 55
    ignored = [datamove(kind, 0, 2, 1) for kind in list(range(0x4, 0xC)) + [0xE]]
    ignored += [instr(opcode, 0xF, 0x1234, 0x56789, 3) for opcode in range(0x5, 0xF)]
    program = ignored + [
        load_weights(0, N),
        # RTL vs facts: the facts call MatMul flags >= 4 and LoadWeights flags >= 2 invalid;
        # the RTL ignores the extra bits (MatMul 0x4 = plain MatMul, LoadWeights 0x3 = Zeroes).
        instr(0x1, 0x4, 100, 10, 0),
        instr(0x3, 0x2, 0, N),  # = LoadWeights without Zeroes
        matmul(100, 11),
        instr(0x3, 0x3, 0, N),  # = LoadWeights with Zeroes
        matmul(100, 12),
    ]
    result = run(program, zeros(8), local=local, accumulators=accumulators)
    expected = matmul_ref(local[100], local[1 : N + 1], local[0])
    np.testing.assert_array_equal(result.accumulators[10], expected)
    np.testing.assert_array_equal(result.accumulators[11], expected)
    np.testing.assert_array_equal(result.accumulators[12], 0)
    np.testing.assert_array_equal(result.accumulators[:4], accumulators[:4])
    changed = np.nonzero((result.local != local).any(axis=1))[0].tolist()
    assert changed == [ARCH.local_depth - 1]  # only the flush probe's vector


# ---------------------------------------------------------------------------------------------
# LoadWeights + MatMul


@needs_rtl
def test_matmul_bias_row_lane_order_and_strides():
    rng = np.random.default_rng(7)
    local = local_image()
    weights = rng.integers(-400, 400, (N, N))
    bias = rng.integers(-2000, 2000, N)
    local[10] = bias  # LoadWeights(10, N): local[10] is the bias, local[11 + j] multiplies lane j
    local[11 : 11 + N] = weights
    xs = rng.integers(-700, 700, (6, N))
    local[200:212:2] = xs  # read with local stride 2^1
    result = run([load_weights(10, N), matmul(200, 40, 5, s0=1, s1=2)], local=local)
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(result.accumulators[40 + 4 * i], matmul_ref(x, weights, bias))
    assert not result.accumulators[41:60:4].any()


@needs_rtl
def test_matmul_rounds_half_to_even_and_saturates_at_every_step():
    local = local_image()
    weights = np.zeros((N, N), np.int64)
    bias = np.zeros(N, np.int64)
    x = np.zeros(N, np.int64)
    x[0], x[1], x[2], x[3] = 1, 3, ONE, ONE
    # column 0: 1 * 0.5/256 -> tie, stays 0 (even); then 3 * 128 = 384 -> 1.5 -> 2 (even)
    weights[0, 0], weights[1, 0] = 128, 128
    # column 1: -1 * 128 = -128 -> -0.5 -> 0 (even); 3 * -128 -> -1.5 -> -2
    weights[0, 1], weights[1, 1] = -128, -128
    # column 2: 32000 + 10.0 saturates to 32767 first, then - 10.0 -> 30207 (a wide sum: 32000)
    bias[2], weights[2, 2], weights[3, 2] = 32000, 10 * ONE, -10 * ONE
    # column 3: the same at the negative end: -32000 - 10.0 -> -32768, + 10.0 -> -30208
    bias[3], weights[2, 3], weights[3, 3] = -32000, -10 * ONE, 10 * ONE
    # column 4/5: products beyond the range saturate outright
    weights[2, 4], weights[3, 4] = 32767, 32767
    weights[2, 5], weights[3, 5] = -32768, -32768
    local[0], local[1 : N + 1], local[50] = bias, weights, x
    result = run([load_weights(0, N), matmul(50, 0)], local=local)
    row = result.accumulators[0]
    assert row[:6].tolist() == [2, -2, 30207, -30208, 32767, -32768]
    np.testing.assert_array_equal(row, matmul_ref(x, weights, bias))


@needs_rtl
def test_matmul_accumulate_zeroes_and_loadweights_zeroes():
    rng = np.random.default_rng(8)
    local = local_image()
    weights = rng.integers(-3000, 3000, (N, N))
    bias = rng.integers(-30000, 30000, N)
    local[0], local[1 : N + 1] = bias, weights
    xs = rng.integers(-3000, 3000, (3, N))
    local[100:103] = xs
    accumulators = acc_image()
    accumulators[20] = rng.integers(-30000, 30000, N)
    program = [
        load_weights(0, N),
        matmul(100, 10),  # acc[10] = y0
        matmul(101, 10, accumulate=True),  # acc[10] = sat(y0 + y1)
        matmul(102, 11, zeroes=True),  # acc[11] = bias (zero input)
        matmul(102, 20, zeroes=True, accumulate=True),  # acc[20] = sat(acc[20] + bias)
        load_weights(0, N, zeroes=True),  # all weights and the bias zero
        matmul(102, 12),
    ]
    result = run(program, local=local, accumulators=accumulators)
    y = [matmul_ref(x, weights, bias) for x in xs]
    np.testing.assert_array_equal(result.accumulators[10], sat(y[0] + y[1]))
    np.testing.assert_array_equal(result.accumulators[11], bias)
    np.testing.assert_array_equal(result.accumulators[20], sat(accumulators[20].astype(np.int64) + bias))
    np.testing.assert_array_equal(result.accumulators[12], 0)
    assert (sat(y[0] + y[1]) != y[0] + y[1]).any(), "the data should saturate somewhere"


@needs_rtl
def test_loadweights_shifts_the_array_one_vector_per_push():
    # Facts §2.5: each push shifts the array; with one more push after a full load the new
    # vector is the bias, the old bias multiplies lane 0 and the last weight row drops out.
    rng = np.random.default_rng(9)
    local = local_image()
    local[0 : 2 * (N + 1) : 2] = rng.integers(-400, 400, (N + 1, N))  # read with stride 2^1
    local[60] = rng.integers(-400, 400, N)
    local[100] = rng.integers(-300, 300, N)
    bias, weights = local[0].astype(np.int64), local[2 : 2 * (N + 1) : 2].astype(np.int64)
    program = [
        load_weights(0, N, s0=1),
        matmul(100, 0),
        load_weights(60, 0),
        matmul(100, 1),
    ]
    result = run(program, local=local)
    np.testing.assert_array_equal(result.accumulators[0], matmul_ref(local[100], weights, bias))
    shifted = np.vstack([bias, weights[:-1]])
    np.testing.assert_array_equal(result.accumulators[1], matmul_ref(local[100], shifted, local[60]))


# ---------------------------------------------------------------------------------------------
# SIMD


def alu_ref(op, left, right):
    """Facts §2.5 table; '1' is the fixed-point one."""
    left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
    table = {
        1: np.zeros_like(left),
        2: left,
        3: np.where(left == 0, ONE, 0),
        4: np.where((left != 0) & (right != 0), ONE, 0),
        5: np.where((left != 0) | (right != 0), ONE, 0),
        6: sat(left + ONE),
        7: sat(left - ONE),
        8: sat(left + right),
        9: sat(left - right),
        10: mac(left, right, 0),
        # RTL vs facts: the facts say |left|; the RTL computes 0 - left in 16 bits, so
        # Abs(-32768) is -32768 (wraps, no saturation).
        11: np.where(left == -32768, -32768, np.abs(left)),
        12: np.where(left > right, ONE, 0),
        13: np.where(left >= right, ONE, 0),
        14: np.minimum(left, right),
        15: np.maximum(left, right),
    }
    return table[op]


SIMD_A = [0, 1, -1, ONE, -ONE, 32767, -32768, 128, 384, -128, 1000, -32768]
SIMD_B = [0, ONE, 0, ONE, 300, ONE, ONE, 3, 1, 0, -1000, 32767]


@needs_rtl
def test_simd_every_alu_op_with_register_and_input_sources():
    accumulators = acc_image()
    accumulators[0], accumulators[1] = SIMD_A, SIMD_B
    program, expected = [], {}
    combos = [(INPUT, REGISTER), (REGISTER, INPUT), (INPUT, INPUT)]
    for c, (left, right) in enumerate(combos):
        for op in range(1, 16):
            if op == 1:
                # Zero with Read set leaves its input vector queued (see the test below), so
                # it runs without Read here.
                program.append(simd(1, write=100 + 20 * c + op, w=True))
            else:
                program.append(simd(2, read=1, dest=REGISTER, r=True))  # register := acc[1]
                program.append(simd(op, 100 + 20 * c + op, 0, left, right, r=True, w=True))
            a, b = np.asarray(SIMD_A), np.asarray(SIMD_B)  # input = acc[0], register = acc[1]
            values = {INPUT: a, REGISTER: b}
            expected[100 + 20 * c + op] = alu_ref(op, values[left], values[right])
    result = run(program, accumulators=accumulators)
    for address, values in expected.items():
        np.testing.assert_array_equal(result.accumulators[address], values, err_msg=str(address))


@needs_rtl
def test_simd_register_destination_write_and_accumulate_flags():
    accumulators = acc_image()
    accumulators[0] = np.arange(N) * 100 - 500
    accumulators[1] = [32000, -32000] + [1000] * (N - 2)
    accumulators[5] = 7
    accumulators[6] = [1000, -1000] + [7] * (N - 2)
    program = [
        # dest = register and Write set: the register and acc[10] both get the result
        # (facts §2.5: the RTL always sends the result to the output too).
        simd(2, write=10, read=0, dest=REGISTER, r=True, w=True),
        simd(2, write=11, left=REGISTER, right=REGISTER, w=True),  # register -> acc[11]
        simd(8, write=5, read=0, left=INPUT, right=REGISTER, r=True, w=True, a=True),
        simd(2, write=6, read=1, r=True, w=True, a=True),  # acc[6] = sat(acc[6] + acc[1])
        simd(2, write=12, read=1, r=True),  # Read without Write: nothing stored
    ]
    result = run(program, accumulators=accumulators)
    a0 = accumulators[0].astype(np.int64)
    np.testing.assert_array_equal(result.accumulators[10], a0)
    np.testing.assert_array_equal(result.accumulators[11], a0)
    np.testing.assert_array_equal(result.accumulators[5], sat(7 + sat(a0 + a0)))
    np.testing.assert_array_equal(
        result.accumulators[6], sat(accumulators[6].astype(np.int64) + accumulators[1])
    )
    assert result.accumulators[6][:2].tolist() == [32767, -32768]
    assert not result.accumulators[12].any()


@needs_rtl
def test_simd_read_that_no_op_consumes_stays_queued():
    # RTL vs facts: the RTL needs no input for NoOp, Zero or register/register sources
    # (ALUArray inputNotNeeded). Zero with Read set still writes 0, but the vector it read
    # stays queued and the next input-consuming SIMD instruction takes it: results shift by
    # one. NoOp with Read or Write, register/register with Read, and Input without Read (the
    # facts' "stalls forever") silently stop every later SIMD write instead.
    accumulators = acc_image()
    for i in range(10):
        accumulators[i] = i * 100
    accumulators[20:40] = 1111

    def move(write, read):
        return simd(2, write=write, read=read, r=True, w=True)

    shifted = run(
        [simd(1, write=20, read=5, r=True, w=True), move(21, 6), move(22, 7)],
        accumulators=accumulators,
    )
    assert shifted.accumulators[20:23, 0].tolist() == [0, 500, 600]
    for jam in (
        simd(0, write=20, read=5, r=True),
        simd(0, write=20, read=5, w=True),
        simd(2, write=20, read=5, left=REGISTER, right=REGISTER, r=True, w=True),
        simd(2, write=20, read=5, w=True),
    ):
        stuck = run([jam, move(21, 6), move(22, 7)], accumulators=accumulators)
        np.testing.assert_array_equal(stuck.accumulators[20:23], 1111)
    plain = run([simd(0), move(21, 6)], accumulators=accumulators)  # NoOp without flags is fine
    np.testing.assert_array_equal(plain.accumulators[21], 600)


@needs_rtl
def test_watchdog_names_what_is_pending_when_the_rtl_hangs():
    # Input without Read jams the SIMD path; the queued instructions behind it fill the
    # decoder's queue until the instruction stream stalls for good.
    program = [simd(2, write=1, read=0, w=True)] + [simd(2, write=2, read=0, r=True, w=True)] * 64
    with pytest.raises(CosimHang) as caught:
        run(program, hang_cycles=3000, drain_idle_cycles=2000)
    message = str(caught.value)
    assert "no progress for 3000 cycles" in message and "TREADY low" in message
    assert "of 67" in message and "flush probe not landed" in message


@needs_rtl
def test_timeout_cycles():
    with pytest.raises(CosimHang, match=r"did not finish within 40 cycles"):
        run([datamove(DRAM0_TO_LOCAL, 0, 0, 200)], zeros(201), timeout_cycles=40)


# ---------------------------------------------------------------------------------------------
# Whole programs, completion and the memory model


@needs_rtl
def test_long_program_fills_the_instruction_queue():
    rng = np.random.default_rng(10)
    dram0 = rng.integers(-6000, 6000, (1000, N)).astype(np.int16)
    program = [datamove(DRAM0_TO_LOCAL, i, i) for i in range(1000)]
    program += [datamove(LOCAL_TO_ACC_ADD, i, i % 100) for i in range(1000)]
    program += [datamove(ACC_TO_LOCAL, 2000, 0, 99), datamove(LOCAL_TO_DRAM0, 2000, 0, 99)]
    result = run(program, dram0)
    expected = np.zeros((100, N), np.int64)
    for i in range(1000):  # sequential saturating adds, in program order
        expected[i % 100] = sat(expected[i % 100] + dram0[i])
    np.testing.assert_array_equal(result.accumulators[:100], expected)
    np.testing.assert_array_equal(result.dram0[:100], expected)
    np.testing.assert_array_equal(result.local[:1000], dram0)
    assert result.instructions == 2002
    assert result.stats["stream_stall_cycles"] > 0, "the instruction queue never filled"


@needs_rtl
def test_flush_probe_lands_like_the_driver_sees_it():
    dram0 = zeros(ARCH.dram0_depth)  # the whole DRAM0: the probe's two vectors are visible
    dram0[5] = 42
    result = run([datamove(DRAM0_TO_LOCAL, 0, 5), datamove(LOCAL_TO_DRAM0, 0, 6)], dram0)
    assert (result.dram0[-1] == -1).all() and (result.dram0[-2] == -1).all()  # 0xFFFF lanes
    assert (result.local[ARCH.local_depth - 1] == -1).all()
    assert (result.dram0[6] == 42).all()
    drained = run([datamove(DRAM0_TO_LOCAL, 0, 5), datamove(LOCAL_TO_DRAM0, 0, 6)], dram0,
                  completion="drain")
    assert not drained.dram0[-2:].any() and drained.cycles < result.cycles


@needs_rtl
def test_slower_memory_costs_cycles_not_results():
    rng = np.random.default_rng(11)
    dram0 = rng.integers(-32768, 32768, (400, N)).astype(np.int16)
    program = [datamove(DRAM0_TO_LOCAL, 0, 0, 299), datamove(LOCAL_TO_DRAM0, 0, 300, 99)]
    runs = [
        run(program, dram0, dram=model)
        for model in (DramModel.ideal(), DramModel(), DramModel(read_latency=60, beat_interval=3))
    ]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.dram0, runs[0].dram0)
        np.testing.assert_array_equal(other.local, runs[0].local)
    cycles = [r.cycles for r in runs]
    assert cycles[0] < cycles[1] < cycles[2]
    assert cycles[2] > 3 * 300 * N // 4  # a beat every 3 cycles bounds the reads alone


# ---------------------------------------------------------------------------------------------
# RTL discovery, refusal and missing tools


@needs_rtl
def test_tensil_rtl_environment_variable(tmp_path, monkeypatch):
    for path in cosim.find_rtl().files:  # links, not copies: the RTL stays third-party data
        (tmp_path / path.name).symlink_to(path)
    monkeypatch.setenv("TENSIL_RTL", str(tmp_path))
    info = cosim.find_rtl()
    assert info.directory == tmp_path.resolve() and info.top_module == "top_custom_perf"
    assert sorted(b.depth for b in info.brams) == [2048, 8192] and info.vector_bits == 192
    result = run([datamove(LOCAL_TO_DRAM0, 0, 0)], zeros(2), local=local_image() + 3)
    assert (result.dram0[0] == 3).all()


@needs_rtl
def test_architecture_mismatch_is_refused_with_both_values():
    for field, value, words in (
        ("array_size", 8, ["192-bit vectors", "array_size 8"]),
        ("local_depth", 4096, ["2048 and 8192", "local_depth 4096"]),
        ("data_type", "FP8BP4", ["FP16BP8", "FP8BP4"]),
    ):
        arch = dataclasses.replace(ARCH, **{field: value})
        with pytest.raises(RtlMismatch) as caught:
            cosim.run(datamove(0, 0, 0), zeros(), zeros(), arch)
        for word in words:
            assert word in str(caught.value)


@needs_rtl
def test_architecture_defaults_to_the_one_the_rtl_was_generated_for(tmp_path, monkeypatch):
    assert cosim.rtl_architecture(cosim.find_rtl()) == ARCH
    result = cosim.run(datamove(LOCAL_TO_DRAM0, 0, 0), zeros(2), zeros(), local=local_image() + 4)
    assert (result.dram0[0] == 4).all()
    for path in cosim.find_rtl().files:
        (tmp_path / path.name).symlink_to(path)
    monkeypatch.setenv("TENSIL_RTL", str(tmp_path))
    with pytest.raises(ValueError, match="put its one .tarch next to the Verilog"):
        cosim.rtl_architecture(cosim.find_rtl())
    (tmp_path / "narrow.tarch").write_text(dataclasses.replace(ARCH, dram1_depth=1 << 16).to_json())
    with pytest.raises(RtlMismatch, match="with 13/11/20/20 bits but the architecture needs "
                                          "13/11/20/16"):
        cosim.run(datamove(LOCAL_TO_DRAM0, 0, 0), zeros(2), zeros())


def test_final_dram_offsets_read_the_program_like_the_rtl():
    program = configure(0x0, 3) + configure(0x4, 0x12345) + instr(0x7, 0) + configure(0x0, 5)
    assert cosim.final_dram_offsets(program, ARCH) == (5 << 16, 0x2345 << 16)


def test_missing_rtl_says_how_to_point_at_one(tmp_path, monkeypatch):
    with pytest.raises(CosimUnavailable, match="TENSIL_RTL"):
        cosim.find_rtl(tmp_path / "nowhere")
    monkeypatch.setenv("TENSIL_RTL", str(tmp_path))
    with pytest.raises(CosimUnavailable, match="top_"):
        cosim.find_rtl()
    assert "TENSIL_RTL" in cosim.unavailable()


def test_missing_tools_are_named_with_their_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = " ".join(cosim.missing_tools())
    assert "verilator is not on PATH" in missing and "apt-get install verilator" in missing
    assert "apt-get install g++" in missing and "apt-get install make" in missing
    if MISSING is None:  # with the RTL present, the build stops at the missing tools
        with pytest.raises(CosimUnavailable, match="verilator"):
            cosim.build(cache_dir=tmp_path / "cache")


@needs_rtl
def test_bad_arguments_are_refused():
    good = datamove(0, 0, 0)
    with pytest.raises(ValueError, match="multiple of the 8-byte"):
        cosim.run(good[:5], zeros(), zeros(), ARCH)
    with pytest.raises(ValueError, match="int16"):
        cosim.run(good, zeros().astype(np.float32), zeros(), ARCH)
    with pytest.raises(ValueError, match=r"shape \(vectors, 12\)"):
        cosim.run(good, np.zeros((3, 8), np.int16), zeros(), ARCH)
    with pytest.raises(ValueError, match="8192 vectors"):
        cosim.run(good, zeros(), zeros(), ARCH, local=zeros(5))
    with pytest.raises(ValueError, match="completion"):
        cosim.run(good, zeros(), zeros(), ARCH, completion="soon")
    with pytest.raises(ValueError, match="read_latency"):
        DramModel(read_latency=0)


@needs_rtl
def test_cli_build_and_run(tmp_path):
    rng = np.random.default_rng(12)
    dram0 = rng.integers(-32768, 32768, (10, N)).astype("<i2")
    (tmp_path / "p.tprog").write_bytes(
        datamove(DRAM0_TO_LOCAL, 0, 2, 3) + datamove(LOCAL_TO_DRAM0, 0, 6, 3)
    )
    dram0.tofile(tmp_path / "d0.bin")
    np.save(tmp_path / "d1.npy", np.zeros((4, N), np.int16))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    built = subprocess.run(
        [sys.executable, "-m", "tensil_tools.cosim", "build"], capture_output=True, text=True, env=env
    )
    assert built.returncode == 0, built.stderr
    assert "cosim" in built.stdout
    done = subprocess.run(
        [sys.executable, "-m", "tensil_tools.cosim", "run", "--tprog", str(tmp_path / "p.tprog"),
         "--dram0", str(tmp_path / "d0.bin"), "--dram1", str(tmp_path / "d1.npy"),
         "--arch", str(ROOT / "tensil_arch" / "pynqz1_perf.tarch"), "--out", str(tmp_path / "out"),
         "--read-latency", "20"],
        capture_output=True, text=True, env=env,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "result.json").read_text())
    assert report["cycles"] > 0 and report["instructions"] == 2
    assert report["dram"]["read_latency"] == 20
    out0 = np.fromfile(tmp_path / "out" / "dram0.bin", "<i2").reshape(-1, N)
    np.testing.assert_array_equal(out0[6:10], dram0[2:6])
    local = np.fromfile(tmp_path / "out" / "local.bin", "<i2").reshape(-1, N)
    assert local.shape == (ARCH.local_depth, N)
    np.testing.assert_array_equal(local[0:4], dram0[2:6])
    assert (tmp_path / "out" / "accumulators.bin").stat().st_size == ARCH.accumulator_depth * N * 2


@needs_rtl
def test_a_model_runs_the_same_way_on_the_emulator_and_the_rtl():
    """Issue 24: one Machine interface; tensil.machine.run_model builds the same images for both."""
    from tensil.emulator import EmulatorMachine
    from tensil.layout import input_vectors
    from tensil.machine import run_model
    from tensil.tmodel import load_tmodel

    model = load_tmodel(ROOT / "models" / "resnet9_f16_strided_32_onnx_pynqz1_perf.tmodel")
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    var = model.inputs[0].name
    inputs = {var: input_vectors(var, x, model.arch.array_size)}

    emulated, on_emulator = run_model(EmulatorMachine(model.arch), model, inputs)
    simulated, on_rtl = run_model(cosim.CosimMachine(model.arch), model, inputs)

    assert emulated.keys() == simulated.keys()
    for name in emulated:
        np.testing.assert_array_equal(emulated[name], simulated[name])
    assert np.array_equal(on_emulator.dram0, on_rtl.dram0[:len(on_emulator.dram0)])
    # the whole program ran: its cycles are the calibrated model's (within 5 %), not a prefix's
    from tensil.estimate import estimate_memory_aware
    from tensil.isa import decode_program
    expected = estimate_memory_aware(decode_program(model.prog_path.read_bytes(), model.arch), model.arch).cycles
    assert on_emulator.cycles is None and abs(on_rtl.cycles / expected - 1) < 0.05, (on_rtl.cycles, expected)
