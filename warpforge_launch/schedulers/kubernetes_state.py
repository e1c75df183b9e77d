"""Kubernetes objects (as the API's JSON dicts) -> the job model: states, messages, capacity.

Pure functions, unit-tested on recorded objects. A terminal state comes only from the Job's
own conditions (or from our own cancel): a pod can look Failed a moment before the Job
controller decides it was a deadline (TIMEOUT), and a terminal state is never revisited.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from warpforge_launch.states import JobState

TYPE_CHECKING = False
if TYPE_CHECKING:  # built where needed: `status` goes without the job model
    from typing import Any

    from warpforge_launch.jobs import ClusterInfo

ANNOTATION_CANCELLED = "warpforge.io/cancelled-at"
LABEL_JOB_ID = "warpforge.io/job-id"
LABEL_CORRELATION_ID = "warpforge.io/correlation-id"
LABEL_INSTANCE = "warpforge.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "warpforge-launch"
ANNOTATION_PREFIX = "warpforge.io/"
_IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                  "ImageInspectError", "RegistryUnavailable")
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SCALE = {"": 1, "m": 1e-3, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


# What one Job and its newest pod say: state (a JobState), message, exit_code, node,
# started/ended (datetimes) and the pod's name. A named tuple: `status` defines no dataclass.
Observed = namedtuple("Observed", ("state", "message", "exit_code", "node", "started", "ended",
                                   "pod"), defaults=(None, None, None, None, None))


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def newest_pod(pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    pods = list(pods)
    if not pods:
        return None
    return max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _container(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or ()
    return statuses[0] if statuses else {}


def _one_line(text: str | None, limit: int = 300) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else ""


def terminated(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (_container(pod).get("state") or {}).get("terminated") or {}


def job_state(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> Observed:
    """Our state of one Job, with a one-line message saying why."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    pod = newest_pod(pods)
    started = parse_time(status.get("startTime")) or parse_time(
        ((pod or {}).get("status") or {}).get("startTime"))
    node = ((pod or {}).get("spec") or {}).get("nodeName")
    pod_name = ((pod or {}).get("metadata") or {}).get("name")
    end = terminated(pod)
    code = end.get("exitCode")

    def seen(state, message, ended=None, exit_code=None):
        return Observed(state, message, exit_code, node, started, ended, pod_name)

    if (meta.get("annotations") or {}).get(ANNOTATION_CANCELLED) or meta.get("deletionTimestamp"):
        when = parse_time((meta.get("annotations") or {}).get(ANNOTATION_CANCELLED))
        return seen(JobState.CANCELLED, "cancelled: the Job is being deleted with its pods",
                    when or parse_time(meta.get("deletionTimestamp")))
    done = _condition(job, "Complete")
    if done:
        return seen(JobState.COMPLETED, "", parse_time(status.get("completionTime"))
                    or parse_time(done.get("lastTransitionTime")), 0 if code is None else code)
    failed = _condition(job, "Failed")
    if failed:
        ended = parse_time(failed.get("lastTransitionTime"))
        reason = failed.get("reason") or "Failed"
        if reason == "DeadlineExceeded":
            return seen(JobState.TIMEOUT, "ran past its timeout (activeDeadlineSeconds) and "
                        "was stopped", ended, code)
        parts = [reason]
        if code is not None:
            parts.append(f"container exited with code {code}"
                         + (f" ({end['reason']})" if end.get("reason") else ""))
        last = _one_line(end.get("message"))
        if last:
            parts.append(last)
        return seen(JobState.FAILED, ": ".join(parts), ended, code)
    if pod is None:
        return seen(JobState.PENDING, "waiting for its pod to be created")
    return _pod_progress(pod, seen)


def _pod_progress(pod: Mapping[str, Any], seen) -> Observed:
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return seen(JobState.RUNNING, "its pod is being stopped")
    if phase == "Pending":
        for cond in status.get("conditions") or ():
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = cond.get("message") or cond.get("reason") or "no node fits"
                return seen(JobState.PENDING, f"unschedulable: {why}")
        waiting = (_container(pod).get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _IMAGE_REASONS:
            return seen(JobState.PENDING, f"image pull: {reason}: "
                        f"{_one_line(waiting.get('message')) or 'the image is not available'}")
        if reason:
            return seen(JobState.PENDING, f"{reason}: {_one_line(waiting.get('message'))}"
                        .rstrip(": "))
        return seen(JobState.PENDING, "scheduled, starting" if
                    (pod.get("spec") or {}).get("nodeName") else "waiting to be scheduled")
    if phase == "Running":
        return seen(JobState.RUNNING, "")
    # the pod ended but the Job controller has not yet said how: not final for us
    return seen(JobState.RUNNING, f"its pod {phase.lower()}, the Job is finishing")


def quantity(text: Any) -> float:
    """A Kubernetes quantity ("2", "1500m", "16318644Ki", "1G") as a number."""
    match = _QUANTITY.match(str(text or "0").strip())
    if not match or match.group(2) not in _SCALE:
        return 0.0
    return float(match.group(1)) * _SCALE[match.group(2)]


def node_ready(node: Mapping[str, Any]) -> bool:
    return _condition(node, "Ready") is not None and not (node.get("spec") or {}).get(
        "unschedulable")


def gpu_capacity(nodes: Iterable[Mapping[str, Any]], resource: str,
                 selector: Mapping[str, str]) -> dict[str, int]:
    """Allocatable count of ``resource`` per node whose labels match ``selector``."""
    out = {}
    for node in nodes:
        labels = (node.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        out[(node.get("metadata") or {}).get("name", "?")] = int(
            quantity(allocatable.get(resource, 0)))
    return out


def build_cluster_info(name: str, version: str, nodes: list[Mapping[str, Any]],
                       gpu_resources: Mapping[str, str]) -> ClusterInfo:
    from warpforge_launch.jobs import ClusterInfo, GpuType, NodeInfo

    infos, gpus_by_type, free = [], {}, {}
    ready = 0
    for node in nodes:
        meta, status = node.get("metadata") or {}, node.get("status") or {}
        allocatable = status.get("allocatable") or {}
        counts = {vendor: int(quantity(allocatable.get(res, 0)))
                  for vendor, res in gpu_resources.items()}
        vendors = [v for v, n in counts.items() if n > 0]
        gpu_type = GpuType(vendors[0]) if len(vendors) == 1 else (
            GpuType.ANY if vendors else GpuType.NONE)
        is_ready = node_ready(node)
        if is_ready:
            ready += 1
            for vendor, count in counts.items():
                if count:
                    gpus_by_type[vendor] = gpus_by_type.get(vendor, 0) + count
        node_name = meta.get("name", "?")
        free[node_name] = {gpu_resources[v]: n for v, n in counts.items() if n}
        infos.append(NodeInfo(
            name=node_name, status="Ready" if is_ready else "NotReady", gpu_type=gpu_type,
            gpu_count=sum(counts.values()),
            memory_mb=int(quantity(allocatable.get("memory")) // 2**20),
            cpu_cores=int(quantity(allocatable.get("cpu")))))
    return ClusterInfo(scheduler_name=name, scheduler_version=f"kubernetes {version}",
                       total_nodes=len(nodes), available_nodes=ready, gpus_by_type=gpus_by_type,
                       nodes=tuple(infos), details={"gpus_by_node": free})
