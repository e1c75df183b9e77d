"""How Ray's answers become what users see: states, messages, logs, errors, cluster figures."""

from __future__ import annotations

import pytest

from warpforge_launch.jobs import GpuType, JobState
from warpforge_launch.schedulers.ray_parse import (
    build_cluster_info,
    camel,
    ray_state,
    reduce_ray_error,
    strip_ray_header,
)

DUPLICATE = """Traceback (most recent call last):
  File "/ray/dashboard/modules/job/job_manager.py", line 553, in submit_job
    raise ValueError(
ValueError: Job with submission_id wf-1 already exists. Please use a different submission_id.
.
"""


@pytest.mark.parametrize(
    "ray_status,expected",
    [
        ("PENDING", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("SUCCEEDED", JobState.COMPLETED),
        ("FAILED", JobState.FAILED),
        ("STOPPED", JobState.CANCELLED),
    ],
)
def test_every_ray_status_maps(ray_status, expected):
    assert ray_state({"status": ray_status})[0] is expected


def test_failed_message_keeps_the_exit_code_not_the_copied_logs():
    job = {
        "status": "FAILED",
        "driver_exit_code": 3,
        "message": "Job entrypoint command failed with exit code 3, last available logs "
        "(truncated to 20,000 chars):\nsecret log line\n",
    }
    state, message = ray_state(job)
    assert state is JobState.FAILED
    assert message == "Job entrypoint command failed with exit code 3"


def test_exit_124_of_the_timeout_wrapper_is_timeout():
    assert ray_state({"status": "FAILED", "driver_exit_code": 124})[0] is JobState.TIMEOUT


def test_start_timeout_says_the_job_never_started():
    state, message = ray_state(
        {"status": "FAILED", "error_type": "JOB_SUPERVISOR_ACTOR_START_TIMEOUT", "message": "x"}
    )
    assert state is JobState.FAILED
    assert "never started" in message


def test_unknown_ray_status_is_not_a_terminal_guess():
    state, message = ray_state({"status": "EXPLODED"})
    assert not state.terminal
    assert "EXPLODED" in message


def test_traceback_reduced_to_the_exception_line():
    assert reduce_ray_error(DUPLICATE) == (
        "ValueError: Job with submission_id wf-1 already exists. Please use a different "
        "submission_id"
    )
    assert reduce_ray_error("Job nope does not exist") == "Job nope does not exist"
    assert reduce_ray_error("") == "(empty answer)"


def test_ray_header_lines_are_removed_even_around_a_multiline_entrypoint():
    entrypoint = "/opt/sg --inputs 'a\nb'"
    raw = (
        "2026-11-28 12:35:33,313\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
        "first\n"
        f"Running entrypoint for job wf-1: {entrypoint}\n"
        "second\n"
        "2026-11-28 12:35:34,000\tWARNING job_supervisor.py:12 -- something\n"
    )
    assert strip_ray_header(raw, "wf-1", entrypoint) == "first\nsecond\n"


def test_job_output_that_looks_like_ray_is_kept_when_not_ray_shaped():
    raw = "INFO job_manager.py:1 -- not at line start with a timestamp\n"
    assert strip_ray_header(raw, "wf-1", "x") == raw


def test_camel_matches_ray_cluster_status_keys():
    assert camel("object_store_memory") == "objectStoreMemory"
    assert camel("node:__internal_head__") == "node:InternalHead"
    assert camel("nvidia") == "nvidia"
    assert camel("nvidia_gpu") == "nvidiaGpu"


def test_cluster_info_counts_gpus_by_vendor_and_usage():
    nodes = [
        {
            "node_id": "n1",
            "node_name": "10.9.0.1",
            "state": "ALIVE",
            "resources_total": {"CPU": 8.0, "GPU": 2.0, "nvidia_gpu": 2.0, "memory": 2**34},
        },
        {
            "node_id": "n2",
            "node_name": "10.9.0.2",
            "state": "ALIVE",
            "resources_total": {"CPU": 4.0, "GPU": 1.0, "amd": 1.0, "memory": 2**33},
        },
        {"node_id": "n3", "node_name": "10.9.0.3", "state": "DEAD", "resources_total": {}},
    ]
    usage = {"n1": {"CPU": [3.0, 8.0], "GPU": [1.0, 2.0], "nvidiaGpu": [1.0, 2.0]}}
    info = build_cluster_info(
        "ray", {"ray_version": "2.60.0"}, nodes, usage, {"NVIDIA": "nvidia_gpu", "AMD": "amd"}
    )
    assert info.total_nodes == 3 and info.available_nodes == 2
    assert dict(info.gpus_by_type) == {"NVIDIA": 2, "AMD": 1}
    n1, n2, n3 = info.nodes
    assert (n1.gpu_type, n1.gpu_count, n1.cpu_cores, n1.memory_mb) == (
        GpuType.NVIDIA,
        2,
        8,
        16384,
    )
    free = info.details["free"]
    assert free["10.9.0.1"] == {"CPU": 5.0, "GPU": 1.0, "nvidia_gpu": 1.0, "memory_mb": 16384}
    assert n2.gpu_type is GpuType.AMD and free["10.9.0.2"]["GPU"] == 1.0
    assert "10.9.0.3" not in free
    assert n3.status == "DEAD"
    assert "2.60.0" in info.scheduler_version


def test_jobs_with_unsafe_submission_ids_are_skipped_not_turned_into_job_ids():
    from warpforge_launch.schedulers.ray_parse import by_correlation, submissions

    meta = {"warpforge_correlation_id": "c1"}
    jobs = [{"submission_id": s, "metadata": meta} for s in ("..", ".", "a/b", None, 5, "")]
    jobs += [{"submission_id": "wf-ok", "metadata": {"warpforge_correlation_id": "c2"}}]
    jobs += ["not a record", {"submission_id": "raysubmit_1", "metadata": "junk"}]
    assert [sid for sid, _ in submissions(jobs)] == ["wf-ok", "raysubmit_1"]
    assert by_correlation(jobs, ["c1", "c2", "c3"]) == {"c2": "wf-ok"}


def test_status_message_is_one_line_whatever_ray_sends():
    state, message = ray_state({"status": "RUNNING", "message": "\n  first\nsecond\r\nthird"})
    assert state is JobState.RUNNING and message == "first"
    state, message = ray_state({"status": "WEIRD\nSTATE"})
    assert "\n" not in message
