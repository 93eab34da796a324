"""The PYNQ-Z1 overlay with the Tensil TCU: a Vivado batch flow (bitstreams/tensil_overlay.tcl).

`prepare()` writes three TCL files into the build folder and needs no Vivado: `params.tcl`
(this build's settings), `pynq_base_parts.tcl` (the PYNQ base design's video hierarchy and PS7
settings, read from the user's PYNQ checkout) and `build.tcl` (sources both, then the recipe).
`build()` checks Vivado, runs it in batch mode and writes `<name>.json` beside the `.bit` and
`.hwh` (schema in bitstreams/README.md): what the board runtime's mismatch check reads.
"""

import datetime
import json
import logging
import os
import pathlib
import re
import subprocess
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from tensil.arch import Architecture

from . import __version__
from .errors import HwflowError, TimingFailed, ToolMissing
from .project import REPO_ROOT, git_commit, load_tarch
from .pynq_checkout import PynqCheckout
from .rtl import RtlInfo, check_rtl_matches, check_tcu_ports, find_rtl
from .tools import HOW_TO_GET, have_tool, require_tool

log = logging.getLogger(__name__)

__all__ = ["PART", "RECIPE", "CONSTRAINTS", "JSON_SCHEMA", "BitstreamPlan", "default_name",
           "plan_bitstream", "prepare", "vivado_version", "build", "fclk_options"]

PART = "xc7z020clg400-1"
RECIPE = REPO_ROOT / "bitstreams" / "tensil_overlay.tcl"
CONSTRAINTS = REPO_ROOT / "bitstreams" / "pynqz1_tensil.xdc"
JSON_SCHEMA = "pynq-fewshot-fl/bitstream/1"
# PS7 FCLK limits and the PYNQ-Z1's IO PLL (50 MHz crystal x 20), which the FCLKs divide.
FCLK_RANGE_MHZ = (10.0, 250.0)
IO_PLL_MHZ = 1000.0
# The IP the recipe instantiates: defaults, overridden by the versions PYNQ's script validated.
_RECIPE_IP = {
    "processing_system7": "xilinx.com:ip:processing_system7:5.5",
    "proc_sys_reset": "xilinx.com:ip:proc_sys_reset:5.0",
    "axi_gpio": "xilinx.com:ip:axi_gpio:2.0",
    "axi_interconnect": "xilinx.com:ip:axi_interconnect:2.1",
    "axi_intc": "xilinx.com:ip:axi_intc:4.1",
    "xlconcat": "xilinx.com:ip:xlconcat:2.1",
    "axi_dma": "xilinx.com:ip:axi_dma:7.1",
    "smartconnect": "xilinx.com:ip:smartconnect:1.0",
}


@dataclass
class BitstreamPlan:
    """Everything one overlay build needs, checked."""

    name: str
    tarch_path: pathlib.Path
    arch: Architecture
    rtl: RtlInfo
    clock_mhz: float
    pynq: PynqCheckout
    build_dir: pathlib.Path
    out_dir: pathlib.Path
    jobs: int = 2
    allow_negative_slack: bool = False

    @property
    def tcu_instance(self) -> str:
        return self.rtl.top_module + "_0"


def _mhz_text(mhz: float) -> str:
    return ("%g" % mhz).replace(".", "p")


def default_name(tarch_path: pathlib.Path, clock_mhz: float) -> str:
    """pynqz1_perf.tarch at 125 MHz -> pynqz1_perf_125mhz."""
    return "%s_%smhz" % (tarch_path.name.split(".")[0], _mhz_text(clock_mhz))


def fclk_options(mhz: float) -> Tuple[float, Tuple[int, int]]:
    """The FCLK frequency nearest `mhz` that two 6-bit dividers of the IO PLL give, and them."""
    best = min(((IO_PLL_MHZ / (d0 * d1), (d0, d1)) for d0 in range(1, 64) for d1 in range(1, 64)),
               key=lambda option: abs(option[0] - mhz))
    return best


def _tcl_word(value: str, what: str) -> str:
    """`value` as one braced TCL word; refuses what braces cannot carry safely."""
    if any(c in value for c in "{}\\\n\r"):
        raise HwflowError("%s %r contains a brace, backslash or newline: TCL cannot take it" % (what, value))
    return "{%s}" % value


