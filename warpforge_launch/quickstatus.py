"""`status` of jobs the store holds as finished, answered from the store alone.

A finished job's status never changes, so nothing but one SQLite read is needed: no job
model (its dataclasses cost more than the read), no inventory, no scheduler. Whenever a
row is not plainly final (unknown id, still active, SUBMITTING, another schema), ``show``
returns None and the command takes the full path, which prints the same thing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timedelta

from warpforge_launch.output import emit_json, status_line
from warpforge_launch.states import TERMINAL_STATES
from warpforge_launch.storefile import SCHEMA_VERSION, store_file

# JobStatus's fields: a stored status with exactly these keys prints as its to_dict().
STATUS_FIELDS = frozenset({"job_id", "correlation_id", "state", "state_changed_at",
                           "node_name", "elapsed", "message", "scheduler_metadata"})
_FINAL = frozenset(s.value for s in TERMINAL_STATES)


def stored_final(job_ids: list[str]) -> dict[str, dict] | None:
    """The stored statuses of ``job_ids`` if every one is final, else None."""
    path = store_file()
    if not os.path.isfile(path):
        return None
    uri = "file:" + path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    try:
        db = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=30)
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                return None
            ids = list(dict.fromkeys(job_ids))
            rows = db.execute(f"SELECT job_id, state, status FROM jobs WHERE job_id IN "
                              f"({','.join('?' * len(ids))})", ids).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    found: dict[str, dict] = {}
    for job_id, state, text in rows:
        status = json.loads(text)
        if state not in _FINAL or not _plain(status, job_id, state):
            return None
        found[job_id] = status
    return found if len(found) == len(ids) else None


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


def show(args) -> int | None:
    """Print ``status`` for ``args.job_ids`` as the full path would, or None to take it."""
    found = stored_final(args.job_ids)
    if found is None:
        return None
    statuses = [found[j] for j in dict.fromkeys(args.job_ids)]
    if args.json:
        emit_json(statuses if len(statuses) > 1 else statuses[0])
        return 0
    for st in statuses:
        elapsed = st["elapsed"]
        print(status_line(st["job_id"], st["state"],
                          None if elapsed is None else _seconds(elapsed),
                          st["node_name"], st["message"]))
    return 0


def _seconds(value: float) -> float:
    return timedelta(seconds=float(value)).total_seconds()  # as the job model rounds it
