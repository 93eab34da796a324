"""Tensil's per-instruction latency model and the memory-aware variant, by hand."""

import pathlib

import pytest

from tensil.arch import load_tarch
from tensil.estimate import MemoryAwareModel, MemoryModel, estimate, estimate_memory_aware
from tensil.isa import SIMD, ConfigRegister, Configure, DataMove, LoadWeights, MatMul, NoOp, SimdOp
from tensil.isa import DataMoveKind as K

ROOT = pathlib.Path(__file__).resolve().parents[1]
PERF = load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch")   # N = 12
PYNQZ1 = load_tarch(ROOT / "tensil_arch" / "pynqz1.tarch")      # N = 8

PROGRAM = [
    DataMove(K.DRAM1_TO_LOCAL, 0, 0, 12),      # 13 cycles, energy 1300
    LoadWeights(0, 12),                        # 13, 130
    MatMul(0, 0, 99),                          # after LoadWeights: 100 + 12, 100 * 144
    MatMul(0, 0, 9),                           # after MatMul: 10, 1440
    SIMD(SimdOp.ZERO, dest=1),                 # 1, 12
    MatMul(0, 0, 0),                           # after SIMD: 1 + 24, 144
    DataMove(K.ACC_TO_LOCAL, 0, 0, 3),         # 4, 40
    NoOp(),                                    # 1, 0
    Configure(ConfigRegister.TIMEOUT, 5),      # 0, 0
    DataMove(K.LOCAL_TO_DRAM0, 0, 0, 169),     # 170, 17000
]


def test_tensils_latency_model():
    result = estimate(PROGRAM, PERF)
    assert result.cycles == 13 + 13 + 112 + 10 + 1 + 25 + 4 + 1 + 0 + 170
    assert result.energy == 1300 + 130 + 14400 + 1440 + 12 + 144 + 40 + 0 + 0 + 17000
    rows = {kind: (count, cycles) for kind, count, cycles, _ in result.table()}
    assert rows["MatMul"] == (3, 147) and rows["DataMove(local->dram0)"] == (1, 170)
    assert result.table()[0][0] == "DataMove(local->dram0)"   # most cycles first


def test_memory_aware_model_counts_beats_and_bursts():
    model = MemoryAwareModel(PERF, MemoryModel(read_latency=30, write_latency=10))
    assert model.beats_per_vector == 3 and MemoryAwareModel(PYNQZ1).beats_per_vector == 2
    # 170 vectors of 24 bytes from vector 0: requests of 85 vectors (255 beats), 2040 bytes
    # each, no 4 KiB crossing -> 2 bursts; from vector 100 (byte 2400) the first request
    # crosses 4096 -> 3 bursts; a strided move is one burst per vector.
    assert model.bursts(0, 170, 0) == 2
    assert model.bursts(100, 170, 0) == 3
    assert model.bursts(0, 4, 1) == 4
    # RTL vs facts: bytes 4080..4104 cross 4 KiB by one beat, its last: the RTL sends one burst
    assert model.bursts(170, 1, 1) == 1
    assert model.bursts(341, 1, 1) == 2   # bytes 8184..8208: two beats past 8192, split
    result = estimate_memory_aware(PROGRAM, PERF, MemoryModel(read_latency=30, write_latency=10))
    read = 13 * 3 + 30 + 5               # 13 vectors in one request, latency, setup
    lw_mm = 13 + 100 + 10 + 1.25 + 1     # LoadWeights, MatMuls, a flagless SIMD
    to_local = 4 + 2 + 23                # acc->local after a MatMul waits for the array
    write = 170 * 3 + 1                  # 170 vectors, two requests, beats dominate
    drain = 10 + 4                       # the last write's answer
    assert result.cycles == round(read + lw_mm + to_local + 1 + 1 + write) + drain
    assert result.by_kind["(drain)"].cycles == drain
    assert result.energy == estimate(PROGRAM, PERF).energy


def test_memory_aware_model_prices_what_the_rtl_was_measured_to_do():
    n = PERF.array_size
    cycles = estimate_memory_aware([LoadWeights(0, 12), MatMul(0, 0, 15), LoadWeights(0, 12),
                                    MatMul(0, 0, 15)], PERF).cycles
    assert cycles == 13 + 16 + (13 + 2 * n - 1) + 16 + 2 * n + 1
    simd = [SIMD(SimdOp.MOVE, read=True, write=True)] * 4 + [SIMD(SimdOp.ZERO, dest=1)] * 4
    # the first Zero runs while the last Read+Write SIMD writes (measured: Read+Write, Zero
    # pairs cost 3.76 cycles on the RTL, a Read+Write alone 3.88)
    assert estimate_memory_aware(simd, PERF).cycles == round(4 * 4 + 0 + 3 * 1.25)
    turnaround = [DataMove(K.LOCAL_TO_DRAM0, 0, 0, 0), DataMove(K.DRAM0_TO_LOCAL, 0, 0, 0)]
    assert estimate_memory_aware(turnaround, PERF).cycles == round(14 / 3 + 1 + 13 + 3 + 15)
    strided = [DataMove(K.DRAM1_TO_LOCAL, 0, 0, 15, stride=1)]
    assert estimate_memory_aware(strided, PERF).cycles == round(15 * 4.34 + 3 + 15)


def test_memory_model_is_validated():
    with pytest.raises(ValueError, match="MemoryModel.read_latency is -1"):
        MemoryModel(read_latency=-1)
    with pytest.raises(ValueError, match="MemoryModel.read_setup is 'x'; must be a number"):
        MemoryModel(read_setup="x")
    with pytest.raises(ValueError, match="MemoryModel.max_burst_beats is 0"):
        MemoryModel(max_burst_beats=0)
    with pytest.raises(ValueError, match="whole number of bytes"):
        MemoryModel(bus_bits=12)


def test_the_memory_model_at_a_clock_counts_the_drams_latency_in_its_cycles():
    # 200 ns (cosim.DramModel.zynq_hp's estimate): 10 cycles at 50 MHz, the default model
    assert MemoryModel.at_clock(50) == MemoryModel()
    assert MemoryModel.at_clock(125).read_latency == MemoryModel.at_clock(125).write_latency == 25
    for bad in (0.5, 2000, "50", True, float("nan")):
        with pytest.raises(ValueError, match="clock_mhz must be a number in"):
            MemoryModel.at_clock(bad)


def test_an_on_chip_instruction_hides_the_tail_of_a_dram_write():
    write = DataMove(K.LOCAL_TO_DRAM0, 0, 0, 15)          # 48 beats + 1
    after = [write, DataMove(K.LOCAL_TO_ACC, 0x1000, 0, 15)]   # 16 cycles, 13 of them hidden
    assert estimate_memory_aware(after, PERF).cycles == 49 + 16 - 13
    assert estimate_memory_aware([write, NoOp()], PERF).cycles == 49   # the NoOp is hidden