def plan_bitstream(tarch: "os.PathLike[str]", rtl_dir: "os.PathLike[str]", clock_mhz: float,
                   pynq_dir: "Optional[os.PathLike[str]]", *, name: Optional[str] = None,
                   build_root: Optional[pathlib.Path] = None, out_root: Optional[pathlib.Path] = None,
                   jobs: int = 2, allow_negative_slack: bool = False) -> BitstreamPlan:
    """Check the inputs (architecture, RTL, clock, PYNQ checkout) before anything runs."""
    tarch_path = pathlib.Path(tarch)
    arch = load_tarch(tarch_path)
    rtl = find_rtl(rtl_dir)
    check_rtl_matches(rtl, arch, str(tarch_path))
    check_tcu_ports(rtl)
    low, high = FCLK_RANGE_MHZ
    if not low <= clock_mhz <= high:
        raise HwflowError("CLOCK_MHZ=%g is outside what a PS7 FCLK gives (%g-%g MHz)"
                          % (clock_mhz, low, high))
    pynq = PynqCheckout.open(pynq_dir)
    name = name or default_name(tarch_path, clock_mhz)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", name):
        raise HwflowError("bitstream name %r: letters, digits and _ only, starting with a letter" % name)
    build_root = build_root or REPO_ROOT / "build" / "bitstream"
    out_root = out_root or REPO_ROOT / "bitstreams"
    if jobs < 1:
        raise HwflowError("jobs must be at least 1, not %d" % jobs)
    return BitstreamPlan(name, tarch_path, arch, rtl, float(clock_mhz), pynq, build_root / name,
                         out_root / name, jobs, allow_negative_slack)


def _ip_vlnvs(pynq: PynqCheckout) -> Dict[str, str]:
    validated = pynq.ip_versions()
    chosen = {}
    for key, vlnv in _RECIPE_IP.items():
        prefix = vlnv.rsplit(":", 1)[0]
        chosen[key] = "%s:%s" % (prefix, validated[prefix]) if prefix in validated else vlnv
    return chosen


def _pynq_parts(plan: BitstreamPlan) -> Tuple[str, List[str]]:
    """pynq_base_parts.tcl and the IP VLNVs its procedures instantiate."""
    procs = plan.pynq.video_procs()
    vlnvs: List[str] = []
    for _, body in procs:
        for vlnv in re.findall(r"create_bd_cell\s+-type\s+ip\s+-vlnv\s+(\S+)", body):
            if vlnv not in vlnvs:
                vlnvs.append(vlnv)
    ps7 = plan.pynq.ps7_config()
    source = plan.pynq.root / "boards/Pynq-Z1/base/base.tcl"
    lines = [
        "# Generated by python -m hwflow bitstream: read from %s" % source,
        "# (PYNQ %s, commit %s). The PYNQ base design's video hierarchy and PS7 settings;"
        % (plan.pynq.release() or "?", plan.pynq.commit() or "unknown"),
        "# a build product of the user's checkout, not part of the repository.",
        "",
        "variable script_folder",
        "set script_folder %s" % _tcl_word(str(source.parent), "PYNQ path"),
        "",
    ]
    for _, body in procs:
        lines.append(body)
    lines.append("set hwflow_pynq_ps7_config [list \\")
    lines.extend("    %s {%s} \\" % (key, value) for key, value in ps7)
    lines.append("]")
    lines.append("set hwflow_pynq_vlnvs [list %s]" % " ".join(vlnvs))
    return "\n".join(lines) + "\n", vlnvs


