"""Small helpers shared by tests: run the real CLI, write inventories and model files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAKE_SNAKEGRINDER = REPO / "tests" / "fixtures" / "fake_snakegrinder.py"


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


def local_inventory(path: Path, snakegrinder: Path = FAKE_SNAKEGRINDER, **settings) -> Path:
    lines = ["schedulers:", "  local:", "    type: local", f"    snakegrinder: {snakegrinder}"]
    lines += [f"    {k}: {v}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def model_file(directory: Path, name: str = "simple_mlp.py") -> Path:
    p = directory / name
    p.write_text("class SimpleMLP:\n    pass\n")
    return p
