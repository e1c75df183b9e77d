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
    sched = scheduler(inventory, server_dry_run=dry_run,
                      tolerations=({"key": "x", "operator": "Sometimes"},))
    sub = JobSubmission.new(definition(model))
    plan = sched.plan(sub)  # the offline schema takes any string as an operator
    with pytest.raises(UsageError, match="Unsupported value: \"Sometimes\""):
        sched.execute(plan)
    if dry_run:  # refused before anything was created
        assert not any("POST" in r and "dryRun" not in r for r in sched.requests)
    for kind in ("jobs", "secrets"):
        assert sched._list(kind, f"warpforge.io/job-id={plan.job_id}") == []


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


def test_submit_is_two_requests_and_the_secret_is_owned_by_the_job(inventory, model):
    sched = scheduler(inventory)
    try:
        job_id, _ = submit(sched, model)
        ns, name = sched.config.namespace, sched.native_id(job_id)
        assert [r.split("?")[0] for r in sched.requests] == [
            f"POST /apis/batch/v1/namespaces/{ns}/jobs", f"POST /api/v1/namespaces/{ns}/secrets"]
        job = json.loads(k8slab.kc("-n", ns, "get", "job", name, "-o", "json").stdout)
        secret = json.loads(k8slab.kc("-n", ns, "get", "secret", name, "-o", "json").stdout)
        owner, = secret["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", name,
                                                                 job["metadata"]["uid"])
        deadline = time.monotonic() + 90
        while (st := sched.status(job_id)).state not in (JobState.COMPLETED, JobState.FAILED):
            assert time.monotonic() < deadline, st
            time.sleep(0.5)
        assert st.state is JobState.COMPLETED, st
    finally:
        sched.close()


def test_a_pod_waits_for_a_late_secret_then_runs(inventory, model, out_root, monkeypatch):
    """The Job goes first: until its Secret exists the pod cannot mount the source nor read
    the secretKeyRef env, and waits (it neither fails nor runs without them)."""
    monkeypatch.setenv("USER_TOKEN", "late-secret-value")
    sched = scheduler(inventory)
    sub = JobSubmission.new(definition(model, secret_env=("USER_TOKEN",)))
    plan = sched.plan(sub)
    request, api = plan.request, sched._api()
    try:
        created = api.call("POST", sched._path("jobs"), "creating the Job", body=request.job)
        job_id = plan.job_id
        deadline = time.monotonic() + 60
        while True:  # the pod exists and is stuck on the missing Secret
            pods = sched._pods(job_id)
            if pods and pods[0].get("spec", {}).get("nodeName"):
                break
            assert time.monotonic() < deadline, pods
            time.sleep(0.5)
        time.sleep(4)
        pod = sched._pods(job_id)[0]
        assert pod["status"]["phase"] == "Pending", pod["status"]
        assert sched.status(job_id).state is JobState.PENDING
        source = Path(request.source_path).read_bytes()
        secret = request.secret_manifest(masked=False, values={"USER_TOKEN": "late-secret-value"},
                                         source=source)
        secret["metadata"]["ownerReferences"] = [{
            "apiVersion": "batch/v1", "kind": "Job", "name": request.name,
            "uid": created["metadata"]["uid"], "blockOwnerDeletion": True}]
        api.call("POST", sched._path("secrets"), "creating the Secret", body=secret)
        deadline = time.monotonic() + 150  # the kubelet retries the mount with a back-off
        while (st := sched.status(job_id)).state not in (JobState.COMPLETED, JobState.FAILED):
            assert time.monotonic() < deadline, st
            time.sleep(1)
        assert st.state is JobState.COMPLETED, st
        env = json.loads((out_root / request.name / "env.json").read_text())
        assert env["USER_TOKEN"] == "late-secret-value"
    finally:
        k8slab.kc("-n", sched.config.namespace, "delete", "job", request.name, "--wait=false",
                  check=False)
        sched.close()
