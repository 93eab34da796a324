# Vivado's TCL commands as the overlay recipe and PYNQ's base-design procedures use them, for
# tests where Vivado cannot run. Each call appends one record (command and arguments, tab
# separated) to $env(FAKE_VIVADO_LOG) and returns what Vivado would: objects are named by their
# hierarchical paths, runs finish at 100%, timing slack comes from FAKE_VIVADO_WNS/WHS, IP named
# in FAKE_VIVADO_MISSING_IP is absent from the catalog, and write_bitstream writes a file.

set fake_log [open $env(FAKE_VIVADO_LOG) a]
set fake_cur "/"
array set fake_cell_type {/ hier}
array set fake_props {}
set fake_project_dir ""
set fake_project_name ""
set fake_bd ""

proc fake_record {cmd args} {
    global fake_log
    set fields [list $cmd]
    foreach a $args {
        lappend fields [string map [list "\\" "\\\\" "\t" "\\t" "\n" "\\n"] $a]
    }
    puts $fake_log [join $fields "\t"]
    flush $fake_log
}

proc fake_env {name default} {
    global env
    if {[info exists env($name)]} { return $env($name) }
    return $default
}

proc fake_path {name} {
    global fake_cur
    if {[string index $name 0] eq "/"} { return $name }
    if {$fake_cur eq "/"} { return "/$name" }
    return "$fake_cur/$name"
}

proc fake_last_word {arglist} {
    # the object argument of commands like `get_bd_pins -quiet NAME`
    set names {}
    foreach a $arglist {
        if {[string index $a 0] ne "-"} { lappend names $a }
    }
    return $names
}

proc version {args} { fake_record version {*}$args; return [fake_env FAKE_VIVADO_VERSION 2024.1] }
proc create_project {args} {
    global fake_project_dir fake_project_name
    fake_record create_project {*}$args
    set words [fake_last_word $args]
    set fake_project_name [lindex $words 0]
    set fake_project_dir [lindex $words 1]
    file mkdir $fake_project_dir
    return $fake_project_name
}
proc current_project {args} { global fake_project_name; return $fake_project_name }
proc get_projects {args} { return "" }
proc update_ip_catalog {args} { fake_record update_ip_catalog {*}$args }
proc add_files {args} { fake_record add_files {*}$args }
proc import_files {args} { fake_record import_files {*}$args }
proc update_compile_order {args} { fake_record update_compile_order {*}$args }
proc current_fileset {args} { return sources_1 }
proc set_msg_config {args} { }
proc get_ipdefs {args} {
    set vlnv [lindex $args end]
    fake_record get_ipdefs {*}$args
    if {[lsearch -exact [fake_env FAKE_VIVADO_MISSING_IP ""] $vlnv] >= 0} { return "" }
    return $vlnv
}
namespace eval common {
    proc send_gid_msg {args} { fake_record send_gid_msg {*}$args; puts [lindex $args end] }
}

proc create_bd_design {name} {
    global fake_bd
    fake_record create_bd_design $name
    set fake_bd $name
    return $name
}
proc current_bd_design {args} { global fake_bd; return $fake_bd }
proc current_bd_instance {args} {
    global fake_cur
    if {[llength $args] == 0 || [lindex $args 0] eq "."} { return $fake_cur }
    set fake_cur [fake_path [lindex $args 0]]
    fake_record current_bd_instance $fake_cur
    return $fake_cur
}
proc get_bd_cells {args} {
    set names [fake_last_word $args]
    if {$names eq ""} { return "" }
    set out {}
    foreach n $names { lappend out [fake_path $n] }
    return $out
}
proc create_bd_cell {args} {
    global fake_cell_type
    set type ""
    set i [lsearch -exact $args -type]
    if {$i >= 0} { set type [lindex $args [expr {$i + 1}]] }
    set path [fake_path [lindex $args end]]
    set fake_cell_type($path) $type
    fake_record create_bd_cell $path {*}[lrange $args 0 end-1]
    return $path
}
proc fake_objects {kind args} {
    set out {}
    foreach n [fake_last_word $args] { lappend out [fake_path $n] }
    return $out
}
proc get_bd_pins {args} { return [fake_objects pin {*}$args] }
proc get_bd_intf_pins {args} { return [fake_objects intf_pin {*}$args] }
proc get_bd_ports {args} { return [fake_objects port {*}$args] }
proc get_bd_intf_ports {args} { return [fake_objects intf_port {*}$args] }
proc get_bd_nets {args} { return [fake_objects net {*}$args] }
proc get_bd_intf_nets {args} { return [fake_objects intf_net {*}$args] }
proc get_bd_addr_spaces {args} { return [fake_objects space {*}$args] }
proc get_bd_addr_segs {args} { return [fake_objects seg {*}$args] }
proc create_bd_pin {args} { set p [fake_path [lindex $args end]]; fake_record create_bd_pin $p {*}[lrange $args 0 end-1]; return $p }
proc create_bd_intf_pin {args} { set p [fake_path [lindex $args end]]; fake_record create_bd_intf_pin $p {*}[lrange $args 0 end-1]; return $p }
proc create_bd_port {args} { set p [fake_path [lindex $args end]]; fake_record create_bd_port $p {*}[lrange $args 0 end-1]; return $p }
proc create_bd_intf_port {args} { set p [fake_path [lindex $args end]]; fake_record create_bd_intf_port $p {*}[lrange $args 0 end-1]; return $p }
proc connect_bd_intf_net {args} {
    set i [lsearch -exact $args -intf_net]
    if {$i >= 0} { set args [lreplace $args $i [expr {$i + 1}]] }
    fake_record connect_bd_intf_net {*}[concat {*}$args]
}
proc connect_bd_net {args} {
    set i [lsearch -exact $args -net]
    if {$i >= 0} { set args [lreplace $args $i [expr {$i + 1}]] }
    fake_record connect_bd_net {*}[concat {*}$args]
}
proc assign_bd_address {args} { fake_record assign_bd_address {*}[concat {*}$args] }
proc validate_bd_design {args} { fake_record validate_bd_design }
proc save_bd_design {args} { fake_record save_bd_design }
proc regenerate_bd_layout {args} { }

