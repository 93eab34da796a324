"""Few-shot datasets (base classes to train on, novel classes to evaluate on),
the evaluation/export preprocessing of the model card, and training augmentation.

Greyscale data (Omniglot) is decoded as RGB with three equal channels, so every
backbone has a 3-channel stem and the card always says "RGB".
"""

import csv
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.images import ImageSet, decode_image, iter_image_files, load_image_tree

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_BASE",
    "CIFAR10_NOVEL",
    "DEFAULT_PATHS",
    "OMNIGLOT_HELD_OUT",
    "FewShotData",
    "card_input",
    "preprocess_images",
    "channel_stats",
    "load_fewshot_data",
    "load_omniglot",
    "to_tensor",
    "augment_batch",
]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
CIFAR10_BASE = CIFAR10_CLASSES[:5]  # docs/model_card.md: the split used everywhere
CIFAR10_NOVEL = CIFAR10_CLASSES[5:]

_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
DEFAULT_PATHS = {
    "cifar10": os.path.normpath(os.path.join(_SHARED, "cifar10", "cifar10-jpg.tar.gz")),
    "omniglot": os.path.normpath(os.path.join(_SHARED, "omniglot")),
}

# The two "background small" zips hold 8 distinct alphabets (Greek and Latin are in both).
# Held out of training: three alphabets with >= 20 characters so that 20-way
# within-alphabet episodes exist (Balinese 24, Early Aramaic 22, Greek 24 = 70
# characters); training uses Korean 40, Latin 26, Japanese (katakana) 47,
# Sanskrit 42, Tagalog 17 = 172 characters.
OMNIGLOT_HELD_OUT = ("Balinese", "Early_Aramaic", "Greek")


@dataclass
class FewShotData:
    """Base classes (training, and the EASY mean feature) and novel classes
    (few-shot episodes only); images uint8 RGB N×H×W×3 at the input size."""

    name: str
    base: ImageSet
    novel: ImageSet
    natural: bool  # natural images: flips and colour jitter are valid augmentations


def card_input(
    size: int, mean: Sequence[float], std: Sequence[float], crop: str = "center-square"
) -> Dict[str, object]:
    """The ``input`` object of a model card (docs/model_card.md)."""
    return {
        "name": "Input",
        "shape": [1, 3, int(size), int(size)],
        "layout": "NCHW",
        "color": "RGB",
        "crop": crop,
        "resize": "area",
        "scale": 1.0 / 255.0,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


def _crop_resize(img: np.ndarray, spec: Dict[str, object]) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected uint8 H×W×3 RGB or H×W grey, got {img.dtype} {img.shape}")
    if spec["crop"] == "center-square":
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[top : top + s, left : left + s]
    elif spec["crop"] != "none":
        raise ValueError(f"unknown crop {spec['crop']!r} (center-square or none)")
    out_h, out_w = int(spec["shape"][2]), int(spec["shape"][3])
    if img.shape[0] != out_h or img.shape[1] != out_w:
        if spec["resize"] != "area":
            raise ValueError(f"unknown resize {spec['resize']!r} (area)")
        img = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return img


def preprocess_images(images, spec: Dict[str, object]) -> np.ndarray:
    """The card's preprocessing (docs/model_card.md), batched: uint8 RGB images
    (N×H×W×3 array, N×H×W grey, or a list of arrays of any sizes) -> float32
    N×3×H_in×W_in, C-contiguous. Identical to ``device/preprocess.py``.
    A single H×W×3 or H×W uint8 array is taken as one image."""
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8:
        if images.ndim == 2 or images.shape[-1] == 3:
            images = images[None]  # one image
    batch = np.stack([_crop_resize(np.asarray(img), spec) for img in images])
    x = batch.astype(np.float32) * np.float32(spec["scale"])
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def channel_stats(images: np.ndarray) -> Tuple[List[float], List[float]]:
    """Per-channel mean and std of uint8 RGB images on the 0..1 scale."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return x.mean(0).tolist(), np.maximum(x.std(0), 1e-3).tolist()


def to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 N×H×W×3 (already at the input size) -> normalised float32 N×3×H×W,
    the same arithmetic as ``preprocess_images``."""
    spec = {"scale": 1.0 / 255.0, "mean": mean, "std": std}
    x = images.astype(np.float32) * np.float32(spec["scale"])
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def augment_batch(
    x: torch.Tensor, natural: bool, generator: torch.Generator, affine: bool = False
) -> torch.Tensor:
    """Augmentation suited to the resolution: random translation by up to 1/8 of
    the side (pad-and-crop, reflect), and for natural images horizontal flips
    and brightness/contrast jitter. Characters are not flipped (a mirrored
    letter is another letter). ``affine``: first a random rotation (+-15 deg),
    scaling (0.85-1.15) and shear (+-0.15) of each image, edges extended."""
    if affine:
        x = random_affine(x, generator)
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    c, wp = x.shape[1], w + 2 * pad
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1).expand(n, c, h, wp)
    cols = (dx[:, None] + torch.arange(w)[None]).view(n, 1, 1, w).expand(n, c, h, w)
    out = padded.gather(2, rows).gather(3, cols)
    if natural:
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
        gain = 1.0 + 0.4 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
        shift = 0.4 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
        mean = out.mean((1, 2, 3), keepdim=True)
        out = (out - mean) * gain + mean + shift
    return out.contiguous()