def prepare(plan: BitstreamPlan) -> pathlib.Path:
    """Write params.tcl, pynq_base_parts.tcl and build.tcl; returns build.tcl."""
    plan.build_dir.mkdir(parents=True, exist_ok=True)
    parts, _ = _pynq_parts(plan)
    (plan.build_dir / "pynq_base_parts.tcl").write_text(parts, encoding="utf-8")
    ips = _ip_vlnvs(plan.pynq)
    params = [
        "# Generated by python -m hwflow bitstream %s" % __version__,
        "set hwflow_name %s" % plan.name,
        "set hwflow_part %s" % PART,
        "set hwflow_clock_mhz %g" % plan.clock_mhz,
        "set hwflow_top %s" % plan.rtl.top_module,
        "set hwflow_rtl_files [list %s]" % " ".join(
            _tcl_word(str(p.resolve()), "RTL path") for p in plan.rtl.files),
        "set hwflow_build_dir %s" % _tcl_word(str(plan.build_dir.resolve()), "build path"),
        "set hwflow_out_dir %s" % _tcl_word(str(plan.out_dir.resolve()), "output path"),
        "set hwflow_xdc %s" % _tcl_word(str(CONSTRAINTS), "constraints path"),
        "set hwflow_pynq_ip_repo %s" % _tcl_word(str(plan.pynq.ip_repo.resolve()), "PYNQ path"),
        "set hwflow_vivado_version %s" % plan.pynq.vivado_version(),
        "set hwflow_pynq_release %s" % _tcl_word(plan.pynq.release() or "unknown", "PYNQ release"),
        "set hwflow_jobs %d" % plan.jobs,
        "set hwflow_allow_negative_slack %d" % int(plan.allow_negative_slack),
        "set hwflow_ip_vlnv [dict create %s]" % " ".join(
            "%s %s" % (key, vlnv) for key, vlnv in sorted(ips.items())),
        "",
    ]
    (plan.build_dir / "params.tcl").write_text("\n".join(params), encoding="utf-8")
    build_tcl = plan.build_dir / "build.tcl"
    build_tcl.write_text("\n".join([
        "# Generated by python -m hwflow bitstream: vivado -mode batch -source build.tcl",
        "source %s" % _tcl_word(str((plan.build_dir / "params.tcl").resolve()), "build path"),
        "source %s" % _tcl_word(str((plan.build_dir / "pynq_base_parts.tcl").resolve()), "build path"),
        "source %s" % _tcl_word(str(RECIPE), "recipe path"),
        "",
    ]), encoding="utf-8")
    return build_tcl


