"""Check that the board-side packages stay board-safe.

Two rules, both from the board's reality (PYNQ 2.7 ships Python 3.8, no torch):
1. every file parses as Python 3.8;
2. no module imports torch, directly or through anything it imports. The
   second is checked by importing every module in a fresh interpreter in
   which importing torch fails.

Usage: python scripts/check_board_side.py fedcore device demo_app coordinator
Exit status 1 and one line a problem when a rule is broken.
"""

import ast
import pathlib
import subprocess
import sys
from typing import List

# Runs in the child interpreter: torch (and its submodules) cannot be imported.
_CHILD = r"""
import importlib, importlib.abc, sys, traceback
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("board-side module imports torch")
sys.meta_path.insert(0, NoTorch())
failed = 0
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        if "torch" in str(exc):
            print("%s: imports torch (%s)" % (module, exc))
            failed = 1
    except Exception:
        pass  # other import-time failures are the tests' business, not this check's
sys.exit(failed)
"""


def python38_problems(files: List[pathlib.Path]) -> List[str]:
    problems = []
    for path in files:
        try:
            ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 8))
        except SyntaxError as exc:
            problems.append("%s:%s: not Python 3.8 syntax: %s" % (path, exc.lineno, exc.msg))
    return problems


def static_torch_imports(files: List[pathlib.Path]) -> List[str]:
    problems = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue  # reported by python38_problems
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == "torch" or n.startswith("torch.") for n in names):
                problems.append("%s:%d: imports torch" % (path, node.lineno))
    return problems


def module_names(root: pathlib.Path, packages: List[str]) -> List[str]:
    names = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def check(root: pathlib.Path, packages: List[str]) -> List[str]:
    missing = [p for p in packages if not (root / p).is_dir()]
    if missing:
        return ["no such package folder: %s" % ", ".join(missing)]
    files = [f for p in packages for f in sorted((root / p).rglob("*.py"))]
    problems = python38_problems(files) + static_torch_imports(files)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD] + module_names(root, packages),
        cwd=str(root), capture_output=True, text=True,
    )
    if child.returncode:
        problems += child.stdout.splitlines() or [child.stderr.strip()]
    return problems


def main(argv: List[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    problems = check(pathlib.Path.cwd(), argv)
    for line in problems:
        print(line)
    if not problems:
        print("board side OK: %s parse as Python 3.8 and import no torch" % ", ".join(argv))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
