"""The Ray request body, whole, as golden files: what `submit --dry-run` shows and sends.

Regenerate after an intended change with WF_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import (
    GpuType,
    JobDefinition,
    JobSubmission,
    JobType,
    ResourceRequirements,
)
from warpforge_launch.schedulers.ray import RayConfig, RayScheduler

GOLDEN = Path(__file__).parent / "golden" / "ray"
WHEN = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
CORRELATION = "1a2b3c4d-0000-4000-8000-00000000beef"
HOSTILE = 'it\'s a "model"; rm -rf / $(id) `id` $HOME\nline2 * ?'


def scheduler(**config) -> RayScheduler:
    cfg = RayConfig(
        dashboard_url="http://ray-head.lab:8265",
        snakegrinder="/opt/warpforge/bin/snakegrinder",
        output_root="/srv/warpforge/jobs",
        **config,
    )
    return RayScheduler("ray", cfg, home=Path("/nonexistent"))


def submission(resources=None, **definition) -> JobSubmission:
    fields = dict(
        name="mlp",
        source="/home/me/models/mlp.py",
        model_class="SimpleMLP",
        inputs=parse_inputs("[(1, 8)]"),
        resources=resources or ResourceRequirements(),
        timeout=timedelta(minutes=30),
    )
    fields.update(definition)
    return JobSubmission(JobDefinition(**fields), "alice", WHEN, CORRELATION)


CASES = {
    "cpu": lambda: submission(ResourceRequirements(memory_mb=2048, cpu_cores=2)),
    "nvidia": lambda: submission(ResourceRequirements(GpuType.NVIDIA, 2, 16384, 4)),
    "amd": lambda: submission(ResourceRequirements(GpuType.AMD, 1, 8192, 2)),
    "any": lambda: submission(ResourceRequirements(GpuType.ANY, 1)),
    "env": lambda: submission(
        environment={"WF_USER_A": "1", "WF_USER_MULTI": "two\nlines", "EMPTY": ""},
        timeout=timedelta(minutes=5),
    ),
    "hostile": lambda: submission(
        name=HOSTILE,
        source=f"/tmp/odd dir/{HOSTILE}.py",
        model_class="Net;reboot",
        inputs=parse_inputs("[(1, 128, 'i64'), (2, 3)]"),
        type=JobType.PYTORCH_NATIVE,
        environment={"WF_USER_X": HOSTILE},
        resources=ResourceRequirements(node_affinity=frozenset({"10.0.0.7"})),
    ),
    "stablehlo_only": lambda: submission(type=JobType.STABLEHLO_ONLY, model_class=None, seed=7),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_matches_golden(case):
    plan = scheduler().plan(CASES[case]())
    got = json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n"
    path = GOLDEN / f"{case}.json"
    if os.environ.get("WF_UPDATE_GOLDEN") == "1":
        path.write_text(got)
    assert path.is_file(), f"missing golden file {path} (run with WF_UPDATE_GOLDEN=1)"
    assert got == path.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_entrypoint_is_the_payload_argv_through_a_shell(case):
    plan = scheduler().plan(CASES[case]())
    body = plan.request
    words = shlex.split(body["entrypoint"])
    assert words[-len(plan.argv) :] == list(plan.argv)
    assert plan.argv[0] == "/opt/warpforge/bin/snakegrinder"
    assert words[: words.index(plan.argv[0])][-3:] == [
        "/usr/bin/timeout",
        "--kill-after=30",
        f"{int(CASES[case]().definition.timeout.total_seconds())}s",
    ]
    assert plan.argv[plan.argv.index("--out") + 1] == "/srv/warpforge/jobs/wf-1a2b3c4d"
    assert all(isinstance(v, str) for v in body["metadata"].values())
    assert "GPU" not in body.get("entrypoint_resources", {})


def test_gpu_jobs_ask_gpus_and_the_vendor_resource():
    nvidia = scheduler().plan(CASES["nvidia"]()).request
    assert nvidia["entrypoint_num_gpus"] == 2
    assert nvidia["entrypoint_resources"] == {"nvidia": 2}
    assert nvidia["entrypoint_memory"] == 16384 * 1024 * 1024
    assert nvidia["entrypoint_num_cpus"] == 4
    any_gpu = scheduler().plan(CASES["any"]()).request
    assert any_gpu["entrypoint_num_gpus"] == 1 and "entrypoint_resources" not in any_gpu
    cpu = scheduler().plan(CASES["cpu"]()).request
    assert cpu["entrypoint_num_gpus"] == 0 and "entrypoint_resources" not in cpu


def test_job_ids_and_env_reach_the_job():
    sched = scheduler()
    plan = sched.plan(CASES["env"]())
    assert plan.native_id == "wf-1a2b3c4d" and plan.job_id == "ray-wf-1a2b3c4d"
    env = plan.request["runtime_env"]["env_vars"]
    assert env["WARPFORGE_JOB_ID"] == "ray-wf-1a2b3c4d"
    assert env["WARPFORGE_CORRELATION_ID"] == CORRELATION
    assert env["WF_USER_MULTI"] == "two\nlines" and env["EMPTY"] == ""


def test_user_env_cannot_override_the_job_identity():
    sub = submission(environment={"WARPFORGE_JOB_ID": "forged"})
    env = scheduler().plan(sub).request["runtime_env"]["env_vars"]
    assert env["WARPFORGE_JOB_ID"] == "ray-wf-1a2b3c4d"


def test_env_values_with_dollar_bypass_ray_expansion():
    sub = submission(environment={"WF_USER_PLAIN": "x", "WF_USER_D": "$HOME ${X} $"})
    plan = scheduler().plan(sub)
    env = plan.request["runtime_env"]["env_vars"]
    assert env["WF_USER_PLAIN"] == "x" and "WF_USER_D" not in env
    words = shlex.split(plan.request["entrypoint"])
    assert words[:3] == ["/usr/bin/env", "--", "WF_USER_D=$HOME ${X} $"]


def test_timeout_wrapper_can_be_turned_off():
    plan = scheduler(timeout_command=None).plan(CASES["cpu"]())
    assert plan.argv[0] == "/opt/warpforge/bin/snakegrinder"
    assert shlex.split(plan.request["entrypoint"])[0] == "/opt/warpforge/bin/snakegrinder"


def test_vendor_without_a_configured_resource_is_refused():
    sched = scheduler(gpu_resources={"NVIDIA": "nvidia"})
    with pytest.raises(UsageError, match="no resource for AMD"):
        sched.plan(CASES["amd"]())
    assert GpuType.AMD not in sched.capabilities().supported_gpu_types


def test_more_than_one_node_in_affinity_is_refused():
    sub = submission(ResourceRequirements(node_affinity=frozenset({"a", "b"})))
    with pytest.raises(UsageError, match="one node"):
        scheduler().plan(sub)


@pytest.mark.parametrize(
    "bad",
    [
        {"dashboard_url": "localhost:8265"},
        {"connect_timeout": 0},
        {"snakegrinder": "bin/snakegrinder"},
        {"gpu_resources": {"INTEL": "xe"}},
        {"gpu_resources": {"NVIDIA": "GPU"}},
        {"auth_header": "Bearer abc"},
    ],
)
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        RayConfig(**bad)


def test_plan_is_pure_and_stable():
    sched = scheduler()
    assert sched.plan(CASES["nvidia"]()) == sched.plan(CASES["nvidia"]())
    assert sched._client is None  # no connection was opened
