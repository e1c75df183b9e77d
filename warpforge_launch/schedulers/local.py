"""Local scheduler: runs the payload on this machine, for real, with no cluster.

``execute`` returns at once; a detached supervisor (local_supervisor.py) runs the job.
Its state lives in the job directory, so status works from any later process, and a
supervisor that was killed is detected (pid + kernel start time) and reported as FAILED.
Each instance has a work dir of its own (its job directories and its slots), so
``max_concurrent_jobs`` is per instance. Local runs jobs on this host only.
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
    work_dir: str | None = None  # default: $WARPFORGE_HOME/local/<instance>
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


def work_dir_of(name: str, config: LocalConfig, home: Path) -> Path:
    """An instance's job directories and slots: its own, so instances never share slots."""
    return Path(config.work_dir).expanduser() if config.work_dir else home / "local" / name


def this_host() -> set[str]:
    """The names a node affinity may give for the one host Local runs on."""
    host = socket.gethostname()
    return {host, host.split(".")[0], "localhost"}


class LocalScheduler(Scheduler):
    type_name = "local"
    Config = LocalConfig

    @property
    def work_dir(self) -> Path:
        return work_dir_of(self.name, self.config, self.home)

    @property
    def _former_work_dir(self) -> Path | None:
        """Where jobs of every instance went before each had its own default work dir
        ($WARPFORGE_HOME/local/<id>/): still read, never written or moved."""
        return None if self.config.work_dir else self.home / "local"

    @property
    def max_concurrent(self) -> int:
        return self.config.max_concurrent_jobs or os.cpu_count() or 1

    def job_dir(self, job_id: str) -> Path:
        native = self.native_id(job_id)
        if not native.isalnum():
            raise NotFoundError(f"no local job {job_id!r}")
        path = self.work_dir / native
        if not path.exists() and self._former_work_dir is not None:
            former = self._former_work_dir / native
            if self._is_mine(former):
                return former
        return path

    def _is_mine(self, job_dir: Path) -> bool:
        """A job directory of the former shared work dir belongs to this instance when its
        request carries this instance's job id."""
        request = ls.read_json(str(job_dir / ls.REQUEST)) or {}
        return (request.get("env") or {}).get("WARPFORGE_JOB_ID") == self.job_id(job_dir.name)

    def _make_work_dir(self) -> None:
        """Created 0700, the default's parent ($WARPFORGE_HOME/local) too."""
        if self._former_work_dir is not None:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._former_work_dir.mkdir(exist_ok=True, mode=0o700)
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def capabilities(self) -> SchedulerCapabilities:
        return SchedulerCapabilities(gpu_scheduling=False, supported_gpu_types={GpuType.NONE},
                                     max_concurrent_jobs=self.max_concurrent)

    def plan(self, submission: JobSubmission) -> SubmissionPlan:
        d = submission.definition
        elsewhere = sorted(d.resources.node_affinity - this_host())
        if elsewhere:
            raise UsageError(f"scheduler {self.name!r} (local) runs jobs on this host "
                             f"({socket.gethostname()}) only, not on {', '.join(elsewhere)}",
                             hint="drop the node affinity, or use a Slurm, Ray or "
                             "Kubernetes scheduler")
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
        if job_dir.parent == self.work_dir:
            self._make_work_dir()
        else:
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
            log_fd = ls.open_private(str(job_dir / "supervisor.log"),
                                     os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            with open(log_fd, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "warpforge_launch.schedulers.local_supervisor",
                     str(job_dir)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True, close_fds=True, env=_supervisor_env(hidden))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        _children.append(proc)
        start = ls.proc_start_time(proc.pid)
        ls.write_private(str(job_dir / ls.SUPERVISOR_PID), f"{proc.pid} {start}\n")
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
            request = ls.read_json(str(self.job_dir(self.job_id(native)) / ls.REQUEST)) or {}
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
        return self.cancel_many([job_id])[job_id]

    def cancel_many(self, job_ids: Sequence[str]) -> dict[str, bool]:
        """Every job gets its cancel mark before any is signalled, and queued jobs are
        signalled before running ones: a slot that a cancelled job frees is never taken by
        a queued job of the same cancel (the supervisor checks the mark before it starts
        the payload). Then one wait for all of them."""
        active = {}
        for job_id in job_ids:
            job_dir, state = self._read(job_id)
            if not JobState(state["state"]).terminal:
                active[job_id] = (job_dir, state["state"] == JobState.RUNNING.value)
        for job_dir, _ in active.values():
            os.close(ls.open_private(str(job_dir / ls.CANCEL), os.O_WRONLY | os.O_CREAT))
        for job_dir, _ in sorted(active.values(), key=lambda v: v[1]):  # queued first
            found = self._supervisor(job_dir)
            if found is not None:
                ls.send_signal(*found, signal.SIGTERM)
        states: dict[str, JobState] = {}

        def all_stopped() -> bool:
            for job_id in active:
                if job_id not in states or not states[job_id].terminal:
                    states[job_id] = JobState(self._read(job_id)[1]["state"])
            return all(st.terminal for st in states.values())

        grace = self.config.kill_grace_seconds + 5
        if not ls.wait_until(all_stopped, grace):
            left = [j for j in active if not states[j].terminal]
            raise InfrastructureError(f"job{'s' if len(left) > 1 else ''} {', '.join(left)} "
                                      f"did not stop within {grace:g} s")
        return {j: states.get(j) is JobState.CANCELLED for j in job_ids}

    def list(self, query: JobQuery) -> list[JobStatus]:
        found = []
        for d in self._job_dirs():
            st = self.status(self.job_id(d.name))
            if not query.states or st.state in query.states:
                found.append(st)
        return found[: query.limit] if query.limit else found

    def _job_dirs(self) -> list[Path]:
        """This instance's job directories, with its jobs left in the former shared one."""
        dirs = [d for d in _children_of(self.work_dir) if (d / ls.STATE).is_file()]
        if self._former_work_dir is not None:
            dirs += [d for d in _children_of(self._former_work_dir)
                     if (d / ls.STATE).is_file() and self._is_mine(d)]
        return sorted(dirs, key=lambda d: d.name)

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
        return ClusterInfo(self.name, f"warpforge-launch {__version__}", 1, 1, {},
                           (node,),
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


def _children_of(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


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


