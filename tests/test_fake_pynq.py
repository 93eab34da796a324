"""The pynq fakes behave like pynq: each test states a fact of pynq's source (or its own tests,
tests/test_axigpio.py) or of the Xilinx IP, and checks the fake keeps it."""

import asyncio

import numpy as np
import pytest

from tests.fake_pynq import (
    PIXEL_BGR,
    PIXEL_GRAY,
    PIXEL_RGBA,
    TENSIL_BITFILE,
    AxiGPIO,
    DecodeError,
    FakeBoard,
    FakeDDR,
    FakeOverlay,
    PynqBuffer,
    Read,
    VideoMode,
    Write,
    install,
)
from tests.fake_pynq.board import ip_entry
from tests.fake_pynq.ip import DefaultIP

GPIO_VLNV = "xilinx.com:ip:axi_gpio:2.0"
DMA_VLNV = "xilinx.com:ip:axi_dma:7.1"


def _board_with(*entries, **options):
    """A board whose only design, "test.bit", holds `entries` (ip_entry dicts)."""
    design = {e["fullpath"]: e for e in entries}
    return FakeBoard(designs={"test.bit": lambda: (dict(design), {})}, **options)


def _gpio(width=32, interrupt=False, dual=False):
    parameters = {"C_GPIO_WIDTH": str(width), "C_IS_DUAL": "1" if dual else "0",
                  "C_GPIO2_WIDTH": str(width), "C_INTERRUPT_PRESENT": "1" if interrupt else "0"}
    return ip_entry("gpio", GPIO_VLNV, 0x10000, parameters,
                    ["ip2intc_irpt"] if interrupt else [])


def _dma(s2mm=False, interrupts=(), **parameters):
    values = {"c_include_mm2s": "1", "c_include_s2mm": "1" if s2mm else "0",
              "c_m_axi_mm2s_data_width": "64", "c_m_axi_s2mm_data_width": "64",
              "c_sg_length_width": "26", "C_M_AXI_MM2S_DATA_WIDTH": "64"}
    values.update(parameters)
    return ip_entry("axi_dma_0", DMA_VLNV, 0x8040_0000, values, interrupts)


# --- MMIO and register windows -------------------------------------------------------------


def test_check_transactions_fails_on_a_missing_an_extra_or_a_different_access():
    board = _board_with(_gpio())
    gpio = FakeOverlay("test.bit", device=board).gpio
    window = board.hardware("gpio")
    gpio.channel1.read()
    with pytest.raises(AssertionError, match=r"missing \[Read\(0x8, 0x0\)\]"):
        window.check_transactions([Read(0x0, 0), Read(0x8, 0)])
    gpio.channel1.read()
    gpio.channel2.read()
    with pytest.raises(AssertionError, match=r"extra \[Read\(0x8, 0x0\)\]"):
        window.check_transactions([Read(0x0, 0)])
    gpio.channel1.write(1, 1)
    with pytest.raises(AssertionError, match=r"access #0 is Write\(0x0, 0x1\), expected Read"):
        window.check_transactions([Read(0x0, 1)])
    with window.expect([Read(0x0, 0)]):
        gpio.channel1.read()
    assert Read(0, 1) != Write(0, 1)


def test_mmio_keeps_pynqs_argument_checks():
    board = _board_with(ip_entry("regs", "example.org:ip:registers:1.0", 0x10000, {}))
    mmio = FakeOverlay("test.bit", device=board).regs.mmio  # DefaultIP over plain registers
    with pytest.raises(MemoryError, match="Unaligned read"):
        mmio.read(2)
    with pytest.raises(MemoryError, match="Unaligned write"):
        mmio.write(6, 1)
    with pytest.raises(ValueError, match="Offset cannot be negative"):
        mmio.read(-4)
    with pytest.raises(ValueError, match="1, 2, 4 and 8-byte reads"):
        mmio.read(0, 3)
    with pytest.raises(ValueError, match="int or bytes"):
        mmio.write(0, 1.5)
    with pytest.raises(IndexError):
        mmio.read(0x10000)
    mmio.write(0x4, b"\x12\x34\x56\x78\xff\x00\x00\x00")  # bytes: one word a register
    assert mmio.read(0x4) == 0x78563412 and mmio.read(0x4, 1) == 0x12
    assert mmio.read(0x4, 8) == 0x000000FF_78563412
    assert mmio.read(0x4, 8, "big") == 0x78563412_000000FF
    board.hardware("regs").check_transactions([
        Write(0x4, 0x78563412), Write(0x8, 0xFF), Read(0x4, 0x78563412), Read(0x4, 0x78563412),
        Read(0x4, 0x78563412), Read(0x8, 0xFF), Read(0x4, 0x78563412), Read(0x8, 0xFF)])


