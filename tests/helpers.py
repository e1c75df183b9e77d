"""Small helpers shared by tests: run the real CLI in a fresh process.

Builders and the fake payload live in tests/testlab/ (public to benchmarks); their old
names are re-exported here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.testlab.builders import local_inventory, model_file  # noqa: F401
from tests.testlab.payload import FAKE_SNAKEGRINDER  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=None, env=None, timeout=60, check_json=False):
    """The installed command as a user runs it, in a fresh process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "warpforge_launch", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check_json:
        proc.json = json.loads(proc.stdout)
    return proc
