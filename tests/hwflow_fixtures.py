"""Inputs for the hwflow tests, written by the tests: a Tensil-shaped RTL folder and a PYNQ
checkout whose base.tcl has the structure of PYNQ's (write_bd_tcl output: the Vivado version
check, the IP list, hierarchy procedures, create_root_design with the PS7 settings)."""

import pathlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

__all__ = ["write_tcu_rtl", "write_pynq_checkout", "design_graph", "Design"]

_PORTS = """  input         clock,
  input         reset,
  input  [%(d)d:0] instruction_tdata,
  input         instruction_tvalid,
  output        instruction_tready,
  input         instruction_tlast,
""" + "".join("""  output [31:0] m_axi_%(m)s_awaddr,
  output [%(d)d:0] m_axi_%(m)s_wdata,
  input  [%(d)d:0] m_axi_%(m)s_rdata,
""".replace("%(m)s", m) for m in ("dram0", "dram1"))


def write_tcu_rtl(folder: pathlib.Path, arch_stem: str, width: int, local: int, acc: int,
                  data_bits: int = 64) -> pathlib.Path:
    """top_<arch>.v with the TCU's port names (no logic) and its two bram_dp stubs."""
    folder.mkdir(parents=True, exist_ok=True)
    ports = (_PORTS % {"d": data_bits - 1}).rstrip().rstrip(",")
    (folder / ("top_%s.v" % arch_stem)).write_text(
        "module top_%s(\n%s\n);\n  assign instruction_tready = 1'b0;\nendmodule\n" % (arch_stem, ports))
    for depth in (local, acc):
        (folder / ("bram_dp_%dx%d.v" % (width, depth))).write_text(
            "module bram_dp_%dx%d (clka, doa);\ninput clka;\noutput [%d:0] doa;\nendmodule\n"
            % (width, depth, width - 1))
    return folder


_BASE_TCL = r"""# A base.tcl shaped like PYNQ's boards/Pynq-Z1/base/base.tcl (written for the tests)
set scripts_vivado_version %(vivado)s
set current_vivado_version [version -short]

set list_check_ips "\
xilinx.com:ip:processing_system7:5.5\
xilinx.com:ip:axi_dma:7.1\
xilinx.com:ip:axi_vdma:6.3\
xilinx.com:hls:pixel_unpack:1.0\
"

proc create_hier_cell_hdmi_out { parentCell nameHier } {
  set parentObj [get_bd_cells $parentCell]
  set oldCurInst [current_bd_instance .]
  current_bd_instance $parentObj
  set hier_obj [create_bd_cell -type hier $nameHier]
  current_bd_instance $hier_obj
  create_bd_intf_pin -mode Master -vlnv digilentinc.com:interface:tmds_rtl:1.0 TMDS_out
  create_bd_intf_pin -mode Slave -vlnv xilinx.com:interface:axis_rtl:1.0 in_stream
  create_bd_pin -dir O -from 0 -to 0 hdmi_out_hpd
  set pixel_unpack [ create_bd_cell -type ip -vlnv xilinx.com:hls:pixel_unpack:1.0 pixel_unpack ]
  set_property -dict [list \
    CONFIG.C_NOTE {a {braced} value} \
  ] $pixel_unpack
  connect_bd_intf_net -intf_net Conn1 [get_bd_intf_pins in_stream] [get_bd_intf_pins pixel_unpack/stream_in_64]
  current_bd_instance $oldCurInst
}

proc create_hier_cell_video { parentCell nameHier } {
  variable script_folder
  set parentObj [get_bd_cells $parentCell]
  set parentType [get_property TYPE $parentObj]
  if { $parentType ne "hier" } {
     return
  }
  set oldCurInst [current_bd_instance .]
  current_bd_instance $parentObj
  set hier_obj [create_bd_cell -type hier $nameHier]
  current_bd_instance $hier_obj
  create_bd_intf_pin -mode Master -vlnv xilinx.com:interface:iic_rtl:1.0 DDC
  create_bd_intf_pin -mode Master -vlnv xilinx.com:interface:aximm_rtl:1.0 M_AXI
  create_bd_intf_pin -mode Slave -vlnv xilinx.com:interface:aximm_rtl:1.0 S_AXI
  create_bd_intf_pin -mode Slave -vlnv digilentinc.com:interface:tmds_rtl:1.0 TMDS_in
  create_bd_intf_pin -mode Master -vlnv digilentinc.com:interface:tmds_rtl:1.0 TMDS_out
  create_bd_pin -dir I -type clk clk_100M
  create_bd_pin -dir I clk_142M
  create_bd_pin -dir I -type clk clk_200M
  create_bd_pin -dir O -from 0 -to 0 hdmi_in_hpd
  create_bd_pin -dir O -from 0 -to 0 hdmi_out_hpd
  create_bd_pin -dir I -from 0 -to 0 -type rst ic_resetn_clk100M
  create_bd_pin -dir I -from 0 -to 0 -type rst ic_resetn_clk142M
  create_bd_pin -dir I -from 0 -to 0 -type rst periph_resetn_clk100M
  create_bd_pin -dir I -from 0 -to 0 -type rst periph_resetn_clk142M
  create_bd_pin -dir I -type rst system_resetn
  create_bd_pin -dir O -from 5 -to 0 video_irq
  set axi_vdma [ create_bd_cell -type ip -vlnv xilinx.com:ip:axi_vdma:6.3 axi_vdma ]
  create_hier_cell_hdmi_out $hier_obj hdmi_out
  connect_bd_intf_net -intf_net Conn2 [get_bd_intf_pins TMDS_out] [get_bd_intf_pins hdmi_out/TMDS_out]
  connect_bd_intf_net -intf_net vdma_out [get_bd_intf_pins axi_vdma/M_AXIS_MM2S] [get_bd_intf_pins hdmi_out/in_stream]
  current_bd_instance $oldCurInst
}

proc create_hier_cell_iop_pmoda { parentCell nameHier } {
  # a hierarchy the overlay does not use
  set hier_obj [create_bd_cell -type hier $nameHier]
}

proc create_root_design { parentCell } {
  set ps7_0 [ create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7:5.5 ps7_0 ]
  set_property -dict [list \
    CONFIG.PCW_ACT_FPGA1_PERIPHERAL_FREQMHZ {142.857132} \
    CONFIG.PCW_CRYSTAL_PERIPHERAL_FREQMHZ {50} \
    CONFIG.PCW_FPGA3_PERIPHERAL_FREQMHZ {100} \
    CONFIG.PCW_UIPARAM_DDR_PARTNO {MT41K256M16 RE-125} \
    CONFIG.PCW_USE_S_AXI_HP0 {1} \
  ] $ps7_0
  create_hier_cell_iop_pmoda [current_bd_instance .] iop_pmoda
  create_hier_cell_video [current_bd_instance .] video
}

create_root_design ""
"""


