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
    request = json.loads(done.stdout)["plan"]["request"]
    body = request["body"]
    assert body["entrypoint_resources"] == {"amd": 1} and body["entrypoint_num_gpus"] == 1
    assert request["package"]["file"] == "mlp.py" and "working_dir" in body["runtime_env"]
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
    assert info["total_nodes"] == 1 and info["gpus_by_type"] == {"NVIDIA": 1}


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


@pytest.fixture()
def hole_inventory(tmp_path, black_hole_url, fake_snakegrinder, output_root):
    doc = {"default_scheduler": "rayhole", "schedulers": {"rayhole": {
        "type": "ray", "dashboard_url": black_hole_url, "snakegrinder": str(fake_snakegrinder),
        "output_root": str(output_root), "connect_timeout": 1, "request_timeout": 2}}}
    path = tmp_path / "hole.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


REQUEST_TIMEOUT = 2.0
MARGIN = 2.0  # a Python start and the CLI's imports on a loaded 2-core machine


@pytest.mark.parametrize("command", [["status", "rayhole-wf-12345678"], ["cluster-info"]])
def test_black_hole_dashboard_exits_3_within_the_timeout(hole_inventory, command):
    t0 = time.monotonic()
    done = cli(hole_inventory, *command, timeout=30)
    took = time.monotonic() - t0
    assert done.returncode == 3, done.stderr
    assert "timed out (request, 2 s)" in done.stderr and "Traceback" not in done.stderr
    assert REQUEST_TIMEOUT * 0.9 <= took < REQUEST_TIMEOUT + MARGIN


def test_black_hole_dashboard_submit_exits_3_within_the_timeout(hole_inventory, model):
    t0 = time.monotonic()
    done = cli(hole_inventory, "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", timeout=30)  # fmt: skip
    took = time.monotonic() - t0
    assert done.returncode == 3, done.stderr
    assert took < REQUEST_TIMEOUT + MARGIN


@pytest.mark.parametrize("job_id", ["rayhole-.", "rayhole-..", "rayhole-a/b",
                                    "rayhole-../../api/version", "rayhole-%2e%2e"])
@pytest.mark.parametrize("command", ["status", "result", "logs", "cancel"])
def test_job_ids_that_are_not_plain_are_bad_input_and_never_sent(hole_inventory, command,
                                                                 job_id):
    """The dashboard is a black hole: any request sent would take the full timeout."""
    t0 = time.monotonic()
    done = cli(hole_inventory, command, job_id, timeout=30)
    assert done.returncode == 2, done.stderr
    # refused by the id's form (jobs.check_job_id, then Ray's own rule), or by cancel's
    # rule that only jobs of the store are stopped: never sent either way
    said = done.stderr.splitlines()[0]
    assert ("is not a job id" in said or "is not a Ray job id" in said
            or "not in the job store" in said), done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - t0 < REQUEST_TIMEOUT


