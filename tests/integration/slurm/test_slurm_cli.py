"""The `warpforge-launch` command against the real Slurm lab cluster, as a user runs it."""

from __future__ import annotations

import json

from tests.helpers import (
    assert_same_status,
    lean_and_full_status,
    model_file,
    run_cli,
    stored_config,
    timed_cli,
)


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


def _refused_port() -> int:
    import socket

    with socket.socket() as s:  # a port nobody listens on: the login node is "down"
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_submit_that_never_reached_the_login_node_leaves_nothing(slurm_cluster,
                                                                   shared_dir, tmp_path):
    """The connection was refused, so sbatch never ran: no SUBMITTING row is left to haunt
    every later `list` (which would ask the dead login node again and again)."""
    bad = inventory(tmp_path / "bad.yaml", shared_dir, slurm_cluster, login_host="127.0.0.1",
                    login_port=_refused_port(),
                    known_hosts_file=str(tmp_path / "known_hosts"))
    src = model_file(tmp_path)
    done = run_cli("--inventory", str(bad), "submit", "--source", str(src), "--class", "M",
                   "--inputs", "[(1, 8)]", timeout=60)
    assert done.returncode == 3 and "Connection refused" in done.stderr, done.stderr
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nmodels: [{{source: {src}, class: M}}]\n"
                     "inputs: ['[(1, 8)]', '[(2, 8)]']\n")
    done = run_cli("--inventory", str(bad), "sweep", str(sweep), timeout=60)
    sweep_id = done.stdout.strip()
    assert done.returncode == 3, done.stderr
    assert f"error: 2 of 2 cell(s) of {sweep_id} not sent: cannot reach login node" \
        in done.stderr
    good = inventory(tmp_path / "good.yaml", shared_dir, slurm_cluster)
    listed = run_cli("--inventory", str(good), "--json", "list", timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 2 and {r["status"]["state"] for r in rows} == {"FAILED"}
    assert all("never sent to hpc" in r["status"]["message"] for r in rows)


def test_list_shows_jobs_of_an_unreachable_login_node_as_last_known(slurm_cluster,
                                                                    shared_dir, tmp_path):
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster,
                    extra_sbatch='["--hold"]')
    src = model_file(tmp_path)
    ids = []
    for _ in range(2):
        done = run_cli("--inventory", str(inv), "submit", "--source", str(src), "--class",
                       "M", "--inputs", "[(1, 8)]", timeout=60)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    try:
        # the second job's cluster now sits behind a login node that refuses connections
        with stored_config(ids[1:], login_host="127.0.0.1", login_port=_refused_port(),
                           known_hosts_file=str(tmp_path / "known_hosts")):
            listed = run_cli("--inventory", str(inv), "--json", "list", timeout=60)
        assert listed.returncode == 3
        rows = {r["job_id"]: r["status"] for r in json.loads(listed.stdout)}
        assert rows[ids[0]]["state"] == "PENDING" and "not refreshed" not in \
            rows[ids[0]]["message"]
        assert rows[ids[1]]["state"] == "PENDING" and "not refreshed (cannot reach login " \
            "node" in rows[ids[1]]["message"]
        assert "warning: hpc not refreshed: cannot reach login node" in listed.stderr
    finally:
        run_cli("--inventory", str(inv), "cancel", *ids, timeout=60)


def test_status_of_running_jobs_without_the_job_model(slurm_cluster, shared_dir, tmp_path):
    """`status` of RUNNING jobs answers from the store and one squeue with no job model
    loaded, prints what the full path prints, and records the fresh status."""
    import time

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
        lean, heavy, gets, stored, full = lean_and_full_status(*base, "--json", "status",
                                                               *ids)
        assert heavy == [] and gets == []  # Slurm's answer is the one squeue
        assert stored == {d["job_id"]: d for d in lean}  # recorded as printed
        assert_same_status(lean, full)
        for a, b in zip(lean, full, strict=True):
            assert a["state_changed_at"] == b["state_changed_at"]
            assert a["scheduler_metadata"]["slurm_state"] == "RUNNING"

        # the jobs' login node now accepts and never answers: one timeout, exit 3
        from tests.testlab.blackhole import black_hole

        with black_hole() as port, stored_config(
                ids, login_host="127.0.0.1", login_port=port, command_timeout=3,
                known_hosts_file=str(tmp_path / "known_hosts")):
            done, took = timed_cli(*base, "status", *ids)
        assert done.returncode == 3, done.stderr
        assert "login node" in done.stderr and "Traceback" not in done.stderr
        assert took < 3 + 2 + 4, took  # the timeout, ssh's own grace, CLI start
    finally:
        slurm_cluster.run("scancel", *(i.rsplit("-", 1)[1] for i in ids))


