"""`warpforge-launch` against the real single-node cluster, as a user runs it: pods really
run the test payload (tests/fixtures/fake_snakegrinder.py in the Python rootfs image)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.testlab import k8s as k8slab


def cli(inventory, *args, timeout=120, env=None):
    import os

    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "warpforge_launch", *args, "--inventory",
                           str(inventory)], capture_output=True, text=True, timeout=timeout,
                          check=False, env=full_env, stdin=subprocess.DEVNULL)


def submit(inventory, model, *extra, env=None):
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--memory", "128M", *extra, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def status(inventory, job_id) -> dict:
    done = cli(inventory, "status", job_id, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(inventory, job_id, states, timeout=90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = status(inventory, job_id)
        if st["state"] in states:
            return st
        assert time.monotonic() < deadline, f"{job_id} still {st}"
        time.sleep(0.5)


def pods_of(job_id) -> list[str]:
    done = k8slab.kc("-n", k8slab.NAMESPACE, "get", "pods", "-l",
                     f"warpforge.io/job-id={job_id}", "-o", "name")
    return done.stdout.split()


def test_submit_wait_shows_the_stablehlo(inventory, model, out_root):
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--memory", "128M", "--wait")
    assert done.returncode == 0, done.stderr
    assert "success:    yes" in done.stdout
    assert "module @main {" in done.stdout and "stablehlo.return" in done.stdout
    job_id = done.stderr.split("submitted ", 1)[1].split()[0]
    res = cli(inventory, "result", job_id, "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["success"] and result["exit_code"] == 0
    assert "stablehlo.constant" in result["mlir_output"]
    native = job_id.removeprefix("k8s-")
    assert str(out_root / native / "model.mlir") in result["outputs"]


def test_failing_payload_is_failed_with_exit_code_and_message(inventory, model):
    job_id = submit(inventory, model, "--env", "WF_FAKE_EXIT=1",
                    "--env", "WF_FAKE_STDERR=boom: aten.frobnicate is not supported")
    st = wait_for(inventory, job_id, {"FAILED", "COMPLETED", "TIMEOUT", "CANCELLED"})
    assert st["state"] == "FAILED"
    assert "exited with code 1" in st["message"]
    res = cli(inventory, "result", job_id, "--json")
    assert res.returncode == 1
    result = json.loads(res.stdout)
    assert result["exit_code"] == 1
    assert "aten.frobnicate is not supported" in result["error_message"]


def test_timeout_is_timeout(inventory, model):
    job_id = submit(inventory, model, "--timeout", "0.1", "--env", "WF_FAKE_SLEEP=300")
    st = wait_for(inventory, job_id, {"FAILED", "COMPLETED", "TIMEOUT", "CANCELLED"})
    assert st["state"] == "TIMEOUT", st
    # the Job controller deletes the running pod at the deadline; it is gone after the
    # grace period (10 s: the payload, PID 1, ignores SIGTERM) and the kubelet's clean-up,
    # seen to take 25 s more on a loaded 2-core machine
    deadline = time.monotonic() + 90
    while pods_of(job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pods_of(job_id) == []


def test_cancel_leaves_no_pod(inventory, model):
    job_id = submit(inventory, model, "--env", "WF_FAKE_SLEEP=300")
    wait_for(inventory, job_id, {"RUNNING"})
    assert pods_of(job_id)
    done = cli(inventory, "cancel", job_id)
    assert done.returncode == 0, done.stderr
    assert f"{job_id}: cancelled" in done.stdout
    assert pods_of(job_id) == []
    name = job_id.removeprefix("k8s-")
    gone = k8slab.kc("-n", k8slab.NAMESPACE, "get", "job,secret", name, check=False)
    assert "NotFound" in gone.stderr and "secrets" in gone.stderr
    assert status(inventory, job_id)["state"] == "CANCELLED"
    again = cli(inventory, "cancel", job_id)
    assert "not cancelled, already CANCELLED" in again.stdout


def test_logs_and_logs_follow(inventory, model):
    job_id = submit(inventory, model, "--env", "WF_FAKE_SLEEP=4")
    follow = cli(inventory, "logs", "-f", job_id, timeout=120)
    assert follow.returncode == 0, follow.stderr
    assert "tracing\n" in follow.stdout and "SUCCESS: traced" in follow.stdout
    assert status(inventory, job_id)["state"] in ("COMPLETED", "RUNNING")
    done = cli(inventory, "logs", job_id)
    lines = done.stdout.splitlines()  # the whole output of the finished pod, in order
    assert "tracing" in lines and lines[-1].startswith("SUCCESS: traced"), done.stdout


def test_nvidia_job_gets_selector_and_resource(inventory, model, out_root):
    job_id = submit(inventory, model, "--gpu", "NVIDIA")
    st = wait_for(inventory, job_id, {"COMPLETED", "FAILED", "TIMEOUT"})
    assert st["state"] == "COMPLETED" and st["node_name"] == k8slab.NODE
    pod = json.loads(k8slab.kc("-n", k8slab.NAMESPACE, "get", "pods", "-l",
                               f"warpforge.io/job-id={job_id}", "-o", "json").stdout)["items"][0]
    assert pod["spec"]["nodeSelector"] == {"accelerator": "nvidia"}
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert read_out(out_root, job_id, "env.json")["WARPFORGE_JOB_ID"] == job_id


def test_result_of_jobs_the_cluster_no_longer_has(inventory, model, out_root):
    """A cancelled job (the tool deleted its Job) and a finished one whose Job went (as its
    TTL removes it): `result` answers from the final status the store kept and the files
    under local_output_root, for each id of one command."""
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--memory", "128M", "--wait")
    assert done.returncode == 0, done.stderr
    finished = done.stderr.split("submitted ", 1)[1].split()[0]
    cancelled = submit(inventory, model, "--env", "WF_FAKE_SLEEP=300")
    wait_for(inventory, cancelled, {"RUNNING"})
    assert cli(inventory, "cancel", cancelled).returncode == 0
    one = cli(inventory, "result", cancelled)
    assert one.returncode == 1, one.stderr  # README: 1 for a CANCELLED job
    assert "success:    no" in one.stdout and "error:      CANCELLED" in one.stdout
    both = cli(inventory, "result", finished, cancelled)
    assert both.returncode == 1, both.stderr
    assert f"job:        {finished}" in both.stdout and "module @main {" in both.stdout
    assert f"job:        {cancelled}" in both.stdout

    # a model.mlir that is a symlink out of the job's directory: refused, named, exit 1
    mlir = out_root / finished.removeprefix("k8s-") / "model.mlir"
    mlir.rename(mlir.with_name("kept.mlir"))
    mlir.symlink_to("/etc/hostname")
    evil = cli(inventory, "result", finished)
    assert evil.returncode == 1, evil.stdout
    assert f"refused {mlir}: a symlink" in evil.stdout and "success:    no" in evil.stdout
    mlir.unlink()
    mlir.with_name("kept.mlir").rename(mlir)

    k8slab.kc("-n", k8slab.NAMESPACE, "delete", "job", finished.removeprefix("k8s-"),
              "--wait=true")  # what ttlSecondsAfterFinished does a day after the end
    gone = cli(inventory, "result", finished, "--json")
    assert gone.returncode == 0, gone.stderr
    result = json.loads(gone.stdout)
    assert result["success"] and "module @main {" in result["mlir_output"]
    assert "no longer has Job" in result["log_tail"] and str(mlir) in result["outputs"]


def read_out(out_root: Path, job_id: str, leaf: str):
    return json.loads((out_root / job_id.removeprefix("k8s-") / leaf).read_text())


def test_two_gpus_are_refused_with_the_capacity_found(inventory, model):
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--gpu", "NVIDIA", "--gpu-count", "2")
    assert done.returncode == 2
    assert "allocatable nvidia.com/gpu per node: wf-node 1" in done.stderr
    assert "Traceback" not in done.stderr


def test_amd_default_selector_matches_no_node(inventory, model):
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--gpu", "AMD")
    assert done.returncode == 2
    assert "no node matches the node selector" in done.stderr


def test_amd_job_runs_where_its_selector_matches(inventory, model):
    job_id = submit(inventory, model, "--gpu", "AMD", "--scheduler", "k8samd")
    st = wait_for(inventory, job_id, {"COMPLETED", "FAILED", "TIMEOUT"})
    assert st["state"] == "COMPLETED"


def test_allow_pending_waits_with_the_reason(inventory, model):
    job_id = submit(inventory, model, "--gpu", "NVIDIA", "--gpu-count", "2", "--allow-pending")
    deadline = time.monotonic() + 60
    while True:
        st = status(inventory, job_id)
        if "Insufficient nvidia.com/gpu" in st["message"]:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    assert st["state"] == "PENDING" and st["message"].startswith("unschedulable:")
    assert cli(inventory, "cancel", job_id).returncode == 0


def test_hostile_values_reach_the_pod_verbatim(inventory, tmp_path, out_root):
    hostile = "it's \"x\"; $(touch pwned) `touch pwned` $HOME ${X} $$ \\ * ?"
    source = tmp_path / (hostile.replace("/", "_") + ".py")
    source.write_text("class SimpleMLP: pass\n")
    job_id = submit(inventory, source, "--name", hostile, "--env", f"USER_HOSTILE={hostile}",
                    "--env", "USER_REF=$(WARPFORGE_JOB_ID)")
    st = wait_for(inventory, job_id, {"COMPLETED", "FAILED", "TIMEOUT"})
    assert st["state"] == "COMPLETED", st
    argv = read_out(out_root, job_id, "argv.json")
    assert argv[argv.index("--source") + 1] == f"/warpforge/src/{source.name}"
    env = read_out(out_root, job_id, "env.json")
    assert env["USER_HOSTILE"] == hostile and env["USER_REF"] == "$(WARPFORGE_JOB_ID)"
    assert not list(out_root.rglob("pwned"))  # nothing ran a shell
    listed = json.loads(cli(inventory, "list", "--json").stdout)
    assert any(row["name"] == hostile for row in listed)


def test_cluster_info_shows_the_fake_gpus(inventory):
    done = cli(inventory, "cluster-info", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["total_nodes"] == 1 and info["available_nodes"] == 1
    assert info["gpus_by_type"] == {"NVIDIA": 1, "AMD": 1}
    assert info["nodes"][0]["name"] == k8slab.NODE and info["nodes"][0]["cpu_cores"] >= 1
    assert info["scheduler_version"] == "kubernetes v1.20.2"


@pytest.mark.parametrize("instance", ["k8sdown", "k8shole"])
def test_unreachable_apiserver_is_exit_3_within_the_timeout(inventory, model, instance):
    t0 = time.monotonic()
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--scheduler", instance, timeout=60)
    took = time.monotonic() - t0
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: Kubernetes API at https://127.0.0.1:")
    assert "Traceback" not in done.stderr
    # connect_timeout 2 s, plus the CLI's own start; not a second wait for a Job lookup
    # after a connect that failed (nothing was sent)
    assert took < 2 + 1.9
    info = cli(inventory, "cluster-info", "--scheduler", instance, timeout=60)
    assert info.returncode == 3


def test_forbidden_token_is_one_clear_line(inventory, model):
    done = cli(inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--scheduler", "k8snobody")
    assert done.returncode == 3
    first = done.stderr.splitlines()[0]
    assert "refused creating Job" in first and "HTTP 403" in first
    assert "forbidden" in first and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[1].startswith("hint: ")
    # refused before anything was made: no row left PENDING (nor a `list` warning about it)
    listed = cli(inventory, "list", "--json")
    assert listed.returncode == 0 and not listed.stderr, listed.stderr
    assert json.loads(listed.stdout) == []


def test_a_sweep_refused_for_rights_fails_its_cells_as_never_sent(inventory, model, tmp_path):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "nobody", "models": [{"source": str(model), "class": "SimpleMLP"}],
        "inputs": ["[(1, 8)]", "[(2, 8)]"], "gpus": ["NONE"], "schedulers": ["k8snobody"]}))
    done = cli(inventory, "sweep", str(path))
    assert done.returncode == 3, done.stderr  # nothing went out: the reason's own code
    assert "2 of 2 cell(s)" in done.stderr and "HTTP 403" in done.stderr
    sweep_id = done.stdout.strip().splitlines()[-1]
    shown = cli(inventory, "sweep", "status", sweep_id, "--json")
    assert shown.returncode == 0 and not shown.stderr, shown.stderr
    cells = json.loads(shown.stdout)["cells"]
    assert [c["status"]["state"] for c in cells] == ["FAILED", "FAILED"]
    assert all(c["status"]["message"].startswith("never sent to k8snobody: ") for c in cells)


def test_status_of_a_running_job_without_the_job_model(inventory, model, tmp_path):
    """`status` of a RUNNING Job: one pod list, no job model loaded, the full path's output,
    the fresh status recorded; an apiserver gone silent since costs one timeout."""
    from tests.helpers import assert_same_status, lean_and_full_status, stored_config, timed_cli

    job_id = submit(inventory, model, "--env", "WF_FAKE_SLEEP=120")
    try:
        wait_for(inventory, job_id, {"RUNNING"})
        lean, heavy, gets, stored, full = lean_and_full_status(
            "--inventory", str(inventory), "--json", "status", job_id)
        assert heavy == []
        assert len(gets) == 1 and "/pods?" in gets[0] and "resourceVersion=0" in gets[0]
        assert stored[job_id] == lean[0]  # recorded as printed
        assert_same_status(lean, full)
        assert lean[0]["scheduler_metadata"]["pod"] == full[0]["scheduler_metadata"]["pod"]
        assert lean[0]["correlation_id"] is not None

        # the job's apiserver now accepts and never answers (the inventory's black hole)
        with stored_config([job_id], kubeconfig=str(tmp_path / "hole.kubeconfig"),
                           connect_timeout=2, request_timeout=3):
            done, took = timed_cli("--inventory", str(inventory), "status", job_id)
        assert done.returncode == 3, done.stderr
        assert "timed out (connect, 2 s)" in done.stderr and "Traceback" not in done.stderr
        assert 2 * 0.9 <= took < 2 + 8, took  # one timeout, plus the CLI's own start
    finally:
        cli(inventory, "cancel", job_id)
