"""The Ray scheduler against a real loopback Ray head, with a stand-in payload."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.testlab import ray as raylab
from warpforge_launch.errors import InfrastructureError, LaunchError, NotFoundError, UsageError
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import (
    GpuType,
    JobDefinition,
    JobQuery,
    JobState,
    JobSubmission,
    ResourceRequirements,
)
from warpforge_launch.schedulers.base import SubmissionPlan
from warpforge_launch.schedulers.ray import RayConfig, RayScheduler
from warpforge_launch.schedulers.ray_request import RayRequest

HOSTILE = 'it\'s "q"; echo PWNED $(id) `id` $HOME | & > /tmp/x\nsecond line * ?'


@pytest.fixture(autouse=True)
def _model(model_file, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "MODEL", str(model_file))


MODEL = ""


@pytest.fixture()
def sched(ray_url, fake_snakegrinder, output_root, tmp_path):
    config = RayConfig(
        dashboard_url=ray_url,
        snakegrinder=str(fake_snakegrinder),
        output_root=str(output_root),
        connect_timeout=2,
        request_timeout=15,
    )
    with RayScheduler("raylab", config, home=tmp_path) as scheduler:
        yield scheduler


def submission(resources=None, env=None, who="tester", timeout=timedelta(minutes=5), **kw):
    definition = JobDefinition(
        name=kw.pop("name", "mlp"),
        source=kw.pop("source", MODEL),
        model_class=kw.pop("model_class", "SimpleMLP"),
        inputs=parse_inputs(kw.pop("inputs", "[(1, 8)]")),
        resources=resources or ResourceRequirements(memory_mb=256),
        environment=env or {},
        timeout=timeout,
        **kw,
    )
    return JobSubmission(definition, who, datetime.now(UTC), str(uuid.uuid4()))


def wait(sched, job_id, until=lambda s: s.state.terminal, deadline_s=60.0):
    end = time.monotonic() + deadline_s
    while True:
        status = sched.status(job_id)
        if until(status):
            return status
        assert time.monotonic() < end, f"{job_id} still {status.state} after {deadline_s} s"
        time.sleep(0.25)


def log_value(text: str, key: str):
    for line in text.splitlines():
        if line.startswith(key + " "):
            return json.loads(line[len(key) + 1 :])
    raise AssertionError(f"no {key} line in the job output:\n{text}")


def test_completed_job_has_its_outputs(sched):
    job_id = sched.submit(submission())
    assert job_id.startswith("raylab-wf-")
    status = wait(sched, job_id)
    assert status.state is JobState.COMPLETED
    assert status.node_name == "127.0.0.1"
    result = sched.result(job_id)
    assert result.success and result.exit_code == 0
    names = sorted(Path(p).name for p in result.outputs)
    assert names == ["manifest.json", "model.mlir"]
    assert result.mlir_output.startswith("module @main {")
    assert "stablehlo.return" in result.mlir_output
    manifest = next(p for p in result.outputs if p.endswith("manifest.json"))
    assert json.loads(Path(manifest).read_text())["status"] == "ok"
    assert result.execution_time is not None and result.execution_time.total_seconds() > 0
    assert "SUCCESS:" in result.log_tail


def test_failed_job_keeps_exit_code_and_message(sched):
    job_id = sched.submit(submission(env={"WF_FAKE_EXIT": "3"}))
    status = wait(sched, job_id)
    assert status.state is JobState.FAILED
    assert "exit code 3" in status.message and "\n" not in status.message
    assert status.scheduler_metadata["driver_exit_code"] == 3
    result = sched.result(job_id)
    assert not result.success and result.exit_code == 3
    assert result.error_message == "FAILED: fake failure with exit code 3"


def test_cancel_a_running_job(sched):
    job_id = sched.submit(submission(env={"WF_FAKE_SLEEP": "60"}))
    wait(sched, job_id, until=lambda s: s.state is JobState.RUNNING, deadline_s=30)
    t0 = time.monotonic()
    assert sched.cancel(job_id) is True
    assert sched.status(job_id).state is JobState.CANCELLED
    assert time.monotonic() - t0 < 15
    assert sched.cancel(job_id) is False  # already finished: said, not pretended


def test_job_needing_more_gpus_than_exist_pends_and_cancel_says_so(sched):
    job_id = sched.submit(submission(ResourceRequirements(GpuType.ANY, 2, memory_mb=256)))
    time.sleep(1.0)
    status = sched.status(job_id)
    assert status.state is JobState.PENDING
    assert "waiting for resources" in status.message
    with pytest.raises(LaunchError, match="cannot stop .* while it is PENDING") as info:
        sched.cancel(job_id)
    assert info.value.exit_code == 1
    assert "RAY_JOB_START_TIMEOUT_SECONDS" in str(info.value)
    final = wait(sched, job_id, deadline_s=raylab.JOB_START_TIMEOUT_S + 20)
    assert final.state is JobState.FAILED
    assert "never started" in final.message


def test_gpu_jobs_see_cuda_visible_devices(sched):
    gpu = sched.submit(submission(ResourceRequirements(GpuType.NVIDIA, 1, memory_mb=256)))
    cpu = sched.submit(submission())
    assert wait(sched, gpu).state is JobState.COMPLETED
    assert wait(sched, cpu).state is JobState.COMPLETED
    assert log_value("".join(sched.logs(gpu)), "CUDA_VISIBLE_DEVICES") == "0"
    assert log_value("".join(sched.logs(cpu)), "CUDA_VISIBLE_DEVICES") in (None, "")


def test_amd_job_never_lands_on_the_nvidia_only_node(sched):
    """The lab's one node declares a GPU and the `nvidia` resource only: an AMD job asks for
    GPUs the node has, so it runs there unless the vendor resource is sent - then it pends."""
    nvidia = sched.submit(submission(ResourceRequirements(GpuType.NVIDIA, 1, memory_mb=256)))
    amd = sched.submit(submission(ResourceRequirements(GpuType.AMD, 1, memory_mb=256)))
    assert wait(sched, nvidia).state is JobState.COMPLETED
    time.sleep(2.0)  # the GPU is free again: only the vendor resource can hold the AMD job
    status = sched.status(amd)
    assert status.state is JobState.PENDING, status
    assert "waiting for resources" in status.message
    assert "".join(sched.logs(amd)) == ""  # the payload never started


def test_logs_are_the_job_output_without_ray_lines(sched):
    sub = submission(env={"WF_USER_GREETING": "hello"})
    job_id = sched.submit(sub)
    followed = "".join(sched.logs(job_id, follow=True))
    assert sched.status(job_id).state is JobState.COMPLETED
    text = "".join(sched.logs(job_id))
    assert followed == text
    assert "job_manager.py" not in text and "Running entrypoint for job" not in text
    assert log_value(text, "WARPFORGE_JOB_ID") == job_id
    assert log_value(text, "WARPFORGE_CORRELATION_ID") == sub.correlation_id
    assert log_value(text, "USER_ENV") == {"WF_USER_GREETING": "hello"}
    assert text.rstrip().splitlines()[-1].startswith("SUCCESS:")


def test_hostile_arguments_reach_the_payload_verbatim(sched, ray_workdir):
    """A shared source path (no upload): every argument crosses Ray's /bin/sh -c intact."""
    source = ray_workdir / "odd dir" / (HOSTILE.replace("/", "_") + ".py")
    source.parent.mkdir(exist_ok=True)
    source.write_text("class Net: pass\n")
    shared = RayScheduler(
        "raylab", dataclasses.replace(sched.config, upload_source=False), home=sched.home
    )
    sub = submission(
        source=str(source),
        model_class="Net;reboot",
        name=HOSTILE,
        env={"WF_USER_HOSTILE": HOSTILE},
        inputs="[(1, 128, 'i64'), (2, 3)]",
    )
    with shared:
        plan = shared.plan(sub)
        job_id = shared.job_id(shared.execute(plan).native_id)
        assert wait(shared, job_id).state is JobState.COMPLETED
        text = "".join(shared.logs(job_id))
    assert log_value(text, "ARGV") == list(plan.argv[1:])
    assert str(source) in plan.argv
    assert log_value(text, "USER_ENV") == {"WF_USER_HOSTILE": HOSTILE}
    assert not any(line.startswith("PWNED") for line in text.splitlines())


