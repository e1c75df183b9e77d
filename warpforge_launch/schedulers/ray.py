"""Ray backend: snakegrinder jobs through the Ray Jobs REST API of a Ray dashboard.

Why REST and not the Ray SDK: the SDK costs about half a second to import and pins the
client to the cluster's Ray version; the dashboard's HTTP API answers in milliseconds and
works from any machine. httpx is imported lazily, on the first request.

What Ray does that shapes this module (TESTLAB.md, checked against Ray 2.60):
- The entrypoint runs under ``/bin/sh -c`` with the PATH and cwd of ``ray start``: it is
  ``shlex.join`` of the payload argv, whose program is an absolute path.
- GPUs go in ``entrypoint_num_gpus`` (``{"GPU": n}`` in ``entrypoint_resources`` is accepted
  and then fails); the vendor is a custom resource the workers declare (``nvidia``/``amd``),
  so an AMD job cannot land on an NVIDIA worker.
- A job waiting for resources ignores ``/stop`` and stays PENDING until
  ``RAY_JOB_START_TIMEOUT_SECONDS`` (900 s by default) turns it FAILED: cancel says so.
- Errors come back as text/plain Python tracebacks; a duplicate submission id is HTTP 500.
- ``/api/cluster_status`` camelCases its keys, resource names included.
- ``runtime_env.env_vars`` values go through ``os.path.expandvars`` on the worker.

The model source ships with the job as a Ray working_dir package (``upload_source``), so
workers need not see the client's files.

Outputs: the payload writes into ``<output_root>/<submission id>`` on the worker. The result
step reads ``model.mlir``/``manifest.json`` from there when that root is shared with the
client (``local_output_root`` says where the client sees it); otherwise it reports where the
files are (node and path).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

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
    JobState,
    JobStatus,
    JobSubmission,
    NodeInfo,
    SchedulerCapabilities,
)
from warpforge_launch.schedulers.base import Scheduler, SubmissionPlan, Submitted


@dataclasses.dataclass(frozen=True)
class RayRequest:
    """The ``POST /api/jobs/`` body."""

    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.body

    def render(self) -> str:
        return json.dumps(self.body, indent=2, sort_keys=True)


# Ray job status -> ours. FAILED is refined by error_type/exit code in ray_state().
RAY_STATES = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "STOPPED": JobState.CANCELLED,
}
ENV_COMMAND = "/usr/bin/env"  # carries env values Ray would expand (see plan)
TIMEOUT_EXIT_CODE = 124  # coreutils `timeout` when the job ran past its limit
META_PREFIX = "warpforge_"
START_TIMEOUT_ERROR = "JOB_SUPERVISOR_ACTOR_START_TIMEOUT"
LOG_TAIL_LINES = 40
MAX_SOURCE_BYTES = 64 * 2**20  # Ray keeps packages in the GCS (512 MiB cap, warns at half)
_RAY_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+:\d+ -- "
)


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
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"dashboard_url must be http(s)://host:port, got {self.dashboard_url!r}"
            )
        object.__setattr__(self, "dashboard_url", self.dashboard_url.rstrip("/"))
        for field in ("connect_timeout", "request_timeout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
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

    def submission_id(self, submission: JobSubmission) -> str:
        return f"wf-{submission.short_id}"

    def out_dir(self, submission_id: str) -> str:
        return f"{self.config.output_root.rstrip('/')}/{submission_id}"

    def plan(self, submission: JobSubmission) -> SubmissionPlan:
        """The exact ``POST /api/jobs/`` body. Reads the model source (its package is named
        by its content) and sends nothing."""
        from warpforge_launch.payload import snakegrinder_argv

        definition = submission.definition
        res = definition.resources
        sid = self.submission_id(submission)
        job_id = self.job_id(sid)
        package = None
        if self.config.upload_source:
            # the job's cwd is the unpacked package, so the payload reads the file by name
            package = source_package_uri(definition.source)
            definition = dataclasses.replace(definition, source=Path(definition.source).name)
        argv = snakegrinder_argv(self.config.snakegrinder, definition, self.out_dir(sid))
        # Ray runs os.path.expandvars on runtime_env values ($HOME, ${X} would change and
        # unknown ${X} vanish), so values holding "$" go through `env` in the entrypoint,
        # quoted by shlex like every other argument, and arrive verbatim.
        env = {str(k): str(v) for k, v in definition.environment.items()}
        literal = {k: v for k, v in env.items() if "$" in v}
        env = {k: v for k, v in env.items() if k not in literal}
        env["WARPFORGE_JOB_ID"] = job_id
        env["WARPFORGE_CORRELATION_ID"] = str(submission.correlation_id)
        literal = {k: v for k, v in literal.items() if k not in env}
        prefix: list[str] = []
        if literal:
            prefix += [ENV_COMMAND, "--", *(f"{k}={v}" for k, v in sorted(literal.items()))]
        if self.config.timeout_command:
            seconds = max(1, int(definition.timeout.total_seconds()))
            prefix += [self.config.timeout_command, "--kill-after=30", f"{seconds}s"]
        body: dict[str, Any] = {
            "entrypoint": shlex.join([*prefix, *argv]),
            "submission_id": sid,
            "entrypoint_num_cpus": res.cpu_cores,
            "entrypoint_num_gpus": res.gpu_count if res.gpu_type != GpuType.NONE else 0,
            "entrypoint_memory": int(res.memory_mb) * 1024 * 1024,
        }
        resources = self._custom_resources(res)
        if resources:
            body["entrypoint_resources"] = resources
        body["runtime_env"] = {"env_vars": env}
        if package:
            body["runtime_env"]["working_dir"] = package
        body["metadata"] = {
            "job_name": definition.name,
            f"{META_PREFIX}instance": self.name,
            f"{META_PREFIX}job_id": job_id,
            f"{META_PREFIX}correlation_id": str(submission.correlation_id),
            f"{META_PREFIX}submitted_by": str(submission.submitted_by),
            f"{META_PREFIX}submitted_at": _iso(submission.submitted_at),
            f"{META_PREFIX}job_name": definition.name,
            f"{META_PREFIX}out_dir": self.out_dir(sid),
            f"{META_PREFIX}source": submission.definition.source,
        }
        return SubmissionPlan(
            instance=self.name,
            native_id=sid,
            kind="ray-job",
            argv=tuple(argv),
            request=RayRequest(body),
            correlation_id=str(submission.correlation_id),
        )

    def _custom_resources(self, res) -> dict[str, float]:
        if res.queue:
            raise UsageError(
                f"Ray has no queues: --queue {res.queue!r} cannot be honoured",
                hint="drop --queue, or submit to a Slurm scheduler",
            )
        out: dict[str, float] = {}
        if res.gpu_type in (GpuType.NVIDIA, GpuType.AMD):
            resource = self.config.gpu_resources.get(res.gpu_type.name)
            if resource is None:
                raise UsageError(
                    f"ray scheduler {self.name!r} has no resource for {res.gpu_type.name} GPUs",
                    hint=f"add gpu_resources.{res.gpu_type.name} to schedulers.{self.name}",
                )
            out[resource] = res.gpu_count
        affinity = sorted(res.node_affinity)
        if len(affinity) > 1:
            raise UsageError(
                "ray can pin a job to one node only; got node affinity " + ", ".join(affinity)
            )
        if affinity:
            # every Ray node has the resource node:<ip> = 1; a sliver of it pins the job there
            out[f"node:{affinity[0]}"] = 0.001
        return out

    # --- HTTP ---------------------------------------------------------------------------------

    def _http(self):
        if self._client is None:
            import httpx

            headers = {"Accept": "application/json"}
            if self.config.auth_header:
                name, _, value = self.config.auth_header.partition(":")
                headers[name.strip()] = self._secret(value.strip())
            self._client = httpx.Client(
                base_url=self.config.dashboard_url,
                timeout=httpx.Timeout(
                    self.config.request_timeout, connect=self.config.connect_timeout
                ),
                headers=headers,
                # TLS settings matter only for https; for plain http skipping them saves
                # loading the CA bundle (~35 ms, a fifth of a `status` command)
                verify=self.config.dashboard_url.startswith("https:"),
                trust_env=False,  # a proxy from the environment must not sit between us and Ray
                follow_redirects=False,
            )
        return self._client

    def _secret(self, template: str) -> str:
        """``${VAR}`` in auth_header comes from the environment at call time, so tokens stay
        out of the inventory and out of the job store (which keeps each job's config)."""
        import os
        import string

        try:
            return string.Template(template).substitute(os.environ)
        except KeyError as exc:
            raise UsageError(
                f"schedulers.{self.name}.auth_header names ${{{exc.args[0]}}}, which is not set",
                hint=f"export {exc.args[0]}",
            ) from None
        except ValueError:
            raise UsageError(
                f"schedulers.{self.name}.auth_header has a stray '$' (write $$ for a '$')"
            ) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        job_id: str | None = None,
        missing_ok: bool = False,
    ):
        """One HTTP call; transport and HTTP errors become the project's one-line errors.

        Returns the decoded JSON ({} for an empty answer), or None for a 404 with missing_ok.
        """
        import httpx

        url = f"{self.config.dashboard_url}{path}"
        try:
            response = self._http().request(method, path, json=json_body, content=content)
        except httpx.TimeoutException as exc:
            kind = "connect" if isinstance(exc, httpx.ConnectTimeout) else "request"
            limit = (
                self.config.connect_timeout if kind == "connect" else self.config.request_timeout
            )
            raise InfrastructureError(
                f"Ray dashboard at {self.config.dashboard_url} timed out "
                f"({kind}, {limit:g} s): {method} {path}",
                hint=f"is the Ray head up? check schedulers.{self.name}.dashboard_url",
            ) from exc
        except httpx.TransportError as exc:
            raise InfrastructureError(
                f"Ray dashboard at {self.config.dashboard_url} is unreachable: "
                f"{_one_line(str(exc)) or type(exc).__name__}",
                hint=f"is the Ray head up? check schedulers.{self.name}.dashboard_url",
            ) from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 404 and job_id is not None:
            raise NotFoundError(f"no job {job_id} on Ray at {self.config.dashboard_url}")
        if response.status_code >= 400:
            detail = reduce_ray_error(response.text)
            if response.status_code in (401, 403):
                raise InfrastructureError(
                    f"Ray dashboard at {url} refused the request "
                    f"(HTTP {response.status_code}): {detail}",
                    hint=f"check schedulers.{self.name}.auth_header",
                )
            if method == "POST" and path == "/api/jobs/" and "already exists" in detail:
                raise UsageError(
                    f"job {job_id} already exists on Ray at {self.config.dashboard_url}",
                    hint="each submission needs a new correlation id",
                )
            if response.status_code < 500:
                raise UsageError(
                    f"Ray rejected {method} {path} (HTTP {response.status_code}): {detail}"
                )
            raise LaunchError(f"Ray failed {method} {path} (HTTP {response.status_code}): {detail}")
        if not response.content.strip():
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise InfrastructureError(
                f"{url} did not answer JSON (is it a Ray dashboard?): "
                f"{_one_line(response.text)[:120]}"
            ) from exc

    def _job(self, job_id: str) -> dict:
        sid = self.native_id(job_id)
        return self._request("GET", f"/api/jobs/{quote(sid, safe='')}", job_id=job_id)

    # --- the Scheduler interface --------------------------------------------------------------

    def execute(self, plan: SubmissionPlan[RayRequest]) -> Submitted:
        body = plan.request.body
        job_id = self.job_id(body["submission_id"])
        package = (body.get("runtime_env") or {}).get("working_dir")
        if package:
            source = (body.get("metadata") or {}).get(f"{META_PREFIX}source")
            if not source:
                raise UsageError(f"plan for {job_id} ships a package but names no source file")
            self._upload_source(package, source)
        answer = self._request("POST", "/api/jobs/", json_body=body, job_id=job_id)
        return Submitted(answer.get("submission_id") or body["submission_id"])

    def _upload_source(self, uri: str, source: str) -> None:
        """PUT the model source as a Ray package, unless the cluster has it already."""
        if source_package_uri(source) != uri:
            raise UsageError(
                f"model source {source} changed since the job was planned", hint="plan again"
            )
        name = uri.removeprefix("gcs://")
        path = f"/api/packages/gcs/{quote(name, safe='')}"
        if self._request("GET", path, missing_ok=True) is not None:
            return
        self._request("PUT", path, content=source_package_zip(source))

    def status(self, job_id: str) -> JobStatus:
        return self._to_status(self._job(job_id))

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Many jobs with ONE ``GET /api/jobs/``; ids Ray no longer knows are left out."""
        wanted = set(job_ids)
        if not wanted:
            return {}
        out = {}
        for job in self._all_jobs():
            sid = job.get("submission_id")
            if sid and self.job_id(sid) in wanted:
                out[self.job_id(sid)] = self._to_status(job)
        return out

    def list(self, query: JobQuery) -> list[JobStatus]:
        """This tool's jobs on the cluster (metadata says so), newest first: one request."""
        if query.schedulers and self.name not in query.schedulers:
            return []
        mine = [j for j in self._all_jobs() if _is_ours(j) and j.get("submission_id")]
        mine.sort(key=lambda j: j.get("start_time") or 0, reverse=True)
        found = []
        for job in mine:
            status = self._to_status(job)
            if not _matches(query, status, job):
                continue
            found.append(status)
            if query.limit and len(found) >= query.limit:
                break
        return found

    def _all_jobs(self) -> list[dict]:
        jobs = self._request("GET", "/api/jobs/")
        if not isinstance(jobs, list):
            raise InfrastructureError(
                f"Ray at {self.config.dashboard_url} answered /api/jobs/ with "
                f"{type(jobs).__name__}, not a list"
            )
        return jobs

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The job's output without Ray's own lines; with ``follow``, polled until it ends."""
        job = self._job(job_id)
        sid, entrypoint = job["submission_id"], job.get("entrypoint", "")
        if not follow:
            text = strip_ray_header(self._raw_logs(job_id), sid, entrypoint)
            if text:
                yield text
            return
        # Ray's live tail is a websocket; polling the whole log (small for snakegrinder) is
        # enough. Only complete lines are judged, so a half-written Ray line is never shown.
        sent = 0
        delay = 0.2
        while True:
            terminal = RAY_STATES.get(job.get("status", ""), JobState.PENDING).terminal
            raw = self._raw_logs(job_id)
            if not terminal:
                raw = raw[: raw.rfind("\n") + 1]
            text = strip_ray_header(raw, sid, entrypoint)
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            if terminal:
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
            job = self._job(job_id)

    def _raw_logs(self, job_id: str) -> str:
        sid = quote(self.native_id(job_id), safe="")
        answer = self._request("GET", f"/api/jobs/{sid}/logs", job_id=job_id)
        return answer.get("logs", "") if isinstance(answer, dict) else ""

    def cancel(self, job_id: str) -> bool:
        """Stop a job; False when it had already finished. Honest about PENDING jobs."""
        sid = self.native_id(job_id)
        before = self._job(job_id)
        if RAY_STATES.get(before.get("status"), JobState.PENDING).terminal:
            return False
        answer = self._request("POST", f"/api/jobs/{quote(sid, safe='')}/stop", job_id=job_id)
        if not answer.get("stopped", False):
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
                self._request("POST", f"/api/jobs/{quote(sid, safe='')}/stop", job_id=job_id)
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
        if not RAY_STATES.get(job.get("status"), JobState.PENDING).terminal:
            raise UsageError(
                f"job {job_id} is still {job.get('status')}: Ray deletes finished jobs only"
            )
        sid = self.native_id(job_id)
        self._request("DELETE", f"/api/jobs/{quote(sid, safe='')}", job_id=job_id)

    def result(self, job_id: str) -> JobResult:
        job = self._job(job_id)
        status = self._to_status(job)
        sid = job["submission_id"]
        log_text = strip_ray_header(self._raw_logs(job_id), sid, job.get("entrypoint", ""))
        tail = log_text.splitlines()[-LOG_TAIL_LINES:]
        out_dir = (job.get("metadata") or {}).get(f"{META_PREFIX}out_dir") or self.out_dir(sid)
        outputs, mlir = self._outputs(out_dir, status.node_name, status.state.success)
        error = None
        if not status.state.success:
            error = _failure_line(tail) or status.message or status.state.value
        return JobResult(
            job_id=job_id,
            correlation_id=status.correlation_id,
            success=status.state.success,
            outputs=outputs,
            mlir_output=mlir,
            execution_time=status.elapsed,
            error_message=error,
            metrics={},
            exit_code=job.get("driver_exit_code"),
            log_tail="\n".join(tail),
        )

    def _outputs(
        self, out_dir: str, node: str | None, success: bool
    ) -> tuple[tuple[str, ...], str | None]:
        """Files of the job's --out dir and the MLIR text, through the shared output root.

        When the root is not visible here, a successful job reports where its files are,
        ``<node>:<out dir>/`` (fetch them over SSH); a failed one reports none.
        """
        root = self.config.output_root.rstrip("/")
        local_root = (self.config.local_output_root or root).rstrip("/")
        inside = out_dir == root or out_dir.startswith(root + "/")
        local = Path(local_root + out_dir[len(root) :]) if inside else Path(out_dir)
        if not Path(local_root).is_dir():
            return ((f"{node or 'ray-worker'}:{out_dir}/",) if success else ()), None
        if not local.is_dir():
            return (), None
        files = tuple(sorted(str(p) for p in local.rglob("*") if p.is_file()))
        mlir_path = local / "model.mlir"
        mlir = mlir_path.read_text(errors="replace") if mlir_path.is_file() else None
        return files, mlir

    def cluster_info(self) -> ClusterInfo:
        version = self._request("GET", "/api/version")
        nodes_doc = self._request("GET", "/api/v0/nodes")
        try:
            nodes = nodes_doc["data"]["result"]["result"]
        except (KeyError, TypeError) as exc:
            raise InfrastructureError(
                f"unexpected /api/v0/nodes answer from {self.config.dashboard_url}"
            ) from exc
        try:
            usage_by_node = (
                self._request("GET", "/api/cluster_status")["data"]["clusterStatus"][
                    "loadMetricsReport"
                ]["usageByNode"]
                or {}
            )
        except (KeyError, TypeError):
            usage_by_node = {}  # empty for ~5 s after the head starts: totals still hold
        return build_cluster_info(
            self.name, version, nodes, usage_by_node, self.config.gpu_resources
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- mapping ------------------------------------------------------------------------------

    def _to_status(self, job: dict) -> JobStatus:
        sid = job.get("submission_id") or job.get("job_id") or "?"
        state, message = ray_state(job)
        start = _from_ms(job.get("start_time"))
        end = _from_ms(job.get("end_time"))
        now = datetime.now(UTC)
        elapsed = (end or now) - start if start else None
        meta = job.get("metadata") or {}
        node = urlsplit(job.get("driver_agent_http_address") or "").hostname
        extra = {
            "ray_status": job.get("status"),
            "submission_id": sid,
            "error_type": job.get("error_type"),
            "driver_exit_code": job.get("driver_exit_code"),
            "driver_node_id": job.get("driver_node_id"),
            "start_time": _iso(start) if start else None,
            "end_time": _iso(end) if end else None,
        }
        return JobStatus(
            job_id=self.job_id(sid),
            correlation_id=meta.get(f"{META_PREFIX}correlation_id"),
            state=state,
            state_changed_at=end or start or now,
            node_name=node,
            elapsed=elapsed,
            message=message or "",
            scheduler_metadata={k: v for k, v in extra.items() if v is not None},
        )


# --- pure helpers (unit-tested) -----------------------------------------------------------------


def ray_state(job: Mapping[str, Any]) -> tuple[JobState, str]:
    """Our state and a one-line message for one Ray job record."""
    raw = job.get("status") or "PENDING"
    state = RAY_STATES.get(raw)
    if state is None:
        return JobState.PENDING, f"unknown Ray job status {raw!r}"
    message = _one_line(job.get("message") or "")
    if message and message.startswith("Job entrypoint command failed with exit code"):
        message = message.split(", last available logs", 1)[0]
    code = job.get("driver_exit_code")
    if state == JobState.FAILED:
        if code == TIMEOUT_EXIT_CODE:
            return JobState.TIMEOUT, "ran past its timeout and was stopped"
        if job.get("error_type") == START_TIMEOUT_ERROR:
            return JobState.FAILED, (
                "never started: its resources were not free within Ray's start timeout"
            )
    if state == JobState.PENDING and message and "waiting for resources" in message:
        message = (
            "not started yet: setting up, or waiting for resources (CPUs, GPUs, memory, GPU vendor)"
        )
    return state, message


def strip_ray_header(text: str, submission_id: str, entrypoint: str) -> str:
    """The job's own output: without Ray's log lines and its "Running entrypoint" banner.

    The banner repeats the entrypoint, which may itself span lines (quoted newlines), so it is
    removed as one exact string, not line by line.
    """
    banner = f"Running entrypoint for job {submission_id}: {entrypoint}\n"
    if banner in text:
        text = text.replace(banner, "", 1)
    kept = [line for line in text.splitlines(keepends=True) if not _RAY_LOG_LINE.match(line)]
    return "".join(kept)


def reduce_ray_error(text: str) -> str:
    """Ray's text/plain traceback -> its last meaningful line (the exception)."""
    lines = [ln.strip() for ln in (text or "").splitlines()]
    lines = [ln for ln in lines if ln and ln != "."]
    if not lines:
        return "(empty answer)"
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b:?", line):
            return line.rstrip(".").strip() or line
    return lines[-1][:300]


