"""Local scheduler: runs the payload on this machine, for real, with no cluster.

``execute`` returns at once; a detached supervisor (local_supervisor.py) runs the job.
Its state lives in the job directory, so status works from any later process, and a
supervisor that was killed is detected (pid + kernel start time) and reported as FAILED.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from warpforge_launch import __version__, secrets
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
    check_source,
)
from warpforge_launch.payload import snakegrinder_argv
from warpforge_launch.schedulers import local_state as ls
from warpforge_launch.schedulers.base import BatchPlan, Scheduler, SubmissionPlan, Submitted


@dataclass(frozen=True)
class LocalRequest:
    """The job request the detached supervisor reads from its job file.

    Secret variables appear by name only: their values reach the supervisor through its
    process environment (readable by the same user only), never through a file."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    job_dir: str
    work_dir: str
    timeout_seconds: float
    kill_grace_seconds: float
    max_concurrent_jobs: int
    secret_env: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "env": dict(self.env), "cwd": self.cwd,
                "job_dir": self.job_dir, "work_dir": self.work_dir,
                "timeout_seconds": self.timeout_seconds,
                "kill_grace_seconds": self.kill_grace_seconds,
                "max_concurrent_jobs": self.max_concurrent_jobs,
                "secret_env": list(self.secret_env)}

    def render(self) -> str:
        shown = self.to_dict()
        shown["env"] = {**self.env, **secrets.masked(self.secret_env)}
        return json.dumps(shown, indent=2, sort_keys=True)


DIST_LAUNCHER = "snakegrinder-dist/build/dist/bin/snakegrinder"
# A job directory without a supervisor pid this long after its request was written was
# never started (the submitting process died in between): it is FAILED, not PENDING forever.
START_GRACE_SECONDS = 30.0
_children: list[subprocess.Popen] = []  # supervisors we spawned, reaped as we go


@dataclass(frozen=True)
class LocalConfig:
    __pydantic_config__ = {"extra": "forbid"}
    snakegrinder: str | None = None  # default: ./snakegrinder-dist/build/dist/bin, then PATH
    max_concurrent_jobs: int | None = None  # default: the CPU count
    work_dir: str | None = None  # default: $WARPFORGE_HOME/local
    kill_grace_seconds: float = 5.0


def find_snakegrinder(configured: str | None) -> str:
    """Configured path, then the dist built in this directory, then PATH."""
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UsageError(f"snakegrinder {path} is missing or not executable",
                             hint="fix schedulers.<name>.snakegrinder or --snakegrinder")
        return str(path.resolve())
    built = Path(DIST_LAUNCHER)
    if built.is_file() and os.access(built, os.X_OK):
        return str(built.resolve())
    on_path = shutil.which("snakegrinder")
    if on_path:
        return os.path.abspath(on_path)
    raise UsageError("snakegrinder not found (no --snakegrinder, no ./" + DIST_LAUNCHER +
                     ", not on PATH)", hint="run `invoke build`, or pass --snakegrinder PATH")


