"""Golden tests of whole rendered sbatch scripts, and proof that hostile values stay inside
their quotes: the rendered script is run by bash with fake container runtimes on PATH that
record the argv they receive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import (
    GpuType,
    InputSpec,
    JobDefinition,
    JobSubmission,
    ResourceRequirements,
)
from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler

GOLDEN = Path(__file__).parent / "golden" / "slurm"
UPDATE = os.environ.get("WF_UPDATE_GOLDEN") == "1"
CID = "1a2b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d"
MODELS = Path(__file__).parent / "fixtures" / "slurm" / "models"  # golden files say /models


def submission(name="simple_mlp", source=None, model_class="SimpleMLP", env=None,
               timeout=timedelta(minutes=30), secret_env=(), **res) -> JobSubmission:
    d = JobDefinition(name=name, source=str(source or MODELS / "simple_mlp.py"),
                      model_class=model_class,
                      inputs=(InputSpec((1, 8)), InputSpec((1, 128), "i64")),
                      resources=ResourceRequirements(**{"memory_mb": 16384, "cpu_cores": 4,
                                                        **res}),
                      environment=env or {}, timeout=timeout, secret_env=secret_env)
    return JobSubmission(d, "alice", datetime(2026, 11, 28, 12, 0, tzinfo=UTC), CID)


def hostile_source(tmp_path: Path) -> Path:
    """A real file at <tmp>/models/my model's $(touch /tmp/PWNED-src).py."""
    path = tmp_path / "models" / "my model's $(touch " / "tmp" / "PWNED-src).py"
    path.parent.mkdir(parents=True)
    path.write_text("class Evil:\n    pass\n")
    return path


def scheduler(tmp_path, **cfg) -> SlurmScheduler:
    settings = {"work_dir": "/scratch/warpforge", "partition": "gpu", **cfg}
    return SlurmScheduler("hpc", SlurmConfig(**settings), home=tmp_path)


def check_golden(name: str, text: str, golden_dir: Path = GOLDEN) -> None:
    """Compare with the golden file; only WF_UPDATE_GOLDEN=1 writes one (a missing file is
    a failure, never a new golden)."""
    path = golden_dir / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if not path.exists():
        pytest.fail(f"golden file {path} is missing: review the output and create it with "
                    "WF_UPDATE_GOLDEN=1")
    assert text == path.read_text(), f"rendered script differs from {path}"


def test_missing_golden_file_fails_and_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "UPDATE", False)
    with pytest.raises(pytest.fail.Exception, match="missing"):
        check_golden("absent.sh", "#!/bin/bash\n", golden_dir=tmp_path)
    assert not (tmp_path / "absent.sh").exists()


HOSTILE = dict(
    name="x'; touch /tmp/PWNED-name #\ntouch /tmp/PWNED-newline",
    model_class='Evil"; `touch /tmp/PWNED-class`; echo "',
    env={"USER_NOTE": "line1\nline2 'single' \"double\" $(id) `id` ${HOME} \\ ; | &",
         "EMPTY": ""},
)


CASES = {
    "singularity_nvidia.sh": (dict(runtime="singularity"),
                              dict(gpu_type=GpuType.NVIDIA, gpu_count=1)),
    "apptainer_amd.sh": (dict(runtime="apptainer", account="proj42", qos="normal"),
                         dict(gpu_type=GpuType.AMD, gpu_count=2)),
    "apptainer_any.sh": (dict(runtime="apptainer"), dict(gpu_type=GpuType.ANY, gpu_count=1)),
    "runtime_none_cpu.sh": (dict(runtime="none", snakegrinder="/shared/wf/bin/snakegrinder"),
                            dict()),
    "node_affinity_priority.sh": (
        dict(runtime="singularity", qos_by_priority={"80": "high", "0": "normal"},
             nice_from_priority=True, extra_sbatch=("--exclusive", "--constraint=a100&nvlink")),
        dict(gpu_type=GpuType.NVIDIA, gpu_count=1, node_affinity=frozenset({"gpu02", "gpu01"}),
             priority=90, queue="long")),
    "secret_env.sh": (dict(runtime="none"), dict(secret_env=("HF_TOKEN", "WANDB_API_KEY"))),
    "hostile_values.sh": (dict(runtime="singularity", partition='gpu" --uid=0 "',
                               account="a b#c", work_dir="/scratch/my work"),
                          dict(gpu_type=GpuType.NVIDIA, gpu_count=1,
                               node_affinity=frozenset({"node-1.cluster"}), **HOSTILE)),
}


