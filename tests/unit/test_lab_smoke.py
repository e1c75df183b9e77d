"""Smoke verdicts, exit codes and the JUnit report, without boxes."""

import xml.etree.ElementTree as ET

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.lab import smoke as s


def outcome(box, status, steps):
    o = s.BoxOutcome(box, status=status)
    o.steps = [s.CheckResult(n, st, msg, 0.1) for n, st, msg in steps]
    return o


@pytest.mark.parametrize("states, overall, code", [
    (["PASSED", "PASSED"], "PASSED", 0),
    (["PASSED", "SKIPPED"], "PASSED", 0),
    (["SKIPPED", "SKIPPED"], "SKIPPED", 0),
    (["PASSED", "FAILED"], "FAILED", 1),
    (["SKIPPED", "FAILED"], "FAILED", 1),
])
def test_overall_verdict_and_exit_code(states, overall, code):
    rep = s.SmokeReport([s.BoxOutcome(f"b{i}", status=st) for i, st in enumerate(states)])
    assert (rep.overall, rep.exit_code) == (overall, code)


def test_junit_has_a_suite_per_box_and_a_case_per_step(tmp_path):
    rep = s.SmokeReport([
        outcome("nvidia", "FAILED", [("reachable", "PASSED", "up"),
                                     ("trace-example", "FAILED", "lacks markers")]),
        outcome("amd", "SKIPPED", [("reachable", "SKIPPED", "unreachable after 60s")]),
    ])
    path = s.write_junit(rep, tmp_path / "r" / "smoke.xml")
    root = ET.parse(path).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    suites = {x.get("name"): x for x in root.iter("testsuite")}
    assert set(suites) == {"smoke.nvidia", "smoke.amd"}
    fail = suites["smoke.nvidia"].find("testcase[@name='trace-example']/failure")
    assert fail.get("message") == "lacks markers"
    assert suites["smoke.amd"].find("testcase/skipped").get("message").startswith("unreach")


def test_checks_are_validated():
    assert s.parse_checks(" help, version ,") == ("help", "version")
    with pytest.raises(UsageError, match="colour"):
        s.Options(checks=("help", "colour"))
    with pytest.raises(UsageError):
        s.Options(checks=())
    assert "version" not in s.DEFAULT_CHECKS
