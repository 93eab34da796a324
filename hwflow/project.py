"""What hwflow reads from the repository: the board image definition, `.tarch` files, defaults."""

import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

from .errors import HwflowError

if TYPE_CHECKING:
    from tensil.arch import Architecture

if sys.version_info >= (3, 11):
    import tomllib
else:  # the workstation runs 3.11; older Pythons need the tomli backport
    import tomli as tomllib

__all__ = [
    "REPO_ROOT", "BoardImageSpec", "load_board_image", "load_tarch", "default_rtl_dir", "git_commit",
]

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

@dataclass(frozen=True)
class BoardImageSpec:
    """pyproject.toml [tool.board-image]: what a board receives."""

    packages: Tuple[str, ...]
    exclude: Tuple[str, ...]
    wheels: Tuple[str, ...]


def load_board_image(pyproject: Optional[pathlib.Path] = None) -> BoardImageSpec:
    path = pathlib.Path(pyproject) if pyproject else REPO_ROOT / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise HwflowError("cannot read the board image definition in %s: %s" % (path, exc)) from None
    table = data.get("tool", {}).get("board-image")
    if not isinstance(table, dict):
        raise HwflowError("%s has no [tool.board-image] table" % path)
    fields = {}
    for key in ("packages", "exclude", "wheels"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise HwflowError("%s: [tool.board-image] %s must be a list of strings" % (path, key))
        fields[key] = tuple(value)
    if not fields["packages"]:
        raise HwflowError("%s: [tool.board-image] packages is empty" % path)
    return BoardImageSpec(**fields)


def load_tarch(path: "os.PathLike[str]") -> "Architecture":
    """A .tarch file, read and checked by the Tensil package's one reader; its errors as HwflowError."""
    from tensil.arch import load_tarch as read_tarch
    from tensil.errors import ArchError

    try:
        return read_tarch(path)
    except ArchError as exc:
        raise HwflowError(str(exc)) from None


def default_rtl_dir() -> pathlib.Path:
    """TENSIL_RTL, else the shared 12x12 RTL beside the repository (tensil_tools.rtl.DEFAULT_RTL)."""
    from tensil_tools.rtl import DEFAULT_RTL

    return pathlib.Path(os.environ.get("TENSIL_RTL") or DEFAULT_RTL)


def git_commit(root: pathlib.Path = REPO_ROOT) -> Optional[str]:
    """HEAD of the repository at `root` (with '-dirty' when files changed), None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None
