"""CLI parsing, output and exit codes. Bad input: one line, exit 2, never a traceback."""

import json

import pytest

from tests.helpers import local_inventory, model_file, run_cli
from warpforge_launch import __version__
from warpforge_launch.cli import main
from warpforge_launch.jobs import memory_mb


def call(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def inv(tmp_path):
    return str(local_inventory(tmp_path / "inv.yaml"))


@pytest.fixture
def model(tmp_path):
    return str(model_file(tmp_path))


@pytest.mark.parametrize("argv,fragment", [
    ([], None),
    (["submit"], "the following arguments are required: --source"),
    (["submit", "--source", "x.py", "--gpu", "INTEL"], "invalid choice"),
    (["submit", "--source", "x.py", "--gpu-count", "two"], "invalid int value"),
    (["frobnicate"], "invalid choice"),
    (["status"], "required: JOB_ID"),
    (["list", "--state", "DONE"], "invalid choice"),
])
def test_usage_errors_exit_2(capsys, argv, fragment):
    rc, out, err = call(capsys, *argv)
    assert rc == 2
    if fragment:
        assert err.startswith("error: ") and fragment in err
        assert "Traceback" not in err


@pytest.mark.parametrize("extra,fragment", [
    ([], "--inputs is required"),
    (["--inputs", "[(1,0)]"], "dimension 0 must be a positive"),
    (["--inputs", "[(1,8)", ], "unbalanced"),
    (["--inputs", "[(1,8)]", "--memory", "lots"], "memory 'lots' is not a size"),
    (["--inputs", "[(1,8)]", "--memory", "nan"], "memory 'nan' is not a finite size"),
    (["--inputs", "[(1,8)]", "--memory", "infG"], "memory 'infG' is not a finite size"),
    (["--inputs", "[(1,8)]", "--memory", "1e400"], "memory '1e400' is not a finite size"),
    (["--inputs", "[(1,8)]", "--timeout", "0"], "timeout must be a positive, finite number"),
    (["--inputs", "[(1,8)]", "--timeout", "nan"], "timeout must be a positive, finite number"),
    (["--inputs", "[(1,8)]", "--timeout", "inf"], "timeout must be a positive, finite number"),
    (["--inputs", "[(1,8)]", "--timeout", "1e300"], "too large"),
    (["--inputs", "[(1,8)]", "--timeout", "soon"], "timeout must be a number of minutes"),
    (["--inputs", "[(1,8)]", "--secret-env", "A=B"], "name 'A=B' is not valid"),
    (["--inputs", "[(1,8)]", "--env", "NOEQUALS"], "not KEY=VALUE"),
    (["--inputs", "[(1,8)]", "--priority", "200"], "0-100"),
    (["--inputs", "[(1,8)]", "--gpu", "NVIDIA"], "cannot give a job NVIDIA GPUs"),
    (["--inputs", "[(1,8)]", "--scheduler", "nope"], "no scheduler 'nope'"),
    (["--inputs", "[(1,8)]", "--snakegrinder", "/nonexistent/sg"], "missing or not executable"),
])
def test_submit_bad_input(capsys, inv, model, extra, fragment):
    rc, out, err = call(capsys, "submit", "--inventory", inv, "--source", model,
                        "--class", "SimpleMLP", *extra)
    assert rc == 2, err
    assert fragment in err and err.startswith("error: ")


def test_missing_source_and_class(capsys, inv, tmp_path):
    rc, _, err = call(capsys, "submit", "--inventory", inv, "--source",
                      str(tmp_path / "nope.py"), "--class", "M", "--inputs", "[(1,8)]")
    assert rc == 2 and "does not exist" in err
    rc, _, err = call(capsys, "submit", "--inventory", inv, "--source", str(tmp_path / "m.py"),
                      "--inputs", "[(1,8)]")
    assert rc == 2 and "needs a model class" in err


def test_a_directory_as_source_is_named_a_directory(capsys, inv, tmp_path):
    """`--source DIR` is no missing file: the error says what is wrong with it."""
    rc, out, err = call(capsys, "submit", "--inventory", inv, "--source", str(tmp_path),
                        "--class", "M", "--inputs", "[(1,8)]")
    assert rc == 2 and out == ""
    assert err.splitlines()[0] == f"error: model source {tmp_path} is a directory, not a file"


def test_missing_snakegrinder_is_clear(capsys, tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("HOME", str(tmp_path))
    rc, _, err = call(capsys, "submit", "--source", model, "--class", "M", "--inputs", "[(1,8)]")
    assert rc == 2 and "snakegrinder not found" in err and "invoke build" in err


def test_dry_run_prints_the_plan_and_submits_nothing(capsys, inv, model):
    rc, out, _ = call(capsys, "submit", "--inventory", inv, "--source", model, "--class",
                      "SimpleMLP", "--inputs", "[(1,3,224,224):f32]", "--dry-run", "--json")
    assert rc == 0
    plan = json.loads(out)["plan"]
    argv = plan["argv"]
    assert argv[argv.index("--inputs") + 1] == "[(1, 3, 224, 224, 'f32')]"
    assert plan["kind"] == "local-process"
    rc, out, _ = call(capsys, "list", "--json")
    assert json.loads(out) == []


def test_unknown_job_ids(capsys, inv):
    rc, _, err = call(capsys, "status", "--inventory", inv, "local-deadbeef")
    assert rc == 2 and "no local job" in err
    rc, _, err = call(capsys, "status", "--inventory", inv, "nohyphen")
    assert rc == 2 and "is not a job id" in err
    rc, _, err = call(capsys, "result", "--inventory", inv, "ray-123")
    assert rc == 2 and "no scheduler 'ray'" in err
    for argv in (["logs", "local-deadbeef"], ["logs", "--json", "local-deadbeef"]):
        rc, out, err = call(capsys, *argv, "--inventory", inv)
        assert rc == 2 and out == "" and "no local job" in err, (argv, err)
    rc, out, err = call(capsys, "cancel", "--inventory", inv, "local-deadbeef")
    assert rc == 2 and out == "" and "not in the job store: local-deadbeef" in err


def test_cancel_of_a_job_this_store_never_recorded_is_refused(capsys, inv, model, tmp_path):
    """A real Local job submitted through another job store (someone else's) is left
    running: `cancel` refuses it, and the job of this store named with it, with exit 2."""
    from warpforge_launch.inputs import parse_inputs
    from warpforge_launch.jobs import JobDefinition, JobState
    from warpforge_launch.launcher import Launcher
    from warpforge_launch.store import JobStore

    def define():
        return JobDefinition(name="mlp", source=model, model_class="SimpleMLP",
                             inputs=parse_inputs("[(1, 8)]"),
                             environment={"WF_FAKE_SLEEP": "30"})

    with Launcher(inv, store=JobStore(tmp_path / "other.sqlite3")) as theirs:
        foreign = theirs.submit(define())
        try:
            with Launcher(inv) as launcher:
                ours = launcher.submit(define())
            rc, out, err = call(capsys, "cancel", "--inventory", inv, ours, foreign)
            assert rc == 2 and out == ""
            assert err.startswith(f"error: not in the job store: {foreign};")
            assert "nothing was cancelled" in err and "Traceback" not in err
            with Launcher(inv) as launcher:
                sched = launcher.scheduler("local")
                assert not sched.status(foreign).state.terminal
                assert not sched.status(ours).state.terminal
                rc, out, err = call(capsys, "cancel", "--inventory", inv, ours)
                assert rc == 0 and out == f"{ours}: cancelled\n", err
                assert sched.status(ours).state is JobState.CANCELLED
                assert not sched.status(foreign).state.terminal
        finally:
            theirs.cancel(foreign)


def test_bad_inventory_is_exit_2(capsys, tmp_path, model):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedulers: {local: {type: local, max_concurrent_jobs: x}}\n")
    rc, _, err = call(capsys, "--inventory", str(bad), "submit", "--source", model,
                      "--class", "M", "--inputs", "[(1,8)]")
    assert rc == 2 and "schedulers.local.max_concurrent_jobs" in err


def test_version_and_help_in_a_real_process():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"warpforge-launch {__version__}"
    proc = run_cli("submit", "--help")
    assert proc.returncode == 0 and "--dry-run" in proc.stdout


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    proc = run_cli("submit", "--source", "m.py", "--class", "M", "--inputs", "[(1,8):f99]",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: bad input spec") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text,mb", [("4096", 4096), ("16G", 16384), ("512M", 512),
                                     ("1.5g", 1536), ("2GB", 2048)])
def test_memory_units(text, mb):
    assert memory_mb(text) == mb


def test_list_of_empty_store_and_limit(capsys):
    rc, out, _ = call(capsys, "list")
    assert rc == 0 and "JOB ID" in out
    rc, _, err = call(capsys, "list", "--limit", "0")
    assert rc == 2 and "--limit must be > 0" in err


def test_cluster_info_json(capsys, inv):
    rc, out, _ = call(capsys, "--json", "cluster-info", "--inventory", inv)
    info = json.loads(out)
    assert rc == 0 and info["scheduler_name"] == "local" and info["nodes"][0]["cpu_cores"] >= 1


def test_cluster_info_names_the_instance_and_its_version_once(capsys, tmp_path):
    from warpforge_launch import __version__

    inv = tmp_path / "two.yaml"
    inv.write_text("schedulers:\n  local:\n    type: local\n  mine:\n    type: local\n")
    rc, out, _ = call(capsys, "cluster-info", "--inventory", str(inv), "--scheduler", "mine")
    assert rc == 0 and f"scheduler: mine (warpforge-launch {__version__})" in out
    rc, out, _ = call(capsys, "--json", "cluster-info", "--inventory", str(inv), "--all")
    rows = {r["scheduler"]: r["info"] for r in json.loads(out)}
    assert rows["mine"]["scheduler_name"] == "mine"
    assert rows["mine"]["scheduler_version"] == f"warpforge-launch {__version__}"


@pytest.mark.parametrize("name", ["x\ny", "a\tb", "bell\x07", "del\x7f"])
def test_a_job_name_with_control_characters_is_refused_not_cleaned(capsys, inv, tmp_path,
                                                                   name):
    src = tmp_path / "m.py"
    src.write_text("class M: pass\n")
    rc, out, err = call(capsys, "submit", "--inventory", inv, "--source", str(src), "--class",
                        "M", "--inputs", "[(1,8)]", "--name", name, "--dry-run")
    assert rc == 2 and not out
    assert err.startswith(f"error: --name {name!r} holds control characters")


def test_ray_credentials_are_never_printed(capsys, tmp_path):
    inv = tmp_path / "ray.yaml"
    inv.write_text("schedulers:\n  r:\n    type: ray\n"
                   "    dashboard_url: http://admin:hunter2pw@127.0.0.1:1\n")
    rc, out, err = call(capsys, "--inventory", str(inv), "schedulers")
    assert rc == 2 and "dashboard_url must not hold a user or password" in err
    assert "hunter2pw" not in out + err
    inv.write_text("schedulers:\n  t:\n    type: ray\n    dashboard_url: http://127.0.0.1:1\n"
                   "    auth_header: 'X-Token: abc123secret'\n  u:\n    type: ray\n"
                   "    dashboard_url: http://127.0.0.1:1\n"
                   "    auth_header: 'Authorization: Bearer ${RAY_TOKEN}'\n")
    rc, out, err = call(capsys, "--inventory", str(inv), "--json", "schedulers")
    rows = {r["name"]: r["config"]["auth_header"] for r in json.loads(out)}
    assert rc == 0 and "abc123secret" not in out + err
    assert rows == {"t": "X-Token: ***", "u": "Authorization: Bearer ${RAY_TOKEN}"}


def test_dry_run_warns_of_a_secret_that_is_not_set(capsys, inv, tmp_path, monkeypatch):
    monkeypatch.delenv("WF_NOT_SET_HERE", raising=False)
    src = tmp_path / "m.py"
    src.write_text("class M: pass\n")
    rc, out, err = call(capsys, "submit", "--inventory", inv, "--source", str(src), "--class",
                        "M", "--inputs", "[(1,8)]", "--secret-env", "WF_NOT_SET_HERE",
                        "--dry-run")
    assert rc == 0 and "# dry run" in out
    assert "warning: --secret-env WF_NOT_SET_HERE: not set in this environment" in err


def test_cluster_info_prints_nested_details_as_lines(capsys):
    from warpforge_launch.jobs import ClusterInfo
    from warpforge_launch.output import print_cluster

    print_cluster(ClusterInfo("k", "kubernetes v1", 1, 1, details={
        "gpus_by_node": {"wf-node": {"nvidia": 1, "amd": 1}}, "zones": ["a", "b"],
        "accounting": None}))
    out = capsys.readouterr().out
    assert "{" not in out and "[" not in out
    assert "gpus_by_node:\n  wf-node:\n    amd: 1\n    nvidia: 1\n" in out
    assert "zones: a, b" in out and "accounting: -" in out
