"""One summary for a multi-stage lab run (`invoke ci`, `invoke pipeline`).

A run is a list of rows (stage x box: status, time, log, detail, exit code). The same rows
become the terminal table, the JUnit XML of the run (one testsuite per box, one testcase per
stage), and the Markdown written to $GITHUB_STEP_SUMMARY on a GitHub Actions runner. The run
exits with the code of its first failure, as the original orchestration did.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path

PASSED, FAILED, SKIPPED, TIMEOUT = "PASSED", "FAILED", "SKIPPED", "TIMEOUT"
FAILURES = (FAILED, TIMEOUT)


@dataclasses.dataclass
class Row:
    stage: str
    box: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    log: str = ""
    exit_code: int = 0  # for a failure: what the run exits with if it is the first one


@dataclasses.dataclass
class RunSummary:
    title: str
    run_id: str
    rows: list[Row] = dataclasses.field(default_factory=list)

    def add(self, stage: str, box: str, status: str, *, seconds: float = 0.0, detail: str = "",
            log: str | os.PathLike = "", exit_code: int | None = None) -> Row:
        if exit_code is None:
            exit_code = 1 if status in FAILURES else 0
        row = Row(stage, box, status, seconds, detail, str(log), exit_code)
        self.rows.append(row)
        return row

    @property
    def first_failure(self) -> Row | None:
        return next((r for r in self.rows if r.status in FAILURES), None)

    @property
    def ok(self) -> bool:
        return self.first_failure is None

    @property
    def overall(self) -> str:
        return "SUCCESS" if self.ok else "FAILURE"

    @property
    def exit_code(self) -> int:
        first = self.first_failure
        return 0 if first is None else (first.exit_code or 1)

    def result_line(self) -> str:
        return f"Overall {self.title} result: {self.overall}"


def _secs(row: Row) -> str:
    return "-" if row.status == SKIPPED and not row.seconds else f"{row.seconds:.1f}s"


def table_lines(summary: RunSummary) -> list[str]:
    """A plain-text table (it goes to the terminal and into the run log alike)."""
    head = ("STAGE", "BOX", "STATUS", "TIME", "LOG", "DETAIL")
    rows = [(r.stage, r.box, r.status, _secs(r), r.log or "-", r.detail or "") for r in
            summary.rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head[:-1])]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head[:-1], widths, strict=True)) + "  "
             + head[-1]]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True))
                     + "  " + row[-1])
    lines.append(summary.result_line())
    return lines


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(summary: RunSummary) -> str:
    icon = {PASSED: "✅", FAILED: "❌", TIMEOUT: "⏱️", SKIPPED: "⏭️"}
    lines = [f"## {summary.title} run {summary.run_id}: {summary.overall}", "",
             "| stage | box | status | time | log | detail |", "|---|---|---|---|---|---|"]
    for r in summary.rows:
        lines.append(f"| {_md(r.stage)} | {_md(r.box)} | {icon.get(r.status, '')} {r.status} | "
                     f"{_secs(r)} | {_md(r.log) if r.log else '-'} | {_md(r.detail)} |")
    first = summary.first_failure
    lines += ["", f"**{summary.result_line()}**"]
    if first is not None:
        lines.append(f"First failure: {first.stage} on {first.box} (exit {summary.exit_code}): "
                     f"{_md(first.detail)}")
    return "\n".join(lines) + "\n"


def write_step_summary(summary: RunSummary, env: Mapping[str, str] | None = None
                       ) -> Path | None:
    """Append the Markdown to $GITHUB_STEP_SUMMARY when the runner sets it."""
    env = os.environ if env is None else env
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with open(path, "a", encoding="utf-8") as f:
        f.write(markdown(summary))
    return path


def write_junit(summary: RunSummary, path: Path) -> Path:
    """JUnit XML of the run: one testsuite per box, one testcase per stage."""
    import socket
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name=f"warpforge-{summary.title.lower()}-{summary.run_id}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    totals = dict.fromkeys(("tests", "failures", "skipped", "errors"), 0)
    suites: dict[str, ET.Element] = {}
    for r in summary.rows:
        suite = suites.get(r.box)
        if suite is None:
            suite = suites[r.box] = ET.SubElement(
                root, "testsuite", name=f"{summary.title.lower()}.{r.box}", timestamp=stamp,
                hostname=socket.gethostname())
        case = ET.SubElement(suite, "testcase", classname=f"{summary.title.lower()}.{r.box}",
                             name=r.stage, time=f"{r.seconds:.3f}")
        if r.status in FAILURES:
            ET.SubElement(case, "failure", message=r.detail or r.status,
                          type=r.status).text = f"{r.detail}\nlog: {r.log or '-'}"
        elif r.status == SKIPPED:
            ET.SubElement(case, "skipped", message=r.detail or "skipped")
        elif r.detail or r.log:
            ET.SubElement(case, "system-out").text = f"{r.detail}\nlog: {r.log or '-'}"
    for suite in suites.values():
        cases = suite.findall("testcase")
        counts = {"tests": len(cases),
                  "failures": sum(c.find("failure") is not None for c in cases),
                  "skipped": sum(c.find("skipped") is not None for c in cases), "errors": 0}
        suite.set("time", f"{sum(float(c.get('time')) for c in cases):.3f}")
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
