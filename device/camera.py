"""Camera sources: a USB/V4L2 camera through OpenCV, a video file, an image-folder replay,
a synthetic pattern. All deliver `Frame`s (BGR uint8, as OpenCV does).

`read()` returns the next frame, or None at the end of a finite source; a camera that
fails or disappears raises `CameraError`, which the demonstrator turns into its error
state. `open()` may be called again after a failure (reset).
"""

import pathlib
import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import CameraError
from .opencv import cv2

__all__ = ["Camera", "Frame", "ImageFolderCamera", "OpenCVCamera", "SyntheticCamera",
           "VideoFileCamera", "list_images", "open_camera", "parse_resolution"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PathLike = Union[str, pathlib.Path]
Resolution = Tuple[int, int]


def parse_resolution(text: str) -> Resolution:
    """'160x120' -> (160, 120)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("a resolution is WIDTHxHEIGHT, e.g. 160x120, not %r" % text)
    return int(parts[0]), int(parts[1])


class Frame:
    """One captured image; `label` is the ground truth where the source knows it (replay)."""

    def __init__(self, image: np.ndarray, index: int, label: Optional[str] = None):
        self.image = image
        self.index = index
        self.label = label


class Camera:
    """A frame source. Subclasses implement _open, _read and _close."""

    name = "camera"

    def __init__(self) -> None:
        self.is_open = False
        self.count = 0

    def open(self) -> "Camera":
        self.close()
        self._open()
        self.is_open = True
        self.count = 0
        return self

    def read(self) -> Optional[Frame]:
        if not self.is_open:
            raise CameraError("%s is not open" % self.name)
        frame = self._read()
        if frame is not None:
            self.count += 1
        return frame

    def close(self) -> None:
        if self.is_open:
            self._close()
        self.is_open = False

    def _open(self) -> None:
        pass

    def _read(self) -> Optional[Frame]:
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def __enter__(self) -> "Camera":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class OpenCVCamera(Camera):
    """A USB/V4L2 camera; asks for `resolution` and keeps what the driver grants."""

    def __init__(self, device: Union[int, str] = 0, resolution: Optional[Resolution] = (160, 120)):
        super().__init__()
        self.device = device
        self.requested = resolution
        self.resolution: Optional[Resolution] = None
        self.name = "camera %s" % device
        self._capture: Any = None

    def _open(self) -> None:
        api = cv2.CAP_V4L2 if hasattr(cv2, "CAP_V4L2") else cv2.CAP_ANY
        capture = cv2.VideoCapture(self.device, api)
        if not capture.isOpened():
            raise CameraError("%s: cannot open the camera (is it plugged in, and is %s the right "
                              "device?)" % (self.name, self.device))
        if self.requested:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.requested[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.requested[1])
        self.resolution = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                           int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if self.requested and self.resolution != tuple(self.requested):
            warnings.warn("%s: asked for %dx%d, the driver gives %dx%d; using that"
                          % (self.name, self.requested[0], self.requested[1], self.resolution[0],
                             self.resolution[1]), stacklevel=3)
        self._capture = capture

    def _read(self) -> Optional[Frame]:
        ok, image = self._capture.read()
        if not ok or image is None:
            raise CameraError("%s stopped delivering frames (unplugged or failed)" % self.name)
        return Frame(image, self.count)

    def _close(self) -> None:
        self._capture.release()
        self._capture = None


class VideoFileCamera(Camera):
    """Frames of a video file, once (None at the end) or looping."""

    def __init__(self, path: PathLike, loop: bool = False):
        super().__init__()
        self.path = pathlib.Path(path)
        self.loop = loop
        self.name = "video %s" % self.path
        self._capture: Any = None

    def _open(self) -> None:
        if not self.path.is_file():
            raise CameraError("%s: no such video file" % self.path)
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise CameraError("%s: OpenCV cannot decode this video" % self.path)
        self._capture = capture

    def _read(self) -> Optional[Frame]:
        ok, image = self._capture.read()
        if not ok and self.loop and self.count:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
        return Frame(image, self.count) if ok else None

    def _close(self) -> None:
        self._capture.release()
        self._capture = None


def list_images(folder: PathLike) -> List[Tuple[pathlib.Path, str]]:
    """(path, label) of the images of `folder/<label>/*` (or `folder/*`, label None) in
    a deterministic order: by label, then by file name."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise CameraError("%s: no such image folder" % folder)
    found = [(p, p.parent.name if p.parent != folder else "") for p in folder.rglob("*")
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    found.sort(key=lambda item: (item[1], item[0].name))
    if not found:
        raise CameraError("%s: no images (%s) in this folder" % (folder, ", ".join(IMAGE_SUFFIXES)))
    return found


class ImageFolderCamera(Camera):
    """Replays images in a fixed order; each frame carries its folder name as ground truth."""

    def __init__(self, items: Sequence[Tuple[PathLike, Optional[str]]],
                 resolution: Optional[Resolution] = None, loop: bool = False, name: str = "replay"):
        super().__init__()
        if not items:
            raise ValueError("an image replay needs at least one image")
        self.items = [(pathlib.Path(p), label or None) for p, label in items]
        self.resolution = resolution
        self.loop = loop
        self.name = name
        self._position = 0

    @classmethod
    def from_folder(cls, folder: PathLike, **options: object) -> "ImageFolderCamera":
        return cls(list_images(folder), name="replay %s" % folder, **options)  # type: ignore

    def _open(self) -> None:
        self._position = 0

    def _read(self) -> Optional[Frame]:
        if self._position >= len(self.items):
            if not self.loop:
                return None
            self._position = 0
        path, label = self.items[self._position]
        self._position += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise CameraError("%s: %s is missing or not a decodable image" % (self.name, path))
        if self.resolution and (image.shape[1], image.shape[0]) != tuple(self.resolution):
            image = cv2.resize(image, tuple(self.resolution), interpolation=cv2.INTER_LINEAR)
        return Frame(image, self.count, label)


class SyntheticCamera(Camera):
    """A moving test pattern (no hardware); `num_frames` None = endless."""

    name = "synthetic"

    def __init__(self, resolution: Resolution = (160, 120), num_frames: Optional[int] = None):
        super().__init__()
        self.resolution = resolution
        self.num_frames = num_frames
        width, height = resolution
        y, x = np.mgrid[0:height, 0:width]
        self._base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                               (x + y) * 255 // max(width + height - 2, 1)], axis=2).astype(np.uint8)

    def _read(self) -> Optional[Frame]:
        if self.num_frames is not None and self.count >= self.num_frames:
            return None
        image = np.roll(self._base, 3 * self.count, axis=1)
        return Frame(image, self.count, "pattern")


def open_camera(spec: str, resolution: Optional[Resolution] = None, loop: bool = False) -> Camera:
    """A camera from a command-line spec: a device number or /dev/video*, 'synthetic', an
    image folder (replay) or a video file. The camera is returned unopened."""
    if spec == "synthetic":
        return SyntheticCamera(resolution or (160, 120))
    if spec.isdigit():
        return OpenCVCamera(int(spec), resolution or (160, 120))
    if spec.startswith("/dev/video"):
        return OpenCVCamera(spec, resolution or (160, 120))
    path = pathlib.Path(spec)
    if path.is_dir():
        return ImageFolderCamera.from_folder(path, resolution=resolution, loop=loop)
    if path.is_file():
        return VideoFileCamera(path, loop=loop)
    raise CameraError("%s: not a camera number, /dev/video*, 'synthetic', an image folder or a "
                      "video file" % spec)
