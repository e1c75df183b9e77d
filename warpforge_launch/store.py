"""The job store: one SQLite row per job of every backend, under $WARPFORGE_HOME.

It makes `list` fast and lets jobs outlive the process that submitted them. WAL mode and a
busy timeout keep many concurrent CLI processes safe; the schema is versioned with
``PRAGMA user_version``. The scheduler config a job was submitted with is kept in its row,
so status/logs/cancel reach the same cluster even if the inventory changes later.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from warpforge_launch.errors import LaunchError, NotFoundError
from warpforge_launch.jobs import (
    ACTIVE_STATES,
    JobQuery,
    JobState,
    JobStatus,
    utcnow,
)
from warpforge_launch.storefile import (  # noqa: F401
    SCHEMA_VERSION,
    STATUS_UPDATE_SQL,
    SUBMITTING,
    home,
    home_error,
    store_error,
)

# A sweep and its cells; a cell names its job by correlation id (stable from the SUBMITTING
# row on, while the job id is only known once the backend answered).
_SWEEP_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id        TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    submitted_by    TEXT NOT NULL,
    submitted_at    TEXT NOT NULL,
    spec            TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS sweep_cells (
    sweep_id        TEXT NOT NULL,
    cell            INTEGER NOT NULL,
    correlation_id  TEXT NOT NULL,
    key             TEXT NOT NULL,
    PRIMARY KEY (sweep_id, cell)
)""",
    "CREATE INDEX IF NOT EXISTS sweeps_submitted_at ON sweeps (submitted_at)",
)
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
    updated_at      TEXT NOT NULL,
    superseded_by   TEXT
);
CREATE INDEX IF NOT EXISTS jobs_submitted_at ON jobs (submitted_at);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_correlation_id ON jobs (correlation_id);
""" + "".join(s + ";\n" for s in _SWEEP_SCHEMA)
# In-place upgrades, each from the version before; every existing row is kept.
_MIGRATIONS = {
    2: ("ALTER TABLE jobs ADD COLUMN superseded_by TEXT",
        "CREATE INDEX IF NOT EXISTS jobs_correlation_id ON jobs (correlation_id)"),
    3: _SWEEP_SCHEMA,
}
_COLUMNS = ("job_id, instance, scheduler_type, native_id, correlation_id, name, submitted_by, "
            "submitted_at, submission, plan, config, state, status, updated_at, superseded_by")


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
    submitting: bool = False  # recorded, but the backend has not confirmed it yet
    superseded_by: str | None = None  # the newer job the backend gave this native id to

    @property
    def state(self) -> JobState:
        return self.status.state

    @property
    def final(self) -> bool:
        """Nothing more to learn from the backend: finished, or its id went to another job."""
        return self.state.terminal or self.superseded_by is not None


@dataclass(frozen=True)
class SweepRecord:
    sweep_id: str
    name: str
    submitted_by: str
    submitted_at: datetime
    spec: dict[str, Any]
    cells: list[tuple[str, dict[str, Any]]]  # (correlation id, cell key), in cell order


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():  # 0600 from the first byte, not chmod after the fact
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise home_error(self.path.parent, exc) from exc
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LaunchError(f"job store {self.path} has schema {version}, newer than this "
                                  f"warpforge-launch understands ({SCHEMA_VERSION})",
                                  hint="upgrade warpforge-launch")
            if version < SCHEMA_VERSION:
                db.execute("PRAGMA journal_mode = WAL")
                with _Transaction(db):
                    _upgrade(db)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def add(self, record: JobRecord) -> None:
        self.db.execute(f"INSERT INTO jobs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        _row(record))

    def add_sweep(self, sweep: SweepRecord, records: list[JobRecord]) -> None:
        """A sweep, its cells and their SUBMITTING job rows, in one transaction."""
        with self._transaction():
            self.db.execute("INSERT INTO sweeps (sweep_id, name, submitted_by, submitted_at, "
                            "spec) VALUES (?,?,?,?,?)",
                            (sweep.sweep_id, sweep.name, sweep.submitted_by,
                             sweep.submitted_at.isoformat(), json.dumps(sweep.spec)))
            self.db.executemany("INSERT INTO sweep_cells (sweep_id, cell, correlation_id, key) "
                                "VALUES (?,?,?,?)",
                                [(sweep.sweep_id, c["index"], corr, _dumps(c))
                                 for corr, c in sweep.cells])
            configs: dict[int, str] = {}  # the cells of one instance share its config object
            now = utcnow().isoformat()
            self.db.executemany(f"INSERT INTO jobs ({_COLUMNS}) VALUES "
                                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                                [_row(r, configs, now) for r in records])

    def get_sweep(self, sweep_id: str) -> SweepRecord:
        row = self.db.execute("SELECT sweep_id, name, submitted_by, submitted_at, spec FROM "
                              "sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no sweep {sweep_id!r} in the job store {self.path}",
                                hint="`warpforge-launch sweep list` shows the known sweeps")
        cells = [(corr, json.loads(key)) for corr, key in self.db.execute(
            "SELECT correlation_id, key FROM sweep_cells WHERE sweep_id = ? ORDER BY cell",
            (sweep_id,))]
        return SweepRecord(row[0], row[1], row[2], datetime.fromisoformat(row[3]),
                           json.loads(row[4]), cells)

    def sweeps(self, limit: int = 50) -> list[tuple[SweepRecord, dict[str, int]]]:
        """Newest sweeps first, each with its cells counted by stored state."""
        out = []
        for sweep_id, in self.db.execute("SELECT sweep_id FROM sweeps ORDER BY submitted_at "
                                         "DESC LIMIT ?", (limit,)).fetchall():
            counts = dict(self.db.execute(
                "SELECT j.state, COUNT(*) FROM sweep_cells c JOIN jobs j ON "
                "j.correlation_id = c.correlation_id WHERE c.sweep_id = ? GROUP BY j.state",
                (sweep_id,)).fetchall())
            out.append((self.get_sweep(sweep_id), counts))
        return out

    def by_correlation(self, correlation_ids: list[str]) -> dict[str, JobRecord]:
        """Rows by correlation id (the newest row where an id went to several), one query
        per 500 ids."""
        found: dict[str, JobRecord] = {}
        ids = sorted(set(correlation_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            sql = (f"SELECT {_COLUMNS} FROM jobs WHERE superseded_by IS NULL AND "
                   f"correlation_id IN ({','.join('?' * len(chunk))})")
            found.update((r.correlation_id, r) for r in map(_record, self.db.execute(sql, chunk)))
        return found

    def remove(self, job_id: str) -> None:
        self.db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def update_status(self, *statuses: JobStatus) -> None:
        """Record fresh statuses in one transaction; a terminal state is never overwritten,
        and a row still SUBMITTING changes only through ``complete_submit``."""
        now = utcnow().isoformat()
        rows = [(s.state.value, json.dumps(s.to_dict()), now, s.job_id) for s in statuses]
        with self._transaction():
            self.db.executemany(STATUS_UPDATE_SQL, rows)

    def complete_submit(self, correlation_id: str, job_id: str, native_id: str,
                        status: JobStatus) -> JobRecord | None:
        """The backend accepted the job as ``native_id``: the SUBMITTING row becomes a job.

        A backend that reuses native ids (Slurm counts again from 1 after a reset) may hand
        out an id the store already holds: that older row is kept under a suffixed id,
        marked superseded, never overwritten. None when no SUBMITTING row has this
        correlation id (another process completed it first)."""
        with self._transaction():
            done = self._complete(correlation_id, job_id, native_id, status)
        return self.get(job_id) if done else None

    def complete_many(self, done: list[tuple[str, str, str, JobStatus]]) -> None:
        """``complete_submit`` for many (correlation id, job id, native id, status) at once,
        in one transaction of a few batched statements (a sweep of 100 cells is one commit
        and one executemany, not 300 statements)."""
        if not done:
            return
        now = utcnow().isoformat()
        with self._transaction(durable=False):
            waiting: set[str] = set()
            for chunk in _chunks([d[0] for d in done]):
                waiting.update(r[0] for r in self.db.execute(
                    f"SELECT correlation_id FROM jobs WHERE state = ? AND correlation_id IN "
                    f"({','.join('?' * len(chunk))})", [SUBMITTING, *chunk]))
            done = [d for d in done if d[0] in waiting]
            corr_of = {d[1]: d[0] for d in done}
            for chunk in _chunks(list(corr_of)):  # an id the backend gave to a newer job
                for old in self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id IN "
                                           f"({','.join('?' * len(chunk))})", chunk).fetchall():
                    if old[4] != corr_of[old[0]]:
                        self._supersede(_record(old), old[0], now)
            self.db.executemany(
                "UPDATE jobs SET job_id = ?, native_id = ?, state = ?, status = ?, "
                "updated_at = ? WHERE correlation_id = ? AND state = ?",
                [(job_id, native_id, status.state.value, _dumps(status.to_dict()), now,
                  corr, SUBMITTING) for corr, job_id, native_id, status in done])

    def _complete(self, correlation_id: str, job_id: str, native_id: str,
                  status: JobStatus) -> bool:
        now = utcnow().isoformat()
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE correlation_id = ? AND state = ?",
            (correlation_id, SUBMITTING)).fetchone()
        if row is None:
            return False
        old = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?",
                              (job_id,)).fetchone()
        if old is not None and old[4] != correlation_id:
            self._supersede(_record(old), job_id, now)
        self.db.execute(
            "UPDATE jobs SET job_id = ?, native_id = ?, state = ?, status = ?, "
            "updated_at = ? WHERE correlation_id = ? AND state = ?",
            (job_id, native_id, status.state.value, json.dumps(status.to_dict()), now,
             correlation_id, SUBMITTING))
        return True

    def _supersede(self, old: JobRecord, new_job_id: str, now: str) -> None:
        renamed, n = f"{old.job_id}~{old.correlation_id[:8]}", 1
        while self.db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (renamed,)).fetchone():
            n += 1
            renamed = f"{old.job_id}~{old.correlation_id[:8]}.{n}"
        status = dataclasses.replace(old.status, job_id=renamed)
        if not old.state.terminal:  # the backend forgot it: its end will never be known
            status = dataclasses.replace(
                status, state=JobState.FAILED, state_changed_at=utcnow(),
                message=f"the backend gave its id {old.native_id} to a newer job, "
                f"{new_job_id}; the last known state was {old.state.value}")
        self.db.execute(
            "UPDATE jobs SET job_id = ?, state = ?, status = ?, updated_at = ?, "
            "superseded_by = ? WHERE job_id = ?",
            (renamed, status.state.value, json.dumps(status.to_dict()), now, new_job_id,
             old.job_id))

    def fail_submit(self, correlation_id: str, message: str) -> None:
        """A SUBMITTING row the backend provably never accepted: FAILED, with why."""
        with self._transaction():
            row = self.db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE correlation_id = ? AND state = ?",
                (correlation_id, SUBMITTING)).fetchone()
            if row is None:
                return
            old = _record(row)
            status = JobStatus(old.job_id, correlation_id, JobState.FAILED, utcnow(),
                               message=message)
            self.db.execute("UPDATE jobs SET state = ?, status = ?, updated_at = ? "
                            "WHERE correlation_id = ? AND state = ?",
                            (status.state.value, json.dumps(status.to_dict()),
                             utcnow().isoformat(), correlation_id, SUBMITTING))

    def note_submit(self, correlation_id: str, message: str) -> None:
        """The submit attempt is over without an answer: say so; the row stays SUBMITTING
        (the backend may have the job) and no longer names a live submitter."""
        with self._transaction():
            row = self.db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE correlation_id = ? AND state = ?",
                (correlation_id, SUBMITTING)).fetchone()
            if row is None:
                return
            status = dataclasses.replace(_record(row).status, message=message,
                                         scheduler_metadata={})
            self.db.execute("UPDATE jobs SET status = ?, updated_at = ? "
                            "WHERE correlation_id = ? AND state = ?",
                            (json.dumps(status.to_dict()), utcnow().isoformat(),
                             correlation_id, SUBMITTING))

    def discard_submit(self, correlation_id: str) -> None:
        """The backend refused the job outright: nothing runs, nothing to keep."""
        self.db.execute("DELETE FROM jobs WHERE correlation_id = ? AND state = ?",
                        (correlation_id, SUBMITTING))

    def _transaction(self, durable: bool = True):
        return _Transaction(self.db, durable)

    def get(self, job_id: str) -> JobRecord:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?",
                              (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r} in the job store {self.path}",
                                hint="`warpforge-launch list` shows the known jobs")
        return _record(row)

    def find(self, job_id: str) -> JobRecord | None:
        try:
            return self.get(job_id)
        except NotFoundError:
            return None

    def find_many(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """The rows of those ids that exist, in one query."""
        ids = sorted(set(job_ids))
        found: dict[str, JobRecord] = {}
        for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[i:i + 500]
            sql = f"SELECT {_COLUMNS} FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})"
            found.update((r.job_id, r) for r in map(_record, self.db.execute(sql, chunk)))
        return found

    def query(self, query: JobQuery, include_active: bool = False) -> list[JobRecord]:
        """Rows matching the query, newest first. ``include_active`` also returns jobs still
        PENDING/RUNNING whatever the state filter, for a caller that refreshes them first."""
        sql, args = f"SELECT {_COLUMNS} FROM jobs WHERE 1=1", []
        if query.states:
            states = {s.value for s in query.states}
            if include_active:
                states |= {s.value for s in ACTIVE_STATES}
            if JobState.PENDING.value in states:
                states.add(SUBMITTING)  # shown as PENDING until the backend confirms it
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

    def instances(self, names: list[str]) -> set[str]:
        """Those of ``names`` the store has jobs of."""
        names = sorted(set(names))
        if not names:
            return set()
        return {r[0] for r in self.db.execute(
            f"SELECT DISTINCT instance FROM jobs WHERE instance IN ({','.join('?' * len(names))})",
            names)}

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


def _store_errors(method):
    """``method`` with SQLite's errors as the store's one-line LaunchError (store_error); an
    IntegrityError (a duplicate id) is the caller's to handle."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc

    return guarded


