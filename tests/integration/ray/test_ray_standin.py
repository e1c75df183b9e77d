"""The stand-in snakegrinder (issue #3) traced through Ray: a real StableHLO bundle comes back.

The stand-in runs from its source tree with the test interpreter's PyTorch, behind a
launcher script at an absolute path, as the real bin/snakegrinder sits on a worker.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.testlab.standin import MODELS, STANDIN_SRC, require_torch
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import (
    JobDefinition,
    JobState,
    JobSubmission,
    ResourceRequirements,
)
from warpforge_launch.schedulers.ray import RayConfig, RayScheduler

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def standin_launcher(ray_workdir) -> Path:
    require_torch()
    path = ray_workdir / "bin" / "snakegrinder-standin"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(STANDIN_SRC))} "
        f'exec {shlex.quote(sys.executable)} -m snakegrinder "$@"\n'
    )
    path.chmod(0o755)
    return path


def test_simple_mlp_traced_on_ray_comes_back_as_stablehlo(
    ray_url, standin_launcher, output_root, tmp_path
):
    config = RayConfig(
        dashboard_url=ray_url, snakegrinder=str(standin_launcher), output_root=str(output_root)
    )
    definition = JobDefinition(
        name="simple_mlp",
        source=str(MODELS / "simple_mlp.py"),
        model_class="SimpleMLP",
        inputs=parse_inputs("[(1, 8)]"),
        resources=ResourceRequirements(memory_mb=1024),
    )
    sub = JobSubmission(definition, "tester", datetime.now(UTC), str(uuid.uuid4()))
    with RayScheduler("raylab", config, home=tmp_path) as sched:
        job_id = sched.submit(sub)
        deadline = time.monotonic() + 240
        while not (status := sched.status(job_id)).state.terminal:
            assert time.monotonic() < deadline, f"{job_id} still {status.state}"
            time.sleep(0.5)
        result = sched.result(job_id)
    assert status.state is JobState.COMPLETED, result.log_tail
    assert result.success and result.exit_code == 0
    assert "SUCCESS: Trace with values completed" in result.log_tail
    mlir = result.mlir_output
    assert mlir.startswith("module @main {")
    assert "func.func public @forward(%arg0: tensor<1x8xf32>)" in mlir
    assert "stablehlo.dot_general" in mlir and "stablehlo.return" in mlir
    manifest = next(p for p in result.outputs if p.endswith("manifest.json"))
    bundle = json.loads(Path(manifest).read_text())
    assert bundle["kind"] == "snakegrinder-fx-trace-bundle" and bundle["status"] == "ok"
