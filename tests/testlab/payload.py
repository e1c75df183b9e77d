"""The fake snakegrinder (tests/fixtures/fake_snakegrinder.py) and how to steer it.

Tests and benchmarks build its behaviour with ``behaviour(...)`` (the ``WF_FAKE_*``
variables of the job's environment) and read what it received with ``record(...)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAKE_SNAKEGRINDER = Path(__file__).resolve().parents[1] / "fixtures" / "fake_snakegrinder.py"


def behaviour(*, sleep: float | None = None, exit: int | None = None,
              stderr: str | None = None, stdout: str | None = None,
              ignore_term: bool = False, grandchild: str | Path | None = None,
              record: str | Path | None = None) -> dict[str, str]:
    """The job environment that makes the fake payload do this."""
    env = {"WF_FAKE_SLEEP": sleep, "WF_FAKE_EXIT": exit, "WF_FAKE_STDERR": stderr,
           "WF_FAKE_STDOUT": stdout, "WF_FAKE_IGNORE_TERM": "1" if ignore_term else None,
           "WF_FAKE_GRANDCHILD": grandchild, "WF_FAKE_RECORD": record}
    return {k: str(v) for k, v in env.items() if v is not None}


def record(path: str | Path) -> dict[str, Any]:
    """What the payload received (``{"argv", "env", "cwd"}``), from its WF_FAKE_RECORD file."""
    return json.loads(Path(path).read_text())


def log_value(text: str, key: str) -> Any:
    """A ``KEY <json>`` line of the payload's output (for backends whose files are remote)."""
    for line in text.splitlines():
        if line.startswith(key + " "):
            return json.loads(line[len(key) + 1:])
    raise AssertionError(f"no {key} line in the job output:\n{text}")
