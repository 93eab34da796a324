"""What a benchmark concluded, said once at the end and in its exit status.

Every benchmark in this folder records its targets and what it could not run
here, then ends with `Verdict.finish()`, which prints one last line and returns
the exit status that line states:

    0  PASS        every target it checked was met and it ran all that was asked
       DONE        (the same status) it ran all that was asked and has no target
    1  FAIL        a target was missed (named in the line)
    2  NOT RUN     nothing was missed, but something asked for could not run here:
                   the line names what it needs and how to get it

    verdict = Verdict("bench-fewshot")
    if not os.path.isfile(checkpoint):
        verdict.not_run("omniglot", "a trained backbone " + checkpoint, "python -m benchmarks.fewshot --train")
    verdict.target("omniglot 20-way 1-shot", accuracy, 0.90, accuracy >= 0.90)
    return verdict.finish()
"""

import os
from typing import List, Optional, Tuple

from fedcore.datasets import load_fashion_mnist

__all__ = ["Verdict", "fashion_mnist_missing", "SHARED_DATA"]

PASS, FAIL, NOT_RUN = 0, 1, 2
# The data beside the repository (../shared/data, see its README) or $DATA_DIR.
SHARED_DATA = os.environ.get(
    "DATA_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data"))


class Verdict:
    """The targets a benchmark checked and the parts it could not run."""

    def __init__(self, name: str):
        self.name = name
        self.met: List[str] = []
        self.missed: List[str] = []
        self.skipped: List[Tuple[str, str, str]] = []

    def target(self, what: str, ok: bool) -> bool:
        """Record one target; `what` says the figure and the target ("87.1% >= 90%")."""
        (self.met if ok else self.missed).append(what)
        return ok

    def not_run(self, what: str, needs: str, how: str) -> None:
        """`what` could not run: it `needs` something missing here, obtained by `how`."""
        self.skipped.append((what, needs, how))
        print("%s: %s NOT RUN: it needs %s (%s)" % (self.name, what, needs, how), flush=True)

    @property
    def status(self) -> int:
        if self.missed:
            return FAIL
        return NOT_RUN if self.skipped else PASS

    def finish(self) -> int:
        """Print the last line and return the exit status it states."""
        parts = []
        if self.missed:
            parts.append("%d of %d target(s) missed: %s" % (
                len(self.missed), len(self.missed) + len(self.met), "; ".join(self.missed)))
        elif self.met:
            parts.append("%d target(s) met" % len(self.met))
        else:
            parts.append("no target checked")
        if self.skipped:
            parts.append("not run: %s (what each needs is printed above)" % ", ".join(
                what for what, _, _ in self.skipped))
        word = {PASS: "PASS" if self.met else "DONE", FAIL: "FAIL", NOT_RUN: "NOT RUN"}[self.status]
        print("%s: %s: %s (exit status %d)" % (self.name, word, ", ".join(parts), self.status), flush=True)
        return self.status


def fashion_mnist_missing() -> Optional[str]:
    """None when Fashion-MNIST can be read, else what is missing and how to get it
    (`make bench-*` installs Debian's dataset-fashion-mnist when run as root)."""
    try:
        load_fashion_mnist(split="test")
    except FileNotFoundError as error:
        return str(error)
    return None

