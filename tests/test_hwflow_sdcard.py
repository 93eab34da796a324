"""make sdcard on synthetic PYNQ-Z1 images built here (MBR + FAT32 + ext4, rootless): the
whole payload written with real mtools/e2fsprogs and read back independently; the first-boot
wheel install run for real; the units checked by systemd-analyze where it exists; corrupt,
full and foreign images refused with the original untouched. ~10 s."""

import argparse
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from hwflow.board_config import load_board_config
from hwflow.disk import pynq_partitions
from hwflow.errors import HwflowError, ImageError
from hwflow.payload import build_payload
from hwflow.project import REPO_ROOT, BoardImageSpec
from hwflow.sdcard import build_sdcard
from tests.disk_images import MIB, make_pynq_image, make_wheel, mbr_entry, write_mbr

TOOLS = ("mformat", "mcopy", "mdir", "debugfs", "mke2fs", "e2fsck")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="mtools and e2fsprogs are needed (apt-get install mtools e2fsprogs)")
APP = "/home/xilinx/pynq-fewshot-fl"


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    work = tmp_path_factory.mktemp("pynq")
    return make_pynq_image(work / "pynq_z1.img", work)


@pytest.fixture
def image(pristine, tmp_path):
    copy = tmp_path / "pynq_z1.img"
    shutil.copyfile(pristine, copy)
    return copy


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder)
    return folder


def _args(image, out, wheels, **extra):
    values = dict(image=str(image), out=str(out), config=None, board_id="pynq-07", hostname=None,
                  fl=False, wheels=str(wheels) if wheels else None, no_wheels=wheels is None,
                  require=["hwflow-probe>=1.0"], strict=False)
    values.update(extra)
    return argparse.Namespace(**values)


def _debugfs(image: pathlib.Path, command: str) -> bytes:
    _, root = pynq_partitions(image)
    return subprocess.run(["debugfs", "-R", command, "%s?offset=%d" % (image, root.offset)],
                          capture_output=True, check=True).stdout


def _fat(image: pathlib.Path, name: str) -> bytes:
    boot, _ = pynq_partitions(image)
    return subprocess.run(["mtype", "-i", "%s@@%d" % (image, boot.offset), "::/" + name],
                          capture_output=True, check=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout


def test_sdcard_writes_and_verifies_the_payload(image, tmp_path, wheels):
    before = sha256(image)
    out = tmp_path / "board.img"
    pinned = hashlib.sha256(image.read_bytes()).hexdigest()
    report = build_sdcard(_args(image, out, wheels, image_sha256=pinned.upper()), progress=False)
    assert report["from_sha256"] == pinned
    assert sha256(image) == before  # the original is only read
    assert out.is_file() and not (tmp_path / "board.img.partial").exists()
    assert report["entries_verified"] > 40 and report["board_id"] == "pynq-07"
    assert report["image_allocated_bytes"] < report["image_bytes"]  # holes kept
    # read back with debugfs/mtools directly, not through hwflow
    for rel in ("device/__init__.py", "demo_app/app.py", "fedcore/container.py",
                "models/resnet9_f16_strided_32.onnx"):
        assert _debugfs(out, "cat %s/%s" % (APP, rel)) == (REPO_ROOT / rel).read_bytes()
    assert b"User:  1000   Group:  1000" in _debugfs(out, "stat %s/device/__init__.py" % APP)
    assert b"Mode:  0755" in _debugfs(out, "stat %s/bin/install-wheels.sh" % APP)
    unit = _debugfs(out, "cat /etc/systemd/system/fewshot-demo.service").decode()
    assert "Restart=on-failure" in unit and "User=root" in unit
    assert "ExecStart=/usr/local/share/pynq-venv/bin/python3 -m demo_app --backend auto" in unit
    wants = _debugfs(out, "stat /etc/systemd/system/multi-user.target.wants/fewshot-demo.service")
    assert b'Fast link dest: "/etc/systemd/system/fewshot-demo.service"' in wants
    assert b"fewshot-setup.service" in _debugfs(out, "ls /etc/systemd/system/multi-user.target.wants")
    assert b"fewshot-fl.service" not in _debugfs(out, "ls /etc/systemd/system")
    assert _debugfs(out, "cat /etc/hostname") == b"pynq-07\n"
    assert b"127.0.1.1\tpynq-07" in _debugfs(out, "cat /etc/hosts")
    assert b"hwflow_probe-1.0-py3-none-any.whl" in _debugfs(out, "ls %s/wheels" % APP)
    assert b'id = "pynq-07"' in _debugfs(out, "cat %s/config/board.toml" % APP)
    assert b'"board_id": "pynq-07"' in _fat(out, "pynq-fewshot-fl.json")
    assert _fat(out, "BOOT.BIN") == b"placeholder BOOT.BIN\n"
    _, root = pynq_partitions(out)
    subprocess.run(["e2fsck", "-fn", "%s?offset=%d" % (out, root.offset)], check=True,
                   capture_output=True)


def test_first_boot_installs_the_wheels_offline(image, tmp_path, wheels):
    out = tmp_path / "board.img"
    build_sdcard(_args(image, out, wheels), progress=False)
    app = tmp_path / "app"
    (app / "bin").mkdir(parents=True)
    _, root = pynq_partitions(out)
    spec = "%s?offset=%d" % (out, root.offset)
    subprocess.run(["debugfs", "-R", "rdump %s/wheels %s" % (APP, app), spec], check=True, capture_output=True)
    script = app / "bin" / "install-wheels.sh"
    script.write_bytes(_debugfs(out, "cat %s/bin/install-wheels.sh" % APP))
    env = dict(os.environ, FEWSHOT_PYTHON=sys.executable, PIP_TARGET=str(tmp_path / "site"),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run(["sh", str(script)], check=True, env=env, capture_output=True)
    assert (tmp_path / "site" / "hwflow_probe" / "__init__.py").read_text() == "VALUE = 42\n"
    assert (app / "wheels" / ".installed").is_file()
    shutil.rmtree(tmp_path / "site")  # the same wheel set again: nothing to do
    subprocess.run(["sh", str(script)], check=True, env=env, capture_output=True)
    assert not (tmp_path / "site").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze(tmp_path):
    config = load_board_config(fl=True)
    payload = build_payload(config, wheels=[], requirements=[])
    paths = []
    for entry in payload.files():
        if entry.path.endswith(".service"):
            paths.append(tmp_path / entry.path.rsplit("/", 1)[1])
            paths[-1].write_bytes(entry.content())
    assert len(paths) == 3
    result = subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True)
    # the board's executables do not exist here; anything else is a unit error
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "is not executable" not in line]
    assert problems == []


