"""`invoke ci` against the loopback lab: sshd boxes as GPU boxes, a real git origin, real
builds and JUnit files on the boxes, wake-on-LAN to the lab's 127.0.0.1 listener."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.ci.conftest import powered_off
from warpforge_launch import inventory
from warpforge_launch.lab import ci
from warpforge_launch.lab import runsummary as rs

pytestmark = pytest.mark.ssh
REPO = Path(__file__).resolve().parents[3]
BOX_ONLY = frozenset({"build", "images", "smoke"})


def run(path: Path, env=None, **opts) -> tuple[rs.RunSummary, str]:
    inv = inventory.load(path, env=env or {})
    out = io.StringIO()
    summary = ci.run_ci(inv, ci.Options(run_id="t1", **opts), out=out)
    return summary, out.getvalue()


def rows(summary, box) -> dict[str, rs.Row]:
    return {r.stage: r for r in summary.rows if r.box == box}


def statuses(summary, box) -> dict[str, str]:
    return {stage: r.status for stage, r in rows(summary, box).items()}


def test_all_pass_every_stage_then_boxes_power_off_in_order(ci_inventory, ssh_lab, tmp_path):
    path = ci_inventory()
    step_summary = tmp_path / "step-summary.md"
    env = {**os.environ, "PYTHONPATH": str(REPO), "GITHUB_STEP_SUMMARY": str(step_summary)}
    r = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "ci", "--inventory",
                        str(path), "--run-id", "r1"], capture_output=True, text=True,
                       env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().splitlines()[-2] == "Overall CI result: SUCCESS"
    assert powered_off(ci_inventory, ssh_lab) == ["nvidia", "amd"]
    logs = ci_inventory.logs
    for box in ("nvidia", "amd"):
        log = (logs / f"{box}-r1.log").read_text()
        assert "building in /opt/" in log and "ran 3 tests" in log
        assert f"{box} gpu tests ok" in log and "core: 3 tests executed" in log
        assert (logs / f"{box}-r1-junit" / "core" / "build" / "test-results" / "test" /
                "TEST-core.xml").is_file()
    assert "==== NUC BUILD START (run r1" in (logs / "nuc-r1.log").read_text()
    junit = ET.parse(logs / "ci-r1-junit.xml").getroot()
    suites = {s.get("name"): s for s in junit.iter("testsuite")}
    assert set(suites) == {"ci.nuc", "ci.nvidia", "ci.amd"}
    assert junit.get("failures") == "0"
    assert [c.get("name") for c in suites["ci.amd"].iter("testcase")] == [
        "distribute + smoke", "wake", "sync", "build", "test", "test floors", "gpu tests",
        "power off"]
    assert suites["ci.nuc"].find("testcase[@name='images']/skipped").get("message") \
        .startswith("not configured")
    md = step_summary.read_text()
    assert md.startswith("## CI run r1: SUCCESS")
    assert "| power off | amd | ✅ PASSED |" in md and "**Overall CI result: SUCCESS**" in md
    # the box's checkout holds the built project (read from the box's /opt layer)
    src = ssh_lab.landed("nvidia", ci.remote_dir(inventory.load(path, env={}).ci,
                                                 inventory.load(path, env={}).boxes["nvidia"]))
    assert (src / "out" / "artifact").read_text() == "built\n"


def test_nvidia_fails_amd_is_skipped_and_logs_are_kept(ci_inventory, ssh_lab):
    path = ci_inventory(ci={"gpu_tests": {"NVIDIA": ["sh", "-c", "echo gpu broke; exit 7"],
                                          "AMD": ["true"]}})
    summary, out = run(path, skip_stages=BOX_ONLY)
    assert summary.exit_code == 1 and summary.overall == "FAILURE"
    nvidia = rows(summary, "nvidia")
    assert nvidia["gpu tests"].status == rs.FAILED and nvidia["gpu tests"].detail == "exit 7"
    assert nvidia["power off"].status == rs.SKIPPED
    assert statuses(summary, "amd") == {"distribute + smoke": rs.SKIPPED,
                                        "box build": rs.SKIPPED}
    assert rows(summary, "amd")["box build"].detail == "nvidia did not pass"
    assert powered_off(ci_inventory, ssh_lab) == []
    assert "gpu broke" in (ci_inventory.logs / "nvidia-t1.log").read_text()
    assert "Overall CI result: FAILURE" in out


def test_no_shutdown_flag_keeps_the_box_on(ci_inventory, ssh_lab, capsys):
    path = ci_inventory()
    assert ci.shutdown_mode("disable", boxes="nvidia", inventory=str(path)) == 0
    capsys.readouterr()
    r = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "shutdown-mode",
                        "status", "--inventory", str(path)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    shown = r.stdout
    assert "nvidia: no-shutdown flag set: stays on after a green run" in shown
    assert "amd: powers off after a green run" in shown
    summary, _ = run(path, skip_stages=BOX_ONLY)
    assert summary.exit_code == 0
    assert rows(summary, "nvidia")["power off"].status == rs.SKIPPED
    assert "no-shutdown flag" in rows(summary, "nvidia")["power off"].detail
    assert powered_off(ci_inventory, ssh_lab) == ["amd"]
    assert ci.shutdown_mode("enable", boxes="nvidia", inventory=str(path)) == 0
    assert "nvidia: powers off after a green run" in capsys.readouterr().out
    run(path, skip_stages=BOX_ONLY)
    assert powered_off(ci_inventory, ssh_lab) == ["amd", "nvidia", "amd"]


def test_a_sleeping_box_is_woken(ci_inventory, ssh_lab, sleeping_box):
    assert not ssh_lab.running(sleeping_box)
    before = len(ssh_lab.wol_received())
    path = ci_inventory(boxes=[{"box": sleeping_box}], names=(sleeping_box,),
                        extra_boxes=None)
    summary, _ = run(path, skip_stages=BOX_ONLY)
    assert summary.exit_code == 0, rs.table_lines(summary)
    wake = rows(summary, sleeping_box)["wake"]
    assert wake.status == rs.PASSED and wake.detail.startswith("woken: up after")
    assert [p["box"] for p in ssh_lab.wol_received()[before:]] == [sleeping_box]
    assert rows(summary, sleeping_box)["gpu tests"].status == rs.SKIPPED  # no GPU on intel
    assert powered_off(ci_inventory, ssh_lab) == [sleeping_box]


@pytest.mark.parametrize("skip", [True, False])
def test_unreachable_box_follows_skip_if_unreachable(ci_inventory, ssh_lab, sleeping_box,
                                                     skip):
    path = ci_inventory(boxes=[{"box": "nvidia"}, {"box": sleeping_box}],
                        names=("nvidia", sleeping_box), lab={"wake_timeout": 1})
    env = {"WAKE_BOXES": "0", "SKIP_IF_UNREACHABLE": "1" if skip else "0"}
    summary, _ = run(path, env=env, skip_stages=BOX_ONLY)
    wake = rows(summary, sleeping_box)["wake"]
    assert "unreachable" in wake.detail
    assert rows(summary, "nvidia")["power off"].status == rs.PASSED
    if skip:
        assert wake.status == rs.SKIPPED and summary.exit_code == 0
    else:
        assert wake.status == rs.FAILED and summary.exit_code == 3
    assert statuses(summary, sleeping_box)["sync"] == rs.SKIPPED
    assert not ssh_lab.running(sleeping_box)


def test_a_step_timeout_stops_the_box(ci_inventory, ssh_lab):
    path = ci_inventory(ci={"test": ["sleep", "120"], "timeouts": {"test": 2}})
    t0 = time.monotonic()
    summary, _ = run(path, skip_stages=BOX_ONLY)
    assert time.monotonic() - t0 < 60
    test = rows(summary, "nvidia")["test"]
    assert test.status == rs.TIMEOUT and test.detail == "timed out after 2s"
    assert summary.exit_code == 1
    assert statuses(summary, "amd") == {"distribute + smoke": rs.SKIPPED,
                                        "box build": rs.SKIPPED}
    assert powered_off(ci_inventory, ssh_lab) == []


def test_a_floor_not_met_fails(ci_inventory, ssh_lab):
    path = ci_inventory(ci={"test_floors": {"core": 5}})
    summary, _ = run(path, skip_stages=BOX_ONLY)
    floors = rows(summary, "nvidia")["test floors"]
    assert floors.status == rs.FAILED
    assert "core: 3 tests executed, floor is 5" in floors.detail
    assert summary.exit_code == 1 and powered_off(ci_inventory, ssh_lab) == []


def test_bad_options_are_usage_errors(ci_inventory, capsys):
    path = ci_inventory()
    assert ci.main(str(path), skip="bogus") == 2
    assert "--skip: unknown stage(s) bogus" in capsys.readouterr().err
    assert ci.main(str(path), skip_boxes="intel") == 2
    assert ci.shutdown_mode("toggle", inventory=str(path)) == 2
