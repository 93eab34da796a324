"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 without torchvision.

Each dataset is looked for, in order, at the path the config gives, at the
usual local places (Debian's /usr/share/datasets/fashion-mnist, the decoded
cache), and in the download cache (``~/.cache/pynq-fewshot-fl`` or
$PYNQ_FL_CACHE); with ``download=True`` the official archives are fetched
there and their MD5 checked. A path may also be a folder or archive of images
laid out ``split/class/file`` (e.g. ``cifar10-jpg.tar.gz``), read by
training.images. CIFAR comes from the binary archives (never the pickled
"python version").

    images, labels = load_split("cifar10", "train", path="../shared/data/cifar10/cifar10-jpg.tar.gz")
    x = to_float_nchw(images, "cifar10")     # float32 N x C x H x W, standardized
"""

import hashlib
import logging
import os
import tarfile
import urllib.request
from typing import Dict, List, Tuple

import numpy as np

from fedcore.atomic import atomic_open
from fedcore.datasets import FASHION_MNIST_DIR, load_mnist_like
from fedcore.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DEFAULT_CACHE",
    "Dataset",
    "load_split",
    "to_float_nchw",
    "standardize",
    "input_shape",
    "num_classes",
]

DEFAULT_CACHE = os.environ.get("PYNQ_FL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "pynq-fewshot-fl"))


class Dataset:
    """Where a dataset comes from and how to normalize it."""

    def __init__(self, name: str, classes: int, mean: Tuple[float, ...], std: Tuple[float, ...],
                 urls: Dict[str, Tuple[str, str]], local: Tuple[str, ...] = ()):
        self.name, self.classes, self.mean, self.std = name, classes, mean, std
        self.urls = urls  # file name -> (url, md5)
        self.local = local


_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DATASETS: Dict[str, Dataset] = {
    "mnist": Dataset("mnist", 10, (0.1307,), (0.3081,), dict(zip(_MNIST_FILES, [
        ("https://ossci-datasets.s3.amazonaws.com/mnist/" + f, md5) for f, md5 in zip(_MNIST_FILES, [
            "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"])]))),
    "fashion-mnist": Dataset("fashion-mnist", 10, (0.2860,), (0.3530,), dict(zip(_MNIST_FILES, [
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" + f, md5) for f, md5 in zip(_MNIST_FILES, [
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"])])),
        local=(FASHION_MNIST_DIR,)),
    "cifar10": Dataset("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), {
        "cifar-10-binary.tar.gz": ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                                   "c32a1d4ab5d03f1284b67883e8d87530")}),
    "cifar100": Dataset("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), {
        "cifar-100-binary.tar.gz": ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                                    "03b5dce01913d631647c71ecec9e9cb8")}),
}
_ALIASES = {"fmnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar-100": "cifar100"}


def _spec(name: str) -> Dataset:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[key]


def num_classes(name: str) -> int:
    return _spec(name).classes


def _md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(spec: Dataset, cache: str) -> str:
    """Fetch the official archives into cache/<name>/ (checked by MD5); return the folder."""
    folder = os.path.join(cache, spec.name)
    os.makedirs(folder, exist_ok=True)
    for filename, (url, md5) in spec.urls.items():
        target = os.path.join(folder, filename)
        if os.path.isfile(target) and _md5(target) == md5:
            continue
        log.info("downloading %s -> %s", url, target)
        digest = hashlib.md5()
        # a failed or corrupt download leaves no file behind (atomic_open discards it)
        with urllib.request.urlopen(url) as response, atomic_open(target) as out:  # noqa: S310
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
            if digest.hexdigest() != md5:
                raise RuntimeError(f"{url}: MD5 {digest.hexdigest()} differs from the official {md5}; "
                                   "download discarded")
    return folder


def _has_files(folder: str, spec: Dataset) -> bool:
    """The official files are there (IDX files may be gunzipped)."""
    def present(f: str) -> bool:
        plain = f[:-3] if f.endswith(".gz") and spec.name in ("mnist", "fashion-mnist") else f
        return os.path.isfile(os.path.join(folder, f)) or os.path.isfile(os.path.join(folder, plain))
    return all(present(f) for f in spec.urls)


def _read_cifar_binary(archive: str, spec: Dataset, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """The records of the official binary archive: label byte(s) then 3072 bytes CHW."""
    if spec.name == "cifar10":
        wanted = ["test_batch.bin"] if split == "test" else [f"data_batch_{i}.bin" for i in range(1, 6)]
        label_bytes = 1
    else:
        wanted, label_bytes = [f"{split}.bin"], 2  # coarse label, then the fine one
    record = label_bytes + 3072
    found: Dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            base = os.path.basename(member.name)
            if member.isfile() and base in wanted:
                if member.size % record:
                    raise ValueError(f"{archive}:{member.name}: {member.size} bytes is not a whole number of records")
                found[base] = tar.extractfile(member).read()
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ValueError(f"{archive}: missing {missing}; is this the official binary archive?")
    raw = np.frombuffer(b"".join(found[w] for w in wanted), np.uint8).reshape(-1, record)
    labels = raw[:, label_bytes - 1].astype(np.int64)
    images = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _load_tree(path: str, split: str, spec: Dataset, cache: str) -> Tuple[np.ndarray, np.ndarray]:
    """A split/class/file tree (folder or archive), decoded once and kept as .npz in the cache."""
    from .images import load_image_tree  # opencv: only needed for image trees

    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{split}".encode()).hexdigest()[:16]
    cached = os.path.join(cache, "decoded", f"{spec.name}-{split}-{key}.npz")
    if os.path.isfile(cached):
        with np.load(cached, allow_pickle=False) as data:
            return data["images"], data["labels"]
    grey = spec.name in ("mnist", "fashion-mnist")
    images = load_image_tree(path, split=split, grey=grey)
    if len(images.class_names) != spec.classes:
        raise ValueError(f"{path}: split {split!r} has {len(images.class_names)} classes, "
                         f"{spec.name} has {spec.classes}")
    pixels = images.images if images.images.ndim == 4 else images.images[..., None]
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with atomic_open(cached) as handle:
        np.savez(handle, images=pixels, labels=images.labels)
    return pixels, images.labels


def load_split(name: str, split: str, path: str = "", cache: str = DEFAULT_CACHE, download: bool = False
               ) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 images N x H x W x C and int64 labels of one split ("train" or "test")."""
    spec = _spec(name)
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    looked: List[str] = []
    candidates = ([path] if path else []) + list(spec.local) + [os.path.join(cache, spec.name)]
    for where in candidates:
        looked.append(where)
        if not os.path.exists(where):
            continue
        if os.path.isdir(where) and _has_files(where, spec):
            return _read_official(where, spec, split)
        if os.path.isfile(where) and os.path.basename(where) in spec.urls:
            return _read_cifar_binary(where, spec, split)
        if where == path:  # a user's folder or archive of images
            return _load_tree(where, split, spec, cache)
    if download:
        return _read_official(_download(spec, cache), spec, split)
    raise FileNotFoundError(
        f"{spec.name} not found: looked in {looked}. Pass download=True (--download) to fetch "
        f"{sorted(u for u, _ in spec.urls.values())} into {cache}, set data.path to a folder with "
        f"the official files or to a split/class/image folder or archive"
        + (", or `apt-get install dataset-fashion-mnist`" if spec.name == "fashion-mnist" else "") + "."
    )


def _read_official(folder: str, spec: Dataset, split: str) -> Tuple[np.ndarray, np.ndarray]:
    if spec.name in ("mnist", "fashion-mnist"):
        images, labels = load_mnist_like(folder, split)
        return images[..., None], labels.astype(np.int64)
    return _read_cifar_binary(os.path.join(folder, next(iter(spec.urls))), spec, split)


def input_shape(name: str) -> Tuple[int, int, int]:
    """(channels, height, width) of the dataset's images."""
    spec = _spec(name)
    side = 28 if spec.name in ("mnist", "fashion-mnist") else 32
    return len(spec.mean), side, side


def standardize(x: np.ndarray, name: str) -> np.ndarray:
    """float32 N x C x H x W in [0, 1] -> standardized with the dataset's statistics."""
    spec = _spec(name)
    mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def to_float_nchw(images: np.ndarray, name: str) -> np.ndarray:
    """uint8 N x H x W x C -> float32 N x C x H x W, standardized with the dataset's statistics."""
    return standardize(images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0), name)
