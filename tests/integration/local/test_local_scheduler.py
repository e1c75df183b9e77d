"""The Local scheduler with real processes: the fake payload behaves like snakegrinder."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.testlab.builders import definition as define
from tests.testlab.builders import local_inventory, model_file
from tests.testlab.payload import FAKE_SNAKEGRINDER, behaviour, record
from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import JobQuery, JobState
from warpforge_launch.launcher import Launcher
from warpforge_launch.schedulers.local_state import proc_start_time


def alive(pid: int) -> bool:
    return proc_start_time(pid) is not None


@pytest.fixture
def setup(tmp_path):
    def make(**settings):
        inv = local_inventory(tmp_path / f"inv{len(settings)}.yaml", **settings)
        return Launcher(str(inv))
    return make


@pytest.fixture
def launcher(setup):
    with setup() as launcher:
        yield launcher


@pytest.fixture
def model(tmp_path):
    return model_file(tmp_path)


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_completed_job_has_result_with_stablehlo(launcher, model, tmp_path):
    job = launcher.submit(define(model, env=behaviour(record=tmp_path / "seen.json")))
    status = launcher.wait(job, timeout=30)
    assert status.state is JobState.COMPLETED, status.message
    result = launcher.result(job)
    assert result.success and result.exit_code == 0
    assert "stablehlo.return" in result.mlir_output
    names = {Path(p).name for p in result.outputs}
    assert {"model.mlir", "manifest.json"} <= names
    assert result.execution_time is not None and result.correlation_id
    seen = record(tmp_path / "seen.json")
    argv = seen["argv"]
    assert argv[argv.index("--inputs") + 1] == "[(1, 8, 'f32')]"
    assert seen["env"]["WARPFORGE_JOB_ID"] == job
    assert seen["cwd"] == str(model.parent.resolve())


def test_failed_job_keeps_exit_code_and_message(launcher, model):
    job = launcher.submit(define(model, env={"WF_FAKE_EXIT": "3",
                                             "WF_FAKE_STDERR": "relu6 is not supported"}))
    status = launcher.wait(job, timeout=30)
    assert status.state is JobState.FAILED
    result = launcher.result(job)
    assert not result.success and result.exit_code == 3
    assert result.error_message == "exit code 3: FAILED: relu6 is not supported"


def test_timeout_kills_the_whole_group(launcher, model, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    job = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60",
                                             "WF_FAKE_GRANDCHILD": str(pidfile)},
                                 timeout=timedelta(seconds=1.5)))
    status = launcher.wait(job, timeout=30)
    assert status.state is JobState.TIMEOUT and "timed out after 1.5 s" in status.message
    payload = status.scheduler_metadata["payload_pid"]
    assert wait_for(lambda: not alive(payload), 5)
    assert pidfile.exists() and wait_for(lambda: not alive(int(pidfile.read_text())), 5)


def test_cancel_kills_grandchildren(launcher, model, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    job = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60",
                                             "WF_FAKE_GRANDCHILD": str(pidfile)}))
    assert wait_for(lambda: launcher.status(job).state is JobState.RUNNING and pidfile.exists()
                    and pidfile.read_text())
    grandchild = int(pidfile.read_text())
    assert alive(grandchild)
    cancelled, status = launcher.cancel(job)
    assert cancelled and status.state is JobState.CANCELLED
    assert wait_for(lambda: not alive(grandchild), 5), "detached grandchild survived the cancel"
    again, status = launcher.cancel(job)
    assert not again and status.state is JobState.CANCELLED


def test_cancel_a_finished_job_says_so(model, tmp_path):
    inv = str(local_inventory(tmp_path / "i.yaml"))
    job = run_cli("--inventory", inv, "submit", "--source", str(model), "--class", "SimpleMLP",
                  "--inputs", "[(1,8)]", "--wait", "--json", check_json=True).json["job_id"]
    proc = run_cli("--inventory", inv, "cancel", job)
    assert proc.returncode == 0 and "not cancelled, already COMPLETED" in proc.stdout


def test_concurrency_limit_queues_jobs(setup, model):
    with setup(max_concurrent_jobs=1) as launcher:
        first = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"}))
        assert wait_for(lambda: launcher.status(first).state is JobState.RUNNING)
        second = launcher.submit(define(model))
        time.sleep(0.5)
        assert launcher.status(second).state is JobState.PENDING
        launcher.cancel(first)
        assert launcher.wait(second, timeout=30).state is JobState.COMPLETED


def test_cancel_while_pending(setup, model):
    with setup(max_concurrent_jobs=1) as launcher:
        first = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"}))
        assert wait_for(lambda: launcher.status(first).state is JobState.RUNNING)
        second = launcher.submit(define(model))
        cancelled, status = launcher.cancel(second)
        assert cancelled and status.state is JobState.CANCELLED
        assert "waiting for a free slot" in status.message
        launcher.cancel(first)


def test_cancel_of_many_never_starts_a_queued_one(setup, model, monkeypatch):
    """`cancel RUNNING QUEUED QUEUED` on one slot: stopping the running job frees the slot,
    and neither queued job may start in it. The canceller pauses 0.3 s before each signal (a
    loaded machine; longer than a queued supervisor's slot poll), so the race is always hit."""
    from warpforge_launch.schedulers import local_state

    with setup(max_concurrent_jobs=1) as launcher:
        first = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"}))
        assert wait_for(lambda: launcher.status(first).state is JobState.RUNNING)
        queued = [launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"})) for _ in "ab"]
        real = local_state.send_signal

        def busy_then_signal(*args, **kwargs):
            time.sleep(0.3)
            return real(*args, **kwargs)

        monkeypatch.setattr(local_state, "send_signal", busy_then_signal)
        done = launcher.cancel_many([first, *queued])
        assert [c for c, _ in done.values()] == [True] * 3
        for job in queued:
            status = done[job][1]
            assert status.state is JobState.CANCELLED and "payload_pid" not in \
                status.scheduler_metadata, status


def test_killed_supervisor_is_reported_failed(launcher, model, tmp_path):
    job = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"}))
    assert wait_for(lambda: launcher.status(job).state is JobState.RUNNING)
    job_dir = Path(os.environ["WARPFORGE_HOME"]) / "local" / "local" / job.split("-", 1)[1]
    supervisor = int((job_dir / "supervisor.pid").read_text().split()[0])
    payload = launcher.status(job).scheduler_metadata["payload_pid"]
    os.kill(supervisor, signal.SIGKILL)
    assert wait_for(lambda: launcher.status(job).state is JobState.FAILED, 10)
    status = launcher.status(job)
    assert f"supervisor process {supervisor} died" in status.message
    assert wait_for(lambda: not alive(payload), 5), "orphaned payload left running"


def test_status_from_a_later_process(model, tmp_path):
    inv = str(local_inventory(tmp_path / "i.yaml"))
    sub = run_cli("--inventory", inv, "submit", "--source", str(model), "--class", "SimpleMLP",
                  "--inputs", "[(1,8)]", "--env", "WF_FAKE_SLEEP=0.5")
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip()
    assert job.startswith("local-")

    def state():
        return json.loads(run_cli("--inventory", inv, "status", "--json", job).stdout)["state"]
    assert wait_for(lambda: state() == "COMPLETED", 30)
    res = run_cli("--inventory", inv, "result", job)
    assert res.returncode == 0 and "stablehlo.return" in res.stdout
    listed = run_cli("--inventory", inv, "list", "--state", "COMPLETED", "--json",
                     check_json=True).json
    assert [row["job_id"] for row in listed] == [job]


HOSTILE = ["$(touch PWNED)", "a; touch PWNED2", "`touch PWNED3`", "it's \"quoted\"",
           "line1\nline2", "  spaces  ", "|| true &&", "*"]


def test_hostile_arguments_reach_the_payload_verbatim(launcher, tmp_path):
    weird = tmp_path / "dir with spaces; $(touch PWNED4)"
    weird.mkdir()
    model = model_file(weird, "mo'del $x.py")
    env = {f"USER_{i}": v for i, v in enumerate(HOSTILE)}
    env.update(behaviour(record=tmp_path / "seen.json"))
    job = launcher.submit(define(model, env=env, name="name; rm -rf /"))
    assert launcher.wait(job, timeout=30).state is JobState.COMPLETED
    seen = record(tmp_path / "seen.json")
    argv = seen["argv"]
    assert argv[argv.index("--source") + 1] == str(model)
    assert [seen["env"][f"USER_{i}"] for i in range(len(HOSTILE))] == HOSTILE
    for d in (tmp_path, weird, Path.cwd()):
        assert not list(d.glob("PWNED*")), "a shell interpreted an argument"


def test_twenty_concurrent_cli_submits(tmp_path):
    inv = str(local_inventory(tmp_path / "i.yaml", max_concurrent_jobs=4))
    model = model_file(tmp_path)
    argv = ["--inventory", inv, "submit", "--source", str(model), "--class", "SimpleMLP",
            "--inputs", "[(1,8)]"]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        procs = list(pool.map(lambda _: run_cli(*argv, timeout=120), range(20)))
    assert [p.returncode for p in procs] == [0] * 20, [p.stderr for p in procs if p.returncode]
    ids = {p.stdout.strip() for p in procs}
    assert len(ids) == 20
    with Launcher(inv) as launcher:
        rows = launcher.list(JobQuery(limit=None), refresh=False)
        assert {r.job_id for r, _ in rows} == ids
        for job in ids:
            assert launcher.wait(job, timeout=60).state is JobState.COMPLETED


def test_logs_and_follow(launcher, model):
    job = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "1", "WF_FAKE_STDERR": "warn"}))
    text = "".join(launcher.logs(job, follow=True))
    assert "tracing" in text and "SUCCESS: traced" in text and "warn" in text
    assert launcher.status(job).state is JobState.COMPLETED


