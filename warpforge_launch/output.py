"""Everything the commands print: JSON, errors, rich tables and the result view.

Text that comes from a backend or a user (job names, messages, node names, log tails) is
shown as plain text, never as rich markup, and with terminal control characters made
visible, so a job name like ``[/x]`` or an escape sequence in a remote message cannot break
or drive the terminal. rich is imported only by the functions that draw (for a table: only
in a terminal; a pipe gets plain lines).
"""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # the job model stays off the start of `status` (quickstatus.py)
    from typing import Any

    from warpforge_launch.jobs import ClusterInfo, JobResult

# C0 controls, DEL and C1 controls (ESC and CSI among them) -> visible escapes
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), *range(0x7f, 0xa0))}
_KEEP_LINES = {k: v for k, v in _CONTROLS.items() if chr(k) not in "\n\t"}


def human_size(n: float) -> str:
    """Bytes in SI units: 512 B, 1.5 kB, 6.8 MB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def safe(text: Any, *, multiline: bool = False) -> str:
    """``text`` with control characters shown as ``\\xNN``; newlines kept if ``multiline``."""
    return str(text).translate(_KEEP_LINES if multiline else _CONTROLS)


def status_line(job_id: str, state: str, elapsed_s: float | None, node: str | None,
                message: str) -> str:
    """One job's line of `status`: id, state, elapsed seconds, node and message."""
    line = f"{job_id}  {state}  elapsed {f'{elapsed_s:.1f}s' if elapsed_s is not None else '-'}"
    if node:
        line += f"  node {node}"
    if message:
        line += f"  {message}"
    return safe(line)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def warn_unreachable(unreachable) -> None:
    """One warning per scheduler instance a partial refresh could not reach (its jobs were
    shown as last known): `Launcher.unreachable`."""
    for name, exc in unreachable.items():
        print(safe(f"warning: {name} not refreshed: {exc}"), file=sys.stderr)


def print_error(exc: object, *, hint: str | None = None) -> None:
    """The one error format of every command and task: ``error: ...`` then ``hint: ...``."""
    print(f"error: {safe(exc)}", file=sys.stderr)
    hint = hint if hint is not None else getattr(exc, "hint", None)
    if hint:
        print(f"hint: {safe(hint)}", file=sys.stderr)


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """Rows under headers. Output that is not a terminal is one line per row, never wrapped
    or cut (`grep <job id>` finds the whole row, however long its message). In a terminal
    only the last column (a message, an error, a path) wraps; ids, states and times stay
    whole, and a terminal too narrow for them gets the plain lines (it folds them itself)."""
    cells = [[safe(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    console = _console() if sys.stdout.isatty() else None
    fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)
    if console is None or fixed + min(widths[-1], 20) > console.width:
        for line in [headers, *cells]:
            sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)
                                       ).rstrip() + "\n")
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(box=None, pad_edge=False, header_style="bold")
    for i, h in enumerate(headers):
        last = i == len(headers) - 1
        t.add_column(h, overflow="fold", no_wrap=not last, min_width=None if last else widths[i])
    for row in cells:
        t.add_row(*[Text(c) for c in row])  # Text: never parsed as markup
    console.print(t)


def _line(console, text: str, multiline: bool = False) -> None:
    console.print(safe(text, multiline=multiline), markup=False)


def print_result(result: JobResult | None) -> None:
    console = _console()
    if result is None:
        console.print("no result: the job has not finished")
        return
    took = f"{result.execution_time.total_seconds():.2f}s" if result.execution_time else "-"
    _line(console, f"job:        {result.job_id}")
    _line(console, f"success:    {'yes' if result.success else 'no'}")
    _line(console, f"exit code:  {result.exit_code if result.exit_code is not None else '-'}")
    _line(console, f"time:       {took}")
    if result.error_message:
        _line(console, f"error:      {result.error_message}")
    if result.outputs:
        _line(console, "outputs:")
        for path in result.outputs:
            _line(console, f"  {path}")
    if result.mlir_output:
        _line(console, "--- model.mlir (StableHLO) ---")
        _line(console, result.mlir_output.rstrip("\n"), multiline=True)
    elif result.log_tail and not result.success:
        _line(console, "--- log tail ---")
        _line(console, result.log_tail, multiline=True)


def print_cluster(info: ClusterInfo) -> None:
    console = _console()
    _line(console, f"scheduler: {info.scheduler_name} ({info.scheduler_version})")
    _line(console, f"nodes:     {info.available_nodes} available of {info.total_nodes}")
    gpus = ", ".join(f"{k} {v}" for k, v in sorted(info.gpus_by_type.items())) or "none"
    _line(console, f"gpus:      {gpus}")
    table(["NODE", "STATUS", "GPU", "GPUS", "MEMORY MB", "CORES"],
          [[n.name, n.status, n.gpu_type.value, n.gpu_count, n.memory_mb, n.cpu_cores]
           for n in info.nodes])
    for key, value in sorted(info.details.items()):
        _detail(console, key, value, "")


def _detail(console, key: str, value, indent: str) -> None:
    """One detail of cluster-info: a mapping as indented lines, a list comma-separated,
    never Python's repr."""
    if isinstance(value, dict):
        _line(console, f"{indent}{key}:")
        for k, v in sorted(value.items()):
            _detail(console, str(k), v, indent + "  ")
    elif isinstance(value, (list, tuple)):
        _line(console, f"{indent}{key}: {', '.join(map(str, value)) or '-'}")
    else:
        _line(console, f"{indent}{key}: {'-' if value is None else value}")
