"""Ray's answers in this project's terms: job states, messages, logs, errors, cluster figures.

Pure functions over the JSON the dashboard returns, so every mapping is unit-tested without a
cluster. What Ray does that shapes them (checked against Ray 2.60):
- FAILED covers a payload that failed, one the ``timeout`` wrapper stopped (exit 124) and one
  that never started (``JOB_SUPERVISOR_ACTOR_START_TIMEOUT``).
- Errors come back as text/plain Python tracebacks; the exception line is what a user needs.
- ``/api/cluster_status`` camelCases its keys, resource names included.
- Submission ids are whatever a client chose: only safe ones become job ids and URL segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from warpforge_launch.httpget import server_address
from warpforge_launch.states import JobState

TYPE_CHECKING = False
if TYPE_CHECKING:  # the job model is imported where it is built: `status` goes without it
    from typing import Any

    from warpforge_launch.jobs import ClusterInfo, JobQuery, JobStatus

RAY_STATES = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "STOPPED": JobState.CANCELLED,
}
TIMEOUT_EXIT_CODE = 124  # coreutils `timeout` when the job ran past its limit
START_TIMEOUT_ERROR = "JOB_SUPERVISOR_ACTOR_START_TIMEOUT"
META_PREFIX = "warpforge_"
CORRELATION_KEY = f"{META_PREFIX}correlation_id"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# one path segment, never "." or "..": what may follow /api/jobs/ and name a directory
_SUBMISSION_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
_RAY_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+:\d+ -- "
)


def valid_submission_id(sid: object) -> bool:
    return isinstance(sid, str) and _SUBMISSION_ID.fullmatch(sid) is not None


def is_terminal(ray_status: object) -> bool:
    return RAY_STATES.get(str(ray_status), JobState.PENDING).terminal


def ray_state(job: Mapping[str, Any]) -> tuple[JobState, str]:
    """Our state and a one-line message for one Ray job record."""
    raw = job.get("status") or "PENDING"
    state = RAY_STATES.get(raw)
    if state is None:
        return JobState.PENDING, f"unknown Ray job status {one_line(str(raw))!r}"
    message = one_line(str(job.get("message") or ""))
    if message.startswith("Job entrypoint command failed with exit code"):
        message = message.split(", last available logs", 1)[0]
    if state == JobState.FAILED:
        if job.get("driver_exit_code") == TIMEOUT_EXIT_CODE:
            return JobState.TIMEOUT, "ran past its timeout and was stopped"
        if job.get("error_type") == START_TIMEOUT_ERROR:
            return JobState.FAILED, (
                "never started: its resources were not free within Ray's start timeout"
            )
    if state == JobState.PENDING and "waiting for resources" in message:
        message = (
            "not started yet: setting up, or waiting for resources (CPUs, GPUs, memory, GPU vendor)"
        )
    return state, message


def to_status(job: Mapping[str, Any], job_id: str) -> JobStatus:
    """One Ray job record as a JobStatus under our job id."""
    from warpforge_launch.jobs import JobStatus

    return JobStatus(job_id=job_id, **status_fields(job))


def status_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """One Ray job record as JobStatus fields (no job id), for the scheduler and for the
    job-model-free `status` path."""
    state, message = ray_state(job)
    start = from_ms(job.get("start_time"))
    end = from_ms(job.get("end_time"))
    now = datetime.now(UTC)
    meta = job.get("metadata") or {}
    extra = {
        "ray_status": job.get("status"),
        "submission_id": job.get("submission_id"),
        "error_type": job.get("error_type"),
        "driver_exit_code": job.get("driver_exit_code"),
        "driver_node_id": job.get("driver_node_id"),
        "start_time": iso(start) if start else None,
        "end_time": iso(end) if end else None,
    }
    return {
        "correlation_id": meta.get(CORRELATION_KEY) if isinstance(meta, Mapping) else None,
        "state": state,
        "state_changed_at": end or start or now,
        "node_name": _host(job.get("driver_agent_http_address")),
        "elapsed": (end or now) - start if start else None,
        "message": message,
        "scheduler_metadata": {k: v for k, v in extra.items() if v is not None},
    }


def _host(address: Any) -> str | None:
    """The host of the job's driver agent (``http://127.0.0.1:52365``), as urlsplit reads it."""
    text = str(address or "")
    try:
        return server_address(text)[1]
    except ValueError:  # a port out of range: the host still names the node
        from urllib.parse import urlsplit

        return urlsplit(text).hostname


def submissions(jobs: Iterable[Mapping[str, Any]]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """(submission id, record) for each job whose id is safe to use; the others are skipped."""
    for job in jobs:
        sid = job.get("submission_id") if isinstance(job, Mapping) else None
        if valid_submission_id(sid):
            yield sid, job


def by_correlation(jobs: Iterable[Mapping[str, Any]], wanted: Iterable[str]) -> dict[str, str]:
    """Submission ids of the jobs whose metadata carries one of the wanted correlation ids."""
    want = set(wanted)
    found = {}
    for sid, job in submissions(jobs):
        meta = job.get("metadata") or {}
        cid = meta.get(CORRELATION_KEY) if isinstance(meta, Mapping) else None
        if cid in want:
            found[cid] = sid
    return found


def is_ours(job: Mapping[str, Any]) -> bool:
    meta = job.get("metadata") or {}
    return isinstance(meta, Mapping) and CORRELATION_KEY in meta


def matches(query: JobQuery, status: JobStatus, job: Mapping[str, Any]) -> bool:
    meta = job.get("metadata") or {}
    if query.states and status.state not in query.states:
        return False
    if query.submitted_by and meta.get(f"{META_PREFIX}submitted_by") != query.submitted_by:
        return False
    submitted = parse_iso(meta.get(f"{META_PREFIX}submitted_at")) or from_ms(
        job.get("start_time")
    )
    after, before = query.submitted_after, query.submitted_before
    if (after or before) and submitted is None:
        return False
    return not ((after and submitted < after) or (before and submitted > before))


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


def is_duplicate(detail: str) -> bool:
    """Ray's HTTP 500 for a submission id it already has."""
    return "already exists" in detail and "submission_id" in detail


def failure_line(tail: Iterable[str]) -> str | None:
    for line in reversed(list(tail)):
        if line.startswith("FAILED:") or "Error" in line.split(":", 1)[0]:
            return line.strip()
    return None


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
    from warpforge_launch.jobs import ClusterInfo, GpuType, NodeInfo

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


def one_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def from_ms(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(float(value) / 1000.0, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def parse_iso(text: Any) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
