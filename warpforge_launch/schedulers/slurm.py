"""Slurm scheduler: an sbatch script per job, submitted and watched on a login node.

Submit renders the script (slurm_script.py) and sends it with ``sbatch --parsable`` in one
round trip, even for many jobs. Status is batched so slurmctld is not hammered: ONE
``squeue`` for every job not known to be finished and ONE ``sacct -X -P`` for the rest per
refresh; finished jobs are cached (zero calls once every job is terminal); when the cluster
keeps no accounting, that is detected once (remembered under $WARPFORGE_HOME) and
``scontrol show job`` replaces sacct. Every client call has a deadline: a down slurmctld
blocks clients for about 9 s each, and the user gets exit 3, not a hang.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
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
from warpforge_launch.payload import snakegrinder_argv
from warpforge_launch.schedulers import slurm_parse as sp
from warpforge_launch.schedulers.base import Scheduler, SubmissionPlan, Submitted
from warpforge_launch.schedulers.slurm_transport import (
    Completed,
    LocalTransport,
    SshTransport,
    Transport,
)

_NATIVE = re.compile(r"^\d+$")
_UNREACHABLE = ("unable to contact slurm controller", "socket timed out",
                "connection refused", "zero bytes were transmitted", "communication connection",
                "slurm_persist_conn_open", "unable to establish")
_INVALID_ID = "invalid job id specified"
_MAX_LOG_BYTES = 256 * 1024


@dataclass(frozen=True)
class SlurmRequest:
    """The batch script sbatch receives."""

    script: str

    def to_dict(self) -> dict[str, str]:
        return {"script": self.script}

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
    work_dir: str = "/scratch/warpforge"           # shared storage: login + compute nodes
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
        self._terminal: dict[str, JobStatus] = {}      # native id -> final status
        self._last: dict[str, tuple[float, JobStatus]] = {}  # native -> (monotonic, status)
        self._accounting: bool | None = None
        self.calls: list[str] = []                     # client commands run (benchmarks)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        if self._transport is None:
            c = self.config
            if c.login_host:
                self._transport = SshTransport(
                    c.login_host, port=c.login_port, user=c.login_user,
                    identity_file=c.identity_file, known_hosts_file=c.known_hosts_file,
                    control_dir=self.home / "ssh", control_persist=c.control_persist_seconds,
                    connect_timeout=min(10.0, c.command_timeout))
            else:
                self._transport = LocalTransport()
        return self._transport

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["env", f"SLURM_CONF={self.config.slurm_conf}", *argv] \
            if self.config.slurm_conf else list(argv)

    def _run(self, argv: Sequence[str], *, input: str | None = None,
             timeout: float | None = None) -> Completed:
        self.calls.append(argv[0])
        done = self.transport.run(self._argv(argv), input=input,
                                  timeout=timeout or self.config.command_timeout)
        if done.returncode != 0 and any(s in done.stderr.lower() for s in _UNREACHABLE):
            raise InfrastructureError(
                f"Slurm controller unreachable from {self.transport.where}: "
                f"{_first_line(done.stderr)}", hint="is slurmctld running? `sinfo` should answer")
        return done

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _native(self, job_id: str) -> str:
        native = self.native_id(job_id)
        if not _NATIVE.match(native):
            raise NotFoundError(f"{job_id!r} is not a Slurm job id of {self.name!r} "
                                f"(expected {self.name}-<number>)")
        return native

    @property
    def work_dir(self) -> str:
        from warpforge_launch.schedulers.slurm_script import ScriptError, validate_work_dir
        try:
            return validate_work_dir(self.config.work_dir)
        except ScriptError as exc:
            raise UsageError(f"schedulers.{self.name}.{exc}") from None

    # -- capabilities / plan / execute -------------------------------------------------------
    def capabilities(self) -> SchedulerCapabilities:
        return SchedulerCapabilities(
            gpu_scheduling=True,
            supported_gpu_types={GpuType.NONE, GpuType.NVIDIA, GpuType.AMD, GpuType.ANY},
            queue_priority=bool(self.config.qos_by_priority or self.config.nice_from_priority),
            node_affinity=True, job_arrays=False)

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
            environment=tuple(sorted(d.environment.items())), extra_options=tuple(c.extra_sbatch))

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

    def plan(self, submission: JobSubmission) -> SubmissionPlan:
        from warpforge_launch.schedulers import slurm_script as ss

        spec = self.script_spec(submission)
        try:
            script = ss.render(spec)
        except ss.ScriptError as exc:
            raise UsageError(str(exc)) from None
        payload = tuple(a.replace(ss.OUT_DIR_TOKEN, f"{spec.work_dir}/output-$SLURM_JOB_ID")
                        for a in spec.argv)
        return SubmissionPlan(self.name, None, "sbatch", payload, SlurmRequest(script),
                              str(submission.correlation_id))

    def execute(self, plan: SubmissionPlan[SlurmRequest]) -> Submitted:
        return Submitted(self.native_id(self.execute_many([plan])[0]))

    def submit_many(self, submissions: Sequence[JobSubmission]) -> list[str]:
        """Submit a sweep in one round trip to the login node."""
        return self.execute_many([self.plan(s) for s in submissions])

    def execute_many(self, plans: Sequence[SubmissionPlan]) -> list[str]:
        """Upload every script and run sbatch for each in ONE remote shell (one SSH round
        trip for a whole sweep). Raises on the first rejected script, after the others were
        submitted, naming how many went in."""
        if not plans:
            return []
        names, archive = [], io.BytesIO()
        stamp = f"{int(time.time())}-{os.urandom(4).hex()}"
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for i, plan in enumerate(plans):
                if plan.kind != "sbatch" or not isinstance(plan.request, SlurmRequest):
                    raise UsageError(f"plan for {plan.instance} is not an sbatch plan")
                name = f"warpforge-{stamp}-{i}.sbatch"
                data = plan.request.script.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(data))
                names.append(name)
        done = self._run(["bash", "-c", _SUBMIT_DRIVER, "warpforge-submit", self.work_dir,
                          *names], input=base64.b64encode(archive.getvalue()).decode() + "\n",
                         timeout=self.config.command_timeout + 0.5 * len(plans))
        if done.returncode in (90, 91):
            raise InfrastructureError(f"cannot write the job scripts to {self.work_dir}/scripts "
                                      f"on {self.transport.where}: {_first_line(done.stderr)}")
        results: dict[str, tuple[int, str]] = {}
        for line in done.stdout.splitlines():
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "WF" and parts[2].lstrip("-").isdigit():
                out = parts[3] if len(parts) == 4 else ""
                results[parts[1]] = (int(parts[2]), out.replace(" // ", "\n"))
        ids, failures = [], []
        for name in names:
            rc, out = results.get(name, (-1, done.stderr or "no answer from the submit driver"))
            if rc == 0:
                try:
                    ids.append(self.job_id(sp.parse_sbatch_parsable(out)))
                    continue
                except ValueError:
                    pass
            failures.append(out)
        if failures:
            low = failures[0].lower()
            msg = sp.sbatch_error_line(failures[0])
            if any(s in low for s in _UNREACHABLE):
                raise InfrastructureError(f"Slurm controller unreachable: {msg}")
            done_note = f" ({len(ids)} of {len(plans)} submitted: {', '.join(ids)})" if ids else ""
            raise UsageError(f"sbatch rejected the job: {msg}{done_note}",
                             hint="check partition, GRES and limits with `sinfo`")
        return ids

    # -- status -------------------------------------------------------------------------------
    def _state_file(self) -> Path:
        return self.home / "slurm" / f"{self.name}.json"

    def accounting_enabled(self) -> bool | None:
        """True/False once known (remembered across processes), None before the first sacct."""
        if self._accounting is None:
            try:
                self._accounting = json.loads(self._state_file().read_text())["accounting"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return self._accounting

    def _remember_accounting(self, enabled: bool) -> None:
        self._accounting = enabled
        path = self._state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"accounting": enabled, "checked_at":
                                    datetime.now(UTC).isoformat()}))

    def poll_interval(self, job_id: str) -> float:
        """Adaptive refresh interval: 0.5 s while a job is young, a tenth of its elapsed time
        after that, capped by max_poll_interval. ``statuses`` answers from memory inside this
        interval, so a tight --wait loop cannot hammer slurmctld."""
        seen = self._last.get(self._native(job_id))
        return self._interval(seen[1]) if seen else 0.0

    def _interval(self, status: JobStatus) -> float:
        elapsed = status.elapsed.total_seconds() if status.elapsed else 0.0
        return max(0.5, min(self.config.max_poll_interval, elapsed / 10))

    def status(self, job_id: str) -> JobStatus:
        got = self.statuses([job_id])
        if job_id not in got:
            raise NotFoundError(f"Slurm does not know job {job_id}",
                                hint="finished jobs leave squeue after MinJobAge; without "
                                "accounting (sacct) they cannot be found later")
        return got[job_id]

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        out: dict[str, JobStatus] = {}
        todo: dict[str, str] = {}
        now = time.monotonic()
        for job_id in job_ids:
            native = self._native(job_id)
            seen = self._last.get(native)
            if native in self._terminal:
                out[job_id] = self._terminal[native]
            elif seen is not None and now - seen[0] < self._interval(seen[1]):
                out[job_id] = seen[1]  # asked again too soon: answer from memory
            else:
                todo[native] = job_id
        if not todo:
            return out  # every job final and cached: no Slurm call at all
        records = self._fetch(sorted(todo, key=int))
        now = time.monotonic()
        for native, job_id in todo.items():
            rec = records.get(native)
            if rec is None:
                continue
            status = self._to_status(job_id, rec)
            self._last[native] = (now, status)
            if rec.terminal and rec.source != "squeue":  # squeue lacks the exit code
                self._terminal[native] = status
            out[job_id] = status
        return out

    def _fetch(self, natives: list[str]) -> dict[str, sp.SlurmRecord]:
        if self.accounting_enabled() is False:
            return self._scontrol(natives)
        queued = self._squeue(natives)
        active = {n: r for n, r in queued.items() if not r.terminal}
        rest = [n for n in natives if n not in active]
        if not rest:
            return active
        done = self._sacct(rest)
        if done is None:  # accounting disabled: detected now, remembered from here on
            done = self._scontrol(rest)
        merged = dict(active)
        for n in rest:
            rec = done.get(n)
            if rec is not None and (rec.terminal or n not in queued):
                merged[n] = rec
            elif n in queued:
                merged[n] = queued[n]  # finished per squeue, accounting not caught up yet
        return merged

    def _squeue(self, natives: list[str]) -> dict[str, sp.SlurmRecord]:
        done = self._run(["squeue", "-h", "-t", "all", "-j", ",".join(natives),
                          "-o", sp.SQUEUE_FORMAT])
        if done.returncode != 0:
            if _INVALID_ID in done.stderr.lower():
                return {}  # every id has left squeue (22.05 exits 1 for that)
            raise InfrastructureError(f"squeue failed: {_first_line(done.stderr)}")
        return sp.parse_squeue(done.stdout)

    def _sacct(self, natives: list[str]) -> dict[str, sp.SlurmRecord] | None:
        done = self._run(["sacct", "-X", "-P", "-n", "-j", ",".join(natives),
                          f"--format={sp.SACCT_FIELDS}"])
        if done.returncode != 0:
            if sp.accounting_disabled(done.stderr):
                self._remember_accounting(False)
                return None
            raise InfrastructureError(f"sacct failed: {_first_line(done.stderr)}",
                                      hint="is slurmdbd up?")
        if self._accounting is not True:
            self._remember_accounting(True)
        return sp.parse_sacct(done.stdout)

    def _scontrol(self, natives: list[str]) -> dict[str, sp.SlurmRecord]:
        # one call for every job the controller still holds (ids given one by one would
        # make it one call per job; an unknown id among several fails the whole call)
        done = self._run(["scontrol", "-o", "show", "job"])
        if done.returncode != 0 and _INVALID_ID not in done.stderr.lower():
            raise InfrastructureError(f"scontrol failed: {_first_line(done.stderr)}")
        wanted = set(natives)
        return {n: r for n, r in sp.parse_scontrol_jobs(done.stdout).items() if n in wanted}

    def _to_status(self, job_id: str, rec: sp.SlurmRecord) -> JobStatus:
        changed = rec.ended or rec.started or rec.submitted
        meta = {"slurm_state": rec.slurm_state, "source": rec.source}
        if rec.exit_code is not None:
            meta["exit_code"] = rec.exit_code
        if rec.signal:
            meta["signal"] = rec.signal
        if rec.reason and rec.reason not in ("None", "(null)"):
            meta["reason"] = rec.reason
        return JobStatus(
            job_id=job_id, correlation_id=None, state=JobState(rec.state),
            state_changed_at=changed.astimezone() if changed else None,  # cluster local time
            node_name=rec.node, elapsed=rec.elapsed, message=rec.message,
            scheduler_metadata=meta)

    # -- results and logs ----------------------------------------------------------------------
    def _read_files(self, native: str, max_bytes: int = _MAX_LOG_BYTES,
                    offsets: tuple[int, int] | None = None) -> dict[str, str]:
        """One round trip: stdout/err files (tail, or from byte offsets), the output dir
        listing, model.mlir and manifest.json; sections base64-framed."""
        argv = ["bash", "-c", _READ_DRIVER, "warpforge-read", self.work_dir, native,
                str(max_bytes)]
        if offsets is not None:
            argv += [str(offsets[0]), str(offsets[1])]
        done = self._run(argv)
        sections: dict[str, str] = {}
        for line in done.stdout.splitlines():
            parts = line.split(" ")
            if len(parts) == 3 and parts[0] == "WF":
                raw = base64.b64decode(parts[2])
                sections[parts[1]] = raw.decode(errors="replace")
                sections[parts[1] + "_bytes"] = str(len(raw))
        return sections

    def result(self, job_id: str) -> JobResult:
        native = self._native(job_id)
        status = self.status(job_id)
        if not status.state.terminal:
            raise UsageError(f"job {job_id} has not finished ({status.state.value})")
        files = self._read_files(native)
        out_dir = f"{self.work_dir}/output-{native}"
        outputs = tuple(f"{out_dir}/{n}" for n in files.get("list", "").splitlines() if n)
        exit_code = status.scheduler_metadata.get("exit_code")
        log_tail = _tail(files.get("out", "") + files.get("err", ""), 40)
        error = None
        if not status.state.success:
            err_line = _last_line(files.get("err", "")) or _last_line(files.get("out", ""))
            error = "; ".join(p for p in (f"{status.state.value.lower()}", status.message,
                                          err_line) if p)
        return JobResult(
            job_id=job_id, correlation_id=None, success=status.state.success, outputs=outputs,
            mlir_output=files.get("mlir") or None, execution_time=status.elapsed,
            error_message=error, exit_code=exit_code, log_tail=log_tail,
            metrics={"elapsed_seconds": status.elapsed.total_seconds()} if status.elapsed else {})

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        native = self._native(job_id)
        if not follow:
            files = self._read_files(native)
            yield files.get("out", "") + files.get("err", "")
            return
        offsets = [0, 0]
        while True:
            status = self.status(job_id)
            files = self._read_files(native, offsets=(offsets[0], offsets[1]))
            for i, key in enumerate(("out", "err")):
                chunk = files.get(key, "")
                if chunk:
                    offsets[i] += int(files.get(key + "_bytes", len(chunk.encode())))
                    yield chunk
            if status.state.terminal:
                return
            time.sleep(self.poll_interval(job_id))

    # -- cancel / list / cluster -----------------------------------------------------------------
    def cancel(self, job_id: str) -> bool:
        native = self._native(job_id)
        status = self.status(job_id)
        if status.state.terminal:
            return False
        done = self._run(["scancel", native])
        if done.returncode != 0:
            low = done.stderr.lower()
            if "already completing or completed" in low or _INVALID_ID in low:
                return False
            raise InfrastructureError(f"scancel failed: {_first_line(done.stderr)}")
        self._last.pop(native, None)
        return True

    def list(self, query: JobQuery) -> list[JobStatus]:
        """warpforge jobs (named warpforge-*) that squeue and, with accounting, sacct know."""
        done = self._run(["squeue", "-h", "-t", "all", "-o", sp.SQUEUE_FORMAT + "|%j"])
        if done.returncode != 0:
            raise InfrastructureError(f"squeue failed: {_first_line(done.stderr)}")
        names = {ln.split("|")[0]: ln.rsplit("|", 1)[-1] for ln in done.stdout.splitlines()
                 if ln.count("|") >= 7}
        records = {n: r for n, r in sp.parse_squeue(done.stdout).items()
                   if names.get(n, "").startswith("warpforge-")}
        if self.accounting_enabled() is not False:
            argv = ["sacct", "-X", "-P", "-n", f"--format={sp.SACCT_FIELDS},JobName"]
            if query.submitted_after:
                argv += ["-S", query.submitted_after.astimezone().strftime("%Y-%m-%dT%H:%M:%S")]
            acct = self._run(argv)
            if acct.returncode == 0:
                for line in acct.stdout.splitlines():
                    native, _, _ = line.partition("|")
                    if line.rsplit("|", 1)[-1].startswith("warpforge-"):
                        rec = sp.parse_sacct(line.rsplit("|", 1)[0]).get(native)
                        if rec is not None and (native not in records or rec.terminal):
                            records[native] = rec
            elif sp.accounting_disabled(acct.stderr):
                self._remember_accounting(False)
        statuses = [self._to_status(self.job_id(n), r) for n, r in records.items()]
        if query.states:
            statuses = [s for s in statuses if s.state in query.states]
        statuses.sort(key=lambda s: int(self.native_id(s.job_id)), reverse=True)
        return statuses[: query.limit] if query.limit else statuses

    def cluster_info(self) -> ClusterInfo:
        version = self._run(["sinfo", "--version"])
        nodes_out = self._run(["sinfo", "-N", "-h", "-o", sp.SINFO_FORMAT])
        if nodes_out.returncode != 0:
            raise InfrastructureError(f"sinfo failed: {_first_line(nodes_out.stderr)}")
        nodes = sp.parse_sinfo_nodes(nodes_out.stdout)
        totals: dict[str, int] = {}
        infos = []
        for n in nodes:
            for kind, count in n.gpus.items():
                totals[kind] = totals.get(kind, 0) + count
            infos.append(NodeInfo(n.name, n.state, _gpu_type(n.gpus), sum(n.gpus.values()),
                                  n.memory_mb, n.cpus))
        return ClusterInfo(
            scheduler_name=self.name,
            scheduler_version=sp.parse_version(version.stdout) if version.returncode == 0
            else "unknown",
            total_nodes=len(nodes), available_nodes=sum(1 for n in nodes if n.available),
            gpus_by_type=totals, nodes=tuple(infos),
            details={"partitions": sorted({p for n in nodes for p in n.partitions}),
                     "login": self.transport.where, "work_dir": self.work_dir,
                     "runtime": self.config.runtime, "accounting": self.accounting_enabled()})


def _gpu_type(gpus: dict[str, int]) -> GpuType:
    kinds = {k for k, v in gpus.items() if v}
    if not kinds:
        return GpuType.NONE
    if kinds == {"nvidia"}:
        return GpuType.NVIDIA
    if kinds == {"amd"}:
        return GpuType.AMD
    return GpuType.ANY


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


# Remote shell programs: fixed text, never formatted; data arrives as "$@" or on stdin.
# Submit: args work_dir and the script names; stdin is a base64 tar of the scripts (two
# processes for the whole upload, however many jobs). Prints per job
# "WF <name> <sbatch rc> <sbatch output, newlines as ' // '>".
_SUBMIT_DRIVER = r"""
dir=$1; shift
mkdir -p -- "$dir/scripts" || exit 90
base64 -d | tar -x -o -C "$dir/scripts" -f - || exit 91
for name in "$@"; do
  case $name in ''|*[!A-Za-z0-9._-]*) continue ;; esac
  out=$(sbatch --parsable "$dir/scripts/$name" 2>&1 </dev/null); rc=$?
  printf 'WF %s %d %s\n' "$name" "$rc" "${out//$'\n'/ // }"
done
"""

# Read: args work_dir native max_bytes [out_offset err_offset]; prints "WF <section> <b64>".
_READ_DRIVER = r"""
d=$1; id=$2; max=$3
emit() { printf 'WF %s ' "$1"; base64 -w0; echo; }
for s in out err; do
  f="$d/warpforge-$id.$s"
  [ -f "$f" ] || continue
  if [ $# -ge 5 ]; then
    if [ "$s" = out ]; then off=$4; else off=$5; fi
    tail -c +"$((off + 1))" -- "$f" | head -c "$max" | emit "$s"
  else
    tail -c "$max" -- "$f" | emit "$s"
  fi
done
[ $# -ge 5 ] && exit 0
o="$d/output-$id"
if [ -d "$o" ]; then
  (cd -- "$o" && find . -type f | sed 's|^\./||' | sort) | emit list
  [ -f "$o/model.mlir" ] && head -c 8388608 -- "$o/model.mlir" | emit mlir
  [ -f "$o/manifest.json" ] && head -c 1048576 -- "$o/manifest.json" | emit manifest
fi
exit 0
"""
