"""The unattended demo: a replay camera of labelled images and the button script that
drives it (background frames, K shots a class, then inference on held-out frames)."""

import pathlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from device.camera import list_images

__all__ = ["ReplayPlan", "build_replay_plan"]

PathLike = Union[str, pathlib.Path]


@dataclass
class ReplayPlan:
    """The images to replay, in order, and the script aligned with them (one step a frame)."""

    items: List[Tuple[pathlib.Path, str]]
    script: str
    classes: List[str]
    shots: int
    init_frames: int
    queries: int


def build_replay_plan(folder: PathLike, shots: int = 5, init_frames: int = 10,
                      queries: Optional[int] = None,
                      classes: Optional[Sequence[str]] = None) -> ReplayPlan:
    """From folder/<class>/<image>: per class the first `shots` images are registered
    (one press, K = shots frames), the next `queries` are classified (interleaved across
    classes); `init_frames` background frames come from the end of each class's list and
    are never queried."""
    by_class: Dict[str, List[pathlib.Path]] = {}
    for path, label in list_images(folder):
        if label:
            by_class.setdefault(label, []).append(path)
    names = list(classes) if classes else sorted(by_class)
    missing = [c for c in names if c not in by_class]
    if missing or not names:
        raise ValueError("%s: no images for classes %s (sub-folders: %s)"
                         % (folder, missing or "any", sorted(by_class)))
    per_init = -(-init_frames // len(names)) if init_frames else 0
    smallest = min(len(by_class[c]) for c in names)
    available = smallest - shots - per_init
    if available < 1:
        raise ValueError("%s: %d images in the smallest class, need more than %d shots + %d "
                         "background" % (folder, smallest, shots, per_init))
    queries = min(queries or available, available)
    background = [(by_class[c][len(by_class[c]) - 1 - j], c) for j in range(per_init)
                  for c in names][:init_frames]
    registration = [(by_class[c][j], c) for c in names for j in range(shots)]
    inference = [(by_class[c][shots + j], c) for j in range(queries) for c in names]
    steps = ["wait*%d" % init_frames] if init_frames else []
    for i in range(len(names)):
        steps.append("shot" if i == 0 else "next")
        if shots > 1:
            steps.append("wait*%d" % (shots - 1))
    steps.append("infer")
    if len(inference) > 1:
        steps.append("wait*%d" % (len(inference) - 1))
    return ReplayPlan(background + registration + inference, ",".join(steps), names, shots,
                      init_frames, queries)
