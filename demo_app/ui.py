"""The on-screen UI: header band (title, state, FPS), the camera view, one indicator a
class (thumbnail of its first shot, probability bar, shot count) and a footer with the
latency of each stage and the current message."""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from device.opencv import cv2

__all__ = ["STATE_COLOURS", "draw_ui"]

STATE_COLOURS = {"reset": (128, 128, 128), "init": (0, 200, 255), "idle": (200, 200, 200),
                 "registration": (255, 160, 0), "inference": (0, 200, 0),
                 "pause": (0, 255, 255), "error": (0, 0, 255), "quit": (128, 128, 128)}
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX, written out: reading it would import OpenCV for --help
_BACKGROUND = 32  # grey level of the background


WRONG_COLOUR = (0, 0, 255)  # BGR red


_HEADER_GREY = 64
_TEXT_MARGIN = 2   # pixels around getTextSize's box: anti-aliasing stays inside it
# (text, scale, colour, background) -> (putText's pixels on that background, its ascent)
_TEXTS: Dict[Tuple[str, float, Tuple[int, int, int], int], Tuple[np.ndarray, int]] = {}


def _text(canvas: np.ndarray, text: str, org: Tuple[int, int], scale: float = 0.5,
          colour: Tuple[int, int, int] = (255, 255, 255), background: int = _BACKGROUND) -> None:
    """putText's anti-aliased pixels at `org` on a uniform `background` grey, each (text, style)
    rendered once and then copied: most of the UI's text is the same every frame, and
    drawing anti-aliased text costs more than the rest of the screen (the same pixels:
    tests/test_demo_app.py)."""
    key = (text, scale, colour, background)
    cached = _TEXTS.get(key)
    if cached is None:
        (width, ascent), descent = cv2.getTextSize(text, _FONT, scale, 1)
        m = _TEXT_MARGIN
        patch = np.full((ascent + descent + 2 * m, width + 2 * m, 3), background, np.uint8)
        cv2.putText(patch, text, (m, ascent + m), _FONT, scale, colour, 1, cv2.LINE_AA)
        if len(_TEXTS) >= 512:   # the footer's numbers change every frame: bound the cache
            _TEXTS.clear()
        cached = _TEXTS[key] = (patch, ascent)
    patch, ascent = cached
    top, left = org[1] - ascent - _TEXT_MARGIN, org[0] - _TEXT_MARGIN
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + patch.shape[0], canvas.shape[0])
    x1 = min(left + patch.shape[1], canvas.shape[1])
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]


def draw_ui(canvas: np.ndarray, frame: np.ndarray, state: str, names: Sequence[str],
            shots: Sequence[int], thumbnails: Sequence[Optional[np.ndarray]],
            probabilities: Optional[np.ndarray], current: int, fps: float,
            latency_ms: Dict[str, float], message: str = "",
            predicted: Optional[int] = None, wrong: bool = False) -> np.ndarray:
    """Draw one UI frame into `canvas` (H, W, 3 uint8, reused between frames). `wrong`:
    the prediction contradicts the known ground truth (a replay): a red frame and message."""
    height, width = canvas.shape[:2]
    canvas.fill(_BACKGROUND)  # memset: a per-pixel broadcast costs milliseconds
    header = 40
    colour = STATE_COLOURS.get(state, (255, 255, 255))
    cv2.rectangle(canvas, (0, 0), (width - 1, header), (_HEADER_GREY,) * 3, -1)
    _text(canvas, "PYNQ few-shot", (10, 27), 0.7, background=_HEADER_GREY)
    _text(canvas, state.upper(), (width // 2 - 60, 27), 0.7, colour, _HEADER_GREY)
    _text(canvas, "%5.1f FPS" % fps, (width - 130, 27), 0.6, background=_HEADER_GREY)
    panel = max(width // 3, 180)
    view_w, view_h = width - panel - 20, height - header - 70
    scale = min(view_w / frame.shape[1], view_h / frame.shape[0])
    size = (max(1, int(frame.shape[1] * scale)), max(1, int(frame.shape[0] * scale)))
    top = header + 10
    region = canvas[top:top + size[1], 10:10 + size[0]]
    view = cv2.resize(frame, size, dst=region, interpolation=cv2.INTER_NEAREST)   # in place
    if view is not region:   # an OpenCV that returned a new array instead
        region[...] = view
    if wrong:
        cv2.rectangle(canvas, (5, top - 5), (14 + size[0], top + size[1] + 4), WRONG_COLOUR, 4)
    else:
        cv2.rectangle(canvas, (9, top - 1), (10 + size[0], top + size[1]), colour, 2)
    _draw_classes(canvas, width - panel, top, panel - 10, height - top - 60, names, shots,
                  thumbnails, probabilities, current, state, predicted)
    footer = " ".join("%s %.2f" % (k, v) for k, v in latency_ms.items())
    _text(canvas, "ms: " + footer, (10, height - 38), 0.45, (200, 200, 200))
    if message:
        _text(canvas, message[:110], (10, height - 14), 0.5, WRONG_COLOUR if wrong else (0, 220, 255))
    return canvas


# (id, side) -> (the thumbnail itself, kept so its id cannot be reused; its resized copy)
_THUMBS: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}


def _resized(thumbnail: np.ndarray, side: int) -> np.ndarray:
    """Thumbnails change only on registration: resize each once, not every frame."""
    key = (id(thumbnail), side)
    cached = _THUMBS.get(key)
    if cached is None or cached[0] is not thumbnail:
        if len(_THUMBS) > 64:
            _THUMBS.clear()
        cached = _THUMBS[key] = (thumbnail, cv2.resize(thumbnail, (side, side),
                                                       interpolation=cv2.INTER_NEAREST))
    return cached[1]


def _draw_classes(canvas: np.ndarray, left: int, top: int, width: int, height: int,
                  names: Sequence[str], shots: Sequence[int],
                  thumbnails: Sequence[Optional[np.ndarray]], probabilities: Optional[np.ndarray],
                  current: int, state: str, predicted: Optional[int]) -> None:
    rows = len(names)
    row_h = max(20, min(56, height // max(rows, 1)))
    thumb = row_h - 6
    for i in range(rows):
        y = top + i * row_h
        selected = (state == "registration" and i == current) or (
            state == "inference" and predicted == i)
        if selected:
            cv2.rectangle(canvas, (left - 4, y - 2), (left + width, y + row_h - 4),
                          (0, 200, 0) if state == "inference" else (255, 160, 0), 2)
        picture = thumbnails[i]
        if picture is not None and thumb > 4:
            canvas[y:y + thumb, left:left + thumb] = _resized(picture, thumb)
        else:
            cv2.rectangle(canvas, (left, y), (left + thumb, y + thumb), (90, 90, 90), 1)
        x = left + thumb + 8
        label = "%d %s (%d)" % (i + 1, names[i][:14], shots[i]) if shots[i] else \
            "%d %s (no shot)" % (i + 1, names[i][:14])
        _text(canvas, label, (x, y + 14), 0.45, (255, 255, 255) if shots[i] else (140, 140, 140))
        if probabilities is not None and shots[i]:
            p = float(probabilities[i])
            bar_w = width - thumb - 60
            cv2.rectangle(canvas, (x, y + 22), (x + int(bar_w * p), y + 32), (0, 200, 0), -1)
            cv2.rectangle(canvas, (x, y + 22), (x + bar_w, y + 32), (120, 120, 120), 1)
            _text(canvas, "%3.0f%%" % (100 * p), (x + bar_w + 4, y + 32), 0.4)

