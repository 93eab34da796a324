"""Load labelled image trees (`[split/]class/file`) from a folder or an archive.

Archives (.tar, .tar.gz, .tgz, .zip) are read in memory and every image is
decoded with ``cv2.imdecode`` from its bytes: nothing is extracted to disk, so
a hostile archive cannot write outside its folder. Only PNG and JPEG files are
read; other files (READMEs, ``.DS_Store``) are skipped.
"""

import os
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSet",
    "iter_image_files",
    "decode_image",
    "load_image_tree",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
_MAX_FILE_BYTES = 64 << 20  # a single image larger than this is not an image we want


@dataclass
class ImageSet:
    """Images with integer labels; ``class_names[label]`` names the class.

    ``groups`` (optional) gives one group name per class, e.g. the Omniglot
    alphabet of each character.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    groups: Optional[List[str]] = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, classes: Sequence[int]) -> "ImageSet":
        """The images of the given class indices, relabelled 0..len(classes)-1."""
        classes = [int(c) for c in classes]
        remap = np.full(len(self.class_names), -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        keep = remap[self.labels] >= 0
        groups = None if self.groups is None else [self.groups[c] for c in classes]
        return ImageSet(
            images=self.images[keep],
            labels=remap[self.labels[keep]],
            class_names=[self.class_names[c] for c in classes],
            groups=groups,
        )


def _missing_path_message(path: str) -> str:
    return (
        f"image data not found: looked for {os.path.abspath(path)!r}. Give a folder laid out "
        "[split/]class/image.png|jpg or a .tar/.tar.gz/.tgz/.zip archive of one; download the "
        "dataset from its official page (e.g. CIFAR-10, Omniglot, MiniImageNet) first."
    )


def iter_image_files(path: str) -> Iterator[Tuple[Tuple[str, ...], bytes]]:
    """Yield ``(path parts, file bytes)`` of every PNG/JPEG file under ``path``.

    ``path`` is a folder or a .tar/.tar.gz/.tgz/.zip archive; the parts are
    relative to it, sorted order for folders, archive order otherwise.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(_missing_path_message(path))
    if os.path.isdir(path):
        yield from _iter_folder(path)
    elif path.lower().endswith((".tar", ".tar.gz", ".tgz")):
        yield from _iter_tar(path)
    elif path.lower().endswith(".zip"):
        yield from _iter_zip(path)
    else:
        raise ValueError(
            f"{path!r} is neither a folder nor an archive ({', '.join(_ARCHIVE_SUFFIXES)})"
        )


def _is_image(name: str) -> bool:
    base = os.path.basename(name)
    return base.lower().endswith(IMAGE_SUFFIXES) and not base.startswith(".")


def _iter_folder(root: str) -> Iterator[Tuple[Tuple[str, ...], bytes]]:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if _is_image(name):
                full = os.path.join(folder, name)
                with open(full, "rb") as f:
                    data = f.read(_MAX_FILE_BYTES + 1)
                _check_size(full, len(data))
                yield tuple(os.path.relpath(full, root).split(os.sep)), data


def _iter_tar(archive: str) -> Iterator[Tuple[Tuple[str, ...], bytes]]:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and _is_image(member.name):
                _check_size(f"{archive}:{member.name}", member.size)
                stream = tar.extractfile(member)
                if stream is None:  # pragma: no cover - isfile() members always have data
                    continue
                yield _archive_parts(member.name), stream.read()


def _iter_zip(archive: str) -> Iterator[Tuple[Tuple[str, ...], bytes]]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if not info.is_dir() and _is_image(info.filename):
                _check_size(f"{archive}:{info.filename}", info.file_size)
                yield _archive_parts(info.filename), zf.read(info)


def _archive_parts(name: str) -> Tuple[str, ...]:
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _check_size(name: str, size: int) -> None:
    if size > _MAX_FILE_BYTES:
        raise ValueError(f"{name}: {size} bytes is too large for an image file")


def decode_image(data: bytes, name: str, grey: bool = False) -> np.ndarray:
    """Decode PNG/JPEG bytes to uint8 RGB H×W×3 (or H×W when ``grey``)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    img = cv2.imdecode(buf, flag) if buf.size else None
    if img is None:
        raise ValueError(f"{name}: cannot decode image (not a valid PNG/JPEG file)")
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_image_tree(
    path: str,
    split: Optional[str] = None,
    classes: Optional[Sequence[str]] = None,
    grey: bool = False,
    limit_per_class: Optional[int] = None,
    size: Optional[Tuple[int, int]] = None,
) -> ImageSet:
    """Load ``[split/]class/file`` images from a folder or an archive.

    The class of a file is its parent folder; with ``split`` only files whose
    grandparent folder is ``split`` are read (a leading root folder inside an
    archive is allowed). ``classes`` keeps only those classes (labels always
    follow the sorted class names). ``limit_per_class`` keeps the first files
    of each class in name order. ``size`` = (width, height) resizes with cv2.INTER_AREA;
    without it every image must have the same size.
    """
    wanted = None if classes is None else set(classes)
    found = {}  # class name -> list of (file name, bytes)
    for parts, data in iter_image_files(path):
        if len(parts) < 2 or (split is not None and (len(parts) < 3 or parts[-3] != split)):
            continue
        cls = parts[-2]
        if wanted is None or cls in wanted:
            found.setdefault(cls, []).append(("/".join(parts), data))
    if not found:
        where = f"split {split!r} of " if split else ""
        raise ValueError(f"no PNG/JPEG images in {where}{path!r} (layout [split/]class/image)")
    if wanted is not None and wanted - set(found):
        raise ValueError(f"classes not found in {path!r}: {sorted(wanted - set(found))}")
    names = sorted(found)
    images, labels = [], []
    for label, cls in enumerate(names):
        files = sorted(found[cls])
        if limit_per_class is not None:
            files = files[:limit_per_class]
        for name, data in files:
            images.append(_fit(decode_image(data, name, grey), name, size, images))
            labels.append(label)
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64), names)


def _fit(img: np.ndarray, name: str, size: Optional[Tuple[int, int]], done: list) -> np.ndarray:
    """Resize to ``size`` or check that ``img`` matches the images already read."""
    if size is not None:
        w, h = int(size[0]), int(size[1])
        if img.shape[1] != w or img.shape[0] != h:
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        return img
    if done and img.shape != done[0].shape:
        raise ValueError(
            f"{name}: image is {img.shape[1]}x{img.shape[0]} but earlier ones are "
            f"{done[0].shape[1]}x{done[0].shape[0]}; pass size=(width, height) to resize"
        )
    return img
