"""Inputs: PYNQ buttons and switches (AxiGPIO), the keyboard, a scripted sequence.

Each source's `poll()` returns the next `Event` or None. Button numbers follow the
reference demonstrator: 0 shot of the current class, 1 next class and shot, 2 start
inference, 3 reset, 4 pause, 5 quit. On a PYNQ-Z1 the four push buttons are 0-3 and
the two slide switches are 4-5 (a switch acts when it is flipped either way).
"""

import collections
import pathlib
from typing import Any, Deque, List, Optional, Union

from .board import require_pynq
from .errors import HardwareError

__all__ = ["BUTTON_EVENTS", "EVENT_KINDS", "KEY_EVENTS", "ButtonInput", "Event", "InputSource",
           "KeyboardInput", "ScriptInput", "parse_script"]

EVENT_KINDS = ("shot", "next", "infer", "reset", "pause", "quit", "register", "wait")
BUTTON_EVENTS = ("shot", "next", "infer", "reset", "pause", "quit")


class Event:
    """What the user asked for; `slot` is the class of a "register" event (keys 1-4)."""

    def __init__(self, kind: str, slot: Optional[int] = None):
        if kind not in EVENT_KINDS:
            raise ValueError("unknown event %r; events: %s" % (kind, ", ".join(EVENT_KINDS)))
        self.kind = kind
        self.slot = slot

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and (self.kind, self.slot) == (other.kind, other.slot)

    def __repr__(self) -> str:
        return "Event(%r%s)" % (self.kind, "" if self.slot is None else ", %d" % self.slot)


KEY_EVENTS = {ord("i"): Event("infer"), ord("r"): Event("reset"), ord("p"): Event("pause"),
              ord("q"): Event("quit"), 27: Event("quit"), ord(" "): Event("shot"),
              ord("n"): Event("next")}
for _k in range(4):
    KEY_EVENTS[ord(str(_k + 1))] = Event("register", _k)


class InputSource:
    def poll(self) -> Optional[Event]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ButtonInput(InputSource):
    """Rising edges of the board's buttons (and flips of its switches) as events.

    `buttons` and `switches` are AxiGPIO input channels (`overlay.btns_gpio.channel1`),
    passed in; each poll reads each once.
    """

    def __init__(self, buttons: Any, switches: Any = None, num_buttons: int = 4):
        self.buttons = buttons
        self.switches = switches
        self.num_buttons = num_buttons
        self._pending: Deque[Event] = collections.deque()
        self._last_buttons = int(buttons.read())
        self._last_switches = int(switches.read()) if switches is not None else 0

    @classmethod
    def from_overlay(cls, overlay: Any) -> "ButtonInput":
        """The overlay's btns_gpio (4 buttons) and, if it has one, switches_gpio (2 switches).

        As pynq's base overlay does, this uses the drivers the overlay bound to those IPs
        (one driver an IP) and sets each channel's length and direction."""
        require_pynq()
        buttons = _input_channel(overlay, "btns_gpio", 4)
        switches = (_input_channel(overlay, "switches_gpio", 2)
                    if "switches_gpio" in overlay.ip_dict else None)
        return cls(buttons, switches)

    def poll(self) -> Optional[Event]:
        pressed = int(self.buttons.read())
        for bit in range(self.num_buttons):
            if pressed >> bit & 1 and not self._last_buttons >> bit & 1:
                self._pending.append(Event(BUTTON_EVENTS[bit]))
        self._last_buttons = pressed
        if self.switches is not None:
            position = int(self.switches.read())
            for bit in range(2):
                if (position ^ self._last_switches) >> bit & 1:
                    self._pending.append(Event(BUTTON_EVENTS[self.num_buttons + bit]))
            self._last_switches = position
        return self._pending.popleft() if self._pending else None


def _input_channel(overlay: Any, name: str, width: int) -> Any:
    """Channel 1 of the overlay's own AxiGPIO driver for `name`, set to `width` inputs."""
    if name not in overlay.ip_dict:
        gpio = sorted(k for k, v in overlay.ip_dict.items() if "axi_gpio" in str(v.get("type")))
        raise HardwareError("the overlay has no %s IP (its AXI GPIO IPs: %s)"
                            % (name, ", ".join(gpio) or "none"))
    channel = getattr(getattr(overlay, name), "channel1", None)
    if channel is None:
        raise HardwareError("pynq bound %s (%s) to %s, not to its AxiGPIO driver"
                            % (name, overlay.ip_dict[name].get("type"),
                               type(getattr(overlay, name)).__name__))
    channel.setlength(width)
    channel.setdirection("in")
    return channel


class KeyboardInput(InputSource):
    """Keys from an OpenCV window: 1-4 register a class, i infers, r resets, p pauses,
    q quits (space: shot, n: next class)."""

    def __init__(self, wait_ms: int = 1):
        import cv2  # the window's toolkit

        self._cv2 = cv2
        self.wait_ms = wait_ms

    def poll(self) -> Optional[Event]:
        key = self._cv2.waitKey(self.wait_ms)
        return KEY_EVENTS.get(key & 0xFF) if key >= 0 else None


def parse_script(text: str) -> List[Optional[Event]]:
    """'wait*10,shot*5,next,infer,quit' -> one entry a frame (None = no event).

    Tokens: shot, next, infer, reset, pause, quit, wait, register:<k> (class slot k, from 1);
    `token*N` repeats; separators are commas or whitespace; '#' starts a comment line.
    """
    steps: List[Optional[Event]] = []
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    for token in " ".join(lines).replace(",", " ").split():
        name, _, times = token.partition("*")
        if times and not times.isdigit():
            raise ValueError("script token %r: the repeat count must be a number" % token)
        count = int(times) if times else 1
        kind, _, arg = name.partition(":")
        if kind == "register":
            if not arg.isdigit() or int(arg) < 1:
                raise ValueError("script token %r: register needs a class number from 1, "
                                 "e.g. register:2" % token)
            event: Optional[Event] = Event("register", int(arg) - 1)
        elif kind in EVENT_KINDS and not arg:
            event = None if kind == "wait" else Event(kind)
        else:
            raise ValueError("script token %r is not one of %s" % (token, ", ".join(
                k for k in EVENT_KINDS if k != "register") + ", register:<k>"))
        steps.extend([event] * count)
    return steps


class ScriptInput(InputSource):
    """A scripted sequence, one step a frame; `finished` once every step was played."""

    def __init__(self, script: Union[str, pathlib.Path]):
        path = pathlib.Path(script) if not isinstance(script, str) or (
            "\n" not in script and len(script) < 4096 and pathlib.Path(script).is_file()) else None
        text = path.read_text(encoding="utf-8") if path else str(script)
        self.steps = parse_script(text)
        self.position = 0

    @property
    def finished(self) -> bool:
        return self.position >= len(self.steps)

    def poll(self) -> Optional[Event]:
        if self.finished:
            return None
        event = self.steps[self.position]
        self.position += 1
        return event