def random_affine(
    x: torch.Tensor, generator: torch.Generator, degrees: float = 15.0, scale: float = 0.15,
    shear: float = 0.15,
) -> torch.Tensor:
    """Each image of the batch turned, scaled and sheared about its centre by its own
    random amounts (bilinear; the border pixels extend, i.e. the background)."""
    n = x.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        return (2 * torch.rand(n, generator=generator) - 1) * half_width

    angle = uniform(math.radians(degrees))
    zoom = 1 + uniform(scale)
    slant = uniform(shear)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates: (rotation / zoom) @ shear, no translation.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, cos * slant - sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, sin * slant + cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------- datasets


def _resolve(path: Optional[str], name: str) -> str:
    path = path or DEFAULT_PATHS.get(name, "")
    if not path or not os.path.exists(path):
        raise FileNotFoundError(
            f"{name} data not found at {os.path.abspath(path) if path else '(no path)'}; "
            f"download it from the official page and pass --data PATH"
        )
    return path


def load_cifar10(path: Optional[str], size: int = 32) -> FewShotData:
    """CIFAR-10 (a tree or archive ``train|test/class/*.jpg|png``): base = the
    training images of the 5 base classes, novel = the test images of the 5
    novel classes (docs/model_card.md's split)."""
    path = _resolve(path, "cifar10")
    resize = None if size == 32 else (size, size)
    base = load_image_tree(path, split="train", classes=CIFAR10_BASE, size=resize)
    novel = load_image_tree(path, split="test", classes=CIFAR10_NOVEL, size=resize)
    return FewShotData("cifar10", base, novel, natural=True)


def load_omniglot(
    path: Optional[str], size: int = 32, held_out: Sequence[str] = OMNIGLOT_HELD_OUT
) -> FewShotData:
    """Omniglot from the official zips or folders (``[root/]alphabet/character/
    drawer.png``). ``path`` is one zip/folder or a folder of zips; alphabets
    present in several sources (Greek, Latin) are read once. Classes are
    ``alphabet/character``; ``groups`` gives each class's alphabet."""
    path = _resolve(path, "omniglot")
    sources = [path]
    if os.path.isdir(path):
        zips = sorted(f for f in os.listdir(path) if f.lower().endswith(".zip"))
        if zips:
            sources = [os.path.join(path, z) for z in zips]
    per_class: Dict[Tuple[str, str], List[Tuple[str, bytes]]] = {}
    owner: Dict[str, str] = {}  # alphabet -> the source it is read from
    for src in sources:
        for parts, data in iter_image_files(src):
            if len(parts) < 3:
                continue
            alphabet, char = parts[-3], parts[-2]
            if owner.setdefault(alphabet, src) != src:
                continue  # duplicate alphabet in a later zip
            per_class.setdefault((alphabet, char), []).append(("/".join(parts), data))
    if not per_class:
        raise ValueError(f"no Omniglot images (alphabet/character/drawer.png) under {path!r}")
    unknown = set(held_out) - set(owner)
    if unknown:
        raise ValueError(f"held-out alphabets not in {path!r}: {sorted(unknown)}")
    keys = sorted(per_class)
    images, labels = [], []
    for label, key in enumerate(keys):
        for name, data in sorted(per_class[key]):
            grey = decode_image(data, name, grey=True)
            grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
            images.append(np.repeat(grey[:, :, None], 3, axis=2))
            labels.append(label)
    full = ImageSet(
        np.stack(images), np.asarray(labels, np.int64), [f"{a}/{c}" for a, c in keys],
        groups=[a for a, _ in keys],
    )
    base_idx = [i for i, (a, _) in enumerate(keys) if a not in held_out]
    novel_idx = [i for i, (a, _) in enumerate(keys) if a in held_out]
    return FewShotData("omniglot", full.subset(base_idx), full.subset(novel_idx), natural=False)


