"""A sweep: one YAML matrix of models x input shapes x GPU types x schedulers.

Parsing and expansion are pure: the spec becomes a ``SweepSpec`` (every value checked, each
error naming its field path, e.g. ``models[1].class``), and ``expand`` turns it into the
cross product of ``Cell``s, each a validated ``JobDefinition`` bound for one scheduler
instance. Nothing here talks to a backend; ``sweep_launch`` submits and tracks the cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import (
    GpuType,
    InputSpec,
    JobDefinition,
    JobType,
    ResourceRequirements,
    check_name,
    memory_mb,
    source_problem,
    timeout_minutes,
)

MAX_CELLS = 10_000
_TOP = {"name", "models", "inputs", "gpus", "schedulers", "options"}
_MODEL = {"source", "class", "name", "type", "env"}
_OPTIONS = {"type", "gpu_count", "timeout", "memory", "cpus", "env", "secret_env", "queue",
            "priority", "seed", "nodes", "throttle"}


class SpecError(UsageError):
    """A sweep file that cannot be run; the message starts with the field path."""


@dataclass(frozen=True)
class Model:
    name: str
    source: str            # absolute path
    model_class: str | None
    type: JobType
    env: Mapping[str, str] = field(default_factory=dict)  # over options.env


@dataclass(frozen=True)
class Shape:
    label: str             # as written in the file, e.g. "[(1, 8)]"
    inputs: tuple[InputSpec, ...]


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file: the four axes and the options every cell shares."""

    name: str
    models: tuple[Model, ...]
    shapes: tuple[Shape, ...]
    gpus: tuple[GpuType, ...]
    schedulers: tuple[str | None, ...]      # None: the inventory's default scheduler
    gpu_count: int = 1
    timeout_minutes: float = 30
    memory_mb: int = 4096
    cpus: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: tuple[str, ...] = ()
    queue: str | None = None
    priority: int = 50
    seed: int = 42
    nodes: tuple[str, ...] = ()
    throttle: int | None = None             # cells running at once, per scheduler instance


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: which model, shape, GPU type and scheduler, and the job."""

    index: int
    model: str
    shape: str
    gpu: str
    scheduler: str | None
    definition: JobDefinition

    @property
    def key(self) -> dict[str, Any]:
        return {"index": self.index, "model": self.model, "shape": self.shape, "gpu": self.gpu,
                "scheduler": self.scheduler}


def load(path: str | Path) -> SweepSpec:
    """Read and parse a sweep file; relative model sources are relative to the file."""
    from warpforge_launch import yamlfile

    p = Path(path)
    try:
        data = yamlfile.read(p, "sweep file")  # a key given twice is an error too
    except OSError as exc:
        raise UsageError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    return parse(data, base_dir=p.resolve().parent, default_name=p.stem)


def _fail(path: str, what: str) -> SpecError:
    return SpecError(f"{path}: {what}", hint="see the Sweeps section of the README")


def _mapping(value: Any, path: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"must be a mapping, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise _fail(f"{path}.{unknown[0]}" if path != "sweep" else unknown[0],
                    f"unknown field (known: {', '.join(sorted(allowed))})")
    return value


def _list(value: Any, path: str, *, required: bool = True) -> list[Any]:
    if value is None and not required:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, list):
        raise _fail(path, "must be a list" + ("" if value is not None else " (missing)"))
    if not value:
        raise _fail(path, "must not be empty")
    return value


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"must be a non-empty string, got {value!r}")
    return value


def _int(value: Any, path: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        raise _fail(path, f"must be a whole number {bound}, got {value!r}")
    return value


def _checked(path: str, fn, *args):
    """Run a model check; its UsageError gets the field path in front."""
    try:
        return fn(*args)
    except SpecError:
        raise
    except UsageError as exc:
        raise _fail(path, str(exc)) from None


def parse(data: Any, *, base_dir: Path, default_name: str = "sweep") -> SweepSpec:
    """Validate a loaded sweep document whole; the first problem raises ``SpecError``."""
    from warpforge_launch.inputs import parse_inputs

    top = _mapping(data, "sweep", _TOP)
    name = _text(top.get("name", default_name), "name")
    try:
        check_name(name, "a sweep name")
    except UsageError as exc:
        raise _fail("name", str(exc)) from None
    models, seen = [], set()
    for i, m in enumerate(_list(top.get("models"), "models")):
        where = f"models[{i}]"
        m = _mapping(m, where, _MODEL)
        src = _text(m.get("source"), f"{where}.source")
        source = (base_dir / src).resolve() if not Path(src).is_absolute() else Path(src)
        problem = source_problem(str(source))
        if problem:
            raise _fail(f"{where}.source", f"{source} {problem}")
        t = m.get("type", "FULL_PIPELINE")
        if not isinstance(t, str) or t.upper() not in JobType.__members__:
            raise _fail(f"{where}.type", f"unknown job type {t!r} (one of {', '.join(JobType)})")
        mtype = JobType[t.upper()]
        cls = m.get("class")
        if cls is not None:
            cls = _text(cls, f"{where}.class")
        elif mtype in (JobType.FULL_PIPELINE, JobType.PYTORCH_NATIVE):
            raise _fail(f"{where}.class", f"required for type {mtype.value}")
        mname = _text(m.get("name", source.name.removesuffix(".py")), f"{where}.name")
        try:
            check_name(mname, "a model name")
        except UsageError as exc:
            raise _fail(f"{where}.name", str(exc)) from None
        if mname in seen:
            raise _fail(f"{where}.name", f"{mname!r} is used twice; give each model a name")
        seen.add(mname)
        env = _env(m["env"], f"{where}.env") if "env" in m else {}
        models.append(Model(mname, str(source), cls, mtype, env))
    shapes, labels = [], set()
    for i, s in enumerate(_list(top.get("inputs"), "inputs")):
        label = _text(s, f"inputs[{i}]").strip()
        if label in labels:
            raise _fail(f"inputs[{i}]", f"{label} is listed twice")
        labels.add(label)
        shapes.append(Shape(label, _checked(f"inputs[{i}]", parse_inputs, label)))
    gpus = []
    for i, g in enumerate(_list(top.get("gpus", ["NONE"]), "gpus")):
        if not isinstance(g, str) or g.upper() not in GpuType.__members__:
            raise _fail(f"gpus[{i}]", f"unknown GPU type {g!r} (NVIDIA, AMD, ANY or NONE)")
        if GpuType[g.upper()] in gpus:
            raise _fail(f"gpus[{i}]", f"{g} is listed twice")
        gpus.append(GpuType[g.upper()])
    schedulers: list[str | None] = []
    for i, s in enumerate(_list(top.get("schedulers"), "schedulers", required=False) or [None]):
        if s is not None:
            s = _text(s, f"schedulers[{i}]")
        if s in schedulers:
            raise _fail(f"schedulers[{i}]", f"{s} is listed twice")
        schedulers.append(s)
    options = _options(top.get("options") or {})
    cells = len(models) * len(shapes) * len(gpus) * len(schedulers)
    if cells > MAX_CELLS:
        raise _fail("sweep", f"{cells} cells is more than {MAX_CELLS}")
    spec = SweepSpec(name, tuple(models), tuple(shapes), tuple(gpus), tuple(schedulers),
                     **options)
    expand(spec)  # every cell's job must be valid before anything is submitted
    return spec


def _options(raw: Any) -> dict[str, Any]:
    o = _mapping(raw, "options", _OPTIONS)
    out: dict[str, Any] = {}
    if "gpu_count" in o:
        out["gpu_count"] = _int(o["gpu_count"], "options.gpu_count", 1)
    if "timeout" in o:
        out["timeout_minutes"] = _checked("options.timeout", timeout_minutes,
                                          o["timeout"]).total_seconds() / 60
    if "memory" in o:
        out["memory_mb"] = _checked("options.memory", memory_mb, o["memory"])
    if "cpus" in o:
        out["cpus"] = _int(o["cpus"], "options.cpus", 1)
    if "priority" in o:
        out["priority"] = _int(o["priority"], "options.priority", 0, 100)
    if "seed" in o:
        out["seed"] = _int(o["seed"], "options.seed", 0)
    if "throttle" in o:
        out["throttle"] = _int(o["throttle"], "options.throttle", 1)
    if o.get("queue") is not None:
        out["queue"] = _text(o["queue"], "options.queue")
    if "env" in o:
        out["env"] = _env(o["env"], "options.env")
    if "secret_env" in o:
        out["secret_env"] = tuple(_text(k, f"options.secret_env[{i}]")
                                  for i, k in enumerate(_list(o["secret_env"],
                                                              "options.secret_env")))
    if "nodes" in o:
        out["nodes"] = tuple(_text(n, f"options.nodes[{i}]")
                             for i, n in enumerate(_list(o["nodes"], "options.nodes")))
    if "type" in o:
        raise _fail("options.type", "the job type is per model (models[i].type)")
    return out


def _env(env: Any, path: str) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise _fail(path, f"must be a mapping, got {type(env).__name__}")
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise _fail(f"{path}.{k}", f"must be a string value, got {v!r}")
    return {k: str(v) for k, v in env.items()}


def expand(spec: SweepSpec) -> list[Cell]:
    """The cross product, in a stable order: scheduler, GPU type, model, shape (so each
    scheduler's and GPU type's cells are contiguous: one Slurm array each)."""
    cells: list[Cell] = []
    for sched in spec.schedulers:
        for gpu in spec.gpus:
            count = 0 if gpu is GpuType.NONE else spec.gpu_count
            where = f"gpus ({gpu.value})"
            resources = _checked(where, ResourceRequirements, gpu, count, spec.memory_mb,
                                 spec.cpus, spec.queue, spec.priority, frozenset(spec.nodes))
            for mi, model in enumerate(spec.models):
                for si, shape in enumerate(spec.shapes):
                    definition = _checked(
                        f"models[{mi}] x inputs[{si}]", JobDefinition, model.name, model.source,
                        shape.inputs, model.type, model.model_class, resources,
                        {**spec.env, **model.env},
                        timeout_minutes(spec.timeout_minutes), spec.seed, spec.secret_env)
                    cells.append(Cell(len(cells), model.name, shape.label, gpu.value, sched,
                                      definition))
    return cells


def to_dict(spec: SweepSpec) -> dict[str, Any]:
    """The JSON form kept in the job store (secret-free: secret_env holds names)."""
    return {"name": spec.name,
            "models": [{"name": m.name, "source": m.source, "class": m.model_class,
                        "type": m.type.value, "env": dict(m.env)} for m in spec.models],
            "inputs": [s.label for s in spec.shapes], "gpus": [g.value for g in spec.gpus],
            "schedulers": list(spec.schedulers),
            "options": {"gpu_count": spec.gpu_count, "timeout": spec.timeout_minutes,
                        "memory_mb": spec.memory_mb, "cpus": spec.cpus, "env": dict(spec.env),
                        "secret_env": list(spec.secret_env), "queue": spec.queue,
                        "priority": spec.priority, "seed": spec.seed, "nodes": list(spec.nodes),
                        "throttle": spec.throttle}}
