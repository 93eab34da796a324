"""Synthetic disk images laid out like an official PYNQ-Z1 image, built rootless for tests.

PYNQ's sdbuild (boot/image.wks): an MBR; partition 1 FAT32 (type 0x0c, bootable, label PYNQ)
with BOOT.BIN, image.ub and boot.scr; partition 2 ext4 (type 0x83, label root) with the
xilinx user, /usr/local/share/pynq-venv and systemd. Here the partitions are small (a 40 MiB
FAT32, the smallest mtools formats as FAT32 with 512-byte clusters, and a 24 MiB ext4) and
the boot files are placeholders: what matters is the layout the tools must find.
"""

import os
import pathlib
import struct
import subprocess
from typing import Callable, Optional

__all__ = ["MIB", "make_pynq_image", "write_mbr", "mbr_entry", "make_wheel"]

MIB = 1 << 20
BOOT_START = MIB  # 1 MiB aligned, as partitioning tools do


def mbr_entry(bootable: bool, type_id: int, start_lba: int, sectors: int) -> bytes:
    chs = b"\xfe\xff\xff"  # "use the LBA fields"
    return struct.pack("<B3sB3sII", 0x80 if bootable else 0, chs, type_id, chs, start_lba, sectors)


def write_mbr(image: pathlib.Path, entries) -> None:
    table = b"".join(entries).ljust(64, b"\0")
    with open(image, "r+b") as handle:
        handle.seek(446)
        handle.write(table + b"\x55\xaa")


def _root_tree(root: pathlib.Path, user: str, with_home: bool) -> None:
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "lib/systemd/system").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "%s:x:1000:1000:Xilinx User,,,,:/home/%s:/bin/bash\n" % (user, user))
    (root / "etc/group").write_text("root:x:0:\n%s:x:1000:\n" % user)
    (root / "etc/hostname").write_text("pynq\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tpynq\n")
    (root / "lib/systemd/system/bootpy.service").write_text("[Unit]\nDescription=boot.py\n")
    if with_home:
        (root / "home" / user).mkdir(parents=True)
    venv = root / "usr/local/share/pynq-venv"
    (venv / "lib/python3.10/site-packages/pynq").mkdir(parents=True)
    (venv / "lib/python3.10/site-packages/pynq/__init__.py").write_text("__version__ = '3.1'\n")
    (venv / "bin").mkdir()
    (venv / "bin/python3").write_text("#!/bin/sh\nexec python3 \"$@\"\n")
    os.chmod(venv / "bin/python3", 0o755)


def make_pynq_image(image: pathlib.Path, work: pathlib.Path, *, fat_mib: int = 40,
                    root_mib: int = 24, boot_files=("BOOT.BIN", "image.ub", "boot.scr"),
                    with_home: bool = True, boot_type: int = 0x0C,
                    fill_root_bytes: int = 0,
                    tweak_tree: Optional[Callable[[pathlib.Path], None]] = None) -> pathlib.Path:
    """Build the image at `image` (scratch files in `work`); returns `image`."""
    tree = work / "rootfs"
    _root_tree(tree, "xilinx", with_home)
    if fill_root_bytes:
        (tree / "filler.bin").write_bytes(os.urandom(fill_root_bytes))
    if tweak_tree:
        tweak_tree(tree)
    root_start = BOOT_START + fat_mib * MIB
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", str(tree),
                    "-E", "offset=%d,root_owner=0:0" % root_start, str(image), "%dM" % root_mib],
                   check=True, stdout=subprocess.DEVNULL)
    with open(image, "r+b") as handle:
        handle.truncate(root_start + root_mib * MIB)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    spec = "%s@@%d" % (image, BOOT_START)
    subprocess.run(["mformat", "-i", spec, "-F", "-v", "PYNQ", "-T", str(fat_mib * MIB // 512),
                    "-H", str(BOOT_START // 512), "::"], check=True, env=env)
    for name in boot_files:
        payload = work / name
        payload.write_bytes(b"placeholder " + name.encode() + b"\n")
        subprocess.run(["mcopy", "-i", spec, str(payload), "::/" + name], check=True, env=env)
    write_mbr(image, [mbr_entry(True, boot_type, BOOT_START // 512, fat_mib * MIB // 512),
                      mbr_entry(False, 0x83, root_start // 512, root_mib * MIB // 512)])
    return image


def make_wheel(folder: pathlib.Path, name: str = "hwflow_probe", version: str = "1.0") -> pathlib.Path:
    """A minimal pure-Python wheel (PEP 427): one module, METADATA, WHEEL and RECORD."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    dist = "%s-%s.dist-info" % (name, version)
    files = {
        "%s/__init__.py" % name: b"VALUE = 42\n",
        "%s/METADATA" % dist: ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n"
                               % (name.replace("_", "-"), version)).encode(),
        "%s/WHEEL" % dist: b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                           b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (path, digest, len(data)))
    record.append("%s/RECORD,," % dist)
    files["%s/RECORD" % dist] = ("\n".join(record) + "\n").encode()
    wheel = folder / ("%s-%s-py3-none-any.whl" % (name, version))
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel
