"""The library front door: submit and track jobs on any configured scheduler.

It routes every command by job id alone (the store remembers which instance and config a
job went to), keeps the job store current, and refreshes many jobs with one batched call
per scheduler instance.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

from warpforge_launch import codec
from warpforge_launch.errors import NotFoundError, UsageError
from warpforge_launch.jobs import (
    ClusterInfo,
    JobDefinition,
    JobQuery,
    JobResult,
    JobStatus,
    JobSubmission,
)
from warpforge_launch.schedulers import registry
from warpforge_launch.schedulers.base import Scheduler, SubmissionPlan
from warpforge_launch.store import JobRecord, JobStore, home


class Launcher:
    def __init__(self, inventory_path: str | None = None, store: JobStore | None = None):
        self._inventory_path = inventory_path
        self._inventory = None
        self.store = store or JobStore()
        self._instances: dict[str, Scheduler] = {}

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
    def scheduler(self, name: str | None = None, **overrides: Any) -> Scheduler:
        """A configured instance from the inventory; overrides replace Config fields."""
        entry = self.inventory.scheduler(name)
        config = entry.config
        if overrides:
            fields = {f.name for f in dataclasses.fields(config)}
            unknown = set(overrides) - fields
            if unknown:
                raise UsageError(f"scheduler {entry.name!r} ({entry.type}) has no setting "
                                 f"{', '.join(sorted(unknown))}")
            config = dataclasses.replace(config, **overrides)
        return registry.create(entry.name, entry.type, config, home())

    def _for_record(self, record: JobRecord) -> Scheduler:
        key = f"{record.instance}\0{record.scheduler_type}\0{record.config}"
        if key not in self._instances:
            self._instances[key] = registry.create(record.instance, record.scheduler_type,
                                                   record.config, home())
        return self._instances[key]

    def _route(self, job_id: str, record: JobRecord | None = None
               ) -> tuple[JobRecord | None, Scheduler]:
        record = record or self.store.find(job_id)
        if record is not None:
            return record, self._for_record(record)
        instance, sep, native = job_id.partition("-")
        if not sep or not native:
            raise NotFoundError(f"{job_id!r} is not a job id (<scheduler>-<id>)",
                                hint="`warpforge-launch list` shows the known jobs")
        if instance not in self.inventory.schedulers:
            raise NotFoundError(f"no job {job_id!r} in the job store, and no scheduler "
                                f"{instance!r} in the inventory ({self.inventory.describe()})")
        return None, self.scheduler(instance)

    # -- submit ----------------------------------------------------------------------------
    def plan(self, definition: JobDefinition, scheduler: str | None = None,
             **overrides: Any) -> tuple[JobSubmission, Scheduler, SubmissionPlan]:
        sched = self.scheduler(scheduler, **overrides)
        caps = sched.capabilities()
        gpu = definition.resources.gpu_type
        if gpu not in caps.supported_gpu_types:
            raise UsageError(f"scheduler {sched.name!r} ({sched.type_name}) cannot give a job "
                             f"{gpu.value} GPUs", hint="choose another --scheduler or --gpu")
        submission = JobSubmission.new(definition)
        return submission, sched, sched.plan(submission)

    def submit(self, definition: JobDefinition, scheduler: str | None = None,
               **overrides: Any) -> str:
        submission, sched, plan = self.plan(definition, scheduler, **overrides)
        native = sched.execute(plan).native_id
        job_id = sched.job_id(native)
        from warpforge_launch.jobs import JobState, utcnow

        status = JobStatus(job_id, submission.correlation_id, JobState.PENDING, utcnow())
        self.store.add(JobRecord(
            job_id, sched.name, sched.type_name, native, submission.correlation_id,
            definition.name, submission.submitted_by, submission.submitted_at,
            submission.to_dict(), plan.to_dict(), codec.to_jsonable(sched.config), status))
        return job_id

    # -- tracking --------------------------------------------------------------------------
    @staticmethod
    def _stamp(record: JobRecord | None, answer):
        """Backends may not know the correlation id (Slurm, Local): the store does."""
        if record is not None and answer.correlation_id is None:
            answer = dataclasses.replace(answer, correlation_id=record.correlation_id)
        return answer

    def status(self, job_id: str) -> JobStatus:
        record = self.store.find(job_id)
        if record is not None and record.state.terminal:
            return record.status  # final: no backend is even loaded
        record, sched = self._route(job_id, record)
        status = self._stamp(record, sched.status(job_id))
        if record is not None:
            self.store.update_status(status)
        return status

    def refresh(self, records: list[JobRecord]) -> dict[str, JobStatus]:
        """Fresh statuses: terminal ones from the store, the rest one batch per instance."""
        fresh = {r.job_id: r.status for r in records if r.state.terminal}
        groups: dict[str, list[JobRecord]] = {}
        for r in records:
            if not r.state.terminal:
                groups.setdefault(r.instance, []).append(r)
        for members in groups.values():
            sched = self._for_record(members[0])
            by_id = {r.job_id: r for r in members}
            batch = [self._stamp(by_id.get(job_id), status)
                     for job_id, status in sched.statuses(list(by_id)).items()]
            self.store.update_status(*batch)
            fresh.update((s.job_id, s) for s in batch)
        for r in records:
            fresh.setdefault(r.job_id, r.status)
        return fresh

    def list(self, query: JobQuery, refresh: bool = True) -> list[tuple[JobRecord, JobStatus]]:
        """Jobs from the store, newest first; active ones are refreshed before the state
        filter and the limit apply (a RUNNING row may have COMPLETED since)."""
        records = self.store.query(query, include_active=refresh)
        statuses = self.refresh(records) if refresh else {r.job_id: r.status for r in records}
        rows = [(r, statuses[r.job_id]) for r in records]
        if query.states:
            rows = [(r, s) for r, s in rows if s.state in query.states]
        return rows[: query.limit] if query.limit else rows

    def result(self, job_id: str) -> JobResult:
        status = self.status(job_id)
        if not status.state.terminal:
            raise UsageError(f"job {job_id} has not finished ({status.state.value})",
                             hint="wait with `warpforge-launch status`, or submit with --wait")
        record, sched = self._route(job_id)
        return self._stamp(record, sched.result(job_id))

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        _, sched = self._route(job_id)
        return sched.logs(job_id, follow=follow)

    def cancel(self, job_id: str) -> tuple[bool, JobStatus]:
        record, sched = self._route(job_id)
        if record is not None and record.state.terminal:
            return False, record.status
        cancelled = sched.cancel(job_id)
        status = self._stamp(record, sched.status(job_id))
        if record is not None:
            self.store.update_status(status)
        return cancelled, status

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
        with self.scheduler(scheduler) as sched:
            return sched.cluster_info()
