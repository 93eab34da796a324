"""`python -m tensil`: every subcommand on real files, and a .tmodel run end to end."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tensil.arch import Architecture
from tensil.cli import main
from tensil.emulator import run_model
from tensil.fixed import FORMATS, from_float_const, to_bytes
from tensil.isa import encode_program, parse_program
from tensil.tmodel import ConstsFile, ProgramFile, TensilModel, Vars, load_tmodel, write_tmodel

ROOT = pathlib.Path(__file__).resolve().parents[1]
PERF = ROOT / "tensil_arch" / "pynqz1_perf.tarch"
TINY = Architecture("FP16BP8", 4, 64, 64, 32, 16, 1, 4, 4, 1, 8)

TASM = """\
DataMove dram1->local local=0x0 dram1=0x0 size=4
LoadWeights local=0x0 size=4
DataMove dram0->local local=0x8 dram0=0x0 size=0
MatMul local=0x8 acc=0x0 size=0
SIMD r1=Zero(in,in)
SIMD out=Max(in,r1) wacc=0x1 read write
DataMove acc->local local=0x9 acc=0x1 size=0
DataMove local->dram0 local=0x9 dram0=0x1 size=0
"""


def test_help_lists_the_subcommands():
    done = subprocess.run([sys.executable, "-m", "tensil", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0
    for word in ("arch", "asm", "disasm", "estimate", "emulate"):
        assert word in done.stdout


def test_arch_summary_and_json(capsys):
    assert main(["arch", str(PERF)]) == 0
    assert "Instruction size (bytes):" in capsys.readouterr().out
    assert main(["arch", str(PERF), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["array_size"] == 12


def test_asm_disasm_round_trip_and_estimate(tmp_path, capsys):
    tasm = tmp_path / "p.tasm"
    tasm.write_text("; relu(W x + b)\n" + TASM)
    assert main(["asm", str(tasm), "-a", str(PERF)]) == 0
    tprog = tmp_path / "p.tprog"
    assert tprog.stat().st_size == 8 * 8
    assert main(["disasm", str(tprog), "-a", str(PERF), "-o", str(tmp_path / "back.tasm")]) == 0
    assert (tmp_path / "back.tasm").read_text() == TASM
    assert main(["disasm", str(tprog), "-a", str(PERF), "--offsets"]) == 0
    assert "MatMul local=0x8 acc=0x0 size=0  ; 0x000018" in capsys.readouterr().out
    assert main(["estimate", str(tprog), "-a", str(PERF)]) == 0
    text = capsys.readouterr().out
    assert "TENSIL LATENCY ESTIMATE" in text and "MatMul" in text
    # 5 + 5 + 1 + (1 + 2 * 12: the MatMul follows a DataMove) + 1 + 1 + 1 + 1 = 40 cycles
    assert " ".join(text.split()).count("Total (instructions/cycles/energy): 8 40") == 1
    assert main(["estimate", str(tprog), "-a", str(PERF), "--memory", "--read-latency", "10"]) == 0
    assert "RTL-CALIBRATED ESTIMATE (DRAM read latency 10" in capsys.readouterr().out


def test_errors_are_one_line_with_status_1(tmp_path, capsys):
    bad = tmp_path / "bad.tprog"
    bad.write_bytes(bytes(7) + b"\x50")
    assert main(["disasm", str(bad), "-a", str(PERF)]) == 1
    assert "tensil: error: offset 0 (0x0, instruction 0): reserved opcode 0x5" in \
        capsys.readouterr().err
    assert main(["emulate", str(bad)]) == 1
    assert "needs -a/--arch" in capsys.readouterr().err


def _model(folder: pathlib.Path, load_consts_to_local: bool) -> pathlib.Path:
    fmt = FORMATS["FP16BP8"]
    consts = np.array([[0.5, -1.0, 0.0, 2.0],       # bias
                       [1.0, 0.0, 0.0, -1.0],       # weights of input lane 0
                       [0.0, 1.0, 0.0, 0.5],
                       [0.0, 0.0, 1.0, 0.0],
                       [0.25, 0.25, 0.25, 0.25]])
    (folder / "m.tdata").write_bytes(to_bytes(from_float_const(consts, fmt), fmt))
    text = TASM if not load_consts_to_local else TASM.split("\n", 1)[1]
    program = encode_program(parse_program(text, TINY), TINY)
    (folder / "m.tprog").write_bytes(program)
    model = TensilModel("m", ProgramFile("m.tprog", len(program)), (ConstsFile("m.tdata", 0, 5),),
                        (Vars("x", 0, 1),), (Vars("y", 1, 1),), TINY, load_consts_to_local)
    return write_tmodel(model, folder / "m.tmodel")


@pytest.mark.parametrize("load_consts_to_local", [False, True])
def test_emulate_a_tmodel_like_the_driver(tmp_path, load_consts_to_local, capsys):
    path = _model(tmp_path, load_consts_to_local)
    x = np.array([2.0, -3.0, 1.5, 4.0])
    # relu(b + sum_j x_j w_j): lane0 0.5 + 2 + 1 = 3.5; lane1 -1 - 3 + 1 = -3 -> 0;
    # lane2 1.5 + 1 = 2.5; lane3 2 - 2 - 1.5 + 1 = -0.5 -> 0
    outputs, report = run_model(load_tmodel(path), {"x": x})
    assert outputs["y"].tolist() == [3.5, 0.0, 2.5, 0.0]
    assert report.macs == 16 and report.saturated_inputs == 0
    np.save(tmp_path / "x.npy", np.array([200.0, 0, 0, 0]))
    assert main(["emulate", str(path), "--input", "x=%s" % (tmp_path / "x.npy"),
                 "--out-dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["saturated_inputs"] == 1 and report["counts"]["MatMul"] == 1
    assert np.load(tmp_path / "out" / "y.npy").tolist()[0] == 127.99609375   # 0.5 + 128 sat
    capsys.readouterr()
    with pytest.raises(ValueError, match="missing model input"):
        run_model(load_tmodel(path), {})
    with pytest.raises(ValueError, match="has 8 values; its region holds 1 vectors of 4"):
        run_model(load_tmodel(path), {"x": np.zeros(8)})


def test_emulate_a_tprog_on_raw_drams(tmp_path, capsys):
    arch_path = tmp_path / "tiny.tarch"
    arch_path.write_text(TINY.to_json())
    (tmp_path / "p.tprog").write_bytes(encode_program(parse_program(TASM, TINY), TINY))
    dram1 = np.zeros((5, 4), np.int16)
    dram1[1:5] = np.eye(4, dtype=np.int16) * 256       # identity weights, zero bias
    dram0 = np.array([[-512, 512, 3, 0], [0, 0, 0, 0]], np.int16)
    np.save(tmp_path / "d0.npy", dram0)
    np.save(tmp_path / "d1.npy", dram1)
    assert main(["emulate", str(tmp_path / "p.tprog"), "-a", str(arch_path), "--dram0",
                 str(tmp_path / "d0.npy"), "--dram1", str(tmp_path / "d1.npy"), "--out-dir",
                 str(tmp_path / "out")]) == 0
    out0 = np.load(tmp_path / "out" / "dram0.npy")
    assert out0[1].tolist() == [0, 512, 3, 0] and out0.dtype == np.int16
    assert json.loads(capsys.readouterr().out)["instructions"] == 8


def test_disasm_and_emulate_as_the_rtl_reads_words(tmp_path, capsys):
    # MatMul with flag bit 2 (the RTL ignores it) and a reserved opcode (the RTL skips it)
    words = ((0x1 << 4 | 0x4) << 56 | 0x10).to_bytes(8, "little") + ((0x7 << 4) << 56).to_bytes(
        8, "little")
    tprog = tmp_path / "odd.tprog"
    tprog.write_bytes(words)
    assert main(["disasm", str(tprog), "-a", str(PERF)]) == 1
    assert "MatMul flags 0x4 out of range" in capsys.readouterr().err
    assert main(["disasm", str(tprog), "-a", str(PERF), "--as-rtl"]) == 0
    assert capsys.readouterr().out == ("MatMul local=0x10 acc=0x0 size=0\n"
                                       "Skipped opcode=0x7 flags=0x0 arguments=0x0\n")
    assert main(["emulate", str(tprog), "-a", str(PERF), "--as-rtl", "--out-dir",
                 str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"] == {"MatMul": 1, "Skipped": 1} and report["hazards"] == []
    assert np.load(tmp_path / "out" / "accumulators.npy").shape == (2048, 12)