def test_result_of_a_running_job_is_refused(launcher, model):
    job = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "30"}))
    with pytest.raises(UsageError, match="has not finished"):
        launcher.result(job)
    launcher.cancel(job)


def test_wait_exit_codes(model, tmp_path):
    inv = str(local_inventory(tmp_path / "i.yaml"))
    base = ["--inventory", inv, "submit", "--source", str(model), "--class", "SimpleMLP",
            "--inputs", "[(1,8)]", "--wait"]
    ok = run_cli(*base)
    assert ok.returncode == 0 and "stablehlo" in ok.stdout
    bad = run_cli(*base, "--env", "WF_FAKE_EXIT=4")
    assert bad.returncode == 1 and "exit code 4" in bad.stdout


def test_fake_payload_rejects_unknown_options(tmp_path):
    import subprocess
    proc = subprocess.run([str(FAKE_SNAKEGRINDER), "--version"], capture_output=True, text=True)
    assert proc.returncode == 2


def test_logs_through_the_cli(model, tmp_path):
    inv = str(local_inventory(tmp_path / "i.yaml"))
    job = run_cli("--inventory", inv, "submit", "--source", str(model), "--class", "SimpleMLP",
                  "--inputs", "[(1,8)]", "--env", "WF_FAKE_SLEEP=0.5").stdout.strip()
    followed = run_cli("--inventory", inv, "logs", "--follow", job)
    assert followed.returncode == 0 and "SUCCESS: traced" in followed.stdout
    as_json = run_cli("--inventory", inv, "logs", "--json", job, check_json=True).json
    assert as_json["job_id"] == job and "tracing" in as_json["logs"]


