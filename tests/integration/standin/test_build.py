"""`invoke build` against a real local git origin (a bare repository the tests create)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.testlab.standin import REPO, Origin, git
from warpforge_launch.inventory import BuildConfig, BuildStep
from warpforge_launch.lab.build import count_tests, run_build


@pytest.fixture
def origin(tmp_path):
    if shutil.which("git") is None:
        from tests.conftest import lab_unavailable

        lab_unavailable("git is not installed")
    o = Origin(tmp_path)
    o.commit({"README": "stand-in origin\n"}, "initial")
    return o


def py_step(name: str, code: str, timeout: float = 120.0) -> BuildStep:
    return BuildStep(name, (sys.executable, "-c", code), timeout)


MAKE_DIST = py_step("dist", "\n".join([
    "import os, pathlib",
    "d = pathlib.Path('snakegrinder-dist/build/dist')",
    "(d / 'bin').mkdir(parents=True, exist_ok=True)",
    "(d / 'bin' / 'snakegrinder').write_text('#!/bin/sh\\n'); "
    "os.chmod(d / 'bin' / 'snakegrinder', 0o755)",
    "(d / 'bin' / 'snakegrinder-bin').write_text('x')",
    "s = d / 'venv/lib/python3.11/site-packages'; s.mkdir(parents=True, exist_ok=True)",
    "(s / 'payload.py').write_text('')",
    "print('dist assembled')",
]))


def junit_step(module: str, tests: int, skipped: int = 0, failures: int = 0) -> BuildStep:
    return py_step("test", "\n".join([
        "import pathlib",
        f"p = pathlib.Path('{module}/build/test-results/test'); p.mkdir(parents=True)",
        f"(p / 'TEST-a.xml').write_text('<testsuite name=\"a\" tests=\"{tests}\" "
        f"skipped=\"{skipped}\" failures=\"{failures}\" errors=\"0\"/>')",
        f"print('ran {tests} tests')",
    ]))


def config(origin: Origin | None, source: Path, **kw) -> BuildConfig:
    kw.setdefault("steps", (MAKE_DIST,))
    kw.setdefault("test_floors", {})
    return BuildConfig(profile="standin", source=str(source),
                       repository=str(origin.bare) if origin else None, **kw)


def build(cfg, tmp_path, run_id="t1", **kw):
    out = io.StringIO()
    report = run_build(cfg, tmp_path / "logs", run_id=run_id, out=out, **kw)
    return report, out.getvalue()


def statuses(report):
    return {s.name: s.status for s in report.stages}


def test_clone_then_fetch_reset_and_clean_keeping_caches(origin, tmp_path):
    src = tmp_path / "nuc" / "warpforge"
    cfg = config(origin, src, cache_paths=(".gradle", "build-cache"))
    report, out = build(cfg, tmp_path)
    assert report.ok, out
    assert (src / "README").read_text() == "stand-in origin\n"
    assert "dist assembled" in out

    head = origin.commit({"NEW": "second commit\n"})
    (src / "README").write_text("local edit\n")            # tracked change: reset away
    (src / "stray.txt").write_text("untracked\n")          # untracked: cleaned
    (src / "ignored.o").write_text("x")                    # ignored or not: -x cleans it too
    (src / ".gradle").mkdir()
    (src / ".gradle" / "cache.bin").write_text("keep me")  # cache path: kept
    (src / "build-cache" / "deep").mkdir(parents=True)
    (src / "build-cache" / "deep" / "x").write_text("keep me too")

    report, out = build(cfg, tmp_path, run_id="t2")
    assert report.ok, out
    assert (src / "NEW").read_text() == "second commit\n"
    assert (src / "README").read_text() == "stand-in origin\n"
    assert not (src / "stray.txt").exists() and not (src / "ignored.o").exists()
    assert (src / ".gradle" / "cache.bin").read_text() == "keep me"
    assert (src / "build-cache" / "deep" / "x").read_text() == "keep me too"
    assert git("rev-parse", "HEAD", cwd=src).strip() == head
    assert head[:12] in next(s.detail for s in report.stages if s.name == "sync")


def test_failing_step_stops_the_run_with_exit_1_and_a_log(origin, tmp_path):
    steps = (py_step("assemble", "print('assembling')"),
             py_step("test", "import sys; print('boom: 2 tests failed'); sys.exit(3)"),
             MAKE_DIST)
    report, out = build(config(origin, tmp_path / "src", steps=steps), tmp_path, run_id="fail")
    assert report.exit_code == 1
    assert statuses(report) == {"sync": "ok", "assemble": "ok", "test": "failed",
                                "dist": "skipped", "test floors": "skipped",
                                "dist check": "skipped"}
    assert report.error == "test: exit 3"
    log = (tmp_path / "logs" / "nuc-fail.log").read_text()
    assert "boom: 2 tests failed" in log and "assembling" in log  # streamed and tee'd
    assert "boom: 2 tests failed" in out
    assert "Overall: FAILURE" in log
    # The summary table names every stage with its status.
    table = out[out.index("stage "):]
    for name, status in (("assemble", "OK"), ("test", "FAILED"), ("dist", "SKIPPED")):
        assert any(line.startswith(name) and status in line for line in table.splitlines())


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(") ", 1)[1].startswith("Z")


def test_step_timeout_kills_the_step_and_its_children(origin, tmp_path):
    pids = tmp_path / "pids"
    step = py_step("hang", "\n".join([
        "import os, subprocess, time, pathlib",
        "child = subprocess.Popen(['sleep', '120'])",
        f"pathlib.Path({str(pids)!r}).write_text(f'{{os.getpid()}} {{child.pid}}')",
        "time.sleep(120)",
    ]), timeout=2)
    report, _ = build(config(origin, tmp_path / "src", steps=(step,)), tmp_path)
    assert report.exit_code == 1
    assert statuses(report)["hang"] == "timeout"
    assert "timed out after 2s" in report.error
    step_pid, child_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 10
    while not (_gone(step_pid) and _gone(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(step_pid) and _gone(child_pid), "the step or its child survived the timeout"


@pytest.mark.parametrize("tests, skipped, floor, ok, needle", [
    (12, 0, 10, True, "mod 12/10"),
    (12, 4, 10, False, "mod: 8 tests executed, floor is 10"),
    (5, 0, 10, False, "mod: 5 tests executed, floor is 10"),
])
def test_junit_test_floor(origin, tmp_path, tests, skipped, floor, ok, needle):
    steps = (junit_step("mod", tests, skipped), MAKE_DIST)
    cfg = config(origin, tmp_path / "src", steps=steps, test_floors={"mod": floor})
    report, out = build(cfg, tmp_path)
    assert report.ok is ok, out
    floor_stage = next(s for s in report.stages if s.name == "test floors")
    assert needle in floor_stage.detail
    if not ok:
        assert report.exit_code == 1 and statuses(report)["dist check"] == "skipped"


def test_missing_junit_results_fail_the_floor(origin, tmp_path):
    cfg = config(origin, tmp_path / "src", test_floors={"warpforge-core": 1})
    report, _ = build(cfg, tmp_path)
    assert report.exit_code == 1
    assert "warpforge-core: no JUnit results" in report.error


def test_failures_in_junit_fail_the_floor(origin, tmp_path):
    steps = (junit_step("mod", 20, failures=2), MAKE_DIST)
    report, _ = build(config(origin, tmp_path / "src", steps=steps, test_floors={"mod": 1}),
                      tmp_path)
    assert report.exit_code == 1 and "mod: 2 failing tests" in report.error


def test_missing_branch_fails_clearly(origin, tmp_path):
    report, out = build(config(origin, tmp_path / "src", branch="release-9"), tmp_path)
    assert report.exit_code == 1
    assert "branch 'release-9' does not exist on origin" in report.error
    assert "(branches: main)" in report.error
    assert statuses(report)["dist"] == "skipped"


def test_unreachable_origin_is_exit_3(tmp_path):
    cfg = BuildConfig(profile="standin", source=str(tmp_path / "src"),
                      repository=str(tmp_path / "no-such-origin.git"), steps=(MAKE_DIST,),
                      test_floors={})
    report, _ = build(cfg, tmp_path)
    assert report.exit_code == 3
    assert report.error.startswith("sync: git clone failed")


def test_missing_dist_fails_the_dist_check(origin, tmp_path):
    steps = (py_step("dist", "print('forgot to assemble')"),)
    report, _ = build(config(origin, tmp_path / "src", steps=steps), tmp_path)
    assert report.exit_code == 1
    assert report.error.startswith("dist check: ") and "bin/snakegrinder is missing" in report.error


def test_without_repository_the_tree_is_built_as_it_is(tmp_path):
    src = tmp_path / "tree"
    src.mkdir()
    (src / "untracked-work.txt").write_text("mine")
    report, _ = build(config(None, src), tmp_path)
    assert report.ok
    assert statuses(report)["sync"] == "skipped"
    assert (src / "untracked-work.txt").read_text() == "mine"


def test_run_id_comes_from_github_run_id(origin, tmp_path):
    out = io.StringIO()
    report = run_build(config(origin, tmp_path / "src"), tmp_path / "logs", out=out,
                       env={"GITHUB_RUN_ID": "4242"})
    assert report.run_id == "4242"
    assert (tmp_path / "logs" / "nuc-4242.log").is_file()


def test_count_tests_reads_testsuites_roots(tmp_path):
    (tmp_path / "a.xml").write_text('<testsuites><testsuite tests="3" skipped="1"/>'
                                    '<testsuite tests="2"/></testsuites>')
    (tmp_path / "b.xml").write_text('<testsuite tests="4" failures="1"/>')
    assert count_tests(tmp_path) == (8, 1, 2)


def invoke_build(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "build", *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, check=False)


def test_invoke_build_task_exit_codes(origin, tmp_path):
    logs = tmp_path / "logs"
    inv = tmp_path / "inventory.yaml"
    inv.write_text(f"""
schedulers: {{local: {{type: local}}}}
lab: {{log_root: {logs}}}
build:
  profile: standin
  source: {tmp_path / 'src'}
  repository: {origin.bare}
  branch: nope
  test_floors: {{}}
  steps:
    - {{name: dist, run: [{sys.executable}, -c, "print(1)"], timeout: 60}}
""")
    r = invoke_build(tmp_path, "--inventory", str(inv), "--run-id", "cli")
    assert r.returncode == 1
    assert "error: build failed: sync: branch 'nope' does not exist" in r.stderr
    assert (logs / "nuc-cli.log").is_file()

    inv.write_text(inv.read_text().replace("profile: standin", "profile: maven"))
    r = invoke_build(tmp_path, "--inventory", str(inv))
    assert r.returncode == 2
    assert "build.profile" in r.stderr
