"""Kubernetes backend: one batch/v1 Job per snakegrinder run, through lightkube.

A submit sends three requests: a Secret holding the model source (and the ``--secret-env``
values, read from this process at that moment), the Job, and a patch making the Job the
Secret's owner so both go together. The Job runs the payload argv as its container command
(no shell), with requests = limits, the vendor's node selector and GPU resource, a deadline
from ``--timeout``, ``backoffLimit: 0`` and a non-root security context.

Refreshing many jobs lists this instance's pods with ONE label-selector call; the Jobs are
listed (one more call) only when a pod alone cannot tell (no pod yet, or a pod that ended,
whose Job conditions say COMPLETED, FAILED or TIMEOUT). Cancel records CANCELLED in the job
store and on the Job before deleting it with propagationPolicy=Foreground, so its pods go
first. lightkube (and its httpx) is imported on the first request only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

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
from warpforge_launch.schedulers import kubernetes_manifest as km
from warpforge_launch.schedulers import kubernetes_state as ks
from warpforge_launch.schedulers.base import Scheduler, SubmissionPlan, Submitted

LOG_TAIL_LINES = 40
VENDORS = ("NVIDIA", "AMD")


@dataclasses.dataclass(frozen=True)
class KubernetesConfig:
    """``schedulers.<name>`` for ``type: kubernetes`` in the inventory."""

    __pydantic_config__ = {"extra": "forbid"}  # noqa: RUF012 (pydantic reads this)
    kubeconfig: str | None = None  # None: $KUBECONFIG, then ~/.kube/config
    context: str | None = None  # None: the kubeconfig's current context
    in_cluster: bool = False  # the pod's service account instead of a kubeconfig
    namespace: str = "warpforge"
    registry: str = "localhost:5000"
    image_version: str = "latest"
    image_nvidia: str | None = None  # default <registry>/warpforge:nvidia-<version>
    image_amd: str | None = None  # default <registry>/warpforge:amd-<version>
    image_cpu: str | None = None  # default <registry>/warpforge:cpu-<version>
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    snakegrinder: str = "/opt/warpforge/bin/snakegrinder"  # inside the image
    node_selectors: dict[str, dict[str, str]] = dataclasses.field(default_factory=lambda: {
        "NVIDIA": {"accelerator": "nvidia"}, "AMD": {"accelerator": "amd"}})
    gpu_resources: dict[str, str] = dataclasses.field(default_factory=lambda: {
        "NVIDIA": "nvidia.com/gpu", "AMD": "amd.com/gpu"})
    tolerations: tuple[dict[str, Any], ...] = ()
    service_account: str | None = None
    ttl_seconds_after_finished: int | None = 86400
    priority_classes: dict[str, str] = dataclasses.field(default_factory=dict)  # {"80": "high"}
    # the output volume: a PVC or a hostPath, mounted at output_mount_path in the pod; each
    # job writes to <mount>/<job name>; local_output_root is where this machine sees it
    output_claim: str | None = None
    output_host_path: str | None = None
    output_mount_path: str = "/warpforge/out"
    local_output_root: str | None = None
    run_as_user: int = 1000
    run_as_group: int = 1000
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    allow_pending: bool = False  # accept GPU requests no node can satisfy now (they wait)
    server_dry_run: bool = False  # let the apiserver check both objects before creating them
    schema_version: str = "1.25"  # kubernetes-validate's oldest schema; v1.20 Jobs fit it

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "request_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("snakegrinder", "output_mount_path"):
            if not str(getattr(self, name)).startswith("/"):
                raise ValueError(f"{name} must be an absolute path in the image")
        if self.output_host_path is not None and not self.output_host_path.startswith("/"):
            raise ValueError("output_host_path must be an absolute path on the nodes")
        if self.output_claim and self.output_host_path:
            raise ValueError("give output_claim or output_host_path, not both")
        for table in ("node_selectors", "gpu_resources"):
            unknown = set(getattr(self, table)) - set(VENDORS)
            if unknown:
                raise ValueError(f"{table}: unknown GPU vendor {sorted(unknown)[0]!r} "
                                 "(NVIDIA or AMD)")
        for threshold in self.priority_classes:
            if not str(threshold).isdigit() or not 0 <= int(threshold) <= 100:
                raise ValueError(f"priority_classes: {threshold!r} is not a priority 0-100")

    def image(self, vendor: str) -> str:
        given = {"NVIDIA": self.image_nvidia, "AMD": self.image_amd}.get(vendor, self.image_cpu)
        tag = {"NVIDIA": "nvidia", "AMD": "amd"}.get(vendor, "cpu")
        return given or f"{self.registry.rstrip('/')}/warpforge:{tag}-{self.image_version}"


class KubernetesScheduler(Scheduler):
    """Submit, watch, cancel snakegrinder Jobs in one namespace of one cluster."""

    type_name: ClassVar[str] = "kubernetes"
    Config: ClassVar[type] = KubernetesConfig

    def __init__(self, name: str, config: KubernetesConfig, *, home: Path) -> None:
        super().__init__(name, config, home=home)
        self.config = config
        self._client = None
        self._server = "?"
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
        labels = {km.LABEL_MANAGED_BY: km.MANAGED_BY, km.LABEL_INSTANCE: self.name,
                  km.LABEL_JOB_ID: job_id, km.LABEL_CORRELATION_ID: submission.correlation_id}
        annotations = {f"{km.ANNOTATION_PREFIX}{k}": v for k, v in {
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
        job = km.render(spec)
        km.validate_offline(job, c.schema_version)
        request = km.K8sRequest(job=job, source_path=d.source, source_sha256=digest,
                                secret_env=tuple(d.secret_env))
        return SubmissionPlan(instance=self.name, native_id=name, kind="k8s-job",
                              argv=tuple(argv), request=request,
                              correlation_id=submission.correlation_id)

    def _priority_class(self, priority: int) -> str | None:
        best, chosen = -1, None
        for threshold, name in self.config.priority_classes.items():
            if best < int(threshold) <= priority:
                best, chosen = int(threshold), name
        return chosen

    # --- the client ---------------------------------------------------------------------------

    def _lk(self):
        if self._client is None:
            import httpx2
            import lightkube

            c = self.config
            try:
                if c.in_cluster:
                    config = lightkube.KubeConfig.from_service_account().get()
                else:
                    path = c.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] \
                        or os.path.expanduser("~/.kube/config")
                    config = lightkube.KubeConfig.from_file(os.path.expanduser(path)).get(
                        context_name=c.context)
            except (lightkube.ConfigError, OSError, ValueError, KeyError) as exc:
                raise UsageError(f"schedulers.{self.name}: no usable Kubernetes credentials: "
                                 f"{exc}", hint="check kubeconfig/context (or in_cluster)"
                                 ) from None
            self._server = config.cluster.server
            self._client = lightkube.Client(
                config, namespace=c.namespace, trust_env=False,
                timeout=httpx2.Timeout(c.request_timeout, connect=c.connect_timeout))
            http = getattr(getattr(self._client, "_client", None), "_client", None)
            if http is not None and hasattr(http, "event_hooks"):
                http.event_hooks["request"].append(lambda r: self.requests.append(
                    f"{r.method} {r.url.path}?{r.url.query.decode()}".rstrip("?")))
        return self._client

    def _call(self, what: str, fn, *args, missing: str | None = None, **kwargs):
        """One API call; every failure becomes the project's one-line error."""
        import httpx2
        import lightkube

        client = self._lk()
        try:
            return fn(client, *args, **kwargs)
        except lightkube.ApiError as exc:
            code, message = exc.status.code, exc.status.message or str(exc)
            if code == 404 and missing is not None:
                raise NotFoundError(missing) from None
            if code in (401, 403):
                raise InfrastructureError(
                    f"Kubernetes API at {self._server} refused {what} (HTTP {code}): {message}",
                    hint=f"the credentials of schedulers.{self.name} lack the rights "
                    f"(namespace {self.config.namespace!r}); see docs/kubernetes.md") from None
            if code >= 500:
                raise InfrastructureError(f"Kubernetes API at {self._server} failed {what} "
                                          f"(HTTP {code}): {message}") from None
            raise UsageError(f"Kubernetes refused {what} (HTTP {code}): {message}") from None
        except httpx2.TimeoutException as exc:
            kind = "connect" if isinstance(exc, httpx2.ConnectTimeout) else "request"
            limit = self.config.connect_timeout if kind == "connect" else \
                self.config.request_timeout
            raise InfrastructureError(
                f"Kubernetes API at {self._server} timed out ({kind}, {limit:g} s): {what}",
                hint="is the apiserver up? check the kubeconfig's server") from None
        except httpx2.TransportError as exc:
            raise InfrastructureError(
                f"Kubernetes API at {self._server} is unreachable ({what}): "
                f"{ks._one_line(str(exc)) or type(exc).__name__}",
                hint="is the apiserver up? check the kubeconfig's server") from None

    def _list(self, kind: str, labels: Mapping[str, Any]) -> list[dict]:
        from lightkube.resources.batch_v1 import Job
        from lightkube.resources.core_v1 import Pod

        res = {"jobs": Job, "pods": Pod}[kind]
        return self._call(f"list {kind}", lambda c: [
            o.to_dict() for o in c.list(res, namespace=self.config.namespace, labels=labels)])

    def _mine(self) -> dict[str, str]:
        return {km.LABEL_INSTANCE: self.name}

    # --- submit -------------------------------------------------------------------------------

    def execute(self, plan: SubmissionPlan[km.K8sRequest]) -> Submitted:
        from lightkube import codecs
        from lightkube.resources.core_v1 import Secret
        from lightkube.types import PatchType

        request = plan.request
        source, digest = km.read_source(request.source_path)
        if digest != request.source_sha256:
            raise UsageError(f"model source {request.source_path} changed since the job was "
                             "planned", hint="plan again")
        values = secrets.resolve(request.secret_env)
        self._check_gpus(request.job)
        secret = codecs.from_dict(request.secret_manifest(masked=False, values=values,
                                                          source=source))
        job = codecs.from_dict(request.job)
        name, ns = request.name, request.namespace
        if self.config.server_dry_run:
            self._call("a dry-run create of the Secret",
                       lambda c: c.create(secret, namespace=ns, dry_run=True))
            self._call("a dry-run create of the Job",
                       lambda c: c.create(job, namespace=ns, dry_run=True))
        self._call(f"creating Secret {name}", lambda c: c.create(secret, namespace=ns))
        try:
            created = self._call(f"creating Job {name}", lambda c: c.create(job, namespace=ns))
        except LaunchError:
            self._forget_secret(name)
            raise
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name,
                 "uid": created.metadata.uid, "blockOwnerDeletion": True}
        self._call(f"linking Secret {name} to its Job", lambda c: c.patch(
            Secret, name, {"metadata": {"ownerReferences": [owner]}}, namespace=ns,
            patch_type=PatchType.MERGE))
        return Submitted(name)

    def _forget_secret(self, name: str) -> None:
        from lightkube.resources.core_v1 import Secret

        try:
            self._call("deleting an unused Secret",
                       lambda c: c.delete(Secret, name, namespace=self.config.namespace))
        except LaunchError:
            pass

    def _check_gpus(self, job: dict) -> None:
        """A GPU count no node offers is refused now, not left Pending forever."""
        if self.config.allow_pending:
            return
        spec = job["spec"]["template"]["spec"]
        limits = spec["containers"][0]["resources"]["limits"]
        wanted = [(r, int(limits[r])) for r in self.config.gpu_resources.values() if r in limits]
        if not wanted:
            return
        from lightkube.resources.core_v1 import Node

        nodes = self._call("list nodes", lambda c: [n.to_dict() for n in c.list(Node)])
        for resource, count in wanted:
            found = ks.gpu_capacity(nodes, resource, spec.get("nodeSelector") or {})
            if max(found.values(), default=0) < count:
                offered = ", ".join(f"{n} {v}" for n, v in sorted(found.items())) or \
                    "no node matches the node selector " + str(spec.get("nodeSelector") or {})
                raise UsageError(
                    f"no node can ever give this job {count} {resource}: allocatable "
                    f"{resource} per node: {offered}",
                    hint="ask for fewer GPUs, or submit with --allow-pending to let it wait")

    def reconcile(self, correlation_ids: Sequence[str]) -> dict[str, str]:
        from lightkube.operators import in_

        if not correlation_ids:
            return {}
        jobs = self._list("jobs", {**self._mine(),
                                   km.LABEL_CORRELATION_ID: in_(list(correlation_ids))})
        return {j["metadata"]["labels"][km.LABEL_CORRELATION_ID]: j["metadata"]["name"]
                for j in jobs}

    # --- watch --------------------------------------------------------------------------------

    def _observe(self, job_ids: Sequence[str]) -> dict[str, tuple[ks.Observed, dict | None]]:
        """Observations of the wanted jobs: one pod list, plus one Job list when a pod cannot
        tell (no pod yet, or a pod that ended or is being removed)."""
        wanted = set(job_ids)
        by_job: dict[str, list[dict]] = {}
        for pod in self._list("pods", self._mine()):
            jid = ((pod.get("metadata") or {}).get("labels") or {}).get(km.LABEL_JOB_ID)
            if jid in wanted:
                by_job.setdefault(jid, []).append(pod)
        out: dict[str, tuple[ks.Observed, dict | None]] = {}
        undecided = set()
        for jid in wanted:
            pod = ks.newest_pod(by_job.get(jid, ()))
            phase = ((pod or {}).get("status") or {}).get("phase")
            if pod and phase in ("Pending", "Running") and not pod["metadata"].get(
                    "deletionTimestamp") and jid not in self._cancelled:
                out[jid] = (ks.job_state({}, [pod]), pod)  # the pod carries the labels too
            else:
                undecided.add(jid)
        if undecided:
            for job in self._list("jobs", self._mine()):
                jid = (job["metadata"].get("labels") or {}).get(km.LABEL_JOB_ID)
                if jid in undecided:
                    out[jid] = (ks.job_state(job, by_job.get(jid, ())), job)
        for jid in undecided - set(out):
            if jid in self._cancelled:
                out[jid] = (ks.Observed(JobState.CANCELLED, "cancelled: the Job was deleted "
                                        "with its pods"), None)
        return out

    def _status(self, job_id: str, seen: ks.Observed, obj: dict | None) -> JobStatus:
        """``obj``: the Job, or the pod that decided the state (both carry our labels)."""
        now = datetime.now(UTC)
        labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
        elapsed = ((seen.ended or now) - seen.started) if seen.started else None
        extra = {"namespace": self.config.namespace, "job": self.native_id(job_id),
                 "pod": seen.pod, "exit_code": seen.exit_code}
        return JobStatus(job_id=job_id, correlation_id=labels.get(km.LABEL_CORRELATION_ID),
                         state=seen.state, state_changed_at=seen.ended or seen.started or now,
                         node_name=seen.node, elapsed=elapsed, message=seen.message,
                         scheduler_metadata={k: v for k, v in extra.items() if v is not None})

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
            jid = (pod["metadata"].get("labels") or {}).get(km.LABEL_JOB_ID)
            pods.setdefault(jid, []).append(pod)
        jobs.sort(key=lambda j: j["metadata"].get("creationTimestamp") or "", reverse=True)
        found = []
        for job in jobs:
            jid = (job["metadata"].get("labels") or {}).get(km.LABEL_JOB_ID)
            status = self._status(jid, ks.job_state(job, pods.get(jid, ())), job)
            if query.states and status.state not in query.states:
                continue
            found.append(status)
            if query.limit and len(found) >= query.limit:
                break
        return found

    def _job(self, job_id: str) -> dict:
        from lightkube.resources.batch_v1 import Job

        name = self.native_id(job_id)
        return self._call(f"get Job {name}", lambda c: c.get(
            Job, name, namespace=self.config.namespace).to_dict(),
            missing=f"no Job {name} for {job_id} in namespace {self.config.namespace!r}")

    def _pods(self, job_id: str) -> list[dict]:
        return self._list("pods", {km.LABEL_JOB_ID: job_id})

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
        lines = self._call(f"logs of pod {name}", lambda c: c.log(
            name, namespace=self.config.namespace, follow=follow))
        import httpx2

        try:
            yield from lines
        except httpx2.HTTPError as exc:
            raise InfrastructureError(f"the log stream of pod {name} broke: {exc}") from None

    def result(self, job_id: str) -> JobResult:
        name = self.native_id(job_id)
        found = self._observe([job_id])
        if job_id not in found:
            raise NotFoundError(f"no Job for {job_id} in namespace {self.config.namespace!r}")
        seen, job = found[job_id]
        status = self._status(job_id, seen, job)
        tail = ""
        if seen.pod:
            try:
                tail = "".join(self._call("pod logs", lambda c: list(c.log(
                    seen.pod, namespace=self.config.namespace, tail_lines=LOG_TAIL_LINES))))
            except LaunchError:
                tail = ""
        outputs, mlir = self._outputs(name, seen.state.success)
        error = None
        if not seen.state.success:
            error = _failure_line(tail) or seen.message or seen.state.value
        return JobResult(job_id=job_id, correlation_id=status.correlation_id,
                         success=seen.state.success, outputs=outputs, mlir_output=mlir,
                         execution_time=status.elapsed, error_message=error,
                         exit_code=seen.exit_code, log_tail=tail.rstrip("\n"))

    def _outputs(self, name: str, success: bool) -> tuple[tuple[str, ...], str | None]:
        """Files under <local_output_root>/<job name>; nothing that resolves outside the root."""
        if not self.config.local_output_root:
            where = self.config.output_claim or self.config.output_host_path
            return ((f"{where}:{name}/",) if success else ()), None
        root = Path(self.config.local_output_root).resolve()
        base = (root / name).resolve()
        if not base.is_relative_to(root) or not base.is_dir():
            return (), None
        files = []
        for path in sorted(base.rglob("*")):
            real = path.resolve()
            if real.is_relative_to(base) and real.is_file():
                files.append(str(path))
        mlir_path = (base / "model.mlir").resolve()
        mlir = None
        if mlir_path.is_relative_to(base) and mlir_path.is_file():
            mlir = mlir_path.read_text(errors="replace")
        return tuple(files), mlir

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
        from lightkube.resources.batch_v1 import Job
        from lightkube.types import CascadeType, PatchType

        name, ns = self.native_id(job_id), self.config.namespace
        job = self._job(job_id)
        seen = ks.job_state(job, self._pods(job_id))
        if seen.state.terminal:
            return False
        now = datetime.now(UTC)
        self._record_cancel(job_id, now)
        self._cancelled.add(job_id)
        self._call(f"marking Job {name} cancelled", lambda c: c.patch(
            Job, name, {"metadata": {"annotations": {ks.ANNOTATION_CANCELLED: now.isoformat()}}},
            namespace=ns, patch_type=PatchType.MERGE))
        self._call(f"deleting Job {name}", lambda c: c.delete(
            Job, name, namespace=ns, cascade=CascadeType.FOREGROUND))
        deadline = time.monotonic() + max(30.0, self.config.request_timeout)
        while time.monotonic() < deadline:
            try:
                self._job(job_id)
            except NotFoundError:
                return True
            time.sleep(0.25)
        raise InfrastructureError(f"Job {name} is still being deleted after "
                                  f"{max(30.0, self.config.request_timeout):g} s",
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
        from lightkube.resources.core_v1 import Node

        nodes = self._call("list nodes", lambda c: [n.to_dict() for n in c.list(Node)])
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
