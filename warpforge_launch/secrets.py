"""Secret environment values: named in a job, read from this process only at send time.

A ``--secret-env KEY`` travels through plans, dry runs, ``--json`` and the job store as
its name alone; ``resolve`` is the one place its value is read, inside a backend's
``execute``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from warpforge_launch.errors import UsageError

MASK = "***"


def resolve(names: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of ``names`` from the environment; a missing one is bad input."""
    env = os.environ if environ is None else environ
    missing = [n for n in names if n not in env]
    if missing:
        raise UsageError(f"--secret-env {', '.join(missing)}: not set in this environment",
                         hint="export the variable before submitting")
    return {n: env[n] for n in names}


def masked(names: Iterable[str]) -> dict[str, str]:
    """What a dry run shows in place of the values."""
    return {n: MASK for n in names}


def shown_header(header: str) -> str:
    """An ``auth_header`` as printed: ``${VAR}`` references are kept (they are names), a
    value written out in the inventory is masked."""
    name, sep, value = header.partition(":")
    return header if "${" in value or not sep else f"{name}: {MASK}"
