"""Check that the board image stays board-safe.

The board image is pyproject.toml's [tool.board-image]: `packages` (minus the
`exclude`d workstation folders) is what an SD card or a deploy ships, and
`python38` names packages that are not shipped but keep the board's Python rules.
The rules come from the board's reality (PYNQ 2.7 ships Python 3.8; no torch, no
server code, 512 MB):
1. every file parses as Python 3.8 (all packages);
2. no module imports torch, directly or through anything it imports (all packages;
   checked by importing every module in a child interpreter where torch is refused);
3. a board-image module imports only the standard library, the board image's own
   packages and the image's `third_party` list, wherever the import stands (at the
   top, inside a function, through importlib at import time).

The command line also runs vermin (the standard library and builtins of 3.8, not
only its grammar) on the same files, when vermin is installed.

Usage: python scripts/check_board_side.py            (the image of pyproject.toml)
       python scripts/check_board_side.py PKG [PKG]  (rules 1-3 for these packages alone)
Exit status 1 and one line a problem when a rule is broken.
"""

import ast
import json
import pathlib
import subprocess
import sys
from typing import Any, Dict, List, Sequence

import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs in the child interpreter with argv = [allowed top-level names as JSON, module, ...].
# Torch is refused; a board module's import of anything outside `allowed` is reported
# (and let through, so one report does not hide the next).
_CHILD = r"""
import importlib, importlib.abc, json, sys
allowed = set(json.loads(sys.argv[1])) | set(sys.stdlib_module_names) | set(sys.builtin_module_names)
board = set(json.loads(sys.argv[2]))
problems = []
def importer():
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("importlib", "_frozen_importlib")):
            return name
        frame = frame.f_back
    return ""
class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top == "torch":
            raise ImportError("board-side module imports torch")
        who = importer()
        if top not in allowed and who.split(".")[0] in board:
            problems.append("%s: imports %s, which is outside the board image" % (who, name))
        return None
sys.meta_path.insert(0, Guard())
for module in sys.argv[3:]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        if "torch" in str(exc):
            problems.append("%s: imports torch (%s)" % (module, exc))
    except Exception:
        pass  # other import-time failures are the tests' business, not this check's
print("\n".join(sorted(set(problems))))
sys.exit(1 if problems else 0)
"""


def board_image(root: pathlib.Path = ROOT) -> Dict[str, Any]:
    """pyproject.toml's [tool.board-image] table, with its defaults."""
    with open(root / "pyproject.toml", "rb") as handle:
        table = tomllib.load(handle).get("tool", {}).get("board-image", {})
    return {"packages": list(table.get("packages", [])), "exclude": list(table.get("exclude", [])),
            "third_party": list(table.get("third_party", [])), "python38": list(table.get("python38", []))}


def package_files(root: pathlib.Path, packages: Sequence[str], exclude: Sequence[str] = ()) -> List[pathlib.Path]:
    """The .py files of `packages`, without those under an `exclude`d folder."""
    skipped = [root / e for e in exclude]
    return [f for p in packages for f in sorted((root / p).rglob("*.py"))
            if not any(s == f or s in f.parents for s in skipped)]


def python38_problems(files: List[pathlib.Path]) -> List[str]:
    problems = []
    for path in files:
        try:
            ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 8))
        except SyntaxError as exc:
            problems.append("%s:%s: not Python 3.8 syntax: %s" % (path, exc.lineno, exc.msg))
    return problems


def imported_names(tree: ast.AST, package: str = ""):
    """(line, module) of every import anywhere in the tree; a relative one resolved against
    `package` (the importing module's package, dotted), or named "<beyond the top package>"
    when it climbs above it. `from P import name` also yields P.name (a submodule, perhaps)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 >= len(parts):
                    yield node.lineno, "<beyond the top package>"
                    continue
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            if base:
                yield node.lineno, base
                for alias in node.names:
                    yield node.lineno, "%s.%s" % (base, alias.name)


def static_problems(files: List[pathlib.Path], allowed: Sequence[str], root: pathlib.Path = ROOT,
                    exclude: Sequence[str] = ()) -> List[str]:
    """Torch imports, and (when `allowed` is not empty) imports outside it or into an
    `exclude`d folder, relative imports included."""
    known = set(allowed) | set(sys.stdlib_module_names)
    left_out = [e.strip("/").replace("/", ".") for e in exclude]
    problems = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:
            continue  # reported by python38_problems
        module = module_name(root, path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for line, name in imported_names(tree, package):
            top = name.split(".")[0]
            if top == "torch":
                problems.append("%s:%d: imports torch" % (path, line))
            elif allowed and (top not in known or any(name == e or name.startswith(e + ".") for e in left_out)):
                problems.append("%s:%d: imports %s, which is outside the board image" % (path, line, name))
    return sorted(set(problems))


def module_name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_names(root: pathlib.Path, files: List[pathlib.Path]) -> List[str]:
    return [module_name(root, path) for path in files if path.name != "__main__.py"]


def check(root: pathlib.Path, packages: Sequence[str], exclude: Sequence[str] = (),
          third_party: Sequence[str] = (), python38: Sequence[str] = ()) -> List[str]:
    """Every problem of the board image `packages` (rules 1-3) and of `python38` (rules 1-2)."""
    missing = [p for p in list(packages) + list(python38) if not (root / p).is_dir()]
    if missing:
        return ["no such package folder: %s" % ", ".join(missing)]
    board = package_files(root, packages, exclude)
    others = package_files(root, python38)
    allowed = list(packages) + list(third_party)
    problems = (python38_problems(board + others) + static_problems(board, allowed, root, exclude)
                + static_problems(others, (), root))
    for files, image in ((board, allowed), (others, [])):
        if not files:
            continue
        # For python38-only packages everything is allowed but torch: report nothing else.
        allow = image if image else ["*"]
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(allow), json.dumps(list(packages) if image else [])]
            + module_names(root, files), cwd=str(root), capture_output=True, text=True)
        if child.returncode:
            problems += [line for line in child.stdout.splitlines() if line] or [child.stderr.strip()]
    return problems


def vermin_problems(files: List[pathlib.Path]) -> List[str]:
    """vermin's Python 3.8 violations (library functions, modules, typing) in `files`."""
    vermin = pathlib.Path(sys.executable).with_name("vermin")
    if not vermin.exists():
        return []  # `make lint` installs it; a bare run of this script checks the rest
    result = subprocess.run([str(vermin), "--target=3.8-", "--violations", "--no-tips", "--eval-annotations"]
                            + [str(f) for f in files], capture_output=True, text=True)
    noise = ("Detecting python files", "Analyzing ")
    return [] if result.returncode == 0 else [line for line in result.stdout.splitlines()
                                              if line.strip() and not line.startswith(noise)]


def main(argv: List[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    image = board_image()
    if argv:
        image = {"packages": argv, "exclude": image["exclude"], "third_party": image["third_party"],
                 "python38": []}
    root = pathlib.Path.cwd()
    problems = check(root, **image) or vermin_problems(
        package_files(root, image["packages"], image["exclude"]) + package_files(root, image["python38"]))
    for line in problems:
        print(line)
    if not problems:
        print("board image OK: %s (third party: %s) parse as Python 3.8, import no torch and nothing outside "
              "the image; %s parse as Python 3.8 and import no torch" % (
                  ", ".join(image["packages"]), ", ".join(image["third_party"]),
                  ", ".join(image["python38"]) or "nothing else"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
