"""Fakes of pynq that behave like pynq, down to the registers a board would see.

Pieces (each module's docstring gives the facts it keeps from pynq and the Xilinx IP):
- `mmio`: `RegisterWindow` (an IP's registers; every access recorded as `Read` / `Write`,
  `check_transactions(expected)` fails on a missing, extra or different one) and `MMIO`.
- `ddr`: `FakeDDR`, one physical memory with pynq's `allocate` (CMA alignment, exhaustion,
  `PynqBuffer` with physical_address, flush / invalidate over a modelled cache,
  freebuffer), `read` / `write` by physical address for devices, `hazards`.
- `gpio`: `AxiGpioHardware` (PG144 registers, scripted pins, interrupts) and `AxiGPIO`.
- `dma`: `AxiDmaHardware` (PG021 simple mode; `mm2s_sink` receives the MM2S stream) and `DMA`.
- `video`: `VideoMode`, pixel formats, the VDMA (registers and driver), `VideoOut`.
- `board`: `FakeBoard` (DDR, the loaded design's hardware, the buttons) and `FakeOverlay`.
- `tcu`: `FakeTcu` (the Tensil TCU as an MM2S sink: the emulator against the DDR by physical
  address) and `CosimTcu` (each transfer a run of the real RTL).

`install(monkeypatch)` makes a `FakeBoard` the active device and puts fake `pynq`,
`pynq.buffer`, `pynq.mmio`, `pynq.lib`, `pynq.lib.axigpio`, `pynq.lib.dma` and
`pynq.lib.video` modules in sys.modules (pynq with `Overlay`, `allocate`, `MMIO`, `Device`,
`PL.bitfile_name`) (undone with the monkeypatch), so board code paths
(`ButtonInput.from_overlay`, `HdmiDisplay.from_overlay`, a Tensil driver over `axi_dma_0`
and `pynq.allocate`) run unchanged. It returns the board:

    board = install(monkeypatch, ddr=FakeDDR(size=64 << 20))
    board.script_pins("btns_gpio", [0, 0b0001, 0])         # a press of button 0
    overlay = board.pynq.Overlay(TENSIL_BITFILE)
    board.hardware("axi_dma_0").mm2s_sink = my_tcu.feed     # gets the MM2S bytes
    ...                                                     # my_tcu uses board.ddr.read/write
    board.hardware("btns_gpio").check_transactions([Write(0x11C, 0x80000000), Read(0x0, 0)])
    board.ddr.check_no_hazards()
"""

import sys
import types
from typing import Any, Optional

from . import dma as _dma
from . import ip as _ip
from . import video as _video
from .board import BASE_BITFILE, TENSIL_BITFILE, FakeBoard, FakeOverlay
from .ddr import DecodeError, FakeDDR, PynqBuffer
from .dma import DMA, AxiDmaHardware
from .gpio import AxiGPIO, AxiGpioHardware, PinScript
from .mmio import MMIO, Read, RegisterWindow, Write
from .tcu import CosimTcu, FakeTcu
from .video import PIXEL_BGR, PIXEL_GRAY, PIXEL_RGB, PIXEL_RGBA, PixelFormat, VideoMode, VideoOut

__all__ = ["BASE_BITFILE", "DMA", "MMIO", "CosimTcu", "FakeTcu", "PIXEL_BGR", "PIXEL_GRAY", "PIXEL_RGB", "PIXEL_RGBA",
           "TENSIL_BITFILE", "AxiDmaHardware", "AxiGPIO", "AxiGpioHardware", "DecodeError",
           "FakeBoard", "FakeDDR", "FakeOverlay", "PinScript", "PixelFormat", "PynqBuffer",
           "Read", "RegisterWindow", "VideoMode", "VideoOut", "Write", "install"]


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


# what pynq.lib.video itself exports of the fake's classes (not the hardware models)
_VIDEO_NAMES = ("PIXEL_BGR", "PIXEL_GRAY", "PIXEL_RGB", "PIXEL_RGBA", "AxiVDMA", "ColorConverter",
                "HDMIOutFrontend", "HDMIWrapper", "PixelFormat", "PixelPacker", "VideoMode",
                "VideoOut")


def install(monkeypatch: Any, board: Optional[FakeBoard] = None, **board_options: Any) -> FakeBoard:
    """Fake pynq modules over `board` (a new FakeBoard(**board_options) by default)."""
    board = board if board is not None else FakeBoard(**board_options)
    monkeypatch.setattr(FakeOverlay, "active_board", board)

    def allocate(shape: Any, dtype: Any = "u4", target: Any = None, **kwargs: Any) -> Any:
        return (target if target is not None else board).allocate(shape, dtype, **kwargs)

    device = type("Device", (), {"active_device": board})
    # pynq.PL: what the PL holds now; bitfile_name is the path last downloaded (None at boot)
    pl = type("PL", (), {"bitfile_name": property(lambda self: board.bitfile_path)})()
    buffer = _module("pynq.buffer", PynqBuffer=PynqBuffer, allocate=allocate)
    mmio = _module("pynq.mmio", MMIO=MMIO)
    axigpio = _module("pynq.lib.axigpio", AxiGPIO=AxiGPIO)
    dma = _module("pynq.lib.dma", DMA=DMA, MAX_C_SG_LENGTH_WIDTH=_dma.MAX_C_SG_LENGTH_WIDTH)
    video = _module("pynq.lib.video", **{name: getattr(_video, name) for name in _VIDEO_NAMES})
    lib = _module("pynq.lib", AxiGPIO=AxiGPIO, DMA=DMA, axigpio=axigpio, dma=dma, video=video)
    pynq = _module("pynq", __version__="3.0.1", Overlay=FakeOverlay, allocate=allocate, MMIO=MMIO, Device=device, PL=pl,
                   DefaultIP=_ip.DefaultIP, DefaultHierarchy=_ip.DefaultHierarchy,
                   Interrupt=_ip.Interrupt, UnsupportedConfiguration=_ip.UnsupportedConfiguration,
                   buffer=buffer, mmio=mmio, lib=lib)
    for module in (pynq, buffer, mmio, lib, axigpio, dma, video):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    board.pynq = pynq
    return board
