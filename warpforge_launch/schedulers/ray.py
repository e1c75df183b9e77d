"""Ray backend: snakegrinder jobs through the Ray Jobs REST API of a Ray dashboard.

Why REST and not the Ray SDK: the SDK costs about half a second to import and pins the
client to the cluster's Ray version; the dashboard's HTTP API answers in milliseconds and
works from any machine. The pieces, one job each:

- ``ray_request``: the ``POST /api/jobs/`` body and the source package (pure, ``--dry-run``);
- ``ray_package``: the model source as a Ray working_dir package, read once at plan time;
- ``ray_client``: one warm HTTP connection with deadlines and one-line errors;
- ``ray_parse``: Ray's states, messages, logs, errors and cluster figures in our terms;
- ``ray_outputs``: a finished job's files through the shared output root, symlink-safe.

A job waiting for resources ignores ``/stop`` and stays PENDING until
``RAY_JOB_START_TIMEOUT_SECONDS`` (900 s by default) turns it FAILED: cancel says so.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from warpforge_launch.errors import (
    InfrastructureError,
    LaunchError,
    NotFoundError,
    UsageError,
)
from warpforge_launch.jobs import (
    ClusterInfo,
    GpuType,
    JobQuery,
    JobResult,
    JobStatus,
    JobSubmission,
    SchedulerCapabilities,
)
from warpforge_launch.schedulers import ray_parse as rp
from warpforge_launch.schedulers.base import (
    BatchPlan,
    Outcome,
    Scheduler,
    SubmissionPlan,
    Submitted,
)

LOG_TAIL_LINES = 40
BATCH_CONNECTIONS = 16  # concurrent submit connections of a sweep


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """One Ray cluster, as ``schedulers.<name>`` of the inventory describes it.

    Problems raise ValueError so the inventory reports them with their field path.
    """

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012 (pydantic reads this)

    dashboard_url: str = "http://localhost:8265"
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    snakegrinder: str = "/opt/warpforge/bin/snakegrinder"
    # where jobs write their --out dirs, on the workers; local_output_root is where this
    # machine sees that same directory (a shared mount), None = the same path
    output_root: str = "/var/tmp/warpforge/jobs"
    local_output_root: str | None = None
    # "Header-Name: value" for a dashboard behind an authenticating proxy, e.g.
    # "Authorization: Bearer ${RAY_TOKEN}" (${VAR} is read from the environment per call)
    auth_header: str | None = None
    # GPU vendor -> the Ray custom resource the workers of that vendor declare
    gpu_resources: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"NVIDIA": "nvidia", "AMD": "amd"}
    )
    # wraps the payload in `timeout` so a job's --timeout is enforced on the worker
    timeout_command: str | None = "/usr/bin/timeout"
    # ship the model source with the job (Ray working_dir package): workers need not see
    # the client's files; off = --source is the client's absolute path (a shared mount)
    upload_source: bool = True

    def __post_init__(self) -> None:
        url = urlsplit(self.dashboard_url)
        try:
            port = url.port
        except ValueError:
            port = -1
        if url.scheme not in ("http", "https") or not url.hostname or port == -1 or port == 0:
            raise ValueError(
                f"dashboard_url must be http(s)://host:port (port 1-65535), "
                f"got {self.dashboard_url!r}"
            )
        if url.username is not None or url.password is not None:
            # never used to log in, and it would be printed in every message and stored
            # with each job: credentials go in auth_header, read from the environment
            raise ValueError("dashboard_url must not hold a user or password (write "
                             "auth_header: 'Authorization: Basic ${RAY_BASIC_AUTH}' instead)")
        object.__setattr__(self, "dashboard_url", self.dashboard_url.rstrip("/"))
        for field in ("connect_timeout", "request_timeout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
                0 < value < float("inf")
            ):
                raise ValueError(f"{field} must be a positive number of seconds, got {value!r}")
        for field in ("snakegrinder", "output_root"):
            if not str(getattr(self, field)).startswith("/"):
                raise ValueError(
                    f"{field} must be an absolute path (jobs run with the PATH and cwd of "
                    f"`ray start`), got {getattr(self, field)!r}"
                )
        if self.timeout_command is not None and not self.timeout_command.startswith("/"):
            raise ValueError(
                f"timeout_command must be an absolute path, got {self.timeout_command!r}"
            )
        if self.auth_header is not None:
            name, sep, value = self.auth_header.partition(":")
            if not sep or not name.strip() or not value.strip() or " " in name.strip():
                raise ValueError("auth_header must look like 'Header-Name: value'")
        vendors = {}
        for vendor, resource in dict(self.gpu_resources).items():
            key = str(vendor).upper()
            if key not in ("NVIDIA", "AMD"):
                raise ValueError(f"gpu_resources: unknown GPU vendor {vendor!r} (NVIDIA or AMD)")
            if (
                not isinstance(resource, str)
                or not resource
                or resource in ("GPU", "CPU", "memory")
            ):
                raise ValueError(
                    f"gpu_resources.{vendor}: needs a custom resource name, got {resource!r}"
                )
            vendors[key] = resource
        object.__setattr__(self, "gpu_resources", vendors)


class RayScheduler(Scheduler):
    """Submit, track and cancel snakegrinder jobs on one Ray cluster over HTTP."""

    type_name: ClassVar[str] = "ray"
    Config: ClassVar[type] = RayConfig

    def __init__(self, name: str, config: RayConfig, *, home: Path) -> None:
        super().__init__(name, config, home=home)
        self.config = config
        self._client = None

    # --- pure part --------------------------------------------------------------------------

    def capabilities(self) -> SchedulerCapabilities:
        vendors = [GpuType[v] for v in ("NVIDIA", "AMD") if v in self.config.gpu_resources]
        return SchedulerCapabilities(
            gpu_scheduling=True,
            supported_gpu_types=frozenset([GpuType.NONE, GpuType.ANY, *vendors]),
            queue_priority=False,
            node_affinity=True,
            job_arrays=False,
            max_concurrent_jobs=None,
            max_job_duration=None,
        )

    def native_id(self, job_id: str) -> str:
        """The submission id of one of our job ids; it becomes a URL segment and a directory
        name, so only plain ids pass (never ``.``, ``..`` or anything with a ``/``)."""
        sid = super().native_id(job_id)
        if not rp.valid_submission_id(sid):
            raise UsageError(
                f"{job_id!r} is not a Ray job id",
                hint=f"expected {self.name}-<submission id> (letters, digits, '_', '.', ':', "
                "'-'); `warpforge-launch list` shows the known jobs",
            )
        return sid

    def plan(self, submission: JobSubmission) -> SubmissionPlan:
        """The exact ``POST /api/jobs/`` body and the source package; sends nothing."""
        from warpforge_launch.schedulers import ray_request

        argv, request = ray_request.build(self.config, self.name, submission)
        return SubmissionPlan(
            instance=self.name,
            native_id=request.body["submission_id"],
            kind="ray-job",
            argv=tuple(argv),
            request=request,
            correlation_id=str(submission.correlation_id),
        )

    # --- HTTP ---------------------------------------------------------------------------------

    @property
    def client(self):
        """The instance's one HTTP client, opened on first use and kept warm."""
        if self._client is None:
            from warpforge_launch.schedulers.ray_client import client_for

            self._client = client_for(self.name, self.config)
        return self._client

    def _job(self, job_id: str) -> dict:
        from warpforge_launch.schedulers.ray_client import job_record

        missing = NotFoundError(f"no job {job_id} on Ray at {self.config.dashboard_url}")
        return job_record(self.client, self.native_id(job_id), not_found=missing)

    def _all_jobs(self) -> list[dict]:
        from warpforge_launch.schedulers.ray_client import all_jobs

        return all_jobs(self.client)

    # --- the Scheduler interface --------------------------------------------------------------

    def execute(self, plan: SubmissionPlan) -> Submitted:
        """Upload the source package (unless Ray has it), then post the job. Secret values are
        read here, go into runtime_env.env_vars and nowhere else; a missing one is bad input
        before anything is sent."""
        from warpforge_launch import secrets

        secrets.resolve(plan.request.secret_env)
        self._upload(plan.request.package, self.client)
        return self._post(plan, self.client)

    def _upload(self, package, client) -> None:
        if package is not None:
            path = f"/api/packages/gcs/{package.gcs_name}"
            if client.call("GET", path, missing_ok=True) is None:
                client.call("PUT", path, content=package.data)

    def _post(self, plan: SubmissionPlan, client) -> Submitted:
        from warpforge_launch import secrets
        from warpforge_launch.schedulers.ray_client import RayServerError

        request = plan.request
        body = request.wire_body(secrets.resolve(request.secret_env))
        sid = body["submission_id"]
        try:
            answer = client.call("POST", "/api/jobs/", json_body=body)
        except RayServerError as exc:
            if rp.is_duplicate(exc.detail):
                raise UsageError(
                    f"Ray at {self.config.dashboard_url} already has a job with submission id "
                    f"{sid} ({self.job_id(sid)}): nothing new was submitted",
                    hint="each submission needs a new correlation id",
                ) from None
            raise
        if not isinstance(answer, dict) or answer.get("submission_id") != sid:
            # not the Jobs API's answer (a proxy, another service): whether the job went in
            # is unknown, so it is left to reconcile
            raise InfrastructureError(
                f"Ray at {self.config.dashboard_url} answered the submit without its "
                f"submission id {sid}: {str(answer)[:120]}", hint="is dashboard_url a Ray "
                "dashboard? `warpforge-launch list` checks whether the job went in")
        return Submitted(sid)

    def execute_batch(self, batch: BatchPlan) -> dict[str, Outcome]:
        """Every job as concurrent POSTs over a small pool of kept-alive connections (each
        distinct source package is uploaded once, first); one job's error is its own."""
        from concurrent.futures import ThreadPoolExecutor

        from warpforge_launch import secrets
        from warpforge_launch.schedulers.ray_client import RayClient

        plans = list(batch.jobs)
        if not plans:
            return {}
        secrets.resolve(sorted({k for p in plans for k in p.request.secret_env}))
        packages = {p.request.package.gcs_name: p.request.package for p in plans
                    if p.request.package is not None}
        for package in packages.values():
            self._upload(package, self.client)
        base = self.client
        local = threading.local()
        opened: list[RayClient] = []

        def send(plan: SubmissionPlan) -> tuple[str, Outcome]:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = RayClient(
                    base.base_url, connect_timeout=base.connect_timeout,
                    request_timeout=base.request_timeout, headers=base.headers,
                    hint=base.hint)
                client.observers = base.observers
                opened.append(client)
            try:
                return plan.correlation_id, self._post(plan, client)
            except LaunchError as exc:
                return plan.correlation_id, exc

        try:
            with ThreadPoolExecutor(min(BATCH_CONNECTIONS, len(plans))) as pool:
                return dict(pool.map(send, plans))
        finally:
            for client in opened:
                client.close()

    def status(self, job_id: str) -> JobStatus:
        return rp.to_status(self._job(job_id), job_id)

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Many jobs with ONE ``GET /api/jobs/``; ids Ray no longer knows are left out."""
        from warpforge_launch.schedulers.ray_client import jobs_by_id

        sids = {self.native_id(j): j for j in job_ids}  # a bad id fails before any request
        return {sids[sid]: rp.to_status(job, sids[sid])
                for sid, job in jobs_by_id(self.client, list(sids)).items()}

    def reconcile(self, correlation_ids: Sequence[str]) -> dict[str, str]:
        """Submission ids of jobs Ray accepted, by the correlation id in their metadata: ONE
        ``GET /api/jobs/`` finds a submit that was interrupted between send and record."""
        if not correlation_ids:
            return {}
        return rp.by_correlation(self._all_jobs(), correlation_ids)

    def list(self, query: JobQuery) -> list[JobStatus]:
        """This tool's jobs on the cluster (metadata says so), newest first: one request."""
        if query.schedulers and self.name not in query.schedulers:
            return []
        mine = [(sid, j) for sid, j in rp.submissions(self._all_jobs()) if rp.is_ours(j)]
        mine.sort(key=lambda item: rp.from_ms(item[1].get("start_time")) or rp.EPOCH,
                  reverse=True)
        found = []
        for sid, job in mine:
            status = rp.to_status(job, self.job_id(sid))
            if not rp.matches(query, status, job):
                continue
            found.append(status)
            if query.limit and len(found) >= query.limit:
                break
        return found

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The job's output without Ray's own lines; with ``follow``, polled until it ends."""
        import time

        job = self._job(job_id)
        sid, entrypoint = self.native_id(job_id), str(job.get("entrypoint") or "")
        if not follow:
            text = rp.strip_ray_header(self._raw_logs(job_id), sid, entrypoint)
            if text:
                yield text
            return
        # Ray's live tail is a websocket; polling the whole log (small for snakegrinder) is
        # enough. Only complete lines are judged, so a half-written Ray line is never shown.
        sent = 0
        delay = 0.2
        while True:
            terminal = rp.is_terminal(job.get("status"))
            raw = self._raw_logs(job_id)
            if not terminal:
                raw = raw[: raw.rfind("\n") + 1]
            text = rp.strip_ray_header(raw, sid, entrypoint)
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            if terminal:
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
            job = self._job(job_id)

    def _raw_logs(self, job_id: str) -> str:
        sid = self.native_id(job_id)
        missing = NotFoundError(f"no job {job_id} on Ray at {self.config.dashboard_url}")
        answer = self.client.call("GET", f"/api/jobs/{sid}/logs", not_found=missing)
        logs = answer.get("logs", "") if isinstance(answer, dict) else ""
        return logs if isinstance(logs, str) else ""

    def cancel(self, job_id: str) -> bool:
        """Stop a job; False when it had already finished. Honest about PENDING jobs."""
        import time

        sid = self.native_id(job_id)
        before = self._job(job_id)
        if rp.is_terminal(before.get("status")):
            return False
        stop = f"/api/jobs/{sid}/stop"
        answer = self.client.call("POST", stop, not_found=NotFoundError(f"no job {job_id}"))
        if not (isinstance(answer, dict) and answer.get("stopped", False)):
            return False  # it finished between our two calls
        # A running job turns STOPPED within a second or two. One still waiting for
        # resources ignores the stop (Ray 2.x) and stays PENDING: say so instead of lying.
        # One that was only starting may run anyway: stop it again once it runs.
        stop_sent_running = before.get("status") == "RUNNING"
        now = time.monotonic()
        pending_deadline = now + min(5.0, self.config.request_timeout)
        deadline = now + max(15.0, self.config.request_timeout)
        while True:
            state = self._job(job_id).get("status")
            if state not in ("PENDING", "RUNNING"):
                return True
            now = time.monotonic()
            if state == "RUNNING" and not stop_sent_running:
                self.client.call("POST", stop, not_found=NotFoundError(f"no job {job_id}"))
                stop_sent_running = True
                deadline = now + max(15.0, self.config.request_timeout)
            elif state == "PENDING" and now > pending_deadline:
                raise LaunchError(
                    f"Ray cannot stop job {job_id} while it is PENDING: a job waiting for "
                    "resources stays PENDING until Ray gives up starting it "
                    "(RAY_JOB_START_TIMEOUT_SECONDS on the head, 900 s by default) and then "
                    "ends FAILED",
                    hint="nothing of it runs while it waits; should it start, cancel it again",
                )
            if now > deadline:
                raise InfrastructureError(
                    f"Ray accepted the stop of {job_id} but it is still {state}",
                    hint="look at the job with `warpforge-launch status`",
                )
            time.sleep(0.25)

    def delete(self, job_id: str) -> None:
        """Forget a finished job on the Ray side (its logs and record go with it)."""
        job = self._job(job_id)
        if not rp.is_terminal(job.get("status")):
            raise UsageError(
                f"job {job_id} is still {job.get('status')}: Ray deletes finished jobs only"
            )
        sid = self.native_id(job_id)
        self.client.call("DELETE", f"/api/jobs/{sid}", not_found=NotFoundError(f"no job {job_id}"))

    def result(self, job_id: str) -> JobResult:
        """Outcome, log tail and the files of ``<output root>/<submission id>``: the directory
        comes from our own job id and configuration, never from what the cluster reports."""
        job = self._job(job_id)
        sid = self.native_id(job_id)
        status = rp.to_status(job, job_id)
        entrypoint = str(job.get("entrypoint") or "")
        log_text = rp.strip_ray_header(self._raw_logs(job_id), sid, entrypoint)
        tail = log_text.splitlines()[-LOG_TAIL_LINES:]
        error = None
        if not status.state.success:
            error = rp.failure_line(tail) or status.message or status.state.value
        success, outputs, mlir, error = self._outputs(sid, status.node_name,
                                                      status.state.success, error)
        code = job.get("driver_exit_code")
        return JobResult(
            job_id=job_id,
            correlation_id=status.correlation_id,
            success=success,
            outputs=outputs,
            mlir_output=mlir,
            execution_time=status.elapsed,
            error_message=error,
            metrics={},
            exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            log_tail="\n".join(tail),
        )

    def results(self, known: Mapping[str, JobStatus]) -> dict[str, JobResult]:
        """Like ``result``; a finished job the cluster no longer knows (its head restarted,
        or its job table was cleaned) still gives what it left in the output root, from the
        final status the store kept: no log, and that said."""
        out: dict[str, JobResult] = {}
        for job_id, status in known.items():
            try:
                out[job_id] = self.result(job_id)
            except NotFoundError:
                success, outputs, mlir, error = self._outputs(
                    self.native_id(job_id), status.node_name, status.state.success,
                    None if status.state.success else (status.message or status.state.value))
                code = status.scheduler_metadata.get("exit_code")
                out[job_id] = JobResult(
                    job_id=job_id, correlation_id=status.correlation_id,
                    success=success, outputs=outputs, mlir_output=mlir,
                    execution_time=status.elapsed, error_message=error, metrics={},
                    exit_code=code if isinstance(code, int) else None,
                    log_tail=f"(Ray at {self.config.dashboard_url} no longer has this job: "
                             "its log is gone; the outputs are read from the output root)")
        return out

    def _outputs(
        self, sid: str, node: str | None, success: bool, error: str | None
    ) -> tuple[bool, tuple[str, ...], str | None, str | None]:
        """(success, files of the job's --out dir, MLIR text, error), through the shared
        output root. A symlink leading out of the job's directory (or a model.mlir that is
        not a regular file) is refused and named, and the result is then a failure.

        When the root is not visible here, a successful job reports where its files are,
        ``<node>:<out dir>/`` (fetch them over SSH); a failed one reports none.
        """
        from warpforge_launch.schedulers.ray_outputs import read_outputs, with_refusals

        root = self.config.output_root.rstrip("/")
        local = self.config.local_output_root or root
        found = read_outputs(local, sid)
        if not found.mounted:
            where = (f"{node or 'ray-worker'}:{root}/{sid}/",) if success else ()
            return success, where, None, error
        success, error = with_refusals(success, error, found.refused,
                                       f"{local.rstrip('/')}/{sid}")
        return success, tuple(found.files), found.mlir, error

    def fetch_outputs(self, stagings) -> None:
        """``<output root>/<submission id>`` through the shared output root (the directory
        comes from our own job id, never from what the cluster reports), and the job's log
        (stdout and stderr together, as Ray keeps it) from the Jobs API when not held yet."""
        import os

        from warpforge_launch import artifacts_copy as ac

        root = self.config.local_output_root or self.config.output_root
        if not os.path.isdir(root):
            raise UsageError(f"Ray's output root {root} is not visible from this machine",
                             hint="mount it here and set local_output_root in the inventory")
        for st in stagings:
            sid = self.native_id(st.job_id)
            if "/" in sid or sid in (".", ".."):
                raise NotFoundError(f"no Ray job {st.job_id!r}")
            st.source = f"{self.name}: {root.rstrip('/')}/{sid}"
            ac.copy_tree(st, root, sid)
            try:
                ac.save_log(st, "stdout.log", lambda j=st.job_id: "".join(self.logs(j)))
            except NotFoundError as exc:  # deleted on the Ray side: its files still count
                st.notes.append(f"log not fetched: {exc}")

    def cluster_info(self) -> ClusterInfo:
        version = self.client.call("GET", "/api/version")
        nodes_doc = self.client.call("GET", "/api/v0/nodes")
        try:
            nodes = nodes_doc["data"]["result"]["result"]
        except (KeyError, TypeError) as exc:
            raise InfrastructureError(
                f"unexpected /api/v0/nodes answer from {self.config.dashboard_url}"
            ) from exc
        try:
            usage_by_node = (
                self.client.call("GET", "/api/cluster_status")["data"]["clusterStatus"][
                    "loadMetricsReport"
                ]["usageByNode"]
                or {}
            )
        except (KeyError, TypeError):
            usage_by_node = {}  # empty for ~5 s after the head starts: totals still hold
        return rp.build_cluster_info(
            self.name, version, nodes, usage_by_node, self.config.gpu_resources
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
