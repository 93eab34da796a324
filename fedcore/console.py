"""How the command-line programs show what the library logs: the library reports through module
loggers (`logging.getLogger(__name__)`) and returns data; a program calls `add_verbosity` on its
parser and `show_logs` with what was parsed, and the messages appear as plain lines on stdout
(INFO and above; `-q`: warnings and errors only, on stderr; `-v`: debug too)."""

import argparse
import logging
import sys

__all__ = ["add_verbosity", "show_logs"]


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="also show debug messages")
    group.add_argument("-q", "--quiet-logs", dest="quiet_logs", action="store_true",
                       help="show warnings and errors only")


def show_logs(args: argparse.Namespace) -> None:
    """Route the library's log records to the terminal, as the options say."""
    if getattr(args, "quiet_logs", False):
        level, stream = logging.WARNING, sys.stderr
    else:
        level, stream = (logging.DEBUG if getattr(args, "verbose", False) else logging.INFO), sys.stdout
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