def test_list_state_filter_sees_jobs_that_finished_since(launcher, model):
    job = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "0.3"}))
    assert launcher.store.get(job).state is JobState.PENDING  # nobody has looked yet
    assert wait_for(lambda: [r.job_id for r, _ in launcher.list(
        JobQuery(states={JobState.COMPLETED}, limit=5))] == [job])
    assert launcher.list(JobQuery(states={JobState.RUNNING})) == []


# -- signals only to what is ours --------------------------------------------------------------
def test_cancel_of_a_payload_that_ignores_sigterm_uses_the_kill_grace(setup, model):
    with setup(kill_grace_seconds=1) as launcher:
        job = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60",
                                                 "WF_FAKE_IGNORE_TERM": "1"}))
        assert wait_for(lambda: launcher.status(job).state is JobState.RUNNING)
        payload = launcher.status(job).scheduler_metadata["payload_pid"]
        time.sleep(0.3)  # let the payload install its SIGTERM handler
        t0 = time.monotonic()
        cancelled, status = launcher.cancel(job)
        took = time.monotonic() - t0
        assert cancelled and status.state is JobState.CANCELLED
        assert 1.0 <= took < 6, f"cancel took {took:.1f} s with a 1 s grace"
        assert wait_for(lambda: not alive(payload), 5), "SIGTERM-proof payload survived"


