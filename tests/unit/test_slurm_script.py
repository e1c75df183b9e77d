"""Golden tests of whole rendered sbatch scripts, and proof that hostile values stay inside
their quotes: the rendered script is run by bash with fake container runtimes on PATH that
record the argv they receive."""

from __future__ import annotations

import json
import os
import subprocess
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


def submission(name="simple_mlp", source="/models/simple_mlp.py", model_class="SimpleMLP",
               env=None, timeout=timedelta(minutes=30), **res) -> JobSubmission:
    d = JobDefinition(name=name, source=source, model_class=model_class,
                      inputs=(InputSpec((1, 8)), InputSpec((1, 128), "i64")),
                      resources=ResourceRequirements(**{"memory_mb": 16384, "cpu_cores": 4,
                                                        **res}),
                      environment=env or {}, timeout=timeout)
    return JobSubmission(d, "alice", datetime(2026, 11, 28, 12, 0, tzinfo=UTC), CID)


def scheduler(tmp_path, **cfg) -> SlurmScheduler:
    settings = {"work_dir": "/scratch/warpforge", "partition": "gpu", **cfg}
    return SlurmScheduler("hpc", SlurmConfig(**settings), home=tmp_path)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"rendered script differs from {path}"


HOSTILE = dict(
    name="x'; touch /tmp/PWNED-name #\ntouch /tmp/PWNED-newline",
    source="/models/my model's $(touch /tmp/PWNED-src).py",
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
    "hostile_values.sh": (dict(runtime="singularity", partition='gpu" --uid=0 "',
                               account="a b#c", work_dir="/scratch/my work"),
                          dict(gpu_type=GpuType.NVIDIA, gpu_count=1,
                               node_affinity=frozenset({"node-1.cluster"}), **HOSTILE)),
}


@pytest.mark.parametrize("golden", sorted(CASES))
def test_golden_scripts(tmp_path, golden):
    cfg, res = CASES[golden]
    plan = scheduler(tmp_path, **cfg).plan(submission(**res))
    assert plan.kind == "sbatch" and plan.native_id is None
    check_golden(golden, plan.request.script)
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
    assert any(ln.startswith("exec singularity run --nv --bind") for ln in lines)
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
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    for name in ("singularity", "apptainer", "snakegrinder"):
        _fake_runtime(bin_dir, name, record)
    sched = scheduler(tmp_path, work_dir=str(work), runtime=runtime,
                      snakegrinder=str(bin_dir / "snakegrinder"),
                      partition='gpu" --uid=0 "', account="a b#c")
    plan = sched.plan(submission(gpu_type=GpuType.NVIDIA, gpu_count=1, **HOSTILE))
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
        assert seen["argv"] == ["run", "--nv", "--bind", str(work),
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


@pytest.mark.parametrize("work_dir", ["relative/dir", "/a,b", "/a:b", "/a\\b", "/a\nb"])
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
    assert sched.calls == [] and not any(tmp_path.iterdir())