# --- AxiGPIO (the register traffic of pynq's tests/test_axigpio.py) --------------------------


@pytest.fixture
def gpio32():
    board = _board_with(_gpio())
    return FakeOverlay("test.bit", device=board).gpio, board.hardware("gpio")


def test_axigpio_output_slices_write_data_as_pynqs_tests_expect(gpio32):
    gpio, window = gpio32
    gpio.setdirection(AxiGPIO.Output)
    gpio.channel1[0:3].on()
    gpio.channel1[0:2].off()
    gpio.channel1[1:3].write(3)
    gpio.channel1[0:4].toggle()
    assert gpio.channel1[1].read() == 0  # an output reads back what it wrote, no bus access
    window.check_transactions([Write(0x0, 0x7), Write(0x0, 0x4), Write(0x0, 0x6),
                               Write(0x0, 0x9)])
    with pytest.raises(ValueError, match="too large for 2 bits"):
        gpio.channel1[0:2].write(4)
    with pytest.raises(RuntimeError, match="cannot read from an output"):
        gpio.channel1.read()


def test_axigpio_inout_slices_switch_tri_as_pynqs_tests_expect(gpio32):
    gpio, window = gpio32
    window.store(0x4, 0x78563412)  # TRI as pynq's test sets it up
    window.pins[1].values = [0x1]
    assert gpio.channel1[0].read() == 1
    window.check_transactions([Read(0x4, 0x78563412), Write(0x4, 0x78563413),
                               Read(0x0, 0x1)])
    window.store(0x4, 0x78563412)
    gpio.channel1[8:16].write(0x12)
    window.check_transactions([Read(0x4, 0x78563412), Write(0x4, 0x78560012),
                               Write(0x0, 0x1200)])


def test_axigpio_direction_length_and_the_ips_width():
    board = _board_with(_gpio(width=4, dual=True))
    board.script_pins("gpio", [0xFF])  # the pins beyond the IP's 4 bits read 0
    gpio = FakeOverlay("test.bit", device=board).gpio
    channel = gpio.channel1
    channel.setlength(4)
    channel.setdirection("in")
    assert channel.read() == 0xF and len(channel) == 4 and channel[3].read() == 1
    with pytest.raises(IndexError):
        channel[4]
    with pytest.raises(RuntimeError, match="cannot write to an Input"):
        channel.write(1, 1)
    with pytest.raises(ValueError, match="'in', 'out' or 'inout'"):
        channel.setdirection("input")
    gpio.setdirection("out", channel=2)
    gpio.channel2.write(0x3, 0xF)
    board.hardware("gpio").check_transactions([Read(0x0, 0xF), Read(0x0, 0xF), Write(0x8, 0x3)])


def test_axigpio_interrupts_go_through_gier_ier_and_isr():
    board = _board_with(_gpio(width=4, interrupt=True))
    board.script_pins("gpio", [0, 0, 0b0100])
    gpio = FakeOverlay("test.bit", device=board).gpio
    gpio.channel1.setdirection("in")
    gpio.channel1[2].wait_for_value(1)
    board.hardware("gpio").check_transactions([
        Write(0x11C, 0x80000000),  # the constructor enables the global interrupt
        Read(0x0, 0x0),
        Read(0x128, 0x0), Write(0x128, 0x1),  # channel 1's interrupt on while waiting
        Read(0x120, 0x1), Write(0x120, 0x1),  # acknowledged (toggle on write)
        Read(0x128, 0x1), Write(0x128, 0x0),
        Read(0x0, 0x4)])
    with pytest.raises(RuntimeError, match="never raise"):
        gpio.channel1[2].wait_for_value(0)


