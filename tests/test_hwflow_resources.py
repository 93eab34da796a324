"""make rtl-report: real Yosys synth_xilinx on a small Verilog of our own (seconds), the
parsing of its stat, the block-RAM conversion of Tensil's black-box memories, and the CLI.
The 12x12 TCU itself takes minutes: measured by `make rtl-report`, not here."""

import json
import shutil
import subprocess
import sys

import pytest

from hwflow.project import REPO_ROOT
from hwflow.resources import XC7Z020, bram36_for_memory, count_cells, parse_stat, synthesize
from hwflow.rtl import find_rtl

needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None,
                                 reason="yosys is not installed (apt-get install yosys)")

# A Tensil-shaped folder: top_small.v instantiates a submodule (a registered 16x16 multiplier:
# one DSP48E1 whose P register absorbs the product's flip-flops), an 8-bit counter (8
# flip-flops, carry chain), a 3-input XOR a bit (8 LUT3) and two black-box memories
# bram_dp_36x1024 (one RAMB36 each: 1K x 36).
TOP = """module mac16(input clock, input [15:0] a, input [15:0] b, output reg [31:0] p);
  always @(posedge clock) p <= $signed(a) * $signed(b);
endmodule
module top_small(input clock, input reset, input [15:0] a, input [15:0] b,
                 output [31:0] p, output reg [7:0] count, output [35:0] q0, output [35:0] q1,
                 output [7:0] x);
  assign x = a[7:0] ^ b[7:0] ^ count;
  mac16 mac(.clock(clock), .a(a), .b(b), .p(p));
  always @(posedge clock) count <= reset ? 8'd0 : count + 8'd1;
  bram_dp_36x1024 m0(.clka(clock), .addra({2'b0, count}), .doa(q0));
  bram_dp_36x1024 m1(.clka(clock), .addra({2'b0, count}), .doa(q1));
endmodule
"""
BRAM = """module bram_dp_36x1024(input clka, input [9:0] addra, output reg [35:0] doa);
  reg [35:0] ram [1023:0];
  always @(posedge clka) doa <= ram[addra];
endmodule
"""


@pytest.fixture
def small_rtl(tmp_path):
    (tmp_path / "rtl").mkdir()
    (tmp_path / "rtl" / "top_small.v").write_text(TOP)
    (tmp_path / "rtl" / "bram_dp_36x1024.v").write_text(BRAM)
    return find_rtl(tmp_path / "rtl")


@pytest.mark.parametrize("shape,expected", [
    ((36, 1024), 1), ((18, 1024), 0.5), ((192, 8192), 44), ((192, 2048), 11),
    ((128, 8192), 30), ((128, 2048), 7.5), ((1, 32768), 1), ((1, 32769), 1.5), ((72, 512), 2),
])
def test_bram36_for_memory(shape, expected):
    assert bram36_for_memory(*shape) == expected


def test_bram36_rejects_empty_shapes():
    with pytest.raises(ValueError):
        bram36_for_memory(0, 1024)


def test_count_cells_groups_primitives():
    util = count_cells({"LUT2": 10, "LUT6": 5, "RAM32M": 2, "SRLC32E": 3, "INV": 7, "FDRE": 20,
                        "FDSE": 1, "DSP48E1": 4, "RAMB18E1": 3, "CARRY4": 9,
                        "\\bram_dp_192x8192": 1, "bram_dp_192x2048": 2})
    assert (util.lut_logic, util.lut_memory, util.luts, util.inverters) == (15, 11, 26, 7)
    assert (util.ffs, util.dsps) == (21, 4)
    assert util.bram36 == 1.5 + 44 + 2 * 11
    rows = {r["resource"]: r for r in util.rows()}
    assert rows["LUT+INV"]["used"] == 33 and rows["DSP48"]["percent"] == pytest.approx(400 / 220)
    assert util.verdict() == "fits"
    assert count_cells({"DSP48E1": 221}).verdict() == "does not fit"
    assert count_cells({"LUT6": 53000, "INV": 300}).verdict() == "uncertain"


def test_parse_stat_prefers_the_hierarchy_totals():
    text = """
=== sub ===
   Number of cells:                  3
     LUT2                            3

=== top ===
   Number of cells:                  2
     FDRE                            2
     sub                             1

=== design hierarchy ===
   top                               1
     sub                             1
   Number of wires:                 10
   Number of cells:                  5
     FDRE                            2
     LUT2                            3
"""
    assert parse_stat(text, "top") == {"FDRE": 2, "LUT2": 3}
    assert parse_stat(text.split("=== design")[0], "top") == {"FDRE": 2, "sub": 1}


def test_parse_stat_errors():
    from hwflow.errors import HwflowError

    with pytest.raises(HwflowError, match="neither a design hierarchy nor module top"):
        parse_stat("=== other ===\n", "top")


@needs_yosys
def test_real_yosys_on_a_small_design(small_rtl, tmp_path):
    util = synthesize(small_rtl, tmp_path / "work", flatten=True)  # the CLI test runs it hierarchical
    assert util.dsps == 1
    assert util.ffs == 8
    assert util.cells.get("LUT3", 0) >= 8 and util.lut_logic >= 8
    assert [(w, d, n) for w, d, n, _ in util.memories] == [(36, 1024, 2)]
    assert util.bram36 == 2
    assert "design hierarchy" not in (tmp_path / "work" / "yosys_stat.txt").read_text()


@needs_yosys
def test_rtl_report_cli_writes_json(small_rtl, tmp_path):
    out = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "hwflow", "rtl-report", "--rtl", str(small_rtl.directory),
                             "--json", str(out), "--work-dir", str(tmp_path / "w")],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "estimate by Yosys synth_xilinx, not Vivado" in result.stdout
    assert "DSP48" in result.stdout and "verdict: fits" in result.stdout
    report = json.loads(out.read_text())
    assert report["verdict"] == "fits" and report["rtl"]["top"] == "top_small"
    assert "design hierarchy" in (tmp_path / "w" / "yosys_stat.txt").read_text()
    rows = {r["resource"]: r["used"] for r in report["rows"]}
    assert (rows["DSP48"], rows["FF"], rows["BRAM36"]) == (1, 8, 2)
    assert {r["resource"]: r["available"] for r in report["rows"]} == {
        "LUT": XC7Z020["LUT"], "LUT+INV": XC7Z020["LUT"], "FF": XC7Z020["FF"],
        "DSP48": XC7Z020["DSP48"], "BRAM36": XC7Z020["BRAM36"]}


def test_rtl_report_without_yosys_says_so(small_rtl, tmp_path):
    result = subprocess.run([sys.executable, "-m", "hwflow", "rtl-report", "--rtl", str(small_rtl.directory),
                             "--work-dir", str(tmp_path / "w")], capture_output=True, text=True,
                            cwd=REPO_ROOT, env={"PATH": "/nonexistent"})
    assert result.returncode == 2
    assert "yosys is not installed" in result.stderr and "apt-get install yosys" in result.stderr
