"""`warpforge-launch sweep` on the real Slurm lab cluster: job arrays, as a user runs it.

PATH wrappers (tests/testlab/clientlog.py) count every Slurm client call the CLI makes and
keep the scripts sbatch received; the fake payload records its argv and environment in
each task's output directory (argv.nul, env.nul), and sacct says what GRES each task got.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections import Counter

import yaml

from tests.helpers import model_file, run_cli
from tests.integration.slurm.test_slurm_cli import inventory
from tests.integration.slurm.test_slurm_results import untimed
from tests.testlab import clientlog
from warpforge_launch import sweep_launch
from warpforge_launch.launcher import Launcher
from warpforge_launch.schedulers.slurm import lacks_exit_code

FAIL_INPUTS = "[(4, 8, 'f32')]"  # snakegrinder's dialect of the second shape


def sweep_file(tmp_path, **options):
    a = model_file(tmp_path, "alpha.py")
    b = model_file(tmp_path, "beta.py")
    doc = {"name": "arrays",
           "models": [{"source": str(a), "class": "SimpleMLP"},
                      {"source": str(b), "class": "SimpleMLP",
                       "env": {"WF_FAKE_EXIT": "3", "WF_FAKE_EXIT_INPUTS": FAIL_INPUTS}}],
           "inputs": ["[(1, 8)]", "[(4, 8)]", "[(16, 8)]"], "gpus": ["NVIDIA", "AMD"],
           "schedulers": ["hpc"],
           "options": {"timeout": 5, "memory": "100M", "throttle": 2,
                       "env": {"WF_USER_SWEEP": "yes"}, **options}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def cli(log_dir, inv, *args, timeout=60):
    env = {"PATH": f"{log_dir / 'bin'}:{os.environ['PATH']}"}
    return run_cli("--inventory", str(inv), *args, env=env, timeout=timeout)


def wait_all(log_dir, inv, sweep_id, deadline_s=240):
    """Poll `sweep status` until every cell is final; each poll is one batched refresh."""
    log = log_dir / "calls.log"
    end = time.monotonic() + deadline_s
    while True:
        before = clientlog.calls(log)
        done = cli(log_dir, inv, "sweep", "status", sweep_id, "--json")
        assert done.returncode == 0, done.stderr
        new = clientlog.calls(log)[len(before):]
        assert sum(c[0] == "squeue" for c in new) <= 1, new
        assert sum(c[0] == "sacct" for c in new) <= 1, new
        shown = json.loads(done.stdout)
        states = [c["status"]["state"] for c in shown["cells"]]
        if all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in states):
            return shown
        assert time.monotonic() < end, f"sweep not finished: {shown['summary']}"
        time.sleep(1.0)


def sacct(cluster, job: str, fields: str) -> str:
    """sacct's rows (-X -P -n) of ``job`` with these ``--format`` fields."""
    return subprocess.run(["sacct", "-X", "-P", "-n", "-j", job, f"--format={fields}"],
                          capture_output=True, text=True, timeout=20, check=True,
                          env={**os.environ, "SLURM_CONF": str(cluster.conf)}).stdout


def alloc_tres(cluster, native, deadline_s=20):
    """What sacct says the task was allocated; accounting may lag squeue by a moment."""
    end = time.monotonic() + deadline_s
    while True:
        out = sacct(cluster, native, "JobID,AllocTRES")
        if out.strip() or time.monotonic() > end:
            return out
        time.sleep(0.5)


def nul_file(path):
    return [p.decode() for p in path.read_bytes().split(b"\0") if p]


