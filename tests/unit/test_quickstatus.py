"""`status` of finished jobs from the store alone: the same output as the full path."""

import dataclasses
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from warpforge_launch import cli, commands, quickstatus
from warpforge_launch.jobs import JobState, JobStatus, utcnow
from warpforge_launch.schedulers import slurm_parse as sp
from warpforge_launch.store import JobRecord, JobStore, home

REPO = Path(__file__).resolve().parents[2]


def add(store, job_id, state, **status):
    store.add(JobRecord(job_id, "local", "local", job_id.split("-", 1)[1], "c-" + job_id, "m",
                        "me", utcnow(), {}, {}, {"snakegrinder": "/x"},
                        JobStatus(job_id, "c-" + job_id, state, utcnow(), **status)))


@pytest.fixture
def store():
    s = JobStore(home() / "jobs.sqlite3")
    add(s, "local-done", JobState.COMPLETED, node_name="vm", elapsed=timedelta(seconds=1.25),
        scheduler_metadata={"exit_code": 0, "nested": {"a": [1, 2]}})
    add(s, "local-bad", JobState.FAILED, message="boom \x1b[31mred\x1b[0m [/x]",
        elapsed=timedelta(microseconds=49999))
    add(s, "local-gone", JobState.CANCELLED)
    add(s, "local-live", JobState.RUNNING)
    yield s
    s.close()


def both(capsys, argv):
    """(fast path's output, full path's output) of the same command line."""
    assert cli.main(argv) == 0
    fast = capsys.readouterr()
    assert commands.cmd_status(cli.parse(argv)) == 0
    full = capsys.readouterr()
    return fast.out, full.out


def test_the_fields_are_the_job_models():
    assert quickstatus.STATUS_FIELDS == {f.name for f in dataclasses.fields(JobStatus)}


@pytest.mark.parametrize("argv", [
    ["status", "local-done"],
    ["status", "local-bad"],
    ["status", "local-done", "local-bad", "local-gone", "local-done"],
    ["--json", "status", "local-done"],
    ["status", "--json", "local-gone", "local-bad", "local-gone"],
])
def test_same_output_as_the_full_path(capsys, store, argv):
    assert quickstatus.statuses([a for a in argv if a.startswith("local-")]) is not None
    fast, full = both(capsys, argv)
    assert fast == full and fast.strip()
    if "--json" in argv:
        json.loads(fast)


def test_not_final_or_unknown_takes_the_full_path(store):
    assert quickstatus.statuses(["local-live"]) is None
    assert quickstatus.statuses(["local-done", "local-live"]) is None
    assert quickstatus.statuses(["local-done", "local-nope"]) is None


def test_submitting_and_naive_times_take_the_full_path(store):
    store.db.execute("UPDATE jobs SET state = 'SUBMITTING' WHERE job_id = 'local-gone'")
    assert quickstatus.statuses(["local-gone"]) is None
    row = json.loads(store.db.execute("SELECT status FROM jobs WHERE job_id = 'local-done'"
                                      ).fetchone()[0])
    row["state_changed_at"] = "2026-01-01T00:00:00"
    store.db.execute("UPDATE jobs SET status = ? WHERE job_id = 'local-done'", (json.dumps(row),))
    assert quickstatus.statuses(["local-done"]) is None
    assert quickstatus.statuses(["local-bad"]) is not None


def test_no_store_is_not_created():
    assert quickstatus.statuses(["local-x"]) is None
    assert not os.path.exists(home() / "jobs.sqlite3")


def test_finished_status_loads_no_job_model(store):
    code = ("import sys; from warpforge_launch.cli import main; rc = main(['status', "
            "'local-done']); heavy = [m for m in ('warpforge_launch.jobs', 'dataclasses', "
            "'warpforge_launch.launcher', 'warpforge_launch.inventory') if m in sys.modules]; "
            "assert rc == 0 and not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("local-done  COMPLETED  elapsed 1.2s  node vm")


SQUEUE = "42|RUNNING|1:02:03|vm|None|2026-11-30T01:00:00|2026-11-30T01:00:05\n"
SACCT = ("43|CANCELLED by 0|0:15|00:00:07|vm|2026-11-30T01:00:00|2026-11-30T01:00:01|"
         "2026-11-30T01:00:08|None\n44|FAILED|2:0|00:01:00|vm|2026-11-30T01:00:00|"
         "2026-11-30T01:00:01|2026-11-30T01:01:01|NonZeroExitCode\n"
         "45_[3-4]|PENDING|0:0|00:00:00|None assigned|2026-11-30T01:00:00|Unknown|Unknown|"
         "Priority\n")


@pytest.mark.parametrize("rec", [*sp.parse_squeue(SQUEUE).values(),
                                 *sp.parse_sacct(SACCT).values()],
                         ids=lambda r: f"{r.source}-{r.native_id}")
def test_documents_are_what_the_job_model_writes(rec):
    """The lean path's JSON equals JobStatus(...).to_dict() of the same backend fields, with
    the stored correlation id filled in as the launcher stamps it."""
    fields = sp.status_fields(rec)
    doc = quickstatus.document("hpc-" + rec.native_id, "corr-1", fields)
    model = JobStatus(job_id="hpc-" + rec.native_id, **{**fields, "correlation_id": "corr-1"})
    assert doc == json.loads(json.dumps(model.to_dict()))
    assert doc["state"] == rec.state


@pytest.mark.parametrize("job", [
    {"submission_id": "wf-1", "status": "RUNNING", "start_time": 1764464400000,
     "driver_agent_http_address": "http://127.0.0.1:52365", "driver_node_id": "n1",
     "metadata": {"warpforge_correlation_id": "corr-7"}, "message": "Job is running."},
    {"submission_id": "wf-2", "status": "FAILED", "start_time": 1764464400000,
     "end_time": 1764464460000, "driver_exit_code": 124, "metadata": {}},
    {"submission_id": "wf-3", "status": "PENDING", "message": "waiting for resources"},
], ids=["running", "timeout", "pending"])
def test_ray_documents_are_what_the_job_model_writes(job):
    from warpforge_launch.schedulers import ray_parse as rp

    fields = rp.status_fields(job)
    doc = quickstatus.document("ray-" + job["submission_id"], "corr-stored", fields)
    model = rp.to_status(job, "ray-" + job["submission_id"])
    expected = json.loads(json.dumps(model.to_dict()))
    expected["correlation_id"] = expected["correlation_id"] or "corr-stored"
    if job["status"] != "FAILED":  # the clock moved between the two calls
        for key in ("elapsed", "state_changed_at"):
            assert (doc[key] is None) == (expected[key] is None)
            doc[key] = expected[key]
    assert doc == expected