def test_federated_client_unit_keeps_the_broker_secret(tmp_path):
    config = load_board_config(fl=True)
    config.fl_broker = "mqtt://pynq-07:s3cret@broker:1883"
    payload = build_payload(config, wheels=[], requirements=[])
    files = {e.path[len(APP) + 1:]: e for e in payload.files()}
    unit = files["systemd/fewshot-fl.service"].content().decode()
    # Issue 23: ${FEWSHOT_BROKER} on ExecStart put user:password into /proc/PID/cmdline.
    assert "s3cret" not in unit and "--broker" not in unit and "broker:1883" not in unit
    assert "EnvironmentFile=%s/config/fl.env" % APP in unit and "--client-id pynq-01" in unit
    env = files["config/fl.env"]
    assert (env.mode, env.owner) == (0o600, "root")
    assert env.content() == b'FL_BROKER="mqtt://pynq-07@broker:1883"\nFL_MQTT_PASSWORD="s3cret"\n'
    assert files["config/fl.toml"].content() == (REPO_ROOT / "configs/fl/fmnist_headline.toml").read_bytes()


def test_payload_packages_come_from_the_board_image_definition():
    config = load_board_config()
    spec = BoardImageSpec(packages=("device", "not_a_package"), exclude=("device/fl",), wheels=())
    payload = build_payload(config, spec=spec)
    rels = [e.path[len(APP) + 1:] for e in payload.files()]
    assert "device/__init__.py" in rels and not any(r.startswith("device/fl/") for r in rels)
    assert not any(r.startswith("fedcore/") for r in rels)
    assert any("not_a_package/ is not in this checkout" in w for w in payload.warnings)
    with pytest.raises(HwflowError, match="not_a_package/ is not in this checkout"):
        build_payload(config, spec=spec, strict=True)


