"""Whole-file writes that are atomic and durable: the one helper of the project.

A reader sees the old file or the new one, never a part (the data goes to a temporary
file in the same folder, which `os.replace` then renames over the target), and once the
call returns the new file survives a crash or a power cut: the file is fsync'd before
the rename and its folder after it (a board's SD card is switched off without warning).
On an error the temporary file is removed and the old file stays.

    atomic_write("run/checkpoint.fedc", blob)                  # bytes or str (UTF-8)
    with atomic_open("memory.npz") as handle:                  # for writers that want a file
        np.savez(handle, ...)

Checkpoints, reports, model cards and the few-shot memory file are written this way.
It needs only the standard library, so the board (device/) and training/ both use it.
"""

import contextlib
import os
import uuid
from typing import IO, Iterator, Optional, Union

__all__ = ["atomic_open", "atomic_write"]

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: Optional[str] = None,
                newline: Optional[str] = None) -> Iterator[IO]:
    """A handle on a temporary file that replaces `path` when the block ends without an
    error; `mode` is "wb" or "w" (text: `encoding`, default UTF-8, and `newline`)."""
    if mode not in ("wb", "w"):
        raise ValueError("atomic_open writes a whole file: mode 'wb' or 'w', not %r" % mode)
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    # hidden, in the same folder (a rename within one file system), unique per writer
    temporary = os.path.join(folder, ".%s.%d-%s.tmp" % (os.path.basename(target), os.getpid(),
                                                        uuid.uuid4().hex[:8]))
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        handle = (os.fdopen(descriptor, mode, encoding=encoding or "utf-8", newline=newline)
                  if mode == "w" else os.fdopen(descriptor, mode))
    except BaseException:
        os.close(descriptor)
        os.unlink(temporary)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def atomic_write(path: PathLike, data: Union[bytes, str]) -> None:
    """Replace `path` with `data` (str is written as UTF-8), atomically and durably."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX; Windows has no directory handles to sync)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
