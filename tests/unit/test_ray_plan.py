"""The Ray request body, whole, as golden files: what `submit --dry-run` shows and sends.

Regenerate after an intended change with WF_UPDATE_GOLDEN=1 and review the diff; that rewrites
existing files only. A missing golden file always fails: add a new case by creating its file
deliberately (an empty one) and regenerating. The model directory is a temp dir, written as
<models> in the golden files.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import zipfile
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
from warpforge_launch.schedulers import ray_package
from warpforge_launch.schedulers.ray import RayConfig, RayScheduler

GOLDEN = Path(__file__).parent / "golden" / "ray"
WHEN = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
CORRELATION = "1a2b3c4d-0000-4000-8000-00000000beef"
HOSTILE = 'it\'s a "model"; rm -rf / $(id) `id` $HOME\nline2 * ?'
HOSTILE_FILE = HOSTILE.replace("/", "_") + ".py"
MODEL_TEXT = "import torch\n\n\nclass SimpleMLP(torch.nn.Module):\n    pass\n"


@pytest.fixture()
def models(tmp_path) -> Path:
    for name in ("mlp.py", HOSTILE_FILE):
        (tmp_path / name).write_text(MODEL_TEXT)
    return tmp_path


def scheduler(**config) -> RayScheduler:
    cfg = RayConfig(
        dashboard_url="http://ray-head.lab:8265",
        snakegrinder="/opt/warpforge/bin/snakegrinder",
        output_root="/srv/warpforge/jobs",
        **config,
    )
    return RayScheduler("ray", cfg, home=Path("/nonexistent"))


def submission(models: Path, resources=None, **definition) -> JobSubmission:
    fields = dict(
        name="mlp",
        source=str(models / "mlp.py"),
        model_class="SimpleMLP",
        inputs=parse_inputs("[(1, 8)]"),
        resources=resources or ResourceRequirements(),
        timeout=timedelta(minutes=30),
    )
    fields.update(definition)
    return JobSubmission(JobDefinition(**fields), "alice", WHEN, CORRELATION)


CASES = {
    "cpu": lambda m: submission(m, ResourceRequirements(memory_mb=2048, cpu_cores=2)),
    "nvidia": lambda m: submission(m, ResourceRequirements(GpuType.NVIDIA, 2, 16384, 4)),
    "amd": lambda m: submission(m, ResourceRequirements(GpuType.AMD, 1, 8192, 2)),
    "any": lambda m: submission(m, ResourceRequirements(GpuType.ANY, 1)),
    "env": lambda m: submission(
        m,
        environment={"WF_USER_A": "1", "WF_USER_MULTI": "two\nlines", "EMPTY": ""},
        timeout=timedelta(minutes=5),
    ),
    "hostile": lambda m: submission(
        m,
        name=HOSTILE,
        source=str(m / HOSTILE_FILE),
        model_class="Net;reboot",
        inputs=parse_inputs("[(1, 128, 'i64'), (2, 3)]"),
        type=JobType.PYTORCH_NATIVE,
        environment={"WF_USER_X": HOSTILE},
        resources=ResourceRequirements(node_affinity=frozenset({"10.0.0.7"})),
    ),
    "stablehlo_only": lambda m: submission(
        m, type=JobType.STABLEHLO_ONLY, model_class=None, seed=7
    ),
    "secret": lambda m: submission(
        m, environment={"WF_USER_PLAIN": "visible"}, secret_env=("WF_USER_TOKEN", "HF_TOKEN")
    ),
}
# a shared mount instead of an upload: --source is the client's path, verbatim
SHARED = {
    "shared_hostile": lambda m: submission(
        m, source=f"/srv/odd dir/{HOSTILE}.py", model_class="Net;reboot"
    ),
}


def render(plan, models: Path) -> str:
    text = json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n"
    return text.replace(json.dumps(str(models))[1:-1], "<models>")


def check_golden(name: str, text: str, folder: Path = GOLDEN) -> None:
    path = folder / f"{name}.json"
    assert path.is_file(), f"missing golden file {path}: create it, run with WF_UPDATE_GOLDEN=1"
    if os.environ.get("WF_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_a_missing_golden_file_fails_and_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WF_UPDATE_GOLDEN", "1")
    with pytest.raises(AssertionError, match="missing golden file"):
        check_golden("new_case", "{}", folder=tmp_path)
    assert not (tmp_path / "new_case.json").exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_matches_golden(case, models):
    check_golden(case, render(scheduler().plan(CASES[case](models)), models))


@pytest.mark.parametrize("case", sorted(SHARED))
def test_plan_without_upload_matches_golden(case, models):
    plan = scheduler(upload_source=False).plan(SHARED[case](models))
    assert "working_dir" not in plan.request.body["runtime_env"]
    assert plan.request.package is None
    assert plan.argv[plan.argv.index("--source") + 1] == f"/srv/odd dir/{HOSTILE}.py"
    check_golden(case, render(plan, models))


@pytest.mark.parametrize("case", sorted(CASES))
def test_entrypoint_is_the_payload_argv_through_a_shell(case, models):
    sub = CASES[case](models)
    plan = scheduler().plan(sub)
    body = plan.request.body
    words = shlex.split(body["entrypoint"])
    assert words[-len(plan.argv) :] == list(plan.argv)
    assert plan.argv[0] == "/opt/warpforge/bin/snakegrinder"
    seconds = int(sub.definition.timeout.total_seconds())
    prefix = words[: words.index(plan.argv[0])]
    assert prefix[-3:] == ["/usr/bin/timeout", "--kill-after=30", f"{seconds}s"]
    assert plan.argv[plan.argv.index("--out") + 1] == "/srv/warpforge/jobs/wf-1a2b3c4d"
    assert all(isinstance(v, str) for v in body["metadata"].values())
    assert "GPU" not in body.get("entrypoint_resources", {})


def test_gpu_jobs_ask_gpus_and_the_vendor_resource(models):
    nvidia = scheduler().plan(CASES["nvidia"](models)).request.body
    assert nvidia["entrypoint_num_gpus"] == 2
    assert nvidia["entrypoint_resources"] == {"nvidia": 2}
    assert nvidia["entrypoint_memory"] == 16384 * 1024 * 1024
    assert nvidia["entrypoint_num_cpus"] == 4
    any_gpu = scheduler().plan(CASES["any"](models)).request.body
    assert any_gpu["entrypoint_num_gpus"] == 1 and "entrypoint_resources" not in any_gpu
    cpu = scheduler().plan(CASES["cpu"](models)).request.body
    assert cpu["entrypoint_num_gpus"] == 0 and "entrypoint_resources" not in cpu


def test_job_ids_and_env_reach_the_job(models):
    plan = scheduler().plan(CASES["env"](models))
    assert plan.native_id == "wf-1a2b3c4d" and plan.job_id == "ray-wf-1a2b3c4d"
    env = plan.request.body["runtime_env"]["env_vars"]
    assert env["WARPFORGE_JOB_ID"] == "ray-wf-1a2b3c4d"
    assert env["WARPFORGE_CORRELATION_ID"] == CORRELATION
    assert env["WF_USER_MULTI"] == "two\nlines" and env["EMPTY"] == ""


def test_user_env_cannot_override_the_job_identity(models):
    sub = submission(models, environment={"WARPFORGE_JOB_ID": "forged"})
    env = scheduler().plan(sub).request.body["runtime_env"]["env_vars"]
    assert env["WARPFORGE_JOB_ID"] == "ray-wf-1a2b3c4d"


def test_env_values_with_dollar_bypass_ray_expansion(models):
    sub = submission(models, environment={"WF_USER_PLAIN": "x", "WF_USER_D": "$HOME ${X} $"})
    plan = scheduler().plan(sub)
    env = plan.request.body["runtime_env"]["env_vars"]
    assert env["WF_USER_PLAIN"] == "x" and "WF_USER_D" not in env
    words = shlex.split(plan.request.body["entrypoint"])
    assert words[:3] == ["/usr/bin/env", "--", "WF_USER_D=$HOME ${X} $"]


def test_timeout_wrapper_can_be_turned_off(models):
    plan = scheduler(timeout_command=None).plan(CASES["cpu"](models))
    assert shlex.split(plan.request.body["entrypoint"])[0] == "/opt/warpforge/bin/snakegrinder"


def test_vendor_without_a_configured_resource_is_refused(models):
    sched = scheduler(gpu_resources={"NVIDIA": "nvidia"})
    with pytest.raises(UsageError, match="no resource for AMD"):
        sched.plan(CASES["amd"](models))
    assert GpuType.AMD not in sched.capabilities().supported_gpu_types


def test_more_than_one_node_in_affinity_is_refused(models):
    sub = submission(models, ResourceRequirements(node_affinity=frozenset({"a", "b"})))
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
        {"connect_timeout": float("nan")},
        {"request_timeout": float("inf")},
        {"dashboard_url": "http://ray-head:70000"},
        {"dashboard_url": "http://ray-head:0"},
    ],
)
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        RayConfig(**bad)


def test_plan_is_pure_and_stable(models):
    sched = scheduler()
    assert sched.plan(CASES["nvidia"](models)) == sched.plan(CASES["nvidia"](models))
    assert sched._client is None  # no connection was opened


def test_source_ships_as_a_package_named_by_its_content(models):
    plan = scheduler().plan(CASES["cpu"](models))
    uri = plan.request.body["runtime_env"]["working_dir"]
    assert uri.startswith("gcs://_ray_pkg_") and uri.endswith(".zip")
    assert plan.argv[plan.argv.index("--source") + 1] == "mlp.py"  # the job's cwd holds it
    assert plan.request.package.uri == uri and plan.request.package.file_name == "mlp.py"
    # the client's own path is not sent to the cluster, nor read back from it
    assert str(models) not in json.dumps(plan.request.body)
    (models / "mlp.py").write_text(MODEL_TEXT + "# changed\n")
    changed = scheduler().plan(CASES["cpu"](models)).request.body["runtime_env"]["working_dir"]
    assert changed != uri


def test_package_zip_is_reproducible_and_holds_the_file(models):
    source = str(models / HOSTILE_FILE)
    data = ray_package.build(source).data
    assert data == ray_package.build(source).data
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == [HOSTILE_FILE]
        assert archive.read(HOSTILE_FILE).decode() == MODEL_TEXT


def test_missing_source_is_bad_input_before_anything_is_sent(models):
    sub = submission(models, source=str(models / "nope.py"))
    with pytest.raises(UsageError, match="nope.py cannot be read"):
        scheduler().plan(sub)
    with pytest.raises(UsageError, match=f"^model source {models} is a directory, not a file$"):
        scheduler().plan(submission(models, source=str(models)))
    plan = scheduler(upload_source=False).plan(sub)
    assert plan.argv[plan.argv.index("--source") + 1] == str(models / "nope.py")


def test_a_queue_is_refused_not_ignored(models):
    sub = submission(models, ResourceRequirements(queue="gpu"))
    with pytest.raises(UsageError, match="no queues"):
        scheduler().plan(sub)


def test_outputs_through_the_shared_root_or_their_location(tmp_path):
    shared = tmp_path / "seen-here"
    (shared / "wf-1").mkdir(parents=True)
    (shared / "wf-1" / "model.mlir").write_text("module @main {}\n")
    (shared / "wf-1" / "manifest.json").write_text("{}")
    sched = scheduler(local_output_root=str(shared))
    ok, files, mlir, error = sched._outputs("wf-1", "ray-worker-5", True, None)
    assert [Path(f).name for f in files] == ["manifest.json", "model.mlir"]
    assert ok and mlir == "module @main {}\n" and error is None
    assert sched._outputs("wf-2", "ray-worker-5", False, "FAILED") == (False, (), None, "FAILED")
    remote = scheduler(local_output_root=str(tmp_path / "not-mounted"))
    assert remote._outputs("wf-1", "ray-worker-5", True, None) == (
        True, ("ray-worker-5:/srv/warpforge/jobs/wf-1/",), None, None)
    assert remote._outputs("wf-1", "ray-worker-5", False, "x") == (False, (), None, "x")


def test_a_symlink_out_of_the_job_dir_fails_the_result(tmp_path):
    """A model.mlir that is a symlink out of the job's directory is refused and named: the
    result is a failure (exit 1), as Slurm's is."""
    shared = tmp_path / "seen-here"
    (shared / "wf-1").mkdir(parents=True)
    (shared / "wf-1" / "model.mlir").symlink_to("/etc/hostname")
    ok, files, mlir, error = scheduler(local_output_root=str(shared))._outputs(
        "wf-1", "ray-worker-5", True, None)
    assert not ok and files == () and mlir is None
    assert error == (f"refused {shared}/wf-1/model.mlir: a symlink or not a regular file "
                     "(never followed)")


