# The PYNQ-Z1 overlay of the few-shot demonstrator, built in Vivado batch mode (no GUI).
#
# Run by `python -m hwflow bitstream` (make bitstream), which writes build/bitstream/<name>/
# build.tcl: it sets the hwflow_* variables below, sources pynq_base_parts.tcl (the PYNQ base
# design's `video` hierarchy procedures and PS7 settings, read from the user's PYNQ checkout)
# and then this file. Exit status: 0 built, 2 wrong tool/IP, 3 timing not met, 4 a run failed.
#
# Block design (names are what the board runtime and PYNQ's drivers look up in the .hwh):
#   ps7_0               Zynq PS7 with PYNQ-Z1's base settings; FCLK0 100 MHz (control),
#                       FCLK1 142.857 MHz (video VDMA, HP0), FCLK2 200 MHz (video in),
#                       FCLK3 = hwflow_clock_mhz (the TCU, its DMA and HP1-3)
#   video               PYNQ base's HDMI in/out hierarchy (VDMA on HP0), as pynq.lib.video expects
#   <top>_0             the Tensil TCU as a module reference of Tensil's RTL
#   axi_dma_0           AXI DMA, MM2S only, 64 bits: the TCU's instruction stream
#   axi_smc_dram0/1     TCU m_axi_dram0 -> S_AXI_HP1, m_axi_dram1 -> S_AXI_HP3 (64-bit)
#   axi_smc_dma         axi_dma_0 M_AXI_MM2S -> S_AXI_HP2
#   axi_smc_gp1         M_AXI_GP1 -> axi_dma_0 S_AXI_LITE (0x8040_0000, TCU clock domain)
#   ps7_0_axi_periph    M_AXI_GP0 -> video, btns_gpio, switches_gpio, system_interrupts
#   btns_gpio           AXI GPIO: channel 1 the 4 board buttons, channel 2 six PMOD JA buttons
#   switches_gpio       AXI GPIO: the 2 slide switches
#   system_interrupts   AXI interrupt controller (video, buttons, switches) -> IRQ_F2P

proc hwflow_fail {code message} {
    puts "ERROR: hwflow: $message"
    exit $code
}

proc hwflow_ip {name} {
    global hwflow_ip_vlnv
    return [dict get $hwflow_ip_vlnv $name]
}

# --- 1. the tool: the Vivado release this PYNQ checkout's scripts were written with ----------
set hwflow_found_vivado [version -short]
if {[string first $hwflow_vivado_version $hwflow_found_vivado] != 0} {
    hwflow_fail 2 "this is Vivado $hwflow_found_vivado; PYNQ $hwflow_pynq_release needs Vivado $hwflow_vivado_version"
}

# --- 2. project, Tensil RTL, IP catalog ----------------------------------------------------------
create_project -force $hwflow_name [file join $hwflow_build_dir vivado] -part $hwflow_part
set_property ip_repo_paths [list $hwflow_pynq_ip_repo] [current_project]
update_ip_catalog
add_files -norecurse $hwflow_rtl_files
update_compile_order -fileset sources_1

set hwflow_missing_ip {}
foreach vlnv [concat [dict values $hwflow_ip_vlnv] $hwflow_pynq_vlnvs] {
    if {[get_ipdefs -all $vlnv] eq ""} {
        lappend hwflow_missing_ip $vlnv
    }
}
if {$hwflow_missing_ip ne ""} {
    hwflow_fail 2 "IP not in the catalog: $hwflow_missing_ip (PYNQ's HLS IP are built with `make -C <PYNQ>/boards/Pynq-Z1/base hls_ip`)"
}

# --- 3. block design ---------------------------------------------------------------------------
create_bd_design $hwflow_name
current_bd_instance /

