"""End to end: `invoke build` (stand-in profile) from a git origin, then the dist it built runs
a job through the Local scheduler, and the result holds real StableHLO."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import numpy as np
import pytest

from tests.testlab.standin import MODELS, STANDIN, Origin, require_torch, run_stablehlo
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.inventory import BuildConfig
from warpforge_launch.jobs import JobDefinition, JobState
from warpforge_launch.lab.build import run_build
from warpforge_launch.launcher import Launcher

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def nuc_build(tmp_path_factory):
    """The stand-in profile's default steps, from a bare origin holding the stand-in tree."""
    require_torch()
    root = tmp_path_factory.mktemp("e2e")
    origin = Origin(root)
    origin.add_tree(STANDIN, "examples/snakegrinder")
    origin.add_tree(MODELS, "examples/models")
    origin.commit({".gitignore": "snakegrinder-dist/\n"}, "stand-in tree")
    cfg = BuildConfig(profile="standin", source=str(root / "nuc" / "warpforge"),
                      repository=str(origin.bare), branch="main")
    out = io.StringIO()
    report = run_build(cfg, root / "logs", run_id="e2e", out=out)
    return report, out.getvalue(), root


def test_standin_profile_builds_tests_and_checks(nuc_build):
    report, out, root = nuc_build
    assert report.ok, out
    assert [s.name for s in report.stages] == ["sync", "dist", "test", "test floors",
                                               "dist check"]
    assert all(s.status == "ok" for s in report.stages), out
    assert "snakegrinder-dist 9/9" in next(s.detail for s in report.stages
                                           if s.name == "test floors")
    log = (root / "logs" / "nuc-e2e.log").read_text()
    assert "[standin-build] dist:" in log and "9 passed, 0 failed" in log
    assert (report.dist_dir / "bin" / "snakegrinder").is_file()


def test_built_dist_runs_a_job_on_the_local_scheduler(nuc_build, tmp_path):
    report, out, _ = nuc_build
    assert report.ok, out
    inv = tmp_path / "inventory.yaml"
    inv.write_text("schedulers:\n  local:\n    type: local\n"
                   f"    snakegrinder: {report.dist_dir / 'bin' / 'snakegrinder'}\n")
    model = report.source / "examples" / "models" / "deep_mlp.py"
    definition = JobDefinition(name="deep_mlp", source=str(model), model_class="DeepMLP",
                               inputs=parse_inputs("[(2, 4, 8)]"),
                               timeout=timedelta(minutes=5), seed=11)
    with Launcher(str(inv)) as launcher:
        job_id = launcher.submit(definition)
        status = launcher.wait(job_id, timeout=240)
        assert status.state is JobState.COMPLETED, status.message
        result = launcher.result(job_id)
    assert result.success and result.exit_code == 0
    mlir = result.mlir_output
    assert mlir.startswith("module @main {")
    assert "func.func public @forward(%arg0: tensor<2x4x8xf32>)" in mlir
    assert "stablehlo.dot_general" in mlir and "stablehlo.return" in mlir
    bundle = {p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1]: p for p in result.outputs}
    manifest = json.loads(open(next(p for p in result.outputs
                                    if p.endswith("manifest.json"))).read())
    assert manifest["status"] == "ok" and manifest["seed"] == 11
    # The StableHLO the job produced computes the outputs the job wrote.
    inputs = [np.load(bundle["inputs/input_0.npy"])]
    want = np.load(bundle["outputs/output_0.npy"])
    np.testing.assert_allclose(run_stablehlo(mlir, inputs)[0], want, rtol=1e-5, atol=1e-5)
