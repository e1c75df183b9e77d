"""Smoke tests on the loopback boxes: outcomes per box, exit codes, JUnit XML, the seed's
variables, and the real `invoke smoke` command."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import REPO
from warpforge_launch.lab import commands
from warpforge_launch.lab import smoke as smoke
from warpforge_launch.lab.manifest import scan

pytestmark = pytest.mark.ssh


def junit_cases(path):
    root = ET.parse(path).getroot()
    cases = {}
    for suite in root.iter("testsuite"):
        for case in suite.iter("testcase"):
            state = ("failure" if case.find("failure") is not None else
                     "skipped" if case.find("skipped") is not None else "passed")
            node = case.find("failure") if state == "failure" else case.find("skipped")
            cases[(suite.get("name"), case.get("name"))] = (
                state, node.get("message") if node is not None else "")
    return root, cases


def run_smoke(inventory, dist, tmp_path, capsys, **kw):
    junit = tmp_path / "smoke.xml"
    rc = commands.smoke(inventory=str(inventory), dist=str(dist), junit=str(junit), **kw)
    return rc, capsys.readouterr(), junit


def test_good_boxes_all_pass_with_a_junit_report(write_inventory, fake_dist, tmp_path,
                                                 capsys):
    inv = write_inventory(names=["nvidia", "amd"])
    rc, out, junit = run_smoke(inv, fake_dist, tmp_path, capsys)  # default: gpu-boxes
    assert rc == 0, out.out + out.err
    assert "nvidia: PASSED" in out.out and "amd: PASSED" in out.out
    assert "OVERALL: PASSED" in out.out
    root, cases = junit_cases(junit)
    assert root.get("failures") == "0" and root.get("skipped") == "0"
    for box in ("nvidia", "amd"):
        for step in ("reachable", "distribute", "exists", "help", "trace-example", "checksums"):
            assert cases[(f"smoke.{box}", step)][0] == "passed", (box, step)
    assert ("smoke.nvidia", "version") not in cases  # the real binary has no --version


@pytest.mark.parametrize("mode, step, reason, failures", [
    ("crash", "help", "--help exited 1: FAILED: simulated crash", "2"),
    ("no-markers", "trace-example",
     "model.mlir lacks the StableHLO markers: stablehlo, func.func", "1"),
    ("tiny", "trace-example", "model.mlir is 16 bytes (< 100)", "1"),
])
def test_a_broken_dist_fails_with_the_reason(mode, step, reason, failures, write_inventory,
                                             make_fake_dist, tmp_path, capsys):
    inv = write_inventory(names=["nvidia"])
    rc, out, junit = run_smoke(inv, make_fake_dist(mode), tmp_path, capsys)
    assert rc == 1
    assert f"nvidia: FAILED ({step}: {reason}" in out.out
    assert "OVERALL: FAILED" in out.out
    root, cases = junit_cases(junit)
    assert root.get("failures") == failures
    state, message = cases[("smoke.nvidia", step)]
    assert state == "failure" and reason in message
    assert cases[("smoke.nvidia", "checksums")][0] == "passed"  # the tree itself landed


def test_installed_files_must_match_the_dist_manifest(ssh_lab, box, install_dir, fake_dist):
    b = box("nvidia")
    opts = smoke.Options(checks=("checksums",))
    assert smoke.run([b], fake_dist, opts).overall == "PASSED"
    # same size, different bytes, mtime put back (as bit rot would look): distribute sees
    # nothing to do, the check must
    target = f"{install_dir}/current/venv/lib/python3.12/site-packages/pkg00/mod0000.py"
    ref = f"/tmp/wf-ref-{install_dir[-10:]}"
    ssh_lab.ssh("nvidia", "touch", "-r", target, ref)
    ssh_lab.ssh("nvidia", "sh", "-c", 'printf X | dd of="$1" bs=1 count=1 conv=notrunc', "wf",
                target)
    ssh_lab.ssh("nvidia", "touch", "-r", ref, target)
    report = smoke.run([b], fake_dist, opts)
    [o] = report.outcomes
    assert o.status == "FAILED" and report.exit_code == 1
    assert "differing 1 (venv/lib/python3.12/site-packages/pkg00/mod0000.py)" in o.reason


def test_a_visible_change_on_the_box_is_repaired_by_smokes_distribute(ssh_lab, box,
                                                                       install_dir, fake_dist):
    b = box("amd")
    opts = smoke.Options(checks=("checksums",))
    assert smoke.run([b], fake_dist, opts).overall == "PASSED"
    target = f"{install_dir}/current/venv/lib/python3.12/site-packages/pkg00/mod0000.py"
    ssh_lab.ssh("amd", "sed", "-i", "s/CONST_0 /CONST_X /", target)
    report = smoke.run([b], fake_dist, opts)
    [o] = report.outcomes
    assert o.status == "PASSED", o.reason
    assert [c.message for c in o.steps if c.name == "distribute"][0].startswith("repaired")


def test_unreachable_box_is_skipped_or_failed_per_the_variable(sleeping_box, write_inventory,
                                                               fake_dist, tmp_path, capsys,
                                                               monkeypatch):
    inv = write_inventory(names=["nvidia", sleeping_box], lab={"wake_timeout": 1})
    monkeypatch.setenv("WAKE_BOXES", "0")
    monkeypatch.setenv("SKIP_IF_UNREACHABLE", "1")
    rc, out, junit = run_smoke(inv, fake_dist, tmp_path, capsys, boxes=sleeping_box)
    assert rc == 0 and f"{sleeping_box}: SKIPPED" in out.out
    assert "OVERALL: SKIPPED" in out.out
    _, cases = junit_cases(junit)
    assert cases[(f"smoke.{sleeping_box}", "reachable")][0] == "skipped"
    # with a good box beside it, the run passes and says which box was skipped
    rc, out, _ = run_smoke(inv, fake_dist, tmp_path, capsys, boxes=f"nvidia,{sleeping_box}")
    assert rc == 0 and "OVERALL: PASSED" in out.out and f"{sleeping_box}: SKIPPED" in out.out
    monkeypatch.setenv("SKIP_IF_UNREACHABLE", "0")
    rc, out, junit = run_smoke(inv, fake_dist, tmp_path, capsys, boxes=sleeping_box)
    assert rc == 1 and f"{sleeping_box}: FAILED (reachable: unreachable after 1s" in out.out
    _, cases = junit_cases(junit)
    assert cases[(f"smoke.{sleeping_box}", "reachable")][0] == "failure"


def test_wake_boxes_wakes_a_sleeping_box_then_it_passes(ssh_lab, sleeping_box,
                                                        write_inventory, fake_dist, tmp_path,
                                                        capsys, monkeypatch):
    inv = write_inventory(names=[sleeping_box])
    monkeypatch.setenv("WAKE_BOXES", "1")
    monkeypatch.setenv("SKIP_IF_UNREACHABLE", "0")
    rc, out, _ = run_smoke(inv, fake_dist, tmp_path, capsys, boxes=sleeping_box)
    assert rc == 0 and f"{sleeping_box}: PASSED" in out.out, out.out
    assert ssh_lab.running(sleeping_box)


def test_version_check_is_opt_in_and_fails_on_the_real_payload(write_inventory, fake_dist,
                                                               tmp_path, capsys):
    inv = write_inventory(names=["nvidia"])
    rc, out, _ = run_smoke(inv, fake_dist, tmp_path, capsys, checks="exists,version")
    assert rc == 1 and "version: --version exited 2" in out.out
    rc, out, _ = run_smoke(inv, fake_dist, tmp_path, capsys, checks="exists,colour")
    assert rc == 2 and "unknown smoke check(s): colour" in out.err


def test_missing_dist_is_bad_input(write_inventory, tmp_path, capsys, monkeypatch):
    inv = write_inventory(names=["nvidia"])
    monkeypatch.setenv("DIST_DIR_OVERRIDE", str(tmp_path / "no-dist"))
    rc = commands.smoke(inventory=str(inv), junit="")
    err = capsys.readouterr().err
    assert rc == 2 and f"dist directory {tmp_path / 'no-dist'} does not exist" in err
    assert "DIST_DIR_OVERRIDE" in err


def test_install_dir_override_moves_the_install(ssh_lab, write_inventory, fake_dist, tmp_path,
                                                capsys, monkeypatch):
    other = f"/opt/wf-override-{os.getpid()}"
    monkeypatch.setenv("INSTALL_DIR_OVERRIDE", other)
    inv = write_inventory(names=["nvidia"])
    rc, out, _ = run_smoke(inv, fake_dist, tmp_path, capsys, checks="exists")
    assert rc == 0, out.out
    m = scan(fake_dist)
    assert os.readlink(ssh_lab.landed("nvidia", f"{other}/current")) == f"releases/{m.hash}"
    ssh_lab.ssh("nvidia", "rm", "-rf", other)


def test_invoke_smoke_command_end_to_end(write_inventory, fake_dist, tmp_path):
    inv = write_inventory(names=["nvidia", "amd"])
    junit = tmp_path / "reports" / "smoke.xml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "invoke", "smoke", "--inventory", str(inv),
                        "--dist", str(fake_dist), "--junit", str(junit), "--json"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert doc["overall"] == "PASSED"
    assert {b["box"]: b["status"] for b in doc["boxes"]} == {"nvidia": "PASSED",
                                                             "amd": "PASSED"}
    assert junit.exists()


def test_a_local_box_runs_the_whole_pipeline_without_ssh(tmp_path, fake_dist, capsys):
    inv = tmp_path / "inventory.yaml"
    inv.write_text(json.dumps({"version": 1, "boxes": {"here": {
        "transport": "local", "install_dir": str(tmp_path / "box")}}}))
    rc, out, junit = run_smoke(inv, fake_dist, tmp_path, capsys)
    assert rc == 0 and "here: PASSED" in out.out, out.out + out.err
    _, cases = junit_cases(junit)
    assert cases[("smoke.here", "trace-example")][0] == "passed"
    assert (tmp_path / "box/bin/snakegrinder").exists()
