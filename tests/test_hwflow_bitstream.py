"""make bitstream: the generated Vivado TCL for each architecture and clock, run through a fake
Vivado (tclsh with Vivado's commands recorded: Vivado cannot be installed here), and every
error path. ~6 s."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from hwflow.bitstream import fclk_options, plan_bitstream, prepare
from hwflow.errors import HwflowError, ToolMissing
from hwflow.project import REPO_ROOT
from tests.hwflow_fixtures import design_graph, write_pynq_checkout, write_tcu_rtl

FAKE_VIVADO = pathlib.Path(__file__).parent / "fake_vivado"
ARCHS = {  # .tarch -> (memory width, local depth, accumulator depth)
    "pynqz1.tarch": (128, 8192, 2048),
    "pynqz1_perf.tarch": (192, 8192, 2048),
}

pytestmark = pytest.mark.skipif(shutil.which("tclsh") is None,
                                reason="tclsh is not installed (apt-get install tcl)")


def _rtl(tmp_path, tarch):
    width, local, acc = ARCHS[tarch]
    return write_tcu_rtl(tmp_path / ("rtl_" + tarch), tarch.split(".")[0], width, local, acc)


def _run(tmp_path, tarch, clock, *extra, env=None, pynq=None):
    """python -m hwflow bitstream with the fake Vivado first on PATH; (result, log path)."""
    pynq = pynq or write_pynq_checkout(tmp_path / "PYNQ")
    log = tmp_path / ("vivado_%s_%g.log" % (tarch, clock))
    full_env = dict(os.environ, PATH="%s:%s" % (FAKE_VIVADO, os.environ["PATH"]),
                    FAKE_VIVADO_LOG=str(log), **(env or {}))
    cmd = [sys.executable, "-m", "hwflow", "bitstream", "--arch", str(REPO_ROOT / "tensil_arch" / tarch),
           "--clock-mhz", str(clock), "--pynq-dir", str(pynq), "--rtl", str(_rtl(tmp_path, tarch)),
           "--bitstreams-dir", str(tmp_path / "bitstreams"), "--build-dir", str(tmp_path / "build"),
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=REPO_ROOT), log


@pytest.mark.parametrize("tarch,clock", [("pynqz1.tarch", 50), ("pynqz1.tarch", 125),
                                         ("pynqz1_perf.tarch", 100), ("pynqz1_perf.tarch", 125)])
def test_overlay_names_every_ip_and_connection(tmp_path, tarch, clock):
    result, log = _run(tmp_path, tarch, clock)
    assert result.returncode == 0, result.stderr
    d = design_graph(log)
    top = "top_" + tarch.split(".")[0]
    tcu = "/%s_0" % top
    # the cells and what they are
    assert d.cells[tcu] == ("module", top)
    expected = {"/ps7_0": "processing_system7", "/axi_dma_0": "axi_dma", "/btns_gpio": "axi_gpio",
                "/switches_gpio": "axi_gpio", "/system_interrupts": "axi_intc",
                "/ps7_0_axi_periph": "axi_interconnect", "/concat_interrupts": "xlconcat",
                "/rst_tcu": "proc_sys_reset", "/rst_ps7_0_fclk0": "proc_sys_reset",
                "/axi_smc_dram0": "smartconnect", "/axi_smc_dram1": "smartconnect",
                "/axi_smc_dma": "smartconnect", "/axi_smc_gp1": "smartconnect"}
    for cell, ip in expected.items():
        assert d.cells[cell][1].split(":")[2] == ip, cell
    assert d.cells["/video"][0] == "hier" and d.cells["/video/hdmi_out"][0] == "hier"
    # the TCU clock from FCLK3 at the requested frequency; PYNQ's PS7 settings kept
    assert float(d.props[("/ps7_0", "CONFIG.PCW_FPGA3_PERIPHERAL_FREQMHZ")]) == clock
    assert d.props[("/ps7_0", "CONFIG.PCW_UIPARAM_DDR_PARTNO")] == "MT41K256M16 RE-125"
    for hp in (1, 2, 3):
        assert d.props[("/ps7_0", "CONFIG.PCW_USE_S_AXI_HP%d" % hp)] == "1"
        assert d.props[("/ps7_0", "CONFIG.PCW_S_AXI_HP%d_DATA_WIDTH" % hp)] == "64"
    tcu_clock = d.net_of(tcu + "/clock")
    assert "/ps7_0/FCLK_CLK3" in tcu_clock
    assert {"/axi_dma_0/m_axi_mm2s_aclk", "/ps7_0/S_AXI_HP1_ACLK", "/ps7_0/S_AXI_HP3_ACLK"} <= tcu_clock
    assert "/rst_tcu/peripheral_aresetn" in d.net_of(tcu + "/reset")  # active-low reset
    # the DMA: MM2S only, 64 bits, feeding the instruction stream; the masters on HP ports
    dma = {k: v for (cell, k), v in d.props.items() if cell == "/axi_dma_0"}
    assert (dma["CONFIG.c_include_s2mm"], dma["CONFIG.c_include_sg"]) == ("0", "0")
    assert dma["CONFIG.c_m_axi_mm2s_data_width"] == dma["CONFIG.c_m_axis_mm2s_tdata_width"] == "64"
    assert d.intf_peer("/axi_dma_0/M_AXIS_MM2S") == tcu + "/instruction"
    assert d.through_smartconnect(tcu + "/m_axi_dram0") == "/ps7_0/S_AXI_HP1"
    assert d.through_smartconnect(tcu + "/m_axi_dram1") == "/ps7_0/S_AXI_HP3"
    assert d.through_smartconnect("/axi_dma_0/M_AXI_MM2S") == "/ps7_0/S_AXI_HP2"
    assert d.through_smartconnect("/ps7_0/M_AXI_GP1") == "/axi_dma_0/S_AXI_LITE"
    # buttons (4 board + 6 PMOD) and switches; HDMI out from PYNQ's video hierarchy
    btn = {k: v for (cell, k), v in d.props.items() if cell == "/btns_gpio"}
    assert (btn["CONFIG.C_GPIO_WIDTH"], btn["CONFIG.C_GPIO2_WIDTH"], btn["CONFIG.C_IS_DUAL"]) == ("4", "6", "1")
    assert d.intf_peer("/btns_gpio/GPIO") == "/btns_4bits"
    assert d.intf_peer("/btns_gpio/GPIO2") == "/pmoda_btns"
    assert d.intf_peer("/video/TMDS_out") == "/hdmi_out"
    assert d.intf_peer("/video/M_AXI") == "/ps7_0/S_AXI_HP0"
    assert d.intf_peer("/video/hdmi_out/TMDS_out") == "/video/TMDS_out"  # PYNQ's own proc ran
    # every pin of a hierarchy or the top level that a net touches exists
    assert d.dangling() == []
    # the DDR windows of the TCU and DMA, the DMA's registers where the runtime finds them
    spaces = {a[a.index("-target_address_space") + 1]: a for a in d.addresses if "-target_address_space" in a}
    assert "/ps7_0/S_AXI_HP1/HP1_DDR_LOWOCM" in spaces[tcu + "/m_axi_dram0"]
    assert "/ps7_0/S_AXI_HP3/HP3_DDR_LOWOCM" in spaces[tcu + "/m_axi_dram1"]
    assert any("/axi_dma_0/S_AXI_LITE/Reg" in a and "0x80400000" in a for a in d.addresses)
    # the flow: batch runs, timing read, bitstream written, outputs + JSON
    assert [c[0] for c in d.commands("launch_runs")] == ["synth_1", "impl_1"]
    name = "%s_%gmhz" % (tarch.split(".")[0], clock)
    out = tmp_path / "bitstreams" / name
    assert sorted(p.name for p in out.iterdir()) == sorted(name + s for s in (".bit", ".hwh", ".json"))
    meta = json.loads((out / (name + ".json")).read_text())
    assert meta["schema"] == "pynq-fewshot-fl/bitstream/1"
    assert meta["tarch"] == json.loads((REPO_ROOT / "tensil_arch" / tarch).read_text())
    assert meta["clock_mhz"] == {"requested": float(clock), "actual": float(clock)}
    assert meta["timing"]["met"] is True and meta["tools"]["vivado"] == "2024.1"
    assert meta["tcu"]["instance"] == tcu[1:] and meta["rtl"]["top"] == top
    assert len(meta["rtl"]["sha256"]) == 64 and meta["tools"]["pynq_release"] == "3.1"


def test_generated_tcl_carries_pynq_parts_and_parameters(tmp_path):
    plan = plan_bitstream(REPO_ROOT / "tensil_arch/pynqz1_perf.tarch", _rtl(tmp_path, "pynqz1_perf.tarch"),
                          142.857, write_pynq_checkout(tmp_path / "PYNQ"), build_root=tmp_path / "b",
                          out_root=tmp_path / "o")
    build = prepare(plan)
    params = (build.parent / "params.tcl").read_text()
    parts = (build.parent / "pynq_base_parts.tcl").read_text()
    assert "set hwflow_clock_mhz 142.857" in params and "set hwflow_vivado_version 2024.1" in params
    assert "set hwflow_top top_pynqz1_perf" in params
    assert "proc create_hier_cell_video" in parts and "proc create_hier_cell_hdmi_out" in parts
    assert "iop_pmoda" not in parts  # only the video hierarchy and its callees
    assert parts.index("proc create_hier_cell_hdmi_out") < parts.index("proc create_hier_cell_video")
    assert "CONFIG.PCW_UIPARAM_DDR_PARTNO {MT41K256M16 RE-125}" in parts
    assert "xilinx.com:hls:pixel_unpack:1.0" in parts.split("hwflow_pynq_vlnvs")[1]
    assert build.read_text().splitlines()[-1].endswith("tensil_overlay.tcl}")


def test_fclk_options():
    assert fclk_options(125) == (125.0, (1, 8))
    actual, _ = fclk_options(150)
    assert abs(actual - 1000 / 7) < 1e-9 or abs(actual - 1000 / 6) < 1e-9


def test_negative_slack_is_loud_and_ships_nothing(tmp_path):
    result, _ = _run(tmp_path, "pynqz1_perf.tarch", 125, env={"FAKE_VIVADO_WNS": "-0.42"})
    assert result.returncode == 3
    assert "TIMING NOT MET at 125 MHz: WNS -0.420 ns" in result.stderr
    assert not (tmp_path / "bitstreams" / "pynqz1_perf_125mhz" / "pynqz1_perf_125mhz.bit").exists()


def test_negative_slack_allowed_is_recorded(tmp_path):
    result, _ = _run(tmp_path, "pynqz1_perf.tarch", 125, "--allow-negative-slack",
                     env={"FAKE_VIVADO_WNS": "-0.42"})
    assert result.returncode == 0 and "TIMING NOT MET" in result.stderr
    meta = json.loads((tmp_path / "bitstreams/pynqz1_perf_125mhz/pynqz1_perf_125mhz.json").read_text())
    assert meta["timing"] == {"wns_ns": -0.42, "whs_ns": 0.05, "met": False}


@pytest.mark.parametrize("env,message", [
    ({"FAKE_VIVADO_VERSION": "2023.2"}, "PYNQ 3.1 needs Vivado 2024.1, but"),
    ({"FAKE_VIVADO_MISSING_IP": "xilinx.com:ip:smartconnect:1.0"}, "IP not in the catalog"),
    ({"FAKE_VIVADO_FAIL_RUN": "synth_1"}, "Vivado failed (exit 4)"),
])
def test_vivado_error_paths(tmp_path, env, message):
    result, _ = _run(tmp_path, "pynqz1_perf.tarch", 125, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stdout + result.stderr


def test_without_vivado_names_the_version_and_generate_only_still_works(tmp_path):
    pynq = write_pynq_checkout(tmp_path / "PYNQ", vivado="2020.2", release="2.7.0")
    env = dict(os.environ, PATH="/usr/bin:/bin")
    base = [sys.executable, "-m", "hwflow", "bitstream", "--arch", "tensil_arch/pynqz1.tarch",
            "--pynq-dir", str(pynq), "--rtl", str(_rtl(tmp_path, "pynqz1.tarch")),
            "--build-dir", str(tmp_path / "build"), "--bitstreams-dir", str(tmp_path / "out")]
    result = subprocess.run(base, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "Vivado is not installed" in result.stderr and "PYNQ 2.7.0" in result.stderr
    assert "needs Vivado 2020.2" in result.stderr
    result = subprocess.run(base + ["--generate-only"], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0 and (tmp_path / "build/pynqz1_125mhz/build.tcl").is_file()


def test_plan_error_paths(tmp_path):
    tarch = REPO_ROOT / "tensil_arch/pynqz1.tarch"
    rtl8 = _rtl(tmp_path, "pynqz1.tarch")
    pynq = write_pynq_checkout(tmp_path / "PYNQ")
    with pytest.raises(ToolMissing, match="no PYNQ checkout named: pass PYNQ_DIR"):
        plan_bitstream(tarch, rtl8, 125, None)
    with pytest.raises(ToolMissing, match="is not a PYNQ checkout"):
        plan_bitstream(tarch, rtl8, 125, tmp_path)
    with pytest.raises(HwflowError, match="does not match .*pynqz1_perf.tarch: its memories are 128x2048"):
        plan_bitstream(REPO_ROOT / "tensil_arch/pynqz1_perf.tarch", rtl8, 125, pynq)
    with pytest.raises(HwflowError, match="outside what a PS7 FCLK gives"):
        plan_bitstream(tarch, rtl8, 300, pynq)
    with pytest.raises(HwflowError, match="bitstream name"):
        plan_bitstream(tarch, rtl8, 125, pynq, name="bad name")
    with pytest.raises(HwflowError, match="no Tensil RTL folder"):
        plan_bitstream(tarch, tmp_path / "nothing", 125, pynq)
    wide = write_tcu_rtl(tmp_path / "rtl128", "pynqz1", 128, 8192, 2048, data_bits=128)
    with pytest.raises(HwflowError, match=r"instruction_tdata \(128 bits, not 64\)"):
        plan_bitstream(tarch, wide, 125, pynq)
    broken = write_pynq_checkout(tmp_path / "PYNQ2", base_tcl="proc x {} {}\n")
    plan = plan_bitstream(tarch, rtl8, 125, broken, build_root=tmp_path / "b")
    with pytest.raises(HwflowError, match="defines no proc create_hier_cell_video"):
        prepare(plan)


def test_hls_ip_not_built_and_no_vitis(tmp_path):
    pynq = write_pynq_checkout(tmp_path / "PYNQ", hls_built=False)
    result, _ = _run(tmp_path, "pynqz1.tarch", 100, pynq=pynq)
    assert result.returncode == 2
    assert "PYNQ's HLS IP pixel_unpack are not built" in result.stderr
    assert "make -C" in result.stderr and "hls_ip" in result.stderr


def test_real_rtl_has_the_ports_the_recipe_connects():
    from hwflow.rtl import TCU_PORTS, find_rtl

    shared = REPO_ROOT.parent / "shared" / "rtl" / "tensil_custom_perf"
    if not shared.is_dir():
        pytest.skip("the shared Tensil RTL (../shared/rtl/tensil_custom_perf) is not here")
    ports = dict(find_rtl(shared).ports)
    assert {k: ports[k] for k in TCU_PORTS} == TCU_PORTS


@pytest.mark.skipif(not os.environ.get("HWFLOW_TEST_PYNQ_DIR"),
                    reason="set HWFLOW_TEST_PYNQ_DIR to a PYNQ checkout to run the recipe with its base.tcl")
def test_with_a_real_pynq_checkout(tmp_path):
    pynq = pathlib.Path(os.environ["HWFLOW_TEST_PYNQ_DIR"])
    version = next(line.split()[2] for line in (pynq / "boards/Pynq-Z1/base/base.tcl").read_text().splitlines()
                   if line.startswith("set scripts_vivado_version"))
    result, log = _run(tmp_path, "pynqz1_perf.tarch", 125, pynq=pynq,
                       env={"FAKE_VIVADO_VERSION": version})
    assert result.returncode == 0, result.stderr
    d = design_graph(log)
    assert d.dangling() == []
    assert d.intf_peer("/video/M_AXI") == "/ps7_0/S_AXI_HP0"