def write_pynq_checkout(root: pathlib.Path, vivado: str = "2024.1", release: str = "3.1",
                        hls_built: bool = True, base_tcl: Optional[str] = None) -> pathlib.Path:
    base = root / "boards" / "Pynq-Z1" / "base"
    base.mkdir(parents=True, exist_ok=True)
    (base / "base.tcl").write_text(base_tcl if base_tcl is not None else _BASE_TCL % {"vivado": vivado})
    (root / "sdbuild").mkdir(exist_ok=True)
    (root / "sdbuild" / "Makefile").write_text("VERSION := %s\nKERNEL_VERSION := %s\n" % (release, vivado))
    ip = root / "boards" / "ip" / "hls" / "pixel_unpack" / "solution1" / "impl" / "ip"
    ip.mkdir(parents=True, exist_ok=True)
    if hls_built:
        (ip / "xilinx_com_hls_pixel_unpack_1_0.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return root


@dataclass
class Design:
    """The block design a recipe built, reconstructed from the fake Vivado's command log."""

    calls: List[List[str]]
    cells: Dict[str, Tuple[str, str]] = field(default_factory=dict)   # path -> (type, vlnv/ref)
    pins: Set[str] = field(default_factory=set)         # pins of hierarchies and top-level ports
    props: Dict[Tuple[str, str], str] = field(default_factory=dict)
    intf_nets: List[Set[str]] = field(default_factory=list)
    nets: List[Set[str]] = field(default_factory=list)
    addresses: List[List[str]] = field(default_factory=list)

    def commands(self, name: str) -> List[List[str]]:
        return [c[1:] for c in self.calls if c[0] == name]

    def intf_peer(self, pin: str) -> str:
        """The other end of the interface net on `pin` outside the pin's own cell (a hierarchy's
        pin also has a net inside it); exactly one such net, with two ends."""
        inside = pin.rsplit("/", 1)[0] + "/"
        nets = [n for n in self.intf_nets if pin in n
                and not any(e != pin and e.startswith(inside) for e in n)]
        assert len(nets) == 1 and len(nets[0]) == 2, "%s is on %s" % (pin, nets)
        return next(iter(nets[0] - {pin}))

    def net_of(self, pin: str) -> Set[str]:
        nets = [n for n in self.nets if pin in n]
        assert len(nets) == 1, "%s is on %d nets" % (pin, len(nets))
        return nets[0]

    def through_smartconnect(self, pin: str) -> str:
        """Where an AXI master reaches: pin -> <smc>/S00_AXI, <smc>/M00_AXI -> result."""
        entry = self.intf_peer(pin)
        cell, port = entry.rsplit("/", 1)
        assert self.cells[cell][1].startswith("xilinx.com:ip:smartconnect:"), entry
        assert port == "S00_AXI"
        return self.intf_peer(cell + "/M00_AXI")

    def dangling(self) -> List[str]:
        """Net ends on a hierarchy or the top level that nothing created (a misspelt pin)."""
        bad = []
        for net in self.intf_nets + self.nets:
            for end in net:
                cell = end.rsplit("/", 1)[0] or "/"
                if (cell == "/" or self.cells.get(cell, ("",))[0] == "hier") and end not in self.pins:
                    bad.append(end)
                elif cell != "/" and cell not in self.cells:
                    bad.append(end)
        return sorted(set(bad))


def design_graph(log: pathlib.Path) -> Design:
    calls = [[f.replace("\\n", "\n").replace("\\t", "\t") for f in line.rstrip("\n").split("\t")]
             for line in log.read_text().splitlines() if line]
    design = Design(calls)
    for call in calls:
        name, args = call[0], call[1:]
        if name == "create_bd_cell":
            kind = args[args.index("-type") + 1]
            ref = (args[args.index("-vlnv") + 1] if "-vlnv" in args else
                   args[args.index("-reference") + 1] if "-reference" in args else "")
            design.cells[args[0]] = (kind, ref)
        elif name in ("create_bd_pin", "create_bd_intf_pin", "create_bd_port", "create_bd_intf_port"):
            design.pins.add(args[0])
        elif name == "set_property":
            design.props[(args[0], args[1])] = args[2]
        elif name == "connect_bd_intf_net":
            design.intf_nets.append(set(args))
        elif name == "connect_bd_net":
            design.nets.append(set(args))
        elif name == "assign_bd_address":
            design.addresses.append(args)
    return design
