"""The job store: one SQLite row per job of every backend, under $WARPFORGE_HOME.

It makes `list` fast and lets jobs outlive the process that submitted them. WAL mode and a
busy timeout keep many concurrent CLI processes safe; the schema is versioned with
``PRAGMA user_version``. The scheduler config a job was submitted with is kept in its row,
so status/logs/cancel reach the same cluster even if the inventory changes later.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from warpforge_launch.errors import LaunchError, NotFoundError
from warpforge_launch.jobs import JobQuery, JobState, JobStatus, utcnow

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id          TEXT PRIMARY KEY,
    instance        TEXT NOT NULL,
    scheduler_type  TEXT NOT NULL,
    native_id       TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    name            TEXT NOT NULL,
    submitted_by    TEXT NOT NULL,
    submitted_at    TEXT NOT NULL,
    submission      TEXT NOT NULL,
    plan            TEXT NOT NULL,
    config          TEXT NOT NULL,
    state           TEXT NOT NULL,
    status          TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_submitted_at ON jobs (submitted_at);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""


def home() -> Path:
    """$WARPFORGE_HOME, default ~/.local/state/warpforge-launch."""
    env = os.environ.get("WARPFORGE_HOME")
    if env:
        return Path(env).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "warpforge-launch"


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    instance: str
    scheduler_type: str
    native_id: str
    correlation_id: str
    name: str
    submitted_by: str
    submitted_at: datetime
    submission: dict[str, Any]
    plan: dict[str, Any]
    config: dict[str, Any]
    status: JobStatus

    @property
    def state(self) -> JobState:
        return self.status.state


class JobStore:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else home() / "jobs.sqlite3"
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():  # 0600 from the first byte, not chmod after the fact
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 30000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LaunchError(f"job store {self.path} has schema {version}, newer than this "
                                  f"warpforge-launch understands ({SCHEMA_VERSION})",
                                  hint="upgrade warpforge-launch")
            if version < SCHEMA_VERSION:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("BEGIN IMMEDIATE")
                if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise LaunchError(f"job store {self.path} is unreadable: {exc}",
                              hint="move it aside; a new one is created on the next "
                              "command") from exc
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def add(self, record: JobRecord) -> None:
        row = (record.job_id, record.instance, record.scheduler_type, record.native_id,
               record.correlation_id, record.name, record.submitted_by,
               record.submitted_at.isoformat(), json.dumps(record.submission),
               json.dumps(record.plan), json.dumps(record.config), record.status.state.value,
               json.dumps(record.status.to_dict()), utcnow().isoformat())
        self.db.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)

    def remove(self, job_id: str) -> None:
        self.db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def update_status(self, *statuses: JobStatus) -> None:
        """Record fresh statuses in one transaction; a terminal state is never overwritten."""
        now = utcnow().isoformat()
        rows = [(s.state.value, json.dumps(s.to_dict()), now, s.job_id) for s in statuses]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "UPDATE jobs SET state = ?, status = ?, updated_at = ? WHERE job_id = ? "
                "AND state NOT IN ('COMPLETED','FAILED','CANCELLED','TIMEOUT')", rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get(self, job_id: str) -> JobRecord:
        row = self.db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r} in the job store {self.path}",
                                hint="`warpforge-launch list` shows the known jobs")
        return _record(row)

    def find(self, job_id: str) -> JobRecord | None:
        try:
            return self.get(job_id)
        except NotFoundError:
            return None

    def query(self, query: JobQuery, include_active: bool = False) -> list[JobRecord]:
        """Rows matching the query, newest first. ``include_active`` also returns jobs still
        PENDING/RUNNING whatever the state filter, for a caller that refreshes them first."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if query.states:
            states = {s.value for s in query.states}
            if include_active:
                states |= {"PENDING", "RUNNING"}
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += sorted(states)
        if query.schedulers:
            sql += f" AND instance IN ({','.join('?' * len(query.schedulers))})"
            args += sorted(query.schedulers)
        if query.submitted_by:
            sql += " AND submitted_by = ?"
            args.append(query.submitted_by)
        if query.submitted_after:
            sql += " AND submitted_at > ?"
            args.append(query.submitted_after.isoformat())
        if query.submitted_before:
            sql += " AND submitted_at < ?"
            args.append(query.submitted_before.isoformat())
        sql += " ORDER BY submitted_at DESC"
        if query.limit and not (include_active and query.states):
            sql += " LIMIT ?"
            args.append(query.limit)
        return [_record(r) for r in self.db.execute(sql, args)]

    def page(self, states=(), schedulers=(), limit: int = 50, offset: int = 0
             ) -> tuple[list[JobRecord], int]:
        """One page of rows, newest first, and how many rows match in all (the dashboard's
        table: no backend is asked, the refresher keeps active rows current)."""
        where, args = "", []
        if states:
            where += f" AND state IN ({','.join('?' * len(states))})"
            args += sorted(str(s) for s in states)
        if schedulers:
            where += f" AND instance IN ({','.join('?' * len(schedulers))})"
            args += sorted(schedulers)
        total = self.db.execute("SELECT COUNT(*) FROM jobs WHERE 1=1" + where, args).fetchone()[0]
        rows = self.db.execute("SELECT * FROM jobs WHERE 1=1" + where + " ORDER BY submitted_at "
                               "DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        return [_record(r) for r in rows], total


def _record(row: tuple) -> JobRecord:
    (job_id, instance, stype, native, corr, name, by, at, submission, plan, config, _state,
     status, _updated) = row
    return JobRecord(job_id, instance, stype, native, corr, name, by, datetime.fromisoformat(at),
                     json.loads(submission), json.loads(plan), json.loads(config),
                     JobStatus.from_dict(json.loads(status)))