for _name, _method in list(vars(JobStore).items()):
    if not _name.startswith("__") and callable(_method):
        setattr(JobStore, _name, _store_errors(_method))


def _upgrade(db: sqlite3.Connection) -> None:
    """Create the schema, or bring an older one up to date in place (inside a transaction)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
                        ).fetchone()
    if version >= SCHEMA_VERSION:
        return
    if not exists:
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
    else:
        for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (autocommit connection).

    ``durable=False`` commits without waiting for the disk (WAL ``synchronous=NORMAL``:
    atomic and consistent, but a power cut may undo it). Only for what the next refresh can
    redo: a sweep's completions, whose rows otherwise stay SUBMITTING and are reconciled."""

    def __init__(self, db: sqlite3.Connection, durable: bool = True):
        self.db, self.durable, self.previous = db, durable, None

    def __enter__(self):
        if not self.durable:
            self.previous = int(self.db.execute("PRAGMA synchronous").fetchone()[0])
            self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            if self.previous is not None:
                self.db.execute(f"PRAGMA synchronous = {self.previous:d}")


def _chunks(items: list, size: int = 500) -> list[list]:
    """Bound the ``?`` placeholders of one statement (SQLite's limit)."""
    return [items[k:k + size] for k in range(0, len(items), size)]


def _row(record: JobRecord, configs: dict[int, str] | None = None,
         now: str | None = None) -> tuple:
    """A record as a row; ``configs`` memoizes the JSON of config objects shared by rows,
    ``now`` is the rows' updated_at (default: now)."""
    state = SUBMITTING if record.submitting else record.status.state.value
    if configs is None:
        config = _dumps(record.config)
    else:
        config = configs.get(id(record.config))
        if config is None:
            config = configs[id(record.config)] = _dumps(record.config)
    return (record.job_id, record.instance, record.scheduler_type, record.native_id,
            record.correlation_id, record.name, record.submitted_by,
            record.submitted_at.isoformat(), _dumps(record.submission),
            _dumps(record.plan), config, state, _dumps(record.status.to_dict()),
            now or utcnow().isoformat(), record.superseded_by)


# json.dumps of the records' JSON documents, without the check for reference cycles (a
# document built by the codec has none): a sweep writes hundreds of them in one go
_dumps = json.JSONEncoder(check_circular=False).encode


def _record(row: tuple) -> JobRecord:
    (job_id, instance, stype, native, corr, name, by, at, submission, plan, config, state,
     status, _updated, superseded_by) = row
    return JobRecord(job_id, instance, stype, native, corr, name, by, datetime.fromisoformat(at),
                     json.loads(submission), json.loads(plan), json.loads(config),
                     JobStatus.from_dict(json.loads(status)), state == SUBMITTING,
                     superseded_by)