def camel(name: str) -> str:
    """Ray's camelCasing of /api/cluster_status keys: object_store_memory -> objectStoreMemory."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def build_cluster_info(
    name: str,
    version: Mapping[str, Any],
    nodes: list[Mapping[str, Any]],
    usage_by_node: Mapping[str, Mapping[str, list[float]]],
    gpu_resources: Mapping[str, str],
) -> ClusterInfo:
    """Totals from /api/v0/nodes (exact resource names), free figures from cluster_status."""
    vendor_of = {res: vendor for vendor, res in gpu_resources.items()}
    infos = []
    gpus_by_type: dict[str, int] = {}
    free: dict[str, dict[str, float]] = {}
    alive = 0
    for node in nodes:
        totals = node.get("resources_total") or {}
        usage = usage_by_node.get(node.get("node_id", ""), {})
        node_name = node.get("node_name") or node.get("node_ip") or node.get("node_id", "?")
        gpu_count = int(totals.get("GPU", 0))
        vendors = sorted(vendor_of[r] for r in totals if r in vendor_of and totals[r] > 0)
        if len(vendors) == 1:
            gpu_type = GpuType(vendors[0])
        else:  # no vendor resource, or a node declaring both: only "any GPU" is sure
            gpu_type = GpuType.ANY if gpu_count else GpuType.NONE
        state = node.get("state", "UNKNOWN")
        if state == "ALIVE":
            alive += 1
            for vendor in vendors:
                count = int(totals[gpu_resources[vendor]])
                gpus_by_type[vendor] = gpus_by_type.get(vendor, 0) + count
            if gpu_count and not vendors:
                gpus_by_type["ANY"] = gpus_by_type.get("ANY", 0) + gpu_count
            names = ["CPU", "GPU", *sorted(r for r in totals if r in vendor_of)]
            free[node_name] = {r: _available(r, totals, usage) for r in names if r in totals}
            if "memory" in totals:
                free[node_name]["memory_mb"] = _available("memory", totals, usage) // 2**20
        infos.append(
            NodeInfo(
                name=node_name,
                status=state,
                gpu_type=gpu_type,
                gpu_count=gpu_count,
                memory_mb=int(float(totals.get("memory", 0)) // (1024 * 1024)),
                cpu_cores=int(totals.get("CPU", 0)),
            )
        )
    return ClusterInfo(
        scheduler_name=name,
        scheduler_version=f"ray {version.get('ray_version', '?')}",
        total_nodes=len(nodes),
        available_nodes=alive,
        gpus_by_type=gpus_by_type,
        nodes=tuple(infos),
        details={"free": free, "session": version.get("session_name")},
    )


def _available(resource: str, totals: Mapping[str, float], usage: Mapping[str, Any]) -> float:
    used_total = usage.get(resource) or usage.get(camel(resource))
    if used_total:
        return float(used_total[1]) - float(used_total[0])
    return float(totals.get(resource, 0))


def source_package_uri(source: str) -> str:
    """The Ray package URI of a model source: named by its name and content."""
    data = _read_source(source)
    digest = hashlib.sha256(b"warpforge-source\0" + Path(source).name.encode() + b"\0" + data)
    return f"gcs://_ray_pkg_{digest.hexdigest()[:32]}.zip"


def source_package_zip(source: str) -> bytes:
    """A zip holding the source file at its top level (the job's working dir), reproducible."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entry = zipfile.ZipInfo(Path(source).name, date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr = 0o644 << 16
        archive.writestr(entry, _read_source(source), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _read_source(source: str) -> bytes:
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(
            f"model source {source} cannot be read: {exc.strerror or exc}",
            hint="give --source a readable file",
        ) from None
    if len(data) > MAX_SOURCE_BYTES:
        raise UsageError(
            f"model source {source} is {len(data) // 2**20} MiB; at most "
            f"{MAX_SOURCE_BYTES // 2**20} MiB ship with a job",
            hint="keep weights out of the source, or set upload_source: false and share it",
        )
    return data


def _is_ours(job: Mapping[str, Any]) -> bool:
    meta = job.get("metadata") or {}
    return f"{META_PREFIX}correlation_id" in meta


def _matches(query: JobQuery, status: JobStatus, job: Mapping[str, Any]) -> bool:
    meta = job.get("metadata") or {}
    if query.states and status.state not in query.states:
        return False
    if query.submitted_by and meta.get(f"{META_PREFIX}submitted_by") != query.submitted_by:
        return False
    submitted = _parse_iso(meta.get(f"{META_PREFIX}submitted_at")) or _from_ms(
        job.get("start_time")
    )
    after, before = query.submitted_after, query.submitted_before
    if (after or before) and submitted is None:
        return False
    return not ((after and submitted < after) or (before and submitted > before))


def _failure_line(tail: tuple[str, ...]) -> str | None:
    for line in reversed(tail):
        if line.startswith("FAILED:") or "Error" in line.split(":", 1)[0]:
            return line.strip()
    return None


def _one_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _from_ms(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(float(value) / 1000.0, tz=UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
