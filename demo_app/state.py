"""The demonstrator's state machine, free of cameras and screens so every transition is
testable.

States: reset -> init (base mean from background frames) -> idle; registration (shots
of the current class); inference; pause (back to where it was); error (camera lost:
only reset or quit act); quit. `handle(event)` returns the `Action`s the app must carry
out (take K shots of a class, clear the memory, reopen the camera, ...).
"""

from typing import List, Optional

from device.inputs import Event

__all__ = ["STATES", "Action", "DemoStateMachine"]

STATES = ("reset", "init", "idle", "registration", "inference", "pause", "error", "quit")


class Action:
    """Something the app does for a transition: 'shot' (of slot), 'restart' (clear the
    memory and reopen the camera), 'quit'."""

    def __init__(self, kind: str, slot: Optional[int] = None):
        self.kind = kind
        self.slot = slot

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Action) and (self.kind, self.slot) == (other.kind, other.slot)

    def __repr__(self) -> str:
        return "Action(%r%s)" % (self.kind, "" if self.slot is None else ", %d" % self.slot)


class DemoStateMachine:
    """States and the current class; `message` explains the last refusal or error."""

    def __init__(self, num_classes: int, init_frames: int):
        if num_classes < 1 or init_frames < 0:
            raise ValueError("need num_classes >= 1 and init_frames >= 0")
        self.num_classes = num_classes
        self.init_frames = init_frames
        self.state = "reset"
        self.current = 0
        self.message = ""
        self.paused_from = "idle"
        self.history: List[str] = ["reset"]

    def _go(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.history.append(state)

    # --- app-driven transitions -----------------------------------------------------

    def restarted(self, measure_base: bool = True) -> None:
        """The app cleared the memory and (re)opened the camera: collect the base mean
        (unless there are no background frames to take, or a restored memory has one)."""
        if self.state != "reset":
            raise RuntimeError("restarted() outside the reset state (state: %s)" % self.state)
        self.current = 0
        self.message = ""
        self._go("init" if self.init_frames and measure_base else "idle")

    def init_done(self) -> None:
        if self.state != "init":
            raise RuntimeError("init_done() outside the init state (state: %s)" % self.state)
        self._go("idle")

    def camera_failed(self, reason: str) -> None:
        """The camera failed: show why and wait for a reset."""
        self.message = reason
        self._go("error")

    def finished(self, reason: str) -> None:
        self.message = reason
        self._go("quit")

    # --- user events ----------------------------------------------------------------

    def handle(self, event: Optional[Event], ready: bool) -> List[Action]:
        """Apply a user event; `ready` says whether any class has a shot (inference needs one)."""
        if event is None or event.kind == "wait":
            return []
        kind = event.kind
        if kind == "quit":
            self._go("quit")
            return [Action("quit")]
        if kind == "reset":
            self._go("reset")
            return [Action("restart")]
        if self.state in ("reset", "init", "error", "quit"):
            if self.state == "error":
                self.message = "camera error: press reset (button 3 / r) to recover"
            return []
        if kind == "pause":
            if self.state == "pause":
                self._go(self.paused_from)
            else:
                self.paused_from = self.state
                self._go("pause")
            return []
        if self.state == "pause":
            self.message = "paused: press pause again to resume"
            return []
        return self._user_action(event, ready)

    def _user_action(self, event: Event, ready: bool) -> List[Action]:
        kind = event.kind
        if kind == "infer":
            if not ready:
                self.message = "no class has a shot yet: register one (button 0) before inference"
                return []
            self.message = ""
            self._go("inference")
            return []
        if kind == "next":
            self.current = (self.current + 1) % self.num_classes
        elif kind == "register":
            if not 0 <= (event.slot or 0) < self.num_classes:
                self.message = "class %d does not exist (%d classes)" % (
                    (event.slot or 0) + 1, self.num_classes)
                return []
            self.current = event.slot or 0
        self.message = ""
        self._go("registration")
        return [Action("shot", self.current)]
