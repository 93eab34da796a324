"""What hwflow reads from the repository: the board image definition, `.tarch` files, defaults."""

import json
import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .errors import HwflowError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the workstation runs 3.11; older Pythons need the tomli backport
    import tomli as tomllib

__all__ = [
    "REPO_ROOT", "BoardImageSpec", "load_board_image", "TARCH_FIELDS", "load_tarch",
    "scalar_bits", "default_rtl_dir", "git_commit",
]

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# The 11 fields of a Tensil .tarch and their types (TENSIL.md §1.1).
TARCH_FIELDS: Dict[str, type] = {
    "data_type": str, "array_size": int, "dram0_depth": int, "dram1_depth": int,
    "local_depth": int, "accumulator_depth": int, "simd_registers_depth": int,
    "stride0_depth": int, "stride1_depth": int, "number_of_threads": int,
    "thread_queue_depth": int,
}
_SCALAR_BITS = {"FP8BP4": 8, "FP16BP8": 16, "FP18BP10": 18, "FP32BP16": 32, "FLOAT32": 32}


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


def load_tarch(path: "os.PathLike[str]") -> Dict[str, Any]:
    """A .tarch file as a dict, every field present with its type (TENSIL.md §1.1)."""
    path = pathlib.Path(path)
    try:
        arch = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HwflowError("cannot read the architecture %s: %s" % (path, exc.strerror)) from None
    except ValueError as exc:
        raise HwflowError("%s is not JSON: %s" % (path, exc)) from None
    if not isinstance(arch, dict):
        raise HwflowError("%s: a .tarch is a JSON object" % path)
    missing = [k for k in TARCH_FIELDS if k not in arch]
    extra = [k for k in arch if k not in TARCH_FIELDS]
    if missing or extra:
        raise HwflowError("%s: missing fields %s, unknown fields %s" % (path, missing, extra))
    for key, kind in TARCH_FIELDS.items():
        value = arch[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value <= 0):
            raise HwflowError("%s: %s must be a positive %s, not %r" % (path, key, kind.__name__, value))
    if arch["data_type"] not in _SCALAR_BITS:
        raise HwflowError("%s: data_type %r is not one of %s"
                          % (path, arch["data_type"], ", ".join(_SCALAR_BITS)))
    return arch


def scalar_bits(arch: Dict[str, Any]) -> int:
    """Bits of one scalar of the architecture's data type."""
    return _SCALAR_BITS[arch["data_type"]]


def default_rtl_dir() -> pathlib.Path:
    """TENSIL_RTL, else the shared 12x12 RTL beside the repository (../shared/rtl/tensil_custom_perf)."""
    given = os.environ.get("TENSIL_RTL")
    if given:
        return pathlib.Path(given)
    return REPO_ROOT.parent / "shared" / "rtl" / "tensil_custom_perf"


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
