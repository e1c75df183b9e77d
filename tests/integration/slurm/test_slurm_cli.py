"""The `warpforge-launch` command against the real Slurm lab cluster, as a user runs it."""

from __future__ import annotations

import json

from tests.helpers import model_file, run_cli


def inventory(path, shared, cluster, **extra):
    lines = ["default_scheduler: hpc", "schedulers:", "  hpc:", "    type: slurm",
             f"    work_dir: {shared}/users/$USER/warpforge", "    runtime: none",
             "    partition: debug",
             f"    snakegrinder: {shared / 'bin' / 'fake_snakegrinder.sh'}",
             f"    slurm_conf: {cluster.conf}", "    command_timeout: 20"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_submit_wait_status_result_logs(slurm_cluster, shared_dir, tmp_path):
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    src = model_file(tmp_path)
    base = ["--inventory", str(inv)]
    dry = run_cli(*base, "submit", "--source", str(src), "--class", "SimpleMLP",
                  "--inputs", "[(1, 8)]", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH --job-name=warpforge-" in dry.stdout and "exec " in dry.stdout
    done = run_cli(*base, "--json", "submit", "--source", str(src), "--class", "SimpleMLP",
                   "--inputs", "[(1, 8)]", "--wait", timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    job_id = out["job_id"]
    assert job_id.startswith("hpc-") and out["status"]["state"] == "COMPLETED"
    assert "stablehlo" in out["result"]["mlir_output"]
    status = run_cli(*base, "--json", "status", job_id)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "COMPLETED"
    logs = run_cli(*base, "logs", job_id)
    assert logs.returncode == 0 and "SUCCESS" in logs.stdout


def test_failed_job_exits_1(slurm_cluster, shared_dir, tmp_path):
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    src = model_file(tmp_path)
    done = run_cli("--inventory", str(inv), "--json", "submit", "--source", str(src),
                   "--class", "SimpleMLP", "--inputs", "[(1, 8)]", "--env", "WF_FAKE_EXIT=3",
                   "--wait", timeout=120)
    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert out["status"]["state"] == "FAILED" and out["result"]["exit_code"] == 3


def test_bad_partition_exits_2_with_one_line(slurm_cluster, shared_dir, tmp_path):
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    src = model_file(tmp_path)
    done = run_cli("--inventory", str(inv), "submit", "--source", str(src), "--class", "M",
                   "--inputs", "[(1, 8)]", "--queue", "nosuch")
    assert done.returncode == 2
    assert done.stderr.startswith("error: sbatch rejected the job: Invalid partition name")
    assert "Traceback" not in done.stderr


def test_unreachable_login_node_exits_3(slurm_cluster, shared_dir, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on: the login node is "down"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster,
                    login_host="127.0.0.1", login_port=port,
                    known_hosts_file=str(tmp_path / "known_hosts"))
    done = run_cli("--inventory", str(inv), "cluster-info", timeout=60)
    assert done.returncode == 3, done.stderr
    assert "cannot reach login node" in done.stderr


def test_status_of_running_jobs_without_the_job_model(slurm_cluster, shared_dir, tmp_path):
    """`status` of RUNNING jobs answers from the store and one squeue with no job model
    loaded, prints what the full path prints, and records the fresh status."""
    import os
    import subprocess
    import sys
    import time

    from tests.helpers import REPO

    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    src = model_file(tmp_path)
    base = ["--inventory", str(inv)]
    ids = [run_cli(*base, "--json", "submit", "--source", str(src), "--class", "SimpleMLP",
                   "--inputs", "[(1, 8)]", "--env", "WF_FAKE_SLEEP=120", check_json=True
                   ).json["job_id"] for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while True:
            states = [s["state"] for s in run_cli(*base, "--json", "status", *ids,
                                                   check_json=True).json]
            if states == ["RUNNING", "RUNNING"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert states == ["RUNNING", "RUNNING"]
        done = subprocess.run([sys.executable, "-c", _LEAN_THEN_FULL, *base, "--json",
                               "status", *ids], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        lean_out, heavy, stored, full_out = done.stdout.split("\n@@\n")
        assert json.loads(heavy) == []
        lean, full = json.loads(lean_out), json.loads(full_out)
        assert json.loads(stored) == {d["job_id"]: d for d in lean}  # recorded as printed
        for a, b in zip(lean, full, strict=True):
            assert a.keys() == b.keys() and a["job_id"] == b["job_id"]
            for key in ("state", "node_name", "correlation_id", "message", "state_changed_at"):
                assert a[key] == b[key], key
            assert a["scheduler_metadata"]["slurm_state"] == "RUNNING"
            assert 0 <= a["elapsed"] <= b["elapsed"]
    finally:
        slurm_cluster.run("scancel", *(i.rsplit("-", 1)[1] for i in ids))


# `status` in one process: the lean path, the modules it loaded, the statuses it recorded,
# then the full path (commands.cmd_status) for the same ids
_LEAN_THEN_FULL = """
import json, sqlite3, sys
from warpforge_launch import cli, storefile
argv = sys.argv[1:]
rc = cli.main(argv)
heavy = [m for m in ('dataclasses', 'warpforge_launch.jobs', 'warpforge_launch.launcher',
                     'warpforge_launch.schedulers.slurm') if m in sys.modules]
db = sqlite3.connect(storefile.store_file())
rows = db.execute('SELECT job_id, status FROM jobs').fetchall()
print('@@', json.dumps(heavy), '@@', json.dumps({j: json.loads(s) for j, s in rows}), '@@',
      sep='\\n')
from warpforge_launch import commands
sys.exit(rc or commands.cmd_status(cli.parse(argv)))
"""
