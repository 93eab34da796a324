"""Disk images without root and without mounting: the MBR read here, the FAT boot partition
through mtools (`-i image@@offset`), the ext4 root partition through e2fsprogs (debugfs and
e2fsck on `image?offset=N`).

A PYNQ-Z1 image (PYNQ sdbuild, boot/image.wks): an MBR with partition 1 FAT32 (type 0x0c,
bootable, label PYNQ: BOOT.BIN, image.ub, boot.scr) and partition 2 ext4 (type 0x83, label
root: Ubuntu with the xilinx user and the venv /usr/local/share/pynq-venv).
"""

import os
import pathlib
import re
import stat
import struct
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import HwflowError, ImageError
from .tools import require_tool, run_tool

__all__ = ["SECTOR", "Partition", "read_mbr", "pynq_partitions", "check_overwrite", "FatPartition", "Ext4Partition",
           "InodeInfo"]

SECTOR = 512
_FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
_LINUX = 0x83
_EXT_MAGIC_OFFSET = 1024 + 0x38


@dataclass(frozen=True)
class Partition:
    index: int          # 1-4
    type_id: int
    bootable: bool
    start_lba: int
    sectors: int

    @property
    def offset(self) -> int:
        return self.start_lba * SECTOR

    @property
    def size(self) -> int:
        return self.sectors * SECTOR


def read_mbr(image: pathlib.Path) -> List[Partition]:
    """The used primary partitions of `image`'s MBR, checked against the image's size."""
    try:
        size = image.stat().st_size
        with open(image, "rb") as handle:
            sector = handle.read(SECTOR)
    except OSError as exc:
        raise ImageError("cannot read the image %s: %s" % (image, exc.strerror)) from None
    if len(sector) < SECTOR:
        raise ImageError("%s is %d bytes: too small to be a disk image" % (image, size))
    if sector[510:512] != b"\x55\xaa":
        raise ImageError("%s has no MBR boot signature (55 AA at byte 510): not a disk image, "
                         "or a corrupt or compressed one (unzip/xz -d it first)" % image)
    parts = []
    for index in range(4):
        raw = sector[446 + 16 * index: 446 + 16 * (index + 1)]
        status, type_id = raw[0], raw[4]
        start, count = struct.unpack("<II", raw[8:16])
        if type_id == 0 or count == 0:
            continue
        if type_id == 0xEE:
            raise ImageError("%s has a GPT (protective MBR type 0xEE): PYNQ-Z1 images use an MBR" % image)
        if status not in (0x00, 0x80):
            raise ImageError("%s: MBR entry %d has status byte 0x%02x (0x00 or 0x80 expected): "
                             "corrupt partition table" % (image, index + 1, status))
        part = Partition(index + 1, type_id, status == 0x80, start, count)
        if start == 0 or part.offset + part.size > size:
            raise ImageError("%s: partition %d spans bytes %d-%d but the image has %d bytes "
                             "(truncated download?)" % (image, part.index, part.offset,
                                                        part.offset + part.size, size))
        parts.append(part)
    for a in parts:
        for b in parts:
            if a.index < b.index and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                raise ImageError("%s: partitions %d and %d overlap" % (image, a.index, b.index))
    return parts


def pynq_partitions(image: pathlib.Path) -> Tuple[Partition, Partition]:
    """(boot, root) of a PYNQ-Z1 layout, or ImageError saying how the image differs."""
    parts = read_mbr(image)
    if len(parts) < 2 or parts[0].index != 1 or parts[1].index != 2:
        raise ImageError("%s is not laid out like a PYNQ image: it has %d partition(s) (%s); PYNQ's "
                         "has a FAT32 boot partition 1 and an ext4 root partition 2"
                         % (image, len(parts), ", ".join("%d: type 0x%02x" % (p.index, p.type_id)
                                                         for p in parts) or "none"))
    boot, root = parts[0], parts[1]
    if boot.type_id not in _FAT_TYPES:
        raise ImageError("%s: partition 1 is type 0x%02x, not FAT: not a PYNQ image (its boot "
                         "partition is FAT32, 0x0c)" % (image, boot.type_id))
    if root.type_id != _LINUX:
        raise ImageError("%s: partition 2 is type 0x%02x, not Linux (0x83): not a PYNQ image"
                         % (image, root.type_id))
    with open(image, "rb") as handle:
        handle.seek(root.offset + _EXT_MAGIC_OFFSET)
        magic = handle.read(2)
    if magic != b"\x53\xef":
        raise ImageError("%s: partition 2 holds no ext2/3/4 file system (no superblock magic at "
                         "byte %d): corrupt image" % (image, root.offset + _EXT_MAGIC_OFFSET))
    return boot, root


