"""Slurm scheduler: an sbatch script per job, submitted and watched on a login node.

Submit renders the script (slurm_script.py) and sends it with ``sbatch --parsable`` in one
round trip, even for many jobs (slurm_remote.py holds the remote programs). Status is
batched and cached by a SlurmWatcher (slurm_watch.py). Every client call has a deadline: a
down slurmctld blocks clients for about 9 s each, and the user gets exit 3, not a hang.
"""

from __future__ import annotations

import functools
import getpass
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
    check_source,
)
from warpforge_launch.payload import snakegrinder_argv
from warpforge_launch.schedulers import slurm_client
from warpforge_launch.schedulers import slurm_parse as sp
from warpforge_launch.schedulers import slurm_remote as remote
from warpforge_launch.schedulers.base import (
    BatchPlan,
    Outcome,
    Scheduler,
    SubmissionPlan,
    Submitted,
)
from warpforge_launch.schedulers.ray_outputs import refusal
from warpforge_launch.schedulers.slurm_transport import (
    Completed,
    Transport,
)
from warpforge_launch.schedulers.slurm_watch import INVALID_ID, SlurmWatcher

_USER_VAR = re.compile(r"\$(?:USER\b|\{USER\})")
_MAX_LOG_BYTES = 256 * 1024


@dataclass(frozen=True)
class SlurmRequest:
    """The job mapped to Slurm terms (the spec) and the batch script sbatch receives."""

    spec: Any  # slurm_script.ScriptSpec (imported lazily: jinja2 stays off the CLI start)
    script: str

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "script": self.script}

    def render(self) -> str:
        return self.script


@dataclass(frozen=True)
class SlurmConfig:
    """``schedulers.<name>`` for ``type: slurm`` in the inventory."""

    __pydantic_config__ = {"extra": "forbid"}
    # login node: a box of the inventory (its address, port, user and keys fill the login_*
    # fields), or login_host directly; neither runs the Slurm clients on this machine
    login: str | None = None
    login_host: str | None = None
    login_port: int = 22
    login_user: str | None = None
    identity_file: str | None = None
    known_hosts_file: str | None = None
    control_persist_seconds: int = 600
    # where jobs run
    partition: str | None = None
    # shared storage seen by login and compute nodes; $USER is the submitting user
    work_dir: str = "/scratch/$USER/warpforge"
    runtime: Literal["singularity", "apptainer", "none"] = "singularity"
    image_nvidia: str = "/shared/containers/warpforge-nvidia.sif"
    image_amd: str = "/shared/containers/warpforge-amd.sif"
    image_cpu: str | None = None                   # default: the NVIDIA image without --nv
    snakegrinder: str = "/opt/warpforge/bin/snakegrinder"  # in the image, or shared storage
    account: str | None = None
    qos: str | None = None                         # default QOS
    qos_by_priority: dict[str, str] = field(default_factory=dict)  # {"80": "high"}: >= 80
    nice_from_priority: bool = False               # priority < 50 -> --nice=(50-p)*10
    extra_sbatch: tuple[str, ...] = ()             # extra "#SBATCH" options, e.g. --exclusive
    slurm_conf: str | None = None                  # SLURM_CONF for the clients, if needed
    command_timeout: float = 30.0                  # every Slurm client call
    max_poll_interval: float = 30.0                # cap of the adaptive refresh interval