@pytest.mark.parametrize("golden", sorted(CASES))
def test_golden_scripts(tmp_path, golden):
    cfg, res = CASES[golden]
    if golden == "hostile_values.sh":
        res = {**res, "source": hostile_source(tmp_path)}
    plan = scheduler(tmp_path, **cfg).plan(submission(**res))
    assert plan.kind == "sbatch" and plan.native_id is None
    text = plan.request.script.replace(str(tmp_path / "models"), "/models")
    check_golden(golden, text.replace(str(MODELS), "/models"))
    assert plan.render() == plan.request.script
    bash = subprocess.run(["bash", "-n"], input=plan.request.script, text=True, capture_output=True,
                          timeout=10)
    assert bash.returncode == 0, bash.stderr


def test_script_shape(tmp_path):
    sub = submission(gpu_type=GpuType.NVIDIA, gpu_count=1,
                     timeout=timedelta(minutes=90, seconds=1))
    text = scheduler(tmp_path).plan(sub).request.script
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "#SBATCH --job-name=warpforge-1a2b3c4d" in lines
    assert "#SBATCH --output=/scratch/warpforge/warpforge-%j.out" in lines
    assert "#SBATCH --gres=gpu:nvidia:1" in lines
    assert "#SBATCH --time=91" in lines  # rounded up: never shorter than asked
    assert "#SBATCH --cpus-per-task=4" in lines and "#SBATCH --mem=16384M" in lines
    assert any(ln.startswith("exec singularity exec --nv --bind") for ln in lines)
    assert 'OUT_DIR="$WORK_DIR/output-$SLURM_JOB_ID"' in lines


def test_any_gpu_is_untyped_gres(tmp_path):
    text = scheduler(tmp_path).plan(submission(gpu_type=GpuType.ANY, gpu_count=3)).request.script
    assert "#SBATCH --gres=gpu:3" in text.splitlines()


def test_priority_below_50_gives_nice_and_low_qos(tmp_path):
    sched = scheduler(tmp_path, qos_by_priority={"80": "high"}, qos="normal",
                      nice_from_priority=True)
    low = sched.plan(submission(priority=10)).request.script.splitlines()
    assert "#SBATCH --nice=400" in low and "#SBATCH --qos=normal" in low
    high = sched.plan(submission(priority=85)).request.script.splitlines()
    assert "#SBATCH --qos=high" in high and not any("--nice" in ln for ln in high)


def _fake_runtime(bin_dir: Path, name: str, record: Path) -> None:
    script = bin_dir / name
    script.write_text("#!/usr/bin/env python3\nimport json, os, sys\n"
                      f"json.dump({{'argv': sys.argv[1:], 'note': os.environ.get('USER_NOTE'),"
                      f" 'empty': os.environ.get('EMPTY')}}, open({str(record)!r}, 'w'))\n")
    script.chmod(0o755)