# Processing system: PYNQ-Z1's DDR/MIO/clock settings from the base design, then ours.
set ps7 [create_bd_cell -type ip -vlnv [hwflow_ip processing_system7] ps7_0]
set_property -dict $hwflow_pynq_ps7_config $ps7
set_property -dict [list \
    CONFIG.PCW_FPGA3_PERIPHERAL_FREQMHZ $hwflow_clock_mhz \
    CONFIG.PCW_EN_CLK3_PORT {1} \
    CONFIG.PCW_USE_M_AXI_GP0 {1} \
    CONFIG.PCW_USE_M_AXI_GP1 {1} \
    CONFIG.PCW_USE_S_AXI_HP0 {1} \
    CONFIG.PCW_USE_S_AXI_HP1 {1} \
    CONFIG.PCW_USE_S_AXI_HP2 {1} \
    CONFIG.PCW_USE_S_AXI_HP3 {1} \
    CONFIG.PCW_S_AXI_HP1_DATA_WIDTH {64} \
    CONFIG.PCW_S_AXI_HP2_DATA_WIDTH {64} \
    CONFIG.PCW_S_AXI_HP3_DATA_WIDTH {64} \
    CONFIG.PCW_USE_FABRIC_INTERRUPT {1} \
    CONFIG.PCW_IRQ_F2P_INTR {1} \
    CONFIG.PCW_I2C0_PERIPHERAL_ENABLE {1} \
] $ps7
create_bd_intf_port -mode Master -vlnv xilinx.com:interface:ddrx_rtl:1.0 DDR
create_bd_intf_port -mode Master -vlnv xilinx.com:display_processing_system7:fixedio_rtl:1.0 FIXED_IO
connect_bd_intf_net [get_bd_intf_ports DDR] [get_bd_intf_pins ps7_0/DDR]
connect_bd_intf_net [get_bd_intf_ports FIXED_IO] [get_bd_intf_pins ps7_0/FIXED_IO]

# Resets, one per clock domain.
foreach rst {rst_ps7_0_fclk0 rst_ps7_0_fclk1 rst_tcu} {
    create_bd_cell -type ip -vlnv [hwflow_ip proc_sys_reset] $rst
}

# Board I/O: buttons (+ PMOD JA buttons), switches, HDMI.
set btns [create_bd_cell -type ip -vlnv [hwflow_ip axi_gpio] btns_gpio]
set_property -dict [list \
    CONFIG.C_IS_DUAL {1} \
    CONFIG.C_ALL_INPUTS {1} CONFIG.C_GPIO_WIDTH {4} \
    CONFIG.C_ALL_INPUTS_2 {1} CONFIG.C_GPIO2_WIDTH {6} \
    CONFIG.C_INTERRUPT_PRESENT {1} \
] $btns
set sws [create_bd_cell -type ip -vlnv [hwflow_ip axi_gpio] switches_gpio]
set_property -dict [list \
    CONFIG.C_IS_DUAL {0} CONFIG.C_ALL_INPUTS {1} CONFIG.C_GPIO_WIDTH {2} CONFIG.C_INTERRUPT_PRESENT {1} \
] $sws
create_bd_intf_port -mode Master -vlnv xilinx.com:interface:gpio_rtl:1.0 btns_4bits
create_bd_intf_port -mode Master -vlnv xilinx.com:interface:gpio_rtl:1.0 pmoda_btns
create_bd_intf_port -mode Master -vlnv xilinx.com:interface:gpio_rtl:1.0 sws_2bits
connect_bd_intf_net [get_bd_intf_ports btns_4bits] [get_bd_intf_pins btns_gpio/GPIO]
connect_bd_intf_net [get_bd_intf_ports pmoda_btns] [get_bd_intf_pins btns_gpio/GPIO2]
connect_bd_intf_net [get_bd_intf_ports sws_2bits] [get_bd_intf_pins switches_gpio/GPIO]

create_hier_cell_video [current_bd_instance .] video
create_bd_intf_port -mode Slave -vlnv digilentinc.com:interface:tmds_rtl:1.0 hdmi_in
create_bd_intf_port -mode Master -vlnv xilinx.com:interface:iic_rtl:1.0 hdmi_in_ddc
create_bd_intf_port -mode Master -vlnv digilentinc.com:interface:tmds_rtl:1.0 hdmi_out
create_bd_intf_port -mode Master -vlnv xilinx.com:interface:iic_rtl:1.0 hdmi_out_ddc
create_bd_port -dir O -from 0 -to 0 hdmi_in_hpd
create_bd_port -dir O -from 0 -to 0 hdmi_out_hpd
connect_bd_intf_net [get_bd_intf_ports hdmi_in] [get_bd_intf_pins video/TMDS_in]
connect_bd_intf_net [get_bd_intf_ports hdmi_in_ddc] [get_bd_intf_pins video/DDC]
connect_bd_intf_net [get_bd_intf_ports hdmi_out] [get_bd_intf_pins video/TMDS_out]
connect_bd_intf_net [get_bd_intf_ports hdmi_out_ddc] [get_bd_intf_pins ps7_0/IIC_0]
connect_bd_net [get_bd_pins video/hdmi_in_hpd] [get_bd_ports hdmi_in_hpd]
connect_bd_net [get_bd_pins video/hdmi_out_hpd] [get_bd_ports hdmi_out_hpd]
connect_bd_intf_net [get_bd_intf_pins video/M_AXI] [get_bd_intf_pins ps7_0/S_AXI_HP0]

