"""The library front door: submit and track jobs on any configured scheduler.

It routes every command by job id alone (the store remembers which instance and config a
job went to), keeps the job store current, and refreshes many jobs with one batched call
per scheduler instance. A submit is recorded (SUBMITTING) before the backend is asked and
completed after, so a crash or timeout in between never loses a job the backend accepted:
the next refresh finds it again by its correlation id (``Scheduler.reconcile``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from warpforge_launch import codec
from warpforge_launch.errors import (
    CancelIncomplete,
    InfrastructureError,
    LaunchError,
    NotFoundError,
    UsageError,
)
from warpforge_launch.jobs import (
    ClusterInfo,
    JobDefinition,
    JobQuery,
    JobResult,
    JobState,
    JobStatus,
    JobSubmission,
    check_job_id,
    utcnow,
)
from warpforge_launch.schedulers import registry
from warpforge_launch.schedulers.base import Scheduler, SubmissionPlan
from warpforge_launch.store import JobRecord, JobStore, home

# How long a SUBMITTING row whose submit is over (crashed, timed out) waits before a backend
# that does not know its correlation id makes it FAILED; and how long a submit still in
# flight may take at most (every backend bounds its submit call far below this).
SUBMIT_GRACE = timedelta(seconds=60)
SUBMIT_MAX = timedelta(hours=1)


class Launcher:
    def __init__(self, inventory_path: str | None = None, store: JobStore | None = None):
        self._inventory_path = inventory_path
        self._inventory = None
        self.store = store or JobStore()
        self._instances: dict[tuple[str, str, str], Scheduler] = {}
        # instances a partial refresh could not reach, and why (``refresh(partial=True)``)
        self.unreachable: dict[str, InfrastructureError] = {}
        # jobs the last cancel_many could not stop, and why (the others were stopped)
        self.cancel_errors: dict[str, LaunchError] = {}

    @property
    def inventory(self):
        if self._inventory is None:
            from warpforge_launch import inventory

            self._inventory = inventory.load(self._inventory_path)
        return self._inventory

    def close(self) -> None:
        for sched in self._instances.values():
            sched.close()
        self._instances.clear()
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- instances -------------------------------------------------------------------------
    def _config(self, name: str | None, overrides: dict[str, Any]):
        entry = self.inventory.scheduler(name)
        config = entry.config
        if overrides:
            fields = {f.name for f in dataclasses.fields(config)}
            unknown = set(overrides) - fields
            if unknown:
                raise UsageError(f"scheduler {entry.name!r} ({entry.type}) has no setting "
                                 f"{', '.join(sorted(unknown))}")
            config = dataclasses.replace(config, **overrides)
        return entry, config

    def scheduler(self, name: str | None = None, **overrides: Any) -> Scheduler:
        """A new configured instance from the inventory (the caller closes it); overrides
        replace Config fields."""
        entry, config = self._config(name, overrides)
        return registry.create(entry.name, entry.type, config, home())

    def _instance(self, instance: str, type_name: str, config: Any) -> Scheduler:
        """One warm instance per (name, type, config), kept until ``close``: the one that
        submitted a job also watches it (Slurm's status cache, Ray's HTTP client)."""
        as_json = config if isinstance(config, dict) else codec.to_jsonable(config)
        key = (instance, type_name, json.dumps(as_json, sort_keys=True, default=str))
        if key not in self._instances:
            self._instances[key] = registry.create(instance, type_name, config, home())
        return self._instances[key]

    def _for_record(self, record: JobRecord) -> Scheduler:
        return self._instance(record.instance, record.scheduler_type, record.config)

    def _by_id(self, job_id: str) -> Scheduler:
        """The instance a job id names, for a job the store does not know (every command that
        takes job ids comes here for them: the one place a malformed id is refused)."""
        instance, sep, native = check_job_id(job_id).partition("-")
        if not sep or not native:
            raise NotFoundError(f"{job_id!r} is not a job id (<scheduler>-<id>)",
                                hint="`warpforge-launch list` shows the known jobs")
        if instance not in self.inventory.schedulers:
            raise NotFoundError(f"no job {job_id!r} in the job store, and no scheduler "
                                f"{instance!r} in the inventory ({self.inventory.describe()})")
        entry = self.inventory.scheduler(instance)
        return self._instance(entry.name, entry.type, entry.config)

    def _by_instance(self, records) -> list[tuple[Scheduler, list[JobRecord]]]:
        groups: dict[int, tuple[Scheduler, list[JobRecord]]] = {}
        for r in records:
            sched = self._for_record(r)
            groups.setdefault(id(sched), (sched, []))[1].append(r)
        return list(groups.values())

    def _route(self, job_id: str, record: JobRecord | None = None
               ) -> tuple[JobRecord | None, Scheduler]:
        record = record or self.store.find(job_id)
        if record is not None:
            return record, self._for_record(record)
        return None, self._by_id(job_id)

    # -- submit ----------------------------------------------------------------------------
    def plan(self, definition: JobDefinition, scheduler: str | None = None,
             **overrides: Any) -> tuple[JobSubmission, Scheduler, SubmissionPlan]:
        entry, config = self._config(scheduler, overrides)
        sched = self._instance(entry.name, entry.type, config)
        caps = sched.capabilities()
        gpu = definition.resources.gpu_type
        if gpu not in caps.supported_gpu_types:
            raise UsageError(f"scheduler {sched.name!r} ({sched.type_name}) cannot give a job "
                             f"{gpu.value} GPUs", hint="choose another --scheduler or --gpu")
        submission = JobSubmission.new(definition)
        return submission, sched, sched.plan(submission)

    def submit(self, definition: JobDefinition, scheduler: str | None = None,
               **overrides: Any) -> str:
        from warpforge_launch import secrets

        submission, sched, plan = self.plan(definition, scheduler, **overrides)
        secrets.resolve(definition.secret_env)  # a missing secret fails before anything
        corr = submission.correlation_id
        placeholder = plan.job_id or sched.job_id(f"submitting-{submission.short_id}")
        pending = JobStatus(placeholder, corr, JobState.PENDING, submission.submitted_at,
                            message=f"submitting to {sched.name}",
                            scheduler_metadata={"submitter": _me()})
        try:
            self.store.add(JobRecord(
                placeholder, sched.name, sched.type_name, plan.native_id or "", corr,
                definition.name, submission.submitted_by, submission.submitted_at,
                submission.to_dict(), plan.to_dict(), codec.to_jsonable(sched.config),
                pending, submitting=True))
        except sqlite3.IntegrityError:
            raise LaunchError(f"job id {placeholder} is already in the job store",
                              hint="submit again (a new id is drawn)") from None
        try:
            native = sched.execute(plan).native_id
        except UsageError:
            self.store.discard_submit(corr)  # refused before anything ran
            raise
        except BaseException as exc:
            if getattr(exc, "not_sent", False):  # the connection failed: nothing was sent
                self.store.discard_submit(corr)
                raise
            self.store.note_submit(corr, f"submit to {sched.name} interrupted "
                                   f"({type(exc).__name__}: {exc}); not confirmed yet")
            if isinstance(exc, LaunchError) and not exc.hint:
                exc.hint = (f"{sched.name} may have accepted it: `warpforge-launch list` "
                            f"checks (correlation id {corr})")
            raise
        job_id = sched.job_id(native)
        self.store.complete_submit(corr, job_id, native,
                                   JobStatus(job_id, corr, JobState.PENDING, utcnow()))
        return job_id

    # -- tracking --------------------------------------------------------------------------
    @staticmethod
    def _stamp(record: JobRecord | None, answer):
        """Backends may not know the correlation id (Slurm, Local): the store does."""
        if record is not None and answer.correlation_id is None:
            answer = dataclasses.replace(answer, correlation_id=record.correlation_id)
        return answer

    def status(self, job_id: str) -> JobStatus:
        return self.statuses([job_id])[job_id]

    def statuses(self, job_ids: Sequence[str],
                 missing: dict[str, NotFoundError] | None = None) -> dict[str, JobStatus]:
        """Fresh statuses of many jobs: one store read, one batched call per instance.
        An id nobody knows raises NotFoundError, or with ``missing`` lands there (the
        others are still answered)."""
        return self._statuses(job_ids, self.store.find_many(list(job_ids)), missing=missing)

    def _statuses(self, job_ids: Sequence[str], records: dict[str, JobRecord], *,
                  partial: bool = False, missing: dict[str, NotFoundError] | None = None
                  ) -> dict[str, JobStatus]:
        """``partial`` (see ``refresh``): a job the store does not have, on an instance that
        cannot be reached, is left out of the answer."""
        def unknown_id(job_id: str, exc: NotFoundError) -> None:
            if missing is None:
                raise exc
            missing[job_id] = exc

        fresh = self.refresh(list(records.values()), partial=partial)
        unknown: dict[int, list[str]] = {}
        instances: dict[int, Scheduler] = {}
        for job_id in job_ids:
            if job_id not in records:
                try:
                    sched = self._by_id(job_id)
                except NotFoundError as exc:
                    unknown_id(job_id, exc)
                    continue
                unknown.setdefault(id(sched), []).append(job_id)
                instances[id(sched)] = sched
        for key, ids in unknown.items():
            got = self._ask(instances[key], partial, instances[key].statuses, ids)
            if got is None:
                continue
            for job_id in ids:
                if job_id not in got:
                    unknown_id(job_id, NotFoundError(
                        f"no {instances[key].name} job {job_id!r}",
                        hint="`warpforge-launch list` shows the known jobs"))
            fresh.update(got)
        return {job_id: fresh[job_id] for job_id in job_ids if job_id in fresh}

    def refresh(self, records: list[JobRecord], *, partial: bool = False
                ) -> dict[str, JobStatus]:
        """Fresh statuses by the records' job ids: final ones from the store, the rest one
        batch per instance; SUBMITTING rows are reconciled with their backend first.
        ``partial``: an instance that cannot be reached keeps its jobs' last known states
        (and lands in ``self.unreachable``) instead of failing the whole refresh, so that
        one cluster that is down (or a row that names one) cannot hide every other job."""
        fresh: dict[str, JobStatus] = {}
        active: dict[str, JobRecord] = {}
        submitting: list[JobRecord] = []
        for r in records:
            if r.submitting:
                submitting.append(r)
            elif r.final:
                fresh[r.job_id] = r.status
            else:
                active[r.job_id] = r
        confirmed = self._reconcile(submitting, fresh, partial)
        active.update((r.job_id, r) for r in confirmed.values())
        for sched, members in self._by_instance(active.values()):
            by_id = {r.job_id: r for r in members}
            got = self._ask(sched, partial, sched.statuses, list(by_id))
            if got is None:
                for r in members:
                    fresh[r.job_id] = _last_known(r, self.unreachable[sched.name])
                continue
            batch = [self._stamp(by_id.get(job_id), status)
                     for job_id, status in got.items() if job_id in by_id]
            self.store.update_status(*batch)
            fresh.update((s.job_id, s) for s in batch)
        for r in active.values():
            if r.job_id not in fresh:  # the backend no longer reports it: last known state
                fresh[r.job_id] = dataclasses.replace(r.status, message=_joined(
                    r.status.message, f"not reported by {r.instance}; last known state"))
        for old_id, r in confirmed.items():
            fresh[old_id] = fresh[r.job_id]
        return fresh

    def _ask(self, sched: Scheduler, partial: bool, call: Callable[..., Any], *args: Any
             ) -> Any:
        """``call(*args)``, or None when ``partial`` and ``sched`` cannot be reached."""
        try:
            return call(*args)
        except InfrastructureError as exc:
            if not partial:
                raise
            self.unreachable[sched.name] = exc
            return None

    def _reconcile(self, records: list[JobRecord], fresh: dict[str, JobStatus],
                   partial: bool = False) -> dict[str, JobRecord]:
        """Ask each backend (one call per instance) which SUBMITTING jobs it has; complete
        those, fail the ones it provably never got, leave the rest SUBMITTING."""
        confirmed: dict[str, JobRecord] = {}
        now = utcnow()
        for sched, members in self._by_instance(records):
            # a job sent inside a batch request (an array task) is found by the request's
            # correlation id and its index in it
            batch = {r.correlation_id: r.plan.get("batch") for r in members}
            asked = {(b or {}).get("correlation_id") or c for c, b in batch.items()}
            found = self._ask(sched, partial, sched.reconcile, sorted(asked))
            if found is None:
                for r in members:
                    fresh[r.job_id] = _last_known(r, self.unreachable[sched.name])
                continue
            for r in members:
                b = batch[r.correlation_id]
                native = found.get(b["correlation_id"]) if b else found.get(r.correlation_id)
                if native and b:
                    native = sched.batch_native_id(native, int(b["index"]))
                if native:
                    job_id = sched.job_id(native)
                    done = self.store.complete_submit(
                        r.correlation_id, job_id, native,
                        JobStatus(job_id, r.correlation_id, JobState.PENDING, now))
                    confirmed[r.job_id] = done or self.store.get(job_id)
                elif _given_up(r, now):
                    message = (f"{sched.name} has no job with correlation id "
                               f"{r.correlation_id}: the submit never reached it "
                               f"({r.status.message})")
                    self.store.fail_submit(r.correlation_id, message)
                    fresh[r.job_id] = JobStatus(r.job_id, r.correlation_id, JobState.FAILED,
                                                now, message=message)
                else:
                    fresh[r.job_id] = r.status
        return confirmed

    def list(self, query: JobQuery, refresh: bool = True) -> list[tuple[JobRecord, JobStatus]]:
        """Jobs from the store, newest first; active ones are refreshed before the state
        filter and the limit apply (a RUNNING row may have COMPLETED since)."""
        records = self.store.query(query, include_active=refresh)
        statuses = self.refresh(records, partial=True) if refresh else \
            {r.job_id: r.status for r in records}
        rows = [(r, statuses[r.job_id]) for r in records]
        if query.states:
            rows = [(r, s) for r, s in rows if s.state in query.states]
        return rows[: query.limit] if query.limit else rows

    def cluster_jobs(self, schedulers: Sequence[str], query: JobQuery
                     ) -> list[tuple[str, JobStatus, bool]]:
        """What the backends themselves know (jobs of other tools too): (instance, status,
        whether the job store has it), one ``Scheduler.list`` call per instance."""
        rows = []
        for name in schedulers or [None]:
            entry, config = self._config(name, {})
            sched = self._instance(entry.name, entry.type, config)
            listed = sched.list(query)
            known = self.store.find_many([s.job_id for s in listed])
            rows += [(sched.name, s, s.job_id in known) for s in listed]
        return rows

    def result(self, job_id: str) -> JobResult:
        return self.results([job_id])[job_id]

    def results(self, job_ids: Sequence[str]) -> dict[str, JobResult]:
        """Outcomes of finished jobs: one store read and one refresh for all of them, and
        each backend gets the statuses it would otherwise fetch again."""
        records = self.store.find_many(list(job_ids))
        statuses = self._statuses(job_ids, records)
        for job_id in job_ids:
            state = statuses[job_id].state
            if not state.terminal:
                raise UsageError(f"job {job_id} has not finished ({state.value})",
                                 hint="wait with `warpforge-launch status`, or submit with "
                                 "--wait")
        for job_id in job_ids:
            r = records.get(job_id)
            if r is not None and r.superseded_by:
                raise UsageError(f"job {job_id} can no longer be read from its backend: its id "
                                 f"was given to {r.superseded_by}", hint="`warpforge-launch "
                                 "status` shows what the store kept")
        out: dict[str, JobResult] = {}
        groups: dict[int, tuple[Scheduler, dict[str, JobStatus]]] = {}
        for job_id in job_ids:
            _, sched = self._route(job_id, records.get(job_id))
            groups.setdefault(id(sched), (sched, {}))[1][job_id] = statuses[job_id]
        for sched, known in groups.values():
            for job_id, res in sched.results(known).items():
                out[job_id] = self._stamp(records.get(job_id), res)
        return {job_id: out[job_id] for job_id in job_ids}

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The job's output. An id the job store does not know is read, as ``status`` reads
        it, only if its backend knows the job: else NotFoundError, before any output."""
        record = self.store.find(job_id)
        if record is None:
            self._statuses([job_id], {})  # NotFoundError for a job nobody knows
        _, sched = self._route(job_id, record)
        return sched.logs(job_id, follow=follow)

    def cancel(self, job_id: str) -> tuple[bool, JobStatus]:
        return self.cancel_many([job_id])[job_id]

    def cancel_many(self, job_ids: Sequence[str]) -> dict[str, tuple[bool, JobStatus]]:
        """Stop jobs of the job store: the tool acts only on what it created, so one id the
        store does not know refuses the whole call before anything is sent. Jobs already
        finished or still SUBMITTING are left alone (False); the rest go to one batched
        ``Scheduler.cancel_many`` per instance (Slurm: one scancel), and the statuses
        afterwards come from one batched refresh."""
        records = self.store.find_many([check_job_id(j) for j in job_ids])
        unknown = [j for j in dict.fromkeys(job_ids) if j not in records]
        if unknown:
            raise NotFoundError(
                f"not in the job store: {', '.join(unknown)}; cancel stops only jobs this "
                f"tool submitted (nothing was cancelled)",
                hint=f"`warpforge-launch list` shows the jobs of {self.store.path}")
        cancelled = dict.fromkeys(job_ids, False)
        active = [r for r in records.values() if not (r.final or r.submitting)]
        self.cancel_errors = {}
        for sched, members in self._by_instance(active):
            try:
                done = sched.cancel_many([r.job_id for r in members])
            except CancelIncomplete as exc:  # the others were stopped: say which were not
                done = exc.done
                self.cancel_errors.update(exc.errors)
            cancelled.update((r.job_id, bool(done.get(r.job_id))) for r in members)
        statuses = self.refresh(list(records.values()))
        return {job_id: (cancelled[job_id], statuses[job_id]) for job_id in job_ids}

    def wait(self, job_id: str, timeout: float | None = None,
             on_status: Callable[[JobStatus], None] | None = None) -> JobStatus:
        """Poll with a growing interval (fast for quick jobs, gentle for long ones)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            status = self.status(job_id)
            if on_status:
                on_status(status)
            if status.state.terminal:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return status
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def cluster_info(self, scheduler: str | None = None) -> ClusterInfo:
        entry, config = self._config(scheduler, {})
        return self._instance(entry.name, entry.type, config).cluster_info()


def _me() -> dict[str, Any]:
    """Who is submitting: lets another process tell a submit in flight from a dead one."""
    from warpforge_launch.schedulers.local_state import proc_start_time

    pid = os.getpid()
    import socket

    return {"host": socket.gethostname(), "pid": pid, "start": proc_start_time(pid)}


def _last_known(record: JobRecord, why: InfrastructureError) -> JobStatus:
    return dataclasses.replace(record.status, message=_joined(
        record.status.message, f"not refreshed ({why}); last known state"))


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _given_up(record: JobRecord, now) -> bool:
    """A SUBMITTING row is lost once its submit is over (or was never seen to end) and the
    grace for the backend's view to settle has passed."""
    import socket

    age = now - record.submitted_at
    owner = record.status.scheduler_metadata.get("submitter")
    if isinstance(owner, dict) and owner.get("host") == socket.gethostname():
        from warpforge_launch.schedulers.local_state import alive

        if alive(owner.get("pid"), owner.get("start")):
            return age > SUBMIT_MAX  # still in flight in a live process
    return age > SUBMIT_GRACE
