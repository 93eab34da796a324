"""`make flash`: write an image to an SD card, refusing every target that could be a mistake,
then read it back and compare sha256.

Refused: a partition instead of a whole disk, the disk the system runs from (/, /boot, /usr,
/var, /home or swap on it), a mounted disk, a disk that is not removable (except mmcblk*: SD
slots of laptops report removable=0), one larger than MAX_CARD_BYTES or smaller than the image.
A regular file is accepted as a target (to test, or to copy an image) when it is new, empty or
a board image this tool wrote (else --force). The image itself must have a PYNQ partition table.
The sysfs and procfs roots are parameters so that tests build their own.
"""

import hashlib
import logging
import os
import pathlib
import stat
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Set

from .disk import check_overwrite, pynq_partitions
from .errors import FlashRefused, HwflowError, ImageError
from .sdcard import LABEL_FILE

log = logging.getLogger(__name__)

__all__ = ["MAX_CARD_BYTES", "Target", "describe_target", "system_disks", "check_target", "flash"]

MAX_CARD_BYTES = 256 * 10**9  # the largest SD card anyone flashes a PYNQ image to (SDXC 256 GB)
_SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/usr", "/var", "/home")
_BLOCK = 4 << 20


@dataclass
class Target:
    path: pathlib.Path
    kind: str                          # "file" or "block"
    name: str = ""                     # kernel name of a block device, e.g. sdb
    size: int = 0
    removable: bool = False
    model: str = ""
    partition_of: str = ""             # set when the device is a partition of this disk
    partitions: List[str] = field(default_factory=list)
    mounts: List[str] = field(default_factory=list)


