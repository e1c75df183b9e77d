"""`invoke pipeline` on the test lab with Ray and Slurm: the stand-in dist is distributed to
a box (this machine, which is also the clusters' only node) and smoke-tested, and the trace
job runs on the loopback cluster with the snakegrinder the pipeline installed there. A second
run skips every stage but the job."""

from __future__ import annotations

import io
import json
import os

import pytest

from tests.integration.ray.conftest import ray_head  # noqa: F401 - the shared lab fixtures
from tests.integration.slurm.conftest import slurm_cluster  # noqa: F401
from tests.integration.standin.conftest import standin_dist  # noqa: F401
from tests.testlab import slurm as slurm_lab
from warpforge_launch import inventory
from warpforge_launch.lab import pipeline
from warpforge_launch.lab import runsummary as rs

# before any Slurm client runs: without it the clients do a DNS SRV lookup
os.environ["SLURM_CONF"] = str(slurm_lab.lab_root() / "cluster" / "etc" / "slurm.conf")
pytestmark = pytest.mark.torch


@pytest.fixture()
def dist(standin_dist):  # noqa: F811 - the session's one stand-in dist, read only here
    return standin_dist


@pytest.mark.ray
def test_pipeline_traces_on_ray_then_skips_what_is_current(ray_head, dist, tmp_path):  # noqa: F811
    install = tmp_path / "worker"
    _run_twice(tmp_path, dist, install, "ray", {
        "type": "ray", "dashboard_url": ray_head.url, "snakegrinder": f"{install}/bin/snakegrinder",
        "output_root": str(tmp_path / "ray-out")})


@pytest.mark.slurm
def test_pipeline_traces_on_slurm_then_skips_what_is_current(
        slurm_cluster, dist, tmp_path):  # noqa: F811
    if slurm_cluster.netns:
        pytest.skip("this Slurm lab runs in a network namespace; the pipeline's box is here")
    install = tmp_path / "worker"
    work = slurm_lab.shared_work_dir(tmp_path / "shared")
    _run_twice(tmp_path, dist, install, "slurm", {
        "type": "slurm", "runtime": "none", "partition": "debug", "work_dir": str(work),
        "snakegrinder": f"{install}/bin/snakegrinder", "slurm_conf": str(slurm_cluster.conf),
        "command_timeout": 20})


def _run_twice(tmp_path, dist, install, scheduler: str, settings: dict):
    (tmp_path / "src").mkdir()
    doc = {
        "version": 1, "default_scheduler": "local",
        "schedulers": {"local": {"type": "local"}, scheduler: settings},
        "boxes": {"worker": {"transport": "local", "install_dir": str(install),
                             "groups": ["gpu-boxes", "ray-workers"]}},
        # the dist is built already: the build stage checks it and records its release
        "build": {"profile": "standin", "source": str(tmp_path / "src"), "steps": [],
                  "test_floors": {}, "dist_dir": str(dist)},
        "lab": {"log_root": str(tmp_path / "logs")},
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(json.dumps(doc))
    inv = inventory.load(path, env={})

    out = io.StringIO()
    first = pipeline.run_pipeline(inv, scheduler=scheduler, out=out)
    assert first.exit_code == 0, out.getvalue()[-3000:]
    statuses = {r.stage: r.status for r in first.rows}
    assert statuses == {"build": rs.PASSED, "images": rs.SKIPPED, "sif": rs.SKIPPED,
                        "distribute": rs.PASSED, "smoke": rs.PASSED, "job": rs.PASSED}
    job = next(r for r in first.rows if r.stage == "job")
    assert job.box == scheduler and job.detail.startswith(f"{scheduler}-")
    assert "COMPLETED" in job.detail
    assert "  module @main {" in out.getvalue()
    assert (install / "current" / "bin" / "snakegrinder").is_file()

    out = io.StringIO()
    second = pipeline.run_pipeline(inv, scheduler=scheduler, out=out)
    assert second.exit_code == 0, out.getvalue()[-3000:]
    assert {r.stage: r.status for r in second.rows} == {
        "build": rs.SKIPPED, "images": rs.SKIPPED, "sif": rs.SKIPPED,
        "distribute": rs.SKIPPED, "smoke": rs.SKIPPED, "job": rs.PASSED}
