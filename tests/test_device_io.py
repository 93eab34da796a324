"""Cameras, inputs and displays; the board's ones through fakes of the pynq API."""

import pathlib
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
    buttons = fake_pynq.FakeChannel([0, 0b0001, 0b0001, 0, 0b0110, 0, 0, 0b1000, 0])
    switches = fake_pynq.FakeChannel([0, 0, 0, 0, 0, 0b01, 0b11, 0b11, 0b10])
    source = ButtonInput(buttons, switches)
    events = [source.poll() for _ in range(10)]
    assert events == [Event("shot"), None, None, Event("next"), Event("infer"), Event("pause"),
                      Event("quit"), Event("reset"), Event("pause"), None]
    assert buttons.calls == [("read",)] * 11 and switches.calls == [("read",)] * 11


def test_buttons_from_the_base_overlay(monkeypatch):
    pynq = fake_pynq.install(monkeypatch)
    fake_pynq.FakeAxiGPIO.channels_for["btns_gpio"] = fake_pynq.FakeChannel([0, 0b100])
    overlay = pynq.Overlay("base.bit")
    source = ButtonInput.from_overlay(overlay)
    assert source.poll() == Event("infer")
    assert fake_pynq.FakeAxiGPIO.created == ["btns_gpio", "switches_gpio"]


def test_board_inputs_off_the_board_name_pynq():
    with pytest.raises(HardwareError, match="pynq is not available here"):
        ButtonInput.from_overlay(object())


# --- displays ------------------------------------------------------------------------


def test_hdmi_display_makes_exactly_the_calls_of_pynq_video():
    hdmi = fake_pynq.FakeHdmiOut()
    display = HdmiDisplay(hdmi, fake_pynq, (800, 600))
    frame = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    display.show(frame)
    display.show(np.zeros((300, 400, 3), np.uint8))  # resized to the mode
    display.close()
    display.close()  # idempotent
    assert hdmi.calls == [("configure", fake_pynq.VideoMode(800, 600, 24), fake_pynq.PIXEL_BGR),
                          ("start",), ("newframe",), ("writeframe", (600, 800, 3)),
                          ("newframe",), ("writeframe", (600, 800, 3)), ("stop",), ("close",)]
    np.testing.assert_array_equal(hdmi.written[0], frame)
    with pytest.raises(RuntimeError, match="HDMI output is closed"):
        display.show(frame)


def test_hdmi_display_from_the_overlay(monkeypatch):
    pynq = fake_pynq.install(monkeypatch)
    overlay = pynq.Overlay("base.bit")
    display = HdmiDisplay.from_overlay(overlay)
    assert overlay.video.hdmi_out.calls[:2] == [
        ("configure", fake_pynq.VideoMode(800, 600, 24), fake_pynq.PIXEL_BGR), ("start",)]
    display.close()


def test_headless_display_writes_pngs_and_video(tmp_path):
    display = HeadlessDisplay(tmp_path / "frames", save_every=2, video=tmp_path / "out.mp4")
    for i in range(5):
        display.show(np.full((60, 80, 3), 40 * i, np.uint8))
    display.close()
    assert [p.name for p in display.saved] == ["frame_000000.png", "frame_000002.png",
                                              "frame_000004.png"]
    assert int(cv2.imread(str(display.saved[1]))[0, 0, 0]) == 80
    capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()


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


def test_tee_display_shows_and_closes_every_display():
    hdmi = fake_pynq.FakeHdmiOut()
    recorder = HeadlessDisplay()
    tee = TeeDisplay([HdmiDisplay(hdmi, fake_pynq, (80, 60)), recorder])
    tee.show(np.zeros((60, 80, 3), np.uint8))
    tee.close()
    assert recorder.count == 1 and hdmi.calls[-2:] == [("stop",), ("close",)]