# Control bus (GP0, FCLK0): video registers, GPIOs, interrupt controller.
set periph [create_bd_cell -type ip -vlnv [hwflow_ip axi_interconnect] ps7_0_axi_periph]
set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {4}] $periph
connect_bd_intf_net [get_bd_intf_pins ps7_0/M_AXI_GP0] [get_bd_intf_pins ps7_0_axi_periph/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins ps7_0_axi_periph/M00_AXI] [get_bd_intf_pins video/S_AXI]
connect_bd_intf_net [get_bd_intf_pins ps7_0_axi_periph/M01_AXI] [get_bd_intf_pins btns_gpio/S_AXI]
connect_bd_intf_net [get_bd_intf_pins ps7_0_axi_periph/M02_AXI] [get_bd_intf_pins switches_gpio/S_AXI]
connect_bd_intf_net [get_bd_intf_pins ps7_0_axi_periph/M03_AXI] [get_bd_intf_pins system_interrupts/s_axi]

set intc [create_bd_cell -type ip -vlnv [hwflow_ip axi_intc] system_interrupts]
set irqs [create_bd_cell -type ip -vlnv [hwflow_ip xlconcat] concat_interrupts]
set_property CONFIG.NUM_PORTS {3} $irqs
connect_bd_net [get_bd_pins video/video_irq] [get_bd_pins concat_interrupts/In0]
connect_bd_net [get_bd_pins btns_gpio/ip2intc_irpt] [get_bd_pins concat_interrupts/In1]
connect_bd_net [get_bd_pins switches_gpio/ip2intc_irpt] [get_bd_pins concat_interrupts/In2]
connect_bd_net [get_bd_pins concat_interrupts/dout] [get_bd_pins system_interrupts/intr]
connect_bd_net [get_bd_pins system_interrupts/irq] [get_bd_pins ps7_0/IRQ_F2P]

# The Tensil TCU: instructions from the DMA, DRAM0/DRAM1 on their own HP ports.
set tcu_cell ${hwflow_top}_0
create_bd_cell -type module -reference $hwflow_top $tcu_cell
set dma [create_bd_cell -type ip -vlnv [hwflow_ip axi_dma] axi_dma_0]
set_property -dict [list \
    CONFIG.c_include_sg {0} \
    CONFIG.c_include_s2mm {0} \
    CONFIG.c_include_mm2s {1} \
    CONFIG.c_m_axi_mm2s_data_width {64} \
    CONFIG.c_m_axis_mm2s_tdata_width {64} \
    CONFIG.c_mm2s_burst_size {256} \
    CONFIG.c_sg_length_width {26} \
] $dma
foreach smc {axi_smc_dram0 axi_smc_dram1 axi_smc_dma axi_smc_gp1} {
    set cell [create_bd_cell -type ip -vlnv [hwflow_ip smartconnect] $smc]
    set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $cell
}
connect_bd_intf_net [get_bd_intf_pins axi_dma_0/M_AXIS_MM2S] [get_bd_intf_pins $tcu_cell/instruction]
connect_bd_intf_net [get_bd_intf_pins $tcu_cell/m_axi_dram0] [get_bd_intf_pins axi_smc_dram0/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_smc_dram0/M00_AXI] [get_bd_intf_pins ps7_0/S_AXI_HP1]
connect_bd_intf_net [get_bd_intf_pins $tcu_cell/m_axi_dram1] [get_bd_intf_pins axi_smc_dram1/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_smc_dram1/M00_AXI] [get_bd_intf_pins ps7_0/S_AXI_HP3]
connect_bd_intf_net [get_bd_intf_pins axi_dma_0/M_AXI_MM2S] [get_bd_intf_pins axi_smc_dma/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_smc_dma/M00_AXI] [get_bd_intf_pins ps7_0/S_AXI_HP2]
connect_bd_intf_net [get_bd_intf_pins ps7_0/M_AXI_GP1] [get_bd_intf_pins axi_smc_gp1/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_smc_gp1/M00_AXI] [get_bd_intf_pins axi_dma_0/S_AXI_LITE]

