"""make flash against a regular file and a fake sysfs/procfs (the roots are parameters): the
write and read-back, and every refusal. ~2 s."""

import hashlib
import os
import pathlib

import pytest

from hwflow.errors import FlashRefused, HwflowError
from hwflow.flash import MAX_CARD_BYTES, flash, system_disks
from tests.disk_images import mbr_entry, write_mbr


def _image(tmp_path: pathlib.Path, size: int = 3 * 1024 * 1024 + 17) -> pathlib.Path:
    """Random bytes behind a PYNQ partition table: FAT boot partition 1, ext4 root partition 2."""
    image = tmp_path / "board.img"
    image.write_bytes(os.urandom(size))
    write_mbr(image, [mbr_entry(True, 0x0C, 1, 2048), mbr_entry(False, 0x83, 2049, 2048)])
    with open(image, "r+b") as handle:
        handle.seek(2049 * 512 + 1080)  # the ext superblock's magic
        handle.write(b"\x53\xef")
    return image


class FakeSystem:
    """/sys/block, /sys/class/block and /proc/{mounts,swaps} as the kernel lays them out."""

    def __init__(self, root: pathlib.Path):
        self.sys = root / "sys"
        self.proc = root / "proc"
        self.dev = root / "dev"
        for d in (self.sys / "block", self.sys / "class" / "block", self.proc, self.dev):
            d.mkdir(parents=True)
        self.mounts = ["sysfs /sys sysfs rw 0 0", "/dev/vda1 / ext4 rw 0 0"]
        self.swaps = ["Filename Type Size Used Priority"]
        self.disk("vda", 256 * 10**9, removable=False, partitions=1)
        self.write()

    def disk(self, name: str, size: int, removable: bool, partitions: int = 2,
             model: str = "SD/MMC") -> pathlib.Path:
        disk = self.sys / "block" / name
        (disk / "device").mkdir(parents=True)
        (disk / "size").write_text("%d\n" % (size // 512))
        (disk / "removable").write_text("1\n" if removable else "0\n")
        (disk / "device" / "model").write_text(model + "\n")
        (self.sys / "class" / "block" / name).symlink_to(disk)
        for i in range(1, partitions + 1):
            part = name + ("p%d" % i if name[-1].isdigit() else "%d" % i)
            (disk / part).mkdir()
            (disk / part / "partition").write_text("%d\n" % i)
            (self.sys / "class" / "block" / part).symlink_to(disk / part)
        node = self.dev / name
        node.write_bytes(b"")  # stands for the device node: a file the test can read back
        return node

    def write(self) -> None:
        (self.proc / "mounts").write_text("\n".join(self.mounts) + "\n")
        (self.proc / "swaps").write_text("\n".join(self.swaps) + "\n")

    def flash(self, image, device, **kwargs):
        nodes = {str(p) for p in self.dev.iterdir()}
        return flash(image, str(device), sys_root=self.sys, proc_root=self.proc,
                     is_block=lambda p: str(p) in nodes, progress=False, **kwargs)


@pytest.fixture
def fake(tmp_path):
    return FakeSystem(tmp_path / "root")


def test_flash_to_a_regular_file_and_verify(tmp_path):
    image = _image(tmp_path)
    target = tmp_path / "card.img"
    digest = flash(image, str(target), assume_yes=True, progress=False)
    assert target.read_bytes() == image.read_bytes()
    assert digest == hashlib.sha256(image.read_bytes()).hexdigest()


def test_flash_a_removable_card_after_confirmation(fake, tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    image = _image(tmp_path)
    node = fake.disk("sdz", 16 * 10**9, removable=True)
    asked = []
    fake.flash(image, node, ask=lambda prompt: asked.append(prompt) or "yes")
    assert asked and node.read_bytes() == image.read_bytes()
    out = capsys.readouterr().out
    assert "OVERWRITE %s (SD/MMC, 16.0 GB, partitions: sdz1, sdz2)" % node in out
    assert "flashed and verified" in caplog.text  # the library logs; the CLI shows it (fedcore.console)


def test_a_laptop_sd_slot_is_accepted(fake, tmp_path):
    image = _image(tmp_path)
    node = fake.disk("mmcblk0", 32 * 10**9, removable=False)  # SD slots report removable=0
    fake.flash(image, node, assume_yes=True)
    assert node.read_bytes() == image.read_bytes()


def test_not_confirmed_writes_nothing(fake, tmp_path):
    image = _image(tmp_path)
    node = fake.disk("sdz", 16 * 10**9, removable=True)
    with pytest.raises(FlashRefused, match="not confirmed"):
        fake.flash(image, node, ask=lambda prompt: "no")
    assert node.read_bytes() == b""


def test_refusals(fake, tmp_path):
    image = _image(tmp_path)
    cases = []
    mounted = fake.disk("sdb", 16 * 10**9, removable=True)
    fake.mounts.append("/dev/sdb1 /media/user/PYNQ vfat rw 0 0")
    cases.append((mounted, "is mounted \\(/dev/sdb1 on /media/user/PYNQ\\)"))
    cases.append((fake.disk("sdc", 500 * 10**9, removable=False), "is not a removable disk"))
    cases.append((fake.disk("sdd", MAX_CARD_BYTES + 10**9, removable=True), "larger than any SD card"))
    cases.append((fake.disk("sde", 1024 * 1024, removable=True), "is smaller than the image"))
    cases.append((fake.dev / "vda", "is the disk this system runs from"))
    swap = fake.disk("sdf", 8 * 10**9, removable=True)
    fake.swaps.append("/dev/sdf2 partition 1000 0 -2")
    cases.append((swap, "is the disk this system runs from"))
    partition = fake.dev / "sdb1"
    partition.write_bytes(b"")
    cases.append((partition, "is a partition of sdb: flash the whole disk"))
    fake.write()
    assert system_disks(fake.sys, fake.proc) == {"vda", "sdf"}
    for node, message in cases:
        with pytest.raises(FlashRefused, match=message):
            fake.flash(image, node, assume_yes=True)
        assert node.read_bytes() == b"", node


def test_refuses_what_is_not_a_disk_or_a_file(tmp_path):
    image = _image(tmp_path)
    with pytest.raises(FlashRefused, match="refusing to create a file under /dev"):
        flash(image, "/dev/hwflow-no-such-disk", assume_yes=True, progress=False)
    with pytest.raises(FlashRefused, match="neither a block device nor a regular file"):
        flash(image, str(tmp_path), assume_yes=True, progress=False)
    with pytest.raises(FlashRefused, match="is the image itself"):
        flash(image, str(image), assume_yes=True, progress=False)
    with pytest.raises(HwflowError, match="no image at"):
        flash(tmp_path / "none.img", str(tmp_path / "x"), assume_yes=True, progress=False)


def test_no_terminal_needs_yes(tmp_path, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(FlashRefused, match="run with YES=1"):
        flash(_image(tmp_path), str(tmp_path / "card.img"), progress=False)
    assert not (tmp_path / "card.img").exists()


def test_a_file_that_is_not_a_disk_image_is_never_flashed(tmp_path):
    """Issue 23: flash accepted a text file as an image."""
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n" * 100)
    with pytest.raises(HwflowError, match="the image to flash: .*no MBR boot signature"):
        flash(text, str(tmp_path / "out.img"), assume_yes=True, progress=False)
    assert not (tmp_path / "out.img").exists()


def test_a_regular_file_that_is_not_a_board_image_is_overwritten_only_with_force(tmp_path):
    """Issue 23: flash and sdcard overwrote any regular file."""
    image = _image(tmp_path)
    thesis = tmp_path / "thesis.pdf"
    thesis.write_bytes(b"%PDF-1.7 a year of work")
    with pytest.raises(FlashRefused, match="is not a board image this tool wrote: pass --force"):
        flash(image, str(thesis), assume_yes=True, progress=False)
    assert thesis.read_bytes() == b"%PDF-1.7 a year of work"
    flash(image, str(thesis), assume_yes=True, progress=False, force=True)
    assert thesis.read_bytes() == image.read_bytes()


def test_a_device_node_is_never_replaced_by_a_file(tmp_path):
    image = _image(tmp_path)
    node = tmp_path / "fifo"
    os.mkfifo(str(node))  # stands for a device node: not a regular file
    from hwflow.disk import check_overwrite
    with pytest.raises(HwflowError, match="is not a regular file .*never written over it"):
        check_overwrite(node, True, "x")
    assert not node.is_file() and image.exists()
