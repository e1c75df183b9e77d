"""`invoke pipeline` end to end on the built-in default inventory: this machine is the only
box, the Local scheduler runs the trace job. A fresh state dir builds everything; a second
run with nothing changed skips every stage but the job."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testlab.standin import require_torch

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[3]


def _table(stdout: str) -> dict[str, tuple[str, str]]:
    """{stage: (status, detail)} from the summary table at the end of the output."""
    lines = stdout.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.split()[:2] == ["STAGE", "BOX"])
    rows = {}
    for ln in lines[start + 1:]:
        if ln.startswith("Overall"):
            break
        parts = ln.split(None, 5)
        rows[parts[0]] = (parts[2], parts[5] if len(parts) > 5 else "")
    return rows


@pytest.fixture
def workdir(tmp_path):
    """A checkout-like directory holding the stand-in (the default builds from "."), and a
    HOME, data dir and state dir of its own: nothing of the user's is read or written."""
    require_torch()
    work = tmp_path / "work"
    shutil.copytree(REPO / "examples", work / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path / "home"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "WARPFORGE_HOME": str(tmp_path / "state")}
    env.pop("WARPFORGE_INVENTORY", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    return work, env, tmp_path


def _pipeline(work, env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "pipeline", *args],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)


def test_pipeline_on_the_default_then_everything_current(workdir):
    work, env, tmp = workdir
    first = _pipeline(work, env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    rows = _table(first.stdout)
    assert [s for s, _ in rows.items()] == ["build", "images", "sif", "distribute", "smoke",
                                            "job"]
    assert {s: st for s, (st, _) in rows.items()} == {
        "build": "PASSED", "images": "SKIPPED", "sif": "SKIPPED", "distribute": "PASSED",
        "smoke": "PASSED", "job": "PASSED"}
    assert rows["images"][1].startswith("not configured")
    assert "  module @main {" in first.stdout and "stablehlo.dot_general" in first.stdout
    assert "`warpforge-launch result local-" in first.stdout  # how to see all of it
    whole = first.stdout.split("(whole file: ", 1)[1].split(")", 1)[0]
    assert whole.endswith("/model.mlir") and "stablehlo" in Path(whole).read_text()
    assert "Overall Pipeline result: SUCCESS" in first.stdout
    installed = tmp / "data" / "warpforge" / "boxes" / "local" / "current" / "bin" / "snakegrinder"
    assert installed.is_file()
    release = rows["build"][1].split()[-1]
    assert os.path.realpath(installed.parent.parent).endswith(release)
    state = json.loads((tmp / "state" / "pipeline-state.json").read_text())
    assert set(state["built-in default"]) == {"build", "distribute", "smoke"}

    second = _pipeline(work, env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    rows = _table(second.stdout)
    assert {s: st for s, (st, _) in rows.items()} == {
        "build": "SKIPPED", "images": "SKIPPED", "sif": "SKIPPED", "distribute": "SKIPPED",
        "smoke": "SKIPPED", "job": "PASSED"}
    assert rows["build"][1] == f"current (release {release})"
    assert "==== NUC BUILD START" not in second.stdout
    assert "  module @main {" in second.stdout

    # the box lost its release behind the pipeline's back: distribute is no longer current
    (installed.parent.parent).unlink()  # <install_dir>/current
    third = _pipeline(work, env)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr
    rows = _table(third.stdout)
    assert rows["build"][0] == "SKIPPED" and rows["distribute"][0] == "PASSED"
    assert installed.is_file()


def test_pipeline_bad_scheduler_is_a_usage_error(workdir):
    work, env, _ = workdir
    r = _pipeline(work, env, "--scheduler", "nope")
    assert r.returncode == 2
    assert r.stderr.startswith("error: no scheduler 'nope'")
    assert "Traceback" not in r.stderr