class FatPartition:
    """A FAT partition inside an image, through mtools (no mount, no root)."""

    def __init__(self, image: pathlib.Path, offset: int):
        self.image, self.offset = image, offset
        self.spec = "%s@@%d" % (image, offset)
        self._env = {"MTOOLS_SKIP_CHECK": "1"}

    def _mtools(self, tool: str, *args: str, what: str) -> str:
        program = require_tool(tool, "to read and write the FAT boot partition")
        result = run_tool([program, "-i", self.spec, *args], what=what, env=self._env, check=False)
        if result.returncode != 0:
            raise ImageError("%s: %s failed on the FAT partition at byte %d: %s" % (
                self.image, tool, self.offset,
                (result.stderr + result.stdout).decode("utf-8", "replace").strip() or "no output"))
        return result.stdout.decode("utf-8", "replace")

    def names(self) -> List[str]:
        """File names in the partition's root directory (upper case)."""
        out = self._mtools("mdir", "-b", "::/", what="list the boot partition")
        return sorted(line.strip().split("/")[-1].upper() for line in out.splitlines() if line.strip())

    def free_bytes(self) -> int:
        out = self._mtools("mdir", "::/", what="read the boot partition's free space")
        match = re.search(r"([\d ]+) bytes free", out)
        if not match:
            raise ImageError("%s: mdir printed no free space for the boot partition" % self.image)
        return int(match.group(1).replace(" ", ""))

    def write(self, local: pathlib.Path, name: str) -> None:
        self._mtools("mcopy", "-o", str(local), "::/" + name, what="write %s" % name)

    def read(self, name: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "file"
            self._mtools("mcopy", "-n", "::/" + name, str(out), what="read %s back" % name)
            return out.read_bytes()


@dataclass(frozen=True)
class InodeInfo:
    kind: str           # debugfs's Type: regular, directory, symlink, ...
    mode: int           # permission bits
    uid: int
    gid: int
    size: int
    link_target: str = ""


def _quote(path: str) -> str:
    if '"' in path or "\n" in path:
        raise HwflowError("a path for debugfs may not contain a quote or newline: %r" % path)
    return '"%s"' % path


class Ext4Partition:
    """An ext2/3/4 partition inside an image, through debugfs/e2fsck (`image?offset=N`)."""

    def __init__(self, image: pathlib.Path, offset: int):
        self.image, self.offset = image, offset
        self.spec = "%s?offset=%d" % (image, offset)

    def _debugfs(self, commands: Sequence[str], write: bool = False) -> Tuple[List[str], List[str]]:
        """(stdout sections, one per command; stderr lines other than the banner)."""
        debugfs = require_tool("debugfs", "to read and write the ext4 root partition")
        with tempfile.NamedTemporaryFile("w", suffix=".debugfs", delete=False) as script:
            script.write("\n".join(commands) + "\n")
        try:
            cmd = [debugfs] + (["-w"] if write else []) + ["-f", script.name, self.spec]
            result = run_tool(cmd, what="run debugfs on %s" % self.image,
                              env={"DEBUGFS_PAGER": "__none__"}, check=False)
        finally:
            os.unlink(script.name)
        errors = [line for line in result.stderr.decode("utf-8", "replace").splitlines()
                  if line.strip() and not re.match(r"^debugfs \d", line)]
        if result.returncode != 0:
            raise ImageError("%s: debugfs cannot open the root partition at byte %d: %s"
                             % (self.image, self.offset, "; ".join(errors) or "no output"))
        sections: List[str] = []
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            if line.startswith("debugfs: "):
                sections.append("")
            elif sections:
                sections[-1] += line + "\n"
        if len(sections) != len(commands):
            raise ImageError("debugfs ran %d of %d commands on %s: %s"
                             % (len(sections), len(commands), self.image, "; ".join(errors)))
        return sections, errors

    def stat(self, paths: Sequence[str]) -> Dict[str, Optional[InodeInfo]]:
        """What each path is (None when it does not exist), in one debugfs run."""
        sections, _ = self._debugfs(["stat %s" % _quote(p) for p in paths])
        found: Dict[str, Optional[InodeInfo]] = {}
        for path, text in zip(paths, sections):
            head = re.search(r"Type: (\S+)\s+Mode:\s+(\d+)", text)
            owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)(?:\s+Project:\s+\d+)?\s+Size: (\d+)", text)
            if not head or not owner:
                found[path] = None
                continue
            link = re.search(r'Fast link dest: "(.*)"', text)
            found[path] = InodeInfo(head.group(1), int(head.group(2), 8), int(owner.group(1)),
                                    int(owner.group(2)), int(owner.group(3)),
                                    link.group(1) if link else "")
        return found

    def read_files(self, paths: Sequence[str]) -> Dict[str, bytes]:
        """The contents of regular files, dumped in one debugfs run."""
        with tempfile.TemporaryDirectory() as tmp:
            outs = [pathlib.Path(tmp) / str(i) for i in range(len(paths))]
            _, errors = self._debugfs(["dump %s %s" % (_quote(p), _quote(str(o)))
                                       for p, o in zip(paths, outs)])
            missing = [p for p, o in zip(paths, outs) if not o.exists()]
            if missing:
                raise ImageError("%s: cannot read back %s (%s)" % (
                    self.image, ", ".join(missing[:5]), "; ".join(errors[:5])))
            return {p: o.read_bytes() for p, o in zip(paths, outs)}

    def free_bytes(self) -> Tuple[int, int]:
        """(bytes free beyond the root reserve, free inodes)."""
        sections, _ = self._debugfs(["stats -h"])
        fields = dict(re.findall(r"^([A-Za-z ]+):\s+(\d+)\s*$", sections[0], re.M))
        try:
            free = int(fields["Free blocks"]) - int(fields["Reserved block count"])
            return max(0, free) * int(fields["Block size"]), int(fields["Free inodes"])
        except KeyError as exc:
            raise ImageError("%s: debugfs stats lacks %s" % (self.image, exc)) from None

    def run_script(self, commands: Sequence[str]) -> None:
        """Apply write commands; any error debugfs reports is an ImageError."""
        _, errors = self._debugfs(commands, write=True)
        if errors:
            raise ImageError("%s: debugfs reported %d error(s) writing the root partition: %s"
                             % (self.image, len(errors), "; ".join(errors[:5])))

    def fsck(self) -> None:
        """e2fsck -fn: the file system is consistent, or ImageError with e2fsck's findings."""
        e2fsck = require_tool("e2fsck", "to check the ext4 root partition")
        result = run_tool([e2fsck, "-fn", self.spec], what="check %s" % self.image, check=False)
        if result.returncode != 0:
            text = (result.stdout + result.stderr).decode("utf-8", "replace").strip().splitlines()
            raise ImageError("%s: the root file system has errors (e2fsck -fn, exit %d): %s"
                             % (self.image, result.returncode, " | ".join(text[-6:])))

    def list_dir(self, path: str) -> List[str]:
        """Names in a directory of the partition (`ls -p`), without . and .."""
        sections, _ = self._debugfs(["ls -p %s" % _quote(path)])
        names = []
        for line in sections[0].splitlines():
            fields = line.strip().split("/")
            if len(fields) >= 7 and fields[5] not in (".", ".."):
                names.append(fields[5])
        return names


def check_overwrite(path: pathlib.Path, force: bool, label: str) -> None:
    """HwflowError unless an image file may be written at `path`: nothing there, an empty file, a
    board image this tool wrote (its boot partition holds `label`), or anything regular with `force`.
    A device node, folder or link is never replaced by a file, even with `force`."""
    if not os.path.lexists(str(path)):
        return
    if not stat.S_ISREG(os.lstat(str(path)).st_mode):
        raise HwflowError("%s exists and is not a regular file (a device node, a folder or a link): an image "
                          "file is never written over it (to write an SD card: make flash DEVICE=...)" % path)
    if force or path.stat().st_size == 0 or _holds_boot_file(path, label):
        return
    raise HwflowError("%s exists and is not a board image this tool wrote: pass --force (make ... FORCE=1) "
                      "to overwrite it" % path)


def _holds_boot_file(image: pathlib.Path, name: str) -> bool:
    try:
        boot, _ = pynq_partitions(image)
        return name.upper() in FatPartition(image, boot.offset).names()
    except ImageError:
        return False
