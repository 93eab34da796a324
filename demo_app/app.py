"""The demonstrator's main loop: camera -> preprocessing -> backbone -> NCM -> UI -> display.

`DemoApp.step()` runs one frame through the state machine; `run()` loops until quit or
the end of a finite camera and returns the summary: accuracy of the inference frames per
class (where the camera knows the ground truth, e.g. an image-folder replay), FPS and the
latency of each stage.
"""

import os
import pathlib
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from device.backends import Backbone
from device.camera import Camera, Frame
from device.display import Display
from device.errors import CameraError, MemoryFileError
from device.inputs import Event, InputSource
from device.memory import FewShotMemory
from device.preprocess import Preprocessor

from .state import DemoStateMachine
from .ui import draw_ui

__all__ = ["STAGES", "DemoApp", "StageTimer"]

STAGES = ("capture", "preprocess", "backbone", "ncm", "ui", "display")
# The FPS and stage latencies on screen change this often: readable (at 30+ frames a second
# they were a blur), and between changes their text is copied from the UI's cache instead of
# drawn again (anti-aliased text is the UI's costliest part)
FIGURES_REFRESH_S = 0.5


class StageTimer:
    """Per-stage wall-clock durations (seconds), one list a stage."""

    def __init__(self) -> None:
        self.samples: Dict[str, List[float]] = {s: [] for s in STAGES}
        self.last: Dict[str, float] = {s: 0.0 for s in STAGES}

    def add(self, stage: str, seconds: float) -> None:
        self.samples[stage].append(seconds)
        self.last[stage] = seconds

    def summary(self) -> Dict[str, Dict[str, float]]:
        out = {}
        for stage, values in self.samples.items():
            if values:
                ms = np.asarray(values) * 1e3
                out[stage] = {"mean_ms": round(float(ms.mean()), 4),
                              "p50_ms": round(float(np.median(ms)), 4),
                              "p95_ms": round(float(np.percentile(ms, 95)), 4),
                              "count": len(values)}
        return out


