"""The job model shared by every scheduler, the job store and the CLI.

Immutable dataclasses validated on construction, so a bad job never reaches a scheduler;
``to_dict``/``from_dict`` give a stable JSON form (ISO-8601 times, durations in seconds).
Field names and rules keep the contracts of the original Java model.
"""

from __future__ import annotations

import enum
import getpass
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from warpforge_launch import codec
from warpforge_launch.errors import UsageError
from warpforge_launch.states import ACTIVE_STATES, TERMINAL_STATES, JobState  # noqa: F401

DTYPES = ("f32", "f64", "f16", "bf16", "i32", "i64", "i16", "i8", "bool")
DEFAULT_TIMEOUT = timedelta(minutes=30)
DEFAULT_SEED = 42
# <instance>-<native id>: one plain path segment (job ids name directories and files, and a
# longer one could not: a file name has at most 255 bytes)
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,200}")


def check_job_id(job_id: str) -> str:
    """``job_id`` if it can be a job id, else the one-line usage error (exit 2)."""
    if not _JOB_ID.fullmatch(job_id or "") or job_id in (".", ".."):
        shown = repr(job_id) if len(job_id or "") <= 80 else \
            f"{job_id[:40]!r}... ({len(job_id)} characters)"
        raise UsageError(f"{shown} is not a job id (<scheduler>-<id>)",
                         hint="`warpforge-launch list` shows the known jobs")
    return job_id


def check_name(name: str, what: str = "job name") -> str:
    """A job name the user gives: no control characters (a newline would end a table row or
    a script comment; it is refused, never "cleaned")."""
    bad = sorted({repr(c) for c in name if ord(c) < 32 or ord(c) == 127})
    if bad:
        raise UsageError(f"{what} {name!r} holds control characters ({', '.join(bad)})")
    return name


def source_problem(source: str) -> str | None:
    """What keeps ``source`` from being a model source file on this machine, or None. A
    directory is named as one: `--source models/` is no missing file."""
    if os.path.isdir(source):
        return "is a directory, not a file"
    return None if os.path.isfile(source) else "does not exist"


def check_source(source: str) -> None:
    """The model source must be a file here (Local and Slurm run it from this path)."""
    problem = source_problem(source)
    if problem:
        raise UsageError(f"model source {source} {problem}")


class GpuType(enum.StrEnum):
    NONE = "NONE"
    NVIDIA = "NVIDIA"
    AMD = "AMD"
    ANY = "ANY"


class JobType(enum.StrEnum):
    FULL_PIPELINE = "FULL_PIPELINE"
    STABLEHLO_ONLY = "STABLEHLO_ONLY"
    PYTORCH_NATIVE = "PYTORCH_NATIVE"




def utcnow() -> datetime:
    return datetime.now(UTC)