def test_twenty_concurrent_submits_are_all_recorded_and_distinct(inventory, model):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "warpforge_launch", "submit", "--source", str(model),
             "--class", "SimpleMLP", "--inputs", "[(1, 8)]", "--memory", "64M",
             "--inventory", str(inventory)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(20)
    ]  # fmt: skip
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 20, [err for _, err in outs]
    ids = [out.strip().splitlines()[-1] for out, _ in outs]
    assert len(set(ids)) == 20
    listed = cli(inventory, "list", "--json", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    rows = {r["job_id"]: r for r in json.loads(listed.stdout)}
    assert set(ids) <= set(rows)
    on_ray = {j["submission_id"]: j for j in _ray_jobs(inventory)}
    for job_id in ids:
        sid = job_id.removeprefix("raylab-")
        assert sid in on_ray
        cid = on_ray[sid]["metadata"]["warpforge_correlation_id"]
        assert rows[job_id]["status"]["correlation_id"] == cid
    assert len({rows[j]["status"]["correlation_id"] for j in ids}) == 20


def _ray_jobs(inventory):
    import urllib.request

    url = yaml.safe_load(inventory.read_text())["schedulers"]["raylab"]["dashboard_url"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/api/jobs/", timeout=10) as answer:
        return json.loads(answer.read())


def test_status_of_a_running_job_without_the_job_model(inventory, model, black_hole_url):
    """`status` of a RUNNING job: one GET, no job model loaded, the full path's output, the
    fresh status recorded; a dashboard gone silent since costs one timeout, not two."""
    from tests.helpers import assert_same_status, lean_and_full_status, stored_config, timed_cli

    job_id = submit(inventory, model, "--env", "WF_FAKE_SLEEP=120")
    try:
        deadline = time.monotonic() + 60
        while json.loads(cli(inventory, "--json", "status", job_id).stdout)["state"] != \
                "RUNNING":
            assert time.monotonic() < deadline, "never RUNNING"
            time.sleep(0.5)
        lean, heavy, gets, stored, full = lean_and_full_status(
            "--inventory", str(inventory), "--json", "status", job_id)
        assert heavy == []
        assert gets == [f"/api/jobs/{job_id.removeprefix('raylab-')}"]  # one GET of that job
        assert stored[job_id] == lean[0]  # recorded as printed
        assert_same_status(lean, full)
        assert lean[0]["scheduler_metadata"]["ray_status"] == "RUNNING"
        assert lean[0]["correlation_id"] == full[0]["correlation_id"] is not None

        # more ids than a few: one list request instead of a GET each, the same answers
        more = [submit(inventory, model, "--env", "WF_FAKE_SLEEP=120") for _ in range(4)]
        everyone = [job_id, *more]
        try:
            while {d["state"] for d in json.loads(cli(inventory, "--json", "status",
                                                      *everyone).stdout)} != {"RUNNING"}:
                assert time.monotonic() < deadline + 90, "never all RUNNING"
                time.sleep(0.5)
            lean, heavy, gets, stored, full = lean_and_full_status(
                "--inventory", str(inventory), "--json", "status", *everyone)
            assert heavy == [] and [d["job_id"] for d in lean] == everyone
            assert gets == ["/api/jobs/"]  # five ids: one list, not five GETs
            assert_same_status(lean, full)
        finally:
            for other in more:
                cli(inventory, "cancel", other)

        # the job's cluster now accepts and never answers
        with stored_config([job_id], dashboard_url=black_hole_url,
                           request_timeout=REQUEST_TIMEOUT):
            done, took = timed_cli("--inventory", str(inventory), "status", job_id, timeout=30)
        assert done.returncode == 3, done.stderr
        assert "timed out (request, 2 s)" in done.stderr and "Traceback" not in done.stderr
        assert REQUEST_TIMEOUT * 0.9 <= took < REQUEST_TIMEOUT + MARGIN
    finally:
        cli(inventory, "cancel", job_id)


def test_result_of_a_finished_job_ray_no_longer_has(inventory, model, output_root,
                                                     _private_home):
    """The head restarted (its job table is gone): the store's final status and the output
    root still give the result. Made here by giving a real finished job's row and output
    dir a submission id this head never saw (a restart is what the real case takes)."""
    import shutil
    import sqlite3

    done = cli(inventory, "--json", "submit", "--source", str(model), "--class", "SimpleMLP",
               "--inputs", "[(1, 8)]", "--memory", "256M", "--wait")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]
    old_sid, new_sid = job_id.removeprefix("raylab-"), "wf-0f0f0f0f"
    shutil.copytree(output_root / old_sid, output_root / new_sid)
    with sqlite3.connect(_private_home / "jobs.sqlite3") as db:
        row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        db.execute(f"INSERT INTO jobs VALUES ({','.join('?' * len(row))})",
                   ("raylab-" + new_sid, *row[1:3], new_sid, "c-forgotten", *row[5:]))
    got = cli(inventory, "--json", "result", "raylab-" + new_sid)
    assert got.returncode == 0, got.stderr
    result = json.loads(got.stdout)
    assert result["success"] and "module @main {" in result["mlir_output"]
    assert "no longer has this job" in result["log_tail"]
    missing = cli(inventory, "result", "raylab-wf-0e0e0e0e")  # never in the store either
    assert missing.returncode == 2
    # a model.mlir that is a symlink out of the job's directory: refused, named, exit 1
    # (for the job the head still has, and for the one it no longer has)
    for sid, rid in ((old_sid, job_id), (new_sid, "raylab-" + new_sid)):
        mlir = output_root / sid / "model.mlir"
        mlir.unlink()
        mlir.symlink_to("/etc/hostname")
        evil = cli(inventory, "result", rid)
        assert evil.returncode == 1, evil.stdout + evil.stderr
        assert "success:    no" in evil.stdout and f"{sid}/model.mlir: a symlink" in evil.stdout


def test_cancel_goes_on_past_a_job_ray_cannot_stop(tmp_path, ray_url, fake_snakegrinder,
                                                   output_root, model):
    """A PENDING Ray job ignores a stop: that one is an error line, and a RUNNING job named
    after it in the same command is still stopped."""
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump({"schedulers": {"raylab": {
        "type": "ray", "dashboard_url": ray_url, "snakegrinder": str(fake_snakegrinder),
        "output_root": str(output_root), "request_timeout": 3,
        "gpu_resources": {"NVIDIA": "wf_no_node_has_this"}}}}))
    stuck = submit(path, model, "--gpu", "NVIDIA")  # waits for a resource no node has
    running = submit(path, model, "--env", "WF_FAKE_SLEEP=120")
    deadline = time.monotonic() + 60
    while json.loads(cli(path, "--json", "status", running).stdout)["state"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    done = cli(path, "cancel", stuck, running, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"{running}: cancelled" in done.stdout
    assert f"error: Ray cannot stop job {stuck} while it is PENDING" in done.stderr
    assert json.loads(cli(path, "--json", "status", running).stdout)["state"] == "CANCELLED"
