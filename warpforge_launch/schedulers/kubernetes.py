"""Kubernetes backend: one batch/v1 Job per snakegrinder run, over the API's plain JSON.

Requests go through ``kubernetes_client`` (one kept-alive HTTP/1.1 TLS connection of the
standard library's ``ssl`` and ``socket``) with credentials from ``kubernetes_auth`` (a
kubeconfig resolved once and cached, or the pod's service account). No Kubernetes client
library: lightkube and its httpx/httpcore/trio stack cost about 0.3 s to import - several
times kubectl's whole ``get job`` - and every call here is one JSON request on a known path;
objects stay dicts.

A submit sends two requests: the Job, then a Secret holding the model source (and the
``--secret-env`` values, read from this process at that moment) that names the Job as its
owner, so both go together. The pod mounts the Secret, so it cannot start before the Secret
exists. The Job runs the payload argv as its container command (no shell), with requests =
limits, the vendor's node selector and GPU resource, a deadline from ``--timeout``,
``backoffLimit: 0`` and a non-root security context.

Refreshing many jobs lists this instance's pods with ONE label-selector call; the Jobs are
listed (one more call) only when a pod alone cannot tell (no pod yet, or a pod that ended,
whose Job conditions say COMPLETED, FAILED or TIMEOUT). Cancel records CANCELLED in the job
store and on the Job before deleting it with propagationPolicy=Foreground, so its pods go
first.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from warpforge_launch import secrets
from warpforge_launch.errors import InfrastructureError, LaunchError, NotFoundError, UsageError
from warpforge_launch.jobs import (
    ClusterInfo,
    GpuType,
    JobQuery,
    JobResult,
    JobState,
    JobStatus,
    JobSubmission,
    SchedulerCapabilities,
)
from warpforge_launch.schedulers import kubernetes_state as ks
from warpforge_launch.schedulers import kubernetes_watch as kw
from warpforge_launch.schedulers.base import Scheduler, SubmissionPlan, Submitted
from warpforge_launch.schedulers.kubernetes_config import VENDORS, KubernetesConfig

if TYPE_CHECKING:
    from warpforge_launch.schedulers import kubernetes_manifest as km
    from warpforge_launch.schedulers.kubernetes_client import KubeClient

LOG_TAIL_LINES = 40
CANCEL_WAIT_S = 90.0  # a stopped pod's removal can lag its containers by half a minute or more


class KubernetesScheduler(Scheduler):
    """Submit, watch, cancel snakegrinder Jobs in one namespace of one cluster."""

    type_name: ClassVar[str] = "kubernetes"
    Config: ClassVar[type] = KubernetesConfig

    def __init__(self, name: str, config: KubernetesConfig, *, home: Path) -> None:
        super().__init__(name, config, home=home)
        self.config = config
        self._client: KubeClient | None = None
        self._cancelled: set[str] = set()
        self.requests: list[str] = []  # "METHOD path" of every HTTP request sent (tests)

    # --- pure part ----------------------------------------------------------------------------

    def capabilities(self) -> SchedulerCapabilities:
        vendors = [GpuType[v] for v in VENDORS if v in self.config.gpu_resources]
        return SchedulerCapabilities(
            gpu_scheduling=True, supported_gpu_types=frozenset([GpuType.NONE, *vendors]),
            queue_priority=bool(self.config.priority_classes), node_affinity=True)

    def plan(self, submission: JobSubmission) -> SubmissionPlan[km.K8sRequest]:
        """The Job manifest, rendered, parsed and schema-checked; reads the model source."""
        from warpforge_launch.payload import snakegrinder_argv
        from warpforge_launch.schedulers import kubernetes_manifest as km

        c, d = self.config, submission.definition
        res = d.resources
        if res.queue:
            raise UsageError(f"Kubernetes has no queues: --queue {res.queue!r} cannot be "
                             "honoured", hint="drop --queue (use --priority with "
                             f"schedulers.{self.name}.priority_classes)")
        name = f"warpforge-{submission.short_id}"
        job_id = self.job_id(name)
        source_file = km.check_source_file_name(Path(d.source).name)
        _, digest = km.read_source(d.source)
        out_dir = f"{c.output_mount_path.rstrip('/')}/{name}"
        in_pod = dataclasses.replace(d, source=f"{km.SOURCE_DIR}/{source_file}")
        argv = snakegrinder_argv(c.snakegrinder, in_pod, out_dir)
        vendor = res.gpu_type.value if res.gpu_type in (GpuType.NVIDIA, GpuType.AMD) else None
        resources = {"cpu": str(res.cpu_cores), "memory": f"{res.memory_mb}Mi"}
        if vendor:
            resources[c.gpu_resources[vendor]] = str(res.gpu_count)
        env = dict(d.environment)
        env.update(WARPFORGE_JOB_ID=job_id, WARPFORGE_CORRELATION_ID=submission.correlation_id,
                   WARPFORGE_OUT_DIR=out_dir)
        labels = {ks.LABEL_MANAGED_BY: ks.MANAGED_BY, ks.LABEL_INSTANCE: self.name,
                  ks.LABEL_JOB_ID: job_id, ks.LABEL_CORRELATION_ID: submission.correlation_id}
        annotations = {f"{ks.ANNOTATION_PREFIX}{k}": v for k, v in {
            "name": d.name, "submitted-by": submission.submitted_by,
            "submitted-at": submission.submitted_at.astimezone(UTC).isoformat(),
            "source": d.source, "out-dir": out_dir}.items()}
        if not (c.output_claim or c.output_host_path):
            raise UsageError(f"schedulers.{self.name} has no output volume",
                             hint="set output_claim (a PVC) or output_host_path, and "
                             "local_output_root where this machine sees it")
        spec = km.JobSpec(
            name=name, namespace=c.namespace, labels=labels, annotations=annotations,
            image=c.image(vendor or "CPU"), pull_policy=c.image_pull_policy,
            command=tuple(argv), env=tuple(sorted(env.items())),
            secret_env=tuple(d.secret_env), resources=resources,
            deadline_seconds=max(1, math.ceil(d.timeout.total_seconds())),
            source_file=source_file, output_mount=c.output_mount_path,
            output_claim=c.output_claim, output_host_path=c.output_host_path,
            ttl_seconds=c.ttl_seconds_after_finished, service_account=c.service_account,
            automount_token=c.service_account is not None,
            priority_class=self._priority_class(res.priority),
            node_selector=dict(c.node_selectors.get(vendor, {})) if vendor else {},
            nodes=tuple(sorted(res.node_affinity)), tolerations=tuple(c.tolerations),
            pull_secrets=tuple(c.image_pull_secrets), run_as_user=c.run_as_user,
            run_as_group=c.run_as_group)
        cache = self._cache_dir()
        job = km.render(spec, cache)
        km.validate_offline(job, c.schema_version, cache)
        request = km.K8sRequest(job=job, source_path=d.source, source_sha256=digest,
                                secret_env=tuple(d.secret_env))
        return SubmissionPlan(instance=self.name, native_id=name, kind="k8s-job",
                              argv=tuple(argv), request=request,
                              correlation_id=submission.correlation_id)

    def _cache_dir(self) -> Path | None:
        cache = kw.cache_dir(self.home)
        return Path(cache) if cache is not None else None

    def _priority_class(self, priority: int) -> str | None:
        best, chosen = -1, None
        for threshold, name in self.config.priority_classes.items():
            if best < int(threshold) <= priority:
                best, chosen = int(threshold), name
        return chosen

    # --- the client ---------------------------------------------------------------------------

    def _api(self) -> KubeClient:
        if self._client is None:
            self._client = kw.client_for(self.name, self.config, self.home)
            self._client.observers.append(self.requests.append)
        return self._client

    def _path(self, plural: str, name: str | None = None) -> str:
        return kw.api_path(self.config.namespace, plural, name)

    def _list(self, kind: str, selector: str) -> list[dict]:
        return kw.lister(self._api(), self.config.namespace)(kind, selector)

    def _mine(self, job_ids: Sequence[str] = ()) -> str:
        """This instance's objects; a few wanted jobs are selected by id on the server."""
        return kw.selector(self.name, job_ids)

    # --- submit -------------------------------------------------------------------------------

    def execute(self, plan: SubmissionPlan[km.K8sRequest]) -> Submitted:
        """The Job, then its Secret owned by it (two requests, no patch). The pod cannot start
        before the Secret exists: its source volume waits for it (and so would a
        ``secretKeyRef``), so the order costs nothing but saves the owner patch."""
        from warpforge_launch.schedulers import kubernetes_manifest as km

        request = plan.request
        source, digest = km.read_source(request.source_path)
        if digest != request.source_sha256:
            raise UsageError(f"model source {request.source_path} changed since the job was "
                             "planned", hint="plan again")
        values = secrets.resolve(request.secret_env)
        self._check_gpus(request.job)
        secret = request.secret_manifest(masked=False, values=values, source=source)
        name, api = request.name, self._api()
        if self.config.server_dry_run:
            for plural, doc in (("jobs", request.job), ("secrets", secret)):
                api.call("POST", self._path(plural), f"a dry-run create of the {plural[:-1]}",
                         query={"dryRun": "All"}, body=doc)
        try:
            created = api.call("POST", self._path("jobs"), f"creating Job {name}",
                               body=request.job)
        except InfrastructureError as exc:
            if exc.not_sent:  # no connection, or refused for rights: no Job to look for
                raise
            created = self._job_if_ours(name, plan.correlation_id)
            if created is None:
                raise
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name,
                 "uid": created["metadata"]["uid"], "blockOwnerDeletion": True}
        secret["metadata"]["ownerReferences"] = [owner]
        try:
            api.call("POST", self._path("secrets"), f"creating Secret {name}", body=secret)
        except BaseException as exc:
            # its pod would wait for the Secret forever; a Job left behind is not "not sent"
            if not self._forget_job(name) and getattr(exc, "not_sent", False):
                exc.not_sent = False
            raise
        return Submitted(name)

    def _job_if_ours(self, name: str, correlation_id: str) -> dict | None:
        """After a create whose answer was lost: the Job, if the apiserver made it for us (then
        the submit goes on to its Secret instead of leaving a pod waiting for one)."""
        try:
            job = self._api().call("GET", self._path("jobs", name), f"get Job {name}",
                                   missing="absent")
        except LaunchError:
            return None
        labels = (job.get("metadata") or {}).get("labels") or {}
        return job if labels.get(ks.LABEL_CORRELATION_ID) == correlation_id else None

    def _forget_job(self, name: str) -> bool:
        """Whether the Job made without its Secret is gone."""
        try:
            self._api().call("DELETE", self._path("jobs", name), "deleting a Job without its "
                             "Secret", query={"propagationPolicy": "Background"},
                             missing="gone")
        except NotFoundError:
            return True
        except LaunchError:
            return False
        return True

    def _check_gpus(self, job: dict) -> None:
        """A GPU count no node offers is refused now, not left Pending forever."""
        if self.config.allow_pending:
            return
        spec = job["spec"]["template"]["spec"]
        limits = spec["containers"][0]["resources"]["limits"]
        wanted = [(r, int(limits[r])) for r in self.config.gpu_resources.values() if r in limits]
        if not wanted:
            return
        nodes = self._nodes()
        for resource, count in wanted:
            found = ks.gpu_capacity(nodes, resource, spec.get("nodeSelector") or {})
            if max(found.values(), default=0) < count:
                offered = ", ".join(f"{n} {v}" for n, v in sorted(found.items())) or \
                    "no node matches the node selector " + str(spec.get("nodeSelector") or {})
                raise UsageError(
                    f"no node can ever give this job {count} {resource}: allocatable "
                    f"{resource} per node: {offered}",
                    hint="ask for fewer GPUs, or submit with --allow-pending to let it wait")

    def _nodes(self) -> list[dict]:
        return self._api().call("GET", "/api/v1/nodes", "list nodes").get("items") or []

    def reconcile(self, correlation_ids: Sequence[str]) -> dict[str, str]:
        if not correlation_ids:
            return {}
        wanted = ",".join(sorted(set(correlation_ids)))
        jobs = self._list("jobs", f"{self._mine()},{ks.LABEL_CORRELATION_ID} in ({wanted})")
        return {j["metadata"]["labels"][ks.LABEL_CORRELATION_ID]: j["metadata"]["name"]
                for j in jobs}

    # --- watch --------------------------------------------------------------------------------

    def _observe(self, job_ids: Sequence[str]) -> dict[str, tuple[ks.Observed, dict | None]]:
        return kw.observe(kw.lister(self._api(), self.config.namespace, cached=True),
                          self.name, job_ids, self._cancelled)

    def _status(self, job_id: str, seen: ks.Observed, obj: dict | None) -> JobStatus:
        return JobStatus(job_id=job_id, **kw.status_fields(
            self.config.namespace, self.native_id(job_id), seen, obj))

    def status(self, job_id: str) -> JobStatus:
        self.native_id(job_id)
        found = self._observe([job_id])
        if job_id not in found:
            raise NotFoundError(
                f"no Job for {job_id} in namespace {self.config.namespace!r}: it was deleted, "
                "or removed ttlSecondsAfterFinished after it ended")
        return self._status(job_id, *found[job_id])

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Many jobs in one or two list calls; ids the cluster no longer has are left out."""
        if not job_ids:
            return {}
        return {jid: self._status(jid, *seen) for jid, seen in self._observe(job_ids).items()}

    def list(self, query: JobQuery) -> list[JobStatus]:
        if query.schedulers and self.name not in query.schedulers:
            return []
        jobs = self._list("jobs", self._mine())
        pods: dict[str, list[dict]] = {}
        for pod in self._list("pods", self._mine()):
            jid = (pod["metadata"].get("labels") or {}).get(ks.LABEL_JOB_ID)
            pods.setdefault(jid, []).append(pod)
        jobs.sort(key=lambda j: j["metadata"].get("creationTimestamp") or "", reverse=True)
        found = []
        for job in jobs:
            jid = (job["metadata"].get("labels") or {}).get(ks.LABEL_JOB_ID)
            status = self._status(jid, ks.job_state(job, pods.get(jid, ())), job)
            if query.states and status.state not in query.states:
                continue
            found.append(status)
            if query.limit and len(found) >= query.limit:
                break
        return found

    def _job(self, job_id: str) -> dict:
        name = self.native_id(job_id)
        return self._api().call(
            "GET", self._path("jobs", name), f"get Job {name}",
            missing=f"no Job {name} for {job_id} in namespace {self.config.namespace!r}")

    def _pods(self, job_id: str) -> list[dict]:
        return self._list("pods", f"{ks.LABEL_JOB_ID}={job_id}")

    # --- logs, result, cancel -----------------------------------------------------------------

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The pod's output; with ``follow``, waits for the container and streams to its end."""
        self.native_id(job_id)
        delay = 0.25
        while True:
            pod = ks.newest_pod(self._pods(job_id))
            started = pod is not None and ((pod.get("status") or {}).get("phase")
                                           in ("Running", "Succeeded", "Failed"))
            if started:
                break
            if not follow:
                return
            seen = ks.job_state(self._job(job_id), [pod] if pod else [])
            if seen.state.terminal:
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        name = pod["metadata"]["name"]
        yield from self._api().lines(self._path("pods", name) + "/log", f"pod {name}",
                                     query={"follow": "true"} if follow else None,
                                     follow=follow)

    def result(self, job_id: str) -> JobResult:
        self.native_id(job_id)
        found = self._observe([job_id])
        if job_id not in found:
            raise NotFoundError(f"no Job for {job_id} in namespace {self.config.namespace!r}")
        return self._result(job_id, *found[job_id])

    def results(self, known: Mapping[str, JobStatus]) -> dict[str, JobResult]:
        """Like ``result``, in one refresh; a job the cluster no longer has (cancelled: the
        tool deleted its Job; or removed ``ttlSecondsAfterFinished`` after it ended) gives
        the final status the store kept and its files under local_output_root: no log,
        and that said."""
        for job_id in known:
            self.native_id(job_id)
        found = self._observe(list(known)) if known else {}
        return {job_id: self._result(job_id, *found[job_id]) if job_id in found
                else self._gone(job_id, status) for job_id, status in known.items()}

    def _result(self, job_id: str, seen: ks.Observed, job: dict | None) -> JobResult:
        name = self.native_id(job_id)
        status = self._status(job_id, seen, job)
        tail = ""
        if seen.pod:
            try:
                tail = "".join(self._api().lines(self._path("pods", seen.pod) + "/log",
                                                 f"pod {seen.pod}",
                                                 query={"tailLines": LOG_TAIL_LINES}))
            except LaunchError:
                tail = ""
        error = None
        if not seen.state.success:
            error = _failure_line(tail) or seen.message or seen.state.value
        success, outputs, mlir, error = self._outputs(name, seen.state.success, error)
        return JobResult(job_id=job_id, correlation_id=status.correlation_id,
                         success=success, outputs=outputs, mlir_output=mlir,
                         execution_time=status.elapsed, error_message=error,
                         exit_code=seen.exit_code, log_tail=tail.rstrip("\n"))

    def _gone(self, job_id: str, status: JobStatus) -> JobResult:
        name = self.native_id(job_id)
        state, message = status.state.value, status.message
        error = None if status.state.success else \
            message if message and message.startswith(state) else \
            f"{state}: {message}" if message else state
        success, outputs, mlir, error = self._outputs(name, status.state.success, error)
        code = status.scheduler_metadata.get("exit_code")
        return JobResult(
            job_id=job_id, correlation_id=status.correlation_id, success=success,
            outputs=outputs, mlir_output=mlir, execution_time=status.elapsed,
            error_message=error,
            exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            log_tail=f"(namespace {self.config.namespace!r} no longer has Job {name}: its pod "
                     "log is gone; the outputs are read from local_output_root)")

    def _outputs(self, name: str, success: bool, error: str | None
                 ) -> tuple[bool, tuple[str, ...], str | None, str | None]:
        """(success, files, MLIR text, error) from <local_output_root>/<job name>, read as
        Ray's shared root is (``ray_outputs``): never through a symlink; one leading out of
        the job's directory, or a model.mlir that is not a regular file, is refused and
        makes the result a failure."""
        from warpforge_launch.schedulers.ray_outputs import read_outputs, with_refusals

        root = self.config.local_output_root
        if not root:
            where = self.config.output_claim or self.config.output_host_path
            return success, ((f"{where}:{name}/",) if success else ()), None, error
        found = read_outputs(root, name)
        success, error = with_refusals(success, error, found.refused,
                                       f"{root.rstrip('/')}/{name}")
        return success, tuple(found.files), found.mlir, error

    def fetch_outputs(self, stagings) -> None:
        """``<local_output_root>/<job name>`` (as Ray's shared root) and the pod's log, when
        the pod still exists and the last fetch does not hold it."""
        from warpforge_launch import artifacts_copy as ac

        root = self.config.local_output_root
        if not root:
            raise UsageError(f"scheduler {self.name!r} has no local_output_root: its jobs' "
                             "files are not visible from this machine",
                             hint="mount the output volume here and set local_output_root")
        for st in stagings:
            name = self.native_id(st.job_id)
            st.source = f"{self.name}: {root.rstrip('/')}/{name}"
            ac.copy_tree(st, root, name)
            try:
                ac.save_log(st, "stdout.log", lambda j=st.job_id: "".join(self.logs(j)))
            except LaunchError as exc:
                st.notes.append(f"pod log not fetched: {exc}")

    def cancel(self, job_id: str) -> bool:
        """CANCELLED goes to the job store and onto the Job first; then a Foreground delete,
        waited for until the Job (and so every pod of it) is gone."""
        name = self.native_id(job_id)
        job = self._job(job_id)
        seen = ks.job_state(job, self._pods(job_id))
        if seen.state.terminal:
            return False
        now = datetime.now(UTC)
        self._record_cancel(job_id, now)
        self._cancelled.add(job_id)
        api = self._api()
        api.call("PATCH", self._path("jobs", name), f"marking Job {name} cancelled",
                 body={"metadata": {"annotations": {ks.ANNOTATION_CANCELLED: now.isoformat()}}},
                 content_type="application/merge-patch+json")
        api.call("DELETE", self._path("jobs", name), f"deleting Job {name}",
                 query={"propagationPolicy": "Foreground"})
        deadline = time.monotonic() + max(CANCEL_WAIT_S, self.config.request_timeout)
        while time.monotonic() < deadline:
            try:
                self._job(job_id)
            except NotFoundError:
                return True
            time.sleep(0.25)
        raise InfrastructureError(f"Job {name} is still being deleted after "
                                  f"{max(CANCEL_WAIT_S, self.config.request_timeout):g} s",
                                  hint="its pods may be slow to stop; look with kubectl")

    def _record_cancel(self, job_id: str, when: datetime) -> None:
        from warpforge_launch.store import JobStore

        path = self.home / "jobs.sqlite3"
        if not path.is_file():
            return
        store = JobStore(path)
        try:
            record = store.find(job_id)
            if record is not None and not record.state.terminal:
                store.update_status(dataclasses.replace(
                    record.status, state=JobState.CANCELLED, state_changed_at=when,
                    message="cancelled: the Job was deleted with its pods"))
        finally:
            store.close()

    def cluster_info(self) -> ClusterInfo:
        nodes = self._nodes()
        versions = sorted({(n.get("status") or {}).get("nodeInfo", {}).get("kubeletVersion", "?")
                           for n in nodes}) or ["?"]
        return ks.build_cluster_info(self.name, ", ".join(versions), nodes,
                                     self.config.gpu_resources)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _failure_line(tail: str) -> str | None:
    for line in reversed(tail.splitlines()):
        if line.startswith("FAILED:") or "Error" in line.split(":", 1)[0]:
            return line.strip()
    return None
