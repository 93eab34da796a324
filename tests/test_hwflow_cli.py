"""python -m hwflow: every subcommand's --help, `rtl` without a Docker engine, the RTL checks,
and the board-image definition read from pyproject.toml. ~5 s."""

import shutil
import subprocess
import sys

import pytest

from hwflow.errors import HwflowError
from hwflow.project import REPO_ROOT, load_board_image, load_tarch
from hwflow.rtl import check_rtl_matches, find_rtl
from tests.hwflow_fixtures import write_tcu_rtl

COMMANDS = ("rtl", "rtl-report", "bitstream", "sdcard", "flash", "deploy")


def _hwflow(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hwflow", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env)


def test_help_of_every_command():
    top = _hwflow("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        result = _hwflow(command, "--help")
        assert result.returncode == 0 and result.stdout.startswith("usage: python -m hwflow " + command)


def test_make_help_lists_the_targets():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-s", "help"], capture_output=True, text=True, cwd=REPO_ROOT).stdout
    for target in ("rtl", "rtl-report", "bitstream", "sdcard", "flash", "deploy"):
        assert "make %s " % target in out


def test_rtl_without_docker_says_what_to_install():
    result = _hwflow("rtl", "--arch", "tensil_arch/pynqz1.tarch", env={"PATH": "/nonexistent"})
    assert result.returncode == 2
    assert "docker is not installed" in result.stderr and "TENSIL_RTL" not in result.stdout


def test_rtl_with_a_docker_client_but_no_engine():
    if shutil.which("docker") is None:
        pytest.skip("no docker client here")
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        pytest.skip("a Docker engine answers here")
    result = _hwflow("rtl", "--arch", "tensil_arch/pynqz1.tarch")
    assert result.returncode == 2
    assert "no Docker engine answers" in result.stderr and "TENSIL_RTL=dir" in result.stderr


def test_rtl_accepts_a_given_rtl_and_checks_it(tmp_path):
    good = write_tcu_rtl(tmp_path / "good", "pynqz1", 128, 8192, 2048)
    result = _hwflow("rtl", "--arch", "tensil_arch/pynqz1.tarch", "--rtl", str(good))
    assert result.returncode == 0 and "top top_pynqz1" in result.stdout
    result = _hwflow("rtl", "--arch", "tensil_arch/pynqz1_perf.tarch", "--rtl", str(good))
    assert result.returncode == 2 and "array_size 12 x 16 bits" in result.stderr


def test_find_rtl_errors(tmp_path):
    with pytest.raises(HwflowError, match="no Tensil RTL folder"):
        find_rtl(tmp_path / "missing")
    (tmp_path / "top_a.v").write_text("module top_a();\nendmodule\n")
    (tmp_path / "top_b.v").write_text("module top_b();\nendmodule\n")
    with pytest.raises(HwflowError, match="exactly one top_<arch>.v"):
        find_rtl(tmp_path)
    (tmp_path / "top_b.v").unlink()
    with pytest.raises(HwflowError, match="expected one or two bram_dp_"):
        find_rtl(tmp_path)
    (tmp_path / "bram_dp_128x8192.v").write_text("module bram_dp_128x8192();\nendmodule\n")
    (tmp_path / "top_a.v").write_text("module other();\nendmodule\n")
    with pytest.raises(HwflowError, match="does not define module top_a"):
        find_rtl(tmp_path)


def test_shared_rtl_matches_the_perf_architecture():
    shared = REPO_ROOT.parent / "shared" / "rtl" / "tensil_custom_perf"
    if not shared.is_dir():
        pytest.skip("the shared Tensil RTL is not here")
    rtl = find_rtl(shared)
    check_rtl_matches(rtl, load_tarch(REPO_ROOT / "tensil_arch/pynqz1_perf.tarch"), "pynqz1_perf")
    with pytest.raises(HwflowError, match="192x2048, 192x8192"):
        check_rtl_matches(rtl, load_tarch(REPO_ROOT / "tensil_arch/pynqz1.tarch"), "pynqz1")


def test_board_image_definition_and_tarch_errors(tmp_path):
    spec = load_board_image()
    assert "device" in spec.packages and "tensil" in spec.packages and "tensil_tools" not in spec.packages
    assert any(w.startswith("paho-mqtt") for w in spec.wheels)
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool.board-image]\npackages = 3\n")
    with pytest.raises(HwflowError, match="packages must be a list of strings"):
        load_board_image(bad)
    tarch = tmp_path / "x.tarch"
    tarch.write_text('{"data_type": "FP16BP8"}')
    with pytest.raises(HwflowError, match="x.tarch: missing field"):
        load_tarch(tarch)
