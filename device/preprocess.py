"""Frame -> backbone input, exactly as training's evaluation transform (see the model card).

1. centre square crop (extra pixel of an odd difference to the right/bottom) when the
   card says "center-square"; 2. cv2.resize with INTER_AREA to the input size (skipped
   when it already matches); 3. float32, * scale, (x - mean) / std per channel;
4. HWC -> CHW plus the batch axis: [1, 3, H, W], C-contiguous float32.
Frames from OpenCV are BGR: pass bgr=True (the default of `Preprocessor.from_bgr`).
"""

from typing import Tuple

import numpy as np

from .model_card import InputSpec
from .opencv import cv2

__all__ = ["Preprocessor", "center_square", "preprocess_rgb"]


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an H x W (x C) image (a view, no copy)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    return image[top:top + side, left:left + side]


def preprocess_rgb(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One uint8 RGB (H, W, 3) or greyscale (H, W) image -> float32 [1, 3, H_in, W_in]."""
    return Preprocessor(spec)(image, bgr=False)


class Preprocessor:
    """The card's input transform with its constants precomputed (it runs on every frame)."""

    def __init__(self, spec: InputSpec):
        self.spec = spec
        self.size: Tuple[int, int] = (spec.width, spec.height)  # cv2 order: (W, H)
        self._scale = np.float32(spec.scale)
        self._mean = np.asarray(spec.mean, dtype=np.float32)
        self._std = np.asarray(spec.std, dtype=np.float32)

    def __call__(self, image: np.ndarray, bgr: bool = True) -> np.ndarray:
        image = self._to_rgb(image, bgr)
        if self.spec.crop == "center-square":
            image = center_square(image)
        if image.shape[1] != self.size[0] or image.shape[0] != self.size[1]:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        x = image.astype(np.float32) * self._scale
        x = (x - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)

    @staticmethod
    def _to_rgb(image: np.ndarray, bgr: bool) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError("a frame must be a uint8 numpy array, not %s"
                             % getattr(image, "dtype", type(image).__name__))
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError("a frame must be H x W x 3 or H x W, not %s" % (image.shape,))
        return image[:, :, ::-1] if bgr else image
