"""The demonstrator end to end: replay camera + scripted buttons through the real loop."""

import json
import pathlib

import pytest

import device.__main__ as device_main
from demo_app import cli
from demo_app.app import DemoApp
from demo_app.replay import build_replay_plan
from device.backends import create_backbone
from device.camera import Camera, ImageFolderCamera, SyntheticCamera
from device.display import HeadlessDisplay
from device.errors import CameraError
from device.inputs import ScriptInput
from device.memory import FewShotMemory
from device.model_card import load_card
from tests import fake_pynq
from tests.fake_pynq.assets import make_card, make_tiny_model, write_card

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "demo"
BUNDLED = ROOT / "models" / "resnet9_f16_strided_32.onnx"
NOVEL = ["dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def tiny_card(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    model = make_tiny_model(folder)
    return write_card(model, make_card(model))


class RecordingDisplay(HeadlessDisplay):
    def __init__(self):
        super().__init__()
        self.frames = []

    def show(self, frame):
        self.frames.append(frame.copy())


class FlakyCamera(Camera):
    """Hardware that cannot exist here: a camera that dies after `fail_after` frames, once."""

    name = "camera 0"

    def __init__(self, inner, fail_after):
        super().__init__()
        self.inner = inner
        self.fail_after = fail_after
        self.opened = 0

    def _open(self):
        self.opened += 1
        self.inner.open()

    def _read(self):
        if self.opened == 1 and self.count >= self.fail_after:
            raise CameraError("camera 0 stopped delivering frames (unplugged or failed)")
        return self.inner.read()


def _app(card, camera, script, classes=5, init_frames=0, shots=1, **options):
    backbone = create_backbone("onnxruntime", card)
    display = RecordingDisplay()
    memory = FewShotMemory(backbone.feature_dim, classes)
    app = DemoApp(backbone, camera, display, [ScriptInput(script)], memory, init_frames, shots,
                  (320, 240), **options)
    return app, display


def test_replay_plan_aligns_images_and_script():
    plan = build_replay_plan(FIXTURES, shots=3, init_frames=4, queries=2, classes=NOVEL[:2])
    labels = [label for _, label in plan.items]
    assert labels == ["dog", "frog", "dog", "frog"] + ["dog"] * 3 + ["frog"] * 3 + [
        "dog", "frog"] * 2
    assert plan.script == "wait*4,shot,wait*2,next,wait*2,infer,wait*3"
    names = [p.name for p, _ in plan.items]
    assert names[:4] == ["0024.png", "0024.png", "0023.png", "0023.png"]  # background: the end
    assert names[4:7] == ["0000.png", "0001.png", "0002.png"] and names[10:12] == ["0003.png"] * 2
    with pytest.raises(ValueError, match="no images for classes"):
        build_replay_plan(FIXTURES, classes=["cat"])


def test_end_to_end_replay_with_a_script(tiny_card):
    plan = build_replay_plan(FIXTURES, shots=3, init_frames=5, queries=4)
    app, display = _app(tiny_card, ImageFolderCamera(plan.items), plan.script, init_frames=5,
                        shots=3)

    summary = app.run()

    assert summary["states"] == ["reset", "init", "idle", "registration", "inference", "quit"]
    assert summary["frames"] == len(plan.items) == 5 + 15 + 20
    assert summary["inference_frames"] == 20 and summary["base_mean"] == "background"
    assert {n: c["shots"] for n, c in summary["classes"].items()} == {str(i): 3 for i in range(1, 6)}
    assert [c["name"] for c in summary["classes"].values()] == NOVEL
    assert sorted(summary["per_class"]) == NOVEL
    assert all(entry["frames"] == 4 for entry in summary["per_class"].values())
    assert set(summary["latency"]) == {"capture", "preprocess", "backbone", "ncm", "ui", "display"}
    assert summary["latency"]["ncm"]["count"] == 20 and summary["latency"]["backbone"]["count"] == 40
    assert summary["fps"] > 0 and summary["non_backbone_ms"] > 0
    assert len(display.frames) == 40 and display.frames[-1].shape == (240, 320, 3)
    assert app.memory.thumbnails[4] is not None


def test_bundled_backbone_recognises_novel_classes_at_the_cards_accuracy():
    """5-way 5-shot on held-out CIFAR-10 novel images, one press of K=5 frames a class. The
    card's 5-shot figure comes from training's evaluation (1000 episodes); `make bench-demo`
    reports the same run on 100 queries a class. One episode of 90 frames varies: margin 0.15."""
    card = load_card(BUNDLED)
    expected = [f["accuracy"] for f in card.raw["fewshot"] if f["shots"] == 5 and f["ways"] == 5]
    plan = build_replay_plan(FIXTURES, shots=5, init_frames=10, queries=18, classes=NOVEL)
    app, _ = _app(BUNDLED, ImageFolderCamera(plan.items), plan.script, init_frames=10, shots=5)

    summary = app.run()

    assert summary["inference_frames"] == 90
    assert summary["accuracy"] >= expected[0] - 0.15, (summary["accuracy"], expected)
    assert summary["accuracy"] > 0.2 + 0.1  # chance is 0.2


def test_camera_failure_shows_the_error_and_reset_recovers(tiny_card):
    camera = FlakyCamera(SyntheticCamera((64, 48)), fail_after=4)
    app, display = _app(tiny_card, camera, "shot,wait*2,infer,wait*3,reset,wait,shot,infer,quit")

    summary = app.run()

    assert summary["states"] == ["reset", "idle", "registration", "inference", "error", "reset",
                                 "idle", "registration", "inference", "quit"]
    assert camera.opened == 2
    assert app.memory.shot_counts()[0] == 1  # the memory started over after the reset
    assert summary["inference_frames"] == 1 + 1  # frame 4 before the failure, one after reset


def test_error_state_names_the_camera_on_screen(tiny_card):
    camera = FlakyCamera(SyntheticCamera((64, 48)), fail_after=1)
    app, display = _app(tiny_card, camera, "wait*3")
    for _ in range(3):
        app.step()
    assert app.state == "error" and "camera 0 stopped delivering frames" in app.machine.message
    assert len(display.frames) == 3  # the screen stays alive in the error state

    def red(frame):  # the error state's colour (BGR 0, 0, 255) in the header and frame border
        return int(((frame[:, :, 2] > 200) & (frame[:, :, 0] < 50) & (frame[:, :, 1] < 50)).sum())

    assert red(display.frames[0]) == 0 and red(display.frames[-1]) > 100


def test_inference_without_shots_is_explained_not_a_crash(tiny_card):
    app, _ = _app(tiny_card, SyntheticCamera((64, 48)), "infer,wait,register:2,infer,quit")
    app.step()
    assert app.state == "idle" and "no class has a shot yet" in app.machine.message
    summary = app.run()
    assert summary["states"] == ["reset", "idle", "registration", "inference", "quit"]
    assert app.memory.registered == [1] and summary["inference_frames"] == 1


def test_pause_freezes_classification(tiny_card):
    app, _ = _app(tiny_card, SyntheticCamera((64, 48)), "shot,infer,pause,wait*5,pause,quit")
    summary = app.run()
    assert summary["inference_frames"] == 1 + 1  # the infer frame, then the resume frame
    assert "pause" in summary["states"]


def test_memory_survives_a_restart(tiny_card, tmp_path):
    path = tmp_path / "memory.npz"
    plan = build_replay_plan(FIXTURES, shots=2, init_frames=0, queries=3, classes=NOVEL[:3])
    first, _ = _app(tiny_card, ImageFolderCamera(plan.items), plan.script, classes=3, shots=2,
                    memory_path=path)
    before = first.run()
    assert path.is_file()
    queries = plan.items[6:]
    second, _ = _app(tiny_card, ImageFolderCamera(queries), "infer,wait*8", classes=3,
                     init_frames=5, memory_path=path)

    after = second.run()

    assert after["states"] == ["reset", "idle", "inference", "quit"]  # no init: saved base mean
    assert after["classes"] == before["classes"] and after["per_class"] == before["per_class"]

    third, _ = _app(tiny_card, SyntheticCamera((64, 48)), "reset,wait,quit", classes=3,
                    memory_path=path)
    third.run()
    assert FewShotMemory.load(path).shot_counts() == [0, 0, 0]  # reset forgets on disk too


def test_a_damaged_memory_file_is_reported_kept_aside_and_the_demo_starts_empty(tiny_card, tmp_path):
    """Issue 23: the first enrollment after a refusal overwrote the user's file, exit 0."""
    path = tmp_path / "memory.npz"
    damaged = b"PK\x03\x04 truncated"
    path.write_bytes(damaged)
    with pytest.warns(UserWarning, match="starting with no classes: .*memory.npz: not a valid.*kept as"):
        app, _ = _app(tiny_card, SyntheticCamera((64, 48)), "wait,shot,quit", memory_path=path)
    app.step()
    assert app.state == "idle" and "not a valid few-shot memory file" in app.machine.message
    aside = list(tmp_path.glob("memory.refused-*.npz"))
    assert len(aside) == 1 and str(aside[0]) in app.machine.message  # the screen says where it went
    app.run()
    assert FewShotMemory.load(path).shot_counts()[0] == 1  # the new session's shot
    assert aside[0].read_bytes() == damaged  # the refused file, untouched


def test_a_memory_of_another_model_is_kept_aside_too(tiny_card, tmp_path):
    path = tmp_path / "memory.npz"
    first, _ = _app(tiny_card, SyntheticCamera((64, 48)), "wait,shot,quit", memory_path=path)
    first.run()
    other = FewShotMemory.load(path)
    other.save(path, model="another-backbone")
    saved = path.read_bytes()
    with pytest.warns(UserWarning, match="another-backbone.*kept as"):
        second, _ = _app(tiny_card, SyntheticCamera((64, 48)), "wait,shot,quit", memory_path=path)
    second.run()
    assert [p.read_bytes() for p in tmp_path.glob("memory.refused-*.npz")] == [saved]


def test_cli_headless_replay_writes_frames_and_summary(tiny_card, tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli.main(["--model", str(tiny_card), "--replay", str(FIXTURES), "--headless",
                     "--out-dir", str(out), "--save-every", "10", "--shots", "2",
                     "--queries", "2", "--init-frames", "5"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inference_frames"] == 10 and summary["final_state"] == "quit"
    assert len(list((out / "frames").glob("*.png"))) == 3  # 25 frames, every 10th
    assert "accuracy of the inference frames" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--backend", "fpga"], "unknown backend 'fpga'; known backends: auto, onnxruntime, opencv, tensil, "
                          "tensil-emu, torch"),
    (["--model", "/nonexistent/model.onnx"], "/nonexistent/model.json: model card not found"),
    (["--camera", "/nonexistent/video.avi"], "/nonexistent/video.avi: not a camera number"),
])
def test_cli_errors_name_the_problem(tiny_card, args, message, capsys, tmp_path):
    base = ["--model", str(tiny_card), "--headless", "--out-dir", str(tmp_path)]
    assert cli.main(base + args) == 2
    assert message in capsys.readouterr().err


def test_cli_on_a_board_drives_hdmi_and_buttons(tiny_card, tmp_path, monkeypatch):
    board = fake_pynq.install(monkeypatch)
    # one value a poll (after one at start): button 0 pressed at frame 2, button 2 at frame 4;
    # switch 1 flipped at frame 6 (quit)
    board.script_pins("btns_gpio", [0, 0, 1, 0, 4, 0, 0, 0])
    board.script_pins("switches_gpio", [0, 0, 0, 0, 0, 0, 2, 2])
    code = cli.main(["--model", str(tiny_card), "--hdmi", "--buttons", "--camera", "synthetic",
                     "--init-frames", "0", "--shots", "1", "--out-dir", str(tmp_path)])

    assert code == 0
    assert board.downloads == ["base.bit"] and len(board.overlays) == 1
    vdma = board.hardware("video/axi_vdma")
    frames = 5  # frames 1-5 shown; the quit at frame 6 ends the loop
    assert vdma.writes_to(0x28)[-1] & 0x1F == frames % 4  # parked on the last frame written
    assert len([v for v in vdma.writes_to(0x0) if v == 0x11080]) == 1  # stopped once, at exit
    assert not vdma.running and board.ddr.used == 0  # every frame buffer freed
    assert board.hardware("video/hdmi_out/frontend").log == [("mode", 1), ("start",), ("stop",)]
    assert board.hardware("btns_gpio").writes_to(0x0) == []  # inputs are only read
    board.ddr.check_no_hazards()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["states"] == ["reset", "idle", "registration", "inference", "quit"]


class Part:
    """A part of the demo that records its close() and can fail there."""

    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail = log, name, fail

    def close(self):
        self.log.append(self.name)
        if self.fail:
            raise RuntimeError("%s would not close" % self.name)


class ClosingBackbone:
    """The tiny ONNX backbone, its close() recorded."""

    def __init__(self, inner, log):
        self.inner, self.log = inner, log

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def close(self):
        self.log.append("backbone")
        self.inner.close()


class BrokenCamera(SyntheticCamera):
    def _read(self):
        if self.count == 1:
            raise OSError("the USB bus reset")  # not a CameraError: the loop itself fails
        return super()._read()


def _closing_app(card, camera, log, display_fails=False):
    backbone = ClosingBackbone(create_backbone("onnxruntime", card), log)
    memory = FewShotMemory(backbone.feature_dim, 2)
    display = Part(log, "display", fail=display_fails)
    display.show = lambda frame: None
    inputs = [ScriptInput("wait*2,quit"), Part(log, "buttons")]
    inputs[1].poll = lambda: None
    return DemoApp(backbone, camera, display, inputs, memory, 0, 1, (160, 120))


@pytest.mark.parametrize("ending", ["quit", "max_frames", "loop error", "close error"])
def test_run_releases_every_part_however_it_ends(tiny_card, ending):
    log = []
    camera = BrokenCamera((32, 24)) if ending == "loop error" else SyntheticCamera((32, 24))
    app = _closing_app(tiny_card, camera, log, display_fails=ending == "close error")
    if ending == "quit":
        assert app.run()["final_state"] == "quit"
    elif ending == "max_frames":
        assert app.run(max_frames=1)["frames"] == 1
    elif ending == "loop error":
        with pytest.raises(OSError, match="USB bus reset"):
            app.run()
    else:
        with pytest.warns(RuntimeWarning, match="closing the Part failed: display would not"), \
                pytest.raises(RuntimeError, match="display would not close"):
            app.run()
    assert log == ["display", "buttons", "backbone"] and not camera.is_open
    app.close()  # once is enough
    assert log == ["display", "buttons", "backbone"]


def test_python_m_device_info(tiny_card, capsys):
    assert device_main.main(["info", str(tiny_card)]) == 0
    assert "backend onnxruntime, input [1, 3, 32, 32], 8 features" in capsys.readouterr().out
    assert device_main.main(["bogus"]) == 2


def test_a_held_shot_button_takes_one_burst(tiny_card):
    """`shot*5` with --shots 5: five frames of one press, not 9 (issue 13); another class queues."""
    app, _ = _app(tiny_card, SyntheticCamera((64, 48)), "shot*5,wait*6", shots=5)
    app.run(max_frames=11)
    assert app.memory.shot_counts()[:2] == [5, 0]
    app, _ = _app(tiny_card, SyntheticCamera((64, 48)), "shot,next,wait*12", shots=5)
    app.run(max_frames=14)
    assert app.memory.shot_counts()[:2] == [5, 5]


def test_a_wrong_replay_prediction_is_marked_on_screen(tiny_card):
    # Registered as "dog", then shown frogs: every inference frame contradicts the ground truth.
    plan = build_replay_plan(FIXTURES, shots=2, init_frames=0, queries=2, classes=["dog"])
    frogs = [(path.parent.parent / "frog" / path.name, "frog") for path, _ in plan.items[2:]]
    items = plan.items[:2] + [(p, label) for p, label in frogs if p.exists()][:2]
    app, display = _app(tiny_card, ImageFolderCamera(items), "shot,wait,infer,wait", shots=2)
    app.run()
    assert "WRONG: predicted dog, the replay's ground truth is frog" in app.machine.message or any(
        (frame[:, :, 2] > 200).sum() > 500 for frame in display.frames[-2:])
    red = ((display.frames[-1][:, :, 2] > 200) & (display.frames[-1][:, :, 1] < 50)).sum()
    assert red > 500  # the thick red frame around the view


def test_headless_without_a_camera_gives_up_with_the_device_named(tiny_card, tmp_path, capsys):
    code = cli.main(["--model", str(tiny_card), "--camera", "/dev/video99", "--headless",
                     "--out-dir", str(tmp_path), "--max-frames", "1000"])
    assert code == 2
    err = capsys.readouterr().err
    assert "camera /dev/video99: cannot open the camera" in err


class InterruptedCamera(SyntheticCamera):
    """Ctrl-C arrives while the loop reads a frame (SIGINT raises KeyboardInterrupt there)."""

    def _read(self):
        if self.count >= 3:
            raise KeyboardInterrupt
        return super()._read()


def test_ctrl_c_ends_the_demo_cleanly_with_its_summary(tiny_card):
    """Issue 23: Ctrl-C ended the demo with a traceback and no summary.json."""
    camera = InterruptedCamera((64, 48))
    app, display = _app(tiny_card, camera, "wait*50")
    summary = app.run()
    assert summary["interrupted"] is True and summary["frames"] == 3
    assert not camera.is_open  # every part released


@pytest.mark.parametrize("resolution", [(640, 480), (800, 600), (1280, 720)])
def test_the_ui_copies_rendered_text_with_the_pixels_puttext_draws(resolution, monkeypatch):
    # demo_app.ui renders each (text, style) once and copies it afterwards; every screen is
    # the one cv2.putText straight onto the canvas gives, in each state, with the red frame of
    # a wrong replay prediction, a long message and the selected rows' rectangles.
    import numpy as np

    from demo_app import ui
    from device.opencv import cv2

    def put_text(canvas, text, org, scale=0.5, colour=(255, 255, 255), background=None):
        cv2.putText(canvas, text, org, ui._FONT, scale, colour, 1, cv2.LINE_AA)

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    names = ["class %d" % i for i in range(5)]
    thumbnails = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in names] [:3] + [None, None]
    latency = {"capture": 0.25, "preprocess": 0.06, "backbone": 6.07, "ncm": 0.12, "ui": 0.41, "display": 0.0}
    screens = [("inference", [3, 1, 2, 0, 0], np.array([0.1, 0.6, 0.3, 0, 0]), "", 1, False),
               ("inference", [3, 1, 2, 0, 0], np.array([1.0, 0, 0, 0, 0]), "WRONG: predicted a, the replay's "
                "ground truth is b" + " and more" * 20, 0, True),
               ("registration", [1, 0, 0, 0, 0], None, "registering class 2: button 0 shot", None, False),
               ("error", [0] * 5, None, "camera lost", None, False)]
    width, height = resolution
    for state, shots, probabilities, message, predicted, wrong in screens:
        drawn = []
        for text in (ui._text, put_text):
            monkeypatch.setattr(ui, "_text", text)
            canvas = np.zeros((height, width, 3), np.uint8)
            for _ in range(2):   # the second screen copies what the first rendered
                ui.draw_ui(canvas, frame, state, names, shots, thumbnails, probabilities, 1, 29.7,
                           latency, message, predicted, wrong)
            drawn.append(canvas)
        assert np.array_equal(*drawn), (state, resolution)
