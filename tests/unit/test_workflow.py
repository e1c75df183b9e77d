"""The GitHub Actions workflow: actionlint and the workflow JSON schema (both offline), and
the properties the lab relies on (triggers, runner labels, one run at a time)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "holmes-mark1.yml"
CONFIG = REPO / ".github" / "actionlint.yaml"


def _tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


def test_actionlint_passes():
    r = _run(_tool("actionlint"), "-config-file", str(CONFIG), str(WORKFLOW))
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_catches_an_undeclared_runner_label(tmp_path):
    """The check can fail: without the config, the custom `nuc` label is an error."""
    empty = tmp_path / "actionlint.yaml"
    empty.write_text("self-hosted-runner:\n  labels: []\n")
    r = _run(_tool("actionlint"), "-config-file", str(empty), str(WORKFLOW))
    assert r.returncode != 0 and "nuc" in r.stdout, r.stdout + r.stderr


def test_workflow_schema_passes():
    r = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
             str(WORKFLOW))
    assert r.returncode == 0, r.stdout + r.stderr


def test_workflow_schema_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    r = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
             str(broken))
    assert r.returncode != 0


def test_workflow_shape():
    doc = yaml.safe_load(WORKFLOW.read_text())
    on = doc[True]  # YAML 1.1 reads the key `on` as a boolean
    assert set(on) == {"push", "workflow_dispatch"}, "no pull_request: forks never run here"
    assert on["push"]["branches"] == ["main"]
    assert set(on["workflow_dispatch"]["inputs"]) == {"skip_boxes", "no_shutdown", "scheduler"}
    assert doc["concurrency"]["cancel-in-progress"] is False
    job = doc["jobs"]["ci"]
    assert job["runs-on"] == ["self-hosted", "linux", "x64", "nuc"]
    assert job["timeout-minutes"] > 0
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert ".venv/bin/invoke ci" in runs
    uses = [s.get("uses", "") for s in job["steps"]]
    assert any(u.startswith("actions/checkout@") for u in uses)
    assert any(u.startswith("actions/cache@") for u in uses)
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith(
        "actions/upload-artifact@"))
    assert upload["if"] == "always()"
