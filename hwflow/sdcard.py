"""`make sdcard`: our stack written into a copy of an official PYNQ-Z1 image, without root and
without mounting. The original is only read; the copy is written as OUT.partial and renamed to
OUT once everything written has been read back and compared (sha256, modes, owners, links) and
e2fsck finds the root file system clean.

What goes where: the application folder and its units (payload.py) on the ext4 root partition,
plus /etc/systemd/system/<unit> with multi-user.target.wants/ links (what `systemctl enable`
makes), /etc/hostname and the 127.0.1.1 line of /etc/hosts; on the FAT boot partition a label
file, pynq-fewshot-fl.json, that says which board a card is for.
"""

import argparse
import datetime
import hashlib
import json
import logging
import math
import os
import pathlib
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .board_config import load_board_config
from .disk import Ext4Partition, FatPartition, InodeInfo, check_overwrite, pynq_partitions
from .errors import HwflowError, ImageError
from .payload import Entry, Payload, build_payload
from .project import git_commit, load_board_image
from .wheels import collect_wheels

log = logging.getLogger(__name__)

__all__ = ["LABEL_FILE", "ImagePlan", "inspect_image", "system_entries", "copy_image",
           "write_image", "verify_image", "build_sdcard"]

LABEL_FILE = "pynq-fewshot-fl.json"
_UNIT_DIR = "/etc/systemd/system"
_WANTS = _UNIT_DIR + "/multi-user.target.wants"


@dataclass
class ImagePlan:
    """What the original image says about itself (read-only inspection)."""

    boot: FatPartition
    root: Ext4Partition
    uid: int
    gid: int
    python_version: str
    hosts: bytes


def _passwd_ids(passwd: bytes, user: str) -> Tuple[int, int]:
    for line in passwd.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user:
            try:
                return int(fields[2]), int(fields[3])
            except ValueError:
                break
    raise ImageError("not a PYNQ image: /etc/passwd has no user %r" % user)


# AMD publishes no checksums beside these images (none were found on pynq.io, AMD's download
# pages, the PYNQ repository or its issues): IMAGE_SHA256 pins the one a lab downloaded.
SUPPORTED_IMAGES = ("the official PYNQ-Z1 images v2.7, v3.0.1 and v3.1.1 are supported (pynq_z1_v3.1.1.zip "
                    "and the others at https://www.pynq.io/boards.html, the Z1's, not the Z2's); unzip it, "
                    "and give IMAGE_SHA256= (--image-sha256) to check it is the file you meant")