# Clocks.
connect_bd_net [get_bd_pins ps7_0/FCLK_CLK0] [get_bd_pins ps7_0/M_AXI_GP0_ACLK] \
    [get_bd_pins rst_ps7_0_fclk0/slowest_sync_clk] [get_bd_pins video/clk_100M] \
    [get_bd_pins ps7_0_axi_periph/ACLK] [get_bd_pins ps7_0_axi_periph/S00_ACLK] \
    [get_bd_pins ps7_0_axi_periph/M00_ACLK] [get_bd_pins ps7_0_axi_periph/M01_ACLK] \
    [get_bd_pins ps7_0_axi_periph/M02_ACLK] [get_bd_pins ps7_0_axi_periph/M03_ACLK] \
    [get_bd_pins btns_gpio/s_axi_aclk] [get_bd_pins switches_gpio/s_axi_aclk] \
    [get_bd_pins system_interrupts/s_axi_aclk]
connect_bd_net [get_bd_pins ps7_0/FCLK_CLK1] [get_bd_pins ps7_0/S_AXI_HP0_ACLK] \
    [get_bd_pins rst_ps7_0_fclk1/slowest_sync_clk] [get_bd_pins video/clk_142M]
connect_bd_net [get_bd_pins ps7_0/FCLK_CLK2] [get_bd_pins video/clk_200M]
connect_bd_net [get_bd_pins ps7_0/FCLK_CLK3] [get_bd_pins $tcu_cell/clock] \
    [get_bd_pins rst_tcu/slowest_sync_clk] [get_bd_pins ps7_0/M_AXI_GP1_ACLK] \
    [get_bd_pins ps7_0/S_AXI_HP1_ACLK] [get_bd_pins ps7_0/S_AXI_HP2_ACLK] \
    [get_bd_pins ps7_0/S_AXI_HP3_ACLK] [get_bd_pins axi_dma_0/m_axi_mm2s_aclk] \
    [get_bd_pins axi_dma_0/s_axi_lite_aclk] [get_bd_pins axi_smc_dram0/aclk] \
    [get_bd_pins axi_smc_dram1/aclk] [get_bd_pins axi_smc_dma/aclk] [get_bd_pins axi_smc_gp1/aclk]

# Resets (the TCU's reset is active low: Tensil's AXI wrapper inverts it).
connect_bd_net [get_bd_pins ps7_0/FCLK_RESET0_N] [get_bd_pins rst_ps7_0_fclk0/ext_reset_in] \
    [get_bd_pins rst_ps7_0_fclk1/ext_reset_in] [get_bd_pins rst_tcu/ext_reset_in] \
    [get_bd_pins video/system_resetn]
connect_bd_net [get_bd_pins rst_ps7_0_fclk0/interconnect_aresetn] \
    [get_bd_pins ps7_0_axi_periph/ARESETN] [get_bd_pins video/ic_resetn_clk100M]
connect_bd_net [get_bd_pins rst_ps7_0_fclk0/peripheral_aresetn] \
    [get_bd_pins ps7_0_axi_periph/S00_ARESETN] [get_bd_pins ps7_0_axi_periph/M00_ARESETN] \
    [get_bd_pins ps7_0_axi_periph/M01_ARESETN] [get_bd_pins ps7_0_axi_periph/M02_ARESETN] \
    [get_bd_pins ps7_0_axi_periph/M03_ARESETN] [get_bd_pins video/periph_resetn_clk100M] \
    [get_bd_pins btns_gpio/s_axi_aresetn] [get_bd_pins switches_gpio/s_axi_aresetn] \
    [get_bd_pins system_interrupts/s_axi_aresetn]
connect_bd_net [get_bd_pins rst_ps7_0_fclk1/interconnect_aresetn] [get_bd_pins video/ic_resetn_clk142M]
connect_bd_net [get_bd_pins rst_ps7_0_fclk1/peripheral_aresetn] [get_bd_pins video/periph_resetn_clk142M]
connect_bd_net [get_bd_pins rst_tcu/peripheral_aresetn] [get_bd_pins $tcu_cell/reset] \
    [get_bd_pins axi_dma_0/axi_resetn] [get_bd_pins axi_smc_dram0/aresetn] \
    [get_bd_pins axi_smc_dram1/aresetn] [get_bd_pins axi_smc_dma/aresetn] \
    [get_bd_pins axi_smc_gp1/aresetn]