class SlurmScheduler(Scheduler):
    type_name = "slurm"
    Config = SlurmConfig

    def __init__(self, name, config, *, home, transport: Transport | None = None):
        super().__init__(name, config, home=home)
        self._transport = transport
        # client programs run, counted by name: bounded, for tests and benchmarks
        self.calls: Counter[str] = Counter()
        # what fetches brought over the wire ("wire") and of it file data ("archive")
        self.fetched_bytes: Counter[str] = Counter()
        self.watcher = SlurmWatcher(self._run, self.home / "slurm" / f"{name}.json",
                                    config.max_poll_interval)
        self.prepared: dict[tuple[str, ...], Any] = {}  # batch -> its started submit driver

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = slurm_client.transport_for(self.config, self.home)
        return self._transport

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return slurm_client.client_argv(self.config, argv)

    def _check_local_conf(self) -> None:
        slurm_client.check_local_conf(self.config, self.transport)

    def _run(self, argv: Sequence[str], *, input: str | None = None,
             timeout: float | None = None, program: str | None = None,
             check: bool = True) -> Completed:
        """Run one client (slurm_client.run), counted by name."""
        self.calls[program or argv[0]] += 1
        return slurm_client.run(self.config, self.transport, argv, input=input,
                                timeout=timeout, program=program, check=check)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _native(self, job_id: str) -> str:
        native = self.native_id(job_id)
        if not slurm_client.NATIVE_ID.match(native):
            raise NotFoundError(f"{job_id!r} is not a Slurm job id of {self.name!r} "
                                f"(expected {self.name}-<number>)")
        return native

    @property
    def submit_user(self) -> str:
        """Who runs sbatch: login_user, else the local user name (what ssh logs in as when
        no user is given; an ``ssh_config`` User is not consulted)."""
        if self.config.login_host and self.config.login_user:
            return self.config.login_user
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            raise UsageError(f"schedulers.{self.name}.work_dir: cannot tell the user name "
                             "for $USER", hint="set login_user or a work_dir without $USER") \
                from None

    @functools.cached_property
    def work_dir(self) -> str:
        """The configured work dir with $USER filled in, checked once (a sweep plans every
        cell with it); a bad one raises on every use."""
        from warpforge_launch.schedulers.slurm_script import ScriptError, validate_work_dir

        path = self.config.work_dir
        if _USER_VAR.search(path):
            path = _USER_VAR.sub(lambda _m: self.submit_user, path)
        try:
            return validate_work_dir(path)
        except ScriptError as exc:
            raise UsageError(f"schedulers.{self.name}.{exc}") from None

    # -- capabilities / plan / execute -------------------------------------------------------
    def capabilities(self) -> SchedulerCapabilities:
        return SchedulerCapabilities(
            gpu_scheduling=True,
            supported_gpu_types={GpuType.NONE, GpuType.NVIDIA, GpuType.AMD, GpuType.ANY},
            queue_priority=bool(self.config.qos_by_priority or self.config.nice_from_priority),
            node_affinity=True, job_arrays=True)

    def script_spec(self, submission: JobSubmission):
        """The job mapped to Slurm terms (pure)."""
        from warpforge_launch.schedulers import slurm_script as ss

        d, r, c = submission.definition, submission.definition.resources, self.config
        images = {"nvidia": c.image_nvidia, "amd": c.image_amd}
        if c.image_cpu:
            images["cpu"] = c.image_cpu
        argv = snakegrinder_argv(c.snakegrinder, d, ss.OUT_DIR_TOKEN)
        return ss.ScriptSpec(
            correlation_id=submission.correlation_id, name=d.name,
            job_name=f"warpforge-{submission.short_id}", work_dir=self.work_dir,
            cpus=r.cpu_cores, mem_mb=r.memory_mb,
            time_minutes=max(1, math.ceil(d.timeout.total_seconds() / 60)),
            argv=tuple(argv), runtime=c.runtime, gpu_type=r.gpu_type.value,
            gpu_count=r.gpu_count, images=images, partition=r.queue or c.partition,
            account=c.account, qos=self._qos(r.priority), nice=self._nice(r.priority),
            nodelist=tuple(sorted(r.node_affinity)),
            environment=tuple(sorted(d.environment.items())), extra_options=tuple(c.extra_sbatch),
            secret_env=tuple(d.secret_env))

    def _qos(self, priority: int) -> str | None:
        best, qos = -1, self.config.qos
        for threshold, name in self.config.qos_by_priority.items():
            try:
                t = int(threshold)
            except ValueError:
                raise UsageError(f"schedulers.{self.name}.qos_by_priority: {threshold!r} is "
                                 "not a priority (0-100)") from None
            if best < t <= priority:
                best, qos = t, name
        return qos

    def _nice(self, priority: int) -> int | None:
        if self.config.nice_from_priority and priority < 50:
            return (50 - priority) * 10
        return None

    def plan(self, submission: JobSubmission) -> SubmissionPlan[SlurmRequest]:
        from warpforge_launch.schedulers import slurm_script as ss

        check_source(submission.definition.source)
        spec = self.script_spec(submission)
        try:
            script = ss.render(spec)
        except ss.ScriptError as exc:
            raise UsageError(str(exc)) from None
        payload = tuple(a.replace(ss.OUT_DIR_TOKEN, f"{spec.work_dir}/output-$SLURM_JOB_ID")
                        for a in spec.argv)
        return SubmissionPlan(self.name, None, "sbatch", payload, SlurmRequest(spec, script),
                              str(submission.correlation_id))

    def execute(self, plan: SubmissionPlan[SlurmRequest]) -> Submitted:
        return Submitted(self.native_id(self.execute_many([plan])[0]))

    def submit_many(self, submissions: Sequence[JobSubmission]) -> list[str]:
        """Submit a sweep in one round trip to the login node."""
        return self.execute_many([self.plan(s) for s in submissions])

    def execute_many(self, plans: Sequence[SubmissionPlan[SlurmRequest]]) -> list[str]:
        """Upload every script and run sbatch for each in ONE remote shell (one SSH round
        trip for a whole sweep); secret values go on stdin, into sbatch's environment.
        Raises on the first rejected script, after the others were submitted, naming how
        many went in."""
        from warpforge_launch import secrets

        if not plans:
            return []
        stamp = f"{int(time.time())}-{os.urandom(4).hex()}"
        jobs = []
        for i, plan in enumerate(plans):
            if plan.kind != "sbatch" or not isinstance(plan.request, SlurmRequest):
                raise UsageError(f"plan for {plan.instance} is not an sbatch plan")
            jobs.append(remote.Job(f"warpforge-{stamp}-{i}.sbatch", plan.request.script,
                                   tuple(plan.request.spec.secret_env)))
        values = secrets.resolve(sorted({k for job in jobs for k in job.secret_env}))
        work_dir = plans[0].request.spec.work_dir
        results, stderr = {}, ""
        for k in range(0, len(jobs), remote.MAX_JOBS):
            chunk = jobs[k:k + remote.MAX_JOBS]
            done = self._run_driver(work_dir, chunk, values)
            results.update(remote.submit_results(done.stdout))
            stderr = done.stderr
        ids, failures = [], []
        for job in jobs:
            rc, out = results.get(job.name, (-1, stderr or "no answer from the submit driver"))
            if rc == 0:
                try:
                    ids.append(self.job_id(sp.parse_sbatch_parsable(out)))
                    continue
                except ValueError:
                    pass
            failures.append(out)
        if failures:
            done_note = f" ({len(ids)} of {len(plans)} submitted: {', '.join(ids)})" if ids else ""
            slurm_client.raise_client_failure(failures[0], self.transport.where, done_note)
            raise UsageError(f"sbatch rejected the job: {sp.sbatch_error_line(failures[0])}"
                             f"{done_note}", hint="check partition, GRES and limits with `sinfo`")
        return ids

    def start_driver(self, work_dir: str, n_jobs: int):
        """The submit driver, started: it checks the work dir, then waits for its stdin."""
        self.calls["sbatch"] += 1
        self._check_local_conf()
        argv = ["bash", "-c", remote.SUBMIT_DRIVER, "warpforge-submit", work_dir]
        return self.transport.start(self._argv(argv), program="sbatch",
                                    timeout=self.config.command_timeout + 0.5 * n_jobs)

    def _run_driver(self, work_dir: str, jobs, values, started=None, sent: bool = False
                    ) -> Completed:
        """Submit ``jobs`` through a driver (``started`` ahead, or now) and return its
        answer; ``sent``: the started driver already has their scripts and needs only GO."""
        if sent:
            done = started.finish(remote.GO)
        else:
            try:
                data = remote.submit_input(jobs, values) + remote.GO
            except BaseException:
                if started is not None:
                    started.abandon()
                raise
            done = (started or self.start_driver(work_dir, len(jobs))).finish(data)
        where = self.transport.where
        if done.returncode == remote.UNSAFE_DIR:
            raise UsageError(f"refusing to submit on {where}: {sp.first_line(done.stderr)}",
                             hint="the work dir must belong to you and be writable only by "
                             "you (see docs/slurm.md)")
        if done.returncode in (remote.CANNOT_WRITE, remote.CANNOT_UNPACK, remote.BAD_INPUT,
                               remote.NOT_SENT):
            raise InfrastructureError(f"cannot write the job scripts to {work_dir} on {where}: "
                                      f"{sp.first_line(done.stderr)}")
        return done

    # -- status -------------------------------------------------------------------------------
    def accounting_enabled(self) -> bool | None:
        return self.watcher.accounting_enabled()

    def poll_interval(self, job_id: str) -> float:
        """Adaptive refresh interval (see SlurmWatcher): ``statuses`` answers from memory
        inside it, so a tight --wait loop cannot hammer slurmctld."""
        return self.watcher.last_interval(self._native(job_id))

    def status(self, job_id: str) -> JobStatus:
        got = self.statuses([job_id])
        if job_id not in got:
            raise NotFoundError(f"Slurm does not know job {job_id}",
                                hint="finished jobs leave squeue after MinJobAge; without "
                                "accounting (sacct) they cannot be found later")
        return got[job_id]

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        natives = {self._native(j): j for j in job_ids}
        records = self.watcher.records(list(natives))
        return {natives[n]: self._to_status(natives[n], r) for n, r in records.items()}

    def reconcile(self, correlation_ids: Sequence[str]) -> dict[str, str]:
        """Jobs sbatch accepted whose submit was interrupted before it was recorded: found
        by the correlation id in their ``--comment`` (or short id in the job name)."""
        found = self.watcher.find_correlated(list(correlation_ids))
        # a job array answers for its request as a whole: its array job id
        return {c: n.partition("_")[0] for c, n in found.items()}

    # -- sweeps: job arrays (slurm_array.py) -------------------------------------------------------
    def plan_batch(self, submissions: Sequence[JobSubmission], *,
                   throttle: int | None = None) -> BatchPlan:
        """One job array per resource shape (slurm_array.py says why not one in all)."""
        from warpforge_launch.schedulers import slurm_array

        for source in {sub.definition.source for sub in submissions}:  # cells share sources
            check_source(source)
        return slurm_array.plan_batch(self, submissions, throttle)

    def prepare_batch(self, batch: BatchPlan) -> None:
        from warpforge_launch.schedulers import slurm_array

        slurm_array.prepare(self, batch)

    def release_batch(self, batch: BatchPlan) -> None:
        from warpforge_launch.schedulers import slurm_array

        slurm_array.release(self, batch)

    def execute_batch(self, batch: BatchPlan) -> dict[str, Outcome]:
        """Every array of the batch in ONE round trip to the login node."""
        from warpforge_launch.schedulers import slurm_array

        return slurm_array.execute_batch(self, batch)

    def rejected(self, output: str) -> LaunchError:
        """What sbatch's answer to a refused script means: the cluster unreachable (exit
        3), or the script refused (exit 2)."""
        try:
            slurm_client.raise_client_failure(output, self.transport.where)
        except InfrastructureError as exc:
            return exc
        return UsageError(f"sbatch rejected the job array: {sp.sbatch_error_line(output)}",
                          hint="check partition, GRES and limits with `sinfo`")

    def cancel_many(self, job_ids: Sequence[str]) -> dict[str, bool]:
        """ONE scancel naming every job, then ONE refresh (which the launcher's refresh
        right after reads from the watcher, asking Slurm nothing more). scancel says nothing
        of a job that had already ended, so that refresh tells: a job counts as cancelled
        unless Slurm then shows it ended otherwise (COMPLETED, FAILED, TIMEOUT, ...) or no
        longer knows it. Callers pass the jobs they saw active. Array tasks are named one by
        one (``123_4``), never the whole array: a task not in the list is not ours to stop."""
        if not job_ids:
            return {}
        natives = {j: self._native(j) for j in job_ids}
        done = self._run(["scancel", *sorted(set(natives.values()), key=sp.id_key)])
        if done.returncode != 0:
            low = done.stderr.lower()
            if not ("already completing or completed" in low or INVALID_ID in low):
                raise InfrastructureError(f"scancel failed: {sp.first_line(done.stderr)}")
        self.watcher.forget(*natives.values())
        after = self.statuses(list(job_ids))
        return {j: j in after and (after[j].state is JobState.CANCELLED
                                   or not after[j].state.terminal) for j in job_ids}

    def _to_status(self, job_id: str, rec: sp.SlurmRecord) -> JobStatus:
        return JobStatus(job_id=job_id, **sp.status_fields(rec))

    # -- results and logs ----------------------------------------------------------------------
    def _read_jobs(self, natives: Sequence[str], what: str = "result",
                   offsets: tuple[int, int] | None = None) -> dict[str, dict[str, str]]:
        """Jobs' files by native id (slurm_remote.READ_DRIVER, ``what`` as it takes it): one
        round trip per READ_MAX_JOBS ids; sections base64-framed per job."""
        out: dict[str, dict[str, str]] = {}
        for k in range(0, len(natives), remote.READ_MAX_JOBS):
            chunk = list(natives[k:k + remote.READ_MAX_JOBS])
            argv = ["bash", "-c", remote.READ_DRIVER, "warpforge-read", self.work_dir,
                    str(_MAX_LOG_BYTES), what, *chunk]
            if offsets is not None:
                argv += [str(offsets[0]), str(offsets[1])]
            done = self._run(argv, program="warpforge-read",
                             timeout=self.config.command_timeout + 0.1 * len(chunk))
            out.update(remote.read_jobs(done.stdout))
        return out

    def _refused(self, files: dict[str, str]) -> list[str]:
        return [f"{self.work_dir}/{p}" for p in files.get("refused", "").splitlines() if p]

    def result(self, job_id: str) -> JobResult:
        status = self.status(job_id)
        if not status.state.terminal:
            raise UsageError(f"job {job_id} has not finished ({status.state.value})")
        return self.results({job_id: status})[job_id]

    def results(self, known: Mapping[str, JobStatus]) -> dict[str, JobResult]:
        """Finished jobs' outcomes from the statuses given (no squeue, no sacct) and their
        files, read in ONE round trip (per READ_MAX_JOBS jobs). Only a status squeue gave
        without the exit code (a failed job accounting had not caught up with) is asked
        again, all such in one batched refresh: the code is sacct's to tell."""
        natives = {job_id: self._native(job_id) for job_id in known}
        for job_id, status in known.items():
            if not status.state.terminal:
                raise UsageError(f"job {job_id} has not finished ({status.state.value})")
        unsure = [job_id for job_id, status in known.items() if lacks_exit_code(status)]
        if unsure:
            known = {**known, **self.statuses(unsure)}
        files = self._read_jobs(sorted(set(natives.values()), key=sp.id_key))
        return {job_id: self._result(job_id, natives[job_id], status,
                                     files.get(natives[job_id], {}))
                for job_id, status in known.items()}

    def _result(self, job_id: str, native: str, status: JobStatus,
                files: dict[str, str]) -> JobResult:
        out_dir = f"{self.work_dir}/output-{native}"
        outputs = tuple(f"{out_dir}/{n}" for n in files.get("list", "").splitlines() if n)
        exit_code = status.scheduler_metadata.get("exit_code")
        log_tail = _tail(files.get("out", "") + files.get("err", ""), 40)
        refused = self._refused(files)
        error = None
        if not status.state.success or refused:
            err_line = _last_line(files.get("err", "")) or _last_line(files.get("out", ""))
            parts = [] if status.state.success else [status.state.value.lower(),
                                                     status.message, err_line]
            parts += [refusal(p) for p in refused]
            error = "; ".join(p for p in parts if p)
        return JobResult(
            job_id=job_id, correlation_id=None, success=status.state.success and not refused,
            outputs=outputs, mlir_output=files.get("mlir") or None,
            execution_time=status.elapsed, error_message=error, exit_code=exit_code,
            log_tail=log_tail,
            metrics={"elapsed_seconds": status.elapsed.total_seconds()} if status.elapsed else {})

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The job's stdout then stderr; a log that is a symlink is not read, and a line
        says so."""
        native = self._native(job_id)
        if not follow:
            files = self._read_jobs([native], "logs").get(native, {})
            yield files.get("out", "") + files.get("err", "")
            yield from (f"[{refusal(p)}]\n" for p in self._refused(files))
            return
        offsets = [0, 0]
        noted: set[str] = set()
        while True:
            status = self.status(job_id)
            files = self._read_jobs([native], "from", (offsets[0], offsets[1])).get(native, {})
            for i, key in enumerate(("out", "err")):
                chunk = files.get(key, "")
                if chunk:
                    offsets[i] += int(files.get(key + "_bytes", len(chunk.encode())))
                    yield chunk
            for path in set(self._refused(files)) - noted:
                noted.add(path)
                yield f"[{refusal(path)}]\n"
            if status.state.terminal:
                return
            time.sleep(self.poll_interval(job_id))

    def fetch_outputs(self, stagings) -> None:
        """All jobs' output dirs and stdout/stderr files from the work dir, one archive in one
        round trip (schedulers/slurm_fetch.py); only files that changed travel."""
        from warpforge_launch.schedulers import slurm_fetch

        self.fetched_bytes += slurm_fetch.fetch(self, stagings)

    # -- cancel / list / cluster -----------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        native = self._native(job_id)
        status = self.status(job_id)
        if status.state.terminal:
            return False
        done = self._run(["scancel", native])
        if done.returncode != 0:
            low = done.stderr.lower()
            if "already completing or completed" in low or INVALID_ID in low:
                return False
            raise InfrastructureError(f"scancel failed: {sp.first_line(done.stderr)}")
        self.watcher.forget(native)
        return True

    def list(self, query: JobQuery) -> list[JobStatus]:
        """warpforge jobs (named warpforge-*) that squeue and, with accounting, sacct know."""
        done = self._run(["squeue", "-h", "-t", "all", "-o", sp.SQUEUE_FORMAT + "|%j"])
        if done.returncode != 0:
            raise InfrastructureError(f"squeue failed: {sp.first_line(done.stderr)}")
        acct_text = ""
        if self.accounting_enabled() is not False:
            argv = ["sacct", "-X", "-P", "-n", f"--format={sp.SACCT_FIELDS},JobName"]
            if query.submitted_after:
                argv += ["-S", query.submitted_after.astimezone().strftime("%Y-%m-%dT%H:%M:%S")]
            acct = self._run(argv)
            if acct.returncode == 0:
                acct_text = acct.stdout
            elif sp.accounting_disabled(acct.stderr):
                self.watcher.remember_accounting(False)
        records = sp.parse_list(done.stdout, acct_text)
        statuses = [self._to_status(self.job_id(n), r) for n, r in records.items()]
        if query.states:
            statuses = [s for s in statuses if s.state in query.states]
        statuses.sort(key=lambda s: sp.id_key(self.native_id(s.job_id)), reverse=True)
        return statuses[: query.limit] if query.limit else statuses

    def cluster_info(self) -> ClusterInfo:
        version = self._run(["sinfo", "--version"])
        nodes_out = self._run(["sinfo", "-N", "-h", "-o", sp.SINFO_FORMAT])
        if nodes_out.returncode != 0:
            raise InfrastructureError(f"sinfo failed: {sp.first_line(nodes_out.stderr)}")
        nodes = sp.parse_sinfo_nodes(nodes_out.stdout)
        totals: dict[str, int] = {}
        infos = []
        for n in nodes:
            for kind, count in n.gpus.items():
                totals[kind] = totals.get(kind, 0) + count
            infos.append(NodeInfo(n.name, n.state, GpuType(sp.gpu_kind(n.gpus)),
                                  sum(n.gpus.values()), n.memory_mb, n.cpus))
        return ClusterInfo(
            scheduler_name=self.name,
            scheduler_version=f"slurm {sp.parse_version(version.stdout)}"
            if version.returncode == 0 else "slurm (version unknown)",
            total_nodes=len(nodes), available_nodes=sum(1 for n in nodes if n.available),
            gpus_by_type=totals, nodes=tuple(infos),
            details={"partitions": sorted({p for n in nodes for p in n.partitions}),
                     "login": self.transport.where, "work_dir": self.work_dir,
                     "runtime": self.config.runtime, "accounting": self._accounting()})

    def _accounting(self) -> bool | None:
        """Whether sacct answers here: remembered, or asked once (a no-op query)."""
        known = self.accounting_enabled()
        if known is not None:
            return known
        probe = self._run(["sacct", "-X", "-n", "-P", "-j", "1", "--format=JobID"])
        if probe.returncode == 0 or sp.accounting_disabled(probe.stderr):
            self.watcher.remember_accounting(probe.returncode == 0)
            return probe.returncode == 0
        return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def lacks_exit_code(status: JobStatus) -> bool:
    """A final status squeue gave, without the exit code only accounting knows."""
    meta = status.scheduler_metadata
    return status.state.terminal and meta.get("source") == "squeue" and "exit_code" not in meta


def _tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])
