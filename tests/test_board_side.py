"""The board image (pyproject.toml [tool.board-image]) stays board-safe, and runs alone:
copied into an empty folder with nothing else of the project beside it."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

from scripts import check_board_side

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGE = check_board_side.board_image(ROOT)


def test_board_image_is_clean():
    assert check_board_side.check(ROOT, **IMAGE) == []


def make_package(root: pathlib.Path, name: str, source: str) -> None:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(source)


@pytest.mark.parametrize("source, problem", [
    ("import torch\n", "imports torch"),
    ("from torch import nn\n", "imports torch"),
    ("def f(x: list[int]) -> None:\n    match x:\n        case _: pass\n", "not Python 3.8 syntax"),
    ("def serve():\n    from coordinator.server import Coordinator\n", "imports coordinator.server, which is outside"),
    ("import importlib\nimportlib.import_module('training')\n", "imports training, which is outside"),
])
def test_the_check_catches_violations(tmp_path, source, problem):
    make_package(tmp_path, "boardpkg", source)
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("")

    problems = check_board_side.check(tmp_path, ["boardpkg"], third_party=["numpy"])

    assert any(problem in p for p in problems), problems


def test_the_check_catches_torch_imported_indirectly(tmp_path):
    """A board module importing a helper module outside the board side that imports torch."""
    (tmp_path / "helper.py").write_text("import importlib\nimportlib.import_module('torch')\n")
    make_package(tmp_path, "boardpkg", "import helper\n")

    problems = check_board_side.check(tmp_path, ["boardpkg"])

    assert any("imports torch" in p for p in problems), problems
    assert any("boardpkg:1: imports helper, which is outside" in p or "imports helper" in p for p in problems)


def test_python38_packages_may_import_more_but_never_torch(tmp_path):
    make_package(tmp_path, "server", "import json\nimport boardpkg\n")
    make_package(tmp_path, "boardpkg", "")
    assert check_board_side.check(tmp_path, ["boardpkg"], python38=["server"]) == []
    make_package(tmp_path, "worse", "import torch\n")
    assert any("imports torch" in p for p in check_board_side.check(tmp_path, ["boardpkg"], python38=["worse"]))


def test_excluded_folders_are_left_out(tmp_path):
    make_package(tmp_path, "tool", "")
    (tmp_path / "tool" / "compiler").mkdir()
    (tmp_path / "tool" / "compiler" / "__init__.py").write_text("import onnx\n")
    assert check_board_side.check(tmp_path, ["tool"], exclude=["tool/compiler"]) == []
    assert check_board_side.check(tmp_path, ["tool"]) != []


def test_relative_imports_count_too(tmp_path):
    """Issue 24: the check read absolute imports only, so a board module's lazy `from .compiler import`
    of an excluded folder (tensil's compile command) passed."""
    make_package(tmp_path, "tool", "")
    (tmp_path / "tool" / "compiler").mkdir()
    (tmp_path / "tool" / "compiler" / "__init__.py").write_text("X = 1\n")
    (tmp_path / "tool" / "cli.py").write_text("def run():\n    from .compiler import X\n    return X\n")
    (tmp_path / "tool" / "deep.py").write_text("from ... import anything\n")

    problems = check_board_side.check(tmp_path, ["tool"], exclude=["tool/compiler"])

    assert any("cli.py:2: imports tool.compiler, which is outside the board image" in p for p in problems), problems
    assert any("deep.py:1: imports <beyond the top package>" in p for p in problems), problems
    (tmp_path / "tool" / "deep.py").unlink()
    (tmp_path / "tool" / "cli.py").write_text("from . import compiler\n")
    assert check_board_side.check(tmp_path, ["tool"], exclude=["tool/compiler"]) != []
    assert check_board_side.check(tmp_path, ["tool"]) == []


def test_command_line_exit_status():
    result = subprocess.run([sys.executable, "scripts/check_board_side.py"], cwd=str(ROOT),
                            capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "board image OK" in result.stdout


# ------------------------------------------------------------ the image alone


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The board packages (without the excluded folders), the models and the replay
    images in an empty folder: what an SD card carries."""
    folder = tmp_path_factory.mktemp("board")
    skip = [ROOT / e for e in IMAGE["exclude"]]
    for package in IMAGE["packages"]:
        shutil.copytree(ROOT / package, folder / package,
                        ignore=lambda d, names: [n for n in names if n == "__pycache__"
                                                 or pathlib.Path(d, n) in skip])
    shutil.copytree(ROOT / "models", folder / "models")
    shutil.copytree(ROOT / "tests" / "fixtures" / "demo", folder / "replay")
    return folder


def run_alone(image: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """python -S: no site, so no .pth file (our editable install among them) adds the
    repository; the folder and the third-party packages are all there is on sys.path."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(image), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(image), sysconfig.get_paths()["purelib"],
                                          sysconfig.get_paths()["platlib"]])}
    return subprocess.run([sys.executable, "-S", *args], cwd=str(image), env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_image_holds_no_server_or_training_code(image):
    names = {p.name for p in image.iterdir()}
    assert names == set(IMAGE["packages"]) | {"models", "replay"}
    probe = run_alone(image, "-c", "import importlib.util as u; print([u.find_spec(m) is None for m in "
                      "('coordinator', 'training', 'tensil_tools')])")
    assert probe.stdout.strip() == "[True, True, True]", probe.stderr


def test_the_board_tensil_command_line_runs_alone_and_sends_compiling_to_a_workstation(image):
    """Issue 24: `python -m tensil compile` on a board said the onnx package was missing."""
    usage = run_alone(image, "-m", "tensil", "--help")
    assert usage.returncode == 0 and "emulate" in usage.stdout, usage.stderr
    compile_ = run_alone(image, "-m", "tensil", "compile", "models/resnet9_f16_strided_32.onnx")
    assert compile_.returncode == 1 and "the compiler is a workstation tool" in compile_.stderr, compile_.stderr


def test_the_federated_client_starts_from_the_image_alone(image):
    result = run_alone(image, "-m", "device", "fl", "--help")
    assert result.returncode == 0, result.stderr
    assert "--broker" in result.stdout and "--client-id" in result.stdout


def test_the_demonstrator_replays_from_the_image_alone(image):
    assert run_alone(image, "-m", "demo_app", "--help").returncode == 0
    result = run_alone(image, "-m", "demo_app", "--replay", "replay", "--headless", "--out-dir", "out",
                       "--max-frames", "40", "--threads", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (image / "out" / "summary.json").is_file()


def test_an_incomplete_image_names_what_is_missing(image, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(image, partial, ignore=shutil.ignore_patterns("fedlink"))
    result = run_alone(partial, "-m", "device", "fl", "--help")
    assert result.returncode == 2
    assert "No module named 'fedlink'" in result.stderr and "the board image is incomplete" in result.stderr
