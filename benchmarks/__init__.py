"""The project's benchmarks (`make bench-*`); each module runs with `python -m benchmarks.<name>`."""

import argparse
from typing import List, Mapping


def selected_sections(parser: argparse.ArgumentParser, only: str,
                      sections: Mapping[str, object]) -> List[str]:
    """The sections a comma-separated `--only` names, in its order; an unknown name is a usage
    error (exit 2) listing the known ones."""
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in sections]
    if unknown:
        parser.error("unknown section(s) %s; known: %s" % (", ".join(unknown), ", ".join(sections)))
    return chosen
