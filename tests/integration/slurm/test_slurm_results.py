"""`result` and `logs` of finished Slurm jobs on the real lab cluster, through the SSH login
node as the tester ran them: many ids are ONE remote call once the store holds their final
statuses (no squeue, no sacct), equal to each job read on its own; and a symlink planted in a
job's files (by the job's own user) is never followed."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli, wait_finished
from tests.integration.slurm.test_slurm_cli import inventory as local_inventory
from tests.testlab import clientlog
from tests.testlab import slurm as slurm_lab
from tests.testlab.builders import definition
from tests.testlab.payload import behaviour
from warpforge_launch.jobs import ResourceRequirements
from warpforge_launch.launcher import Launcher

MODEL = Path(__file__).parents[2] / "unit" / "fixtures" / "slurm" / "models" / "simple_mlp.py"
SMALL = ResourceRequirements(memory_mb=200)
SECRET = "root:secret-for-result:0:0\n"


def untimed(result):
    """A result without its run time: the store may hold squeue's elapsed where a later
    status has sacct's (accounting can lag squeue by a moment)."""
    return dataclasses.replace(result, correlation_id=None, execution_time=None, metrics={})


@pytest.fixture
def finished(slurm_cluster, shared_dir, login_node, tmp_path, _private_home):
    """Four finished jobs (one failed) submitted through the login node; their final
    statuses are in the job store."""
    inv = slurm_lab.login_inventory(tmp_path / "inv.yaml", shared_dir, login_node)
    with Launcher(str(inv)) as launcher:
        jobs = [launcher.submit(definition(MODEL, resources=SMALL)) for _ in range(3)]
        jobs.append(launcher.submit(definition(MODEL, resources=SMALL, env=behaviour(
            exit=3, stderr="model exploded"))))
        with launcher.scheduler("hpc") as watch:  # accounting has them all ...
            end = time.monotonic() + 90
            while True:
                got = watch.statuses(jobs)
                if len(got) == len(jobs) and all(
                        s.scheduler_metadata.get("source") == "sacct" for s in got.values()):
                    break
                assert time.monotonic() < end, got
                time.sleep(0.3)
            watch.transport.stop_master()
        # ... when the store records their final statuses: each with its exit code
        assert all(s.state.terminal for s in launcher.statuses(jobs).values())
        sched = launcher._for_record(launcher.store.get(jobs[0]))
    yield inv, jobs
    sched.transport.stop_master()


def test_result_of_many_finished_jobs_is_one_remote_call(finished):
    inv, jobs = finished
    with Launcher(str(inv)) as launcher:  # a fresh CLI call: only the store is warm
        got = launcher.results(jobs)
        [sched] = launcher._instances.values()
        assert sched.calls == {"warpforge-read": 1}  # no squeue, no sacct, one read
        with launcher.scheduler("hpc") as single:
            for job_id in jobs:
                assert untimed(got[job_id]) == untimed(single.result(job_id))
        sched.transport.stop_master()
    ok = [got[j] for j in jobs[:3]]
    assert all(r.success and r.exit_code == 0 and "stablehlo" in r.mlir_output for r in ok)
    assert all({"model.mlir", "manifest.json"} <= {o.rsplit("/", 1)[-1] for o in r.outputs}
               for r in ok)
    bad = got[jobs[3]]
    assert not bad.success and bad.exit_code == 3 and "model exploded" in bad.error_message
    r = run_cli("--inventory", str(inv), "--json", "result", *jobs)
    assert r.returncode == 1, r.stderr  # one job failed
    assert [d["job_id"] for d in json.loads(r.stdout)] == jobs


def test_result_cli_asks_slurm_nothing_once_the_store_has_final_statuses(
        slurm_cluster, shared_dir, tmp_path):
    clientlog.wrap(tmp_path / "bin", tmp_path / "calls.log")
    log = tmp_path / "calls.log"
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    inv = local_inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    with Launcher(str(inv)) as launcher:
        ids = [launcher.submit(definition(MODEL, resources=SMALL)) for _ in range(3)]
        wait_finished(launcher, ids)
    base = ["--inventory", str(inv)]
    before = len(clientlog.calls(log))
    r = run_cli(*base, "--json", "result", *ids, env=env, check_json=True)
    assert r.returncode == 0, r.stderr
    assert clientlog.calls(log)[before:] == []  # every status final in the store
    assert [d["job_id"] for d in r.json] == ids
    assert all("stablehlo" in d["mlir_output"] for d in r.json)


def plant(link: Path, target: Path) -> None:
    """``link`` -> ``target``, owned by the user who owns the job's files (as a job of
    that user would leave it)."""
    owner = link.parent.stat()
    link.symlink_to(target)
    os.lchown(link, owner.st_uid, owner.st_gid)


@pytest.mark.parametrize("planted", ["model.mlir", "manifest.json", "out", "output dir"])
def test_result_and_logs_never_follow_a_planted_symlink(finished, shared_dir, login_node,
                                                        tmp_path, planted):
    inv, jobs = finished
    job = jobs[0]
    work = slurm_lab.user_work_dir(shared_dir, login_node["user"])
    native = job.removeprefix("hpc-")
    secret = shared_dir / "secret-for-result"  # readable by the login user, outside the job
    secret.write_text(SECRET)
    secret.chmod(0o644)
    out_dir = work / f"output-{native}"
    if planted == "output dir":
        elsewhere = shared_dir / "elsewhere-for-result"
        elsewhere.mkdir(exist_ok=True)
        for name in ("model.mlir", "manifest.json"):
            (elsewhere / name).write_text(SECRET)
        link, real, target = out_dir, work / f"kept-{native}", elsewhere
    elif planted == "out":
        link = work / f"warpforge-{native}.out"
        real, target = work / f"kept-{native}.out", secret
    else:
        link, real, target = out_dir / planted, out_dir / f"kept-{planted}", secret
    os.rename(link, real)
    plant(link, target)
    try:
        r = run_cli("--inventory", str(inv), "result", job)
        logs = run_cli("--inventory", str(inv), "logs", job)
        follow = run_cli("--inventory", str(inv), "logs", "-f", job)
    finally:
        link.unlink()
        os.rename(real, link)
    assert "secret-for-result:0:0" not in r.stdout + r.stderr
    assert r.returncode == 1, r.stderr  # as fetch: a refused file fails the command
    assert f"refused {link}: a symlink or not a regular file (never followed)" in r.stdout
    for shown in (logs, follow):
        assert shown.returncode == 0, shown.stderr
        assert "secret-for-result:0:0" not in shown.stdout
        assert (f"[refused {link}: a symlink" in shown.stdout) == (planted == "out")
    if planted != "out":
        assert "SUCCESS" in logs.stdout
