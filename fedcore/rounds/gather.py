"""Where a round's accepted updates go until the round closes, so that the server's memory
does not grow with the number of clients.

A strategy picks its gatherer when a round opens (`Strategy.gather`):

- `RunningMean` (FedAvg, FedAvgM): each update is added to a sample-weighted sum as it
  arrives and dropped; the round holds a few copies of the model, whatever the number of
  updates, and the mean does not depend on their arrival order (fedcore.aggregate.WeightedSum);
- `KeepAll` (the median, the trimmed mean, any strategy of its own): every update is kept,
  in memory up to `memory_bytes` and beyond that on disk (one .npy file a tensor, read back
  memory-mapped); `updates()` gives them sorted by sender, `close()` deletes the files.
"""

import dataclasses
import os
import shutil
import tempfile
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..aggregate import WeightedSum
from ..container import Message

__all__ = ["Gatherer", "RunningMean", "KeepAll", "KEEP_BYTES"]

KEEP_BYTES = 64 << 20  # decoded updates KeepAll holds in memory before it writes them to disk


class Gatherer:
    """Receives the accepted updates of one round, in arrival order."""

    def add(self, sender: str, message: Message) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """The round is over: release what the gatherer holds."""


class RunningMean(Gatherer):
    """The sample-weighted sum of the updates' tensors, kept as they arrive."""

    def __init__(self, model: Mapping[str, np.ndarray]):
        self.sum = WeightedSum({name: np.shape(value) for name, value in model.items()})

    def add(self, sender: str, message: Message) -> None:
        self.sum.add(message.tensors, message.num_samples, message.support)

    def mean(self) -> Dict[str, np.ndarray]:
        return self.sum.mean()


class KeepAll(Gatherer):
    """Every update of the round: in memory up to `memory_bytes` of tensors, on disk beyond
    (under `directory`, by default the system's temporary folder)."""

    def __init__(self, memory_bytes: int = KEEP_BYTES, directory: Optional[str] = None):
        self.memory_bytes = memory_bytes
        self.directory = directory
        self.held = 0
        self._kept: Dict[str, Message] = {}
        # sender -> (its folder, the update without its tensors, its tensor names in file order)
        self._spilled: Dict[str, Tuple[str, Message, List[str]]] = {}
        self._folder: Optional[str] = None

    def add(self, sender: str, message: Message) -> None:
        size = sum(int(np.asarray(v).nbytes) for v in message.tensors.values())
        if self.held + size <= self.memory_bytes:
            # Without its support: the robust statistics read whole tensors, and what is kept is what is counted.
            self._kept[sender] = dataclasses.replace(message, support={})
            self.held += size
            return
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="fedcore-round-", dir=self.directory)
        folder = os.path.join(self._folder, str(len(self._spilled)))
        os.mkdir(folder)
        for index, value in enumerate(message.tensors.values()):
            np.save(os.path.join(folder, f"{index}.npy"), np.asarray(value, np.float32), allow_pickle=False)
        bare = Message({}, message.round, message.sender, message.num_samples, message.kind, message.extra)
        self._spilled[sender] = (folder, bare, list(message.tensors))

    @property
    def spilled(self) -> int:
        """How many updates went to disk."""
        return len(self._spilled)

    def updates(self) -> List[Tuple[str, Message]]:
        """(sender, update) of every kept update, sorted by sender; spilled tensors come back memory-mapped."""
        out = dict(self._kept)
        for sender, (folder, bare, names) in self._spilled.items():
            tensors = {name: np.load(os.path.join(folder, f"{index}.npy"), mmap_mode="r", allow_pickle=False)
                       for index, name in enumerate(names)}
            out[sender] = Message(tensors, bare.round, bare.sender, bare.num_samples, bare.kind, bare.extra)
        return sorted(out.items())

    def close(self) -> None:
        self._kept.clear()
        self._spilled.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
