"""How lab results look: progress bars on a TTY, summary tables, and --json for machines.

The tables are output.table's: one unwrapped line per row when stdout is not a terminal
(`| grep <release>` finds the whole row)."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Sequence

from warpforge_launch.lab.pushresult import BoxResult, Progress
from warpforge_launch.output import human_size, table


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, stderr=stderr)


class BarProgress(Progress):
    """One bytes-sent bar per box (rich), drawn on stderr and only when it is a terminal."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
        from rich.progress import Progress as Bars

        self.bars = Bars(TextColumn("{task.description:>12}"), BarColumn(), DownloadColumn(),
                         TransferSpeedColumn(), console=_console(stderr=True), transient=True)
        self.tasks: dict[str, int] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> BarProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def start(self, box: str, total: int) -> None:
        with self.lock:
            self.tasks[box] = self.bars.add_task(box, total=total or 1)

    def advance(self, box: str, n: int) -> None:
        task = self.tasks.get(box)
        if task is not None:
            self.bars.advance(task, n)

    def done(self, result: BoxResult) -> None:
        task = self.tasks.get(result.box)
        if task is not None:
            self.bars.update(task, completed=self.bars.tasks[task].total)


class WakeProgress:
    """A spinner line per wait on a terminal: which boxes are still down, for how long."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.state: dict[str, str] = {}
        self.lock = threading.Lock()
        self.status = _console(stderr=True).status("waking boxes")

    def __enter__(self) -> WakeProgress:
        self.status.start()
        return self

    def __exit__(self, *exc) -> None:
        self.status.stop()

    def __call__(self, box, attempt: int, seconds: float, why: str | None) -> None:
        with self.lock:
            self.state[box.name] = ("up" if why is None else
                                    f"{why}, {seconds:.0f}s of {self.timeout:.0f}s")
            self.status.update("waiting for SSH: " + "; ".join(
                f"{name} {text}" for name, text in sorted(self.state.items())))


def progress_for_terminal() -> BarProgress | None:
    return BarProgress() if sys.stderr.isatty() else None


def print_json(rows: Sequence) -> None:
    print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2, default=str))


def distribute_table(results: Sequence[BoxResult], verb: str = "distribute") -> None:
    table(["BOX", "RESULT", "RELEASE", "WAS", "SENT", "FILES SENT", "LINKED", "TIME"],
          [[r.box, r.action if r.ok else "FAILED", r.release or "-", r.previous or "-",
            human_size(r.bytes_sent), r.files_sent, r.files_linked, f"{r.seconds:.2f}s"]
           for r in results])
    console = _console()
    ok = sum(r.ok for r in results)
    console.print(f"{verb}: {ok} of {len(results)} box(es) ok", markup=False)
    err = _console(stderr=True)
    for r in results:
        for note in r.notes:
            err.print(f"note: box {r.box}: {note}", markup=False)
    _errors([(r.box, r.error, r.hint) for r in results if not r.ok])


def wake_table(results) -> None:
    table(["BOX", "PACKET", "SSH", "TIME", "NOTE"],
          [[r.box, "sent" if r.sent else "-", "up" if r.reachable else "DOWN",
            f"{r.seconds:.1f}s", r.note] for r in results])


def smoke_table(report) -> None:
    table(["BOX", "STATUS", "RELEASE", "TIME", "REASON"],
          [[o.box, o.status, o.release or "-", f"{o.seconds:.1f}s", o.reason or "-"]
           for o in report.outcomes])
    console = _console()
    for o in report.outcomes:
        console.print(f"{o.box}: {o.status}" + (f" ({o.reason})" if o.reason else ""),
                      markup=False)
    console.print(f"OVERALL: {report.overall}", markup=False)


def _errors(rows) -> None:
    err = _console(stderr=True)
    for _box, error, hint in rows:
        err.print(f"error: {error}", markup=False)
        if hint:
            err.print(f"hint: {hint}", markup=False)