def test_auth_header_token_comes_from_the_environment(monkeypatch):
    sched = scheduler(auth_header="Authorization: Bearer ${WF_TEST_RAY_TOKEN}")
    monkeypatch.delenv("WF_TEST_RAY_TOKEN", raising=False)
    with pytest.raises(UsageError, match="WF_TEST_RAY_TOKEN"):
        sched.client  # noqa: B018 (the property builds the client)
    monkeypatch.setenv("WF_TEST_RAY_TOKEN", "s3cret")
    assert sched.client.headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in json.dumps(sched.config.__dict__)
    sched.close()


SECRET_VALUE = "tok-'\"`;|&\nline2"


def test_secret_env_is_masked_in_the_plan_and_sent_in_runtime_env(models, monkeypatch):
    monkeypatch.setenv("WF_USER_TOKEN", SECRET_VALUE)
    monkeypatch.setenv("HF_TOKEN", "hf-value")
    plan = scheduler().plan(CASES["secret"](models))
    env = plan.request.body["runtime_env"]["env_vars"]
    assert env["WF_USER_TOKEN"] == env["HF_TOKEN"] == "***"
    assert '"WF_USER_TOKEN": "***"' in plan.render()
    for shown in (plan.render(), json.dumps(plan.to_dict())):
        assert SECRET_VALUE not in shown and "hf-value" not in shown
    assert plan.request.to_dict()["secret_env"] == ["WF_USER_TOKEN", "HF_TOKEN"]
    from warpforge_launch import secrets

    wire = plan.request.wire_body(secrets.resolve(plan.request.secret_env))
    assert wire["runtime_env"]["env_vars"]["WF_USER_TOKEN"] == SECRET_VALUE
    assert wire["runtime_env"]["env_vars"]["HF_TOKEN"] == "hf-value"
    assert wire["runtime_env"]["env_vars"]["WF_USER_PLAIN"] == "visible"
    assert SECRET_VALUE not in wire["entrypoint"] and "hf-value" not in wire["entrypoint"]
    # the plan itself is untouched: what the store keeps stays masked
    assert plan.request.body["runtime_env"]["env_vars"]["WF_USER_TOKEN"] == "***"


