"""The run summary: first failure decides the exit code; table, JUnit and step summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from warpforge_launch.lab import runsummary as rs


def _summary() -> rs.RunSummary:
    s = rs.RunSummary("CI", "42")
    s.add("build", "nuc", rs.PASSED, seconds=3.2, log="/logs/nuc-42.log")
    s.add("wake", "nvidia", rs.PASSED, seconds=0.1)
    s.add("test", "nvidia", rs.TIMEOUT, seconds=5, detail="timed out after 5s", exit_code=1)
    s.add("wake", "amd", rs.FAILED, detail="unreachable | down", exit_code=3)
    s.add("box build", "intel", rs.SKIPPED, detail="nvidia did not pass")
    return s


def test_first_failure_gives_the_exit_code():
    s = _summary()
    assert s.overall == "FAILURE" and s.exit_code == 1
    assert s.first_failure.stage == "test"
    ok = rs.RunSummary("CI", "1")
    ok.add("build", "nuc", rs.PASSED)
    ok.add("images", "nuc", rs.SKIPPED)
    assert ok.overall == "SUCCESS" and ok.exit_code == 0
    infra = rs.RunSummary("CI", "2")
    infra.add("wake", "amd", rs.FAILED, exit_code=3)
    infra.add("test", "nvidia", rs.FAILED)
    assert infra.exit_code == 3


def test_table_lines_end_with_the_overall_line():
    lines = rs.table_lines(_summary())
    assert lines[0].split() == ["STAGE", "BOX", "STATUS", "TIME", "LOG", "DETAIL"]
    assert any("nvidia" in ln and "TIMEOUT" in ln and "5.0s" in ln for ln in lines)
    assert lines[-1] == "Overall CI result: FAILURE"


def test_junit_has_a_suite_per_box(tmp_path):
    path = rs.write_junit(_summary(), tmp_path / "r" / "ci.xml")
    root = ET.parse(path).getroot()
    assert root.get("tests") == "5" and root.get("failures") == "2"
    assert root.get("skipped") == "1"
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"ci.nuc", "ci.nvidia", "ci.amd", "ci.intel"}
    nvidia = suites["ci.nvidia"]
    assert nvidia.get("tests") == "2" and nvidia.get("failures") == "1"
    failure = nvidia.find("testcase[@name='test']/failure")
    assert failure.get("message") == "timed out after 5s" and failure.get("type") == "TIMEOUT"


def test_step_summary_only_when_the_runner_sets_it(tmp_path):
    assert rs.write_step_summary(_summary(), env={}) is None
    target = tmp_path / "step.md"
    target.write_text("earlier step\n")
    rs.write_step_summary(_summary(), env={"GITHUB_STEP_SUMMARY": str(target)})
    text = target.read_text()
    assert text.startswith("earlier step\n## CI run 42: FAILURE")
    assert "| test | nvidia | ⏱️ TIMEOUT | 5.0s |" in text
    assert "unreachable \\| down" in text  # a pipe in a detail does not break the table
    assert "**Overall CI result: FAILURE**" in text
    assert "First failure: test on nvidia (exit 1)" in text
