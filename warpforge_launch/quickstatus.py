"""`status` answered from the job store and one lean call per backend, without the job model.

A finished job's status never changes: one SQLite read answers it. A PENDING or RUNNING
job takes its backend's own batched refresh (``LIVE``: the same module and parsing the
scheduler uses), called with the config the job was stored with; the answers are recorded
as ``JobStore.update_status`` records them and printed as the full path prints them. No
dataclass is defined on this path: the job model and the scheduler classes cost more to
define than the status call they wrap.

Whenever anything is not plain (unknown id, SUBMITTING, a backend without a lean refresh,
a job the backend no longer reports, another schema), ``show`` returns None before or
instead of recording anything, and the command takes the full path, which handles it. A
backend that fails, or a store SQLite cannot use, raises the same error the full path
would.
"""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta

from warpforge_launch.output import emit_json, status_line
from warpforge_launch.states import TERMINAL_STATES
from warpforge_launch.storefile import (
    SCHEMA_VERSION,
    STATUS_UPDATE_SQL,
    SUBMITTING,
    home_dir,
    store_error,
    store_file,
)

# JobStatus's fields: a stored status with exactly these keys prints as its to_dict().
STATUS_FIELDS = frozenset({"job_id", "correlation_id", "state", "state_changed_at",
                           "node_name", "elapsed", "message", "scheduler_metadata"})
_FINAL = frozenset(s.value for s in TERMINAL_STATES)
_ACTIVE = frozenset({"PENDING", "RUNNING"})
# scheduler type -> "module:function" (instance, config dict, home dir, native ids) ->
# {native id: JobStatus fields} or None (take the full path)
LIVE = {
    "kubernetes": "warpforge_launch.schedulers.kubernetes_watch:live_statuses",
    "ray": "warpforge_launch.schedulers.ray_client:live_statuses",
    "slurm": "warpforge_launch.schedulers.slurm_client:live_statuses",
}


def show(args) -> int | None:
    """Print ``status`` for ``args.job_ids`` as the full path would, or None to take it."""
    found = statuses(args.job_ids)
    if found is None:
        return None
    docs = [found[j] for j in dict.fromkeys(args.job_ids)]
    if args.json:
        emit_json(docs if len(docs) > 1 else docs[0])
        return 0
    for st in docs:
        elapsed = st["elapsed"]
        print(status_line(st["job_id"], st["state"],
                          None if elapsed is None else _seconds(elapsed),
                          st["node_name"], st["message"]))
    return 0


def statuses(job_ids: list[str]) -> dict[str, dict] | None:
    """Status documents (JobStatus.to_dict()) by job id, or None for the full path."""
    path = store_file()
    if not os.path.isfile(path):
        return None
    ids = list(dict.fromkeys(job_ids))
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
    except sqlite3.Error as exc:
        raise store_error(path, exc) from exc
    try:
        rows = _rows(db, ids)
        if rows is None or len(rows) != len(ids):
            return None
        found: dict[str, dict] = {}
        live: dict[tuple[str, str, str], list[tuple]] = {}
        for row in rows:
            job_id, instance, type_name, native, corr, config, state, text, superseded = row
            status = json.loads(text)
            if state == SUBMITTING or not _plain(status, job_id, state):
                return None
            if state in _FINAL:
                found[job_id] = status
            elif superseded is None and state in _ACTIVE and type_name in LIVE:
                live.setdefault((instance, type_name, config), []).append(row)
            else:
                return None
        fresh = _refresh(live)
        if fresh is None:
            return None
        _record(db, fresh)
        found.update(fresh)
        return found
    except sqlite3.Error as exc:  # the full path would meet it too: say what is wrong
        raise store_error(path, exc) from exc
    finally:
        db.close()


def _rows(db: sqlite3.Connection, ids: list[str]) -> list[tuple] | None:
    if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        return None
    return db.execute(
        "SELECT job_id, instance, scheduler_type, native_id, correlation_id, config, state, "
        f"status, superseded_by FROM jobs WHERE job_id IN ({','.join('?' * len(ids))})",
        ids).fetchall()


def _refresh(live: dict[tuple[str, str, str], list[tuple]]) -> dict[str, dict] | None:
    """One lean backend call per (instance, type, config); None if any job is missing."""
    fresh: dict[str, dict] = {}
    for (instance, type_name, config), rows in live.items():
        module, _, name = LIVE[type_name].partition(":")
        refresh = getattr(importlib.import_module(module), name)
        got = refresh(instance, json.loads(config), home_dir(), [r[3] for r in rows])
        if got is None:
            return None
        for row in rows:
            fields = got.get(row[3])
            if fields is None:  # the backend no longer reports it: the full path says so
                return None
            fresh[row[0]] = document(row[0], row[4], fields)
    return fresh


def document(job_id: str, correlation_id: str, fields: dict) -> dict:
    """``JobStatus(job_id, **fields).to_dict()`` with the stored correlation id where the
    backend does not know it, built without the job model."""
    changed, elapsed = fields["state_changed_at"], fields["elapsed"]
    return {
        "job_id": job_id,
        "correlation_id": fields["correlation_id"] or correlation_id,
        "state": str(fields["state"]),
        "state_changed_at": changed.isoformat() if changed is not None else None,
        "node_name": fields["node_name"],
        "elapsed": elapsed.total_seconds() if elapsed is not None else None,
        "message": fields["message"],
        "scheduler_metadata": {str(k): v for k, v in fields["scheduler_metadata"].items()},
    }


def _record(db: sqlite3.Connection, fresh: dict[str, dict]) -> None:
    if not fresh:
        return
    now = datetime.now(UTC).isoformat()
    # WAL without an fsync per commit: a power cut can only lose this refresh, which the
    # next status repeats (the store is in WAL mode from its creation)
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(STATUS_UPDATE_SQL, [(d["state"], json.dumps(d), now, job_id)
                                    for job_id, d in fresh.items()])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _plain(status: object, job_id: str, state: str) -> bool:
    """Whether the job model would print this stored status unchanged."""
    if not (isinstance(status, dict) and status.keys() == STATUS_FIELDS
            and status["job_id"] == job_id and status["state"] == state):
        return False
    elapsed, changed = status["elapsed"], status["state_changed_at"]
    if elapsed is not None and (isinstance(elapsed, bool)
                                or not isinstance(elapsed, (int, float))):
        return False
    try:
        return changed is None or datetime.fromisoformat(changed).tzinfo is not None
    except (TypeError, ValueError):
        return False


def _seconds(value: float) -> float:
    return timedelta(seconds=float(value)).total_seconds()  # as the job model rounds it
