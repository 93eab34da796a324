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