def test_supervisor_killed_while_the_job_is_pending(setup, model):
    with setup(max_concurrent_jobs=1) as launcher:
        first = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"}))
        assert wait_for(lambda: launcher.status(first).state is JobState.RUNNING)
        second = launcher.submit(define(model))
        job_dir = Path(os.environ["WARPFORGE_HOME"]) / "local" / "local" / second.split("-", 1)[1]
        assert wait_for(lambda: (job_dir / "supervisor.pid").exists())
        supervisor = int((job_dir / "supervisor.pid").read_text().split()[0])
        assert launcher.status(second).state is JobState.PENDING
        os.kill(supervisor, signal.SIGKILL)
        assert wait_for(lambda: launcher.status(second).state is JobState.FAILED, 10)
        status = launcher.status(second)
        assert f"supervisor process {supervisor} died" in status.message
        assert "payload_pid" not in status.scheduler_metadata
        assert launcher.status(first).state is JobState.RUNNING  # the other job is untouched
        launcher.cancel(first)


def test_a_reused_payload_pid_is_never_signalled(launcher, model):
    """The supervisor died and the kernel gave the payload's pid to another process group:
    status must record FAILED without killing that stranger."""
    import subprocess
    import sys

    job = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"}))
    assert wait_for(lambda: launcher.status(job).state is JobState.RUNNING)
    job_dir = Path(os.environ["WARPFORGE_HOME"]) / "local" / "local" / job.split("-", 1)[1]
    supervisor = int((job_dir / "supervisor.pid").read_text().split()[0])
    payload = launcher.status(job).scheduler_metadata["payload_pid"]
    os.kill(supervisor, signal.SIGKILL)
    os.killpg(payload, signal.SIGKILL)
    assert wait_for(lambda: not alive(payload) and not alive(supervisor), 5)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                start_new_session=True)
    try:
        state = json.loads((job_dir / "state.json").read_text())
        state["payload_pid"] = stranger.pid  # as if the kernel had reused the pid
        (job_dir / "state.json").write_text(json.dumps(state))
        assert launcher.status(job).state is JobState.FAILED
        time.sleep(0.2)
        assert stranger.poll() is None, "an unrelated process group was killed"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_supervisor_that_never_started_is_failed_not_pending(launcher, model, monkeypatch):
    from warpforge_launch.schedulers import local

    job = launcher.submit(define(model))
    launcher.wait(job, timeout=30)
    job_dir = Path(os.environ["WARPFORGE_HOME"]) / "local" / "local" / job.split("-", 1)[1]
    # a job directory as a submitter that died before starting the supervisor leaves it
    (job_dir / "supervisor.pid").unlink()
    (job_dir / "state.json").write_text(json.dumps(
        {"state": "PENDING", "state_changed_at": "2026-01-01T00:00:00+00:00"}))
    sched = launcher.scheduler()
    assert sched.status(job).state is JobState.PENDING  # young: being started right now
    monkeypatch.setattr(local, "START_GRACE_SECONDS", 0.0)
    status = sched.status(job)
    assert status.state is JobState.FAILED and "never started" in status.message


# -- crash-consistent submit with the real backend --------------------------------------------
def test_submit_interrupted_after_the_job_started_is_found_again(setup, model, monkeypatch):
    from warpforge_launch.schedulers.local import LocalScheduler

    real = LocalScheduler.execute

    def execute_then_crash(self, plan):
        real(self, plan)
        raise KeyboardInterrupt  # the process dies between the send and the record

    with setup() as launcher:
        monkeypatch.setattr(LocalScheduler, "execute", execute_then_crash)
        with pytest.raises(KeyboardInterrupt):
            launcher.submit(define(model))
        monkeypatch.setattr(LocalScheduler, "execute", real)
        (row,) = launcher.store.query(JobQuery())
        assert row.submitting
    with setup() as launcher:  # a later command
        assert wait_for(lambda: [s.state for _, s in launcher.list(JobQuery())]
                        == [JobState.COMPLETED])
        record = launcher.store.get(row.job_id)
        assert not record.submitting and record.correlation_id == row.correlation_id
        assert "stablehlo.return" in launcher.result(row.job_id).mlir_output


