"""`invoke ci` box builds on a `local` box (this machine, no SSH): the same steps against a
real git origin, the step argv with its on-box timeout, and bad input."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess

import pytest

from tests.testlab.standin import GIT_ENV
from warpforge_launch import inventory
from warpforge_launch.lab import ci
from warpforge_launch.lab import runsummary as rs
from warpforge_launch.lab.remote import Timeouts


@pytest.fixture
def origin(tmp_path) -> str:
    env = {**os.environ, **GIT_ENV}
    work, bare = tmp_path / "work", tmp_path / "origin.git"
    for argv, cwd in ((["init", "-q", "--bare", "-b", "main", str(bare)], tmp_path),
                      (["init", "-q", "-b", "main", str(work)], tmp_path)):
        subprocess.run(["git", *argv], cwd=cwd, env=env, check=True, timeout=30)
    (work / "test.sh").write_text(
        "mkdir -p core/build/test-results\n"
        "echo '<testsuite tests=\"2\" skipped=\"0\" failures=\"0\"/>' "
        "> core/build/test-results/TEST-a.xml\n")
    for argv in (["add", "-A"], ["commit", "-qm", "p"], ["push", "-q", str(bare), "main"]):
        subprocess.run(["git", *argv], cwd=work, env=env, check=True, timeout=30)
    return f"file://{bare}"


def _inventory(tmp_path, origin, **ci_over):
    doc = inventory.default_document()
    doc["boxes"]["local"]["install_dir"] = str(tmp_path / "install")
    doc["boxes"]["local"]["gpu_type"] = "NVIDIA"
    doc["boxes"]["local"]["gpu_count"] = 1
    marker = tmp_path / "powered-off"
    doc["ci"] = {"boxes": [{"box": "local"}], "repository": origin,
                 "remote_dir": str(tmp_path / "checkout"), "build": ["sh", "-c", "echo built"],
                 "test": ["sh", "test.sh"], "test_floors": {"core": 2},
                 "gpu_tests": {"NVIDIA": ["sh", "-c", "echo gpu ok"]},
                 "power_off": ["touch", str(marker)], "log_root": str(tmp_path / "logs"),
                 **ci_over}
    return inventory.parse(json.loads(json.dumps(doc)), None, {}), marker


def test_local_box_build_passes_and_powers_off(tmp_path, origin):
    inv, marker = _inventory(tmp_path, origin)
    out = io.StringIO()
    summary = ci.run_ci(inv, ci.Options(run_id="u1", skip_stages=frozenset(
        {"build", "images", "smoke"})), out=out)
    assert summary.exit_code == 0, out.getvalue()
    steps = {r.stage: r.status for r in summary.rows if r.box == "local"}
    assert steps == {"distribute + smoke": rs.SKIPPED, "wake": rs.PASSED, "sync": rs.PASSED,
                     "build": rs.PASSED, "test": rs.PASSED, "test floors": rs.PASSED,
                     "gpu tests": rs.PASSED,
                     "power off": rs.PASSED}
    assert marker.exists()
    log = (tmp_path / "logs" / "local-u1.log").read_text()
    assert "built" in log and "gpu ok" in log and "core: 2 tests executed" in log
    assert (tmp_path / "checkout" / "core" / "build" / "test-results").is_dir()
    assert (tmp_path / "logs" / "ci-u1-junit.xml").is_file()


def test_cache_paths_survive_the_clean(tmp_path, origin):
    inv, _ = _inventory(tmp_path, origin, cache_paths=["cache"])
    skip = frozenset({"build", "images", "smoke"})
    ci.run_ci(inv, ci.Options(run_id="a", skip_stages=skip), out=io.StringIO())
    (tmp_path / "checkout" / "cache").mkdir()
    (tmp_path / "checkout" / "cache" / "kept").write_text("x")
    (tmp_path / "checkout" / "stray").write_text("x")
    assert ci.run_ci(inv, ci.Options(run_id="b", skip_stages=skip),
                     out=io.StringIO()).exit_code == 0
    assert (tmp_path / "checkout" / "cache" / "kept").exists()
    assert not (tmp_path / "checkout" / "stray").exists()


def test_missing_branch_fails_the_sync(tmp_path, origin):
    inv, marker = _inventory(tmp_path, origin, branch="nope")
    summary = ci.run_ci(inv, ci.Options(run_id="c", skip_stages=frozenset(
        {"build", "images", "smoke"})), out=io.StringIO())
    sync = next(r for r in summary.rows if r.stage == "sync")
    assert sync.status == rs.FAILED and summary.exit_code == 1 and not marker.exists()


def test_step_argv_bounds_the_step_on_the_box(tmp_path, origin):
    inv, _ = _inventory(tmp_path, origin)
    box = inv.boxes["local"]
    assert ci._step_argv(box, ["make", "a b"], 5, Timeouts()) == [
        "timeout", "-k", "10", "5", "make", "a b"]
    ssh_box = inventory.parse({"boxes": {"n": {"address": "127.0.0.21", "port": 2221}}},
                              None, {}).boxes["n"]
    argv = ci._step_argv(ssh_box, ["make", "a b"], 7.5, Timeouts())
    assert argv[0] == "ssh" and argv[-2:] == ["127.0.0.21",
                                              shlex.join(["timeout", "-k", "10", "7.5", "make",
                                                          "a b"])]


def test_bad_input_is_exit_2(tmp_path, origin, capsys, monkeypatch):
    inv_file = tmp_path / "inv.json"
    doc = inventory.default_document()
    doc["ci"] = {"boxes": [{"box": "local"}]}  # no repository
    inv_file.write_text(json.dumps(doc))
    assert ci.main(str(inv_file)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: inventory") and "ci.repository: required" in err
    assert "Traceback" not in err


def test_unwritable_log_root_is_one_line(tmp_path, origin, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    doc = inventory.default_document()
    doc["ci"] = {"log_root": str(blocker / "logs")}
    inv_file = tmp_path / "inv.json"
    inv_file.write_text(json.dumps(doc))
    assert ci.main(str(inv_file), skip="build,images,smoke") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot create the log root {blocker / 'logs'}")