# Address map: the TCU and its DMA see the 512 MiB of DDR; the PS sees the registers.
foreach {space segment} [list \
    $tcu_cell/m_axi_dram0 ps7_0/S_AXI_HP1/HP1_DDR_LOWOCM \
    $tcu_cell/m_axi_dram1 ps7_0/S_AXI_HP3/HP3_DDR_LOWOCM \
    axi_dma_0/Data_MM2S ps7_0/S_AXI_HP2/HP2_DDR_LOWOCM] {
    assign_bd_address -offset 0x00000000 -range 0x20000000 \
        -target_address_space [get_bd_addr_spaces $space] [get_bd_addr_segs $segment] -force
}
foreach {offset segment} {
    0x80400000 axi_dma_0/S_AXI_LITE/Reg
    0x41200000 switches_gpio/S_AXI/Reg
    0x41210000 btns_gpio/S_AXI/Reg
    0x41800000 system_interrupts/S_AXI/Reg
} {
    assign_bd_address -offset $offset -range 0x00010000 \
        -target_address_space [get_bd_addr_spaces ps7_0/Data] [get_bd_addr_segs $segment] -force
}
assign_bd_address

validate_bd_design
save_bd_design

# --- 4. synthesis, implementation, timing --------------------------------------------------------
set hwflow_bd [get_files $hwflow_name.bd]
generate_target all $hwflow_bd
add_files -norecurse [make_wrapper -files $hwflow_bd -top]
set_property top ${hwflow_name}_wrapper [current_fileset]
add_files -fileset constrs_1 -norecurse $hwflow_xdc
update_compile_order -fileset sources_1

launch_runs synth_1 -jobs $hwflow_jobs
wait_on_run synth_1
if {[get_property PROGRESS [get_runs synth_1]] ne "100%"} {
    hwflow_fail 4 "synthesis failed: [get_property STATUS [get_runs synth_1]]"
}
launch_runs impl_1 -jobs $hwflow_jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    hwflow_fail 4 "implementation failed: [get_property STATUS [get_runs impl_1]]"
}
open_run impl_1
report_timing_summary -file [file join $hwflow_build_dir timing_summary.rpt]
report_utilization -file [file join $hwflow_build_dir utilization.rpt]
set hwflow_wns [get_property SLACK [get_timing_paths -setup -max_paths 1 -nworst 1]]
set hwflow_whs [get_property SLACK [get_timing_paths -hold -max_paths 1 -nworst 1]]
set hwflow_actual_mhz [get_property CONFIG.PCW_ACT_FPGA3_PERIPHERAL_FREQMHZ [get_bd_cells ps7_0]]
set hwflow_timing_met [expr {$hwflow_wns >= 0 && $hwflow_whs >= 0}]

set result [open [file join $hwflow_build_dir result.json] w]
puts $result "{\"vivado\": \"$hwflow_found_vivado\", \"wns_ns\": $hwflow_wns, \"whs_ns\": $hwflow_whs,"
puts $result " \"actual_clock_mhz\": $hwflow_actual_mhz, \"timing_met\": [expr {$hwflow_timing_met ? "true" : "false"}]}"
close $result

if {!$hwflow_timing_met} {
    puts "ERROR: hwflow: TIMING NOT MET at $hwflow_clock_mhz MHz: WNS $hwflow_wns ns, WHS $hwflow_whs ns (see timing_summary.rpt)"
    if {!$hwflow_allow_negative_slack} {
        hwflow_fail 3 "no bitstream written; lower the clock or allow a negative slack explicitly"
    }
}

# --- 5. outputs: <name>.bit and <name>.hwh side by side, as pynq.Overlay expects -----------------
file mkdir $hwflow_out_dir
write_bitstream -force [file join $hwflow_out_dir $hwflow_name.bit]
set hwflow_hwh [lindex [get_files -all -of_objects $hwflow_bd $hwflow_name.hwh] 0]
if {$hwflow_hwh eq ""} {
    hwflow_fail 4 "Vivado produced no $hwflow_name.hwh"
}
file copy -force $hwflow_hwh [file join $hwflow_out_dir $hwflow_name.hwh]
puts "hwflow: wrote [file join $hwflow_out_dir $hwflow_name.bit] and .hwh"
exit 0
