"""The scheduler in-process against the real cluster: request counts, reconcile, the
apiserver's own validation, secret env values."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.testlab import k8s as k8slab
from warpforge_launch.errors import UsageError
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import (
    JobDefinition,
    JobQuery,
    JobState,
    JobSubmission,
    ResourceRequirements,
)
from warpforge_launch.launcher import Launcher
from warpforge_launch.schedulers.kubernetes import KubernetesConfig, KubernetesScheduler
from warpforge_launch.store import JobStore


def scheduler(inventory: Path, name="k8s", **overrides) -> KubernetesScheduler:
    settings = dict(yaml.safe_load(inventory.read_text())["schedulers"]["k8s"])
    settings.pop("type")
    settings.update(overrides)
    return KubernetesScheduler(name, KubernetesConfig(**settings), home=Path("/nonexistent"))


def definition(model: Path, **fields) -> JobDefinition:
    base = dict(name="mlp", source=str(model), model_class="SimpleMLP",
                inputs=parse_inputs("[(1, 8)]"), resources=ResourceRequirements(memory_mb=64))
    base.update(fields)
    return JobDefinition(**base)


def submit(sched, model, **fields) -> tuple[str, JobSubmission]:
    sub = JobSubmission.new(definition(model, **fields))
    native = sched.execute(sched.plan(sub)).native_id
    return sched.job_id(native), sub


def delete_instance_jobs(sched) -> None:
    k8slab.kc("-n", sched.config.namespace, "delete", "jobs", "-l",
              f"warpforge.io/instance={sched.name}", "--wait=false", check=False)


def test_fifty_jobs_refresh_in_one_request(inventory, model):
    sched = scheduler(inventory, name=f"bulk{uuid.uuid4().hex[:6]}")
    try:
        ids = [submit(sched, model, environment={"WF_FAKE_SLEEP": "300"})[0]
               for _ in range(50)]
        deadline = time.monotonic() + 90
        while True:  # the Job controller creates the 50 pods (most stay Pending: no CPU left)
            sched.requests.clear()
            found = sched.statuses(ids)
            if len(sched.requests) == 1 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(found) == 50
        assert {s.state for s in found.values()} <= {JobState.PENDING, JobState.RUNNING}
        assert len(sched.requests) == 1
        assert sched.requests[0].startswith(
            f"GET /api/v1/namespaces/{sched.config.namespace}/pods?labelSelector=")
        sched.requests.clear()
        listed = sched.list(JobQuery(limit=None))
        assert len(listed) == 50 and len(sched.requests) == 2  # one Job list, one pod list
    finally:
        delete_instance_jobs(sched)
        sched.close()


def test_reconcile_finds_an_unrecorded_submit_by_correlation_id(inventory, model):
    sched = scheduler(inventory)
    job_id, sub = submit(sched, model)
    sched.requests.clear()
    found = sched.reconcile([sub.correlation_id, str(uuid.uuid4())])
    assert found == {sub.correlation_id: sched.native_id(job_id)}
    assert len(sched.requests) == 1


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_apiserver_refuses_a_bad_toleration_and_nothing_is_left(inventory, model, dry_run):
    from lightkube.resources.core_v1 import Secret

    sched = scheduler(inventory, server_dry_run=dry_run,
                      tolerations=({"key": "x", "operator": "Sometimes"},))
    sub = JobSubmission.new(definition(model))
    plan = sched.plan(sub)  # the offline schema takes any string as an operator
    with pytest.raises(UsageError, match="Unsupported value: \"Sometimes\""):
        sched.execute(plan)
    if dry_run:  # refused before anything was created
        assert not any("POST" in r and "dryRun" not in r for r in sched.requests)
    secrets = list(sched._lk().list(Secret, namespace=sched.config.namespace,
                                    labels={"warpforge.io/job-id": plan.job_id}))
    assert secrets == []


def test_secret_env_reaches_the_pod_and_nothing_else(inventory, model, out_root, monkeypatch):
    monkeypatch.setenv("USER_TOKEN", "s3cr3t-token-value")
    with Launcher(str(inventory)) as launcher:
        job_id = launcher.submit(definition(model, secret_env=("USER_TOKEN",)), "k8s")
        status = launcher.wait(job_id, timeout=90)
        assert status.state is JobState.COMPLETED, status
    env = json.loads((out_root / job_id.removeprefix("k8s-") / "env.json").read_text())
    assert env["USER_TOKEN"] == "s3cr3t-token-value"
    store = JobStore()
    try:
        record = store.get(job_id)
        assert "s3cr3t" not in json.dumps([record.plan, record.submission, record.config])
    finally:
        store.close()
    assert "s3cr3t" not in (out_root / job_id.removeprefix("k8s-") / "argv.json").read_text()


def test_status_of_a_pending_job_is_one_request(inventory, model):
    sched = scheduler(inventory, allow_pending=True)
    job_id, _ = submit(sched, model, resources=ResourceRequirements(
        gpu_type="NVIDIA", gpu_count=5, memory_mb=64), timeout=timedelta(minutes=2))
    try:
        deadline = time.monotonic() + 30
        while True:
            sched.requests.clear()
            st = sched.status(job_id)
            if "unschedulable" in st.message or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert st.state is JobState.PENDING and "Insufficient nvidia.com/gpu" in st.message
        assert len(sched.requests) == 1
        assert sched.cancel(job_id) is True
        assert sched.status(job_id).state is JobState.CANCELLED
    finally:
        sched.close()
