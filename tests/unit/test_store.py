import json
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


V1_SCHEMA = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, instance TEXT NOT NULL, scheduler_type TEXT NOT NULL,
    native_id TEXT NOT NULL, correlation_id TEXT NOT NULL, name TEXT NOT NULL,
    submitted_by TEXT NOT NULL, submitted_at TEXT NOT NULL, submission TEXT NOT NULL,
    plan TEXT NOT NULL, config TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX jobs_submitted_at ON jobs (submitted_at);
CREATE INDEX jobs_state ON jobs (state);
PRAGMA user_version = 1;
"""


def test_a_version_1_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    for i, st in enumerate([JobState.RUNNING, JobState.COMPLETED]):
        r = record(f"slurm-{i}", st, name=f"job{i}")
        db.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
            r.job_id, "slurm", "slurm", str(i), r.correlation_id, r.name, "me",
            r.submitted_at.isoformat(), "{}", "{}", '{"login": "x"}', st.value,
            json.dumps(r.status.to_dict()), r.submitted_at.isoformat()))
    db.commit()
    db.close()
    store = JobStore(path)
    rows = {r.job_id: r for r in store.query(JobQuery(limit=None))}
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert set(rows) == {"slurm-0", "slurm-1"}
    assert rows["slurm-0"].state is JobState.RUNNING and rows["slurm-0"].config == {"login": "x"}
    assert rows["slurm-1"].name == "job1" and rows["slurm-1"].superseded_by is None
    indexes = {r[1] for r in store.db.execute("PRAGMA index_list(jobs)")}
    assert "jobs_correlation_id" in indexes
    store.close()
    assert JobStore(path).get("slurm-0").native_id == "0"  # opening again changes nothing


def submitting(job_id, corr):
    r = record(job_id)
    return JobRecord(r.job_id, r.instance, r.scheduler_type, "", corr, r.name, r.submitted_by,
                     r.submitted_at, r.submission, r.plan, r.config, r.status, submitting=True)


def test_submitting_row_lifecycle(tmp_path):
    store = JobStore(tmp_path / "j.db")
    store.add(submitting("slurm-submitting-aaaa", "corr-a"))
    assert store.get("slurm-submitting-aaaa").submitting
    store.update_status(JobStatus("slurm-submitting-aaaa", "c", JobState.RUNNING, utcnow()))
    assert store.get("slurm-submitting-aaaa").submitting  # only complete_submit ends it
    assert [r.job_id for r in store.query(JobQuery(states={JobState.PENDING}))] == \
        ["slurm-submitting-aaaa"]
    done = store.complete_submit("corr-a", "slurm-7", "7",
                                 JobStatus("slurm-7", "corr-a", JobState.PENDING, utcnow()))
    assert done.job_id == "slurm-7" and done.native_id == "7" and not done.submitting
    assert store.find("slurm-submitting-aaaa") is None
    assert store.complete_submit("corr-a", "slurm-7", "7", done.status) is None  # once only

    store.add(submitting("slurm-submitting-bbbb", "corr-b"))
    store.fail_submit("corr-b", "never arrived")
    failed = store.get("slurm-submitting-bbbb")
    assert failed.state is JobState.FAILED and failed.status.message == "never arrived"
    store.add(submitting("slurm-submitting-cccc", "corr-c"))
    store.discard_submit("corr-c")
    assert store.find("slurm-submitting-cccc") is None


def test_reused_native_id_supersedes_and_keeps_the_old_row(tmp_path):
    store = JobStore(tmp_path / "j.db")
    old = record("slurm-7", JobState.RUNNING)
    store.add(old)
    store.add(submitting("slurm-submitting-dddd", "corr-d"))
    store.complete_submit("corr-d", "slurm-7", "7",
                          JobStatus("slurm-7", "corr-d", JobState.PENDING, utcnow()))
    assert store.get("slurm-7").correlation_id == "corr-d"
    (kept,) = [r for r in store.query(JobQuery()) if r.correlation_id == old.correlation_id]
    assert kept.job_id == f"slurm-7~{old.correlation_id[:8]}"
    assert kept.superseded_by == "slurm-7" and kept.final
    assert kept.state is JobState.FAILED and "last known state was RUNNING" in \
        kept.status.message and kept.status.job_id == kept.job_id


def test_terminal_states_are_spelled_once():
    from warpforge_launch.states import TERMINAL_STATES
    from warpforge_launch.storefile import STATUS_UPDATE_SQL

    listed = STATUS_UPDATE_SQL.partition("NOT IN (")[2].rstrip(")").replace("'", "")
    assert {s.strip() for s in listed.split(",")} - {"SUBMITTING"} == {
        s.value for s in TERMINAL_STATES}