@pytest.mark.parametrize("runtime", ["singularity", "apptainer", "none"])
def test_hostile_values_stay_inside_their_quotes(tmp_path, runtime):
    work = tmp_path / "work dir"  # a space in the work dir too
    work.mkdir()  # made by the submit driver before sbatch
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    for name in ("singularity", "apptainer", "snakegrinder"):
        _fake_runtime(bin_dir, name, record)
    sched = scheduler(tmp_path, work_dir=str(work), runtime=runtime,
                      snakegrinder=str(bin_dir / "snakegrinder"),
                      partition='gpu" --uid=0 "', account="a b#c")
    plan = sched.plan(submission(gpu_type=GpuType.NVIDIA, gpu_count=1,
                                 source=hostile_source(tmp_path), **HOSTILE))
    sbatch_lines = [ln for ln in plan.request.script.splitlines() if ln.startswith("#SBATCH")]
    assert '#SBATCH --partition="gpu\\" --uid=0 \\""' in sbatch_lines
    assert '#SBATCH --account="a b#c"' in sbatch_lines
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "77"}
    proc = subprocess.run(["bash", "-c", plan.request.script], env=env, capture_output=True,
                          text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(record.read_text())
    payload = [a.replace(f"{work}/output-$SLURM_JOB_ID", f"{work}/output-77")
               for a in plan.argv]
    if runtime == "none":
        assert seen["argv"] == payload[1:]
    else:
        assert seen["argv"] == ["exec", "--nv", "--bind", str(work),
                                "/shared/containers/warpforge-nvidia.sif", *payload]
    assert seen["note"] == HOSTILE["env"]["USER_NOTE"] and seen["empty"] == ""
    assert (work / "output-77").is_dir()
    assert not list(Path("/tmp").glob("PWNED-*"))


@pytest.mark.parametrize("field,value,match", [
    ("queue", "gpu\n#SBATCH --uid=0", "control character"),
    ("node_affinity", frozenset({"n1,n2"}), "invalid node name"),
    ("node_affinity", frozenset({"n[1-9]"}), "invalid node name"),
    ("env", {"NOT VALID": "x"}, "invalid environment variable name"),
    ("env", {"A": "nul\0byte"}, "NUL"),
])
def test_values_that_cannot_be_quoted_are_refused(tmp_path, field, value, match):
    kwargs = {"env": value} if field == "env" else {field: value}
    with pytest.raises(UsageError, match=match):
        scheduler(tmp_path).plan(submission(**kwargs))


@pytest.mark.parametrize("work_dir", ["relative/dir", "/a,b", "/a:b", "/a\\b", "/a\nb",
                                      "/scratch/$HOME/wf"])
def test_bad_work_dir_is_a_usage_error(tmp_path, work_dir):
    with pytest.raises(UsageError, match="work_dir"):
        scheduler(tmp_path, work_dir=work_dir).plan(submission())


def test_percent_in_work_dir_is_literal_for_slurm(tmp_path):
    text = scheduler(tmp_path, work_dir="/scratch/100%").plan(submission()).request.script
    assert "#SBATCH --output=/scratch/100%%/warpforge-%j.out" in text.splitlines()


def test_any_gpu_with_containers_needs_both_images(tmp_path):
    with pytest.raises(UsageError, match="ANY"):
        scheduler(tmp_path, image_amd="").plan(submission(gpu_type=GpuType.ANY, gpu_count=1))


def test_bad_qos_threshold(tmp_path):
    with pytest.raises(UsageError, match="qos_by_priority"):
        scheduler(tmp_path, qos_by_priority={"high": "x"}).plan(submission())


def test_plan_is_pure(tmp_path):
    sched = scheduler(tmp_path)
    sched.plan(submission())
    assert not sched.calls and not any(tmp_path.iterdir())


SECRET = "s3cr3t 'q' \"dq\" $(touch /tmp/PWNED-secret)\nline2"


def _recording_payload(tmp_path: Path) -> tuple[Path, Path]:
    payload = tmp_path / "bin" / "payload"
    payload.parent.mkdir()
    record = tmp_path / "seen.json"
    payload.write_text("#!/usr/bin/env python3\nimport json, os, sys\n"
                       f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, "
                       f"open({str(record)!r}, 'w'))\n")
    payload.chmod(0o755)
    return payload, record


def test_secret_values_never_in_the_script_but_reach_the_payload(tmp_path, monkeypatch):
    payload, record = _recording_payload(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    sched = scheduler(tmp_path, work_dir=str(work), runtime="none", snakegrinder=str(payload))
    monkeypatch.setenv("HF_TOKEN", SECRET)
    plan = sched.plan(submission(secret_env=("HF_TOKEN",)))
    dumped = json.dumps(plan.to_dict())
    for text in (plan.request.script, plan.render(), dumped):
        assert "s3cr3t" not in text
    assert "HF_TOKEN=***" in plan.render()
    assert plan.to_dict()["request"]["spec"]["secret_env"] == ["HF_TOKEN"]
    env = {**os.environ, "SLURM_JOB_ID": "5", "HF_TOKEN": SECRET}  # as sbatch exports it
    run = subprocess.run(["bash", "-c", plan.request.script], env=env, capture_output=True,
                         text=True, timeout=30, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(record.read_text())["env"]["HF_TOKEN"] == SECRET
    env.pop("HF_TOKEN")  # e.g. --export=NONE: the job stops and says why
    run = subprocess.run(["bash", "-c", plan.request.script], env={**env, "SLURM_JOB_ID": "6"},
                         capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert run.returncode != 0 and "HF_TOKEN did not reach the job" in run.stderr
    assert not list(Path("/tmp").glob("PWNED-*"))


@pytest.mark.parametrize("name", ["SBATCH_PARTITION", "SLURM_CONF", "LD_PRELOAD", "PATH",
                                  "BASH_ENV", "NOT-VALID"])
def test_secret_names_that_steer_sbatch_are_refused(tmp_path, monkeypatch, name):
    monkeypatch.setenv(name, "x")
    with pytest.raises(UsageError, match=name):
        scheduler(tmp_path).plan(submission(secret_env=(name,)))


def test_planted_output_symlink_is_refused(tmp_path):
    payload, record = _recording_payload(tmp_path)
    work, victim = tmp_path / "work", tmp_path / "victim"
    work.mkdir()
    victim.mkdir()
    (work / "output-9").symlink_to(victim)
    plan = scheduler(tmp_path, work_dir=str(work), runtime="none",
                     snakegrinder=str(payload)).plan(submission())
    run = subprocess.run(["bash", "-c", plan.request.script], capture_output=True, text=True,
                         env={**os.environ, "SLURM_JOB_ID": "9"}, timeout=30, cwd=tmp_path)
    assert run.returncode == 3 and "refusing" in run.stderr
    assert not record.exists() and not any(victim.iterdir())
    ok = subprocess.run(["bash", "-c", plan.request.script], capture_output=True, text=True,
                        env={**os.environ, "SLURM_JOB_ID": "10"}, timeout=30, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (work / "output-10").stat().st_mode & 0o777 == 0o700


def test_correlation_id_travels_in_the_comment(tmp_path):
    lines = scheduler(tmp_path).plan(submission()).request.script.splitlines()
    assert f"#SBATCH --comment=warpforge:{CID}" in lines


def test_default_work_dir_is_per_user(tmp_path, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "carol")
    local = SlurmScheduler("hpc", SlurmConfig(), home=tmp_path)
    assert local.work_dir == "/scratch/carol/warpforge"
    over_ssh = SlurmScheduler("hpc", SlurmConfig(login_host="login", login_user="alice",
                                                 work_dir="/lustre/${USER}/wf"), home=tmp_path)
    assert over_ssh.work_dir == "/lustre/alice/wf"
    assert "#SBATCH --chdir=/scratch/carol/warpforge" in local.plan(submission()).render()


@pytest.mark.parametrize("make,match", [("missing", "does not exist"),
                                        ("dir", "is a directory")])
def test_source_must_be_a_file(tmp_path, make, match):
    src = tmp_path / "model.py"
    if make == "dir":
        src.mkdir()
    with pytest.raises(UsageError, match=match):
        scheduler(tmp_path).plan(submission(source=src))
