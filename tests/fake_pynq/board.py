"""The fake PYNQ-Z1: its DDR, the designs a bitstream can hold, its buttons, and pynq.Overlay.

`FakeBoard` is what pynq calls the active Device: `allocate` / `default_memory` (its
`FakeDDR`), the register windows of the loaded design (`window_at` for MMIO, `hardware(path)`
for a test to look at an IP: an `AxiGpioHardware`, `AxiDmaHardware`, `AxiVdmaHardware`, a
`DviDisplayHardware` for the HDMI front end, or a plain `RegisterWindow`), and the physical
inputs (`script_pins`). Downloading a design builds fresh hardware, as reprogramming the PL
resets its IP (and a fresh accelerator from `tcu`, a factory, behind axi_dma_0's stream);
the buttons' scripts are the board's and survive it.

`FakeOverlay(bitfile)` follows pynq.Overlay: `ip_dict` / `hierarchy_dict` with pynq's keys
(fullpath, type, bdtype, state, phys_addr, addr_range, mem_id, memtype, gpio, interrupts
{pin: {controller, index, fullpath}}, parameters, registers, plus device and driver once
bound), `is_loaded()`, `download()`, and attributes built lazily on first access from the
driver bound to the IP's type (so `overlay.btns_gpio` is an AxiGPIO and stays the same
object); another version of a known IP gets DefaultIP and a warning unless ignore_version.
Designs: BASE_BITFILE (the PYNQ-Z1 base overlay's buttons, switches, LEDs and HDMI out) and
TENSIL_BITFILE (the PEFSL-style design of TENSIL.md 9.2: dual-channel btns_gpio, axi_dma_0,
HDMI out). Addresses not given there are illustrative.
"""

import copy
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .ddr import FakeDDR
from .dma import AxiDmaHardware
from .gpio import AxiGpioHardware, PinScript
from .ip import driver_for
from .mmio import RegisterWindow
from .video import AxiVdmaHardware, DviDisplayHardware, HDMIOutFrontend, HDMIWrapper, VideoOut

__all__ = ["BASE_BITFILE", "DESIGNS", "TENSIL_BITFILE", "FakeBoard", "FakeOverlay",
           "base_design", "ip_entry", "tensil_design"]

BASE_BITFILE = "base.bit"
TENSIL_BITFILE = "tensil_pynqz1.bit"

Design = Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]  # ip entries, hierarchy drivers


def ip_entry(fullpath: str, vlnv: str, phys_addr: int, parameters: Dict[str, str],
             interrupts: Sequence[str] = (), addr_range: int = 0x10000) -> Dict[str, Any]:
    """One ip_dict entry as pynq's hwh parser writes it."""
    return {"fullpath": fullpath, "type": vlnv, "bdtype": None, "state": None,
            "phys_addr": phys_addr, "addr_range": addr_range, "mem_id": "S_AXI",
            "memtype": "REGISTER", "gpio": {}, "registers": {}, "parameters": dict(parameters),
            "interrupts": {pin: {"controller": "system_interrupts", "index": i,
                                 "fullpath": fullpath + "/" + pin}
                           for i, pin in enumerate(interrupts)}}


def _gpio(width: int, inputs: bool, interrupt: bool, width2: int = 0) -> Dict[str, str]:
    return {"C_GPIO_WIDTH": str(width), "C_GPIO2_WIDTH": str(width2 or 32),
            "C_IS_DUAL": "1" if width2 else "0", "C_ALL_INPUTS": "1" if inputs else "0",
            "C_ALL_OUTPUTS": "0" if inputs else "1", "C_ALL_INPUTS_2": "1" if inputs else "0",
            "C_INTERRUPT_PRESENT": "1" if interrupt else "0"}


def _video() -> Design:
    vdma = {"C_NUM_FSTORES": "4", "C_INCLUDE_MM2S": "1", "C_INCLUDE_S2MM": "1",
            "C_M_AXI_MM2S_ADDR_WIDTH": "32", "C_M_AXI_S2MM_ADDR_WIDTH": "32"}
    ips = [
        ip_entry("video/axi_vdma", "xilinx.com:ip:axi_vdma:6.3", 0x4300_0000, vdma,
                 ("mm2s_introut", "s2mm_introut")),
        ip_entry("video/hdmi_out/color_convert", "xilinx.com:hls:color_convert:1.0",
                 0x43C0_0000, {}),
        ip_entry("video/hdmi_out/pixel_unpack", "xilinx.com:hls:pixel_unpack:1.0",
                 0x43C2_0000, {}),
        ip_entry("video/hdmi_out/frontend/vtc_out", "xilinx.com:ip:v_tc:6.1", 0x43C3_0000, {}),
        ip_entry("video/hdmi_out/frontend/axi_dynclk", "digilentinc.com:ip:axi_dynclk:1.0",
                 0x43C1_0000, {}),
    ]
    hierarchies = {"video": HDMIWrapper, "video/hdmi_out": VideoOut,
                   "video/hdmi_out/frontend": HDMIOutFrontend}
    return {e["fullpath"]: e for e in ips}, hierarchies


