"""Cameras, inputs and displays; the board's ones through fakes of the pynq API."""

import pathlib
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from device.camera import (
    ImageFolderCamera,
    OpenCVCamera,
    SyntheticCamera,
    VideoFileCamera,
    list_images,
    open_camera,
    parse_resolution,
)
from device.display import (
    HdmiDisplay,
    HeadlessDisplay,
    MjpegServer,
    TeeDisplay,
    WindowDisplay,
    opencv_has_gui,
)
from device.errors import CameraError, HardwareError
from device.inputs import ButtonInput, Event, KeyboardInput, ScriptInput, parse_script
from tests import fake_pynq
from tests.fake_pynq import Read, Write
from tests.fake_pynq.board import ip_entry

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "demo"


# --- cameras -------------------------------------------------------------------------


def test_replay_is_ordered_by_class_then_name_with_labels():
    items = list_images(FIXTURES)
    assert len(items) == 125
    assert [label for _, label in items[:26:25]] == ["dog", "frog"]
    assert [p.name for p, _ in items[:3]] == ["0000.png", "0001.png", "0002.png"]
    camera = ImageFolderCamera.from_folder(FIXTURES).open()
    frames = [camera.read() for _ in range(125)]
    assert camera.read() is None  # finite
    assert [f.label for f in frames[::25]] == ["dog", "frog", "horse", "ship", "truck"]
    assert frames[0].image.shape == (32, 32, 3) and frames[0].image.dtype == np.uint8


def test_replay_loops_and_resizes(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / ("%d.png" % i)), np.full((10, 10, 3), i * 100, np.uint8))
    camera = ImageFolderCamera.from_folder(tmp_path, loop=True, resolution=(16, 12)).open()
    frames = [camera.read() for _ in range(5)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 100, 0, 100, 0]
    assert frames[0].image.shape == (12, 16, 3) and frames[0].label is None


def test_replay_of_an_unreadable_image_raises_camera_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    camera = ImageFolderCamera.from_folder(tmp_path).open()
    with pytest.raises(CameraError, match="broken.png is missing or not a decodable image"):
        camera.read()


