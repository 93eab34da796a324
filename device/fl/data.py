"""A device's local training data: its share of the run's partition of the
dataset (by client id, the same split the simulation uses), or its own files."""

import os
from typing import Tuple

import numpy as np

from fedcore.datasets import load_fashion_mnist, load_mnist_like
from fedcore.errors import ConfigError
from fedcore.experiment import RunConfig, client_ids, limit_rows, partition_clients
from fedcore.npzfile import load_npz

__all__ = ["partition_data", "directory_data", "load_local_data"]

MAX_NPZ_BYTES = 256 << 20  # declared array bytes: half a PYNQ-Z1's memory
_LABEL_TYPES = ("u1", "i1", "u2", "i2", "i4", "u4", "i8")


def _scale(images: np.ndarray) -> np.ndarray:
    # The same conversion as fedcore.experiment.load_numpy_dataset, on this client's rows only:
    # a board never holds the whole training set as float32.
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)


def partition_data(run: RunConfig, client_id: str) -> Tuple[np.ndarray, np.ndarray]:
    """This client's samples of the run's Dirichlet partition of the train split."""
    ids = client_ids(run.data.num_clients)
    if client_id not in ids:
        raise ConfigError(f"client id {client_id!r} is not one of the run's {len(ids)} clients "
                          f"({ids[0]} .. {ids[-1]}); pass --data DIR for data of your own")
    data = run.data
    if data.dataset == "fashion-mnist":
        images, labels = load_fashion_mnist(data.path or None, "train")
    elif data.dataset == "mnist":
        if not data.path:
            raise ConfigError("data.path must name the folder with the MNIST *-ubyte(.gz) files")
        images, labels = load_mnist_like(data.path, "train")
    else:
        raise ConfigError(f"dataset {data.dataset!r} has no numpy loader; pass --data DIR")
    keep = limit_rows(len(labels), data.train_limit)
    images, labels = images[keep], labels[keep]
    index = partition_clients(labels, run)[client_id]
    return _scale(images[index]), labels[index].astype(np.int64)


def directory_data(folder: str) -> Tuple[np.ndarray, np.ndarray]:
    """`folder/train.npz` (arrays x: (N, ...) uint8 in [0, 255] or float32 in [0, 1],
    y: (N,) integer labels; no pickle) or MNIST-format train-*-ubyte(.gz) files."""
    npz = os.path.join(folder, "train.npz")
    if os.path.isfile(npz):
        arrays = load_npz(npz, {"x": ("u1", "f4", "f8"), "y": _LABEL_TYPES}, MAX_NPZ_BYTES, "--data")
        x, y = arrays["x"], arrays["y"]
        if x.ndim < 2 or len(x) != len(y) or y.ndim != 1:
            raise ConfigError(f"{npz}: x must be (N, features...) and y (N,) labels, got {x.shape} and {y.shape}")
        if x.dtype == np.uint8:
            x = _scale(x)
        else:
            x = x.reshape(len(x), -1).astype(np.float32)
            if not np.all(np.isfinite(x)):
                raise ConfigError(f"{npz}: x has non-finite values")
        return x, y.astype(np.int64)
    if not os.path.isdir(folder):
        raise ConfigError(f"--data {folder}: no such directory")
    images, labels = load_mnist_like(folder, "train")
    return _scale(images), labels.astype(np.int64)


def load_local_data(run: RunConfig, client_id: str, folder: str = "") -> Tuple[np.ndarray, np.ndarray]:
    x, y = directory_data(folder) if folder else partition_data(run, client_id)
    if len(x) == 0:
        raise ConfigError(f"{client_id}: no training samples")
    return x, y
