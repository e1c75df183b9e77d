import sqlite3
import stat

import pytest

from warpforge_launch.errors import LaunchError, NotFoundError
from warpforge_launch.jobs import JobQuery, JobState, JobStatus, utcnow
from warpforge_launch.store import SCHEMA_VERSION, JobRecord, JobStore


def record(job_id, state=JobState.PENDING, name="m"):
    return JobRecord(job_id, "local", "local", job_id.split("-", 1)[1], "c-" + job_id, name,
                     "me", utcnow(), {"s": 1}, {"p": 1}, {"c": 1},
                     JobStatus(job_id, "c", state, utcnow()))


def test_file_mode_wal_and_schema_version(tmp_path):
    store = JobStore(tmp_path / "s" / "jobs.sqlite3")
    store.add(record("local-a"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.get("local-a").submission == {"s": 1}


def test_terminal_state_is_never_overwritten(tmp_path):
    store = JobStore(tmp_path / "j.db")
    store.add(record("local-a"))
    store.update_status(JobStatus("local-a", "c", JobState.CANCELLED, utcnow()))
    store.update_status(JobStatus("local-a", "c", JobState.RUNNING, utcnow()))
    assert store.get("local-a").state is JobState.CANCELLED


def test_query_filters_and_order(tmp_path):
    store = JobStore(tmp_path / "j.db")
    for i, st in enumerate([JobState.PENDING, JobState.FAILED, JobState.COMPLETED]):
        store.add(record(f"local-{i}", st))
    assert [r.job_id for r in store.query(JobQuery())] == ["local-2", "local-1", "local-0"]
    assert [r.job_id for r in store.query(JobQuery(states={JobState.FAILED}))] == ["local-1"]
    assert len(store.query(JobQuery(limit=2))) == 2
    assert store.query(JobQuery(schedulers={"ray"})) == []


def test_unknown_job(tmp_path):
    with pytest.raises(NotFoundError, match="no job 'local-x'"):
        JobStore(tmp_path / "j.db").get("local-x")


def test_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "j.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(LaunchError, match="newer than this"):
        JobStore(path).query(JobQuery())
    assert path.read_bytes() == before


def test_corrupt_store_is_a_clear_error_and_untouched(tmp_path):
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LaunchError, match="unreadable"):
        JobStore(path).query(JobQuery())
    assert path.read_bytes() == b"this is not a database" * 100


def test_state_filter_keeps_active_rows_for_a_refresh(tmp_path):
    store = JobStore(tmp_path / "j.db")
    for i, st in enumerate([JobState.RUNNING, JobState.FAILED, JobState.COMPLETED]):
        store.add(record(f"local-{i}", st))
    done = JobQuery(states={JobState.COMPLETED}, limit=1)
    assert [r.job_id for r in store.query(done)] == ["local-2"]
    assert [r.job_id for r in store.query(done, include_active=True)] == ["local-2", "local-0"]
