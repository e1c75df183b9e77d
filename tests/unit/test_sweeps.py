"""Sweep files: parsing, expansion, bad input (one line, exit 2), the store's sweep tables,
Slurm array rendering and pending-array parsing, and the launcher's batch path through the
counting backend (a sweep of N cells is one batch per instance)."""

import sqlite3
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.testlab import counting
from tests.testlab.builders import inventory, local_inventory, model_file
from warpforge_launch import sweeps
from warpforge_launch.cli import main
from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import GpuType, JobState
from warpforge_launch.schedulers import slurm_array as sa
from warpforge_launch.schedulers import slurm_parse as sp
from warpforge_launch.store import SCHEMA_VERSION, JobStore

REPO = Path(__file__).resolve().parents[2]


def spec_text(tmp_path, **over):
    model_file(tmp_path, "a.py")
    model_file(tmp_path, "b.py")
    doc = {"name": "t", "models": [{"source": "a.py", "class": "A"},
                                   {"source": "b.py", "class": "B"}],
           "inputs": ["[(1, 8)]", "[(4, 8)]", "[(16,8):f16]"], "gpus": ["NVIDIA", "AMD"],
           "options": {"timeout": 5, "memory": "1G", "env": {"K": "v"}, "throttle": 2}}
    doc.update(over)
    return doc


def test_cross_product_in_a_stable_order(tmp_path):
    spec = sweeps.parse(spec_text(tmp_path), base_dir=tmp_path)
    cells = sweeps.expand(spec)
    assert len(cells) == 2 * 3 * 2
    assert [c.index for c in cells] == list(range(12))
    assert [(c.gpu, c.model, c.shape) for c in cells[:4]] == [
        ("NVIDIA", "a", "[(1, 8)]"), ("NVIDIA", "a", "[(4, 8)]"),
        ("NVIDIA", "a", "[(16,8):f16]"), ("NVIDIA", "b", "[(1, 8)]")]
    first, last = cells[0].definition, cells[-1].definition
    assert first.source == str(tmp_path / "a.py") and first.model_class == "A"
    assert first.resources.gpu_type is GpuType.NVIDIA and first.resources.gpu_count == 1
    assert first.resources.memory_mb == 1024 and first.timeout.total_seconds() == 300
    assert dict(first.environment) == {"K": "v"}
    assert last.resources.gpu_type is GpuType.AMD and last.inputs[0].dtype == "f16"
    assert spec.throttle == 2 and spec.schedulers == (None,)


def test_the_example_file_parses():
    spec = sweeps.load(REPO / "examples" / "sweeps" / "mlp-shapes.yaml")
    assert len(sweeps.expand(spec)) == 12 and spec.schedulers == ("slurm",)


