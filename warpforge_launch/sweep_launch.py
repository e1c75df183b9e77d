"""Submit and track a sweep: its cells grouped per scheduler instance, each group one batch.

Like a single submit, a sweep is crash-safe: the sweep, its cells and their SUBMITTING job
rows are written in one transaction before any backend is asked; each instance's batch is
sent in one ``execute_batch``; the answers complete the rows in one more transaction. A
crash in between leaves SUBMITTING rows that the next refresh reconciles (a Slurm array's
tasks through the array's own correlation id, see ``Launcher._reconcile``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from warpforge_launch import codec, sweeps
from warpforge_launch.errors import (
    CancelIncomplete,
    InfrastructureError,
    LaunchError,
    NotFoundError,
    UsageError,
)
from warpforge_launch.jobs import JobResult, JobState, JobStatus, JobSubmission, utcnow
from warpforge_launch.launcher import Launcher, _me
from warpforge_launch.schedulers.base import BatchPlan, Scheduler, Submitted
from warpforge_launch.store import JobRecord, SweepRecord


@dataclass
class Group:
    """The cells bound for one scheduler instance and their batch plan."""

    scheduler: Scheduler
    cells: list[sweeps.Cell]
    submissions: list[JobSubmission]
    batch: BatchPlan


def new_sweep_id() -> str:
    return f"sweep-{uuid.uuid4().hex[:8]}"


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def plan(launcher: Launcher, spec: sweeps.SweepSpec, **overrides: Any) -> list[Group]:
    """Every cell planned (pure: nothing is sent); a cell its scheduler cannot run is bad
    input before anything goes out. ``overrides`` replace scheduler settings (e.g. the
    snakegrinder path), as ``submit --snakegrinder`` does."""
    groups: dict[str, Group] = {}
    gpus: dict[str, frozenset] = {}  # per instance, asked once
    user = _user()  # as JobSubmission.new has it, asked once per sweep
    for cell in sweeps.expand(spec):
        entry = launcher.inventory.scheduler(cell.scheduler)
        group = groups.get(entry.name)
        if group is None:
            entry, config = launcher._config(entry.name, overrides)
            sched = launcher._instance(entry.name, entry.type, config)
            group = groups[entry.name] = Group(sched, [], [], None)  # type: ignore[arg-type]
            gpus[entry.name] = frozenset(sched.capabilities().supported_gpu_types)
        gpu = cell.definition.resources.gpu_type
        if gpu not in gpus[entry.name]:
            raise UsageError(f"cell {cell.index} ({cell.model} {cell.shape} {cell.gpu}): "
                             f"scheduler {entry.name!r} cannot give a job {gpu.value} GPUs",
                             hint="remove the GPU type or the scheduler from the sweep")
        group.cells.append(cell)
        group.submissions.append(JobSubmission(cell.definition, user, utcnow(),
                                               str(uuid.uuid4())))
    for group in groups.values():
        group.batch = group.scheduler.plan_batch(group.submissions, throttle=spec.throttle)
    return list(groups.values())


def submit(launcher: Launcher, spec: sweeps.SweepSpec, **overrides: Any
           ) -> tuple[str, dict[str, LaunchError]]:
    """Send every cell; the sweep id and, per cell that could not be sent (by correlation
    id), the error that stopped it."""
    import gc

    from warpforge_launch import secrets

    # thousands of small objects are made and none is garbage before this returns: the
    # cyclic collector would walk them several times for nothing (about 1.3 ms of 100 cells)
    collecting = gc.isenabled()
    gc.disable()
    try:
        groups = plan(launcher, spec, **overrides)
        secrets.resolve(spec.secret_env)  # a missing secret fails before anything is recorded
        try:
            return _submit(launcher, spec, groups)
        finally:
            for g in groups:  # a head start execute_batch did not use (an error on the way)
                g.scheduler.release_batch(g.batch)
    finally:
        if collecting:
            gc.enable()


def _submit(launcher: Launcher, spec: sweeps.SweepSpec, groups: list[Group]
            ) -> tuple[str, dict[str, LaunchError]]:
    for g in groups:  # the backend starts up while the rows are written; nothing is sent
        g.scheduler.prepare_batch(g.batch)
    sweep_id = new_sweep_id()
    now = utcnow()
    me = _me()
    records, cells = [], []
    for g in groups:
        sched = g.scheduler
        config = codec.to_jsonable(sched.config)
        for cell, sub, job_plan in zip(g.cells, g.submissions, g.batch.jobs, strict=True):
            corr = sub.correlation_id
            key = {**cell.key, "scheduler": sched.name}
            cells.append((corr, key))
            placeholder = job_plan.job_id or sched.job_id(f"submitting-{sub.short_id}")
            pending = JobStatus(placeholder, corr, JobState.PENDING, sub.submitted_at,
                                message=f"submitting to {sched.name} (sweep {sweep_id})",
                                scheduler_metadata={"submitter": me})
            records.append(JobRecord(
                placeholder, sched.name, sched.type_name, job_plan.native_id or "", corr,
                cell.definition.name, sub.submitted_by, sub.submitted_at, sub.to_dict(),
                job_plan.to_dict(), config, pending, submitting=True))
    cells.sort(key=lambda c: c[1]["index"])
    by = records[0].submitted_by if records else "unknown"
    launcher.store.add_sweep(SweepRecord(sweep_id, spec.name, by, now, sweeps.to_dict(spec),
                                         cells), records)
    failed: dict[str, LaunchError] = {}
    for g in groups:
        try:
            outcomes = g.scheduler.execute_batch(g.batch)
        except LaunchError as exc:  # the whole batch: every cell shares the error
            outcomes = {s.correlation_id: exc for s in g.submissions}
        done = []
        for sub in g.submissions:
            corr, got = sub.correlation_id, outcomes.get(sub.correlation_id)
            if isinstance(got, Submitted):
                job_id = g.scheduler.job_id(got.native_id)
                done.append((corr, job_id, got.native_id,
                             JobStatus(job_id, corr, JobState.PENDING, utcnow())))
            elif isinstance(got, UsageError):  # refused: nothing runs, the cell shows why
                launcher.store.fail_submit(corr, f"{g.scheduler.name} refused it: {got}")
                failed[corr] = got
            elif getattr(got, "not_sent", False):  # the connection failed: never sent
                launcher.store.fail_submit(corr, f"never sent to {g.scheduler.name}: {got}")
                failed[corr] = got
            else:
                why = got or LaunchError("no answer for this cell")
                launcher.store.note_submit(corr, f"submit to {g.scheduler.name} interrupted "
                                           f"({why}); not confirmed yet")
                failed[corr] = why
        launcher.store.complete_many(done)
    return sweep_id, failed


@dataclass(frozen=True)
class CellView:
    key: dict[str, Any]
    correlation_id: str
    record: JobRecord | None
    status: JobStatus | None


def _cells(launcher: Launcher, sweep_id: str) -> tuple[SweepRecord, list[CellView]]:
    sweep = launcher.store.get_sweep(sweep_id)
    rows = launcher.store.by_correlation([corr for corr, _ in sweep.cells])
    # one batched call per instance; an instance that cannot be reached keeps its cells'
    # last known states (launcher.unreachable says which), so the other cells still show
    fresh = launcher.refresh(list(rows.values()), partial=True)
    out = []
    for corr, key in sweep.cells:
        record = rows.get(corr)
        status = fresh.get(record.job_id) if record else None
        if record is not None and status is not None and status.job_id != record.job_id:
            record = launcher.store.by_correlation([corr]).get(corr, record)  # reconciled
        out.append(CellView(key, corr, record, status))
    return sweep, out


def status(launcher: Launcher, sweep_id: str) -> tuple[SweepRecord, list[CellView]]:
    """Every cell's fresh status: one store read, one batched refresh per instance."""
    return _cells(launcher, sweep_id)


