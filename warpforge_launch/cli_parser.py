"""argparse as the CLI uses it: one-line usage errors (exit 2) and help as wide as the
terminal. A module of its own so that `status ID...`, read without argparse (cli.py), does
not import it."""

from __future__ import annotations

import argparse
import os
import sys

from warpforge_launch.errors import UsageError


def _columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil (and with it bz2 and
    lzma), which argparse would do for every argument it adds."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Formatter(argparse.HelpFormatter):
    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2, like every other bad input
        raise UsageError(message, hint=f"see `{self.prog} --help`")