def _whole(value: Any, what: str) -> int:
    """An int (never a bool, a float or NaN): what the model's counts must be."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be a whole number, got {value!r}")
    return value


def timeout_minutes(minutes: float) -> timedelta:
    """A job timeout from minutes; NaN, infinity and huge values are bad input, not a crash."""
    try:
        value = float(minutes)
    except (TypeError, ValueError):
        raise UsageError(f"timeout must be a number of minutes, got {minutes!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"timeout must be a positive, finite number of minutes, got {minutes!r}")
    try:
        return timedelta(minutes=value)
    except OverflowError:
        raise UsageError(f"timeout of {minutes!r} minutes is too large") from None


_MEMORY_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def memory_mb(text: str | int) -> int:
    """Memory in MB from ``4096``, ``16G``, ``512M``, ``1.5g`` or ``2GB``."""
    t = str(text).strip().upper().removesuffix("B")
    scale = _MEMORY_UNITS.get(t[-1:])
    number = t[:-1] if scale is not None else t
    try:
        mb = float(number) * (scale or 1)
    except ValueError:
        raise UsageError(f"memory {text!r} is not a size (e.g. 4096, 16G, 512M)") from None
    if not math.isfinite(mb):
        raise UsageError(f"memory {text!r} is not a finite size")
    if mb < 1:
        raise UsageError(f"memory {text!r} must be at least 1 MB")
    return int(mb)


def _freeze(obj: Any, name: str, value: Mapping) -> None:
    object.__setattr__(obj, name, MappingProxyType(dict(value)))


class _Json:
    """Mixin: JSON round-trip through the shared codec."""

    def to_dict(self) -> dict[str, Any]:
        return codec.to_jsonable(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        try:
            return codec.from_jsonable(cls, data)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, UsageError):
                raise
            raise UsageError(f"malformed {cls.__name__} record: {exc}") from exc


@dataclass(frozen=True)
class InputSpec(_Json):
    """One model input: a shape of positive dimensions and a dtype."""

    shape: tuple[int, ...]
    dtype: str = "f32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        if not self.shape:
            raise UsageError("input shape is empty: give at least one dimension, e.g. (1, 8)")
        for d in self.shape:
            if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
                raise UsageError(f"input dimension {d!r} in {self.shape} must be a positive "
                                 "integer")
        if self.dtype not in DTYPES:
            raise UsageError(f"unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class ResourceRequirements(_Json):
    """Hardware a job needs; each scheduler maps it to its own request format."""

    gpu_type: GpuType = GpuType.NONE
    gpu_count: int = 0
    memory_mb: int = 4096
    cpu_cores: int = 1
    queue: str | None = None
    priority: int = 50
    node_affinity: frozenset[str] = frozenset()

    def __post_init__(self):
        object.__setattr__(self, "gpu_type", GpuType(self.gpu_type))
        object.__setattr__(self, "node_affinity", frozenset(self.node_affinity))
        for name in ("gpu_count", "memory_mb", "cpu_cores", "priority"):
            _whole(getattr(self, name), name.replace("_", " "))
        if self.gpu_type is GpuType.NONE and self.gpu_count != 0:
            raise UsageError(f"gpu type NONE needs gpu count 0, got {self.gpu_count}")
        if self.gpu_type is not GpuType.NONE and self.gpu_count <= 0:
            raise UsageError(f"gpu type {self.gpu_type.value} needs a gpu count > 0, "
                             f"got {self.gpu_count}")
        if self.memory_mb <= 0:
            raise UsageError(f"memory must be > 0 MB, got {self.memory_mb}")
        if self.cpu_cores <= 0:
            raise UsageError(f"cpu cores must be > 0, got {self.cpu_cores}")
        if not 0 <= self.priority <= 100:
            raise UsageError(f"priority must be within 0-100, got {self.priority}")
        if any(not n or not n.strip() for n in self.node_affinity):
            raise UsageError("node affinity names must not be blank")


@dataclass(frozen=True)
class JobDefinition(_Json):
    """What to run: a model source traced by snakegrinder, with inputs and resources."""

    name: str
    source: str
    inputs: tuple[InputSpec, ...]
    type: JobType = JobType.FULL_PIPELINE
    model_class: str | None = None
    resources: ResourceRequirements = field(default_factory=ResourceRequirements)
    environment: Mapping[str, str] = field(default_factory=dict)
    timeout: timedelta = DEFAULT_TIMEOUT
    seed: int = DEFAULT_SEED
    # names only: values come from the submitting process's environment at send time
    # (secrets.resolve) and are never printed, planned or stored
    secret_env: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "type", JobType(self.type))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "secret_env", tuple(self.secret_env))
        _freeze(self, "environment", self.environment)
        if not self.name or not self.name.strip():
            raise UsageError("job name must not be blank")
        if not self.source or not self.source.strip():
            raise UsageError("model source must not be blank")
        if not self.inputs:
            raise UsageError("a job needs at least one input spec (--inputs)")
        if self.type in (JobType.FULL_PIPELINE, JobType.PYTORCH_NATIVE) and not self.model_class:
            raise UsageError(f"job type {self.type.value} needs a model class (--class)")
        if not isinstance(self.timeout, timedelta):
            raise UsageError(f"timeout must be a duration, got {self.timeout!r}")
        if self.timeout <= timedelta(0):
            raise UsageError(f"timeout must be positive, got {self.timeout}")
        _whole(self.seed, "seed")
        for key in (*self.environment, *self.secret_env):
            if not key or "=" in key or "\0" in key:
                raise UsageError(f"environment variable name {key!r} is not valid")
        both = set(self.environment) & set(self.secret_env)
        if both:
            raise UsageError(f"{', '.join(sorted(both))} is given both as --env and --secret-env")


@dataclass(frozen=True)
class JobSubmission(_Json):
    """A definition as submitted: who, when, and the correlation id that names it everywhere."""

    definition: JobDefinition
    submitted_by: str
    submitted_at: datetime
    correlation_id: str

    def __post_init__(self):
        import uuid  # here, off the start-up path of commands that only read jobs

        try:
            uuid.UUID(self.correlation_id)
        except (ValueError, TypeError, AttributeError):
            raise UsageError(f"correlation id {self.correlation_id!r} is not a UUID") from None

    @classmethod
    def new(cls, definition: JobDefinition) -> JobSubmission:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        import uuid

        return cls(definition, user, utcnow(), str(uuid.uuid4()))

    @property
    def short_id(self) -> str:
        return self.correlation_id[:8]


@dataclass(frozen=True)
class JobStatus(_Json):
    job_id: str
    correlation_id: str | None
    state: JobState
    state_changed_at: datetime | None = None
    node_name: str | None = None
    elapsed: timedelta | None = None
    message: str = ""
    scheduler_metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "state", JobState(self.state))
        _freeze(self, "scheduler_metadata", self.scheduler_metadata)


@dataclass(frozen=True)
class JobResult(_Json):
    job_id: str
    correlation_id: str | None
    success: bool
    outputs: tuple[str, ...] = ()
    mlir_output: str | None = None
    execution_time: timedelta | None = None
    error_message: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    exit_code: int | None = None
    log_tail: str = ""

    def __post_init__(self):
        object.__setattr__(self, "outputs", tuple(self.outputs))
        _freeze(self, "metrics", self.metrics)


@dataclass(frozen=True)
class JobQuery(_Json):
    states: frozenset[JobState] = frozenset()
    submitted_after: datetime | None = None
    submitted_before: datetime | None = None
    submitted_by: str | None = None
    schedulers: frozenset[str] = frozenset()
    limit: int | None = 100

    def __post_init__(self):
        object.__setattr__(self, "states", frozenset(JobState(s) for s in self.states))
        object.__setattr__(self, "schedulers", frozenset(self.schedulers))
        if self.limit is not None and self.limit <= 0:
            raise UsageError(f"limit must be > 0, got {self.limit}")


@dataclass(frozen=True)
class NodeInfo(_Json):
    name: str
    status: str
    gpu_type: GpuType = GpuType.NONE
    gpu_count: int = 0
    memory_mb: int = 0
    cpu_cores: int = 0


@dataclass(frozen=True)
class ClusterInfo(_Json):
    scheduler_name: str
    scheduler_version: str
    total_nodes: int
    available_nodes: int
    gpus_by_type: Mapping[str, int] = field(default_factory=dict)
    nodes: tuple[NodeInfo, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        _freeze(self, "gpus_by_type", self.gpus_by_type)
        _freeze(self, "details", self.details)


@dataclass(frozen=True)
class SchedulerCapabilities(_Json):
    gpu_scheduling: bool
    supported_gpu_types: frozenset[GpuType]
    queue_priority: bool = False
    node_affinity: bool = False
    job_arrays: bool = False
    max_concurrent_jobs: int | None = None
    max_job_duration: timedelta | None = None

    def __post_init__(self):
        object.__setattr__(self, "supported_gpu_types",
                           frozenset(GpuType(g) for g in self.supported_gpu_types))
