"""Supervisor of one Local job: runs in its own session, detached from the submitting CLI.

It waits for a free slot (the concurrency limit), runs the snakegrinder argv with no shell
in a new process group, enforces the timeout, turns SIGTERM into a cancel, and records every
state change in the job directory. As a child subreaper it also inherits grandchildren that
daemonize, so a cancel or timeout leaves nothing running. It runs with umask 077, and so
does the payload it starts: the logs, ``out/`` and whatever the payload writes are private.

Usage: python -m warpforge_launch.schedulers.local_supervisor JOB_DIR
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import signal
import subprocess
import sys
import time

from warpforge_launch.schedulers.local_state import (
    CANCEL,
    REQUEST,
    STATE,
    now_iso,
    proc_start_time,
    read_json,
    send_signal,
    write_json,
)

PR_SET_CHILD_SUBREAPER = 36


class Supervisor:
    def __init__(self, job_dir: str):
        self.job_dir = job_dir
        self.request = read_json(os.path.join(job_dir, REQUEST)) or {}
        self.state = read_json(os.path.join(job_dir, STATE)) or {}
        self.cancelled = False
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select when a child ends
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by the submitter

    def _on_term(self, *_):
        self.cancelled = True

    def cancel_asked(self) -> bool:
        """A SIGTERM, or the cancel mark (written before any job of a cancel is signalled,
        so it is there even when a slot frees before this supervisor's signal arrives)."""
        return self.cancelled or os.path.exists(os.path.join(self.job_dir, CANCEL))

    def record(self, state: str, **fields) -> None:
        self.state.update(fields, state=state, state_changed_at=now_iso())
        write_json(os.path.join(self.job_dir, STATE), self.state)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def acquire_slot(self) -> int | None:
        """Hold one of N lock files for the job's life; the kernel frees it if we die."""
        slots = os.path.join(self.request["work_dir"], "slots")
        os.makedirs(slots, exist_ok=True)
        limit = max(1, int(self.request["max_concurrent_jobs"]))
        delay = 0.005
        while not self.cancel_asked():
            for i in range(limit):
                fd = os.open(os.path.join(slots, f"{i}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                if self.cancel_asked():  # the mark may have come while we waited
                    os.close(fd)
                    return None
                return fd
            select.select([self.wake_r], [], [], delay)
            self._drain_wakeups()
            delay = min(delay * 2, 0.2)
        return None

    def run(self) -> int:
        if not self.request:
            return 2
        os.umask(0o077)
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        slot = self.acquire_slot()
        if slot is None:
            self.record("CANCELLED", message="cancelled while waiting for a free slot",
                        finished_at=now_iso())
            return 0
        env = dict(os.environ)
        env.update(self.request.get("env", {}))
        out = os.path.join(self.job_dir, "out")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(self.job_dir, "stdout.log"), "ab") as so, \
             open(os.path.join(self.job_dir, "stderr.log"), "ab") as se:
            try:
                proc = subprocess.Popen(self.request["argv"], stdin=subprocess.DEVNULL,
                                        stdout=so, stderr=se, env=env, cwd=self.request["cwd"],
                                        start_new_session=True, close_fds=True)
            except OSError as exc:
                self.record("FAILED", message=f"cannot start {self.request['argv'][0]}: "
                            f"{exc.strerror}", finished_at=now_iso())
                return 0
        self.record("RUNNING", payload_pid=proc.pid, payload_start=proc_start_time(proc.pid),
                    started_at=now_iso())
        outcome, message = self.watch(proc)
        rc = proc.returncode
        self.kill_everything(proc, grace=0)  # leftovers of a finished payload
        if outcome is None:
            outcome = "COMPLETED" if rc == 0 else "FAILED"
            message = "" if rc == 0 else describe_exit(rc, self.job_dir)
        self.record(outcome, exit_code=rc, message=message, finished_at=now_iso())
        return 0

    def watch(self, proc: subprocess.Popen) -> tuple[str | None, str]:
        """Block until the payload exits, the timeout passes or a cancel arrives."""
        deadline = time.monotonic() + float(self.request["timeout_seconds"])
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None
        while True:
            if proc.poll() is not None:
                return None, ""
            if self.cancelled:
                self.kill_everything(proc, self.request["kill_grace_seconds"])
                return "CANCELLED", "cancelled by request"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill_everything(proc, self.request["kill_grace_seconds"])
                return "TIMEOUT", f"timed out after {self.request['timeout_seconds']:g} s"
            watched = [self.wake_r] + ([pidfd] if pidfd is not None else [])
            select.select(watched, [], [], min(remaining, 0.5 if pidfd is not None else 0.02))
            self._drain_wakeups()

    def kill_everything(self, proc: subprocess.Popen, grace: float) -> None:
        """TERM then KILL the payload's group and every descendant we inherited.

        The payload's own pid is signalled only while it is our unreaped child (so it cannot
        have been reused); inherited descendants only while their start time still matches."""
        for sig in ((signal.SIGTERM, signal.SIGKILL) if grace else (signal.SIGKILL,)):
            if proc.returncode is None:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(proc.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            for pid, start in descendants(os.getpid()).items():
                if pid != proc.pid:
                    send_signal(pid, start, sig)
            if sig == signal.SIGTERM:
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
        proc.wait()
        reap()


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``, with its kernel start time."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append((int(entry), fields[19]))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child, start in children.get(todo.pop(), []):
            if child not in found:
                found[child] = start
                todo.append(child)
    return found


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def describe_exit(rc: int, job_dir: str) -> str:
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    tails = {}
    for name in ("stderr.log", "stdout.log"):
        try:
            with open(os.path.join(job_dir, name), "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        tails[name] = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = tails["stderr.log"] + tails["stdout.log"]
    # snakegrinder's own verdict line wins over whatever else was printed last
    failed = [ln for ln in lines if ln.startswith("FAILED:")]
    last = failed[-1] if failed else (tails["stderr.log"] or tails["stdout.log"] or [""])[-1]
    return f"exit code {rc}" + (f": {last}" if last else "")


def main() -> int:
    return Supervisor(sys.argv[1]).run()


if __name__ == "__main__":
    sys.exit(main())
