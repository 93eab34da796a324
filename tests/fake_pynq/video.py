"""pynq.lib.video for the PYNQ-Z1 HDMI output: modes, pixel formats, the VDMA (registers
and driver), the pipeline's colour converter and pixel unpacker, the DVI front end, and the
VideoOut / HDMIWrapper hierarchies.

Rules kept from pynq (pynq/lib/video/*.py):
- `VideoMode(width, height, bits_per_pixel, fps=60, stride=None)`: bytes_per_pixel =
  (bits_per_pixel - 1) // 8 + 1, stride defaults to width * bytes_per_pixel, shape is
  (height, width) for one byte a pixel else (height, width, bytes); `==` compares width,
  height, bits_per_pixel, fps and stride (and raises AttributeError against a non-mode, as
  pynq's does); modes are unhashable.
- `VideoOut.configure(mode, pixelformat=None)` stops a running VDMA first, picks GRAY / BGR
  / RGBA for 8 / 24 / 32 bpp when no format is given (ValueError otherwise or when the format
  disagrees with the mode), programs the colour converter and unpacker, sets the front end's
  mode (only 640x480, 800x600, 1280x720, 1280x1024, 1920x1080: ValueError otherwise), sets
  the VDMA's mode and starts the front end; it returns a context manager that close()s.
  `start()` starts the VDMA (RuntimeError without a mode) and returns one that stop()s;
  `stop()` stops the VDMA; `close()` stops the VDMA and then the front end.
- `newframe()` needs a started channel once (AttributeError before, as pynq's missing frame
  cache gives); `writeframe(frame)` needs a running channel (RuntimeError "DMA channel not
  started"), flushes the frame and shows it; the frames are PynqBuffers from the board's DDR
  (cacheable, as pynq's cacheable_frames default).
The VDMA's MM2S registers are modelled (VDMACR 0x00, VDMASR 0x04 with Halted bit 0 and the
frame-count interrupt bit 12, PARK_PTR 0x28, VSIZE 0x50, HSIZE 0x54, FRMDLY_STRIDE 0x58, frame
addresses from 0x5C) so tests state the exact register traffic; `screen()` is what the
monitor shows, read from DDR at the parked frame's address.
"""

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .ip import DefaultHierarchy, DefaultIP, UnsupportedConfiguration, run_blocking
from .mmio import RegisterWindow

__all__ = ["HDMI_OUT_MODES", "PIXEL_BGR", "PIXEL_GRAY", "PIXEL_RGB", "PIXEL_RGBA", "AxiVDMA",
           "AxiVdmaHardware", "ColorConverter", "DviDisplayHardware", "HDMIOutFrontend",
           "HDMIWrapper", "PixelFormat", "PixelPacker", "VideoMode", "VideoOut"]

HDMI_OUT_MODES = {(640, 480): 0, (800, 600): 1, (1280, 720): 2, (1280, 1024): 3,
                  (1920, 1080): 4}
VDMACR, VDMASR, PARK_PTR, VSIZE, HSIZE, STRIDE, FRAME_ADDRESSES = (0x00, 0x04, 0x28, 0x50,
                                                                   0x54, 0x58, 0x5C)
FRAME_COUNT_IRQ = 0x1000


class VideoMode:
    """pynq.lib.video.VideoMode."""

    def __init__(self, width: int, height: int, bits_per_pixel: int, fps: int = 60,
                 stride: Optional[int] = None):
        self.width = width
        self.height = height
        self.bits_per_pixel = bits_per_pixel
        self.bytes_per_pixel = (bits_per_pixel - 1) // 8 + 1
        self.fps = fps
        self.stride = stride if stride else width * self.bytes_per_pixel
        self.shape: Tuple[int, ...] = ((height, width) if self.bytes_per_pixel == 1
                                       else (height, width, self.bytes_per_pixel))

    def __repr__(self) -> str:
        return "VideoMode: width=%d height=%d bpp=%d fps=%d" % (
            self.width, self.height, self.bits_per_pixel, self.fps)

    def __eq__(self, mode: Any) -> bool:
        return (self.width == mode.width and self.height == mode.height
                and self.bits_per_pixel == mode.bits_per_pixel and self.fps == mode.fps
                and self.stride == mode.stride)

    __hash__ = None  # type: ignore[assignment]