class DemoApp:
    """One demonstrator: its parts are passed in, so tests and the board share this loop."""

    def __init__(self, backbone: Backbone, camera: Camera, display: Display,
                 inputs: Sequence[InputSource], memory: FewShotMemory, init_frames: int = 10,
                 shots_per_press: int = 1, output_resolution: Tuple[int, int] = (800, 600),
                 memory_path: Optional[pathlib.Path] = None, unattended: bool = False):
        if shots_per_press < 1:
            raise ValueError("shots_per_press must be >= 1")
        self.backbone = backbone
        self.camera = camera
        self.display = display
        self.inputs = list(inputs)
        self.memory = memory
        self.preprocess = Preprocessor(backbone.card.input)
        self.shots_per_press = shots_per_press
        self.memory_path = memory_path
        self.unattended = unattended  # no buttons or keys: a camera error ends the run
        self.machine = DemoStateMachine(memory.num_classes, init_frames)
        self.timer = StageTimer()
        width, height = output_resolution
        self.canvas = np.zeros((height, width, 3), np.uint8)
        self._last_frame = np.zeros((120, 160, 3), np.uint8)
        self._last_label: Optional[str] = None
        self._pending: List[int] = []  # class slots of the shots still to take
        self._background = 0
        self._probabilities: Optional[np.ndarray] = None
        self._predicted: Optional[int] = None
        self._slot_labels: List[Optional[str]] = [None] * memory.num_classes
        self._restored = False
        self._started = False
        self._closed = False
        self.frames = 0
        self.inference_frames: List[Tuple[Optional[str], Optional[str]]] = []
        self._frame_times: List[float] = []
        self._figures: Optional[Tuple[float, Dict[str, float]]] = None   # FPS and latencies shown
        self._figures_at = 0.0
        self._inference_times: List[float] = []
        self._notice = ""
        self.interrupted = False
        if memory_path is not None and memory_path.is_file():
            try:
                self._restore(memory_path)
            except MemoryFileError as exc:  # a damaged file must not keep the board down
                self._notice = "starting with no classes: %s; %s" % (exc, self._set_aside(memory_path))
                warnings.warn(self._notice, stacklevel=2)

    @property
    def state(self) -> str:
        return self.machine.state

    def _set_aside(self, path: pathlib.Path) -> str:
        """Move a refused memory file out of the way, so that the first enrollment cannot
        overwrite the user's classes; says where it went (or that nothing will be saved)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = path.with_name("%s.refused-%s%s" % (path.stem, stamp, path.suffix))
        number = 1
        while aside.exists():
            aside = path.with_name("%s.refused-%s-%d%s" % (path.stem, stamp, number, path.suffix))
            number += 1
        try:
            os.replace(str(path), str(aside))
        except OSError as exc:
            self.memory_path = None  # never write over a file we could not keep
            return "it could not be moved aside (%s), so this session saves nothing to %s" % (exc, path)
        return "the refused file was kept as %s" % aside

    def _restore(self, path: pathlib.Path) -> None:
        loaded = FewShotMemory.load(path, feature_dim=self.backbone.feature_dim,
                                    model=self.backbone.card.name,
                                    temperature=self.memory.temperature,
                                    smoothing=self.memory.smoothing,
                                    classifier=self.memory.classifier, k=self.memory.k)
        self.memory = loaded
        self._slot_labels = [n if c else None for n, c in zip(loaded.names, loaded.shot_counts())]
        self._restored = True

    # --- the loop -------------------------------------------------------------------

    def run(self, max_frames: Optional[int] = None) -> Dict[str, Any]:
        """Loop until quit, the end of the camera or `max_frames`; then release every part,
        however the loop ended (an error of the loop wins over one of closing)."""
        start = time.perf_counter()
        try:
            while self.state != "quit" and (max_frames is None or self.frames < max_frames):
                self.step()
                if self.state == "error" and self.unattended:
                    # Nobody can press reset: give up with the reason instead of showing it forever.
                    raise CameraError(self.machine.message)
        except KeyboardInterrupt:
            self.interrupted = True  # Ctrl-C: a clean end, with its summary
        finally:
            failures = self._release()
        if failures:
            raise failures[0]
        return self.summary(time.perf_counter() - start)

    def close(self) -> None:
        """Release the camera, the display, the input sources and the backbone (idempotent)."""
        failures = self._release()
        if failures:
            raise failures[0]

    def _release(self) -> List[Exception]:
        """Close every part, each even when another fails; warn about and return failures."""
        if self._closed:
            return []
        self._closed = True
        failures: List[Exception] = []
        parts: List[Any] = [self.camera, self.display, *self.inputs, self.backbone]
        for part in parts:
            try:
                part.close()
            except Exception as exc:  # noqa: BLE001 (the other parts must still be released)
                warnings.warn("closing the %s failed: %s" % (type(part).__name__, exc),
                              RuntimeWarning, stacklevel=3)
                failures.append(exc)
        return failures

    def step(self) -> None:
        """One frame: capture, the user's event, the work of the state, UI, display."""
        t_start = time.perf_counter()
        if self.state == "reset":
            self._restart()
        if self.state in ("error", "quit"):
            self._idle_tick(t_start)
            return
        try:
            frame = self.camera.read()
        except CameraError as exc:
            self.camera.close()
            self.machine.camera_failed("camera lost: %s; press reset to recover" % exc)
            self._idle_tick(t_start)
            return
        if frame is None:
            self.machine.finished("end of the camera stream")
            return
        self._last_frame, self._last_label = frame.image, frame.label
        t_capture = time.perf_counter()
        self.timer.add("capture", t_capture - t_start)
        for action in self.machine.handle(self._poll(), self.memory.ready):
            if action.kind == "shot" and action.slot is not None and action.slot not in self._pending:
                # A press registers shots_per_press frames; pressing again during that burst
                # (a held button, "shot*5" in a script) adds nothing, another class queues.
                self._pending = [action.slot] * self.shots_per_press + self._pending
            elif action.kind == "quit":
                return
        if self.state == "reset":
            return  # restarts at the next frame
        inferring = False
        if self.state != "pause":
            inferring = self._process(frame)
        self._draw_and_show()
        elapsed = time.perf_counter() - t_start
        self.frames += 1
        self._frame_times.append(elapsed)
        if inferring:
            self._inference_times.append(elapsed)

    def _poll(self) -> Optional[Event]:
        for source in self.inputs:
            event = source.poll()
            if event is not None:
                return event
        return None

    def _restart(self) -> None:
        if not self._restored:
            self.memory.clear()
            self._slot_labels = [None] * self.memory.num_classes
            self.memory.names = ["class %d" % (i + 1) for i in range(self.memory.num_classes)]
            card_mean = self.backbone.card.feature_mean
            if card_mean is not None:
                self.memory.set_base_mean(card_mean, "model card")
            else:
                self.memory.set_base_mean(np.zeros(self.memory.feature_dim), "zero")
            if self._started and self.memory_path is not None:  # a reset forgets on disk too
                self.memory.save(self.memory_path, model=self.backbone.card.name)
        self._started = True
        self._pending, self._background = [], 0
        self._probabilities = self._predicted = None
        try:
            self.camera.open()
        except CameraError as exc:
            self.machine.camera_failed("camera unavailable: %s; press reset to retry" % exc)
            return
        self.machine.restarted(measure_base=not self._restored)  # a saved memory has its own
        self._restored = False
        self.machine.message, self._notice = self._notice, ""

    def _features(self, frame: Frame) -> np.ndarray:
        t0 = time.perf_counter()
        x = self.preprocess(frame.image)
        t1 = time.perf_counter()
        feature = self.backbone.features(x)[0]
        self.timer.add("preprocess", t1 - t0)
        self.timer.add("backbone", time.perf_counter() - t1)
        return feature

    def _process(self, frame: Frame) -> bool:
        """The work of the current state on this frame; True when the frame was classified."""
        state = self.state
        if state == "init":
            self.memory.add_background(self._features(frame))
            self._background += 1
            if self._background >= self.machine.init_frames:
                self.memory.finish_background()
                self.machine.init_done()
            return False
        if self._pending:
            self._register(frame, self._pending.pop())
            return False
        if state != "inference":
            return False
        feature = self._features(frame)
        t0 = time.perf_counter()
        prediction = self.memory.predict(feature)
        self.timer.add("ncm", time.perf_counter() - t0)
        self._probabilities, self._predicted = prediction.probabilities, prediction.index
        self.inference_frames.append((frame.label, self._slot_labels[prediction.index]))
        return True

    def _register(self, frame: Frame, slot: int) -> None:
        first = self.memory.shot_counts()[slot] == 0
        self.memory.register(slot, self._features(frame)[None],
                             thumbnail=frame.image if first else None)
        if frame.label and self._slot_labels[slot] is None:
            self._slot_labels[slot] = frame.label
            self.memory.names[slot] = frame.label
        if not self._pending and self.memory_path is not None:
            self.memory.save(self.memory_path, model=self.backbone.card.name)

    def _idle_tick(self, t_start: float) -> None:
        """Error/quit: no camera; still show the screen and listen for reset/quit."""
        self.machine.handle(self._poll(), self.memory.ready)
        if self.state != "quit":
            self._draw_and_show()
        self.frames += 1
        self._frame_times.append(time.perf_counter() - t_start)

    def _draw_and_show(self) -> None:
        t0 = time.perf_counter()
        if self._figures is None or t0 - self._figures_at >= FIGURES_REFRESH_S:
            fps = 1.0 / float(np.mean(self._frame_times[-30:])) if self._frame_times else 0.0
            self._figures = (fps, {s: self.timer.last[s] * 1e3 for s in STAGES})
            self._figures_at = t0
        fps, latency = self._figures
        message = self.machine.message
        if self.state == "registration" and not message:
            message = "registering class %d: button 0 shot, 1 next class, 2 infer" % (
                self.machine.current + 1)
        wrong = False
        if self.state == "inference" and not message and self._last_label:
            guess = self._slot_labels[self._predicted] if self._predicted is not None else None
            wrong = guess is not None and guess != self._last_label
            message = ("WRONG: predicted %s, the replay's ground truth is %s" % (guess, self._last_label)
                       if wrong else "replay ground truth: %s" % self._last_label)
        draw_ui(self.canvas, self._last_frame, self.state, self.memory.names,
                self.memory.shot_counts(), self.memory.thumbnails,
                self._probabilities if self.state == "inference" else None,
                self.machine.current, fps, latency, message, self._predicted, wrong)
        t1 = time.perf_counter()
        self.display.show(self.canvas)
        self.timer.add("ui", t1 - t0)
        self.timer.add("display", time.perf_counter() - t1)

    # --- the summary ------------------------------------------------------------------

    def summary(self, wall_s: float) -> Dict[str, Any]:
        per_class: Dict[str, Dict[str, Any]] = {}
        for truth, predicted in self.inference_frames:
            if truth is None:
                continue
            entry = per_class.setdefault(truth, {"frames": 0, "correct": 0})
            entry["frames"] += 1
            entry["correct"] += int(truth == predicted)
        for entry in per_class.values():
            entry["accuracy"] = entry["correct"] / entry["frames"]
        scored = sum(e["frames"] for e in per_class.values())
        stages = self.timer.summary()
        inference_ms = 1e3 * float(np.mean(self._inference_times)) if self._inference_times else None
        backbone_ms = stages.get("backbone", {}).get("mean_ms")
        return {
            "frames": self.frames,
            "wall_s": round(wall_s, 4),
            "fps": round(self.frames / wall_s, 2) if wall_s > 0 else None,
            "inference_frames": len(self.inference_frames),
            "inference_fps": round(1e3 / inference_ms, 2) if inference_ms else None,
            "inference_frame_ms": round(inference_ms, 4) if inference_ms else None,
            "non_backbone_ms": (round(inference_ms - backbone_ms, 4)
                                if inference_ms and backbone_ms is not None else None),
            "accuracy": (sum(e["correct"] for e in per_class.values()) / scored
                         if scored else None),
            "per_class": per_class,
            "classes": {str(i + 1): {"name": self.memory.names[i], "shots": c}
                        for i, c in enumerate(self.memory.shot_counts()) if c},
            "latency": stages,
            "states": self.machine.history,
            "final_state": self.state,
            "message": self.machine.message,
            "interrupted": self.interrupted,
            "backend": self.backbone.name,
            "model": str(self.backbone.card.model_path),
            "base_mean": self.memory.base_source,
        }