def base_design() -> Design:
    """The PYNQ-Z1 base overlay's parts the demonstrator uses."""
    ips, hierarchies = _video()
    gpio = "xilinx.com:ip:axi_gpio:2.0"
    for entry in (ip_entry("btns_gpio", gpio, 0x4120_0000, _gpio(4, True, True), ["ip2intc_irpt"]),
                  ip_entry("switches_gpio", gpio, 0x4121_0000, _gpio(2, True, True),
                           ["ip2intc_irpt"]),
                  ip_entry("leds_gpio", gpio, 0x4122_0000, _gpio(4, False, False))):
        ips[entry["fullpath"]] = entry
    return ips, hierarchies


def _dma_parameters() -> Dict[str, str]:
    """axi_dma 7.1, MM2S only, simple mode, 64-bit, 26-bit length; the hwh holds the HDL
    generics (C_..., read by Tensil's driver) and the IP settings (c_..., read by pynq's)."""
    upper = {"C_INCLUDE_MM2S": "1", "C_INCLUDE_S2MM": "0", "C_INCLUDE_SG": "0",
             "C_MICRO_DMA": "0", "C_M_AXI_MM2S_DATA_WIDTH": "64",
             "C_M_AXIS_MM2S_TDATA_WIDTH": "64", "C_MM2S_BURST_SIZE": "256",
             "C_SG_LENGTH_WIDTH": "26", "C_INCLUDE_MM2S_DRE": "0", "C_ADDR_WIDTH": "32"}
    return {**upper, **{k.lower(): v for k, v in upper.items()}}


def tensil_design() -> Design:
    """PEFSL's block design: buttons on btns_gpio (channel 2: six PMOD JA inputs), the Tensil
    TCU's instruction stream from axi_dma_0, the base overlay's HDMI out."""
    ips, hierarchies = _video()
    for entry in (ip_entry("btns_gpio", "xilinx.com:ip:axi_gpio:2.0", 0x4120_0000,
                           _gpio(4, True, True, width2=6), ["ip2intc_irpt"]),
                  ip_entry("axi_dma_0", "xilinx.com:ip:axi_dma:7.1", 0x8040_0000,
                           _dma_parameters())):
        ips[entry["fullpath"]] = entry
    return ips, hierarchies


DESIGNS: Dict[str, Callable[[], Design]] = {BASE_BITFILE: base_design,
                                           TENSIL_BITFILE: tensil_design}


class FakeBoard:
    """A PYNQ-Z1 for the fakes: DDR, the PL's design, the buttons and switches."""

    def __init__(self, ddr: Optional[FakeDDR] = None,
                 designs: Optional[Dict[str, Callable[[], Design]]] = None, dma_latency: int = 0,
                 tcu: Optional[Callable[["FakeBoard"], Any]] = None):
        self.ddr = ddr if ddr is not None else FakeDDR()
        self.designs = dict(DESIGNS if designs is None else designs)
        self.dma_latency = dma_latency
        # the accelerator a design with axi_dma_0 gets at each download (its `feed` becomes
        # the DMA's MM2S sink), e.g. lambda board: FakeTcu(arch, board.ddr); `self.tcu` is it
        self.tcu_factory = tcu
        self.tcu: Any = None
        self.pins: Dict[str, Dict[int, PinScript]] = {}
        self.bitfile: Optional[str] = None
        self.bitfile_path: Optional[str] = None  # as given to download (pynq.PL.bitfile_name)
        self.downloads: List[str] = []
        self.overlays: List[Any] = []
        self._hardware: Dict[str, Any] = {}
        self.pynq: Any = None  # the fake pynq module, once install() made this board active

    # --- pynq.Device ---------------------------------------------------------------------

    @property
    def default_memory(self) -> FakeDDR:
        return self.ddr

    def allocate(self, shape: Any, dtype: Any = "u4", **kwargs: Any) -> Any:
        return self.ddr.allocate(shape, dtype, **kwargs)

    def window_at(self, phys_addr: int, length: int) -> RegisterWindow:
        for window in self._hardware.values():
            if isinstance(window, RegisterWindow) and (
                    window.phys_addr <= phys_addr
                    and phys_addr + length <= window.phys_addr + window.addr_range):
                return window
        raise RuntimeError("no IP of the loaded design (%s) at 0x%x+0x%x"
                           % (self.bitfile, phys_addr, length))

    # --- the PL and the physical inputs --------------------------------------------------

    def design(self, bitfile_name: str) -> Design:
        name = os.path.basename(bitfile_name)
        if name not in self.designs:
            raise OSError("Bitstream file %s does not exist (the fake board knows %s)"
                          % (bitfile_name, ", ".join(sorted(self.designs))))
        return self.designs[name]()

    def download(self, bitfile_name: str) -> None:
        ips, hierarchies = self.design(bitfile_name)
        self._hardware = {path: self._build(entry) for path, entry in ips.items()}
        for path, driver in hierarchies.items():
            if driver is HDMIOutFrontend:
                self._hardware[path] = DviDisplayHardware()
        self.bitfile = os.path.basename(bitfile_name)
        self.bitfile_path = bitfile_name
        self.tcu = None
        if self.tcu_factory is not None and "axi_dma_0" in self._hardware:
            self.tcu = self.tcu_factory(self)
            self._hardware["axi_dma_0"].mm2s_sink = self.tcu.feed
        self.downloads.append(self.bitfile)

    def _build(self, entry: Dict[str, Any]) -> RegisterWindow:
        name, kind = entry["fullpath"], entry["type"].rpartition(":")[0]
        where = (name, entry["phys_addr"], entry["addr_range"])
        if kind == "xilinx.com:ip:axi_gpio":
            return AxiGpioHardware(*where, entry["parameters"], self.pins.setdefault(name, {}))
        if kind == "xilinx.com:ip:axi_dma":
            return AxiDmaHardware(*where, entry["parameters"], self.ddr, self.dma_latency)
        if kind == "xilinx.com:ip:axi_vdma":
            return AxiVdmaHardware(*where, entry["parameters"], self.ddr)
        return RegisterWindow(*where)

    def script_pins(self, ip: str, values: Sequence[int], channel: int = 1) -> PinScript:
        """The input pins of `ip`'s channel: values[i] at its i-th DATA read (then held)."""
        script = PinScript(values)
        self.pins.setdefault(ip, {})[channel] = script
        return script

    def hardware(self, path: str) -> Any:
        if path not in self._hardware:
            raise KeyError("%s is not in the loaded design (%s); it has %s"
                           % (path, self.bitfile, ", ".join(sorted(self._hardware))))
        return self._hardware[path]


