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
    assert model.bursts(170, 1, 1) == 2   # bytes 4080..4104 cross the boundary
    result = estimate_memory_aware(PROGRAM, PERF, MemoryModel(read_latency=30, write_latency=10))
    tensil = estimate(PROGRAM, PERF)
    read = 1 * 30 + 13 * 3            # 13 vectors, one burst
    write = 2 * 10 + 170 * 3          # 170 vectors, two bursts
    assert result.cycles == tensil.cycles - 13 - 170 + read + write
    assert result.energy == tensil.energy


def test_memory_model_is_validated():
    with pytest.raises(ValueError, match="MemoryModel.read_latency is -1"):
        MemoryModel(read_latency=-1)
    with pytest.raises(ValueError, match="MemoryModel.max_burst_beats is 0"):
        MemoryModel(max_burst_beats=0)
    with pytest.raises(ValueError, match="whole number of bytes"):
        MemoryModel(bus_bits=12)
