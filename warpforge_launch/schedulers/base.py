"""The Scheduler interface every backend implements, and the plan it renders.

``plan`` is pure: it renders the exact request (argv, Ray JSON body, sbatch text, Job
manifest) and touches nothing, which gives ``submit --dry-run`` and golden tests for free.
``execute`` is the one I/O step of a submit. The instance name prefixes every job id, so any
command can route by id alone (``local-1a2b3c4d``, ``slurm-42``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from warpforge_launch.errors import NotFoundError
from warpforge_launch.jobs import (
    ClusterInfo,
    JobQuery,
    JobResult,
    JobStatus,
    JobSubmission,
    SchedulerCapabilities,
)


@dataclass(frozen=True)
class SubmissionPlan:
    """Everything a submit will send, rendered before anything is sent."""

    instance: str
    native_id: str | None  # chosen up front (local, ray, k8s) or None (assigned by sbatch)
    kind: str  # "local-process" | "ray-job" | "sbatch" | "k8s-job"
    argv: tuple[str, ...]  # the snakegrinder payload argv
    request: Any  # JSON-able: argv/dict body/script text/manifest

    @property
    def job_id(self) -> str | None:
        return f"{self.instance}-{self.native_id}" if self.native_id else None

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "native_id": self.native_id, "kind": self.kind,
                "argv": list(self.argv), "request": self.request}

    def render(self) -> str:
        """Human form for --dry-run: scripts as they are, structured requests as JSON."""
        if isinstance(self.request, str):
            return self.request
        return json.dumps(self.request, indent=2, sort_keys=True)


class Scheduler(ABC):
    """One configured scheduler instance (``schedulers.<name>`` in the inventory)."""

    type_name: ClassVar[str]
    Config: ClassVar[type]  # a dataclass, validated from the inventory mapping

    def __init__(self, name: str, config: Any, *, home: Path):
        self._name = name
        self.config = config
        self.home = Path(home)

    @property
    def name(self) -> str:
        return self._name

    def job_id(self, native_id: str) -> str:
        return f"{self._name}-{native_id}"

    def native_id(self, job_id: str) -> str:
        prefix = f"{self._name}-"
        if not job_id.startswith(prefix) or len(job_id) == len(prefix):
            raise NotFoundError(f"job id {job_id!r} does not belong to scheduler {self._name!r}")
        return job_id[len(prefix):]

    @abstractmethod
    def capabilities(self) -> SchedulerCapabilities: ...

    @abstractmethod
    def plan(self, submission: JobSubmission) -> SubmissionPlan:
        """Render the exact request; pure (no I/O beyond reading local files)."""

    @abstractmethod
    def execute(self, plan: SubmissionPlan) -> str:
        """Send the planned request; return the job id."""

    def submit(self, submission: JobSubmission) -> str:
        return self.execute(self.plan(submission))

    @abstractmethod
    def status(self, job_id: str) -> JobStatus: ...

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Refresh many jobs; backends override this with one batched call."""
        return {job_id: self.status(job_id) for job_id in job_ids}

    @abstractmethod
    def result(self, job_id: str) -> JobResult:
        """The outcome of a finished job."""

    @abstractmethod
    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The job's output as text chunks; with ``follow``, until the job ends."""

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Stop the job; False when it had already finished."""

    @abstractmethod
    def list(self, query: JobQuery) -> list[JobStatus]:
        """Jobs this backend knows about (the launcher's ``list`` reads the job store)."""

    @abstractmethod
    def cluster_info(self) -> ClusterInfo: ...

    def close(self) -> None:
        """Release connections; instances are cheap and short-lived."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