def _read(path: pathlib.Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def _parent_disks(name: str, sys_root: pathlib.Path) -> Set[str]:
    """The whole disks under a block device (itself, a partition's disk, a dm/md device's slaves)."""
    entry = sys_root / "class" / "block" / name
    if (entry / "partition").exists():
        return {entry.resolve().parent.name}
    slaves = sorted((entry / "slaves").glob("*")) if (entry / "slaves").is_dir() else []
    if slaves:
        return set().union(*(_parent_disks(s.name, sys_root) for s in slaves))
    return {name}


def _mount_table(proc_root: pathlib.Path) -> List[List[str]]:
    return [line.split() for line in _read(proc_root / "mounts").splitlines() if line.split()]


def _device_name(device: str) -> str:
    return os.path.basename(os.path.realpath(device))


def system_disks(sys_root: pathlib.Path = pathlib.Path("/sys"),
                 proc_root: pathlib.Path = pathlib.Path("/proc")) -> Set[str]:
    """Disks holding the running system's file systems or swap."""
    disks: Set[str] = set()
    for fields in _mount_table(proc_root):
        if len(fields) >= 2 and fields[1] in _SYSTEM_MOUNTS and fields[0].startswith("/dev/"):
            disks |= _parent_disks(_device_name(fields[0]), sys_root)
    for line in _read(proc_root / "swaps").splitlines()[1:]:
        device = line.split()[0] if line.split() else ""
        if device.startswith("/dev/"):
            disks |= _parent_disks(_device_name(device), sys_root)
    return disks


def describe_target(device: str, sys_root: pathlib.Path = pathlib.Path("/sys"),
                    proc_root: pathlib.Path = pathlib.Path("/proc"),
                    is_block: Optional[Callable[[pathlib.Path], bool]] = None) -> Target:
    path = pathlib.Path(device)
    if is_block is None:
        def is_block(p: pathlib.Path) -> bool:
            return p.exists() and stat.S_ISBLK(os.stat(p).st_mode)
    if not is_block(path):
        if os.path.realpath(path).startswith("/dev/"):
            raise FlashRefused("%s is not a block device (no such disk here?): refusing to "
                               "create a file under /dev" % path)
        if path.exists() and not path.is_file():
            raise FlashRefused("%s is neither a block device nor a regular file" % path)
        if not path.parent.is_dir():
            raise FlashRefused("%s: no such device or folder" % path)
        return Target(path, "file", size=path.stat().st_size if path.exists() else 0)
    name = _device_name(str(path))
    entry = sys_root / "class" / "block" / name
    target = Target(path, "block", name)
    if (entry / "partition").exists():
        target.partition_of = entry.resolve().parent.name
        return target
    disk = sys_root / "block" / name
    target.size = int(_read(disk / "size", "0") or 0) * 512
    target.removable = _read(disk / "removable", "0") == "1"
    target.model = " ".join(filter(None, (_read(disk / "device" / "vendor"),
                                          _read(disk / "device" / "model"))))
    target.partitions = sorted(p.name for p in disk.glob(name + "*") if (p / "partition").exists())
    names = {name, *target.partitions}
    for fields in _mount_table(proc_root):
        if len(fields) >= 2 and fields[0].startswith("/dev/") and _device_name(fields[0]) in names:
            target.mounts.append("%s on %s" % (fields[0], fields[1]))
    return target


def check_target(target: Target, image: pathlib.Path, system: Set[str], force: bool = False) -> None:
    """FlashRefused with the reason when `target` must not be written."""
    size = image.stat().st_size
    if target.kind == "file":
        if target.path.exists() and os.path.samefile(target.path, image):
            raise FlashRefused("the target %s is the image itself" % target.path)
        try:
            check_overwrite(target.path, force, LABEL_FILE)
        except HwflowError as exc:
            raise FlashRefused(str(exc)) from None
        return
    if target.partition_of:
        raise FlashRefused("%s is a partition of %s: flash the whole disk (/dev/%s)"
                           % (target.path, target.partition_of, target.partition_of))
    if target.name in system:
        raise FlashRefused("%s is the disk this system runs from: refusing" % target.path)
    if target.mounts:
        raise FlashRefused("%s is mounted (%s): unmount it first (umount or eject)"
                           % (target.path, "; ".join(target.mounts)))
    if not target.removable and not target.name.startswith("mmcblk"):
        raise FlashRefused("%s is not a removable disk (/sys/block/%s/removable = 0): not an SD "
                           "card in a USB reader" % (target.path, target.name))
    if target.size > MAX_CARD_BYTES:
        raise FlashRefused("%s is %.0f GB, larger than any SD card a PYNQ image goes on (%d GB): "
                           "refusing" % (target.path, target.size / 1e9, MAX_CARD_BYTES // 10**9))
    if target.size < size:
        raise FlashRefused("%s (%.1f GB) is smaller than the image (%.1f GB)"
                           % (target.path, target.size / 1e9, size / 1e9))


def _summary(target: Target, image: pathlib.Path) -> str:
    size = image.stat().st_size
    if target.kind == "file":
        return "write %s (%.1f MB) to the regular file %s%s" % (
            image, size / 1e6, target.path, " (overwriting it)" if target.path.exists() else "")
    return "OVERWRITE %s (%s, %.1f GB, partitions: %s) with %s (%.1f MB): everything on it is lost" % (
        target.path, target.model or "unknown model", target.size / 1e9,
        ", ".join(target.partitions) or "none", image, size / 1e6)


def _confirm(summary: str, assume_yes: bool, ask: Callable[[str], str]) -> None:
    print(summary)  # the question's context: shown whatever logging says, as input() shows its prompt
    if assume_yes:
        return
    if ask is input and not sys.stdin.isatty():
        raise FlashRefused("no confirmation (stdin is not a terminal): run with YES=1 / --yes")
    if ask("type yes to continue: ").strip().lower() != "yes":
        raise FlashRefused("not confirmed: nothing written")


def _write(image: pathlib.Path, target: Target, progress: bool) -> str:
    from tqdm import tqdm

    size = image.stat().st_size
    digest = hashlib.sha256()
    flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if target.kind == "file" else 0)
    fd = os.open(str(target.path), flags, 0o644)
    try:
        with open(image, "rb") as src, tqdm(total=size, unit="B", unit_scale=True, desc="write",
                                             disable=not progress) as bar:
            for chunk in iter(lambda: src.read(_BLOCK), b""):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                bar.update(len(chunk))
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):  # read back from the card, not the page cache
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _read_back(target: Target, size: int, progress: bool) -> str:
    from tqdm import tqdm

    digest = hashlib.sha256()
    left = size
    with open(target.path, "rb") as dst, tqdm(total=size, unit="B", unit_scale=True, desc="verify",
                                               disable=not progress) as bar:
        while left:
            chunk = dst.read(min(_BLOCK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
            bar.update(len(chunk))
    if left:
        raise HwflowError("%s ended %d bytes before the image's end" % (target.path, left))
    return digest.hexdigest()


def flash(image: "os.PathLike[str]", device: str, *, assume_yes: bool = False,
          sys_root: pathlib.Path = pathlib.Path("/sys"), proc_root: pathlib.Path = pathlib.Path("/proc"),
          is_block: Optional[Callable[[pathlib.Path], bool]] = None,
          ask: Callable[[str], str] = input, progress: bool = True, force: bool = False) -> str:
    """Check, confirm, write, read back; returns the verified sha256. `force`: write over a
    regular file that is not a board image this tool wrote."""
    image = pathlib.Path(image)
    if not image.is_file():
        raise HwflowError("no image at %s (make sdcard OUT=%s first)" % (image, image))
    try:
        pynq_partitions(image)  # its partition table, before anything is written anywhere
    except ImageError as exc:
        raise ImageError("the image to flash: %s" % exc) from None
    target = describe_target(device, sys_root, proc_root, is_block)
    check_target(target, image, system_disks(sys_root, proc_root), force)
    _confirm(_summary(target, image), assume_yes, ask)
    written = _write(image, target, progress)
    read = _read_back(target, image.stat().st_size, progress)
    if read != written:
        raise HwflowError("verification failed: %s reads back sha256 %s, the image is %s"
                          % (target.path, read, written))
    log.info("flashed and verified %s: sha256 %s", target.path, read)
    return read