# -- secrets ----------------------------------------------------------------------------------
def test_secret_env_reaches_the_payload_and_no_file(model, tmp_path):
    inv = str(local_inventory(tmp_path / "i.yaml"))
    value = "s3cr3t-value-" + os.urandom(6).hex()
    base = ["--inventory", inv, "submit", "--source", str(model), "--class", "SimpleMLP",
            "--inputs", "[(1,8)]", "--secret-env", "USER_TOKEN"]
    dry = run_cli(*base, "--dry-run", env={"USER_TOKEN": value})
    assert dry.returncode == 0 and '"USER_TOKEN": "***"' in dry.stdout
    assert value not in dry.stdout + dry.stderr
    dry_json = run_cli(*base, "--dry-run", "--json", env={"USER_TOKEN": value})
    assert value not in dry_json.stdout and "USER_TOKEN" in dry_json.stdout
    missing = run_cli(*base)  # not set in this environment
    assert missing.returncode == 2 and "USER_TOKEN" in missing.stderr
    seen = tmp_path / "seen.json"  # the payload's own record, outside the state directory
    done = run_cli(*base, "--env", f"WF_FAKE_RECORD={seen}", "--wait", "--json",
                   env={"USER_TOKEN": value}, check_json=True)
    assert done.returncode == 0, done.stderr
    assert value not in done.stdout
    job = done.json["job_id"]
    assert record(seen)["env"]["USER_TOKEN"] == value
    home = Path(os.environ["WARPFORGE_HOME"])
    assert (home / "local" / "local" / job.split("-", 1)[1] / "job.json").is_file()
    for path in home.rglob("*"):
        if path.is_file():
            assert value.encode() not in path.read_bytes(), f"secret written to {path}"


# -- each instance its own slots and work dir --------------------------------------------------
def two_instances(tmp_path, **one):
    from tests.testlab.builders import inventory

    fake = str(FAKE_SNAKEGRINDER)
    return str(inventory(tmp_path / "two.yaml", {
        "local": {"type": "local", "snakegrinder": fake, "max_concurrent_jobs": 2},
        "one": {"type": "local", "snakegrinder": fake, "max_concurrent_jobs": 1, **one}}))