def test_axigpio_without_an_interrupt_refuses_to_wait(gpio32):
    gpio, window = gpio32
    with pytest.raises(RuntimeError, match="Interrupts not available"):
        asyncio.run(gpio.channel1.wait_for_interrupt_async())
    window.check_transactions([])  # no GIER write at construction either


# --- overlay binding ----------------------------------------------------------------------------


def test_overlay_binds_drivers_by_ip_type_lazily_and_once():
    board = FakeBoard()
    overlay = FakeOverlay("base.bit", device=board)
    entry = overlay.ip_dict["btns_gpio"]
    assert {"fullpath", "type", "phys_addr", "addr_range", "interrupts", "parameters", "device",
            "driver", "mem_id", "memtype", "gpio", "registers", "state", "bdtype"} <= set(entry)
    assert entry["driver"] is AxiGPIO and entry["interrupts"]["ip2intc_irpt"]["fullpath"] \
        == "btns_gpio/ip2intc_irpt"
    board.hardware("btns_gpio").check_transactions([])  # nothing built before it is touched
    assert isinstance(overlay.btns_gpio, AxiGPIO) and overlay.btns_gpio is overlay.btns_gpio
    board.hardware("btns_gpio").check_transactions([Write(0x11C, 0x80000000)])
    with pytest.raises(AttributeError, match="Could not find IP or hierarchy nope"):
        _ = overlay.nope


def test_overlay_version_mismatch_gives_defaultip_unless_ignore_version():
    other = ip_entry("gpio", "xilinx.com:ip:axi_gpio:3.0", 0x10000, {})
    board = _board_with(other)
    with pytest.warns(UserWarning, match="Use ignore_version=True"):
        overlay = FakeOverlay("test.bit", device=board)
    assert type(overlay.gpio) is DefaultIP
    assert isinstance(FakeOverlay("test.bit", device=board, ignore_version=True).gpio, AxiGPIO)


def test_overlay_loading_rules():
    board = FakeBoard()
    with pytest.raises(OSError, match="nope.bit does not exist"):
        FakeOverlay("nope.bit", device=board)
    base = FakeOverlay("/home/xilinx/base.bit", device=board)
    assert base.is_loaded() and board.downloads == ["base.bit"]
    tensil = FakeOverlay(TENSIL_BITFILE, device=board, download=False)
    with pytest.raises(RuntimeError, match="Overlay not currently loaded"):
        _ = tensil.axi_dma_0
    FakeOverlay(TENSIL_BITFILE, device=board)
    assert tensil.is_loaded() and not base.is_loaded()


# --- video ----------------------------------------------------------------------------------------


def test_videomode_matches_pynqs_arithmetic_and_equality():
    assert [VideoMode(8, 2, bpp).bytes_per_pixel for bpp in (8, 12, 16, 24, 32)] == [1, 2, 2, 3, 4]
    assert VideoMode(800, 600, 8).shape == (600, 800)
    assert VideoMode(800, 600, 24).shape == (600, 800, 3) and VideoMode(800, 600, 24).stride == 2400
    assert VideoMode(800, 600, 24) == VideoMode(800, 600, 24, 60, 2400)
    assert VideoMode(800, 600, 24) != VideoMode(800, 600, 24, stride=4096)
    assert VideoMode(800, 600, 24) != VideoMode(800, 600, 24, fps=30)
    with pytest.raises(AttributeError):
        VideoMode(800, 600, 24) == None  # noqa: B015, E711 (pynq's __eq__ reads mode.width)
    with pytest.raises(TypeError):
        hash(VideoMode(800, 600, 24))


@pytest.fixture
def hdmi():
    board = FakeBoard()
    hdmi_out = FakeOverlay("base.bit", device=board).video.hdmi_out
    return board, hdmi_out


def test_configure_on_a_running_output_stops_it_as_pynq_does(hdmi):
    board, hdmi_out = hdmi
    hdmi_out.configure(VideoMode(800, 600, 24), PIXEL_BGR)
    hdmi_out.start()
    vdma = board.hardware("video/axi_vdma")
    assert vdma.running
    hdmi_out.configure(VideoMode(1280, 720, 24))  # 24 bpp: BGR by default
    assert not vdma.running and hdmi_out.mode == VideoMode(1280, 720, 24)
    with pytest.raises(RuntimeError, match="DMA channel not started"):
        hdmi_out.writeframe(hdmi_out.newframe())
    assert board.hardware("video/hdmi_out/frontend").log == [
        ("mode", 1), ("start",), ("mode", 2), ("start",)]