def test_model_source_ships_with_the_job(sched, ray_workdir):
    """Uploaded as a Ray package: the job reads it by name from its own working dir."""
    source = ray_workdir / "uploaded_model.py"
    source.write_text(f"# {uuid.uuid4()}\nclass SimpleMLP: pass\n")
    plan = sched.plan(submission(source=str(source)))
    assert "working_dir" in plan.request.body["runtime_env"]
    source.write_text("# changed after planning: the planned package is what ships\n")
    job_id = sched.job_id(sched.execute(plan).native_id)
    assert wait(sched, job_id).state is JobState.COMPLETED
    text = "".join(sched.logs(job_id))
    assert log_value(text, "SOURCE") == plan.request.package.source_sha256
    assert log_value(text, "SOURCE") != hashlib.sha256(source.read_bytes()).hexdigest()
    assert log_value(text, "ARGV")[2] == "uploaded_model.py"
    again = sched.submit(submission(source=str(source)))  # package already there: reused
    assert wait(sched, again).state is JobState.COMPLETED


def test_missing_source_fails_before_submission(sched, ray_workdir):
    with pytest.raises(UsageError, match="cannot be read"):
        sched.submit(submission(source=str(ray_workdir / "missing.py")))


def test_timeout_is_enforced_on_the_worker(sched):
    job_id = sched.submit(submission(env={"WF_FAKE_SLEEP": "60"}, timeout=timedelta(seconds=2)))
    status = wait(sched, job_id, deadline_s=40)
    assert status.state is JobState.TIMEOUT


