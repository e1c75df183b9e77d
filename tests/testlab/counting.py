"""A scheduler type that runs nothing and counts every backend call.

For unit tests of the launcher's routing and batching (how many backend calls a command
makes), where what matters is the launcher, not a backend: the real backends have their
own tests against real services. Register it with ``install(monkeypatch)``; the backend's
jobs and call counts live in ``BACKEND`` (reset per test by ``install``).

Like Slurm, it assigns native ids when a job is sent (a counter that ``BACKEND.reset_ids``
restarts, as a reset cluster does); ``BACKEND.fail_send`` makes the next send fail before
("before") or after ("after") the backend accepted the job, or fail to connect at all
("unsent": the error says nothing was sent); an instance named in ``BACKEND.down`` cannot
be reached by any call.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
from warpforge_launch.jobs import (
    ClusterInfo,
    GpuType,
    JobQuery,
    JobResult,
    JobState,
    JobStatus,
    JobSubmission,
    SchedulerCapabilities,
    utcnow,
)
from warpforge_launch.schedulers.base import Scheduler, SubmissionPlan, Submitted

TYPE = "counting"


@dataclass
class Backend:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # native id -> job
    calls: Counter = field(default_factory=Counter)
    cancelled: list[list[str]] = field(default_factory=list)  # the ids of each cancel_many
    fail_send: str | None = None  # "before" | "after" | "refuse" | "unsent"
    down: set[str] = field(default_factory=set)  # instance names no call reaches
    instances: int = 0
    closed: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def reset_ids(self) -> None:
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return str(next(self._ids))


BACKEND = Backend()


@dataclass(frozen=True)
class CountingConfig:
    __pydantic_config__ = {"extra": "forbid"}
    label: str = "counting"


@dataclass(frozen=True)
class CountingRequest:
    correlation_id: str
    name: str

    def render(self) -> str:
        return f"counting job {self.name} ({self.correlation_id})"

    def to_dict(self) -> dict[str, Any]:
        return {"correlation_id": self.correlation_id, "name": self.name}


class CountingScheduler(Scheduler):
    type_name = TYPE
    Config = CountingConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        BACKEND.instances += 1

    def close(self) -> None:
        BACKEND.closed += 1

    def capabilities(self) -> SchedulerCapabilities:
        return SchedulerCapabilities(False, {GpuType.NONE})

    def plan(self, submission: JobSubmission) -> SubmissionPlan:
        request = CountingRequest(submission.correlation_id, submission.definition.name)
        return SubmissionPlan(self.name, None, "counting", ("payload",), request,
                              submission.correlation_id)

    def _reach(self) -> None:
        if self.name in BACKEND.down:
            raise InfrastructureError(f"counting instance {self.name} is unreachable",
                                      not_sent=True)

    def execute(self, plan: SubmissionPlan) -> Submitted:
        BACKEND.calls["execute"] += 1
        self._reach()
        mode, BACKEND.fail_send = BACKEND.fail_send, None
        if mode == "unsent":
            raise InfrastructureError("the counting backend refused the connection",
                                      not_sent=True)
        if mode == "refuse":
            raise UsageError("the counting backend refused the job")
        if mode == "before":
            raise InfrastructureError("the counting backend did not answer")
        native = BACKEND.next_id()
        BACKEND.jobs[native] = {"correlation_id": plan.correlation_id, "state": JobState.RUNNING,
                                "message": "", "node": "node1"}
        if mode == "after":
            raise InfrastructureError("the counting backend did not answer in time")
        return Submitted(native)

    def reconcile(self, correlation_ids: Sequence[str]) -> dict[str, str]:
        BACKEND.calls["reconcile"] += 1
        self._reach()
        wanted = set(correlation_ids)
        return {j["correlation_id"]: n for n, j in BACKEND.jobs.items()
                if j["correlation_id"] in wanted}

    def _status(self, native: str) -> JobStatus:
        job = BACKEND.jobs[native]
        return JobStatus(self.job_id(native), None, job["state"], utcnow(), job["node"],
                         message=job["message"])

    def status(self, job_id: str) -> JobStatus:
        BACKEND.calls["status"] += 1
        native = self.native_id(job_id)
        if native not in BACKEND.jobs:
            raise NotFoundError(f"no counting job {job_id!r}")
        return self._status(native)

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        BACKEND.calls["statuses"] += 1
        self._reach()
        return {j: self._status(self.native_id(j)) for j in job_ids
                if self.native_id(j) in BACKEND.jobs}

    def result(self, job_id: str) -> JobResult:
        BACKEND.calls["result"] += 1
        job = BACKEND.jobs[self.native_id(job_id)]
        return JobResult(job_id, None, job["state"].success, error_message=job["message"] or None)

    def results(self, known: Mapping[str, JobStatus]) -> dict[str, JobResult]:
        BACKEND.calls["results"] += 1
        self._reach()
        return {j: JobResult(j, None, s.state.success) for j, s in known.items()}

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        yield ""

    def cancel(self, job_id: str) -> bool:
        BACKEND.calls["cancel"] += 1
        self._reach()
        job = BACKEND.jobs[self.native_id(job_id)]
        if job["state"].terminal:
            return False
        job["state"] = JobState.CANCELLED
        return True

    def cancel_many(self, job_ids: Sequence[str]) -> dict[str, bool]:
        """One call for the batch, as Slurm's one scancel."""
        BACKEND.calls["cancel_many"] += 1
        self._reach()
        BACKEND.cancelled.append(list(job_ids))
        out = {}
        for job_id in job_ids:
            job = BACKEND.jobs[self.native_id(job_id)]
            out[job_id] = not job["state"].terminal
            if out[job_id]:
                job["state"] = JobState.CANCELLED
        return out

    def list(self, query: JobQuery) -> list[JobStatus]:
        BACKEND.calls["list"] += 1
        return [self._status(n) for n in sorted(BACKEND.jobs, key=int, reverse=True)]

    def cluster_info(self) -> ClusterInfo:
        return ClusterInfo("counting", "1", 1, 1)


def install(monkeypatch) -> Backend:
    """Make ``type: counting`` known to the registry, with a fresh backend."""
    from warpforge_launch.schedulers import registry

    global BACKEND
    BACKEND = Backend()
    monkeypatch.setitem(registry.BUILTIN, TYPE, f"{__name__}:CountingScheduler")
    return BACKEND


def finish(native: str, state: JobState = JobState.COMPLETED, message: str = "") -> None:
    BACKEND.jobs[native].update(state=state, message=message)
