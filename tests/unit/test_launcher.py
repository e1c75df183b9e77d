"""The launcher's routing against a backend that counts its calls (tests/testlab/counting.py):
batched refreshes, warm instances, crash-consistent submit, reused native ids, and output
that a job name or a backend message cannot break."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.testlab import counting
from warpforge_launch import launcher as launcher_mod
from warpforge_launch.cli import main
from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import JobDefinition, JobQuery, JobState
from warpforge_launch.launcher import Launcher
from warpforge_launch.store import JobStore


@pytest.fixture
def backend(monkeypatch):
    return counting.install(monkeypatch)


@pytest.fixture
def inv(tmp_path, backend):
    path = tmp_path / "inv.yaml"
    path.write_text("schedulers:\n  count:\n    type: counting\n")
    return str(path)


def define(name="m", **kw):
    return JobDefinition(name=name, source="/m.py", inputs=parse_inputs("[(1,8)]"),
                         model_class="M", **kw)


def submit(inv, n=1, **kw) -> list[str]:
    with Launcher(inv) as launcher:
        return [launcher.submit(define(**kw)) for _ in range(n)]


def call(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_status_of_many_ids_is_one_batched_call(capsys, inv, backend):
    ids = submit(inv, 5)
    backend.calls.clear()
    rc, out, _ = call(capsys, "status", "--inventory", inv, "--json", *ids)
    assert rc == 0 and [s["job_id"] for s in json.loads(out)] == ids
    assert backend.calls == {"statuses": 1}


def test_cancel_of_many_ids_refreshes_once(capsys, inv, backend):
    ids = submit(inv, 3)
    counting.finish("1")
    with Launcher(inv) as launcher:
        launcher.status(ids[0])  # the store learns that job 1 finished
    backend.calls.clear()
    rc, out, _ = call(capsys, "cancel", "--inventory", inv, *ids)
    assert rc == 0
    assert out.splitlines() == [f"{ids[0]}: not cancelled, already COMPLETED",
                                f"{ids[1]}: cancelled", f"{ids[2]}: cancelled"]
    # one batched cancel for the active jobs of the instance, one refresh after
    assert backend.calls == {"cancel_many": 1, "statuses": 1}
    assert backend.cancelled == [ids[1:]]


def test_cancel_refuses_ids_the_store_does_not_know_before_sending_anything(
        capsys, inv, backend):
    """The tool acts only on what it created: a job of the backend that this job store
    never recorded (someone else's) is not cancelled, nor is anything else in that call."""
    ours = submit(inv, 2)
    foreign = "count-" + backend.next_id()  # on the backend, not in the job store
    backend.jobs[foreign.removeprefix("count-")] = {
        "correlation_id": "c0ffee", "state": JobState.RUNNING, "message": "", "node": "n"}
    backend.calls.clear()
    rc, out, err = call(capsys, "cancel", "--inventory", inv, ours[0], foreign, "count-77",
                        ours[1])
    assert rc == 2 and out == ""
    assert err.splitlines()[0] == (f"error: not in the job store: {foreign}, count-77; cancel "
                                   "stops only jobs this tool submitted (nothing was cancelled)")
    assert "Traceback" not in err
    assert backend.calls == {}  # nothing was sent: not even a status
    assert {j["state"] for j in backend.jobs.values()} == {JobState.RUNNING}
    with Launcher(inv) as launcher, pytest.raises(NotFoundError):
        launcher.cancel(foreign)
    assert backend.calls == {}


def test_logs_of_an_id_nobody_knows_is_exit_2(capsys, inv, backend):
    """As `status`: unknown to the job store and to its backend is exit 2, not empty logs."""
    rc, out, err = call(capsys, "logs", "--inventory", inv, "count-404")
    assert rc == 2 and out == "" and err.startswith("error: no count job 'count-404'")
    rc, out, err = call(capsys, "logs", "--inventory", inv, "--json", "count-404")
    assert rc == 2 and out == ""
    (job,) = submit(inv)
    rc, _, err = call(capsys, "logs", "--inventory", inv, job)
    assert rc == 0, err
    # reading is not acting: like `status`, `logs` reads a job its backend knows that this
    # job store never recorded
    backend.jobs["9"] = {"correlation_id": "c0ffee", "state": JobState.RUNNING,
                         "message": "", "node": "n"}
    rc, _, err = call(capsys, "logs", "--inventory", inv, "count-9")
    assert rc == 0, err


def test_result_of_many_ids_one_refresh_and_known_statuses(capsys, inv, backend):
    ids = submit(inv, 3)
    for native in ("1", "2", "3"):
        counting.finish(native)
    backend.calls.clear()
    rc, out, _ = call(capsys, "result", "--inventory", inv, "--json", *ids)
    assert rc == 0 and [r["job_id"] for r in json.loads(out)] == ids
    assert backend.calls == {"statuses": 1, "results": 1}
    backend.calls.clear()
    rc, _, _ = call(capsys, "result", "--inventory", inv, *ids)  # final: store only
    assert rc == 0 and backend.calls == {"results": 1}


def test_result_reads_the_store_once(inv, backend, monkeypatch):
    (job,) = submit(inv)
    counting.finish("1")
    reads = []
    for name in ("get", "find", "find_many", "query"):
        real = getattr(JobStore, name)
        monkeypatch.setattr(JobStore, name, lambda self, *a, _r=real, _n=name, **k: (
            reads.append(_n), _r(self, *a, **k))[1])
    with Launcher(inv) as launcher:
        assert launcher.result(job).success
    assert reads == ["find_many"]


def test_submit_and_wait_use_one_warm_instance(capsys, inv, backend, tmp_path, monkeypatch):
    model = tmp_path / "m.py"
    model.write_text("class M: pass\n")
    monkeypatch.setattr(counting.CountingScheduler, "statuses", _finishing_statuses)
    monkeypatch.setattr(counting.CountingScheduler, "status",
                        lambda self, j: _finishing_statuses(self, [j])[j])
    rc, out, err = call(capsys, "submit", "--inventory", inv, "--source", str(model),
                        "--class", "M", "--inputs", "[(1,8)]", "--wait", "--json")
    assert rc == 0, err
    assert json.loads(out)["status"]["state"] == "COMPLETED"
    assert backend.instances == 1 and backend.closed == 1


def _finishing_statuses(self, job_ids):
    for j in job_ids:
        counting.finish(self.native_id(j))
    return {j: self._status(self.native_id(j)) for j in job_ids}


# -- crash-consistent submit ---------------------------------------------------------------
def test_timeout_after_the_backend_accepted_is_reconciled(inv, backend):
    backend.fail_send = "after"
    with Launcher(inv) as launcher:
        with pytest.raises(InfrastructureError) as caught:
            launcher.submit(define())
        assert "warpforge-launch list" in caught.value.hint
        (row,) = launcher.store.query(JobQuery())
        assert row.submitting and row.job_id.startswith("count-submitting-")
    backend.calls.clear()
    with Launcher(inv) as launcher:
        (listed,) = launcher.list(JobQuery())
        assert listed[1].job_id == "count-1" and listed[1].state is JobState.RUNNING
        assert backend.calls == {"reconcile": 1, "statuses": 1}
        record = launcher.store.get("count-1")
        assert not record.submitting and record.correlation_id == row.correlation_id


def test_several_interrupted_submits_one_reconcile_call(inv, backend):
    with Launcher(inv) as launcher:
        for _ in range(3):
            backend.fail_send = "after"
            with pytest.raises(InfrastructureError):
                launcher.submit(define())
    backend.calls.clear()
    with Launcher(inv) as launcher:
        rows = launcher.list(JobQuery())
    assert sorted(s.job_id for _, s in rows) == ["count-1", "count-2", "count-3"]
    assert backend.calls["reconcile"] == 1


def test_never_accepted_submit_fails_only_after_the_grace(inv, backend, monkeypatch):
    backend.fail_send = "before"
    with Launcher(inv) as launcher:
        with pytest.raises(InfrastructureError):
            launcher.submit(define())
        ((record, status),) = launcher.list(JobQuery())
        assert status.state is JobState.PENDING and "not confirmed" in status.message
        monkeypatch.setattr(launcher_mod, "SUBMIT_GRACE", timedelta(0))
        ((record, status),) = launcher.list(JobQuery())
        assert status.state is JobState.FAILED
        assert f"no job with correlation id {record.correlation_id}" in status.message
        assert launcher.store.get(record.job_id).state is JobState.FAILED


def test_a_submit_in_flight_is_not_failed(inv, backend, monkeypatch):
    """A row whose submitter is alive (here: this process, mid-execute) stays SUBMITTING."""
    monkeypatch.setattr(launcher_mod, "SUBMIT_GRACE", timedelta(0))
    seen = []

    def execute(self, plan):
        with Launcher(inv) as other:
            seen.extend(other.list(JobQuery()))
        return counting.Submitted(counting.BACKEND.next_id())

    monkeypatch.setattr(counting.CountingScheduler, "execute", execute)
    (job,) = submit(inv)
    ((record, status),) = seen
    assert record.submitting and status.state is JobState.PENDING
    with Launcher(inv) as launcher:
        assert launcher.store.get(job).correlation_id == record.correlation_id


def test_refused_submit_leaves_no_row(inv, backend):
    backend.fail_send = "refuse"
    with Launcher(inv) as launcher:
        with pytest.raises(UsageError, match="refused"):
            launcher.submit(define())
        assert launcher.store.query(JobQuery()) == []


def test_reused_native_id_keeps_the_old_row(capsys, inv, backend):
    (first,) = submit(inv, name="old")
    backend.reset_ids()  # the cluster was reset and counts from 1 again
    (second,) = submit(inv, name="new")
    assert first == second == "count-1"
    rc, out, _ = call(capsys, "list", "--inventory", inv, "--json", "--no-refresh")
    rows = {r["name"]: r for r in json.loads(out)}
    old = rows["old"]
    assert old["job_id"].startswith("count-1~") and old["status"]["state"] == "FAILED"
    assert "gave its id 1 to a newer job, count-1" in old["status"]["message"]
    assert rows["new"]["job_id"] == "count-1"
    rc, _, err = call(capsys, "result", "--inventory", inv, old["job_id"])
    assert rc == 2 and "its id was given to count-1" in err


# -- output ----------------------------------------------------------------------------------
def test_markup_in_a_job_name_does_not_break_list(capsys, inv, backend):
    submit(inv, name="[/x]")
    submit(inv, name="[bold]loud[/bold]")
    rc, out, err = call(capsys, "list", "--inventory", inv)
    assert rc == 0, err
    assert "[/x]" in out and "[bold]loud[/bold]" in out


def test_escape_sequences_from_a_backend_are_shown_escaped(capsys, inv, backend):
    (job,) = submit(inv)
    backend.jobs["1"]["message"] = "boom\x1b]0;pwned\x07\x1b[2J"
    backend.jobs["1"]["node"] = "n\x1b[31m1"
    for argv in (["status", job], ["list"], ["list", "--from-cluster"]):
        rc, out, _ = call(capsys, argv[0], "--inventory", inv, *argv[1:])
        assert rc == 0 and "\x1b" not in out and "\x07" not in out, argv
        assert "\\x1b]0;pwned\\x07" in out, argv


def test_list_from_cluster_shows_jobs_of_other_tools(capsys, inv, backend):
    (mine,) = submit(inv)
    backend.jobs["99"] = {"correlation_id": "other", "state": JobState.RUNNING, "message": "",
                          "node": "n2"}
    backend.calls.clear()
    rc, out, _ = call(capsys, "list", "--inventory", inv, "--from-cluster", "--json")
    rows = {r["status"]["job_id"]: r for r in json.loads(out)}
    assert rc == 0 and set(rows) == {mine, "count-99"}
    assert rows[mine]["in_store"] and not rows["count-99"]["in_store"]
    assert backend.calls == {"list": 1}
    rc, out, _ = call(capsys, "list", "--inventory", inv, "--from-cluster")
    assert "count-99" in out and "IN STORE" in out


def test_status_shows_the_known_jobs_when_another_id_is_unknown(capsys, inv, backend):
    ids = submit(inv, 2)
    rc, out, err = call(capsys, "status", "--inventory", inv, ids[0], "count-999", ids[1],
                        "nosuch-1")
    assert rc == 2
    assert [line.split()[0] for line in out.splitlines()] == ids
    assert err.count("error: ") == 2 and "count-999" in err and "nosuch" in err
    assert err.count("hint: ") == 1
    rc, out, err = call(capsys, "--json", "status", "--inventory", inv, ids[0], "count-999")
    assert rc == 2 and [s["job_id"] for s in json.loads(out)] == ids[:1]
    rc, out, err = call(capsys, "status", "--inventory", inv, "count-999")
    assert rc == 2 and not out and err.startswith("error: no count job 'count-999'")
