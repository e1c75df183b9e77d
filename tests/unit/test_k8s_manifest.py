"""The Kubernetes Job manifest, whole, as golden files: what `submit --dry-run` prints and what
is sent. Regenerate after an intended change with WF_UPDATE_GOLDEN=1 and review the diff; a
missing golden file fails. The model directory is a temp dir, written as <models>.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from warpforge_launch.errors import UsageError
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import GpuType, JobDefinition, JobSubmission, ResourceRequirements
from warpforge_launch.schedulers import kubernetes_manifest as km
from warpforge_launch.schedulers.kubernetes import KubernetesConfig, KubernetesScheduler

GOLDEN = Path(__file__).parent / "golden" / "k8s"
WHEN = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
CORRELATION = "1a2b3c4d-0000-4000-8000-00000000beef"
HOSTILE = 'it\'s a "model"; rm -rf / $(id) `id` $HOME ${X} $$ {{ x }} {% if %}\nline2 * ?'
HOSTILE_FILE = HOSTILE.replace("/", "_").replace("\n", " ") + ".py"
MODEL_TEXT = "class SimpleMLP:\n    pass\n"


@pytest.fixture()
def models(tmp_path) -> Path:
    for name in ("mlp.py", HOSTILE_FILE):
        (tmp_path / name).write_text(MODEL_TEXT)
    return tmp_path


def scheduler(**config) -> KubernetesScheduler:
    settings = dict(registry="registry.lab:5000", image_version="0.1.0",
                    output_claim="warpforge-out", local_output_root="/mnt/warpforge-out")
    settings.update(config)
    return KubernetesScheduler("k8s", KubernetesConfig(**settings), home=Path("/nonexistent"))


def submission(models: Path, resources=None, **definition) -> JobSubmission:
    fields = dict(name="mlp", source=str(models / "mlp.py"), model_class="SimpleMLP",
                  inputs=parse_inputs("[(1, 8)]"), resources=resources or ResourceRequirements())
    fields.update(definition)
    return JobSubmission(JobDefinition(**fields), "alice", WHEN, CORRELATION)


CASES = {
    "cpu": lambda m: submission(m, timeout=timedelta(minutes=5)),
    "nvidia": lambda m: submission(m, ResourceRequirements(GpuType.NVIDIA, 1, 16384, 4),
                                   environment={"CUDA_LAUNCH_BLOCKING": "1"}),
    "amd": lambda m: submission(m, ResourceRequirements(GpuType.AMD, 2, 8192, 2,
                                                        node_affinity=frozenset({"gpu-b"}))),
    "hostile": lambda m: submission(
        m, name=HOSTILE, source=str(m / HOSTILE_FILE), model_class="Model$(id)",
        environment={"HOSTILE": HOSTILE, "DOLLAR_PAREN": "$(WARPFORGE_JOB_ID)"},
        secret_env=("API_TOKEN",)),
}


def render(plan, models: Path) -> str:
    return plan.render().replace(str(models), "<models>")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("WF_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path} (run with WF_UPDATE_GOLDEN=1)"
    assert text == path.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifest_matches_golden(case, models):
    check_golden(case, render(scheduler().plan(CASES[case](models)), models))


def test_priority_class_from_priority(models):
    sched = scheduler(priority_classes={"80": "high", "0": "low"})
    urgent = submission(models, ResourceRequirements(priority=90))
    plan = sched.plan(urgent)
    assert plan.request.job["spec"]["template"]["spec"]["priorityClassName"] == "high"
    plan = sched.plan(submission(models, ResourceRequirements(priority=50)))
    assert plan.request.job["spec"]["template"]["spec"]["priorityClassName"] == "low"


def test_hostile_values_are_data_and_reach_the_pod_verbatim(models):
    plan = scheduler().plan(CASES["hostile"](models))
    job = plan.request.job
    container = job["spec"]["template"]["spec"]["containers"][0]
    # Kubernetes reads $$ as $: unescaped, the command is exactly the payload argv
    assert [km.unescape(a) for a in container["command"]] == list(plan.argv)
    assert f"/warpforge/src/{HOSTILE_FILE}" in plan.argv
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert km.unescape(env["HOSTILE"]) == HOSTILE
    assert km.unescape(env["DOLLAR_PAREN"]) == "$(WARPFORGE_JOB_ID)"
    assert job["metadata"]["annotations"]["warpforge.io/name"] == HOSTILE
    items = job["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"]
    assert items == [{"key": "source", "path": HOSTILE_FILE}]
    # the secret's value is nowhere in the plan; its name is
    assert {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": job["metadata"]["name"], "key": "env-0"}}} in container["env"]


def test_yaml_special_characters_survive(models):
    odd = "tab\there del\x7f nel\x85 ls\u2028 bom\ufeff emoji \U0001f600 quote\" back\\"
    plan = scheduler().plan(submission(models, environment={"ODD": odd}))
    env = {e["name"]: e.get("value") for e in
           plan.request.job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert km.unescape(env["ODD"]) == odd
    assert yaml.safe_load_all(plan.render())  # the dry-run text parses too


def test_secret_values_only_in_the_sent_secret(models, monkeypatch):
    plan = scheduler().plan(CASES["hostile"](models))
    monkeypatch.setenv("API_TOKEN", "s3cr3t-value")
    assert "s3cr3t" not in plan.render() and "s3cr3t" not in str(plan.to_dict())
    sent = plan.request.secret_manifest(masked=False, values={"API_TOKEN": "s3cr3t-value"},
                                        source=MODEL_TEXT.encode())
    assert base64.b64decode(sent["data"]["env-0"]) == b"s3cr3t-value"
    assert base64.b64decode(sent["data"]["source"]) == MODEL_TEXT.encode()


@pytest.mark.parametrize("env_name", ["1ABC", "A B", "A;B", "Ä"])
def test_env_names_kubernetes_refuses_are_bad_input(models, env_name):
    with pytest.raises(UsageError, match="not allowed by Kubernetes"):
        scheduler().plan(submission(models, environment={env_name: "x"}))


def test_queue_is_refused(models):
    with pytest.raises(UsageError, match="no queues"):
        scheduler().plan(submission(models, ResourceRequirements(queue="gpu")))


def test_missing_output_volume_is_refused(models):
    sched = scheduler(output_claim=None, local_output_root=None)
    with pytest.raises(UsageError, match="no output volume"):
        sched.plan(submission(models))


def test_instance_name_too_long_for_a_label(models):
    sched = KubernetesScheduler("k" * 50, KubernetesConfig(output_claim="o"), home=Path("/x"))
    with pytest.raises(UsageError, match="not a valid label value"):
        sched.plan(submission(models))


def test_unreadable_source(models):
    with pytest.raises(UsageError, match="cannot be read"):
        scheduler().plan(submission(models, source=str(models / "missing.py")))
    with pytest.raises(UsageError, match=f"^model source {models} is a directory, not a file$"):
        scheduler().plan(submission(models, source=str(models)))


def test_offline_schema_check_catches_a_bad_manifest(models):
    plan = scheduler().plan(submission(models))
    job = plan.request.job
    job["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(UsageError, match="invalid"):
        km.validate_offline(job, "1.25")


def test_a_shape_the_schema_passed_is_not_checked_again(models, tmp_path, monkeypatch):
    import kubernetes_validate

    calls = []
    real = kubernetes_validate.validate
    monkeypatch.setattr(kubernetes_validate, "validate",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    first = scheduler().plan(submission(models)).request.job
    calls.clear()
    km.validate_offline(first, "1.25", tmp_path)
    assert len(calls) == 1  # a new shape: checked, then remembered
    second = scheduler().plan(submission(
        models, name="other $(x) 'y'", model_class="Other")).request.job
    km.validate_offline(second, "1.25", tmp_path)
    assert len(calls) == 1  # other values of the same shape (and types): known valid
    second["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(UsageError, match="invalid"):
        km.validate_offline(second, "1.25", tmp_path)  # a new key: checked, refused
    second["spec"]["template"]["spec"]["containers"][0].pop("resourcez")
    second["spec"]["backoffLimit"] = "0"
    with pytest.raises(UsageError, match="invalid"):
        km.validate_offline(second, "1.25", tmp_path)  # a new type: checked, refused
    assert len(calls) == 3
    assert km._types_only("1.25")  # what makes the shape enough, checked on the schema


@pytest.mark.parametrize("bad", [
    dict(connect_timeout=0), dict(snakegrinder="bin/sg"), dict(node_selectors={"INTEL": {}}),
    dict(priority_classes={"high": "x"}), dict(output_claim="a", output_host_path="/b"),
])
def test_config_errors(bad):
    with pytest.raises(ValueError):
        KubernetesConfig(**bad)


def test_image_defaults_per_vendor():
    cfg = KubernetesConfig(registry="reg:5000/", image_version="1.2", image_amd="other/amd:x")
    assert cfg.image("NVIDIA") == "reg:5000/warpforge:nvidia-1.2"
    assert cfg.image("AMD") == "other/amd:x"
    assert cfg.image("CPU") == "reg:5000/warpforge:cpu-1.2"


def test_inventory_validates_the_kubernetes_section(tmp_path):
    from warpforge_launch import inventory

    path = tmp_path / "inventory.yaml"
    path.write_text("schedulers:\n  k8s:\n    type: kubernetes\n    output_claim: out\n"
                    "    namespacee: typo\n")
    with pytest.raises(UsageError, match="schedulers.k8s.namespacee"):
        inventory.load(str(path))
    path.write_text("schedulers:\n  k8s:\n    type: kubernetes\n    request_timeout: -1\n")
    with pytest.raises(UsageError, match="schedulers.k8s: .*request_timeout must be a positive"):
        inventory.load(str(path))


def test_dry_run_needs_no_cluster_and_no_client_library(tmp_path, models):
    import subprocess
    import sys

    inv = tmp_path / "inventory.yaml"
    inv.write_text("default_scheduler: k8s\nschedulers:\n  k8s:\n    type: kubernetes\n"
                   "    kubeconfig: /nonexistent\n    output_claim: out\n")
    code = ("import sys\nfrom warpforge_launch.cli import main\n"
            f"rc = main(['submit', '--inventory', {str(inv)!r}, '--source', "
            f"{str(models / 'mlp.py')!r}, '--class', 'SimpleMLP', '--inputs', '[(1, 8)]', "
            "'--gpu', 'NVIDIA', '--dry-run'])\n"
            "assert 'lightkube' not in sys.modules and 'httpx2' not in sys.modules\n"
            "assert 'warpforge_launch.schedulers.kubernetes_client' not in sys.modules\n"
            "sys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(GOLDEN.parents[3])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# dry run: k8s-job on scheduler 'k8s'")
    assert "nvidia.com/gpu: '1'" in done.stdout and "kind: Secret" in done.stdout