def test_video_out_refuses_what_pynq_refuses(hdmi):
    board, hdmi_out = hdmi
    with pytest.raises(RuntimeError, match="Video mode not set"):
        hdmi_out.start()
    with pytest.raises(AttributeError):
        hdmi_out.newframe()  # no frame cache before the first start
    with pytest.raises(ValueError, match="Invalid Output resolution 1024x768"):
        hdmi_out.configure(VideoMode(1024, 768, 24))
    with pytest.raises(ValueError, match="different sized pixels"):
        hdmi_out.configure(VideoMode(800, 600, 24), PIXEL_GRAY)
    with pytest.raises(ValueError, match="No default pixel format for 16 bpp"):
        hdmi_out.configure(VideoMode(800, 600, 16))
    hdmi_out.configure(VideoMode(640, 480, 32))
    assert board.hardware("video/hdmi_out/pixel_unpack").writes_to(0x10)[-1] == 1  # 32 bpp
    assert hdmi_out.colorspace == PIXEL_RGBA.out_color


def test_context_managers_stop_and_close_and_frames_come_from_ddr(hdmi):
    board, hdmi_out = hdmi
    vdma, frontend = board.hardware("video/axi_vdma"), board.hardware("video/hdmi_out/frontend")
    with hdmi_out.configure(VideoMode(640, 480, 24), PIXEL_BGR):
        with hdmi_out.start():
            frame = hdmi_out.newframe()
            assert isinstance(frame, PynqBuffer) and frame.bo.cacheable  # pynq's default
            frame[:] = (10, 20, 30)
            hdmi_out.writeframe(frame)
            np.testing.assert_array_equal(vdma.screen()[0, 0], [10, 20, 30])
        assert not vdma.running and frontend.running
    assert not frontend.running and frontend.log[-1] == ("stop",)
    del frame
    assert board.ddr.used == 0  # every frame freed once the VDMA let go of it
    board.ddr.check_no_hazards()


# --- DDR and pynq.allocate ------------------------------------------------------------------------


def test_allocate_aligns_like_cma_and_runs_out_like_a_small_board():
    ddr = FakeDDR(base=0x1000_0000, size=4 << 20)
    small = ddr.allocate((3,), np.uint8)
    block = ddr.allocate((16384,), np.uint32)  # 64 KiB
    large = ddr.allocate((3 << 20,), np.uint8)
    assert small.physical_address % 4096 == 0 and block.physical_address % 0x10000 == 0
    assert large.physical_address % (1 << 20) == 0 and ddr.used == 4096 + 65536 + (3 << 20)
    assert block[4:].physical_address == block.physical_address + 16
    with pytest.raises(RuntimeError, match="BO allocation failed"):
        ddr.allocate((1 << 20,), np.uint8)
    large.freebuffer()
    ddr.allocate((1 << 20,), np.uint8).freebuffer()
    with ddr.allocate((8,), "u4") as scoped:
        phys = scoped.physical_address
        assert scoped.dtype == np.uint32
    assert phys not in ddr.buffers and ddr.peek(phys, 4) == b"\xde" * 4  # freed: poisoned
    with pytest.warns(DeprecationWarning, match="close no longer functional"):
        small.close()
    assert small.physical_address in ddr.buffers  # close() does not free in pynq 3


def test_pynq_allocate_is_installed_over_the_boards_ddr(monkeypatch):
    board = install(monkeypatch, ddr=FakeDDR(size=1 << 20))
    import pynq

    buffer = pynq.allocate((4,))
    assert buffer.dtype == np.uint32 and buffer.device is board.ddr
    assert pynq.allocate((4,), "u2", target=board.ddr).dtype == np.uint16
    with pytest.raises(RuntimeError, match="BO allocation failed"):
        pynq.allocate((2 << 20,), np.uint8)


