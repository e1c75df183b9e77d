import json
from datetime import timedelta

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import (
    ClusterInfo,
    GpuType,
    InputSpec,
    JobDefinition,
    JobQuery,
    JobResult,
    JobState,
    JobStatus,
    JobSubmission,
    JobType,
    NodeInfo,
    ResourceRequirements,
    SchedulerCapabilities,
    utcnow,
)

ONE = (InputSpec((1, 8)),)


def definition(**kw):
    base = dict(name="mlp", source="/m.py", inputs=ONE, model_class="M")
    base.update(kw)
    return JobDefinition(**base)


@pytest.mark.parametrize("kw,fragment", [
    (dict(gpu_type=GpuType.NONE, gpu_count=1), "NONE needs gpu count 0"),
    (dict(gpu_type=GpuType.NVIDIA, gpu_count=0), "needs a gpu count > 0"),
    (dict(gpu_type=GpuType.AMD, gpu_count=-1), "needs a gpu count > 0"),
    (dict(memory_mb=0), "memory must be > 0"),
    (dict(cpu_cores=0), "cpu cores must be > 0"),
    (dict(priority=101), "0-100"),
    (dict(priority=-1), "0-100"),
    (dict(node_affinity={" "}), "blank"),
])
def test_resource_rules(kw, fragment):
    with pytest.raises(UsageError, match=fragment):
        ResourceRequirements(**kw)


def test_resource_defaults():
    r = ResourceRequirements()
    assert (r.gpu_type, r.gpu_count, r.priority) == (GpuType.NONE, 0, 50)
    assert ResourceRequirements(GpuType.ANY, 2).gpu_count == 2


@pytest.mark.parametrize("kw,fragment", [
    (dict(name="  "), "name must not be blank"),
    (dict(source=""), "source must not be blank"),
    (dict(inputs=()), "at least one input"),
    (dict(model_class=None), "needs a model class"),
    (dict(type=JobType.PYTORCH_NATIVE, model_class=None), "needs a model class"),
    (dict(timeout=timedelta(0)), "timeout must be positive"),
    (dict(environment={"A=B": "x"}), "not valid"),
])
def test_definition_rules(kw, fragment):
    with pytest.raises(UsageError, match=fragment):
        definition(**kw)


def test_definition_defaults_and_immutability():
    d = definition(type=JobType.STABLEHLO_ONLY, model_class=None, environment={"K": "v"})
    assert d.timeout == timedelta(minutes=30) and d.seed == 42
    with pytest.raises(TypeError):
        d.environment["K"] = "changed"  # type: ignore[index]
    with pytest.raises(AttributeError):
        d.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("shape,dtype,fragment", [
    ((), "f32", "empty"), ((1, 0), "f32", "positive"), ((1, -2), "f32", "positive"),
    ((1, 8), "f33", "unknown dtype"), ((True,), "f32", "positive"),
])
def test_input_spec_rules(shape, dtype, fragment):
    with pytest.raises(UsageError, match=fragment):
        InputSpec(shape, dtype)


def test_submission_ids():
    s = JobSubmission.new(definition())
    assert len(s.short_id) == 8 and s.correlation_id.startswith(s.short_id)
    assert s.submitted_at.tzinfo is not None and s.submitted_by
    with pytest.raises(UsageError, match="not a UUID"):
        JobSubmission(definition(), "me", utcnow(), "not-a-uuid")


def test_states():
    assert {s for s in JobState if s.terminal} == {
        JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
    assert [s for s in JobState if s.success] == [JobState.COMPLETED]


@pytest.mark.parametrize("obj", [
    JobSubmission.new(definition(
        resources=ResourceRequirements(GpuType.NVIDIA, 2, 16384, 4, "gpu", 70,
                                       frozenset({"b", "a"})),
        environment={"X": "1"}, inputs=(InputSpec((1, 3), "i64"), InputSpec((4,))))),
    JobStatus("local-1", "c", JobState.RUNNING, utcnow(), "node", timedelta(seconds=1.5),
              "msg", {"k": [1, 2]}),
    JobResult("local-1", "c", True, ("/a", "/b"), "module @main {}", timedelta(seconds=2),
              None, {"flops": 1.0}, 0, "tail"),
    ClusterInfo("ray", "2.0", 2, 1, {"nvidia": 1},
                (NodeInfo("n1", "up", GpuType.NVIDIA, 1, 1024, 8),), {"x": 1}),
    SchedulerCapabilities(True, {GpuType.NVIDIA, GpuType.AMD}, max_job_duration=timedelta(1)),
    JobQuery(states={JobState.FAILED}, submitted_after=utcnow(), limit=5),
])
def test_json_round_trip(obj):
    text = json.dumps(obj.to_dict())  # must serialise: times, durations, enums, sets
    assert type(obj).from_dict(json.loads(text)) == obj


def test_json_times_are_iso8601():
    st = JobStatus("local-1", None, JobState.PENDING, utcnow(), elapsed=timedelta(seconds=3))
    d = st.to_dict()
    assert d["state_changed_at"].endswith("+00:00") and d["elapsed"] == 3.0


def test_malformed_record_is_a_usage_error():
    with pytest.raises(UsageError, match="malformed JobStatus"):
        JobStatus.from_dict({"job_id": "x"})
    with pytest.raises(UsageError):
        JobQuery(limit=0)