def results(launcher: Launcher, sweep_id: str
            ) -> tuple[SweepRecord, list[tuple[CellView, JobResult | None]]]:
    """Outcomes of the finished cells (None for cells still running or never sent); each
    instance gets the statuses the refresh already has."""
    sweep, cells = _cells(launcher, sweep_id)
    groups: dict[int, tuple[Scheduler, dict[str, JobStatus]]] = {}
    for c in cells:
        if c.record is None or c.status is None or not c.status.state.terminal \
                or c.record.submitting or c.record.superseded_by:
            continue
        sched = launcher._for_record(c.record)
        groups.setdefault(id(sched), (sched, {}))[1][c.status.job_id] = c.status
    got: dict[str, JobResult] = {}
    for sched, known in groups.values():
        try:
            got.update(sched.results(known))
        except InfrastructureError as exc:  # its cells stay without a result
            launcher.unreachable[sched.name] = exc
        except NotFoundError:  # one cell at a time, so one lost cell spoils nothing else
            for job_id, st in known.items():
                try:
                    got.update(sched.results({job_id: st}))
                except NotFoundError as exc:
                    got[job_id] = JobResult(job_id, None, False, error_message=str(exc))
    return sweep, [(c, got.get(c.status.job_id) if c.status else None) for c in cells]


def cancel(launcher: Launcher, sweep_id: str) -> tuple[SweepRecord, dict[str, bool],
                                                       list[CellView]]:
    """Cancel every active cell: one batched cancel per instance (Slurm: one scancel)."""
    sweep, cells = _cells(launcher, sweep_id)
    groups: dict[int, tuple[Scheduler, list[str]]] = {}
    for c in cells:
        if c.record is None or c.status is None or c.status.state.terminal \
                or c.record.submitting:
            continue
        sched = launcher._for_record(c.record)
        groups.setdefault(id(sched), (sched, []))[1].append(c.status.job_id)
    cancelled: dict[str, bool] = {}
    for sched, job_ids in groups.values():
        try:
            cancelled.update(sched.cancel_many(job_ids))
        except CancelIncomplete as exc:  # the others were stopped (launcher says which not)
            cancelled.update(exc.done)
            launcher.cancel_errors.update(exc.errors)
        except InfrastructureError as exc:  # the other instances' cells are still stopped
            launcher.unreachable[sched.name] = exc
    _, cells = _cells(launcher, sweep_id)
    return sweep, cancelled, cells


def summary(cells: list[CellView]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in cells:
        state = c.status.state.value if c.status else "UNKNOWN"
        counts[state] = counts.get(state, 0) + 1
    return counts