class LocalScheduler(Scheduler):
    type_name = "local"
    Config = LocalConfig

    @property
    def work_dir(self) -> Path:
        return Path(self.config.work_dir).expanduser() if self.config.work_dir \
            else self.home / "local"

    @property
    def max_concurrent(self) -> int:
        return self.config.max_concurrent_jobs or os.cpu_count() or 1

    def job_dir(self, job_id: str) -> Path:
        native = self.native_id(job_id)
        if not native.isalnum():
            raise NotFoundError(f"no local job {job_id!r}")
        return self.work_dir / native

    def capabilities(self) -> SchedulerCapabilities:
        return SchedulerCapabilities(gpu_scheduling=False, supported_gpu_types={GpuType.NONE},
                                     max_concurrent_jobs=self.max_concurrent)

    def plan(self, submission: JobSubmission) -> SubmissionPlan:
        d = submission.definition
        check_source(d.source)
        native = submission.short_id
        job_dir = self.work_dir / native
        argv = snakegrinder_argv(find_snakegrinder(self.config.snakegrinder), d,
                                 str(job_dir / "out"))
        env = dict(d.environment)
        env.update(WARPFORGE_JOB_ID=self.job_id(native),
                   WARPFORGE_CORRELATION_ID=submission.correlation_id)
        source_dir = str(Path(d.source).resolve().parent)
        request = LocalRequest(tuple(argv), env, source_dir, str(job_dir), str(self.work_dir),
                               d.timeout.total_seconds(), self.config.kill_grace_seconds,
                               self.max_concurrent, tuple(d.secret_env))
        return SubmissionPlan(self.name, native, "local-process", tuple(argv), request,
                              submission.correlation_id)

    def plan_batch(self, submissions: Sequence[JobSubmission], *,
                   throttle: int | None = None) -> BatchPlan:
        """Each job its own supervisor, all queued on the instance's slots: at most
        ``max_concurrent_jobs`` (or ``throttle``, if lower) of them run at once."""
        batch = super().plan_batch(submissions)
        if not throttle or throttle >= self.max_concurrent:
            return batch
        jobs = tuple(dataclasses.replace(p, request=dataclasses.replace(
            p.request, max_concurrent_jobs=throttle)) for p in batch.jobs)
        return dataclasses.replace(batch, jobs=jobs, requests=tuple(p.request for p in jobs))

    def execute(self, plan: SubmissionPlan[LocalRequest]) -> Submitted:
        hidden = secrets.resolve(plan.request.secret_env)
        job_dir = Path(plan.request.job_dir)
        job_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            job_dir.mkdir(mode=0o700)
        except FileExistsError:
            raise UsageError(f"local job directory {job_dir} already exists") from None
        ls.write_json(str(job_dir / ls.REQUEST), plan.request.to_dict())
        ls.write_json(str(job_dir / ls.STATE), {"state": "PENDING", "state_changed_at":
                                                 ls.now_iso(), "submitted_at": ls.now_iso()})
        for child in list(_children):
            if child.poll() is not None:
                _children.remove(child)
        # SIGTERM stays blocked in the supervisor until its cancel handler is installed, so a
        # cancel sent right after submit is never lost (the mask survives fork and exec).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            with open(job_dir / "supervisor.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "warpforge_launch.schedulers.local_supervisor",
                     str(job_dir)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True, close_fds=True, env=_supervisor_env(hidden))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        _children.append(proc)
        start = ls.proc_start_time(proc.pid)
        (job_dir / ls.SUPERVISOR_PID).write_text(f"{proc.pid} {start}\n")
        return Submitted(plan.native_id)

    # -- state ---------------------------------------------------------------------------
    def _read(self, job_id: str) -> tuple[Path, dict]:
        job_dir = self.job_dir(job_id)
        state = ls.read_json(str(job_dir / ls.STATE))
        if state is None:
            raise NotFoundError(f"no local job {job_id!r} (looked in {job_dir})")
        if not JobState(state["state"]).terminal and not self._supervisor_alive(job_dir):
            state = self._fresh_or_failed(job_dir)
        return job_dir, state

    @staticmethod
    def _supervisor(job_dir: Path) -> tuple[int, str] | None:
        try:
            pid, start = (job_dir / ls.SUPERVISOR_PID).read_text().split()
            return int(pid), start
        except (OSError, ValueError):
            return None

    def _supervisor_alive(self, job_dir: Path) -> bool:
        found = self._supervisor(job_dir)
        if found is None:  # being started right now, or the submitter died before it could
            try:
                age = time.time() - (job_dir / ls.REQUEST).stat().st_mtime
            except OSError:
                return False
            return age < START_GRACE_SECONDS
        return ls.alive(*found)

    def _fresh_or_failed(self, job_dir: Path) -> dict:
        """The supervisor is gone: take its last word if it finished, else record FAILED."""
        state = ls.read_json(str(job_dir / ls.STATE)) or {}
        if JobState(state.get("state", "PENDING")).terminal:
            return state
        found = self._supervisor(job_dir)
        # only the payload that is provably ours: its pid may belong to another process now
        ls.send_signal(state.get("payload_pid"), state.get("payload_start"), signal.SIGKILL,
                       group=True)
        message = (f"supervisor process {found[0]} died before the job finished" if found
                   else "the job's supervisor was never started (the submitting process died)")
        state.update(state="FAILED", state_changed_at=ls.now_iso(), finished_at=ls.now_iso(),
                     message=message)
        ls.write_json(str(job_dir / ls.STATE), state)
        return state

    def _status(self, job_id: str, state: dict) -> JobStatus:
        started = state.get("started_at")
        elapsed = None
        if started:
            end = state.get("finished_at")
            t1 = datetime.fromisoformat(end) if end else datetime.now(
                datetime.fromisoformat(started).tzinfo)
            elapsed = t1 - datetime.fromisoformat(started)
        meta = {k: state[k] for k in ("exit_code", "payload_pid", "started_at", "finished_at")
                if state.get(k) is not None}
        return JobStatus(job_id, None, JobState(state["state"]),
                         datetime.fromisoformat(state["state_changed_at"]),
                         socket.gethostname(), elapsed, state.get("message", ""), meta)

    def status(self, job_id: str) -> JobStatus:
        return self._status(job_id, self._read(job_id)[1])

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Every job's own files; ids without a job directory are left out."""
        out = {}
        for job_id in job_ids:
            try:
                out[job_id] = self.status(job_id)
            except NotFoundError:
                continue
        return out

    def reconcile(self, correlation_ids: Sequence[str]) -> dict[str, str]:
        """A job directory is named by the correlation id's short form and its request
        carries the whole id: a directory that exists is a job this backend accepted."""
        found = {}
        for corr in correlation_ids:
            native = corr[:8]
            request = ls.read_json(str(self.work_dir / native / ls.REQUEST)) or {}
            if (request.get("env") or {}).get("WARPFORGE_CORRELATION_ID") == corr:
                found[corr] = native
        return found

    def result(self, job_id: str) -> JobResult:
        job_dir, state = self._read(job_id)
        st = JobState(state["state"])
        out = job_dir / "out"
        outputs = tuple(sorted(str(p) for p in out.rglob("*") if p.is_file())) \
            if out.is_dir() else ()
        mlir = out / "model.mlir"
        status = self._status(job_id, state)
        return JobResult(
            job_id, None, st.success, outputs,
            mlir.read_text(errors="replace") if mlir.is_file() else None,
            status.elapsed, None if st.success else (state.get("message") or st.value),
            {}, state.get("exit_code"), _tail(job_dir))

    def fetch_outputs(self, stagings) -> None:
        """Straight from the job dir: ``out/`` (the payload's --out) and the two logs."""
        from warpforge_launch import artifacts_copy as ac

        for st in stagings:
            job_dir = str(self.job_dir(st.job_id))
            st.source = f"{socket.gethostname()}:{job_dir}"
            ac.copy_tree(st, job_dir, "out")
            ac.copy_file(st, job_dir, "stdout.log", "stdout.log")
            ac.copy_file(st, job_dir, "stderr.log", "stderr.log")

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        job_dir = self.job_dir(job_id)
        self._read(job_id)
        offsets = {"stdout.log": 0, "stderr.log": 0}
        delay = 0.05
        while True:
            done = not follow or JobState(self._read(job_id)[1]["state"]).terminal
            got = False
            for name in offsets:
                try:
                    with open(job_dir / name, "rb") as f:
                        f.seek(offsets[name])
                        chunk = f.read()
                except FileNotFoundError:
                    continue
                if chunk:
                    offsets[name] += len(chunk)
                    got = True
                    yield chunk.decode(errors="replace")
            if done:
                return
            delay = 0.05 if got else min(delay * 1.5, 0.5)
            time.sleep(delay)

    def cancel(self, job_id: str) -> bool:
        job_dir, state = self._read(job_id)
        if JobState(state["state"]).terminal:
            return False
        found = self._supervisor(job_dir)
        if found is not None:
            ls.send_signal(*found, signal.SIGTERM)
        grace = self.config.kill_grace_seconds + 5
        if not ls.wait_until(lambda: JobState(self._read(job_id)[1]["state"]).terminal, grace):
            raise InfrastructureError(f"job {job_id} did not stop within {grace:g} s")
        return JobState(self._read(job_id)[1]["state"]) is JobState.CANCELLED

    def list(self, query: JobQuery) -> list[JobStatus]:
        found = []
        if self.work_dir.is_dir():
            for d in sorted(self.work_dir.iterdir()):
                if (d / ls.STATE).is_file():
                    st = self.status(self.job_id(d.name))
                    if not query.states or st.state in query.states:
                        found.append(st)
        return found[: query.limit] if query.limit else found

    def cluster_info(self) -> ClusterInfo:
        mem_mb = 0
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        mem_mb = int(line.split()[1]) // 1024
        except OSError:
            pass
        host = socket.gethostname()
        cores = os.cpu_count() or 1
        running = sum(1 for s in self.list(JobQuery(limit=None)) if s.state is JobState.RUNNING)
        node = NodeInfo(host, "up", GpuType.NONE, 0, mem_mb, cores)
        return ClusterInfo("local", __version__, 1, 1, {}, (node,),
                           {"max_concurrent_jobs": self.max_concurrent, "running_jobs": running,
                            "work_dir": str(self.work_dir)})


def _supervisor_env(hidden: dict[str, str]) -> dict[str, str]:
    """The supervisor must import this very package, wherever it was imported from; secret
    values travel in its environment (the payload inherits it), never in a file."""
    env = dict(os.environ)
    env.update(hidden)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    return env


def _tail(job_dir: Path, lines: int = 20) -> str:
    text = ""
    for name in ("stdout.log", "stderr.log"):
        try:
            with open(job_dir / name, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
                text += f.read().decode(errors="replace")
        except OSError:
            pass
    return "\n".join(text.splitlines()[-lines:])


