"""The Scheduler interface every backend implements, and the plan it renders.

``plan`` is pure: it renders the exact request (argv, Ray JSON body, sbatch text, Job
manifest) and touches nothing, which gives ``submit --dry-run`` and golden tests for free.
``execute`` is the one I/O step of a submit. The instance name prefixes every job id, so any
command can route by id alone (``local-1a2b3c4d``, ``slurm-42``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, Union

from warpforge_launch.errors import (
    CancelIncomplete,
    InfrastructureError,
    LaunchError,
    NotFoundError,
)
from warpforge_launch.jobs import (
    ClusterInfo,
    JobQuery,
    JobResult,
    JobStatus,
    JobSubmission,
    SchedulerCapabilities,
)

if TYPE_CHECKING:
    from warpforge_launch.artifacts_store import Staging


class Request(Protocol):
    """A backend's typed submit request (Local's job request, Ray's POST body plus source
    package, Slurm's script spec and text, a Kubernetes Job manifest).

    It is secret-free by construction: ``--secret-env`` names travel in it, values are read
    from the submitting process's environment only inside ``execute``.
    """

    def render(self) -> str:
        """The human form ``--dry-run`` prints (scripts as they are, bodies as JSON/YAML)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in the job store and printed by ``--dry-run --json``."""
        ...


R = TypeVar("R", bound=Request)


@dataclass(frozen=True)
class BatchRef:
    """Where a job sits inside a request that carries many (a Slurm job array): the
    request's own correlation id, which the backend can be asked about, and the job's
    index in it. A submit interrupted after the send is reconciled through these."""

    correlation_id: str
    index: int


@dataclass(frozen=True)
class SubmissionPlan(Generic[R]):
    """Everything a submit will send, rendered before anything is sent."""

    instance: str
    native_id: str | None  # chosen up front (local, ray, k8s) or None (assigned by sbatch)
    kind: str  # "local-process" | "ray-job" | "sbatch" | "k8s-job"
    argv: tuple[str, ...]  # the snakegrinder payload argv
    request: R
    correlation_id: str  # carried in the request so a crash after the send can be reconciled
    batch: BatchRef | None = None  # set when the job travels inside a batch request

    @property
    def job_id(self) -> str | None:
        return f"{self.instance}-{self.native_id}" if self.native_id else None

    def to_dict(self) -> dict[str, Any]:
        out = {"instance": self.instance, "native_id": self.native_id, "kind": self.kind,
               "argv": list(self.argv), "correlation_id": self.correlation_id,
               "request": self.request.to_dict()}
        if self.batch is not None:
            out["batch"] = {"correlation_id": self.batch.correlation_id,
                            "index": self.batch.index}
        return out

    def render(self) -> str:
        return self.request.render()


@dataclass(frozen=True)
class BatchPlan:
    """Many jobs for one instance, rendered before anything is sent: ``jobs`` holds each
    job's own plan (what the job store keeps), ``requests`` what goes to the backend - one
    per job by default, one job array per resource shape on Slurm."""

    instance: str
    kind: str
    jobs: tuple[SubmissionPlan, ...]
    requests: tuple[Request, ...]

    def render(self) -> str:
        return "\n".join(f"# --- request {i + 1} of {len(self.requests)} ({self.kind})\n"
                         + r.render().rstrip("\n") for i, r in enumerate(self.requests))

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "kind": self.kind,
                "requests": [r.to_dict() for r in self.requests],
                "jobs": [p.to_dict() for p in self.jobs]}


Outcome = Union["Submitted", LaunchError]


@dataclass(frozen=True)
class Submitted:
    """What ``execute`` learned from the backend: the native id it accepted the job under."""

    native_id: str


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
    def execute(self, plan: SubmissionPlan) -> Submitted:
        """Send the planned request: the one I/O step of a submit."""

    def submit(self, submission: JobSubmission) -> str:
        """Plan and send; the job id. (The launcher records the job around ``execute``.)"""
        return self.job_id(self.execute(self.plan(submission)).native_id)

    def plan_batch(self, submissions: Sequence[JobSubmission], *,
                   throttle: int | None = None) -> BatchPlan:
        """Plan many jobs at once (pure, like ``plan``). ``throttle`` caps how many of them
        run at the same time where the backend can say so. The default plans each job on
        its own; Slurm overrides it with job arrays."""
        plans = tuple(self.plan(s) for s in submissions)
        return BatchPlan(self.name, plans[0].kind if plans else "none", plans,
                         tuple(p.request for p in plans))

    def prepare_batch(self, batch: BatchPlan) -> None:
        """Optional head start for ``execute_batch``, so that the caller's bookkeeping (the
        SUBMITTING rows) overlaps the backend's start-up: begin only what submits nothing
        (Slurm: the submit driver's remote shell, which checks the work dir, then waits for
        the scripts). ``release_batch`` undoes it when the batch will not be sent."""

    def release_batch(self, batch: BatchPlan) -> None:
        """Drop what ``prepare_batch`` began, if ``execute_batch`` did not use it."""

    def execute_batch(self, batch: BatchPlan) -> dict[str, Outcome]:
        """Send a planned batch: per job (by correlation id) what the backend accepted it
        as, or the error that stopped it. The default sends one job after the other and,
        once the backend is unreachable, does not try the rest (they share the error and
        stay to be reconciled); Ray sends concurrently, Slurm in one round trip."""
        out: dict[str, Outcome] = {}
        down: LaunchError | None = None
        for plan in batch.jobs:
            if down is not None:
                out[plan.correlation_id] = down
                continue
            try:
                out[plan.correlation_id] = self.execute(plan)
            except InfrastructureError as exc:
                out[plan.correlation_id] = down = exc
            except LaunchError as exc:
                out[plan.correlation_id] = exc
        return out

    def batch_native_id(self, native_id: str, index: int) -> str:
        """The native id of job ``index`` of a batch request the backend accepted as
        ``native_id`` (an array's task: ``<array job>_<index>``)."""
        return f"{native_id}_{index}"

    def cancel_many(self, job_ids: Sequence[str]) -> dict[str, bool]:
        """Cancel many jobs; backends override this with one batched call. One job that
        cannot be stopped does not stop the others: they are all tried, then
        CancelIncomplete says which failed (an unreachable backend still ends it at once)."""
        done: dict[str, bool] = {}
        errors: dict[str, LaunchError] = {}
        for job_id in job_ids:
            try:
                done[job_id] = self.cancel(job_id)
            except InfrastructureError:
                raise
            except LaunchError as exc:
                done[job_id], errors[job_id] = False, exc
        if errors:
            raise CancelIncomplete(done, errors)
        return done

    def reconcile(self, correlation_ids: Sequence[str]) -> dict[str, str]:
        """Native ids of jobs this backend accepted, by the correlation id their request
        carried: how a submit interrupted between send and record is found again. One
        batched call. An id left out means "not here": once the launcher's grace period is
        over, such a job is recorded FAILED. The default knows nothing."""
        return {}

    @abstractmethod
    def status(self, job_id: str) -> JobStatus: ...

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Refresh many jobs; backends override this with one batched call."""
        return {job_id: self.status(job_id) for job_id in job_ids}

    @abstractmethod
    def result(self, job_id: str) -> JobResult:
        """The outcome of a finished job."""

    def results(self, known: Mapping[str, JobStatus]) -> dict[str, JobResult]:
        """Outcomes of finished jobs whose final status the caller already has (from the
        job store or a batched refresh): a backend overrides this to skip asking for the
        status again and to fetch many results in one round trip."""
        return {job_id: self.result(job_id) for job_id in known}

    @abstractmethod
    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The job's output as text chunks; with ``follow``, until the job ends."""

    def fetch_outputs(self, stagings: Sequence[Staging]) -> None:
        """Copy finished jobs' files into their stagings (``artifacts_store.Staging``): the
        payload's --out directory as ``output/...`` and the job's stdout/stderr as
        ``stdout.log`` / ``stderr.log``. Call ``staging.keep`` for a file the
        staging already ``have``s unchanged (nothing travels), ``staging.write`` for the
        rest, ``staging.refuse`` for a symlink leading out of the job's output directory
        (never followed). A backend moves all of them in as few round trips as it can (Slurm: one
        archive per instance). Raise for a failure of the whole batch.

        The default saves what ``logs`` returns as ``stdout.log`` and nothing else: a
        backend that knows where its jobs' files are overrides it."""
        from warpforge_launch.artifacts_copy import save_log

        for staging in stagings:
            staging.source = f"{self.name}: job log only"
            save_log(staging, "stdout.log",
                     lambda job_id=staging.job_id: "".join(self.logs(job_id)))

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Stop the job; False when it had already finished."""

    @abstractmethod
    def list(self, query: JobQuery) -> list[JobStatus]:
        """Jobs the backend itself knows, also those other tools submitted, newest first:
        what ``warpforge-launch list --from-cluster`` shows (plain ``list`` reads the job
        store)."""

    @abstractmethod
    def cluster_info(self) -> ClusterInfo: ...

    def close(self) -> None:
        """Release connections; instances are cheap and short-lived."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
