"""Fakes of the pynq API the demonstrator touches, recording every call the board would see.

They follow pynq's own shapes (PYNQ 2.7/3.x):
- `Overlay(bitfile)`: `ip_dict` maps IP names to description dicts; the base overlay's
  video hierarchy is `overlay.video.hdmi_out`.
- `AxiGPIO(description)`: `.channel1` / `.channel2` are channels with `read()`,
  `write(val, mask)`, `setdirection(direction)`, `setlength(length)`.
- `pynq.lib.video`: `VideoMode(width, height, bits_per_pixel, fps=60, stride=None)`,
  `PIXEL_BGR`/`PIXEL_RGB`; `hdmi_out.configure(mode, pixelformat)`, `start()`,
  `newframe()` (a (height, width, 3) uint8 buffer), `writeframe(frame)`, `stop()`,
  `close()`.
`install(monkeypatch)` puts fake `pynq`, `pynq.lib`, `pynq.lib.video` modules in sys.modules
so the board code paths (`from_overlay`, the CLI's --hdmi/--buttons) run unchanged.
"""

import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["PIXEL_BGR", "PIXEL_RGB", "FakeAxiGPIO", "FakeChannel", "FakeHdmiOut", "FakeOverlay",
           "PixelFormat", "VideoMode", "install"]


class PixelFormat:
    def __init__(self, bits_per_pixel: int, name: str):
        self.bits_per_pixel = bits_per_pixel
        self.name = name

    def __repr__(self) -> str:
        return self.name


PIXEL_BGR = PixelFormat(24, "PIXEL_BGR")
PIXEL_RGB = PixelFormat(24, "PIXEL_RGB")


class VideoMode:
    """pynq.lib.video.VideoMode: width, height, bits_per_pixel, fps, stride, shape."""

    def __init__(self, width: int, height: int, bits_per_pixel: int, fps: int = 60,
                 stride: Optional[int] = None):
        self.width = width
        self.height = height
        self.bits_per_pixel = bits_per_pixel
        self.bytes_per_pixel = (bits_per_pixel + 1) // 8
        self.fps = fps
        self.stride = stride or width * self.bytes_per_pixel
        self.shape = (height, width, self.bytes_per_pixel) if self.bytes_per_pixel > 1 \
            else (height, width)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VideoMode) and (self.width, self.height, self.bits_per_pixel,
                                                 self.fps) == (other.width, other.height,
                                                               other.bits_per_pixel, other.fps)

    def __repr__(self) -> str:
        return "VideoMode: width=%d height=%d bpp=%d fps=%d" % (
            self.width, self.height, self.bits_per_pixel, self.fps)


class FakeHdmiOut:
    """overlay.video.hdmi_out: records (name, args) of every call in `calls`."""

    def __init__(self) -> None:
        self.calls: List[Tuple[Any, ...]] = []
        self.mode: Optional[VideoMode] = None
        self.running = False
        self.written: List[np.ndarray] = []

    def configure(self, mode: VideoMode, pixelformat: Optional[PixelFormat] = None) -> None:
        if self.running:
            raise RuntimeError("configure() on a running HDMI output")  # our driver's order
        self.calls.append(("configure", mode, pixelformat))
        self.mode = mode

    def start(self) -> None:
        if self.mode is None:
            raise RuntimeError("HDMI output started before configure()")
        self.calls.append(("start",))
        self.running = True

    def newframe(self) -> np.ndarray:
        if not self.running:
            raise RuntimeError("newframe() on a stopped HDMI output")
        self.calls.append(("newframe",))
        return np.zeros(self.mode.shape, np.uint8)  # type: ignore[union-attr]

    def writeframe(self, frame: np.ndarray) -> None:
        if not self.running:
            raise RuntimeError("writeframe() on a stopped HDMI output")
        if frame.shape != self.mode.shape or frame.dtype != np.uint8:  # type: ignore[union-attr]
            raise ValueError("frame %s %s does not match mode %s" % (frame.shape, frame.dtype,
                                                                     self.mode))
        self.calls.append(("writeframe", frame.shape))
        self.written.append(frame.copy())

    def stop(self) -> None:
        self.calls.append(("stop",))
        self.running = False

    def close(self) -> None:
        self.calls.append(("close",))


class FakeChannel:
    """An AxiGPIO channel whose `read()` plays back `values` (the last one repeats)."""

    def __init__(self, values: Sequence[int] = (0,)):
        self.values = list(values)
        self.calls: List[Tuple[Any, ...]] = []
        self._position = 0

    def read(self) -> int:
        self.calls.append(("read",))
        value = self.values[min(self._position, len(self.values) - 1)]
        self._position += 1
        return value

    def write(self, val: int, mask: int) -> None:
        self.calls.append(("write", val, mask))

    def setdirection(self, direction: str) -> None:
        if direction not in ("in", "out", "inout"):
            raise ValueError("direction must be 'in', 'out' or 'inout'")
        self.calls.append(("setdirection", direction))

    def setlength(self, length: int) -> None:
        self.calls.append(("setlength", length))


class FakeAxiGPIO:
    """pynq.lib.AxiGPIO(description): two channels. `channels_for` maps an IP name to the
    channel1 a test prepared (so a test can script the buttons before the driver exists)."""

    channels_for: Dict[str, FakeChannel] = {}
    created: List[str] = []

    def __init__(self, description: Dict[str, Any]):
        name = description["fullpath"]
        FakeAxiGPIO.created.append(name)
        self.channel1 = FakeAxiGPIO.channels_for.get(name, FakeChannel())
        self.channel2 = FakeChannel()


class _Video:
    def __init__(self, hdmi_out: FakeHdmiOut):
        self.hdmi_out = hdmi_out


class FakeOverlay:
    """pynq.Overlay(bitfile): the PYNQ-Z1 base overlay's GPIO IPs and video hierarchy."""

    loaded: List[str] = []

    def __init__(self, bitfile_name: str, download: bool = True):
        FakeOverlay.loaded.append(bitfile_name)
        self.bitfile_name = bitfile_name
        self.ip_dict = {name: {"fullpath": name, "type": "xilinx.com:ip:axi_gpio:2.0",
                               "phys_addr": 0x41200000 + 0x10000 * i, "addr_range": 0x10000}
                        for i, name in enumerate(("btns_gpio", "switches_gpio", "leds_gpio"))}
        self.video = _Video(FakeHdmiOut())


def install(monkeypatch: Any) -> types.ModuleType:
    """Fake pynq, pynq.lib and pynq.lib.video modules in sys.modules (undone by monkeypatch)."""
    FakeAxiGPIO.channels_for = {}
    FakeAxiGPIO.created = []
    FakeOverlay.loaded = []
    pynq = types.ModuleType("pynq")
    lib = types.ModuleType("pynq.lib")
    video = types.ModuleType("pynq.lib.video")
    pynq.Overlay = FakeOverlay  # type: ignore[attr-defined]
    pynq.lib = lib  # type: ignore[attr-defined]
    lib.AxiGPIO = FakeAxiGPIO  # type: ignore[attr-defined]
    lib.video = video  # type: ignore[attr-defined]
    video.VideoMode = VideoMode  # type: ignore[attr-defined]
    video.PIXEL_BGR = PIXEL_BGR  # type: ignore[attr-defined]
    video.PIXEL_RGB = PIXEL_RGB  # type: ignore[attr-defined]
    for name, module in (("pynq", pynq), ("pynq.lib", lib), ("pynq.lib.video", video)):
        monkeypatch.setitem(sys.modules, name, module)
    return pynq