proc set_property {args} {
    global fake_props
    set args [lsearch -all -inline -not -exact $args -quiet]
    if {[lindex $args 0] eq "-dict"} {
        set pairs [lindex $args 1]
        set objects [lrange $args 2 end]
    } else {
        set pairs [list [lindex $args 0] [lindex $args 1]]
        set objects [lrange $args 2 end]
    }
    foreach obj [concat {*}$objects] {
        foreach {key value} $pairs {
            set fake_props($obj,$key) $value
            fake_record set_property $obj $key $value
        }
    }
}
proc get_property {key obj} {
    global fake_props fake_cell_type
    switch -- $key {
        TYPE { if {[info exists fake_cell_type($obj)] && $fake_cell_type($obj) ne "hier"} { return ip }; return hier }
        NAME { return [lindex [split $obj /] end] }
        PROGRESS { if {$obj eq [fake_env FAKE_VIVADO_FAIL_RUN ""]} { return "50%" }; return "100%" }
        STATUS { return "fake run status" }
        SLACK { if {$obj eq "hold_path"} { return [fake_env FAKE_VIVADO_WHS 0.050] }; return [fake_env FAKE_VIVADO_WNS 0.250] }
        CONFIG.PCW_ACT_FPGA3_PERIPHERAL_FREQMHZ {
            return [format %.6f [fake_env FAKE_VIVADO_ACT_MHZ $fake_props($obj,CONFIG.PCW_FPGA3_PERIPHERAL_FREQMHZ)]]
        }
    }
    if {[info exists fake_props($obj,$key)]} { return $fake_props($obj,$key) }
    return ""
}

proc fake_bd_file {} {
    global fake_project_dir fake_project_name fake_bd
    return [file join $fake_project_dir $fake_project_name.srcs sources_1 bd $fake_bd $fake_bd.bd]
}
proc get_files {args} {
    global fake_project_dir fake_project_name fake_bd
    if {[lsearch -exact $args -of_objects] >= 0} {
        set hwh [file join $fake_project_dir $fake_project_name.gen sources_1 bd $fake_bd hw_handoff $fake_bd.hwh]
        if {[file exists $hwh] && [string match *.hwh [lindex $args end]]} { return $hwh }
        return ""
    }
    return [fake_bd_file]
}
proc generate_target {args} {
    global fake_project_dir fake_project_name fake_bd
    fake_record generate_target {*}$args
    set dir [file join $fake_project_dir $fake_project_name.gen sources_1 bd $fake_bd hw_handoff]
    file mkdir $dir
    set f [open [file join $dir $fake_bd.hwh] w]
    puts $f "<?xml version=\"1.0\"?><EDKSYSTEM><!-- fake hwh of $fake_bd --></EDKSYSTEM>"
    close $f
}
proc make_wrapper {args} {
    global fake_bd
    fake_record make_wrapper {*}$args
    return [file join [file dirname [fake_bd_file]] hdl ${fake_bd}_wrapper.v]
}
proc launch_runs {args} { fake_record launch_runs {*}$args }
proc wait_on_run {args} { fake_record wait_on_run {*}$args }
proc get_runs {name} { return $name }
proc open_run {args} { fake_record open_run {*}$args }
proc report_timing_summary {args} {
    fake_record report_timing_summary {*}$args
    set f [open [lindex $args [expr {[lsearch -exact $args -file] + 1}]] w]
    puts $f "fake timing summary: WNS [fake_env FAKE_VIVADO_WNS 0.250]"
    close $f
}
proc report_utilization {args} { fake_record report_utilization {*}$args }
proc get_timing_paths {args} {
    if {[lsearch -exact $args -hold] >= 0} { return hold_path }
    return setup_path
}
proc write_bitstream {args} {
    fake_record write_bitstream {*}$args
    set f [open [lindex $args end] w]
    puts $f "fake bitstream"
    close $f
}

source [lindex $argv 0]