def test_instances_have_their_own_slots_and_work_dirs(model, tmp_path):
    inv = two_instances(tmp_path)
    home = Path(os.environ["WARPFORGE_HOME"])
    with Launcher(inv) as launcher:
        busy = [launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"})) for _ in range(2)]
        assert wait_for(lambda: all(launcher.status(j).state is JobState.RUNNING for j in busy))
        mine = launcher.submit(define(model, env={"WF_FAKE_SLEEP": "60"}), "one")
        try:
            # `one` runs nothing else: its job must not wait for `local`'s slots
            assert wait_for(lambda: launcher.status(mine).state is JobState.RUNNING, 10)
            shown = launcher.cluster_info("one")
            info = shown.details
            assert shown.scheduler_name == "one"
            assert info["running_jobs"] == 1 and info["max_concurrent_jobs"] == 1
            assert info["work_dir"] == str(home / "local" / "one")
            assert launcher.cluster_info("local").details["work_dir"] == str(home / "local" /
                                                                             "local")
            assert (home / "local" / "one" / mine.removeprefix("one-") / "job.json").is_file()
            assert {s.job_id for s in launcher.scheduler("one").list(JobQuery())} == {mine}
        finally:
            for job in (*busy, mine):
                launcher.cancel(job)


def test_jobs_in_the_former_shared_work_dir_stay_readable(model, tmp_path):
    """A job submitted before instances had their own default work dir lives in
    $WARPFORGE_HOME/local/<id>/ and its store row says ``work_dir: null``: status, result,
    logs and list still find it there (nothing is moved). It is made here by submitting
    with that directory set explicitly, then giving its row the config the old code kept."""
    import sqlite3

    from warpforge_launch.storefile import store_file

    home = Path(os.environ["WARPFORGE_HOME"])
    inv = str(local_inventory(tmp_path / "i.yaml"))
    with Launcher(inv) as launcher:
        job = launcher.submit(define(model), work_dir=str(home / "local"))
        assert launcher.wait(job, timeout=30).state is JobState.COMPLETED
    old_dir = home / "local" / job.removeprefix("local-")
    assert (old_dir / "job.json").is_file()
    db = sqlite3.connect(store_file())
    config = json.loads(db.execute("SELECT config FROM jobs WHERE job_id = ?",
                                   (job,)).fetchone()[0])
    config["work_dir"] = None
    db.execute("UPDATE jobs SET config = ?, state = 'RUNNING' WHERE job_id = ?",
               (json.dumps(config), job))
    db.commit()
    db.close()
    status = run_cli("--inventory", inv, "status", "--json", job, check_json=True)
    assert status.returncode == 0 and status.json["state"] == "COMPLETED", status.stderr
    result = run_cli("--inventory", inv, "result", job)
    assert result.returncode == 0 and "stablehlo.return" in result.stdout, result.stderr
    logs = run_cli("--inventory", inv, "logs", job)
    assert logs.returncode == 0 and "SUCCESS: traced" in logs.stdout, logs.stderr
    listed = run_cli("--inventory", inv, "--json", "list", "--from-cluster", check_json=True)
    assert job in {row["status"]["job_id"] for row in listed.json}, listed.stdout
    assert old_dir.is_dir() and not (home / "local" / "local" / old_dir.name).exists()


# -- private files ------------------------------------------------------------------------------
def test_job_files_are_private_under_umask_022(model, tmp_path):
    inv = str(local_inventory(tmp_path / "i.yaml"))
    old = os.umask(0o022)
    try:
        done = run_cli("--inventory", inv, "submit", "--source", str(model), "--class",
                       "SimpleMLP", "--inputs", "[(1,8)]", "--wait", "--json", check_json=True)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    home = Path(os.environ["WARPFORGE_HOME"])
    job_dir = home / "local" / "local" / done.json["job_id"].removeprefix("local-")
    slots = job_dir.parent / "slots"
    paths = [home / "local", job_dir.parent, job_dir, *job_dir.rglob("*"), slots,
             *slots.iterdir()]
    names = {p.relative_to(job_dir).as_posix() for p in job_dir.rglob("*")}
    assert {"job.json", "state.json", "supervisor.pid", "supervisor.log", "stdout.log",
            "stderr.log", "out", "out/model.mlir"} <= names
    loose = {str(p): oct(p.stat().st_mode & 0o777) for p in paths
             if p.stat().st_mode & 0o777 != (0o700 if p.is_dir() else 0o600)}
    assert not loose, f"not private (0700/0600): {loose}"


# -- node affinity ------------------------------------------------------------------------------
def test_a_node_other_than_this_host_is_refused_before_anything_is_recorded(model, tmp_path):
    import socket

    inv = str(local_inventory(tmp_path / "i.yaml"))
    base = ["--inventory", inv, "submit", "--source", str(model), "--class", "SimpleMLP",
            "--inputs", "[(1,8)]"]
    for extra in ([], ["--dry-run"]):
        refused = run_cli(*base, "--node", "othernode", *extra)
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and "othernode" in lines[0], lines
        assert "Traceback" not in refused.stderr
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps({"models": [{"source": str(model), "class": "SimpleMLP"}],
                                 "inputs": ["[(1, 8)]"], "options": {"nodes": ["othernode"]}}))
    refused = run_cli("--inventory", inv, "sweep", str(sweep))
    assert refused.returncode == 2 and "othernode" in refused.stderr, refused.stderr
    assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    home = Path(os.environ["WARPFORGE_HOME"])
    assert not (home / "local").exists() or not any((home / "local").rglob("job.json"))
    listed = run_cli("--inventory", inv, "--json", "list", check_json=True)
    assert listed.json == []
    assert run_cli("--inventory", inv, "--json", "sweep", "list", check_json=True).json == []
    here = run_cli(*base, "--node", socket.gethostname(), "--wait")
    assert here.returncode == 0, here.stderr