@pytest.mark.parametrize("change,fragment", [
    ({"models": []}, "models: must not be empty"),
    ({"models": "a.py"}, "models: must be a list"),
    ({"models": [{"source": "a.py"}]}, "models[0].class: required for type FULL_PIPELINE"),
    ({"models": [{"source": "nope.py", "class": "A"}]}, "nope.py does not exist"),
    ({"models": [{"source": ".", "class": "A"}]}, "is a directory, not a file"),
    ({"models": [{"source": "a.py", "class": "A", "colour": 1}]}, "models[0].colour: unknown"),
    ({"models": [{"source": "a.py", "class": "A", "name": "a\nb"}]},
     "models[0].name: a model name 'a\\nb' holds control characters"),
    ({"name": "s\x1b[2J"}, "name: a sweep name 's\\x1b[2J' holds control characters"),
    ({"models": [{"source": "a.py", "class": "A"}, {"source": "a.py", "class": "B"}]},
     "models[1].name: 'a' is used twice"),
    ({"inputs": ["[(1, 8)]", "[(1,0)]"]}, "inputs[1]: bad input spec" ""),
    ({"inputs": ["[(1, 8)]", "[(1, 8)]"]}, "inputs[1]: [(1, 8)] is listed twice"),
    ({"gpus": ["NVIDIA", "INTEL"]}, "gpus[1]: unknown GPU type 'INTEL'"),
    ({"schedulers": [3]}, "schedulers[0]: must be a non-empty string"),
    ({"options": {"timeout": 0}}, "options.timeout: timeout must be a positive"),
    ({"options": {"memory": "lots"}}, "options.memory: memory 'lots' is not a size"),
    ({"options": {"priority": 101}}, "options.priority: must be a whole number 0-100"),
    ({"options": {"throttle": 0}}, "options.throttle: must be a whole number >= 1"),
    ({"options": {"env": {"A=B": "x"}}}, "environment variable name 'A=B'"),
    ({"options": {"gpus": 2}}, "options.gpus: unknown field"),
    ({"extra": 1}, "extra: unknown field"),
])
def test_bad_specs_name_the_field(tmp_path, change, fragment):
    with pytest.raises(UsageError) as err:
        sweeps.parse(spec_text(tmp_path, **change), base_dir=tmp_path)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_sweep_file_is_one_line_exit_2_and_nothing_is_stored(tmp_path, capsys,
                                                                 _private_home):
    inv = local_inventory(tmp_path / "inv.yaml")
    doc = spec_text(tmp_path, gpus=["NONE"])
    doc["models"][1]["class"] = ""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    rc = main(["sweep", str(path), "--inventory", str(inv)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.splitlines()[0] == "error: models[1].class: must be a non-empty string, got ''"
    assert "Traceback" not in err
    (tmp_path / "broken.yaml").write_text("models: [\n")
    rc = main(["sweep", "submit", str(tmp_path / "broken.yaml"), "--inventory", str(inv)])
    assert rc == 2 and "is not valid YAML at line" in capsys.readouterr().err
    assert not (_private_home / "jobs.sqlite3").exists() or not JobStore().sweeps()


@pytest.mark.parametrize("text, key, line", [
    ("name: x\nname: y\nmodels: [{source: a.py, class: A}]\ninputs: ['[(1, 8)]']\n",
     "name", 2),
    ("name: x\nmodels:\n  - source: a.py\n    class: A\n    class: B\n"
     "inputs: ['[(1, 8)]']\n", "class", 5),
    ("name: x\nmodels: [{source: a.py, class: A}]\ninputs: ['[(1, 8)]']\n"
     "options: {env: {K: a, K: b}}\n", "K", 4),
])
def test_a_duplicate_key_is_refused_naming_it_and_its_line(tmp_path, capsys, _private_home,
                                                           text, key, line):
    """`name: x` then `name: y` is refused, not read as `name: y`: the file is checked whole."""
    inv = local_inventory(tmp_path / "inv.yaml")
    model_file(tmp_path, "a.py")
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    rc = main(["sweep", str(path), "--inventory", str(inv)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.splitlines()[0].startswith(f"error: sweep file {path} is not valid YAML at "
                                          f"line {line}, column ")
    assert f"duplicate key '{key}'" in err.splitlines()[0]
    assert not (_private_home / "jobs.sqlite3").exists() or not JobStore().sweeps()


def test_yaml_merge_keys_are_no_duplicates(tmp_path):
    """`<<: *base` then a key of base overrides it, as YAML means: no duplicate."""
    model_file(tmp_path, "a.py")
    path = tmp_path / "merge.yaml"
    path.write_text("name: m\nmodels:\n  - &base {source: a.py, class: A, name: one}\n"
                    "  - {<<: *base, name: two}\ninputs: ['[(1, 8)]']\n")
    assert [m.name for m in sweeps.load(path).models] == ["one", "two"]


def test_a_gpu_the_scheduler_cannot_give_is_refused_before_anything(tmp_path, capsys,
                                                                    _private_home):
    inv = local_inventory(tmp_path / "inv.yaml")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec_text(tmp_path)))  # NVIDIA/AMD on a Local instance
    rc = main(["sweep", str(path), "--inventory", str(inv)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot give a job NVIDIA GPUs" in err
    assert not JobStore().sweeps()


def test_v2_store_is_upgraded_to_v3_keeping_rows(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    store.db.execute("DROP TABLE sweeps")
    store.db.execute("DROP TABLE sweep_cells")
    store.db.execute("INSERT INTO jobs VALUES ('local-1','local','local','1','c','n','me',"
                     "'2026-01-01T00:00:00+00:00','{}','{}','{}','COMPLETED',"
                     "'{\"job_id\": \"local-1\", \"correlation_id\": \"c\", "
                     "\"state\": \"COMPLETED\"}','x',NULL)")
    store.db.execute("PRAGMA user_version = 2")
    store.close()
    again = JobStore(path)
    assert again.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    assert again.get("local-1").state is JobState.COMPLETED
    assert again.sweeps() == []
    tables = {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "sweeps", "sweep_cells"} <= tables


def _counting_sweep(tmp_path, monkeypatch, **over):
    backend = counting.install(monkeypatch)
    inv = inventory(tmp_path / "inv.yaml", {"c1": {"type": "counting"},
                                            "c2": {"type": "counting"}})
    doc = spec_text(tmp_path, **{"gpus": ["NONE"], "schedulers": ["c1", "c2"], **over})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return backend, str(inv), str(path)


def test_sweep_submit_status_result_cancel_through_the_launcher(tmp_path, monkeypatch,
                                                                capsys):
    backend, inv, path = _counting_sweep(tmp_path, monkeypatch)
    assert main(["sweep", path, "--inventory", inv]) == 0
    sweep_id = capsys.readouterr().out.strip()
    assert sweep_id.startswith("sweep-") and len(sweep_id) == 14
    assert backend.calls["execute"] == 12 and len(backend.jobs) == 12
    backend.calls.clear()
    assert main(["sweep", "status", sweep_id, "--inventory", inv, "--json"]) == 0
    import json

    shown = json.loads(capsys.readouterr().out)
    assert shown["summary"] == {"RUNNING": 12}
    assert backend.calls["statuses"] == 2  # one batched refresh per instance
    assert {(c["scheduler"], c["model"]) for c in shown["cells"]} == {
        (s, m) for s in ("c1", "c2") for m in ("a", "b")}
    natives = sorted(backend.jobs, key=int)
    counting.finish(natives[0], JobState.FAILED, "boom")
    for n in natives[1:4]:
        counting.finish(n)
    assert main(["sweep", "cancel", sweep_id, "--inventory", inv]) == 0
    assert "cancelled 8 cell(s)" in capsys.readouterr().out
    assert main(["sweep", "result", sweep_id, "--inventory", inv, "--json"]) == 1
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert [c["state"] for c in cells].count("CANCELLED") == 8
    assert [c["ok"] for c in cells].count(True) == 3
    assert main(["sweep", "list", "--inventory", inv]) == 0
    assert sweep_id in capsys.readouterr().out


def test_a_cell_the_backend_refuses_fails_only_that_cell(tmp_path, monkeypatch, capsys):
    backend, inv, path = _counting_sweep(tmp_path, monkeypatch, schedulers=["c1"])
    backend.fail_send = "refuse"
    assert main(["sweep", path, "--inventory", inv, "--json"]) == 1
    import json

    out = json.loads(capsys.readouterr().out)
    assert len(out["not_sent"]) == 1 and len(backend.jobs) == 5
    main(["sweep", "status", out["sweep_id"], "--inventory", inv, "--json"])
    assert json.loads(capsys.readouterr().out)["summary"] == {"FAILED": 1, "RUNNING": 5}


def test_dry_run_submits_nothing(tmp_path, monkeypatch, capsys):
    backend, inv, path = _counting_sweep(tmp_path, monkeypatch)
    assert main(["sweep", path, "--dry-run", "--inventory", inv]) == 0
    out = capsys.readouterr().out
    assert "12 cells (nothing submitted)" in out and out.count("counting job") == 12
    assert backend.calls["execute"] == 0 and not JobStore().sweeps()


def test_default_submit_form():
    from warpforge_launch.sweep_cli import default_submit

    assert default_submit(["sweep", "f.yaml"]) == ["sweep", "submit", "f.yaml"]
    assert default_submit(["--json", "sweep", "--inventory", "i", "f.yaml"]) == [
        "--json", "sweep", "submit", "--inventory", "i", "f.yaml"]
    assert default_submit(["sweep", "status", "x"]) == ["sweep", "status", "x"]
    odd = ["sweep", "--inventory", "status", "result", "x"]  # an inventory named "status"
    assert default_submit(odd) == odd
    assert default_submit(["submit", "--source", "sweep"]) == ["submit", "--source", "sweep"]


# -- Slurm arrays (pure) ------------------------------------------------------------------------
def _specs(tmp_path, gpus=("NVIDIA", "AMD")):
    from warpforge_launch.jobs import JobSubmission
    from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler

    sched = SlurmScheduler("hpc", SlurmConfig(runtime="none", work_dir="/scratch/u/wf",
                                              snakegrinder="/opt/sg"), home=tmp_path)
    spec = sweeps.parse(spec_text(tmp_path, gpus=list(gpus)), base_dir=tmp_path)
    subs = [JobSubmission.new(c.definition) for c in sweeps.expand(spec)]
    return sched, subs


def test_one_array_per_resource_shape(tmp_path):
    sched, subs = _specs(tmp_path)
    batch = sched.plan_batch(subs, throttle=2)
    assert len(batch.requests) == 2 and len(batch.jobs) == 12
    nvidia, amd = batch.requests
    assert "#SBATCH --array=0-5%2\n" in nvidia.script and "#SBATCH --gres=gpu:nvidia:1" \
        in nvidia.script
    assert "#SBATCH --gres=gpu:amd:1" in amd.script and "gpu:nvidia" not in amd.script
    for index, plan in enumerate(batch.jobs[:6]):
        assert plan.batch.correlation_id == nvidia.batch_id and plan.batch.index == index
        assert f"\n{index})\n  CORRELATION_ID={plan.correlation_id}\n" in nvidia.script
    assert nvidia.script.count("ARGV=(") == 6
    assert "#SBATCH --output=/scratch/u/wf/warpforge-%A_%a.out" in nvidia.script
    assert f"--comment=warpforge:{nvidia.batch_id}" in nvidia.script
    (tmp_path / "one").mkdir()
    one, one_subs = _specs(tmp_path / "one", gpus=("NVIDIA",))
    assert len(one.plan_batch(one_subs).requests) == 1


def test_array_script_runs_the_right_row(tmp_path):
    """bash itself picks the row: each task id gives its own argv and environment."""
    import subprocess

    sched, subs = _specs(tmp_path, gpus=("NONE",))
    batch = sched.plan_batch(subs)
    script = batch.requests[0].script.replace('exec "${ARGV[@]}"',
                                              'printf "%s\\n" "$WARPFORGE_CORRELATION_ID" '
                                              '"$K" "${ARGV[@]}"')
    script = script.replace("WORK_DIR=/scratch/u/wf", f"WORK_DIR={tmp_path}")
    for task in (0, 4):
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={
            "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(task), "PATH": "/usr/bin:/bin"},
            check=True).stdout.splitlines()
        plan = batch.jobs[task]
        assert out[0] == plan.correlation_id and out[1] == "v"
        assert out[2:] == [a.replace("${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}", f"77_{task}")
                           .replace("$WORK_DIR", str(tmp_path)).replace("/scratch/u/wf",
                                                                          str(tmp_path))
                           for a in plan.argv]
    bad = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env={"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "99"})
    assert bad.returncode == 3 and "no row" in bad.stderr


@pytest.mark.parametrize("native,expected", [
    ("123_[0-3%2]", ["123_0", "123_1", "123_2", "123_3"]),
    ("123_[1,5-6]", ["123_1", "123_5", "123_6"]),
    ("123_[0-6:3]", ["123_0", "123_3", "123_6"]),
    ("123_4", ["123_4"]),
    ("42", ["42"]),
])
def test_pending_array_records_expand(native, expected):
    assert sp.expand_ids(native) == expected


def test_squeue_and_sacct_rows_of_arrays():
    squeue = textwrap.dedent("""\
        123_[2-4%2]|PENDING|0:00|(null)|JobArrayTaskLimit|2026-11-29T10:00:00|N/A
        123_0|RUNNING|0:03|node1|None|2026-11-29T10:00:00|2026-11-29T10:00:01
        123_1|RUNNING|0:03|node1|None|2026-11-29T10:00:00|2026-11-29T10:00:01
        """)
    got = sp.parse_squeue(squeue)
    assert sorted(got, key=sp.id_key) == ["123_0", "123_1", "123_2", "123_3", "123_4"]
    assert got["123_3"].state == "PENDING" and got["123_3"].native_id == "123_3"
    sacct = "123_1|FAILED|3:0|00:00:02|node1|2026-11-29T10:00:00|x|y|None\n" \
            "123_1.batch|FAILED|3:0|00:00:02|node1|2026-11-29T10:00:00|x|y|\n"
    rec = sp.parse_sacct(sacct)
    assert list(rec) == ["123_1"] and rec["123_1"].exit_code == 3
    assert sorted(["123_10", "123_2", "99"], key=sp.id_key) == ["99", "123_2", "123_10"]


def test_array_range():
    assert sa.array_range(100, None) == "0-99" and sa.array_range(3, 4) == "0-2%4"


def test_an_array_task_whose_submit_was_cut_is_found_by_its_array(tmp_path, monkeypatch):
    """A crash after sbatch accepted the array, before the cells were recorded: the next
    refresh asks the backend for the array's correlation id and completes each cell as
    <array job>_<index>."""
    import uuid

    from tests.unit.test_store import record
    from warpforge_launch.launcher import Launcher
    from warpforge_launch.store import JobRecord

    backend = counting.install(monkeypatch)
    inv = inventory(tmp_path / "inv.yaml", {"c1": {"type": "counting"}})
    array_corr = str(uuid.uuid4())
    backend.jobs["7"] = {"correlation_id": array_corr, "state": JobState.RUNNING,
                         "message": "", "node": "n"}
    with Launcher(str(inv)) as launcher:
        base = record("c1-submitting-x")
        cells = []
        for index in (0, 2):
            corr = str(uuid.uuid4())
            cells.append(corr)
            launcher.store.add(JobRecord(
                f"c1-submitting-{corr[:8]}", "c1", "counting", "", corr, "n", "me",
                base.submitted_at, {}, {"batch": {"correlation_id": array_corr,
                                                  "index": index}}, {}, base.status,
                submitting=True))
        launcher.refresh(list(launcher.store.by_correlation(cells).values()))
        rows = launcher.store.by_correlation(cells)
        assert [rows[c].job_id for c in cells] == ["c1-7_0", "c1-7_2"]
        assert not any(r.submitting for r in rows.values())
    assert backend.calls["reconcile"] == 1


def test_snakegrinder_option_reaches_every_cell(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("WARPFORGE_HOME", str(tmp_path / "home"))
    model = tmp_path / "m.py"
    model.write_text("class M: pass\n")
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"schedulers": {"here": {"type": "local"}}}))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "sg", "models": [{"source": "m.py", "class": "M"}],
                                    "inputs": ["[(1, 8)]", "[(2, 8)]"]}))
    sg = tmp_path / "bin" / "my snakegrinder"
    sg.parent.mkdir()
    sg.write_text("#!/bin/sh\n")
    sg.chmod(0o755)
    assert main(["sweep", str(spec), "--dry-run", "--json", "--inventory", str(inv),
                 "--snakegrinder", str(sg)]) == 0
    jobs = [j for b in json.loads(capsys.readouterr().out)["batches"] for j in b["jobs"]]
    assert len(jobs) == 2 and all(j["argv"][0] == str(sg) for j in jobs)
    assert main(["sweep", str(spec), "--inventory", str(inv), "--snakegrinder",
                 str(tmp_path / "missing")]) == 2
    assert "missing or not executable" in capsys.readouterr().err
    assert not JobStore().sweeps()  # bad input stores nothing