def test_cache_model_stale_reads_and_the_hazards_a_board_would_not_report():
    ddr = FakeDDR(size=1 << 20)
    buffer = ddr.allocate((4,), np.uint32, cacheable=1)
    phys = buffer.physical_address
    buffer[:] = [1, 2, 3, 4]
    assert ddr.read(phys, 4) == b"\0" * 4  # not flushed: the device sees old memory
    assert "not flushed" in ddr.hazards[0]
    buffer.flush()
    assert ddr.read(phys, 8) == bytes([1, 0, 0, 0, 2, 0, 0, 0])
    ddr.write(phys, (7).to_bytes(4, "little"))
    assert buffer[0] == 1  # the CPU's copy is stale until invalidate()
    buffer[1] = 9
    buffer.flush()  # writes back the dirty word only
    assert ddr.peek(phys, 8) == bytes([7, 0, 0, 0, 9, 0, 0, 0])
    buffer[0] = 5
    buffer.flush()  # over the device's result
    assert "over data the device had written" in ddr.hazards[-1]
    buffer.invalidate()
    assert list(buffer) == [5, 9, 3, 4]
    ddr.read(phys + 4096, 4)
    assert "in no live buffer" in ddr.hazards[-1]
    assert [op for op, _, _ in ddr.memops] == ["allocate", "flush", "flush", "flush", "invalidate"]
    with pytest.raises(AssertionError, match="hazards"):
        ddr.check_no_hazards()
    with pytest.raises(DecodeError):
        ddr.read(0x0, 4)
    plain = ddr.allocate((4,), np.uint32)  # not cacheable: the array is the DDR
    plain[:] = 3
    assert ddr.read(plain.physical_address, 4) == (3).to_bytes(4, "little")
    assert ddr.hazards == []


# --- the AXI DMA ------------------------------------------------------------------------------


@pytest.fixture
def dma_board():
    board = FakeBoard()
    dma = FakeOverlay(TENSIL_BITFILE, device=board).axi_dma_0
    return board, dma, board.hardware("axi_dma_0")


def test_dma_of_the_tensil_design_has_what_tensils_driver_reads(dma_board):
    board, dma, hardware = dma_board
    assert int(dma.description["parameters"]["C_M_AXI_MM2S_DATA_WIDTH"]) == 64
    assert dma.buffer_max_size == (1 << 26) - 1 and dma.recvchannel is None
    hardware.check_transactions([Write(0x0, 0x1), Read(0x4, 0x0)])  # started at construction


def test_dma_transfer_streams_ddr_to_the_mm2s_sink_with_pynqs_traffic(dma_board):
    board, dma, hardware = dma_board
    hardware.transactions = []
    words = board.allocate((4,), np.uint64, cacheable=1)
    words[:] = [1, 2, 3, 4]
    dma.sendchannel.transfer(words, start=8, nbytes=16)
    dma.sendchannel.wait()
    assert hardware.mm2s_packets == [np.array([2, 3], np.uint64).tobytes()]
    assert dma.sendchannel.transferred == 16
    phys = words.physical_address
    hardware.check_transactions([
        Read(0x4, 0x0), Read(0x4, 0x0),  # running? idle? (a first transfer needs no Idle)
        Write(0x18, phys + 8), Write(0x1C, 0), Write(0x28, 16),
        Read(0x4, 0x1002), Read(0x4, 0x1002), Read(0x4, 0x1002), Read(0x4, 0x1002),
        Read(0x28, 16)])
    assert board.ddr.memops[-1] == ("flush", phys, 4096)  # pynq flushes before MM2S
    board.ddr.check_no_hazards()


def test_dma_refuses_what_pynq_refuses():
    board = _board_with(_dma(), dma_latency=2)
    dma = FakeOverlay("test.bit", device=board).axi_dma_0
    channel = dma.sendchannel
    buffer = board.allocate((1024,), np.uint64)
    channel.transfer(buffer)
    with pytest.raises(RuntimeError, match="DMA channel not idle"):
        channel.transfer(buffer)  # still streaming (two status reads of latency)
    channel.wait()
    with pytest.raises(ValueError, match="exceeds the maximum DMA buffer size 67108863"):
        channel.transfer(buffer, nbytes=1 << 26)
    with pytest.raises(RuntimeError, match="unaligned transfers; .* 8 bytes"):
        channel.transfer(buffer, start=4)
    with pytest.raises(AttributeError):
        channel.transfer(np.zeros(8, np.uint64))  # a plain array has no physical address
    channel.stop()
    with pytest.raises(RuntimeError, match="DMA channel not started"):
        channel.transfer(buffer)
    with pytest.raises(RuntimeError, match="DMA channel not started"):
        channel.wait()