class PixelFormat:
    """pynq.lib.video.PixelFormat: bits a pixel and the colour matrices into / out of BGR."""

    def __init__(self, bits_per_pixel: int, in_color: List[float], out_color: List[float],
                 fourcc: Optional[str] = None):
        self.bits_per_pixel = bits_per_pixel
        self.in_color = in_color
        self.out_color = out_color
        self.fourcc = fourcc


_IDENTITY = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
_SWAP_RB = [0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0]
_GRAY_OUT = [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
PIXEL_BGR = PixelFormat(24, _IDENTITY, _IDENTITY, "BG24")
PIXEL_RGB = PixelFormat(24, _SWAP_RB, _SWAP_RB, "RG24")
PIXEL_RGBA = PixelFormat(32, _SWAP_RB, _SWAP_RB, "RA24")
PIXEL_GRAY = PixelFormat(8, _IDENTITY, _GRAY_OUT)


# --- hardware -------------------------------------------------------------------------------


class AxiVdmaHardware(RegisterWindow):
    """The AXI VDMA's MM2S (read) channel; the monitor shows the parked frame."""

    def __init__(self, name: str, phys_addr: int, addr_range: int, parameters: Dict[str, str],
                 ddr: Any):
        super().__init__(name, phys_addr, addr_range)
        self.ddr = ddr
        self.framecount = int(parameters.get("C_NUM_FSTORES", "4"))
        self.control = 0
        self.status = 0x1  # halted
        self.scanouts = 0  # frames sent to the monitor since power-on

    @property
    def running(self) -> bool:
        return not self.status & 0x1

    def load(self, offset: int) -> int:
        if offset == VDMACR:
            return self.control
        if offset == VDMASR:
            return self.status
        if offset == PARK_PTR:
            park = super().load(PARK_PTR)
            return park | (park & 0x1F) << 16  # RdFrmStore: the parked frame is the one read
        return super().load(offset)

    def store(self, offset: int, value: int) -> None:
        if offset == VDMACR:
            self.control = value & ~0x4  # the reset bit clears itself
            self.status = (self.status & ~0x1) | (0 if value & 0x1 else 0x1)
        elif offset == VDMASR:
            self.status &= ~(value & 0x7000)  # interrupt bits: write 1 to clear
        else:
            if offset == PARK_PTR:
                value &= ~0x1F1F0000  # the frame-store fields are read-only
            super().store(offset, value)
            if offset in (VSIZE, PARK_PTR) and self.running:
                self._scan_out()

    def _scan_out(self) -> None:
        self.screen()
        self.scanouts += 1
        self.status |= FRAME_COUNT_IRQ

    def screen(self) -> Optional[np.ndarray]:
        """The picture on the monitor, (height, width, 3) uint8; None while halted."""
        if not self.running or not super().load(VSIZE):
            return None
        height, row = super().load(VSIZE), super().load(HSIZE)
        stride = super().load(STRIDE) & 0xFFFF
        address = super().load(FRAME_ADDRESSES + 4 * (super().load(PARK_PTR) & 0x1F))
        data = np.frombuffer(self.ddr.read(address, stride * height), np.uint8)
        return data.reshape(height, stride)[:, :row].reshape(height, row // 3, 3)

    def irq_line(self, pin: str) -> bool:
        return bool(pin == "mm2s_introut" and self.status & FRAME_COUNT_IRQ)

    def advance(self) -> bool:
        if not self.running:
            return False
        self._scan_out()
        return True


class DviDisplayHardware:
    """The Zynq HDMI-out front end that pynq drives from C (pynq.lib._video._display): the
    video timing controller and pixel clock. Starts in 640x480, stopped; setting a mode while
    running stops it; start and stop are idempotent. Its calls are in `log`."""

    def __init__(self) -> None:
        self.mode: Tuple[int, int] = (640, 480)
        self.running = False
        self.log: List[Tuple[Any, ...]] = []

    def set_mode(self, index: int) -> None:
        self.log.append(("mode", index))
        self.running = False
        self.mode = next(r for r, i in HDMI_OUT_MODES.items() if i == index)

    def start(self) -> None:
        self.log.append(("start",))
        self.running = True

    def stop(self) -> None:
        self.log.append(("stop",))
        self.running = False


# --- drivers ----------------------------------------------------------------------------------


class ColorConverter(DefaultIP):
    bindto = ["xilinx.com:hls:color_convert:1.0", "xilinx.com:hls:color_convert_2:1.0"]

    @property
    def colorspace(self) -> List[float]:
        return [((v & 0x1FF) - (v & 0x200)) / 256 for v in
                (self.read(0x10 + 8 * i) for i in range(12))]

    @colorspace.setter
    def colorspace(self, color: List[float]) -> None:
        if len(color) != 12:
            raise ValueError("Wrong number of elements in color specification")
        for i, c in enumerate(color):
            self.write(0x10 + 8 * i, int(c * 256))


class PixelPacker(DefaultIP):
    bindto = ["xilinx.com:hls:pixel_pack:1.0", "xilinx.com:hls:pixel_unpack:1.0",
              "xilinx.com:hls:pixel_pack_2:1.0", "xilinx.com:hls:pixel_unpack_2:1.0"]
    _MODES = {24: 0, 32: 1, 8: 2, 16: 3}

    def __init__(self, description: Dict[str, Any]):
        super().__init__(description)
        self._bpp = 24
        self.write(0x10, 0)

    @property
    def bits_per_pixel(self) -> int:
        mode = self.read(0x10)
        return {0: 24, 1: 32, 2: 8}.get(mode, 16)

    @bits_per_pixel.setter
    def bits_per_pixel(self, value: int) -> None:
        if value not in self._MODES:
            raise ValueError("Bits per pixel must be 8, 16, 24 or 32")
        self._bpp = value
        self.write(0x10, self._MODES[value])


class AxiVDMA(DefaultIP):
    """pynq.lib.video.AxiVDMA: `writechannel` (MM2S) only."""

    bindto = ["xilinx.com:ip:axi_vdma:6.2", "xilinx.com:ip:axi_vdma:6.3"]

    class MM2SChannel:
        def __init__(self, parent: "AxiVDMA", interrupt: Any, memory: Any):
            self._mmio = parent.mmio
            self._interrupt = interrupt
            self._count = parent.framecount
            self._frames: List[Any] = [None] * self._count
            self._mode: Optional[VideoMode] = None
            self.cacheable_frames = True
            self.memory = memory

        def _set_frame(self, index: int, frame: Any) -> None:
            self._frames[index] = frame
            self._mmio.write(FRAME_ADDRESSES + 4 * index,
                             0 if frame is None else frame.physical_address)
            self.reload()

        @property
        def running(self) -> bool:
            return (self._mmio.read(VDMASR) & 0x1) == 0

        @property
        def mode(self) -> Optional[VideoMode]:
            return self._mode

        @mode.setter
        def mode(self, value: VideoMode) -> None:
            if self.running:
                self.stop()
            self._mode = value

        def start(self) -> None:
            if not self._mode:
                raise RuntimeError("Video mode not set, channel not started")
            self._cache = _FrameCache(self._mode, self.memory, self.cacheable_frames)
            self._set_frame(0, self._cache.getframe())
            self._mmio.write(HSIZE, self._mode.width * self._mode.bytes_per_pixel)
            self._mmio.write(STRIDE, (self._mmio.read(STRIDE) & 0xF << 24) | self._mode.stride)
            self.reload()
            self._mmio.write(VDMACR, 0x00011089)
            while not self.running:
                pass
            self.reload()
            self.desiredframe = 0

        def stop(self) -> None:
            self._mmio.write(VDMACR, 0x00011080)
            while self.running:
                pass
            for i in range(self._count):
                self._set_frame(i, None)
            if hasattr(self, "_cache"):
                self._cache.clear()

        def reload(self) -> None:
            if self.running:
                self._mmio.write(VSIZE, self._mode.height)  # type: ignore[union-attr]

        def newframe(self) -> Any:
            return self._cache.getframe()

        def writeframe(self, frame: Any) -> None:
            if not self.running:
                raise RuntimeError("DMA channel not started")
            while self._mmio.read(VDMASR) & FRAME_COUNT_IRQ == 0:
                run_blocking(self._interrupt.wait())
            self._mmio.write(VDMASR, FRAME_COUNT_IRQ)
            frame.flush()
            following = (self.desiredframe + 1) % self._count
            self._set_frame(following, frame)
            self.desiredframe = following

        @property
        def desiredframe(self) -> int:
            return self._mmio.read(PARK_PTR) & 0x1F

        @desiredframe.setter
        def desiredframe(self, frame_number: int) -> None:
            if frame_number < 0 or frame_number >= self._count:
                raise ValueError("Invalid Frame Index")
            self._mmio.write(PARK_PTR, (self._mmio.read(PARK_PTR) & ~0x1F) | frame_number)

    def __init__(self, description: Dict[str, Any]):
        super().__init__(description)
        parameters = description["parameters"]
        if int(parameters["C_M_AXI_MM2S_ADDR_WIDTH"]) > 32:
            raise UnsupportedConfiguration("VDMA driver only supports 32-bit addresses")
        self.framecount = int(parameters["C_NUM_FSTORES"])
        self.writechannel = AxiVDMA.MM2SChannel(self, self.mm2s_introut,
                                                description["device"].default_memory)


class _FrameCache:
    """Frames of one mode from the board's memory (pynq recycles freed ones; this allocates)."""

    def __init__(self, mode: VideoMode, memory: Any, cacheable: bool):
        self._mode = mode
        self._memory = memory
        self._cacheable = cacheable

    def getframe(self) -> Any:
        return self._memory.allocate(self._mode.shape, np.uint8, cacheable=self._cacheable)

    def clear(self) -> None:
        pass


class HDMIOutFrontend(DefaultHierarchy):
    """pynq.lib.video.HDMIOutFrontend (Zynq DVI): `mode`, `start()`, `stop()`."""

    def __init__(self, description: Dict[str, Any]):
        super().__init__(description)
        self._display: DviDisplayHardware = self.device.hardware(description["fullpath"])
        self.start = self._display.start
        self.stop = self._display.stop

    @property
    def mode(self) -> VideoMode:
        return VideoMode(self._display.mode[0], self._display.mode[1], 24)

    @mode.setter
    def mode(self, value: VideoMode) -> None:
        resolution = (value.width, value.height)
        if resolution not in HDMI_OUT_MODES:
            raise ValueError("Invalid Output resolution %dx%d" % (value.width, value.height))
        self._display.set_mode(HDMI_OUT_MODES[resolution])


class VideoOut(DefaultHierarchy):
    """pynq.lib.video.VideoOut: base.video.hdmi_out."""

    def __init__(self, description: Dict[str, Any], vdma: Any = None):
        super().__init__(description)
        self._vdma = vdma
        self._color = self.color_convert
        self._pixel = self.pixel_unpack
        self._hdmi = self.frontend

    def configure(self, mode: VideoMode, pixelformat: Optional[PixelFormat] = None) -> Any:
        if self._vdma.writechannel.running:
            self._vdma.writechannel.stop()
        if pixelformat is None:
            defaults = {8: PIXEL_GRAY, 24: PIXEL_BGR, 32: PIXEL_RGBA}
            if mode.bits_per_pixel not in defaults:
                raise ValueError("No default pixel format for %d bpp" % mode.bits_per_pixel)
            pixelformat = defaults[mode.bits_per_pixel]
        if pixelformat.bits_per_pixel != mode.bits_per_pixel:
            raise ValueError("Video mode and pixel format have different sized pixels")
        self._color.colorspace = pixelformat.out_color
        self._pixel.bits_per_pixel = pixelformat.bits_per_pixel
        self._hdmi.mode = mode
        self._vdma.writechannel.mode = mode
        self._hdmi.start()
        return self._closing()

    def start(self) -> Any:
        self._vdma.writechannel.start()
        return self._stopping()

    def stop(self) -> None:
        self._vdma.writechannel.stop()

    def close(self) -> None:
        self.stop()
        self._hdmi.stop()

    @contextlib.contextmanager
    def _stopping(self) -> Iterator[None]:
        yield
        self.stop()

    @contextlib.contextmanager
    def _closing(self) -> Iterator[None]:
        yield
        self.close()

    @property
    def mode(self) -> Optional[VideoMode]:
        return self._vdma.writechannel.mode

    @property
    def colorspace(self) -> List[float]:
        return self._color.colorspace

    @colorspace.setter
    def colorspace(self, value: List[float]) -> None:
        self._color.colorspace = value

    @property
    def cacheable_frames(self) -> bool:
        return self._vdma.writechannel.cacheable_frames

    @cacheable_frames.setter
    def cacheable_frames(self, value: bool) -> None:
        self._vdma.writechannel.cacheable_frames = value

    def newframe(self) -> Any:
        return self._vdma.writechannel.newframe()

    def writeframe(self, frame: Any) -> None:
        self._vdma.writechannel.writeframe(frame)


class HDMIWrapper(DefaultHierarchy):
    """pynq.lib.video.HDMIWrapper: base.video, with `hdmi_out` and `axi_vdma`."""

    def __init__(self, description: Dict[str, Any]):
        super().__init__(description)
        self.hdmi_out._vdma = self.axi_vdma
