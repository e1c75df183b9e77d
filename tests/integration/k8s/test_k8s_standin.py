"""The real stand-in snakegrinder in a pod: the whole dist in an image, a trace job through
the CLI, and the StableHLO it wrote equal to the one the same dist writes on this machine."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.integration.k8s.test_k8s_cli import cli, wait_for
from tests.integration.standin.conftest import standin_dist  # noqa: F401
from tests.testlab import k8s as k8slab
from tests.testlab.standin import MODELS


@pytest.fixture(scope="module")
def standin_image(k8s_cluster, standin_dist):  # noqa: F811
    try:
        return k8slab.dist_image(standin_dist)
    except k8slab.LabError as exc:
        pytest.fail(str(exc))


def test_a_pod_traces_the_model_with_the_real_dist(inventory, standin_image, standin_dist,  # noqa: F811
                                                   out_root, tmp_path):
    doc = yaml.safe_load(inventory.read_text())
    doc["schedulers"]["k8s"]["image_cpu"] = standin_image
    inventory.write_text(yaml.safe_dump(doc))
    source = MODELS / "simple_mlp.py"
    done = cli(inventory, "submit", "--source", str(source), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--memory", "2G", "--timeout", "10")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().splitlines()[-1]
    st = wait_for(inventory, job_id, {"COMPLETED", "FAILED", "TIMEOUT"}, timeout=300)
    logs = cli(inventory, "logs", job_id).stdout
    assert st["state"] == "COMPLETED", f"{st}\n{logs[-2000:]}"
    res = cli(inventory, "result", job_id, "--json")
    assert res.returncode == 0, res.stderr
    mlir = json.loads(res.stdout)["mlir_output"]
    assert mlir.startswith("module @main {") and "stablehlo.dot_general" in mlir
    local = subprocess.run([str(standin_dist / "bin" / "snakegrinder"), "--trace-with-values",
                            "--source", str(source), "--class", "SimpleMLP", "--inputs",
                            "[(1, 8)]", "--seed", "42", "--out", str(tmp_path / "local")],
                           capture_output=True, text=True, timeout=300, check=False)
    assert local.returncode == 0, local.stderr
    assert mlir == (tmp_path / "local" / "model.mlir").read_text()