def test_dma_moves_raw_memory_for_a_view_a_board_would_misread(dma_board):
    board, dma, hardware = dma_board
    matrix = board.allocate((4, 4), np.uint64)
    matrix[:] = np.arange(16).reshape(4, 4)
    column = matrix[:, 1]
    dma.sendchannel.transfer(column)
    dma.sendchannel.wait()
    assert hardware.mm2s_packets[-1] == np.arange(1, 5, dtype=np.uint64).tobytes()  # not 1,5,9,13
    assert "non-contiguous view" in board.ddr.hazards[0]
    dma.sendchannel.transfer(matrix, start=96, nbytes=64)
    dma.sendchannel.wait()
    assert "runs outside it" in board.ddr.hazards[1]


def test_dma_decode_error_halts_the_channel():
    board = _board_with(_dma())
    dma = FakeOverlay("test.bit", device=board).axi_dma_0
    elsewhere = FakeDDR(base=0x0800_0000, size=1 << 20).allocate((8,), np.uint64)
    dma.sendchannel.transfer(elsewhere)
    assert board.hardware("axi_dma_0").channels[0].status & 0x40  # DMADecErr
    with pytest.raises(RuntimeError, match="DMA channel not started"):  # pynq checks RS first
        dma.sendchannel.wait()


def test_a_sink_reads_and_writes_ddr_by_physical_address_like_an_accelerator():
    """The shape of the next issue's test: the driver streams instructions over MM2S, a model
    of the accelerator executes them against DDR, the driver invalidates and reads back."""
    board = FakeBoard(ddr=FakeDDR(size=2 << 20))
    dma = FakeOverlay(TENSIL_BITFILE, device=board).axi_dma_0
    source = board.allocate((4,), np.uint32, cacheable=1)
    result = board.allocate((4,), np.uint32, cacheable=1)

    def copy_and_double(stream: bytes) -> None:  # instruction: (src, dst, nbytes) uint64
        src, dst, nbytes = np.frombuffer(stream, np.uint64).tolist()
        values = np.frombuffer(board.ddr.read(src, nbytes), np.uint32)
        board.ddr.write(dst, (2 * values).tobytes())

    board.hardware("axi_dma_0").mm2s_sink = copy_and_double
    program = board.allocate((3,), np.uint64)
    program[:] = [source.physical_address, result.physical_address, 16]
    source[:] = [1, 2, 3, 4]
    source.flush()
    dma.sendchannel.transfer(program)
    dma.sendchannel.wait()
    assert list(result) == [0, 0, 0, 0]  # stale until invalidated
    result.invalidate()
    assert list(result) == [2, 4, 6, 8]
    board.ddr.check_no_hazards()


def test_s2mm_writes_the_stream_to_ddr_and_wait_invalidates():
    board = _board_with(_dma(s2mm=True, interrupts=("mm2s_introut", "s2mm_introut")),
                        dma_latency=3)  # still busy after wait_async's first reads: it awaits
    dma = FakeOverlay("test.bit", device=board).axi_dma_0
    hardware = board.hardware("axi_dma_0")
    hardware.s2mm_source = lambda most: bytes(range(min(most, 12)))
    received = board.allocate((16,), np.uint8, cacheable=1)
    dma.recvchannel.transfer(received)
    asyncio.run(dma.recvchannel.wait_async())
    assert dma.recvchannel.transferred == 12 and list(received[:12]) == list(range(12))
    assert hardware.writes_to(0x30) == [0x1001]  # interrupts enabled when the IP has them
    assert hardware.writes_to(0x34) == [0x1000] and not hardware.irq_line("s2mm_introut")
    assert board.ddr.memops[-1][0] == "invalidate"