def _states(base, ids, until, deadline_s=60):
    """Poll `status` until every job is in one of the states ``until`` (the store then
    knows them so), or the deadline; the last states seen."""
    import time

    deadline = time.monotonic() + deadline_s
    while True:
        states = [s["state"] for s in run_cli(*base, "--json", "status", *ids,
                                               check_json=True).json]
        if set(states) <= until or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_cancel_refuses_a_job_this_tool_never_submitted(slurm_cluster, shared_dir, tmp_path):
    """A job sbatch'ed by someone else, under a job id of the instance: `cancel` refuses the
    whole command (exit 2, one line) and sends nothing; both jobs go on running."""
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    base = ["--inventory", str(inv)]
    theirs = slurm_cluster.run("sbatch", "--parsable", "-p", "debug", "-o", "/dev/null",
                               "--wrap", "sleep 120").stdout.strip().split(";")[0]
    ours = run_cli(*base, "--json", "submit", "--source", str(model_file(tmp_path)),
                   "--class", "SimpleMLP", "--inputs", "[(1, 8)]", "--env",
                   "WF_FAKE_SLEEP=120", check_json=True).json["job_id"]
    try:
        for argv in ([f"hpc-{theirs}"], [ours, f"hpc-{theirs}"]):
            done = run_cli(*base, "cancel", *argv)
            assert done.returncode == 2, done.stderr
            assert done.stdout == "" and "Traceback" not in done.stderr
            assert done.stderr.splitlines()[0] == (
                f"error: not in the job store: hpc-{theirs}; cancel stops only jobs this "
                "tool submitted (nothing was cancelled)")
        queued = slurm_cluster.run("squeue", "-h", "-t", "all", "-j",
                                   f"{theirs},{ours.removeprefix('hpc-')}", "-o", "%i %T")
        states = dict(line.split() for line in queued.stdout.splitlines())
        assert states[theirs] in ("PENDING", "RUNNING"), states
        assert states[ours.removeprefix("hpc-")] in ("PENDING", "RUNNING"), states
        # read-only commands still read a job the backend knows; an id nobody knows is 2
        assert run_cli(*base, "status", f"hpc-{theirs}").returncode == 0
        for argv in (["logs", "hpc-999999"], ["--json", "logs", "hpc-999999"]):
            done = run_cli(*base, *argv)
            assert done.returncode == 2 and done.stdout == "", (argv, done.stderr)
            assert done.stderr.startswith("error: no hpc job 'hpc-999999'"), done.stderr
    finally:
        slurm_cluster.run("scancel", theirs, ours.removeprefix("hpc-"))


def test_cancel_of_many_jobs_is_one_scancel(slurm_cluster, shared_dir, tmp_path):
    """`cancel A B C`: one scancel naming the three, then one refresh (one squeue, one sacct
    at most); nothing per job."""
    import os

    from tests.testlab import clientlog

    log = tmp_path / "calls.log"
    env = {"PATH": f"{clientlog.wrap(tmp_path / 'bin', log)}:{os.environ['PATH']}"}
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    base = ["--inventory", str(inv)]
    src = model_file(tmp_path)
    ids = [run_cli(*base, "--json", "submit", "--source", str(src), "--class", "SimpleMLP",
                   "--inputs", "[(1, 8)]", "--env", "WF_FAKE_SLEEP=120", check_json=True
                   ).json["job_id"] for _ in range(3)]
    natives = [i.removeprefix("hpc-") for i in ids]
    try:
        assert _states(base, ids, until={"RUNNING"}) == ["RUNNING"] * 3
        before = len(clientlog.calls(log))
        done = run_cli(*base, "cancel", *ids, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"{i}: cancelled" for i in ids]
        new = clientlog.calls(log)[before:]
        assert [c for c in new if c[0] == "scancel"] == [["scancel", *natives]], new
        assert sum(c[0] == "squeue" for c in new) == 1, new
        assert sum(c[0] == "sacct" for c in new) <= 1, new
        assert len(new) <= 3, new
        assert set(_states(base, ids, until={"CANCELLED"})) == {"CANCELLED"}
    finally:
        slurm_cluster.run("scancel", *natives)


def test_a_pending_job_never_changed_state_in_the_future(slurm_cluster, shared_dir, tmp_path):
    """squeue's %S of a pending job is when Slurm expects to start it (here its --begin, an
    hour ahead; a backfill estimate looks the same). `status` says it changed state when it
    was submitted (squeue %V), on the lean path and the full one."""
    from datetime import datetime, timedelta

    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster,
                    extra_sbatch='["--begin=now+3600"]')
    base = ["--inventory", str(inv)]
    job_id = run_cli(*base, "--json", "submit", "--source", str(model_file(tmp_path)),
                     "--class", "SimpleMLP", "--inputs", "[(1, 8)]", check_json=True
                     ).json["job_id"]
    native = job_id.rsplit("-", 1)[1]
    try:
        expected, submitted = slurm_cluster.run(
            "squeue", "-h", "-j", native, "-o", "%S|%V").stdout.strip().split("|")
        assert datetime.fromisoformat(expected) > datetime.now() + timedelta(minutes=50)
        lean, _, _, stored, full = lean_and_full_status(*base, "--json", "status", job_id)
        now = datetime.now().astimezone()
        for doc in (lean[0], full[0], stored[job_id]):
            assert doc["state"] == "PENDING"
            changed = datetime.fromisoformat(doc["state_changed_at"])
            assert changed == datetime.fromisoformat(submitted).astimezone() and changed <= now
    finally:
        slurm_cluster.run("scancel", native)
