"""Human output: rich tables and the result view (imported only by commands that print them)."""

from __future__ import annotations

from warpforge_launch.jobs import ClusterInfo, JobResult


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def table(headers: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    t = Table(box=None, pad_edge=False, header_style="bold")
    for h in headers:
        t.add_column(h, overflow="fold")
    for row in rows:
        t.add_row(*[str(c) for c in row])
    _console().print(t)


def print_result(result: JobResult | None) -> None:
    console = _console()
    if result is None:
        console.print("no result: the job has not finished")
        return
    took = f"{result.execution_time.total_seconds():.2f}s" if result.execution_time else "-"
    console.print(f"job:        {result.job_id}", markup=False)
    console.print(f"success:    {'yes' if result.success else 'no'}", markup=False)
    console.print(f"exit code:  {result.exit_code if result.exit_code is not None else '-'}",
                  markup=False)
    console.print(f"time:       {took}", markup=False)
    if result.error_message:
        console.print(f"error:      {result.error_message}", markup=False)
    if result.outputs:
        console.print("outputs:", markup=False)
        for path in result.outputs:
            console.print(f"  {path}", markup=False)
    if result.mlir_output:
        console.print("--- model.mlir (StableHLO) ---", markup=False)
        console.print(result.mlir_output.rstrip("\n"), markup=False)
    elif result.log_tail and not result.success:
        console.print("--- log tail ---", markup=False)
        console.print(result.log_tail, markup=False)


def print_cluster(info: ClusterInfo) -> None:
    console = _console()
    console.print(f"scheduler: {info.scheduler_name} {info.scheduler_version}", markup=False)
    console.print(f"nodes:     {info.available_nodes} available of {info.total_nodes}",
                  markup=False)
    gpus = ", ".join(f"{k} {v}" for k, v in sorted(info.gpus_by_type.items())) or "none"
    console.print(f"gpus:      {gpus}", markup=False)
    table(["NODE", "STATUS", "GPU", "GPUS", "MEMORY MB", "CORES"],
          [[n.name, n.status, n.gpu_type.value, n.gpu_count, n.memory_mb, n.cpu_cores]
           for n in info.nodes])
    for key, value in sorted(info.details.items()):
        console.print(f"{key}: {value}", markup=False)