class FakeOverlay:
    """pynq.Overlay(bitfile_name, dtbo=None, download=True, ignore_version=False, device=None)."""

    active_board: Optional[FakeBoard] = None  # pynq's Device.active_device, set by install()

    def __init__(self, bitfile_name: str, dtbo: Optional[str] = None, download: bool = True,
                 ignore_version: bool = False, device: Optional[FakeBoard] = None):
        board = device or FakeOverlay.active_board
        if board is None:
            raise RuntimeError("no fake board: call tests.fake_pynq.install() or pass device=")
        ips, hierarchies = board.design(bitfile_name)
        self.bitfile_name = bitfile_name
        self.device = board
        self.ignore_version = ignore_version
        self.ip_dict = copy.deepcopy(ips)
        self.hierarchy_dict = {path: {"fullpath": path, "driver": driver}
                               for path, driver in hierarchies.items()}
        self.gpio_dict: Dict[str, Any] = {}
        self.interrupt_pins = {pin["fullpath"]: pin for e in self.ip_dict.values()
                               for pin in e["interrupts"].values()}
        self._description = self._describe()
        board.overlays.append(self)
        if download:
            self.download()

    def _describe(self) -> Dict[str, Any]:
        """The nested description pynq's _IPMap reads, drivers bound by IP type."""
        def node(path: str) -> Dict[str, Any]:
            return {"fullpath": path, "ip": {}, "hierarchies": {}, "interrupts": {}, "gpio": {},
                    "memories": {}, "device": self.device, "overlay": self}

        root = node("")
        nodes = {"": root}
        for path in sorted(self.hierarchy_dict, key=lambda p: p.count("/")):
            parent, _, name = path.rpartition("/")
            nodes[path] = node(path)
            nodes[path]["driver"] = self.hierarchy_dict[path]["driver"]
            nodes[parent]["hierarchies"][name] = nodes[path]
        for path, entry in self.ip_dict.items():
            parent, _, name = path.rpartition("/")
            entry["device"] = self.device
            entry["driver"] = driver_for(entry["type"], path, self.ignore_version)
            nodes[parent]["ip"][name] = entry
        return root

    def download(self) -> None:
        self.device.download(self.bitfile_name)

    def is_loaded(self) -> bool:
        return self.device.bitfile == os.path.basename(self.bitfile_name)

    def free(self) -> None:
        pass

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_") or "_description" not in self.__dict__:
            raise AttributeError(key)
        if not self.is_loaded():
            raise RuntimeError("Overlay not currently loaded")
        for kind in ("hierarchies", "ip"):
            entry = self._description[kind].get(key)
            if entry is not None:
                driver = entry["driver"](entry)
                setattr(self, key, driver)
                return driver
        raise AttributeError("Could not find IP or hierarchy %s in overlay" % key)