def test_list_and_statuses_with_many_jobs_in_one_request(sched):
    who = f"lister-{uuid.uuid4().hex[:6]}"
    ids = [sched.submit(submission(who=who)) for _ in range(8)]
    requests = []
    sched.client.observers.append(lambda method, path: requests.append(path))
    listed = sched.list(JobQuery(submitted_by=who, limit=None))
    assert sorted(s.job_id for s in listed) == sorted(ids)
    statuses = sched.statuses(ids + ["raylab-wf-gone"])
    assert set(statuses) == set(ids)
    assert requests == ["/api/jobs/", "/api/jobs/"]
    limited = sched.list(JobQuery(submitted_by=who, limit=3))
    assert len(limited) == 3
    for job_id in ids:
        wait(sched, job_id)
    done = sched.list(JobQuery(submitted_by=who, states=frozenset({JobState.COMPLETED})))
    assert len(done) == len(ids)


def test_cluster_info_is_what_the_head_was_started_with(sched, ray_head):
    info = sched.cluster_info()
    assert info.scheduler_name == "raylab"
    assert info.scheduler_version.startswith("ray 2.")
    assert (info.total_nodes, info.available_nodes) == (1, 1)
    (node,) = info.nodes
    assert node.name == "127.0.0.1" and node.status == "ALIVE"
    assert node.cpu_cores == raylab.NUM_CPUS and node.gpu_count == raylab.NUM_GPUS
    assert node.memory_mb > 0
    # one fake GPU declared as NVIDIA only
    assert dict(info.gpus_by_type) == {"NVIDIA": 1}
    assert node.gpu_type is GpuType.NVIDIA
    free = info.details["free"]["127.0.0.1"]
    assert 0 <= free["CPU"] <= raylab.NUM_CPUS and "nvidia" in free and "amd" not in free


def test_unknown_job_id(sched):
    with pytest.raises(NotFoundError, match="raylab-wf-doesnotexist"):
        sched.status("raylab-wf-doesnotexist")
    with pytest.raises(NotFoundError):
        list(sched.logs("raylab-wf-doesnotexist"))
    with pytest.raises(NotFoundError):
        sched.status("other-wf-1234")


def test_duplicate_submission_is_refused_in_one_line(sched):
    """Ray answers HTTP 500 for it; still bad input (exit 2), said plainly, not exit 3."""
    plan = sched.plan(submission())
    sched.execute(plan)
    with pytest.raises(UsageError, match="already has a job with submission id wf-") as info:
        sched.execute(plan)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_ray_traceback_is_reduced_to_one_line(sched):
    plan = sched.plan(submission())
    body = dict(
        plan.request.body,
        submission_id=f"wf-bad-{uuid.uuid4().hex[:6]}",
        metadata={**plan.request.body["metadata"], "n": 1},
    )
    bad = SubmissionPlan(plan.instance, body["submission_id"], plan.kind, plan.argv,
                         RayRequest(body, plan.request.package), plan.correlation_id)
    with pytest.raises(UsageError) as info:
        sched.execute(bad)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert "metadata values must be strings" in message


def test_delete_finished_job_only(sched):
    job_id = sched.submit(submission(env={"WF_FAKE_SLEEP": "30"}))
    with pytest.raises(UsageError, match="finished jobs only"):
        sched.delete(job_id)
    assert sched.cancel(job_id) is True  # just submitted: stopped, even if it was starting
    assert sched.status(job_id).state is JobState.CANCELLED
    time.sleep(1.0)  # Ray's job monitor may still be writing the final state
    sched.delete(job_id)
    with pytest.raises(NotFoundError):
        sched.status(job_id)


def test_cluster_down_is_infrastructure_error_within_connect_timeout(dead_url, tmp_path):
    config = RayConfig(dashboard_url=dead_url, connect_timeout=1, request_timeout=5)
    with RayScheduler("raylab", config, home=tmp_path) as down:
        t0 = time.monotonic()
        with pytest.raises(InfrastructureError) as info:
            down.status("raylab-wf-12345678")
        assert time.monotonic() - t0 < 2.5
    assert info.value.exit_code == 3
    assert dead_url in str(info.value)


