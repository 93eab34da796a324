"""make deploy against a real OpenSSH server started here on 127.0.0.1 (throwaway keys),
deploying into a temporary root: rsync and tar transports, the files checked on the server
side, the restart command and the doctor run there. ~15 s (each SSH session costs ~0.5 s)."""

import hashlib
import shutil
import subprocess
import sys
import time

import pytest

from hwflow.project import REPO_ROOT
from tests.disk_images import make_wheel
from tests.ssh_server import SshServer

APP = "home/xilinx/pynq-fewshot-fl"
# The board's own checklist, run in the deployed folder (the laptop's interpreter stands for PYNQ's venv).
DOCTOR = "%s -m device doctor" % sys.executable


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sshd = SshServer(str(tmp_path_factory.mktemp("sshd"))).start()
    yield sshd
    sshd.stop()


def _deploy(server, root, *extra, timeout=120):
    options = [a for o in server.ssh_options() for a in ("--ssh-option", o)]
    cmd = [sys.executable, "-m", "hwflow", "deploy", "--board", server.board, "--port", str(server.port),
           *options, "--remote-root", str(root), *extra]
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)
    return result, time.monotonic() - start


@pytest.mark.parametrize("transport", ["rsync", "tar"])
def test_deploy_copies_checks_restarts_and_runs_the_doctor(server, tmp_path, transport):
    if transport == "rsync" and shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (apt-get install rsync)")
    wheels = tmp_path / "wheels"
    make_wheel(wheels)
    root = tmp_path / "board"
    result, seconds = _deploy(server, root, "--transport", transport, "--wheels", str(wheels),
                              "--require", "hwflow-probe", "--board-id", "pynq-03",
                              "--restart-command", "echo restarted > {app}/restart.log",
                              "--doctor-command", DOCTOR)
    assert result.returncode == 0, result.stdout + result.stderr
    app = root / APP
    for rel in ("device/__init__.py", "demo_app/cli.py", "models/resnet9_f16_strided_32.json"):
        assert (app / rel).read_bytes() == (REPO_ROOT / rel).read_bytes()
    assert (app / "wheels/hwflow_probe-1.0-py3-none-any.whl").is_file()
    assert (app / "bin/install-wheels.sh").stat().st_mode & 0o777 == 0o755
    assert 'id = "pynq-03"' in (app / "config/board.toml").read_text()
    assert (app / "restart.log").read_text() == "restarted\n"   # ran on the board, in order
    assert "by %s in" % transport in result.stdout and "sha256 checked on the board" in result.stdout
    assert "backbone" in result.stdout and "ready" in result.stdout  # the doctor's checklist, printed
    assert "doctor exit 0" in result.stdout
    manifest = (app / "MANIFEST.json").read_text()
    assert hashlib.sha256((app / "device/__init__.py").read_bytes()).hexdigest() in manifest
    print("deploy over loopback by %s: %.2f s" % (transport, seconds))


def test_redeploy_removes_stale_files_and_keeps_the_wheel_stamp(server, tmp_path):
    root = tmp_path / "board"
    args = ("--no-wheels", "--transport", "tar", "--restart-command", "true", "--doctor-command", DOCTOR)
    assert _deploy(server, root, *args)[0].returncode == 0
    app = root / APP
    (app / "stale.txt").write_text("left over")
    (app / "wheels").mkdir()
    (app / "wheels" / ".installed").write_text("abc")
    result, _ = _deploy(server, root, *args)
    assert result.returncode == 0, result.stderr
    assert not (app / "stale.txt").exists()
    assert not (root / (APP + ".old")).exists() and not (root / (APP + ".new")).exists()


def test_a_failing_doctor_fails_the_deploy(server, tmp_path):
    result, _ = _deploy(server, tmp_path / "board", "--no-wheels", "--restart-command", "true",
                        "--doctor-command", "%s -c 'import sys; print(\"camera: missing\"); sys.exit(3)'"
                        % sys.executable)
    assert result.returncode == 1
    assert "camera: missing" in result.stdout and "doctor exit 3" in result.stdout


def test_a_failing_restart_command_is_an_error(server, tmp_path):
    result, _ = _deploy(server, tmp_path / "board", "--no-wheels", "--restart-command", "exit 5",
                        "--doctor-command", DOCTOR)
    assert result.returncode == 2 and "the restart command (exit 5) failed on the board (exit 5)" in result.stderr


def test_an_unreachable_board_is_named(tmp_path):
    cmd = [sys.executable, "-m", "hwflow", "deploy", "--board", "nobody@127.0.0.1", "--port", "1",
           "--no-wheels", "--ssh-option", "ConnectTimeout=5"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2 and "cannot reach the board over SSH (nobody@127.0.0.1)" in result.stderr


# ---------------------------------------------------------------- make variables are data, never commands


def _make(*arguments):
    return subprocess.run(["make", "--no-print-directory", *arguments], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("board", ["127.0.0.1;touch {marker};true", "pynq 01 && touch {marker}",
                                   "`touch {marker}`", "-oProxyCommand=touch {marker}"])
def test_a_make_variable_never_runs_a_command_and_a_refused_deploy_fails_make(tmp_path, board):
    """Issue 23: make deploy "BOARD=127.0.0.1;touch X;true" ran touch, and make returned 0."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed (apt-get install make)")
    marker = tmp_path / "ran"
    result = _make("deploy", "BOARD=" + board.format(marker=marker))
    assert not marker.exists(), result.stdout + result.stderr
    assert result.returncode != 0
    assert "is not user@host, host or user@[IPv6 address]" in result.stderr, result.stderr


def test_make_names_a_missing_variable():
    if shutil.which("make") is None:
        pytest.skip("make is not installed (apt-get install make)")
    result = _make("-n", "flash")
    assert result.returncode == 2 and "make flash needs DEVICE=/dev/sdX" in result.stderr
