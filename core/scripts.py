"""Argument handling for the small `python -m module ARGS` tools that take positional arguments without click.

    python -m jobs.mlproject --help        # prints the usage line and the module's docstring, exits 0

`script_args` gives every such tool the same behaviour as a click command: `-h`/`--help` anywhere prints help and
exits 0 without doing anything else, and a wrong number of arguments prints the usage line and exits 2 (click's
and argparse's usage-error code).
"""

from __future__ import annotations

import sys

HELP_FLAGS = ("-h", "--help")


def script_args(argv: list[str], usage: str, doc: str | None, count: range = range(0, 1_000)) -> list[str]:
    """`argv` when it holds `count` arguments; else help (exit 0) or the usage line (exit 2).

    Args:
        usage: the command line without "usage: ", e.g. "python -m jobs.logs LOG [OFFSET]".
        doc: the module's docstring, printed after the usage line by --help.
        count: how many arguments the tool takes.
    """
    if any(arg in HELP_FLAGS for arg in argv):
        print(f"usage: {usage}")
        if doc:
            print(f"\n{doc.strip()}")
        sys.exit(0)
    if len(argv) not in count:
        print(f"usage: {usage}", file=sys.stderr)
        sys.exit(2)
    return argv
