"""The Local backend's on-disk record of one job, shared by the scheduler and its supervisor.

Each job has a directory: ``job.json`` (the plan's request), ``state.json`` (rewritten
atomically by the supervisor), ``supervisor.pid`` (written by the submitter), the payload's
``stdout.log``/``stderr.log``, the ``out/`` directory and, once a cancel was asked for,
``cancel``. Every file is the user's alone (0600, directories 0700). Kept import-light: the
supervisor starts with it on every job.
"""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime

STATE = "state.json"
REQUEST = "job.json"
SUPERVISOR_PID = "supervisor.pid"
CANCEL = "cancel"  # the cancel mark: a queued job that finds it never starts its payload
PRIVATE = 0o600


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def open_private(path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """A file only its owner can read, whatever the caller's umask (0600)."""
    return os.open(path, flags | os.O_CLOEXEC, PRIVATE)


def write_json(path: str, data: dict) -> None:
    """Stage then rename: a reader never sees half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with os.fdopen(open_private(tmp), "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def write_private(path: str, text: str) -> None:
    with os.fdopen(open_private(path), "w") as f:
        f.write(text)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of a live, non-zombie process (guards against pid reuse)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def alive(pid: int | None, start_time: str | None) -> bool:
    return bool(pid) and start_time is not None and proc_start_time(pid) == start_time


def send_signal(pid: int | None, start_time: str | None, sig: int, *, group: bool = False
                ) -> bool:
    """Signal ``pid`` (or the process group it leads) only while it is still the process
    that started at ``start_time``: a pid the kernel gave to another process is never hit.
    The pidfd pins the process between the identity check and the signal."""
    if not pid or start_time is None:
        return False
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if proc_start_time(pid) != start_time:
            return False
        if group:
            os.killpg(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(fd)


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
