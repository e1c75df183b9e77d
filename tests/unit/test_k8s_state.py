"""Job + pod objects (the API's JSON, shaped as v1.20 returns them) -> our states."""

from __future__ import annotations

import pytest

from warpforge_launch.jobs import GpuType, JobState
from warpforge_launch.schedulers import kubernetes_state as ks


def job(conditions=(), annotations=None, deleting=False, **status):
    meta = {"name": "warpforge-1", "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T10:00:09Z"
    return {"metadata": meta, "status": {"startTime": "2026-11-29T10:00:00Z",
                                         "conditions": list(conditions), **status}}


def cond(kind, reason=None, when="2026-11-29T10:00:07Z"):
    return {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": when}


def pod(phase="Running", created="2026-11-29T10:00:01Z", node="wf-node", deleting=False,
        conditions=(), waiting=None, terminated=None):
    state = {}
    if waiting:
        state["waiting"] = waiting
    if terminated:
        state["terminated"] = terminated
    meta = {"name": f"p-{created}", "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-29T10:00:09Z"
    return {"metadata": meta, "spec": {"nodeName": node},
            "status": {"phase": phase, "startTime": created, "conditions": list(conditions),
                       "containerStatuses": [{"state": state}] if state else []}}


def test_complete():
    seen = ks.job_state(job([cond("Complete")], completionTime="2026-11-29T10:00:05Z"),
                        [pod("Succeeded", terminated={"exitCode": 0})])
    assert seen.state is JobState.COMPLETED and seen.exit_code == 0
    assert (seen.ended - seen.started).total_seconds() == 5
    assert seen.node == "wf-node"


def test_failed_with_exit_code_and_the_payload_message():
    seen = ks.job_state(job([cond("Failed", "BackoffLimitExceeded")]), [pod(
        "Failed", terminated={"exitCode": 1, "reason": "Error",
                              "message": "tracing\nFAILED: aten.foo is not supported\n"})])
    assert seen.state is JobState.FAILED and seen.exit_code == 1
    assert seen.message == ("BackoffLimitExceeded: container exited with code 1 (Error): "
                            "FAILED: aten.foo is not supported")


def test_deadline_is_timeout_even_without_a_pod():
    seen = ks.job_state(job([cond("Failed", "DeadlineExceeded")]), [])
    assert seen.state is JobState.TIMEOUT


def test_our_cancel_annotation_or_a_deletion_is_cancelled():
    marked = job(annotations={ks.ANNOTATION_CANCELLED: "2026-11-29T10:00:08+00:00"})
    assert ks.job_state(marked, [pod()]).state is JobState.CANCELLED
    assert ks.job_state(job(deleting=True), [pod()]).state is JobState.CANCELLED


def test_unschedulable_pending_says_why():
    seen = ks.job_state(job(active=1), [pod("Pending", node=None, conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}])])
    assert seen.state is JobState.PENDING
    assert seen.message == "unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def test_image_pull_pending_says_why():
    seen = ks.job_state(job(active=1), [pod("Pending", waiting={
        "reason": "ErrImageNeverPull", "message": "Container image \"x\" is not present"})])
    assert seen.state is JobState.PENDING
    assert seen.message.startswith("image pull: ErrImageNeverPull: Container image")


def test_no_pod_yet_is_pending():
    assert ks.job_state(job(), []).state is JobState.PENDING


def test_running_uses_the_newest_pod():
    old = pod("Failed", created="2026-11-29T10:00:01Z", terminated={"exitCode": 2})
    new = pod("Running", created="2026-11-29T10:00:03Z")
    seen = ks.job_state(job(active=1), [new, old])
    assert seen.state is JobState.RUNNING and seen.pod == "p-2026-11-29T10:00:03Z"


@pytest.mark.parametrize("ended", [pod("Failed", terminated={"exitCode": 137}),
                                   pod("Succeeded", terminated={"exitCode": 0}),
                                   pod("Running", deleting=True)])
def test_a_pod_alone_never_decides_a_final_state(ended):
    """The Job controller may still call it a deadline (TIMEOUT): not final until it says."""
    assert ks.job_state(job(active=1), [ended]).state is JobState.RUNNING


@pytest.mark.parametrize("text,value", [("2", 2), ("1500m", 1.5), ("16318644Ki", 16318644 * 1024),
                                        ("1G", 1e9), ("bogus", 0), (None, 0)])
def test_quantity(text, value):
    assert ks.quantity(text) == value


def node(name, labels, allocatable, ready=True):
    return {"metadata": {"name": name, "labels": labels},
            "status": {"allocatable": allocatable, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}],
                "nodeInfo": {"kubeletVersion": "v1.20.2"}}}


NODES = [node("a", {"accelerator": "nvidia"}, {"cpu": "8", "memory": "32Gi",
                                                "nvidia.com/gpu": "2"}),
         node("b", {"accelerator": "amd"}, {"cpu": "4", "memory": "16Gi", "amd.com/gpu": "1"}),
         node("c", {}, {"cpu": "2", "memory": "4Gi"}, ready=False)]
GPU = {"NVIDIA": "nvidia.com/gpu", "AMD": "amd.com/gpu"}


def test_gpu_capacity_honours_the_selector():
    assert ks.gpu_capacity(NODES, "nvidia.com/gpu", {"accelerator": "nvidia"}) == {"a": 2}
    assert ks.gpu_capacity(NODES, "amd.com/gpu", {"accelerator": "nvidia"}) == {"a": 0}
    assert ks.gpu_capacity(NODES, "amd.com/gpu", {"accelerator": "intel"}) == {}


def test_cluster_info():
    info = ks.build_cluster_info("k8s", "v1.20.2", NODES, GPU)
    assert info.total_nodes == 3 and info.available_nodes == 2
    assert info.gpus_by_type == {"NVIDIA": 2, "AMD": 1}
    a, b, c = info.nodes
    assert (a.gpu_type, a.gpu_count, a.cpu_cores, a.memory_mb) == (GpuType.NVIDIA, 2, 8, 32768)
    assert b.gpu_type is GpuType.AMD and c.status == "NotReady" and c.gpu_type is GpuType.NONE
