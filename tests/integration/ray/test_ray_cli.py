"""`warpforge-launch` end to end against the loopback Ray head, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml


@pytest.fixture()
def inventory(tmp_path, ray_url, fake_snakegrinder, output_root):
    doc = {
        "default_scheduler": "raylab",
        "schedulers": {
            "raylab": {
                "type": "ray",
                "dashboard_url": ray_url,
                "snakegrinder": str(fake_snakegrinder),
                "output_root": str(output_root),
                "connect_timeout": 2,
                "request_timeout": 15,
            },
            "raydown": {
                "type": "ray",
                "dashboard_url": "http://127.0.0.1:16399",
                "connect_timeout": 1,
            },
        },
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture()
def model(tmp_path):
    path = tmp_path / "mlp.py"
    path.write_text("class SimpleMLP: pass\n")
    return path


def cli(inventory, *args, timeout=90):
    return subprocess.run(
        [sys.executable, "-m", "warpforge_launch", *args, "--inventory", str(inventory)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def submit(inventory, model, *extra):
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--memory", "256M", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_submit_wait_shows_the_mlir(inventory, model):
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--memory", "256M", "--gpu", "NVIDIA", "--wait")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "success:    yes" in done.stdout
    assert "module @main {" in done.stdout and "model.mlir" in done.stdout


def test_status_result_logs_of_a_failed_job(inventory, model):
    job_id = submit(inventory, model, "--env", "WF_FAKE_EXIT=4")
    assert job_id.startswith("raylab-wf-")
    deadline = time.monotonic() + 60
    while True:
        st = cli(inventory, "status", job_id, "--json")
        assert st.returncode == 0, st.stderr
        state = json.loads(st.stdout)["state"]
        if state not in ("PENDING", "RUNNING"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert state == "FAILED"
    res = cli(inventory, "result", job_id, "--json")
    assert res.returncode == 1
    result = json.loads(res.stdout)
    assert result["exit_code"] == 4 and result["error_message"].startswith("FAILED:")
    logs = cli(inventory, "logs", job_id)
    assert logs.returncode == 0 and "FAILED: fake failure with exit code 4" in logs.stdout
    assert "job_manager.py" not in logs.stdout


def test_dry_run_prints_the_body_and_sends_nothing(inventory, model):
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--gpu", "AMD", "--dry-run", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)["plan"]["request"]
    assert body["entrypoint_resources"] == {"amd": 1} and body["entrypoint_num_gpus"] == 1
    listed = cli(inventory, "list", "--json")
    assert json.loads(listed.stdout) == []


def test_list_refreshes_from_ray(inventory, model):
    ids = [submit(inventory, model) for _ in range(3)]
    time.sleep(0.5)
    done = cli(inventory, "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {r["job_id"] for r in rows} >= set(ids)


def test_cluster_info(inventory):
    done = cli(inventory, "cluster-info", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["total_nodes"] == 1 and info["gpus_by_type"] == {"AMD": 1, "NVIDIA": 1}


def test_cluster_down_exits_3_quickly_with_the_url(inventory):
    t0 = time.monotonic()
    done = cli(inventory, "cluster-info", "--scheduler", "raydown")
    took = time.monotonic() - t0
    assert done.returncode == 3
    assert "http://127.0.0.1:16399" in done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert took < 5


def test_unknown_job_exits_2(inventory):
    done = cli(inventory, "status", "raylab-wf-00000000")
    assert done.returncode == 2
    assert "raylab-wf-00000000" in done.stderr