def check_image_sha256(image: pathlib.Path, expected: str) -> str:
    """Refuse an image whose SHA-256 is not `expected` (64 hex digits); returns it."""
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise HwflowError("--image-sha256 must be 64 hexadecimal digits, got %r" % expected)
    digest = hashlib.sha256()
    with open(image, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    got = digest.hexdigest()
    if got != expected:
        raise HwflowError("%s has SHA-256 %s, not the %s given: a damaged download or another image"
                          % (image, got, expected))
    return got


def inspect_image(image: pathlib.Path, payload_config) -> ImagePlan:
    """Check that `image` is a sound PYNQ-Z1 image that can take our payload (read only)."""
    boot_part, root_part = pynq_partitions(image)
    boot = FatPartition(image, boot_part.offset)
    if "BOOT.BIN" not in boot.names():
        raise ImageError("not a PYNQ image: its boot partition has no BOOT.BIN (%s)" % image)
    root = Ext4Partition(image, root_part.offset)
    root.fsck()
    config = payload_config
    home = "/home/" + config.user
    wanted = [home, "/etc/passwd", "/etc/hosts", config.python, _UNIT_DIR, config.app_dir]
    found = root.stat(wanted)
    if found[home] is None or found["/etc/passwd"] is None:
        raise ImageError("not a PYNQ image: its root partition has no %s or /etc/passwd" % home)
    if found[config.python] is None:
        raise ImageError("%s has no %s (the board config's python): PYNQ v2.7 and v3.x images "
                         "have /usr/local/share/pynq-venv; set [board] python for this image"
                         % (image, config.python))
    if found[_UNIT_DIR] is None:
        raise ImageError("not a systemd image: %s has no %s" % (image, _UNIT_DIR))
    if found[config.app_dir] is not None:
        raise ImageError("%s already has %s: start from the official PYNQ image" % (image, config.app_dir))
    files = root.read_files(["/etc/passwd", "/etc/hosts"])
    uid, gid = _passwd_ids(files["/etc/passwd"], config.user)
    venv_lib = config.python.rsplit("/bin/", 1)[0] + "/lib"
    versions = [n[len("python"):] for n in root.list_dir(venv_lib) if n.startswith("python3.")] \
        if root.stat([venv_lib])[venv_lib] else []
    return ImagePlan(boot, root, uid, gid, versions[0] if versions else "3.10", files["/etc/hosts"])


def _hosts_with(hosts: bytes, hostname: str) -> bytes:
    lines = [line for line in hosts.decode("utf-8", "replace").splitlines()
             if not line.startswith("127.0.1.1")]
    lines.append("127.0.1.1\t%s" % hostname)
    return ("\n".join(lines) + "\n").encode()


def system_entries(payload: Payload, plan: ImagePlan) -> List[Entry]:
    """What the SD card adds outside the application folder: enabled units, host name."""
    entries = []
    for unit in payload.units:
        source = next(e for e in payload.files() if e.path.endswith("/systemd/" + unit))
        entries.append(Entry("%s/%s" % (_UNIT_DIR, unit), "file", 0o644, "root", data=source.content()))
        entries.append(Entry("%s/%s" % (_WANTS, unit), "symlink", 0o777, "root",
                             target="%s/%s" % (_UNIT_DIR, unit)))
    entries.append(Entry("/etc/hostname", "file", 0o644, "root",
                         data=(payload.config.hostname + "\n").encode()))
    entries.append(Entry("/etc/hosts", "file", 0o644, "root",
                         data=_hosts_with(plan.hosts, payload.config.hostname)))
    return entries


def copy_image(source: pathlib.Path, target: pathlib.Path, progress: bool = True) -> None:
    """Copy a disk image, leaving holes where it is all zeros (images are mostly empty)."""
    from tqdm import tqdm

    size = source.stat().st_size
    block = 4 << 20
    with open(source, "rb") as src, open(target, "wb") as dst, tqdm(
            total=size, unit="B", unit_scale=True, desc="copy image", disable=not progress) as bar:
        while True:
            chunk = src.read(block)
            if not chunk:
                break
            if chunk.count(0) == len(chunk):
                dst.seek(len(chunk), os.SEEK_CUR)
            else:
                dst.write(chunk)
            bar.update(len(chunk))
        dst.truncate(size)


def _owner_ids(entry: Entry, plan: ImagePlan) -> Tuple[int, int]:
    return (plan.uid, plan.gid) if entry.owner == "app" else (0, 0)


def _all_entries(payload: Payload, plan: ImagePlan) -> List[Entry]:
    dirs = [Entry(d, "dir", 0o755, "app") for d in payload.directories()]
    return dirs + payload.entries + system_entries(payload, plan)


def _space_needed(entries: List[Entry], block: int = 4096) -> int:
    files = sum(math.ceil(e.size() / block) * block for e in entries if e.kind == "file")
    return int(1.02 * (files + block * sum(e.kind == "dir" for e in entries))) + 64 * block


def write_image(plan: ImagePlan, entries: List[Entry], tmp: pathlib.Path) -> None:
    """Write `entries` into the root partition of the copy `plan` describes, in one debugfs run."""
    root = plan.root
    free, free_inodes = root.free_bytes()
    need = _space_needed(entries)
    if need > free or len(entries) > free_inodes:
        raise ImageError("the root partition of %s is full: the payload needs %.1f MiB and %d "
                         "inodes, it has %.1f MiB (beyond the root reserve) and %d inodes free"
                         % (root.image, need / 2**20, len(entries), free / 2**20, free_inodes))
    parents = sorted({e.path.rsplit("/", 1)[0] for e in entries if e.kind != "dir"})
    existing = root.stat([e.path for e in entries] + parents)
    missing_parents = [p for p in parents if existing[p] is None
                       and not any(e.kind == "dir" and e.path == p for e in entries)]
    commands: List[str] = []
    for path in missing_parents:  # e.g. multi-user.target.wants on a minimal image
        commands += ['mkdir "%s"' % path, 'set_inode_field "%s" mode 040755' % path,
                     'set_inode_field "%s" uid 0' % path, 'set_inode_field "%s" gid 0' % path]
    for i, entry in enumerate(entries):
        uid, gid = _owner_ids(entry, plan)
        path = '"%s"' % entry.path
        if entry.kind == "dir":
            if existing[entry.path] is not None:
                raise ImageError("%s already exists in %s" % (entry.path, root.image))
            commands += ["mkdir %s" % path, "set_inode_field %s mode 0%o" % (path, 0o40000 | entry.mode)]
        elif entry.kind == "file":
            source = tmp / ("%d" % i)
            source.write_bytes(entry.content())
            if existing[entry.path] is not None:
                commands.append("rm %s" % path)
            commands += ['write "%s" %s' % (source, path),
                         "set_inode_field %s mode 0%o" % (path, 0o100000 | entry.mode)]
        else:
            if len(entry.target) >= 60:  # only "fast" links keep their target in the inode
                raise HwflowError("symlink target %s is too long for a fast link" % entry.target)
            if existing[entry.path] is not None:
                commands.append("rm %s" % path)
            commands.append('symlink %s "%s"' % (path, entry.target))
        commands += ["set_inode_field %s uid %d" % (path, uid), "set_inode_field %s gid %d" % (path, gid)]
    root.run_script(commands)


def verify_image(plan: ImagePlan, entries: List[Entry], label: bytes) -> int:
    """Read everything back: sha256 of each file, mode, owner, link target, the boot label."""
    found = plan.root.stat([e.path for e in entries])
    contents = plan.root.read_files([e.path for e in entries if e.kind == "file"])
    kinds = {"dir": "directory", "file": "regular", "symlink": "symlink"}
    problems = []
    for entry in entries:
        info: Optional[InodeInfo] = found[entry.path]
        uid, gid = _owner_ids(entry, plan)
        if info is None:
            problems.append("%s is missing" % entry.path)
            continue
        if (info.kind, info.uid, info.gid) != (kinds[entry.kind], uid, gid):
            problems.append("%s is a %s owned by %d:%d, expected a %s owned by %d:%d" % (
                entry.path, info.kind, info.uid, info.gid, kinds[entry.kind], uid, gid))
        if entry.kind != "symlink" and info.mode & 0o7777 != entry.mode:
            problems.append("%s has mode %o, expected %o" % (entry.path, info.mode & 0o7777, entry.mode))
        if entry.kind == "symlink" and info.link_target != entry.target:
            problems.append("%s points to %r, expected %r" % (entry.path, info.link_target, entry.target))
        if entry.kind == "file" and hashlib.sha256(contents[entry.path]).hexdigest() != entry.sha256():
            problems.append("%s reads back with another sha256" % entry.path)
    if plan.boot.read(LABEL_FILE) != label:
        problems.append("the boot partition's %s reads back differently" % LABEL_FILE)
    if problems:
        raise ImageError("verification of %s failed: %s" % (plan.root.image, "; ".join(problems[:8])))
    plan.root.fsck()
    return len(entries)


def _label(payload: Payload, entries: List[Entry]) -> bytes:
    manifest = next(e for e in payload.files() if e.path.endswith("/MANIFEST.json"))
    return (json.dumps({
        "board_id": payload.config.board_id, "hostname": payload.config.hostname,
        "app_dir": payload.config.app_dir, "bitstream": payload.bitstream, "units": payload.units,
        "entries": len(entries), "manifest_sha256": manifest.sha256(),
        "source_commit": git_commit(),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }, indent=1) + "\n").encode()


def build_sdcard(args: argparse.Namespace, progress: bool = True) -> Dict[str, object]:
    """The whole `sdcard` command; returns (and writes to OUT.json) what it did."""
    start = time.monotonic()
    image, out = pathlib.Path(args.image), pathlib.Path(args.out)
    if not image.is_file():
        raise HwflowError("no image at %s: %s" % (image, SUPPORTED_IMAGES))
    expected = (getattr(args, "image_sha256", None) or "").strip().lower()
    if expected:
        check_image_sha256(image, expected)
    if out.exists() and os.path.samefile(image, out):
        raise HwflowError("OUT must differ from IMAGE: the original image is never modified")
    check_overwrite(out, getattr(args, "force", False), LABEL_FILE)
    config = load_board_config(args.config and pathlib.Path(args.config), board_id=args.board_id,
                               hostname=args.hostname, fl=args.fl)
    spec = load_board_image()
    original = inspect_image(image, config)
    requirements = [] if args.no_wheels else (args.require or list(spec.wheels))
    wheels = collect_wheels(requirements, args.wheels and pathlib.Path(args.wheels),
                            original.python_version)
    payload = build_payload(config, wheels=wheels, requirements=requirements, spec=spec,
                            strict=args.strict)
    partial = out.with_name(out.name + ".partial")
    copy_image(image, partial, progress=progress)
    try:
        plan = ImagePlan(FatPartition(partial, original.boot.offset),
                         Ext4Partition(partial, original.root.offset), original.uid, original.gid,
                         original.python_version, original.hosts)
        entries = _all_entries(payload, plan)
        label = _label(payload, entries)
        if plan.boot.free_bytes() < len(label) + 65536:
            raise ImageError("the boot partition of %s is full" % image)
        with tempfile.TemporaryDirectory() as tmp:
            write_image(plan, entries, pathlib.Path(tmp))
            (pathlib.Path(tmp) / LABEL_FILE).write_bytes(label)
            plan.boot.write(pathlib.Path(tmp) / LABEL_FILE, LABEL_FILE)
        verified = verify_image(plan, entries, label)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    stat = out.stat()
    report = {
        "image": str(out), "from": str(image), "from_sha256": expected or None, "board_id": config.board_id,
        "hostname": config.hostname, "entries_verified": verified,
        "payload_bytes": payload.total_bytes(), "bitstream": payload.bitstream,
        "units": payload.units, "wheels": [w.name for w in wheels], "warnings": payload.warnings,
        "image_bytes": stat.st_size, "image_allocated_bytes": stat.st_blocks * 512,
        "seconds": round(time.monotonic() - start, 2),
    }
    out.with_name(out.name + ".json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s for %s: %d entries (%.1f MiB) verified, image %.1f MiB (%.1f MiB allocated), %.1f s",
             out, config.board_id, verified, payload.total_bytes() / 2**20, stat.st_size / 2**20,
             stat.st_blocks * 512 / 2**20, report["seconds"])
    for message in payload.warnings:
        log.warning("warning: %s", message)
    return report
