"""End to end: a real sbatch job with `runtime: singularity` runs the stand-in from the real
SIF that `invoke sif` made.

No Singularity runtime can be installed on the test machines, so the Slurm node's PATH has a
TEST DOUBLE named `singularity` (double/singularity): it mounts the real SIF's squashfs
partition and runs ARGV inside it under chroot. Everything else is real: the sbatch script
the scheduler renders, Slurm, the SIF, the stand-in and its trace."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.slurm.conftest import shared_dir, slurm_cluster  # noqa: F401
from tests.testlab import slurm as slurm_lab
from tests.testlab.standin import MODELS
from warpforge_launch.jobs import (
    GpuType,
    InputSpec,
    JobDefinition,
    JobSubmission,
    ResourceRequirements,
)

DOUBLE_DIR = Path(__file__).parent / "double"


def test_an_sbatch_job_runs_the_stand_in_from_the_sif(
        slurm_cluster, shared_dir, nvidia_sif, standin_dist, _private_home, tmp_path,  # noqa: F811
        unique):
    from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler
    from warpforge_launch.schedulers.slurm_transport import LocalTransport

    # the model lives in the submitting user's work dir: the container binds that, nothing else
    # (private from the start, as the submit driver makes it: other tests check its mode)
    work = slurm_lab.user_work_dir(shared_dir, getpass.getuser())
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    models = work / f"models-{unique}"
    models.mkdir()
    shutil.copy2(MODELS / "simple_mlp.py", models / "simple_mlp.py")
    transport = LocalTransport(env={"SLURM_CONF": str(slurm_cluster.conf),
                                    "PATH": f"{DOUBLE_DIR}:{os.environ['PATH']}"})
    work_dir = slurm_lab.shared_work_dir(shared_dir)
    config = SlurmConfig(runtime="singularity", partition="debug", command_timeout=20.0,
                         work_dir=work_dir, image_nvidia=nvidia_sif["path"],
                         image_amd=nvidia_sif["path"],
                         snakegrinder="/opt/warpforge/bin/snakegrinder")
    sched = SlurmScheduler("hpc", config, home=_private_home, transport=transport)
    try:
        plan = sched.plan(JobSubmission.new(_definition(models)))
        assert "singularity exec --nv --bind" in plan.request.render()
        job_id = sched.submit(JobSubmission.new(_definition(models)))
        deadline = time.monotonic() + 300
        while not (status := sched.status(job_id)).state.terminal:
            if time.monotonic() > deadline:
                pytest.fail(f"{job_id} still {status.state}")
            time.sleep(1)
        logs = "".join(sched.logs(job_id))
        assert status.state.value == "COMPLETED", f"{status.message}\n{logs[-2000:]}"
        result = sched.result(job_id)
        subprocess.run([str(standin_dist / "bin/snakegrinder"), "--trace", "--source",
                        str(models / "simple_mlp.py"), "--class", "SimpleMLP", "--inputs",
                        "[(1, 8)]", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=300, check=True)
    finally:
        sched.close()
        shutil.rmtree(models, ignore_errors=True)
    assert result.success and result.mlir_output.strip() == \
        (tmp_path / "model.mlir").read_text().strip()


def _definition(models: Path) -> JobDefinition:
    return JobDefinition(name="sif", source=str(models / "simple_mlp.py"),
                         model_class="SimpleMLP", inputs=(InputSpec((1, 8)),),
                         resources=ResourceRequirements(memory_mb=1000, gpu_type=GpuType.NVIDIA,
                                                        gpu_count=1))