def _zero(image, offset, count):
    with open(image, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\0" * count)


def _corrupt_superblock(image):
    _, root = pynq_partitions(image)
    _zero(image, root.offset + 1024, 1024)


def _truncate(image):
    with open(image, "r+b") as handle:
        handle.truncate(image.stat().st_size - 4 * MIB)


def _no_signature(image):
    _zero(image, 510, 2)


def _fsck_errors(image):
    _, root = pynq_partitions(image)
    subprocess.run(["debugfs", "-w", "-R", "set_inode_field /etc/hosts links_count 7",
                    "%s?offset=%d" % (image, root.offset)], check=True, capture_output=True)


def _linux_boot(image):
    _, root = pynq_partitions(image)
    write_mbr(image, [mbr_entry(True, 0x83, 2048, 40 * MIB // 512),
                      mbr_entry(False, 0x83, root.start_lba, root.sectors)])


def _one_partition(image):
    write_mbr(image, [mbr_entry(True, 0x0C, 2048, 40 * MIB // 512)])


@pytest.mark.parametrize("damage,message", [
    (_corrupt_superblock, "holds no ext2/3/4 file system"),
    (_truncate, "truncated download"),
    (_no_signature, "no MBR boot signature"),
    (_fsck_errors, "the root file system has errors"),
    (_linux_boot, "partition 1 is type 0x83, not FAT"),
    (_one_partition, "not laid out like a PYNQ image"),
])
def test_bad_images_are_refused_untouched(image, tmp_path, damage, message):
    damage(image)
    before = sha256(image)
    out = tmp_path / "board.img"
    with pytest.raises(ImageError, match=message):
        build_sdcard(_args(image, out, None), progress=False)
    assert sha256(image) == before
    assert not out.exists() and not (tmp_path / "board.img.partial").exists()


@pytest.mark.parametrize("kwargs,message", [
    ({"boot_files": ("README.txt",)}, "its boot partition has no BOOT.BIN"),
    ({"with_home": False}, "has no /home/xilinx"),
    ({"fill_root_bytes": 19 * MIB}, "the root partition of .* is full: the payload needs"),
])
def test_foreign_and_full_images_are_refused_untouched(tmp_path, kwargs, message):
    image = make_pynq_image(tmp_path / "other.img", tmp_path, **kwargs)
    before = sha256(image)
    out = tmp_path / "board.img"
    with pytest.raises(ImageError, match=message):
        build_sdcard(_args(image, out, None), progress=False)
    assert sha256(image) == before
    assert not out.exists() and not (tmp_path / "board.img.partial").exists()


def test_argument_errors(image, tmp_path, wheels):
    with pytest.raises(HwflowError, match="OUT must differ from IMAGE"):
        build_sdcard(_args(image, image, None), progress=False)
    with pytest.raises(HwflowError, match=r"no image at .*v2\.7, v3\.0\.1 and v3\.1\.1 .*pynq\.io/boards"):
        build_sdcard(_args(tmp_path / "missing.img", tmp_path / "o.img", None), progress=False)
    # The image's SHA-256, when given, is checked before anything else is read.
    with pytest.raises(HwflowError, match="has SHA-256 [0-9a-f]{64}, not the 0{64} given"):
        build_sdcard(_args(image, tmp_path / "o.img", None, image_sha256="0" * 64), progress=False)
    with pytest.raises(HwflowError, match="must be 64 hexadecimal digits"):
        build_sdcard(_args(image, tmp_path / "o.img", None, image_sha256="xyz"), progress=False)
    with pytest.raises(HwflowError, match="no wheel in .* for paho-mqtt"):
        build_sdcard(_args(image, tmp_path / "o.img", wheels, require=["paho-mqtt>=2.0"]), progress=False)
    x86 = tmp_path / "x86"
    x86.mkdir()
    (x86 / "numpy-1.26.0-cp310-cp310-manylinux_2_17_x86_64.whl").write_bytes(b"")
    with pytest.raises(HwflowError, match="built for manylinux_2_17_x86_64"):
        build_sdcard(_args(image, tmp_path / "o.img", x86, require=["numpy"]), progress=False)
    with pytest.raises(HwflowError, match="hostname 'Bad_Host'"):
        build_sdcard(_args(image, tmp_path / "o.img", None, hostname="Bad_Host"), progress=False)
    assert not (tmp_path / "o.img").exists()


def test_without_a_wheels_folder_offline_pip_download_explains(monkeypatch, tmp_path):
    import hwflow.wheels as wheels_module

    monkeypatch.setattr(wheels_module, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(HwflowError, match="pip download --no-deps --only-binary=:all: --platform linux_armv7l"):
        wheels_module.collect_wheels(["paho-mqtt>=2.0"], None)


def test_an_image_without_a_wants_folder_gets_one(tmp_path, wheels):
    image = make_pynq_image(tmp_path / "minimal.img", tmp_path, tweak_tree=lambda tree: (
        tree / "etc/systemd/system/multi-user.target.wants").rmdir())
    out = tmp_path / "board.img"
    build_sdcard(_args(image, out, wheels), progress=False)
    listing = _debugfs(out, "ls -l /etc/systemd/system/multi-user.target.wants")
    assert b"fewshot-demo.service" in listing and b"fewshot-setup.service" in listing


def test_sdcard_never_replaces_a_device_node_or_a_foreign_file_and_rebuilds_its_own(image, tmp_path):
    """Issue 23: sdcard --out on a block-device node replaced it with a regular file, and any
    regular file was overwritten."""
    node = tmp_path / "sdb"
    os.mkfifo(str(node))  # stands for /dev/sdb: not a regular file
    with pytest.raises(HwflowError, match="is not a regular file"):
        build_sdcard(_args(image, node, None, force=True), progress=False)
    assert not node.is_file()
    foreign = tmp_path / "notes.img"
    foreign.write_text("my notes\n")
    with pytest.raises(HwflowError, match="not a board image this tool wrote: pass --force"):
        build_sdcard(_args(image, foreign, None), progress=False)
    assert foreign.read_text() == "my notes\n"
    out = tmp_path / "board.img"
    build_sdcard(_args(image, out, None), progress=False)
    build_sdcard(_args(image, out, None), progress=False)  # its own image: rebuilt without --force
    build_sdcard(_args(image, foreign, None, force=True), progress=False)
    assert foreign.read_bytes()[510:512] == b"\x55\xaa"