def test_reconcile_finds_sent_jobs_by_correlation_id_in_one_request(sched):
    subs = [submission() for _ in range(3)]
    for sub in subs:
        sched.execute(sched.plan(sub))
    requests = []
    sched.client.observers.append(lambda method, path: requests.append((method, path)))
    never_sent = str(uuid.uuid4())
    found = sched.reconcile([s.correlation_id for s in subs] + [never_sent])
    assert found == {s.correlation_id: f"wf-{s.short_id}" for s in subs}
    assert requests == [("GET", "/api/jobs/")]
    assert sched.reconcile([]) == {} and len(requests) == 1


SECRET = "s3cr3t 'quoted' \"double\" `tick` ; | & > <\nsecond line"


def test_secret_env_reaches_the_payload_and_nothing_of_ours_keeps_it(
    sched, monkeypatch, tmp_path
):
    monkeypatch.setenv("WF_USER_SECRET", SECRET)
    sub = submission(secret_env=("WF_USER_SECRET",), env={"WF_USER_PLAIN": "p"})
    plan = sched.plan(sub)
    shown = plan.render() + json.dumps(plan.to_dict())
    assert SECRET not in shown and '"WF_USER_SECRET": "***"' in plan.render()
    job_id = sched.job_id(sched.execute(plan).native_id)
    assert wait(sched, job_id).state is JobState.COMPLETED
    text = "".join(sched.logs(job_id))
    assert log_value(text, "USER_ENV") == {"WF_USER_SECRET": SECRET, "WF_USER_PLAIN": "p"}
    record = sched._job(job_id)
    assert SECRET not in record["entrypoint"]  # never on the worker's command line
    # what Ray itself keeps: runtime_env is readable by anyone who can read the job API
    assert record["runtime_env"]["env_vars"]["WF_USER_SECRET"] == SECRET


def test_secret_env_not_set_is_bad_input_before_anything_is_sent(sched, monkeypatch):
    monkeypatch.delenv("WF_USER_MISSING", raising=False)
    plan = sched.plan(submission(secret_env=("WF_USER_MISSING",)))
    requests = []
    sched.client.observers.append(lambda method, path: requests.append(path))
    with pytest.raises(UsageError, match="WF_USER_MISSING"):
        sched.execute(plan)
    assert requests == []


def _forge(plan, **metadata):
    """The plan with metadata a hostile or buggy client put on the cluster."""
    body = dict(plan.request.body, metadata={**plan.request.body["metadata"], **metadata})
    request = RayRequest(body, plan.request.package)
    return dataclasses.replace(plan, request=request)


def test_result_never_takes_its_directory_from_job_metadata(sched, output_root, ray_workdir):
    elsewhere = ray_workdir / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "model.mlir").write_text("FORGED\n")
    plan = sched.plan(submission())
    forged = _forge(plan, warpforge_out_dir=str(elsewhere), warpforge_source="/etc/hostname")
    job_id = sched.job_id(sched.execute(forged).native_id)
    assert wait(sched, job_id).state is JobState.COMPLETED
    result = sched.result(job_id)
    assert result.mlir_output.startswith("module @main {")
    assert all(Path(p).parent == output_root / plan.native_id for p in result.outputs)


def test_result_refuses_symlinks_that_leave_the_output_root(sched, output_root, ray_workdir):
    outside = ray_workdir / "client-files"
    outside.mkdir(exist_ok=True)
    (outside / "model.mlir").write_text("CLIENT FILE\n")
    (outside / "id_ed25519").write_text("CLIENT KEY\n")
    # the job directory itself is a link out of the root, planted before the job ran
    plan = sched.plan(submission())
    (output_root / plan.native_id).symlink_to(outside)
    linked = sched.job_id(sched.execute(plan).native_id)
    # a job whose files are links out of the root, made after it ran
    second = sched.submit(submission())
    for job_id in (linked, second):
        assert wait(sched, job_id).state is JobState.COMPLETED
    job_dir = output_root / sched.native_id(second)
    (job_dir / "model.mlir").unlink()
    (job_dir / "model.mlir").symlink_to(outside / "model.mlir")
    (job_dir / "key").symlink_to(outside / "id_ed25519")
    for job_id in (linked, second):
        result = sched.result(job_id)
        # refused and named, and so no success (exit 1), as fetch and Slurm's result do
        assert not result.success and result.mlir_output is None
        assert "refused" in result.error_message and "never followed" in result.error_message
        assert "CLIENT" not in (result.log_tail or "") + (result.error_message or "")
        assert not any(Path(p).resolve().is_relative_to(outside) for p in result.outputs)
    assert sched.result(second).outputs == (str(job_dir / "manifest.json"),)
