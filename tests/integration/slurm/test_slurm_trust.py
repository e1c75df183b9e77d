"""What the Slurm backend promises about secrets, ownership, errors and batching, proven on
the real lab cluster (tests/testlab/slurm.py), locally and through the SSH login node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.integration.slurm.conftest import make_scheduler
from tests.integration.slurm.test_slurm_jobs import MODEL, definition, wait
from tests.testlab import slurm as lab
from warpforge_launch.errors import InfrastructureError
from warpforge_launch.jobs import (
    InputSpec,
    JobDefinition,
    JobState,
    JobSubmission,
    ResourceRequirements,
)

SECRET = "s3cr3t-'q' \"dq\" $(touch PWNED) `id` ; | & \\ *\nsecond line\ttab"
NOTE = "a'b\"c $(touch PWNED) `touch PWNED`\nline2 ; | & \\ * ${HOME} ~"


def read_nul(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


def read_env(path: Path) -> dict[str, str]:
    return dict(item.split("=", 1) for item in read_nul(path))


def hostile_definition(tmp_path: Path, **kw) -> JobDefinition:
    src = tmp_path / "dir $(touch PWNED)" / "m 'q' `id`.py"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("class M:\n    pass\n")
    return JobDefinition(
        name="evil'; touch PWNED\n#", source=str(src), model_class='M"; `touch PWNED`; echo "',
        inputs=(InputSpec((1, 8)), InputSpec((2, 3), "i64")),
        resources=ResourceRequirements(memory_mb=200),
        environment={"USER_NOTE": NOTE, "EMPTY": ""}, secret_env=("WF_SECRET_TOKEN",), **kw)


def ssh_config(slurm, login_node, **kw):
    from warpforge_launch.schedulers.slurm import SlurmConfig

    return SlurmConfig(login_host=login_node["host"], login_port=login_node["port"],
                       login_user=login_node["user"], identity_file=login_node["identity_file"],
                       known_hosts_file=login_node["known_hosts_file"],
                       work_dir=slurm.config.work_dir, runtime="none",
                       snakegrinder=slurm.config.snakegrinder, partition="debug",
                       command_timeout=20.0, **kw)


def check_verbatim(sched, shared: Path, user: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WF_SECRET_TOKEN", SECRET)
    sub = JobSubmission.new(hostile_definition(tmp_path))
    plan = sched.plan(sub)
    assert SECRET not in plan.render() and "WF_SECRET_TOKEN=***" in plan.render()
    assert SECRET not in json.dumps(plan.to_dict())
    native = sched.execute(plan).native_id
    job_id = sched.job_id(native)
    assert wait(sched, job_id).state is JobState.COMPLETED, "".join(sched.logs(job_id))
    out = lab.user_work_dir(shared, user) / f"output-{native}"
    assert out.stat().st_mode & 0o777 == 0o700
    argv = read_nul(out / "argv.nul")
    assert argv == [a.replace("$SLURM_JOB_ID", native) for a in plan.argv[1:]]
    assert argv[argv.index("--source") + 1] == sub.definition.source
    assert argv[argv.index("--class") + 1] == sub.definition.model_class
    env = read_env(out / "env.nul")
    assert env["USER_NOTE"] == NOTE and env["EMPTY"] == ""
    assert env["WF_SECRET_TOKEN"] == SECRET
    assert env["WARPFORGE_CORRELATION_ID"] == sub.correlation_id
    stored = lab.SlurmLab(base=lab.lab_root() / "cluster", accounting=True).run(
        "scontrol", "write", "batch_script", native, "-")
    assert "WF_SECRET_TOKEN=***" in stored.stdout and "s3cr3t" not in stored.stdout
    work = lab.user_work_dir(shared, user)
    assert not list(work.rglob("PWNED")) and not list(tmp_path.rglob("PWNED"))
    assert not [p for p in work.iterdir() if p.name.startswith(".submit-")]


def test_hostile_values_and_secret_arrive_verbatim_locally(slurm, shared_dir, tmp_path,
                                                          monkeypatch):
    check_verbatim(slurm, shared_dir, "root", tmp_path, monkeypatch)


def test_hostile_values_and_secret_arrive_verbatim_through_ssh(slurm, shared_dir, login_node,
                                                              tmp_path, monkeypatch):
    from warpforge_launch.schedulers.slurm import SlurmScheduler

    remote = SlurmScheduler("hpc", ssh_config(slurm, login_node), home=slurm.home)
    try:
        check_verbatim(remote, shared_dir, login_node["user"], tmp_path, monkeypatch)
        work = lab.user_work_dir(shared_dir, login_node["user"])
        st = work.stat()
        assert st.st_mode & 0o777 == 0o700
        assert st.st_uid == int(subprocess.run(["id", "-u", login_node["user"]],
                                               capture_output=True, text=True).stdout)
    finally:
        remote.transport.stop_master()


def _sbatch_spy(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """sbatch on PATH that records what its stdin (the script) is, then runs the real one."""
    spy = tmp_path / "spy"
    spy.mkdir()
    record = tmp_path / "spy.log"
    (spy / "sbatch").write_text(
        "#!/bin/sh\n[ -p /dev/stdin ] && k=pipe || k=not-a-pipe\n"
        f"echo \"sbatch $k\" >> {record}\n"
        f"exec {shutil.which('sbatch')} \"$@\"\n")
    (spy / "sbatch").chmod(0o755)
    return {"PATH": f"{spy}:{os.environ['PATH']}"}, record


def test_scripts_private_and_gone_after_submit_and_rejection(slurm_cluster, shared_dir,
                                                              _private_home, tmp_path):
    from warpforge_launch.errors import UsageError
    from warpforge_launch.schedulers.slurm_transport import LocalTransport

    env, record = _sbatch_spy(tmp_path)
    sched = make_scheduler(_private_home, slurm_cluster, shared_dir,
                           transport=LocalTransport(env={**env, "SLURM_CONF":
                                                         str(slurm_cluster.conf)}))
    job_id = sched.submit(JobSubmission.new(definition()))
    with pytest.raises(UsageError, match="Invalid partition name"):
        sched.submit(JobSubmission.new(definition(queue="nosuch")))
    assert record.read_text().splitlines() == ["sbatch pipe"] * 2  # never a file
    work = lab.user_work_dir(shared_dir, "root")
    assert work.stat().st_mode & 0o777 == 0o700
    assert not [p for p in work.iterdir() if p.suffix == ".sbatch" or
                p.name.startswith(".submit-")]
    wait(sched, job_id)


def test_secret_never_in_the_store_or_dry_run(slurm_cluster, shared_dir, _private_home,
                                             tmp_path, monkeypatch):
    from tests.integration.slurm.test_slurm_cli import inventory
    from warpforge_launch.launcher import Launcher

    monkeypatch.setenv("WF_SECRET_TOKEN", SECRET)
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    with Launcher(str(inv)) as launcher:
        _sub, _sched, plan = launcher.plan(hostile_definition(tmp_path))
        assert "WF_SECRET_TOKEN=***" in plan.render()
        job_id = launcher.submit(hostile_definition(tmp_path))
        assert launcher.wait(job_id, timeout=60).state is JobState.COMPLETED
    leaked = [p for p in _private_home.rglob("*") if p.is_file()
              and b"s3cr3t" in p.read_bytes()]
    assert leaked == []
    out = lab.user_work_dir(shared_dir, "root") / f"output-{job_id.rsplit('-', 1)[1]}"
    assert read_env(out / "env.nul")["WF_SECRET_TOKEN"] == SECRET


def test_reconcile_finds_an_accepted_job_by_correlation_id(slurm):
    sub = JobSubmission.new(definition(env={"WF_FAKE_SLEEP": "30"}))
    native = slurm.execute(slurm.plan(sub)).native_id
    fresh = make_scheduler(slurm.home, None, None, transport=slurm.transport,
                           work_dir=slurm.config.work_dir)
    unknown = str(uuid.uuid4())
    assert fresh.reconcile([sub.correlation_id, unknown]) == {sub.correlation_id: native}
    assert fresh.calls == {"squeue": 1, "sacct": 1}  # the unknown one was asked in sacct
    slurm.cancel(slurm.job_id(native))


# -- errors ---------------------------------------------------------------------------------
def test_bad_slurm_conf_is_exit_3_with_the_clients_message(slurm_cluster, shared_dir, tmp_path):
    from tests.integration.slurm.test_slurm_cli import inventory

    bad = tmp_path / "slurm.conf"
    bad.write_text("garbage line here\n")
    inv = inventory(tmp_path / "inv.yaml", shared_dir, slurm_cluster)
    inv.write_text(inv.read_text().replace(f"slurm_conf: {slurm_cluster.conf}",
                                           f"slurm_conf: {bad}"))
    done = run_cli("--inventory", str(inv), "submit", "--source", str(MODEL), "--class", "M",
                   "--inputs", "[(1, 8)]", timeout=60)
    assert done.returncode == 3, done.stderr
    assert "Slurm client configuration failed" in done.stderr
    assert "garbage line here" in done.stderr or "configuration file" in done.stderr
    assert "rejected" not in done.stderr
    missing = inv.read_text().replace(f"slurm_conf: {bad}", f"slurm_conf: {tmp_path}/absent")
    inv.write_text(missing)
    t0 = time.monotonic()
    done = run_cli("--inventory", str(inv), "status", "hpc-1", timeout=60)
    assert done.returncode == 3 and "absent is not a file" in done.stderr
    assert time.monotonic() - t0 < 10


def test_munge_unreachable_is_exit_3(slurm_cluster, shared_dir, tmp_path):
    from tests.integration.slurm.test_slurm_cli import inventory

    conf = tmp_path / "slurm.conf"
    conf.write_text(slurm_cluster.conf.read_text().replace(
        f"AuthInfo=socket={slurm_cluster.munge_socket}", f"AuthInfo=socket={tmp_path}/no.sock"))
    inv = inventory(tmp_path / "inv.yaml", shared_dir, slurm_cluster)
    inv.write_text(inv.read_text().replace(f"slurm_conf: {slurm_cluster.conf}",
                                           f"slurm_conf: {conf}"))
    done = run_cli("--inventory", str(inv), "submit", "--source", str(MODEL), "--class", "M",
                   "--inputs", "[(1, 8)]", timeout=90)
    assert done.returncode == 3, done.stderr
    assert "munge" in done.stderr.lower() and "rejected" not in done.stderr


def test_source_directory_is_refused_by_the_dry_run(slurm_cluster, shared_dir, tmp_path):
    from tests.integration.slurm.test_slurm_cli import inventory

    inv = inventory(tmp_path / "inv.yaml", shared_dir, slurm_cluster)
    done = run_cli("--inventory", str(inv), "submit", "--source", str(tmp_path), "--class", "M",
                   "--inputs", "[(1, 8)]", "--dry-run")
    assert done.returncode == 2 and "is a directory" in done.stderr
    done = run_cli("--inventory", str(inv), "submit", "--source", str(tmp_path / "no.py"),
                   "--class", "M", "--inputs", "[(1, 8)]", "--dry-run")
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_slurmdbd_down(slurm_cluster, shared_dir, _private_home):
    """Without slurmdbd: submit and active jobs still work (slurmctld queues accounting), a
    job only accounting knows is exit 3 naming slurmdbd, and nothing hangs."""
    sched = make_scheduler(_private_home, slurm_cluster, shared_dir, command_timeout=8.0)
    done_id = sched.submit(JobSubmission.new(definition()))
    wait(sched, done_id)
    lab.stop_daemon(slurm_cluster, "slurmdbd")
    try:
        running = sched.submit(JobSubmission.new(definition(env={"WF_FAKE_SLEEP": "60"})))
        fresh = make_scheduler(_private_home, slurm_cluster, shared_dir, command_timeout=8.0)
        assert fresh.status(running).state in (JobState.PENDING, JobState.RUNNING)
        t0 = time.monotonic()
        got = fresh.statuses([done_id])  # squeue still shows it: no exit code, not cached
        assert got[done_id].state is JobState.COMPLETED and time.monotonic() - t0 < 12
        with pytest.raises(InfrastructureError, match="slurmdbd") as err:
            fresh.status("slurm-99999999")  # not in squeue: only accounting could tell
        assert err.value.exit_code == 3
        print(err.value)
        sched.cancel(running)
    finally:
        lab.restart_daemon(slurm_cluster, "slurmdbd")


# -- the login node -------------------------------------------------------------------------------
def test_hung_login_node_is_exit_3_within_the_timeout(slurm_cluster, shared_dir, tmp_path):
    from tests.integration.slurm.test_slurm_cli import inventory
    from tests.testlab.blackhole import BlackHole

    hole = BlackHole()
    try:
        inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster,
                        login_host="127.0.0.1", login_port=hole.port,
                        known_hosts_file=str(tmp_path / "known_hosts"), command_timeout=3)
        inv.write_text(inv.read_text().replace("    command_timeout: 20\n", ""))
        t0 = time.monotonic()
        done = run_cli("--inventory", str(inv), "status", "hpc-1", timeout=60)
        took = time.monotonic() - t0
    finally:
        hole.close()
    assert done.returncode == 3, done.stderr
    assert "login node" in done.stderr and "Traceback" not in done.stderr
    assert took < 3 + 2 + 4, took  # the timeout, ssh's own grace, CLI start


def test_unknown_login_node_host_key_is_refused(slurm, login_node, tmp_path):
    from warpforge_launch.schedulers.slurm import SlurmScheduler

    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = ssh_config(slurm, login_node)
    config = type(config)(**{**config.__dict__, "known_hosts_file": str(empty)})
    sched = SlurmScheduler("hpc", config, home=tmp_path)
    with pytest.raises(InfrastructureError) as err:
        sched.status("hpc-1")
    assert err.value.exit_code == 3
    assert str(err.value) == (f"cannot reach login node {login_node['user']}@"
                              f"{login_node['host']}:{login_node['port']}: "
                              "Host key verification failed.")
    assert "known_hosts" in err.value.hint


# -- many at once ---------------------------------------------------------------------------
def test_20_concurrent_cli_submits_are_all_recorded(slurm_cluster, shared_dir, tmp_path):
    from tests.integration.slurm.test_slurm_cli import inventory

    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster,
                    extra_sbatch='["--hold"]')

    def submit(_):
        return run_cli("--inventory", str(inv), "--json", "submit", "--source", str(MODEL),
                       "--class", "M", "--inputs", "[(1, 8)]", timeout=120)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(submit, range(20)))
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results if
                                                          r.returncode]
    ids = {json.loads(r.stdout)["job_id"] for r in results}
    listed = run_cli("--inventory", str(inv), "--json", "list", "--limit", "100",
                     "--no-refresh", check_json=True)
    assert len(ids) == 20 and ids <= {row["job_id"] for row in listed.json}
    slurm_cluster.run("scancel", *(i.rsplit("-", 1)[1] for i in ids))


def test_status_of_30_ids_is_one_squeue_and_one_sacct(slurm_cluster, shared_dir, tmp_path):
    from tests.integration.slurm.test_slurm_cli import inventory
    from warpforge_launch.launcher import Launcher

    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    with Launcher(str(inv)) as launcher:
        done = [launcher.submit(definition()) for _ in range(5)]
        held = [launcher.submit(definition(), extra_sbatch=("--hold",)) for _ in range(25)]
        for job_id in done:
            launcher.wait(job_id, timeout=60)
    spy = tmp_path / "count"
    spy.mkdir()
    log = tmp_path / "calls.log"
    for prog in ("squeue", "sacct", "scontrol"):
        (spy / prog).write_text(f"#!/bin/sh\necho {prog} >> {log}\nexec {shutil.which(prog)} "
                                "\"$@\"\n")
        (spy / prog).chmod(0o755)
    try:
        got = run_cli("--inventory", str(inv), "--json", "status", *done, *held,
                      env={"PATH": f"{spy}:{os.environ['PATH']}"}, timeout=120)
        assert got.returncode == 0, got.stderr
        states = [s["state"] for s in json.loads(got.stdout)]
        assert states == ["COMPLETED"] * 5 + ["PENDING"] * 25
        calls = log.read_text().split()  # finished jobs come from the store; squeue sees
        assert calls.count("squeue") == 1 and calls.count("sacct") <= 1, calls  # the held ones
        assert "scontrol" not in calls, calls
    finally:
        slurm_cluster.run("scancel", *(i.rsplit("-", 1)[1] for i in held))
