"""The documentation names only files that exist (issue 13: docs/demo.md cited a model_card.md
that did not exist)."""

import glob
import os
import re

import pytest

from tests.fl_testkit import ROOT

DOCS = sorted(glob.glob(os.path.join(ROOT, "*.md")) + glob.glob(os.path.join(ROOT, "*", "*.md")))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")  # [text](target)
NAMED_DOC = re.compile(r"(?<![\w/.:-])([\w./-]*[\w-]\.md)\b")  # a file.md named in the text


def _targets(text):
    for match in LINK.finditer(text):
        if "://" not in match.group(1) and not match.group(1).startswith("mailto:"):
            yield match.group(1)
    for line in text.splitlines():
        if "://" not in line:  # a URL may end in .md
            yield from NAMED_DOC.findall(line)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_file_a_document_names_exists(doc):
    with open(doc, encoding="utf-8") as handle:
        text = handle.read()
    missing = [target for target in _targets(text)
               if not any(os.path.exists(os.path.join(base, target)) for base in (os.path.dirname(doc), ROOT))]
    assert missing == [], f"{os.path.relpath(doc, ROOT)} names files that do not exist: {missing}"


def test_every_command_line_option_has_a_help_text():
    """Issue 25: `training.fl --rounds`, `--eval-every`, fewshot `eval --ways/--shots` and 46 more
    options showed no help."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    missing = []
    for package in ("training", "coordinator", "device", "hwflow", "tensil", "benchmarks", "demo_app", "fedcore",
                    "fedlink", "scripts", "examples"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "add_argument" and not any(k.arg == "help" for k in node.keywords)):
                    missing.append("%s:%d" % (path.relative_to(root), node.lineno))
    assert missing == []


def test_library_code_logs_and_leaves_printing_to_the_programs():
    """Issue 25: twenty library functions printed. Library modules report through their module's
    logger; `print` stays in a program's main and its _cmd_/_print helpers (and an interactive
    question's context: hwflow.flash's confirmation)."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    libraries = ["hwflow/bitstream.py", "hwflow/deploy.py", "hwflow/sdcard.py", "training/datasets.py",
                 "training/fewshot/bundle.py", "training/fewshot/dse.py", "device/display.py", "coordinator/broker.py",
                 "coordinator/testbed.py", "hwflow/flash.py", "coordinator/server.py"]
    allowed = {("hwflow/flash.py", "_confirm")}
    found = []
    for name in libraries:
        tree = ast.parse((root / name).read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef) or function.name == "main" or function.name.startswith(
                    ("_cmd", "_print")) or (name, function.name) in allowed:
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    found.append("%s:%d (%s)" % (name, node.lineno, function.name))
    assert found == []