def load_split_tree(path: str, size: int, name: str = "folder") -> FewShotData:
    """Any ``train/class/img`` + ``test/class/img`` tree (MiniImageNet's usual
    folder layout, custom data): base = train, novel = test (disjoint classes)."""
    base = load_image_tree(path, split="train", size=(size, size))
    novel = load_image_tree(path, split="test", size=(size, size))
    return _disjoint(name, path, base, novel)


def _split_file(path: str, name: str, layout: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {name} is expected in its published layout ({layout})")
    return path


def _disjoint(name: str, path: str, base: ImageSet, novel: ImageSet) -> FewShotData:
    common = set(base.class_names) & set(novel.class_names)
    if common:
        raise ValueError(f"{path}: train and test share classes {sorted(common)[:5]}; "
                         "few-shot evaluation needs novel classes")
    return FewShotData(name, base, novel, natural=True)


_MINI_LAYOUT = "images/*.jpg with train.csv and test.csv of filename,label rows (Ravi & Larochelle)"


def load_csv_split(path: str, size: int, name: str = "miniimagenet") -> FewShotData:
    """MiniImageNet's Ravi & Larochelle layout: ``images/*.jpg`` with
    ``train.csv`` / ``test.csv`` (``filename,label``)."""
    sets = []
    for split in ("train", "test"):
        table = _split_file(os.path.join(path, f"{split}.csv"), name, _MINI_LAYOUT)
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"filename", "label"} <= set(rows[0]):
            raise ValueError(f"{table}: expected a header filename,label and at least one row")
        labels = sorted({r["label"] for r in rows})
        index = {label: k for k, label in enumerate(labels)}
        imgs, lab = [], []
        for line, r in enumerate(tqdm(rows, desc=f"{name} {split}", leave=False), start=2):
            fname = os.path.join(path, "images", r["filename"] or "")
            if not r["filename"] or not os.path.isfile(fname):
                raise FileNotFoundError(f"{table} line {line}: image {fname} not found")
            with open(fname, "rb") as fh:
                img = decode_image(fh.read(), fname)
            imgs.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
            lab.append(index[r["label"]])
        sets.append(ImageSet(np.stack(imgs), np.asarray(lab, np.int64), labels))
    return _disjoint(name, path, *sets)


def load_cifar_fs(path: str, size: int = 32) -> FewShotData:
    """CIFAR-FS (Bertinetto et al.): ``data/<class>/*.png`` with
    ``splits/bertinetto/{train,test}.txt`` listing the classes."""
    sets = []
    for split in ("train", "test"):
        listing = _split_file(os.path.join(path, "splits", "bertinetto", f"{split}.txt"), "cifar-fs",
                              "data/<class>/*.png with splits/bertinetto/{train,val,test}.txt")
        with open(listing) as f:
            classes = [c.strip() for c in f if c.strip()]
        sets.append(load_image_tree(os.path.join(path, "data"), classes=classes, size=(size, size)))
    return _disjoint("cifar-fs", path, *sets)


def load_fewshot_data(data: str, size: int = 32) -> FewShotData:
    """A dataset by name (cifar10, omniglot: default paths; ``name:PATH`` for
    another path; miniimagenet:PATH, cifar-fs:PATH) or a bare path to a
    ``train/`` + ``test/`` class tree (custom data)."""
    name, _, path = data.partition(":")
    name = name.lower()
    if name == "cifar10":
        return load_cifar10(path or None, size)
    if name == "omniglot":
        return load_omniglot(path or None, size)
    if name == "miniimagenet":
        if os.path.exists(os.path.join(path, "train.csv")):
            return load_csv_split(path, size)
        return load_split_tree(path, size, "miniimagenet")
    if name == "cifar-fs":
        return load_cifar_fs(path, size)
    if os.path.exists(data):
        return load_split_tree(data, size)
    raise ValueError(
        f"unknown dataset {data!r}: use cifar10[:PATH], omniglot[:PATH], miniimagenet:PATH, "
        "cifar-fs:PATH or a path to a train/ + test/ class tree"
    )