def vivado_version(vivado: str) -> str:
    """'2024.1' from `vivado -version`'s first line ('Vivado v2024.1 (64-bit)')."""
    try:
        out = subprocess.run([vivado, "-version"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissing("cannot run %s -version: %s" % (vivado, exc)) from None
    match = re.search(r"Vivado\s+v(\d{4}\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
    if not match:
        raise ToolMissing("%s -version printed no Vivado version" % vivado)
    return match.group(1)


def _require_vivado(plan: BitstreamPlan) -> Tuple[str, str]:
    needed = plan.pynq.vivado_version()
    release = plan.pynq.release() or "this checkout"
    try:
        vivado = require_tool("vivado", "to build the bitstream; PYNQ %s needs Vivado %s"
                              % (release, needed))
    except ToolMissing:
        raise ToolMissing("Vivado is not installed or not on PATH: PYNQ %s (PYNQ_DIR=%s) needs "
                          "Vivado %s. Get it from %s. Without it, `python -m hwflow bitstream "
                          "--generate-only` still writes the TCL into %s"
                          % (release, plan.pynq.root, needed, HOW_TO_GET["vivado"],
                             plan.build_dir)) from None
    found = vivado_version(vivado)
    if not found.startswith(needed):
        raise ToolMissing("PYNQ %s needs Vivado %s, but %s is Vivado %s: install %s, or check out "
                          "the PYNQ release made with %s" % (release, needed, vivado, found, needed, found))
    return vivado, found


def _build_hls_ip(plan: BitstreamPlan, vivado: str, missing: List[str]) -> None:
    """PYNQ's own step (`make hls_ip`: build_ip.tcl) for its HLS IP that is not packaged yet."""
    if not any(have_tool(t) for t in ("vitis_hls", "vitis-run")):
        raise ToolMissing("PYNQ's HLS IP %s are not built and neither vitis_hls nor vitis-run is on "
                          "PATH: install Vitis HLS %s or run `make -C %s hls_ip` where it is"
                          % (", ".join(missing), plan.pynq.vivado_version(), plan.pynq.base_dir))
    log.info("hwflow: building PYNQ's HLS IP %s (make hls_ip)", ", ".join(missing))
    result = subprocess.run([vivado, "-mode", "batch", "-source", "build_ip.tcl", "-notrace"],
                            cwd=str(plan.pynq.base_dir))
    if result.returncode != 0:
        raise HwflowError("PYNQ's HLS IP build (build_ip.tcl in %s) failed with exit %d"
                          % (plan.pynq.base_dir, result.returncode))


def build(plan: BitstreamPlan) -> Dict[str, Any]:
    """Run the Vivado flow; returns the JSON written beside the .bit and .hwh."""
    build_tcl = prepare(plan)
    vivado, found = _require_vivado(plan)
    _, vlnvs = _pynq_parts(plan)
    missing = plan.pynq.hls_ips_missing(vlnvs)
    if missing:
        _build_hls_ip(plan, vivado, missing)
    if plan.out_dir.exists():
        for stale in (plan.name + ".bit", plan.name + ".hwh", plan.name + ".json"):
            (plan.out_dir / stale).unlink(missing_ok=True)
    result_path = plan.build_dir / "result.json"
    result_path.unlink(missing_ok=True)
    log.info("hwflow: vivado -mode batch -source %s (log in %s)", build_tcl, plan.build_dir)
    proc = subprocess.run([vivado, "-mode", "batch", "-notrace", "-source", str(build_tcl),
                           "-log", str(plan.build_dir / "vivado.log"),
                           "-journal", str(plan.build_dir / "vivado.jou")], cwd=str(plan.build_dir))
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if proc.returncode == 3 and result is not None:
        raise TimingFailed(
            "TIMING NOT MET at %g MHz: WNS %.3f ns, WHS %.3f ns (%s): no bitstream written. "
            "Lower CLOCK_MHZ, or ship it anyway with ALLOW_NEGATIVE_SLACK=1 (recorded in the JSON)"
            % (plan.clock_mhz, result["wns_ns"], result["whs_ns"],
               plan.build_dir / "timing_summary.rpt"))
    if proc.returncode != 0 or result is None:
        raise HwflowError("Vivado failed (exit %d): see %s" % (proc.returncode,
                                                                plan.build_dir / "vivado.log"))
    return write_metadata(plan, found, result)


def write_metadata(plan: BitstreamPlan, vivado: str, result: Dict[str, Any]) -> Dict[str, Any]:
    from device.model_card import sha256_file

    bit = plan.out_dir / (plan.name + ".bit")
    hwh = plan.out_dir / (plan.name + ".hwh")
    for path in (bit, hwh):
        if not path.is_file():
            raise HwflowError("Vivado finished but %s is missing" % path)
    meta = {
        "schema": JSON_SCHEMA,
        "name": plan.name,
        "bitstream": {"file": bit.name, "sha256": sha256_file(bit)},
        "hwh": {"file": hwh.name, "sha256": sha256_file(hwh)},
        "tarch": plan.arch.to_dict(),
        "tarch_file": plan.tarch_path.name,
        "clock_mhz": {"requested": plan.clock_mhz, "actual": float(result["actual_clock_mhz"])},
        "timing": {"wns_ns": result["wns_ns"], "whs_ns": result["whs_ns"],
                   "met": bool(result["timing_met"])},
        "tcu": {"instance": plan.tcu_instance, "module": plan.rtl.top_module, "clock": "ps7_0/FCLK_CLK3",
                "instruction_dma": "axi_dma_0", "dma_data_width": 64,
                "dram0_port": "S_AXI_HP1", "dram1_port": "S_AXI_HP3", "dma_port": "S_AXI_HP2"},
        "rtl": plan.rtl.describe(),
        "tools": {"vivado": vivado, "pynq_release": plan.pynq.release(),
                  "pynq_commit": plan.pynq.commit(), "hwflow": __version__},
        "part": PART,
        "source_commit": git_commit(),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (plan.out_dir / (plan.name + ".json")).write_text(json.dumps(meta, indent=2) + "\n",
                                                      encoding="utf-8")
    return meta
