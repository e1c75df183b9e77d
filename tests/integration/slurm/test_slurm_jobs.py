"""Real jobs on the real Slurm lab cluster (runtime `none`; the fake payload, and once the
stand-in snakegrinder of issue #3 with real PyTorch tracing).

Singularity/Apptainer cannot run on this machine: the container lines of the script are
covered by the golden tests in tests/unit/test_slurm_script.py.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integration.slurm.conftest import make_scheduler
from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
from warpforge_launch.jobs import (
    GpuType,
    InputSpec,
    JobDefinition,
    JobQuery,
    JobState,
    JobSubmission,
    ResourceRequirements,
)

MODEL = Path(__file__).parents[2] / "unit" / "fixtures" / "slurm" / "models" / "simple_mlp.py"


def definition(name="simple_mlp", env=None, timeout=timedelta(minutes=5), **res) -> JobDefinition:
    return JobDefinition(
        name=name, source=str(MODEL), model_class="SimpleMLP",
        inputs=(InputSpec((1, 8)),), resources=ResourceRequirements(**{"memory_mb": 200, **res}),
        environment=env or {}, timeout=timeout)


def submit(sched, **kw) -> str:
    return sched.submit(JobSubmission.new(definition(**kw)))


def wait(sched, job_id, until=lambda s: s.state.terminal, deadline=60.0):
    end = time.monotonic() + deadline
    while True:
        status = sched.status(job_id)
        if until(status):
            return status
        if time.monotonic() > end:
            pytest.fail(f"{job_id} still {status.state} after {deadline}s: {status.message}")
        time.sleep(0.5)


@pytest.fixture(scope="module", autouse=True)
def timeout_job(slurm_cluster, shared_dir, tmp_path_factory):
    """Submitted first, checked last: Slurm's one-minute --time floor then overlaps the
    other tests instead of adding a minute to the run."""
    sched = make_scheduler(tmp_path_factory.mktemp("timeout-home"), slurm_cluster, shared_dir)
    job_id = sched.submit(JobSubmission.new(definition(env={"WF_FAKE_SLEEP": "300"},
                                                       timeout=timedelta(seconds=30))))
    yield sched, job_id
    sched.cancel(job_id)  # only acts when test_timeout_job did not run


def test_completed_job_reads_back_outputs_and_logs(slurm):
    job_id = submit(slurm)
    assert job_id.startswith("slurm-") and job_id.removeprefix("slurm-").isdigit()
    status = wait(slurm, job_id)
    assert status.state is JobState.COMPLETED, status.message
    assert status.node_name and status.elapsed is not None
    result = slurm.result(job_id)
    assert result.success and result.exit_code == 0
    assert "stablehlo.return" in result.mlir_output
    names = {o.rsplit("/", 1)[-1] for o in result.outputs}
    assert {"model.mlir", "manifest.json"} <= names
    assert all(f"/output-{job_id.removeprefix('slurm-')}/" in o for o in result.outputs)
    logs = "".join(slurm.logs(job_id))
    assert "SUCCESS" in logs


def test_failed_job_reports_exit_code_and_stderr(slurm):
    job_id = submit(slurm, env={"WF_FAKE_EXIT": "3", "WF_FAKE_STDERR": "model exploded"})
    status = wait(slurm, job_id)
    assert status.state is JobState.FAILED
    assert "exit code 3" in status.message
    result = slurm.result(job_id)
    assert not result.success and result.exit_code == 3
    assert "model exploded" in result.error_message
    assert result.mlir_output is None


def test_logs_follow_until_the_job_ends(slurm):
    job_id = submit(slurm, env={"WF_FAKE_SLEEP": "3", "WF_FAKE_STDERR": "warming up"})
    t0 = time.monotonic()
    text = "".join(slurm.logs(job_id, follow=True))
    assert time.monotonic() - t0 < 60
    assert slurm.status(job_id).state is JobState.COMPLETED
    assert text.count("SUCCESS") == 1 and text.count("warming up") == 1  # no repeats


def test_cancel_running_job(slurm):
    job_id = submit(slurm, env={"WF_FAKE_SLEEP": "120"})
    wait(slurm, job_id, until=lambda s: s.state is JobState.RUNNING)
    assert slurm.cancel(job_id) is True
    status = wait(slurm, job_id)
    assert status.state is JobState.CANCELLED
    assert "cancelled by uid" in status.message
    assert slurm.cancel(job_id) is False  # already finished: says so


def test_cancel_pending_job(slurm_cluster, shared_dir, _private_home):
    held = make_scheduler(_private_home, slurm_cluster, shared_dir, extra_sbatch=("--hold",))
    job_id = held.submit(JobSubmission.new(definition()))
    status = held.status(job_id)
    assert status.state is JobState.PENDING
    assert "JobHeldUser" in status.message
    assert held.cancel(job_id) is True
    assert wait(held, job_id).state is JobState.CANCELLED


def test_nvidia_gres_sets_cuda_visible_devices(slurm):
    job_id = submit(slurm, gpu_type=GpuType.NVIDIA, gpu_count=1)
    assert wait(slurm, job_id).state is JobState.COMPLETED
    assert "CUDA_VISIBLE_DEVICES=0" in "".join(slurm.logs(job_id))


def test_no_gpu_job_sees_no_gpu(slurm):
    job_id = submit(slurm)
    wait(slurm, job_id)
    assert "CUDA_VISIBLE_DEVICES=unset" in "".join(slurm.logs(job_id))


def test_sbatch_rejections_are_one_clear_line(slurm):
    with pytest.raises(UsageError, match="Invalid partition name specified"):
        submit(slurm, queue="nosuch")
    with pytest.raises(UsageError, match="Requested node configuration is not available"):
        submit(slurm, gpu_type=GpuType.AMD, gpu_count=4)


def test_unknown_job_id(slurm):
    with pytest.raises(NotFoundError):
        slurm.status("slurm-99999999")
    with pytest.raises(NotFoundError):
        slurm.status("slurm-abc")


def test_one_squeue_one_sacct_then_zero_calls_when_cached(slurm):
    ids = slurm.submit_many([JobSubmission.new(definition()) for _ in range(5)])
    assert len(ids) == 5 and len(set(ids)) == 5
    for job_id in ids:
        wait(slurm, job_id)
    fresh = make_scheduler(slurm.home, None, None, transport=slurm.transport,
                           work_dir=slurm.config.work_dir, snakegrinder=slurm.config.snakegrinder)
    got = fresh.statuses(ids)
    assert {s.state for s in got.values()} == {JobState.COMPLETED}
    assert fresh.calls == {"squeue": 1, "sacct": 1}
    fresh.calls.clear()
    assert fresh.statuses(ids) == got
    assert not fresh.calls  # every job terminal and cached: Slurm is not asked at all


def test_list_and_cluster_info(slurm):
    job_id = submit(slurm)
    wait(slurm, job_id)
    listed = {s.job_id: s for s in slurm.list(JobQuery(limit=500))}
    assert listed[job_id].state is JobState.COMPLETED
    only_running = slurm.list(JobQuery(states=frozenset({JobState.RUNNING})))
    assert job_id not in {s.job_id for s in only_running}
    info = slurm.cluster_info()
    assert info.scheduler_version.startswith("slurm 22.05")
    assert info.total_nodes == 1 and info.available_nodes == 1
    assert dict(info.gpus_by_type) == {"nvidia": 1, "amd": 1}
    node = info.nodes[0]
    assert node.gpu_type is GpuType.ANY and node.gpu_count == 2 and node.cpu_cores >= 1
    assert info.details["partitions"] == ["debug", "short"]
    assert info.details["accounting"] is True


def test_cluster_info_asks_once_whether_there_is_accounting(slurm_cluster, shared_dir,
                                                            tmp_path):
    fresh = make_scheduler(tmp_path / "fresh", slurm_cluster, shared_dir, name="hpcfresh")
    assert fresh.cluster_info().details["accounting"] is True
    assert fresh.calls["sacct"] == 1
    again = make_scheduler(tmp_path / "fresh", slurm_cluster, shared_dir, name="hpcfresh")
    assert again.cluster_info().details["accounting"] is True and again.calls["sacct"] == 0


def test_accounting_disabled_falls_back_to_scontrol_once(slurm_noacct):
    ok = submit(slurm_noacct)
    bad = submit(slurm_noacct, env={"WF_FAKE_EXIT": "3"})
    deadline = time.monotonic() + 60
    while True:
        got = slurm_noacct.statuses([ok, bad])
        if all(s.state.terminal for s in got.values()) and len(got) == 2:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.5)
    assert got[ok].state is JobState.COMPLETED
    assert got[bad].state is JobState.FAILED and got[bad].scheduler_metadata["exit_code"] == 3
    assert slurm_noacct.accounting_enabled() is False
    assert slurm_noacct.calls["sacct"] == 1  # detected once ...
    # ... and remembered by the next process: a fresh instance never tries sacct
    fresh = make_scheduler(slurm_noacct.home, None, None, transport=slurm_noacct.transport,
                           name="hpcna", work_dir=slurm_noacct.config.work_dir)
    assert fresh.status(bad).state is JobState.FAILED
    assert fresh.calls == {"scontrol": 1}
    assert slurm_noacct.result(bad).exit_code == 3
    assert slurm_noacct.cluster_info().details["accounting"] is False



def test_without_accounting_each_array_task_has_its_own_state(slurm_noacct,
                                                              slurm_cluster_noacct, tmp_path):
    """scontrol lists an array task under its own job record (JobId=8 ArrayJobId=7
    ArrayTaskId=0): each task gets its own state, not the array record's (which ran as the
    other task); an array cancelled before it ran is one record holding every task."""
    script = tmp_path / "array.sh"
    script.write_text('#!/bin/bash\nsleep 1\n[ "$SLURM_ARRAY_TASK_ID" = 1 ] && exit 4\nexit 0\n')

    def sbatch(*opts):
        return slurm_cluster_noacct.run(
            "sbatch", "--parsable", "-p", "debug", "--mem=50M", "-t", "5", "-o", "/dev/null",
            "-e", "/dev/null", "-D", "/tmp", *opts, str(script)).stdout.strip()

    ran, held = sbatch("--array=0-1"), sbatch("--array=0-5%2", "--hold")
    ids = [f"hpcna-{ran}_0", f"hpcna-{ran}_1"]
    deadline = time.monotonic() + 60
    while True:
        got = slurm_noacct.statuses(ids)
        if len(got) == 2 and all(s.state.terminal for s in got.values()):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.5)
    assert [got[j].state for j in ids] == [JobState.COMPLETED, JobState.FAILED]
    assert [got[j].scheduler_metadata["exit_code"] for j in ids] == [0, 4]
    cells = [f"hpcna-{held}_{i}" for i in range(6)]
    assert all(slurm_noacct.cancel_many(cells).values())
    got = slurm_noacct.statuses(cells)
    assert len(got) == 6 and {s.state for s in got.values()} == {JobState.CANCELLED}

def test_controller_down_is_a_bounded_infrastructure_error(slurm_cluster_noacct, shared_dir,
                                                           _private_home):
    from tests.testlab import slurm as lab

    sched = make_scheduler(_private_home, slurm_cluster_noacct, shared_dir, name="hpcna",
                           command_timeout=4.0)
    job_id = sched.submit(JobSubmission.new(definition()))
    lab.stop_daemon(slurm_cluster_noacct, "slurmctld")
    try:
        t0 = time.monotonic()
        with pytest.raises(InfrastructureError) as err:
            sched.status(job_id)
        assert time.monotonic() - t0 < 15
        assert err.value.exit_code == 3
        with pytest.raises(InfrastructureError):
            sched.submit(JobSubmission.new(definition()))
    finally:
        lab.restart_daemon(slurm_cluster_noacct, "slurmctld")


def test_submission_through_ssh_login_node(slurm, login_node):
    from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler

    config = SlurmConfig(login_host=login_node["host"], login_port=login_node["port"],
                         login_user=login_node["user"], identity_file=login_node["identity_file"],
                         known_hosts_file=login_node["known_hosts_file"],
                         work_dir=slurm.config.work_dir, runtime="none",
                         snakegrinder=slurm.config.snakegrinder, partition="debug")
    remote = SlurmScheduler("hpc", config, home=slurm.home)
    try:
        job_id = remote.submit(JobSubmission.new(definition()))
        assert job_id.startswith("hpc-")
        assert remote.transport.control_path.exists()  # the shared connection persists
        again = SlurmScheduler("hpc", config, home=slurm.home)  # e.g. the next CLI call
        assert wait(again, job_id).state is JobState.COMPLETED
        assert "stablehlo" in again.result(job_id).mlir_output
    finally:
        remote.transport.stop_master()


def test_ssh_login_node_with_wrong_host_key_is_refused(slurm, login_node, tmp_path):
    from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler

    bad_known = tmp_path / "known_hosts"
    bad_known.write_text(f"[{login_node['host']}]:{login_node['port']} ssh-ed25519 "
                         "AAAAC3NzaC1lZDI1NTE5AAAAIAbadbadbadbadbadbadbadbadbadbadbadbadbadbadbad\n")
    config = SlurmConfig(login_host=login_node["host"], login_port=login_node["port"],
                         login_user=login_node["user"], identity_file=login_node["identity_file"],
                         known_hosts_file=str(bad_known), work_dir=slurm.config.work_dir,
                         runtime="none")
    sched = SlurmScheduler("hpc", config, home=tmp_path)
    with pytest.raises(InfrastructureError, match="cannot reach login node"):
        sched.status("hpc-1")


def test_standin_snakegrinder_traces_on_slurm(slurm_cluster, shared_dir, _private_home):
    """The stand-in of issue #3 (real PyTorch tracing) as the payload of a real Slurm job."""
    import shlex
    import sys

    from tests.testlab.standin import MODELS, STANDIN_SRC, require_torch

    require_torch()
    wrapper = shared_dir / "bin" / "snakegrinder-standin"
    wrapper.write_text("#!/bin/sh\n"
                       f"PYTHONPATH={shlex.quote(str(STANDIN_SRC))} "
                       f"exec {shlex.quote(sys.executable)} -m snakegrinder \"$@\"\n")
    wrapper.chmod(0o755)
    sched = make_scheduler(_private_home, slurm_cluster, shared_dir, snakegrinder=str(wrapper))
    job_id = sched.submit(JobSubmission.new(JobDefinition(
        name="simple_mlp", source=str(MODELS / "simple_mlp.py"), model_class="SimpleMLP",
        inputs=(InputSpec((1, 8)),), resources=ResourceRequirements(memory_mb=2000))))
    status = wait(sched, job_id, deadline=240)
    assert status.state is JobState.COMPLETED, "".join(sched.logs(job_id))
    result = sched.result(job_id)
    assert "func.func public @forward(%arg0: tensor<1x8xf32>)" in result.mlir_output
    assert "stablehlo.dot_general" in result.mlir_output
    assert result.mlir_output.rstrip().endswith("}")
    assert {"model.mlir", "manifest.json"} <= {o.rsplit("/", 1)[-1] for o in result.outputs}


def test_timeout_job(timeout_job):
    """Last in the file: the job was submitted by the module fixture at the start."""
    sched, job_id = timeout_job
    status = wait(sched, job_id, deadline=150)
    assert status.state is JobState.TIMEOUT
    assert "time limit" in status.message
