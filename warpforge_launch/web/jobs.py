"""Jobs for the dashboard: the refresher that keeps active rows current, and the JSON views.

The page never makes a backend call per job: one refresher thread asks each scheduler
instance once per cycle for all of its active jobs (Launcher.refresh, the batched call) and
writes the answers to the job store; the API then reads the store only. Many open browsers
therefore cost the backends nothing more than one.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from warpforge_launch.errors import LaunchError
from warpforge_launch.jobs import JobQuery, JobState, utcnow
from warpforge_launch.launcher import Launcher
from warpforge_launch.store import JobRecord, JobStore

ACTIVE = frozenset({JobState.PENDING, JobState.RUNNING})
MLIR_HEAD_LINES = 40
LOG_TAIL_CHARS = 64 * 1024


class Launchers:
    """One Launcher (and SQLite connection) per worker thread: connections stay in the
    thread that opened them."""

    def __init__(self, inventory_path: str | None, store_path: Path | None):
        self.inventory_path, self.store_path = inventory_path, store_path
        self._local = threading.local()
        self._all: list[Launcher] = []
        self._lock = threading.Lock()

    def get(self) -> Launcher:
        launcher = getattr(self._local, "launcher", None)
        if launcher is None:
            launcher = Launcher(self.inventory_path, store=JobStore(self.store_path))
            self._local.launcher = launcher
            with self._lock:
                self._all.append(launcher)
        return launcher

    def close(self) -> None:
        with self._lock:
            launchers, self._all = self._all, []
        for launcher in launchers:
            with contextlib.suppress(Exception):  # a connection of another thread
                launcher.close()


class Refresher:
    """Refresh every active job, one batched backend call per scheduler instance per cycle."""

    def __init__(self, launchers: Launchers, interval: float):
        self.launchers, self.interval = launchers, interval
        self.errors: dict[str, str] = {}
        self.last_cycle: datetime | None = None
        self.cycles = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cycle(self) -> None:
        launcher = self.launchers.get()
        records = launcher.store.query(JobQuery(states=ACTIVE, limit=None))
        groups: dict[str, list[JobRecord]] = {}
        for r in records:
            groups.setdefault(r.instance, []).append(r)
        errors = {}
        for instance, members in groups.items():
            try:
                launcher.refresh(members)  # one statuses() call for the whole group
            except LaunchError as e:
                errors[instance] = str(e)
            except Exception as e:  # noqa: BLE001 - one broken backend must not stop the rest
                errors[instance] = f"{type(e).__name__}: {e}"
        self.errors = errors
        self.last_cycle = utcnow()
        self.cycles += 1

    def start(self) -> None:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="wf-refresher", daemon=True)
            self._thread.start()

    def poke(self) -> None:
        """Refresh now (after a cancel) instead of at the next tick."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.cycle()
            except Exception as e:  # noqa: BLE001 - e.g. the store locked a while: next tick
                self.errors = {"job store": f"{type(e).__name__}: {e}"}
            self._wake.wait(self.interval)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def summary(r: JobRecord) -> dict[str, Any]:
    s = r.status
    return {"job_id": r.job_id, "name": r.name, "scheduler": r.instance,
            "scheduler_type": r.scheduler_type, "native_id": r.native_id,
            "submitted_by": r.submitted_by, "submitted_at": r.submitted_at.isoformat(),
            "state": s.state.value, "state_changed_at": _iso(s.state_changed_at),
            "elapsed": s.elapsed.total_seconds() if s.elapsed is not None else None,
            "node": s.node_name, "message": s.message}


def definition(r: JobRecord) -> dict[str, Any]:
    """The submitted definition; secret env as names only (the store never has values)."""
    d = dict((r.submission or {}).get("definition") or {})
    d["secret_env"] = [str(n) for n in d.get("secret_env") or ()]
    d["environment"] = {str(k): str(v) for k, v in (d.get("environment") or {}).items()
                        if k not in d["secret_env"]}
    return d


def timeline(r: JobRecord) -> list[dict[str, Any]]:
    s = r.status
    meta = dict(s.scheduler_metadata or {})
    events = [{"at": r.submitted_at.isoformat(), "event": "submitted"}]
    if meta.get("started_at"):
        events.append({"at": _iso(meta["started_at"]), "event": "started"})
    if s.state is not JobState.PENDING or s.state_changed_at:
        at = meta.get("finished_at") if s.state.terminal and meta.get("finished_at") else None
        events.append({"at": _iso(at or s.state_changed_at), "event": s.state.value})
    return sorted(events, key=lambda e: e["at"] or "")


def result_view(result) -> dict[str, Any]:
    mlir = result.mlir_output or ""
    lines = mlir.splitlines()
    return {"success": result.success, "exit_code": result.exit_code,
            "error_message": result.error_message,
            "execution_time": (result.execution_time.total_seconds()
                               if result.execution_time is not None else None),
            "artifacts": list(result.outputs), "metrics": dict(result.metrics),
            "mlir_head": "\n".join(lines[:MLIR_HEAD_LINES]), "mlir_lines": len(lines)}


class Results:
    """Results of finished jobs, asked of the backend once and kept (they never change)."""

    def __init__(self, size: int = 256):
        self.size = size
        self._cache: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, launcher: Launcher, r: JobRecord) -> dict[str, Any] | None:
        if not r.state.terminal:
            return None
        with self._lock:
            if r.job_id in self._cache:
                return self._cache[r.job_id]
        try:
            view = result_view(launcher.result(r.job_id))
        except LaunchError as e:
            return {"error": str(e)}  # not kept: the backend may answer next time
        with self._lock:
            self._cache[r.job_id] = view
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return view


def logs_since(launcher: Launcher, job_id: str, offset: int) -> dict[str, Any]:
    """The log text after `offset` characters; the first read is the tail only."""
    record = launcher.store.get(job_id)
    done = record.state.terminal  # read before the logs: a job done now has all its output
    text = "".join(launcher.logs(job_id, follow=False))
    truncated = False
    if offset > len(text):
        offset = 0  # the log was replaced (a resubmit): start over
    if offset == 0 and len(text) > LOG_TAIL_CHARS:
        offset, truncated = len(text) - LOG_TAIL_CHARS, True
    return {"job_id": job_id, "text": text[offset:], "offset": len(text), "done": done,
            "truncated": truncated}
