"""The board side (fedcore, device, demo_app, coordinator) stays numpy-only and Python 3.8."""

import pathlib
import subprocess
import sys

import pytest

from scripts import check_board_side

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOARD_SIDE = ["fedcore", "device", "demo_app", "coordinator"]


def test_board_side_is_clean():
    assert check_board_side.check(ROOT, BOARD_SIDE) == []


@pytest.mark.parametrize("source, problem", [
    ("import torch\n", "imports torch"),
    ("from torch import nn\n", "imports torch"),
    ("def f(x: list[int]) -> None:\n    match x:\n        case _: pass\n", "not Python 3.8 syntax"),
])
def test_the_check_catches_violations(tmp_path, source, problem):
    (tmp_path / "boardpkg").mkdir()
    (tmp_path / "boardpkg" / "__init__.py").write_text(source)

    problems = check_board_side.check(tmp_path, ["boardpkg"])

    assert any(problem in p for p in problems), problems


def test_the_check_catches_torch_imported_indirectly(tmp_path):
    """A board module importing a helper module outside the board side that imports torch."""
    (tmp_path / "helper.py").write_text("import importlib\nimportlib.import_module('torch')\n")
    (tmp_path / "boardpkg").mkdir()
    (tmp_path / "boardpkg" / "__init__.py").write_text("import helper\n")

    problems = check_board_side.check(tmp_path, ["boardpkg"])

    assert any("imports torch" in p for p in problems), problems


def test_command_line_exit_status():
    result = subprocess.run([sys.executable, "scripts/check_board_side.py"] + BOARD_SIDE,
                            cwd=str(ROOT), capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