def test_a_secret_holding_a_dollar_is_refused_not_mangled(models):
    plan = scheduler().plan(submission(models, secret_env=("WF_USER_TOKEN",)))
    with pytest.raises(UsageError, match=r"WF_USER_TOKEN.*expands '\$'") as info:
        plan.request.wire_body({"WF_USER_TOKEN": "pa$$word"})
    assert "pa$$word" not in str(info.value) and info.value.exit_code == 2


def test_a_secret_cannot_replace_the_job_identity(models):
    with pytest.raises(UsageError, match="WARPFORGE_JOB_ID"):
        scheduler().plan(submission(models, secret_env=("WARPFORGE_JOB_ID",)))


@pytest.mark.parametrize("bad", ["ray-.", "ray-..", "ray-a/b", "ray-../api", "ray-%2e%2e",
                                 "ray-wf 1", "ray-\n", "ray-" + "x" * 200])
def test_job_ids_that_are_not_one_safe_segment_are_bad_input(bad):
    with pytest.raises(UsageError, match="not a Ray job id") as info:
        scheduler().native_id(bad)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("good", ["ray-wf-1a2b3c4d", "ray-raysubmit_XyZ09", "ray-02000000",
                                  "ray-a.b:c"])
def test_plain_job_ids_pass(good):
    assert scheduler().native_id(good) == good.removeprefix("ray-")


def test_auth_header_value_with_a_line_break_is_refused(monkeypatch):
    sched = scheduler(auth_header="Authorization: Bearer ${WF_TEST_RAY_TOKEN}")
    monkeypatch.setenv("WF_TEST_RAY_TOKEN", "abc\r\nX-Injected: 1")
    with pytest.raises(UsageError, match="line break") as info:
        sched.client  # noqa: B018 (the property builds the client)
    assert "abc" not in str(info.value)