def test_video_file_camera(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(4):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    camera = VideoFileCamera(path).open()
    frames = []
    while True:
        frame = camera.read()
        if frame is None:
            break
        frames.append(frame)
    assert len(frames) == 4 and frames[0].image.shape == (48, 64, 3)
    looped = VideoFileCamera(path, loop=True).open()
    assert len([looped.read() for _ in range(9)]) == 9
    with pytest.raises(CameraError, match="no such video file"):
        VideoFileCamera(tmp_path / "none.avi").open()


def test_synthetic_camera_moves():
    camera = SyntheticCamera((160, 120), num_frames=3).open()
    a, b = camera.read(), camera.read()
    assert a.image.shape == (120, 160, 3) and not np.array_equal(a.image, b.image)
    camera.read()
    assert camera.read() is None


def test_a_missing_usb_camera_is_a_camera_error():
    with pytest.raises(CameraError, match="cannot open the camera"):
        OpenCVCamera("/dev/video-that-does-not-exist").open()


def test_open_camera_specs(tmp_path):
    assert isinstance(open_camera("synthetic", (80, 60)), SyntheticCamera)
    camera = open_camera("3")
    assert isinstance(camera, OpenCVCamera) and camera.requested == (160, 120)
    assert isinstance(open_camera(str(FIXTURES)), ImageFolderCamera)
    with pytest.raises(CameraError, match="not a camera number"):
        open_camera(str(tmp_path / "nothing"))
    assert parse_resolution("160x120") == (160, 120)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_resolution("160*120")


# --- inputs --------------------------------------------------------------------------


def test_script_grammar():
    steps = parse_script("wait*2, shot*2\n# a comment\nnext register:3 infer,pause reset quit")
    assert steps == [None, None, Event("shot"), Event("shot"), Event("next"),
                     Event("register", 2), Event("infer"), Event("pause"), Event("reset"),
                     Event("quit")]
    for bad, message in (("jump", "is not one of"), ("shot*x", "repeat count"),
                         ("register:0", "class number from 1")):
        with pytest.raises(ValueError, match=message):
            parse_script(bad)


def test_script_from_a_file(tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("shot\ninfer\n")
    source = ScriptInput(str(path))
    assert [source.poll(), source.poll(), source.poll()] == [Event("shot"), Event("infer"), None]
    assert source.finished


def test_buttons_give_one_event_a_press_and_switches_a_flip():
    board = fake_pynq.FakeBoard()
    board.script_pins("btns_gpio", [0, 0b0001, 0b0001, 0, 0b0110, 0, 0, 0b1000, 0])
    board.script_pins("switches_gpio", [0, 0, 0, 0, 0, 0b01, 0b11, 0b11, 0b10])
    overlay = fake_pynq.FakeOverlay("base.bit", device=board)
    source = ButtonInput(overlay.btns_gpio.channel1, overlay.switches_gpio.channel1)
    events = [source.poll() for _ in range(10)]
    assert events == [Event("shot"), None, None, Event("next"), Event("infer"), Event("pause"),
                      Event("quit"), Event("reset"), Event("pause"), None]
    # one DATA read a poll (and one at start), nothing else
    board.hardware("btns_gpio").check_transactions(
        [Write(0x11C, 0x80000000)] + [Read(0x0, v) for v in (0, 1, 1, 0, 6, 0, 0, 8, 0, 0, 0)])
    board.hardware("switches_gpio").check_transactions(
        [Write(0x11C, 0x80000000)] + [Read(0x0, v) for v in (0, 0, 0, 0, 0, 1, 3, 3, 2, 2, 2)])


def test_buttons_from_the_base_overlay_use_its_own_configured_drivers(monkeypatch):
    board = fake_pynq.install(monkeypatch)
    board.script_pins("btns_gpio", [0, 0b100])
    overlay = board.pynq.Overlay("base.bit")
    source = ButtonInput.from_overlay(overlay)
    assert source.poll() == Event("infer")
    # the overlay's bound drivers, set up as pynq's base.py does: 4 and 2 input wires
    assert source.buttons is overlay.btns_gpio.channel1
    assert source.switches is overlay.switches_gpio.channel1
    assert (len(source.buttons), len(source.switches)) == (4, 2)
    with pytest.raises(RuntimeError, match="cannot write to an Input"):
        source.buttons.write(1, 1)
    board.hardware("btns_gpio").check_transactions(
        [Write(0x11C, 0x80000000), Read(0x0, 0), Read(0x0, 0b100)])
    board.hardware("switches_gpio").check_transactions(
        [Write(0x11C, 0x80000000), Read(0x0, 0), Read(0x0, 0)])
    board.hardware("leds_gpio").check_transactions([])


def test_buttons_of_the_tensil_design_which_has_no_switches(monkeypatch):
    board = fake_pynq.install(monkeypatch)
    board.script_pins("btns_gpio", [0, 0b1000])
    source = ButtonInput.from_overlay(board.pynq.Overlay(fake_pynq.TENSIL_BITFILE))
    assert source.switches is None and source.poll() == Event("reset")


def test_buttons_name_a_missing_or_unbound_gpio(monkeypatch):
    odd = ip_entry("btns_gpio", "xilinx.com:ip:axi_gpio:1.0", 0x41200000, {})
    designs = {"empty.bit": lambda: ({}, {}), "odd.bit": lambda: ({"btns_gpio": dict(odd)}, {})}
    board = fake_pynq.install(monkeypatch, designs=designs)
    with pytest.raises(HardwareError, match=r"no btns_gpio IP \(its AXI GPIO IPs: none\)"):
        ButtonInput.from_overlay(board.pynq.Overlay("empty.bit"))
    with pytest.warns(UserWarning, match="ignore_version"):
        overlay = board.pynq.Overlay("odd.bit")
    with pytest.raises(HardwareError, match=r"bound btns_gpio \(xilinx.com:ip:axi_gpio:1.0\) to "
                                            r"DefaultIP"):
        ButtonInput.from_overlay(overlay)


def test_board_inputs_off_the_board_name_pynq():
    with pytest.raises(HardwareError, match="pynq is not available here"):
        ButtonInput.from_overlay(object())


# --- displays ------------------------------------------------------------------------


# PYNQ-Z1 HDMI out at 800x600x24: a frame is 1,440,000 bytes, 352 pages, so CMA aligns it
# to 1 MiB; the fake DDR starts at 0x1000_0000.
FRAME_BYTES, FRAMES = 352 * 4096, (0x1000_0000, 0x1020_0000, 0x1040_0000)


def _vdma_start(address):
    """What pynq's AxiVDMA.MM2SChannel.start() writes: frame 0, sizes, run, park on 0."""
    return [Write(0x5C, address), Read(0x4, 1), Write(0x54, 2400), Read(0x58, 0),
            Write(0x58, 2400), Read(0x4, 1), Write(0x0, 0x11089), Read(0x4, 0), Read(0x4, 0),
            Write(0x50, 600), Read(0x28, 0), Write(0x28, 0)]


def _vdma_writeframe(shown, index, address):
    """writeframe(): wait for the frame-count interrupt, ack it, store the frame, park on it."""
    park = shown | shown << 16
    return [Read(0x4, 0x1000), Read(0x4, 0x1000), Write(0x4, 0x1000), Read(0x28, park),
            Write(0x5C + 4 * index, address), Read(0x4, 0), Write(0x50, 600), Read(0x28, park),
            Write(0x28, shown << 16 | index)]


def _vdma_stop(status):
    return [Write(0x0, 0x11080), Read(0x4, status)] + [
        t for i in range(4) for t in (Write(0x5C + 4 * i, 0), Read(0x4, status))]


def test_hdmi_display_gives_exactly_the_register_traffic_of_pynq_video(monkeypatch):
    board = fake_pynq.install(monkeypatch)
    import pynq.lib.video as video

    hdmi_out = board.pynq.Overlay("base.bit").video.hdmi_out
    vdma = board.hardware("video/axi_vdma")
    display = HdmiDisplay(hdmi_out, video, (800, 600))
    frame = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    display.show(frame)
    np.testing.assert_array_equal(vdma.screen(), frame)
    display.show(np.zeros((300, 400, 3), np.uint8))  # resized to the mode
    assert not vdma.screen().any()
    display.close()
    display.close()  # idempotent

    vdma.check_transactions(
        [Read(0x4, 1), Read(0x4, 1)]  # configure(): running? then the mode setter's check
        + _vdma_start(FRAMES[0]) + _vdma_writeframe(0, 1, FRAMES[1])
        + _vdma_writeframe(1, 2, FRAMES[2]) + _vdma_stop(0x1001))
    assert board.hardware("video/hdmi_out/frontend").log == [("mode", 1), ("start",), ("stop",)]
    board.hardware("video/hdmi_out/color_convert").check_transactions(
        [Write(0x10 + 8 * i, 256 if i in (0, 4, 8) else 0) for i in range(12)])  # BGR: identity
    board.hardware("video/hdmi_out/pixel_unpack").check_transactions(
        [Write(0x10, 0), Write(0x10, 0)])  # the driver's reset, then 24 bpp
    board.ddr.check_memops(
        [("allocate", FRAMES[0], FRAME_BYTES), ("allocate", FRAMES[1], FRAME_BYTES),
         ("flush", FRAMES[1], FRAME_BYTES), ("allocate", FRAMES[2], FRAME_BYTES),
         ("flush", FRAMES[2], FRAME_BYTES)] + [("free", a, FRAME_BYTES) for a in FRAMES])
    board.ddr.check_no_hazards()
    with pytest.raises(RuntimeError, match="HDMI output is closed"):
        display.show(frame)


def test_hdmi_display_refuses_a_resolution_the_front_end_cannot_drive(monkeypatch):
    board = fake_pynq.install(monkeypatch)
    import pynq.lib.video as video

    hdmi_out = board.pynq.Overlay("base.bit").video.hdmi_out
    with pytest.raises(ValueError, match=r"cannot show 1024x768; its resolutions are 640x480, "
                                         r"800x600, 1280x720"):
        HdmiDisplay(hdmi_out, video, (1024, 768))
    board.hardware("video/axi_vdma").check_transactions([])


def test_hdmi_display_that_cannot_start_stops_the_front_end_again(monkeypatch):
    board = fake_pynq.install(monkeypatch, ddr=fake_pynq.FakeDDR(size=1 << 20))  # < one frame
    with pytest.raises(HardwareError, match="HDMI output could not start 800x600: BO allocation "
                                            "failed"):
        HdmiDisplay.from_overlay(board.pynq.Overlay("base.bit"))
    assert board.hardware("video/hdmi_out/frontend").log == [("mode", 1), ("start",), ("stop",)]
    assert not board.hardware("video/axi_vdma").running


def test_hdmi_display_from_the_overlay(monkeypatch):
    board = fake_pynq.install(monkeypatch)
    display = HdmiDisplay.from_overlay(board.pynq.Overlay("base.bit"), (640, 480))
    assert board.hardware("video/axi_vdma").screen().shape == (480, 640, 3)
    display.close()
    assert board.ddr.used == 0
    no_video = {"gpio.bit": lambda: ({}, {})}
    board = fake_pynq.install(monkeypatch, designs=no_video)
    with pytest.raises(HardwareError, match="no video hierarchy"):
        HdmiDisplay.from_overlay(board.pynq.Overlay("gpio.bit"))


def test_headless_display_writes_pngs_and_video(tmp_path):
    display = HeadlessDisplay(tmp_path / "frames", save_every=2, video=tmp_path / "out.mp4")
    for i in range(5):
        display.show(np.full((60, 80, 3), 40 * i, np.uint8))
    display.close()
    assert [p.name for p in display.saved] == ["frame_000000.png", "frame_000002.png",
                                              "frame_000004.png"]
    assert int(cv2.imread(str(display.saved[1]))[0, 0, 0]) == 80
    # Issue 25: the MP4 was MPEG-4 part 2, which browsers do not play: H.264, else VP8 WebM
    assert (display.video_codec, display.video_path.suffix) in (("avc1", ".mp4"), ("VP80", ".webm"))
    capture = cv2.VideoCapture(str(display.video_path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(int(image[30, 40].mean()))
    capture.release()
    assert len(frames) == 5 and abs(frames[4] - 160) < 12


def test_the_stream_keeps_a_snapshot_and_paces_a_replay_while_someone_watches():
    """Issue 25: once a viewer connected the replay ran at full speed, six frames arrived and the
    stream closed."""
    display = HeadlessDisplay(mjpeg_port=0, pace=20.0)
    try:
        base = display.mjpeg.url
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + "snapshot.jpg", timeout=5)
        began = time.monotonic()
        for i in range(10):  # nobody watches: no pacing
            display.show(np.full((24, 32, 3), 20 * i, np.uint8))
        assert time.monotonic() - began < 0.4
        snapshot = urllib.request.urlopen(base + "snapshot.jpg", timeout=5).read()
        assert abs(int(cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR).mean()) - 180) < 6
        viewer = urllib.request.urlopen(base + "stream", timeout=5)
        assert display.mjpeg.wait_for_viewer(5)
        began = time.monotonic()
        for i in range(10):  # watched: 20 frames a second
            display.show(np.full((24, 32, 3), 20 * i, np.uint8))
        assert time.monotonic() - began >= 0.4
        viewer.close()
    finally:
        display.close()


def test_mjpeg_stream_serves_multipart_jpeg_frames():
    server = MjpegServer(0, host="127.0.0.1")
    try:
        frame = np.zeros((40, 60, 3), np.uint8)
        frame[:, :30] = 255
        response = urllib.request.urlopen("http://127.0.0.1:%d/stream" % server.port, timeout=5)
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        for _ in range(200):  # wait for the handler to count the viewer
            if server.watching:
                break
            urllib.request.urlopen("http://127.0.0.1:%d/" % server.port, timeout=5).read()
        server.publish(frame)
        assert response.readline() == b"--frame\r\n"
        assert response.readline() == b"Content-Type: image/jpeg\r\n"
        length = int(response.readline().split(b":")[1])
        response.readline()
        jpeg = response.read(length)
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == (40, 60, 3) and decoded[:, :25].mean() > 240
        response.close()
        page = urllib.request.urlopen("http://127.0.0.1:%d/" % server.port, timeout=5).read()
        assert b"/stream" in page
    finally:
        server.close()


def test_keyboard_mapping_of_the_reference_demo(monkeypatch):
    keys = iter([ord("1"), ord("4"), ord("i"), ord("r"), ord("p"), ord("q"), -1, ord("z")])
    source = KeyboardInput()
    monkeypatch.setattr(source._cv2, "waitKey", lambda ms: next(keys))
    assert [source.poll() for _ in range(8)] == [
        Event("register", 0), Event("register", 3), Event("infer"), Event("reset"),
        Event("pause"), Event("quit"), None, None]


def test_window_without_gui_support_says_what_to_use_instead():
    if opencv_has_gui():
        pytest.skip("this OpenCV has a GUI")
    with pytest.raises(HardwareError, match="use --headless or --hdmi"):
        WindowDisplay()


def test_tee_display_shows_and_closes_every_display(monkeypatch):
    board = fake_pynq.install(monkeypatch)
    recorder = HeadlessDisplay()
    tee = TeeDisplay([HdmiDisplay.from_overlay(board.pynq.Overlay("base.bit"), (640, 480)),
                      recorder])
    tee.show(np.full((60, 80, 3), 9, np.uint8))
    assert (board.hardware("video/axi_vdma").screen() == 9).all()
    tee.close()
    assert recorder.count == 1 and not board.hardware("video/axi_vdma").running
    assert board.hardware("video/hdmi_out/frontend").log[-1] == ("stop",)


def test_mjpeg_listens_on_loopback_paces_each_viewer_and_waits_for_one():
    server = MjpegServer(0, max_fps=10)
    try:
        assert server._server.server_address[0] == "127.0.0.1"
        assert not server.wait_for_viewer(0.1)
        response = urllib.request.urlopen(server.url + "stream", timeout=5)
        assert server.wait_for_viewer(5)
        frame = np.zeros((8, 8, 3), np.uint8)
        received, began = 0, time.monotonic()
        def publish():
            while time.monotonic() - began < 1.5:
                server.publish(frame)
                time.sleep(0.002)

        publisher = threading.Thread(target=publish)
        publisher.start()
        while time.monotonic() - began < 1.0:
            if response.readline() == b"--frame\r\n":
                received += 1
        publisher.join()
        assert 5 <= received <= 12  # 10 a second, not the hundreds published
        response.close()
    finally:
        server.close()


def test_mjpeg_caps_its_connections_and_closes_idle_ones():
    """Issue 23: one thread and one descriptor per idle connection, no timeout, no cap: 1,023 idle
    connections made the stream unreachable."""
    import socket

    server = MjpegServer(0, max_connections=3, idle_timeout_s=0.5)
    idle = []
    try:
        # Three idle connections take every slot; a fourth is answered 503 at once
        for _ in range(3):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.1)
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert extra.recv(64).startswith(b"HTTP/1.0 503")
        extra.close()
        # The idle ones are closed after idle_timeout_s, and a viewer gets the stream again
        for sock in idle:
            assert sock.recv(64) == b""  # closed by the server: end of file
        response = urllib.request.urlopen(server.url + "stream", timeout=5)
        assert server.wait_for_viewer(5)
        response.close()
    finally:
        for sock in idle:
            sock.close()
        server.close()
