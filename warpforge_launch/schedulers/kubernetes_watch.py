"""What the cluster says about an instance's jobs: its client, one pod list (plus one Job
list when a pod cannot tell), and those answers as JobStatus fields.

Shared by the scheduler (kubernetes.py) and the `status` path that answers without the job
model (quickstatus.py): both ask the same questions with the same credentials and read the
answers the same way. ``config`` has attribute access: a KubernetesConfig, or a namespace
of the config a job was stored with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime

from warpforge_launch.errors import UsageError
from warpforge_launch.schedulers import kubernetes_state as ks
from warpforge_launch.states import JobState

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: `status` goes without importing typing
    from typing import Any

SELECT_BY_ID_UP_TO = 20  # a status of a few jobs selects them by id, not the whole instance
Lister = Callable[[str, str], list[dict]]  # (plural, label selector) -> items


def client_for(instance: str, config: Any, home: str | os.PathLike, one_shot: bool = False):
    """The instance's KubeClient: the kubeconfig (resolved once, cached) or the pod's
    service account."""
    from warpforge_launch.schedulers import kubernetes_auth as auth
    from warpforge_launch.schedulers.kubernetes_client import KubeClient

    try:
        if config.in_cluster:
            creds = auth.in_cluster()
        else:
            creds = auth.from_kubeconfig(auth.kubeconfig_path(config.kubeconfig),
                                         config.context, cache_dir(home))
    except UsageError as exc:
        raise UsageError(f"schedulers.{instance}: no usable Kubernetes credentials: {exc}",
                         hint=exc.hint or "check kubeconfig and context (or in_cluster)"
                         ) from None
    return KubeClient(creds, connect_timeout=config.connect_timeout,
                      request_timeout=config.request_timeout, one_shot=one_shot,
                      rights_hint=f"the credentials of schedulers.{instance} lack the rights "
                      f"(namespace {config.namespace!r}); see docs/kubernetes.md")


def cache_dir(home: str | os.PathLike) -> str | None:
    """``$WARPFORGE_HOME/cache/kubernetes`` (0700): resolved kubeconfigs, the compiled
    template, the manifest shapes the schema passed; None when it cannot be made. A str
    (os.path): `status` goes without importing pathlib."""
    path = os.path.join(home, "cache", "kubernetes")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
        if st.st_mode & 0o077 or st.st_uid != os.getuid():
            return None
    except OSError:
        return None
    return path


def api_path(namespace: str, plural: str, name: str | None = None) -> str:
    group = "/apis/batch/v1" if plural == "jobs" else "/api/v1"
    base = f"{group}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


def lister(client, namespace: str, cached: bool = False) -> Lister:
    """Label-selected lists; ``cached`` ones are served from the apiserver's watch cache
    (``resourceVersion=0``, as informers read): milliseconds behind etcd and half the cost
    of a quorum read. Status refreshes read cached (a job too new for the cache reads as
    not reported yet, never as a wrong state); finding a submit by correlation id does not
    (it must see a Job created a moment ago)."""
    query = {"resourceVersion": "0"} if cached else {}

    def items(plural: str, selector: str) -> list[dict]:
        answer = client.call("GET", api_path(namespace, plural), f"list {plural}",
                             query={"labelSelector": selector, **query})
        return answer.get("items") or []

    return items


def selector(instance: str, job_ids: Sequence[str] = ()) -> str:
    """The instance's objects; a few wanted jobs are selected by id on the server."""
    found = f"{ks.LABEL_INSTANCE}={instance}"
    if 0 < len(job_ids) <= SELECT_BY_ID_UP_TO:
        found += f",{ks.LABEL_JOB_ID} in ({','.join(sorted(set(job_ids)))})"
    return found


def observe(items: Lister, instance: str, job_ids: Sequence[str],
            cancelled: Collection[str] = ()) -> dict[str, tuple[ks.Observed, dict | None]]:
    """Observations of the wanted jobs: one pod list, plus one Job list when a pod cannot
    tell (no pod yet, or a pod that ended or is being removed). ``cancelled``: jobs this
    process deleted, whose pods may still be going."""
    wanted = set(job_ids)
    by_job: dict[str, list[dict]] = {}
    for pod in items("pods", selector(instance, job_ids)):
        jid = ((pod.get("metadata") or {}).get("labels") or {}).get(ks.LABEL_JOB_ID)
        if jid in wanted:
            by_job.setdefault(jid, []).append(pod)
    out: dict[str, tuple[ks.Observed, dict | None]] = {}
    undecided = set()
    for jid in wanted:
        pod = ks.newest_pod(by_job.get(jid, ()))
        phase = ((pod or {}).get("status") or {}).get("phase")
        if pod and phase in ("Pending", "Running") and not pod["metadata"].get(
                "deletionTimestamp") and jid not in cancelled:
            out[jid] = (ks.job_state({}, [pod]), pod)  # the pod carries the labels too
        else:
            undecided.add(jid)
    if undecided:
        for job in items("jobs", selector(instance, sorted(undecided))):
            jid = (job["metadata"].get("labels") or {}).get(ks.LABEL_JOB_ID)
            if jid in undecided:
                out[jid] = (ks.job_state(job, by_job.get(jid, ())), job)
    for jid in undecided - set(out):
        if jid in cancelled:
            out[jid] = (ks.Observed(JobState.CANCELLED, "cancelled: the Job was deleted "
                                    "with its pods"), None)
    return out


def status_fields(namespace: str, native: str, seen: ks.Observed, obj: dict | None
                  ) -> dict[str, Any]:
    """JobStatus fields (no job id); ``obj``: the Job, or the pod that decided the state
    (both carry our labels)."""
    now = datetime.now(UTC)
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    extra = {"namespace": namespace, "job": native, "pod": seen.pod,
             "exit_code": seen.exit_code}
    return {"correlation_id": labels.get(ks.LABEL_CORRELATION_ID), "state": seen.state,
            "state_changed_at": seen.ended or seen.started or now, "node_name": seen.node,
            "elapsed": ((seen.ended or now) - seen.started) if seen.started else None,
            "message": seen.message,
            "scheduler_metadata": {k: v for k, v in extra.items() if v is not None}}


_LIVE_KEYS = ("in_cluster", "kubeconfig", "context", "namespace", "connect_timeout",
              "request_timeout")


def live_statuses(instance: str, config: dict[str, Any], home: str,
                  natives: list[str]) -> dict[str, dict[str, Any]] | None:
    """JobStatus fields by native id (the Job's name) for the jobs the cluster has, without
    the job model (the `status` path). None when the stored config does not say enough."""
    from types import SimpleNamespace

    if any(k not in config for k in _LIVE_KEYS):
        return None
    cfg = SimpleNamespace(**{k: config[k] for k in _LIVE_KEYS})
    client = client_for(instance, cfg, home, one_shot=True)
    try:
        ids = {f"{instance}-{n}": n for n in natives}
        seen = observe(lister(client, cfg.namespace, cached=True), instance, list(ids))
        return {ids[jid]: status_fields(cfg.namespace, ids[jid], *found)
                for jid, found in seen.items()}
    finally:
        client.close()