def test_a_2x3x2_sweep_is_one_round_trip_of_job_arrays(slurm_cluster, shared_dir, tmp_path):
    clientlog.wrap(tmp_path / "bin", tmp_path / "calls.log")
    log = tmp_path / "calls.log"
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    spec = sweep_file(tmp_path)

    dry = cli(tmp_path, inv, "sweep", str(spec), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("#SBATCH --array=0-5%2") == 2 and "12 cells" in dry.stdout
    assert clientlog.calls(log) == []  # a dry run asks the cluster nothing

    sub = cli(tmp_path, inv, "--json", "sweep", str(spec))
    assert sub.returncode == 0, sub.stderr
    sweep_id = json.loads(sub.stdout)["sweep_id"]
    # Slurm has no per-task GRES: one array per GPU type, both sent by one submit driver
    assert [c[0] for c in clientlog.calls(log)] == ["sbatch", "sbatch"]
    scripts = clientlog.scripts(log)
    assert all("#SBATCH --array=0-5%2\n" in s for s in scripts)
    assert {s.count("ARGV=(") for s in scripts} == {6}
    assert ["#SBATCH --gres=gpu:nvidia:1" in s for s in scripts] == [True, False]
    assert ["#SBATCH --gres=gpu:amd:1" in s for s in scripts] == [False, True]

    shown = wait_all(tmp_path, inv, sweep_id)
    by_cell = {(c["model"], c["shape"], c["gpu"]): c for c in shown["cells"]}
    assert len(by_cell) == 12
    failed = {k for k, c in by_cell.items() if c["status"]["state"] == "FAILED"}
    assert failed == {("beta", "[(4, 8)]", "NVIDIA"), ("beta", "[(4, 8)]", "AMD")}
    assert all(c["status"]["state"] == "COMPLETED" for k, c in by_cell.items()
               if k not in failed)

    work = shared_dir / "users" / "root" / "warpforge"
    arrays = set()
    for (model, shape, gpu), cell in by_cell.items():
        native = cell["job_id"].removeprefix("hpc-")
        job, _, task = native.partition("_")
        arrays.add((gpu, job))
        assert task.isdigit()
        out = work / f"output-{native}"
        argv = nul_file(out / "argv.nul")
        env = dict(e.split("=", 1) for e in nul_file(out / "env.nul"))
        assert argv[argv.index("--source") + 1] == str(tmp_path / f"{model}.py")
        assert argv[argv.index("--inputs") + 1] == {
            "[(1, 8)]": "[(1, 8, 'f32')]", "[(4, 8)]": FAIL_INPUTS,
            "[(16, 8)]": "[(16, 8, 'f32')]"}[shape]
        assert argv[argv.index("--out") + 1] == str(out)
        assert env["WARPFORGE_CORRELATION_ID"] == cell["status"]["correlation_id"]
        assert env["SLURM_ARRAY_JOB_ID"] == job and env["SLURM_ARRAY_TASK_ID"] == task
        assert env["WF_USER_SWEEP"] == "yes"
        assert env["WARPFORGE_GRES"] == f"gpu:{gpu.lower()}:1"
        assert ("WF_FAKE_EXIT" in env) == (model == "beta")
        # what Slurm itself allocated to the task
        acct = alloc_tres(slurm_cluster, native)
        assert f"gres/gpu:{gpu.lower()}=1" in acct, acct
        other = "amd" if gpu == "NVIDIA" else "nvidia"
        assert f"gres/gpu:{other}" not in acct
    assert len({job for _, job in arrays}) == 2  # one array job per GPU type

    # every cell final in the store: no squeue, no sacct, and all 12 cells' files in ONE
    # read; only a failed cell whose final status squeue gave (accounting lagged) lacks its
    # exit code, and such cells are asked about in one batched refresh
    with Launcher(str(inv)) as launcher:
        _, rows = sweep_launch.results(launcher, sweep_id)
        unsure = any(lacks_exit_code(cell.status) for cell, _ in rows)
        asked = Counter({"squeue": 1, "sacct": 1} if unsure else {})
        [sched] = launcher._instances.values()
        assert sched.calls == asked + Counter({"warpforge-read": 1})
        with launcher.scheduler("hpc") as single:  # the same as each cell read on its own
            for cell, got in rows:
                assert untimed(got) == untimed(single.result(cell.status.job_id))
    before = len(clientlog.calls(log))
    result = cli(tmp_path, inv, "--json", "sweep", "result", sweep_id)
    assert result.returncode == 1, result.stderr  # one failing cell (per GPU) fails the sweep
    assert Counter(c[0] for c in clientlog.calls(log)[before:]) == asked
    cells = json.loads(result.stdout)["cells"]
    for c in cells:
        bad = (c["model"], c["shape"]) == ("beta", "[(4, 8)]")
        assert c["ok"] is (not bad) and c["exit_code"] == (3 if bad else 0)
        assert (c["mlir_bytes"] or 0) > 0 if not bad else c["mlir_bytes"] is None
    table = cli(tmp_path, inv, "sweep", "status", sweep_id)
    assert table.returncode == 0 and "NVIDIA/hpc" in table.stdout and "AMD/hpc" in table.stdout

    # every cell into the artifact store: the files as they are on the cluster
    art = tmp_path / "artifacts"
    fetched = cli(tmp_path, inv, "--json", "sweep", "fetch", sweep_id, "--to", str(art))
    assert fetched.returncode == 0, fetched.stderr
    got = json.loads(fetched.stdout)
    assert got["not_fetched"] == 0 and len(got["fetched"]) == 12
    for cell in by_cell.values():
        job_dir = art / cell["job_id"]
        manifest = json.loads((job_dir / "artifacts.json").read_text())
        native = cell["job_id"].removeprefix("hpc-")
        for entry in manifest["files"]:
            data = (job_dir / entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["size"]
        assert (job_dir / "output" / "argv.nul").read_bytes() == (
            work / f"output-{native}" / "argv.nul").read_bytes()
        assert ((job_dir / "output" / "model.mlir").is_file()
                == (cell["status"]["state"] == "COMPLETED"))
    again = cli(tmp_path, inv, "--json", "sweep", "fetch", sweep_id, "--to", str(art))
    assert again.returncode == 0, again.stderr
    assert all(r["transferred_bytes"] == 0 and not r["changed"]
               for r in json.loads(again.stdout)["fetched"])


def test_cancel_of_a_sweep_is_one_scancel_for_every_cell(slurm_cluster, shared_dir, tmp_path):
    clientlog.wrap(tmp_path / "bin", tmp_path / "calls.log")
    log = tmp_path / "calls.log"
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    spec = sweep_file(tmp_path, env={"WF_FAKE_SLEEP": "120"})
    sub = cli(tmp_path, inv, "--json", "sweep", str(spec))
    assert sub.returncode == 0, sub.stderr
    sweep_id = json.loads(sub.stdout)["sweep_id"]
    time.sleep(2)  # some tasks start, the rest stay pending in one array record
    before = len(clientlog.calls(log))
    done = cli(tmp_path, inv, "--json", "sweep", "cancel", sweep_id)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["cancelled"]) == 12
    new = clientlog.calls(log)[before:]
    assert sum(c[0] == "scancel" for c in new) == 1
    shown = wait_all(tmp_path, inv, sweep_id, deadline_s=60)
    assert {c["status"]["state"] for c in shown["cells"]} == {"CANCELLED"}
    result = cli(tmp_path, inv, "sweep", "result", sweep_id)
    assert result.returncode == 1


def test_one_gpu_type_is_exactly_one_sbatch_array(slurm_cluster, shared_dir, tmp_path):
    clientlog.wrap(tmp_path / "bin", tmp_path / "calls.log")
    log = tmp_path / "calls.log"
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    doc = yaml.safe_load(sweep_file(tmp_path).read_text())
    doc["gpus"] = ["NVIDIA"]
    doc["options"]["env"]["WF_FAKE_SLEEP"] = "60"
    spec = tmp_path / "one.yaml"
    spec.write_text(yaml.safe_dump(doc))
    sub = cli(tmp_path, inv, "--json", "sweep", str(spec))
    assert sub.returncode == 0, sub.stderr
    sweep_id = json.loads(sub.stdout)["sweep_id"]
    assert [c[0] for c in clientlog.calls(log)] == ["sbatch"]
    (script,) = clientlog.scripts(log)
    assert "#SBATCH --array=0-5%2\n" in script and "#SBATCH --gres=gpu:nvidia:1\n" in script
    shown = json.loads(cli(tmp_path, inv, "--json", "sweep", "status", sweep_id).stdout)
    assert len({c["job_id"].partition("_")[0] for c in shown["cells"]}) == 1
    assert sorted(int(c["job_id"].partition("_")[2]) for c in shown["cells"]) == list(range(6))
    assert cli(tmp_path, inv, "sweep", "cancel", sweep_id).returncode == 0
    assert {c["status"]["state"] for c in wait_all(tmp_path, inv, sweep_id, 60)["cells"]} \
        == {"CANCELLED"}


def sacct_tasks(cluster, job, count, deadline_s=30):
    """{task id: (state, exit code)} once accounting names every task of the array."""
    end = time.monotonic() + deadline_s
    while True:
        out = sacct(cluster, job, "JobID,State,ExitCode")
        rows = dict((ln.split("|")[0], ln.split("|")[1:]) for ln in out.splitlines())
        tasks = {k: (v[0].split()[0], int(v[1].split(":")[0])) for k, v in rows.items()
                 if k.startswith(f"{job}_") and "[" not in k}
        if len(tasks) == count or time.monotonic() > end:
            return tasks
        time.sleep(0.5)


def test_each_cells_final_state_is_its_own_tasks(slurm_cluster, shared_dir, tmp_path):
    """A 2-cell sweep, one cell exiting 4, waited for with --wait, again and again. Until
    accounting learns which task the array's own job record ran as, sacct lists it under
    the bare array id (``585|FAILED|4:0``); no other cell may take that row, and what is
    stored as final (never asked again) must be what sacct says of each task."""
    inv = inventory(tmp_path / "inventory.yaml", shared_dir, slurm_cluster)
    doc = {"name": "race", "models": [{"source": str(model_file(tmp_path)), "class": "SimpleMLP"}],
           "inputs": ["[(1, 8)]", "[(3, 8)]"], "schedulers": ["hpc"],
           "options": {"timeout": 2, "memory": "100M",
                       "env": {"WF_FAKE_EXIT_INPUTS": "[(3, 8, 'f32')]", "WF_FAKE_EXIT": "4",
                               "WF_FAKE_SLEEP": "2"}}}
    spec = tmp_path / "race.yaml"
    spec.write_text(yaml.safe_dump(doc))
    for _ in range(6):
        done = cli(tmp_path, inv, "--json", "sweep", str(spec), "--wait", timeout=120)
        assert done.returncode == 1, done.stderr  # the failing cell fails the sweep
        sweep_id = json.loads(done.stdout)["sweep_id"]
        shown = json.loads(cli(tmp_path, inv, "--json", "sweep", "status", sweep_id).stdout)
        stored = {c["job_id"].removeprefix("hpc-"): (c["status"]["state"],
                                                     c["status"]["scheduler_metadata"])
                  for c in shown["cells"]}
        job = next(iter(stored)).partition("_")[0]
        truth = sacct_tasks(slurm_cluster, job, len(stored))
        assert {n: s for n, (s, _) in stored.items()} == {n: s for n, (s, _) in truth.items()}
        for native, (_, meta) in stored.items():  # squeue alone knows no FAILED's code
            assert meta.get("exit_code") in (truth[native][1], None), (native, meta)
        by_input = {c["shape"]: c["status"]["state"] for c in shown["cells"]}
        assert by_input == {"[(1, 8)]": "COMPLETED", "[(3, 8)]": "FAILED"}
