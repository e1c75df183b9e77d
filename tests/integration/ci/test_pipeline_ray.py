"""`invoke pipeline --scheduler ray` on the test lab: the stand-in dist is distributed to a
box (this machine) and smoke-tested, and the trace job runs on the loopback Ray cluster with
the snakegrinder the pipeline installed there. A second run skips every stage but the job."""

from __future__ import annotations

import io
import json

import pytest

from tests.conftest import lab_unavailable
from tests.testlab import ray as raylab
from tests.testlab.standin import build_dist, require_torch
from warpforge_launch import inventory
from warpforge_launch.lab import pipeline
from warpforge_launch.lab import runsummary as rs

pytestmark = [pytest.mark.ray, pytest.mark.torch]


@pytest.fixture(scope="module")
def ray_head():
    try:
        head = raylab.start_head()
    except raylab.LabError as exc:
        lab_unavailable(str(exc))
    yield head
    head.stop()


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    require_torch()
    out = tmp_path_factory.mktemp("pipeline-ray") / "dist"
    r = build_dist(out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_pipeline_traces_on_ray_then_skips_what_is_current(ray_head, dist, tmp_path):
    install = tmp_path / "worker"
    (tmp_path / "src").mkdir()
    doc = {
        "version": 1, "default_scheduler": "local",
        "schedulers": {"local": {"type": "local"},
                       "ray": {"type": "ray", "dashboard_url": ray_head.url,
                               "snakegrinder": f"{install}/bin/snakegrinder",
                               "output_root": str(tmp_path / "ray-out")}},
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
    first = pipeline.run_pipeline(inv, scheduler="ray", out=out)
    assert first.exit_code == 0, out.getvalue()[-3000:]
    statuses = {r.stage: r.status for r in first.rows}
    assert statuses == {"build": rs.PASSED, "images": rs.SKIPPED, "sif": rs.SKIPPED,
                        "distribute": rs.PASSED, "smoke": rs.PASSED, "job": rs.PASSED}
    job = next(r for r in first.rows if r.stage == "job")
    assert job.box == "ray" and job.detail.startswith("ray-") and "COMPLETED" in job.detail
    assert "  module @main {" in out.getvalue()
    assert (install / "current" / "bin" / "snakegrinder").is_file()

    out = io.StringIO()
    second = pipeline.run_pipeline(inv, scheduler="ray", out=out)
    assert second.exit_code == 0, out.getvalue()[-3000:]
    assert {r.stage: r.status for r in second.rows} == {
        "build": rs.SKIPPED, "images": rs.SKIPPED, "sif": rs.SKIPPED,
        "distribute": rs.SKIPPED, "smoke": rs.SKIPPED, "job": rs.PASSED}
