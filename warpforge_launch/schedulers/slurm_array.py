"""A sweep on Slurm: one sbatch job array per resource shape, one row per array task.

Every task of a Slurm array shares the array's resources: sbatch takes one ``--gres``,
``--mem``, ``--cpus-per-task`` ... per job, and an array is one job (Slurm 22.05 has no
per-task GRES). So the cells are grouped by everything that becomes an ``#SBATCH`` line
(their *shape*: GRES, memory, CPUs, time, partition, ...); cells of the same shape share
one array, whose script holds a table indexed by ``SLURM_ARRAY_TASK_ID`` (each row: the
cell's correlation id, environment, GRES and payload argv). A 2-vendor sweep is thus two
arrays, still sent in one round trip (``execute_batch``: the submit driver runs one sbatch
per array). Everything else here is pure rendering.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from warpforge_launch.schedulers import slurm_parse as sp
from warpforge_launch.schedulers import slurm_remote as remote
from warpforge_launch.schedulers import slurm_script as ss
from warpforge_launch.schedulers.base import BatchPlan, BatchRef, SubmissionPlan, Submitted

MAX_ARRAY_TASKS = 1000  # Slurm's default MaxArraySize is 1001 (indexes 0-1000)


@dataclass(frozen=True)
class ArrayTask:
    """One cell's row of an array: what the job store keeps for the cell."""

    batch_id: str
    index: int
    spec: Any  # the cell's own ScriptSpec (its resources are the array's)

    def to_dict(self) -> dict[str, Any]:
        """The row, and the resources it shares with its array (the array's script itself
        is not repeated in every cell's record)."""
        s = self.spec
        return {"array_correlation_id": self.batch_id, "index": self.index,
                "argv": [a.replace(ss.OUT_DIR_TOKEN, "$OUT_DIR") for a in s.argv],
                "environment": [list(kv) for kv in s.environment], "gres": s.gres,
                "cpus": s.cpus, "mem_mb": s.mem_mb, "time_minutes": s.time_minutes,
                "partition": s.partition, "work_dir": s.work_dir,
                "secret_env": list(s.secret_env)}

    def render(self) -> str:
        return (f"# array task {self.index} of warpforge:{self.batch_id}\n"
                f"{ss.sh_argv(self.spec.argv)}\n")


@dataclass(frozen=True)
class ArrayRequest:
    """One sbatch job array: its script and the cells' specs in task order."""

    batch_id: str
    array: str
    tasks: tuple[Any, ...]  # ScriptSpec per task
    script: str

    @property
    def secret_env(self) -> tuple[str, ...]:
        return tuple(self.tasks[0].secret_env) if self.tasks else ()

    def to_dict(self) -> dict[str, Any]:
        return {"batch_correlation_id": self.batch_id, "array": self.array,
                "tasks": len(self.tasks), "script": self.script}

    def render(self) -> str:
        return self.script


def shape(spec) -> tuple:
    """Everything of a spec that becomes an ``#SBATCH`` line or the exec line: cells with
    equal shapes can share one array."""
    return (spec.work_dir, spec.cpus, spec.mem_mb, spec.time_minutes, spec.runtime,
            spec.gpu_type, spec.gpu_count, tuple(sorted(spec.images.items())), spec.partition,
            spec.account, spec.qos, spec.nice, tuple(spec.nodelist), tuple(spec.extra_options),
            tuple(spec.secret_env))


def group(specs: Sequence[Any]) -> list[list[int]]:
    """Positions of the specs, grouped by shape (first-seen order), each group cut into
    arrays of at most MAX_ARRAY_TASKS."""
    groups: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault(shape(spec), []).append(i)
    return [g[k:k + MAX_ARRAY_TASKS] for g in groups.values()
            for k in range(0, len(g), MAX_ARRAY_TASKS)]


def array_range(n: int, throttle: int | None) -> str:
    """``0-N`` and ``%throttle`` (at most that many tasks run at once)."""
    text = f"0-{n - 1}"
    return f"{text}%{throttle}" if throttle else text


def render(tasks: Sequence[Any], throttle: int | None = None,
           batch_id: str | None = None) -> ArrayRequest:
    """The array script of specs that share one shape; raises ScriptError on a value that
    cannot be quoted safely."""
    if not tasks:
        raise ss.ScriptError("an array needs at least one task")
    head = tasks[0]
    if any(shape(t) != shape(head) for t in tasks):
        raise ss.ScriptError("the tasks of one array must share their resources")
    batch_id = batch_id or str(uuid.uuid4())
    work_dir = ss.validate_work_dir(head.work_dir)
    for label, value in (("cpus", head.cpus), ("mem_mb", head.mem_mb),
                         ("time_minutes", head.time_minutes)):
        if not isinstance(value, int) or value <= 0:
            raise ss.ScriptError(f"{label} must be a positive integer, got {value!r}")
    if head.runtime not in ss.RUNTIMES:
        raise ss.ScriptError(f"unknown container runtime {head.runtime!r}")
    if head.runtime != "none" and head.image is None and head.gpu_type != "ANY":
        raise ss.ScriptError(f"no container image configured for GPU type {head.gpu_type}")
    array = array_range(len(tasks), throttle)
    script = _template().render(
        batch_id=batch_id, job_name=f"warpforge-{batch_id[:8]}", array=array,
        work_dir=work_dir, output_pattern=head.slurm_path("warpforge-%A_%a.out"),
        error_pattern=head.slurm_path("warpforge-%A_%a.err"), partition=head.partition,
        account=head.account, qos=head.qos, nice=head.nice, cpus=head.cpus,
        mem_mb=head.mem_mb, gres=head.gres, nodelist=list(ss.validate_nodes(head.nodelist)),
        time_minutes=head.time_minutes, extra_options=list(head.extra_options),
        runtime=head.runtime, gpu_type=head.gpu_type, gpu_flag=head.gpu_flag,
        image=head.image, images=ss._Images(head.images), secret_env=list(head.secret_env),
        tasks=len(tasks), cases=case_rows(tasks, head.gres))
    return ArrayRequest(batch_id, array, tuple(tasks), script)


def case_rows(tasks: Sequence[Any], gres: str | None) -> str:
    """The ``case`` arms of the script, one per task, quoted by slurm_script's filters (the
    words cells share, such as the payload path and flags, are quoted once)."""
    words: dict[str, str] = {}
    values: dict[str, str] = {}

    def word(arg: str) -> str:  # an argv word: the output-dir token becomes "$OUT_DIR"
        quoted = words.get(arg)
        if quoted is None:
            quoted = words[arg] = ss.sh_argv([arg])
        return quoted

    def value(text: str) -> str:  # an environment value: quoted as it is
        quoted = values.get(text)
        if quoted is None:
            quoted = values[text] = ss.sh(text)
        return quoted

    row_gres = ss.sh(gres or "")
    out = []
    for i, t in enumerate(tasks):
        env = "".join(f"{ss.env_name(k)}={value(v)} " for k, v in t.environment)
        out.append(f"{i})\n  CORRELATION_ID={ss.sh(t.correlation_id)}\n  ROW_GRES={row_gres}\n"
                   f"  ROW_ENV=({env})\n  ARGV=({' '.join(word(a) for a in t.argv)})\n  ;;\n")
    return "".join(out)


def plan_batch(sched, submissions: Sequence[Any], throttle: int | None) -> BatchPlan:
    """The arrays of a SlurmScheduler's batch and each cell's own plan (pure)."""
    from warpforge_launch.errors import UsageError

    specs = [sched.script_spec(s) for s in submissions]
    requests, jobs = [], [None] * len(specs)
    for members in group(specs):
        try:
            request = render([specs[i] for i in members], throttle)
        except ss.ScriptError as exc:
            raise UsageError(str(exc)) from None
        requests.append(request)
        for index, i in enumerate(members):
            spec = specs[i]
            out = f"{spec.work_dir}/output-${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
            payload = tuple(a.replace(ss.OUT_DIR_TOKEN, out) for a in spec.argv)
            jobs[i] = SubmissionPlan(
                sched.name, None, "sbatch-array-task", payload,
                ArrayTask(request.batch_id, index, spec), str(submissions[i].correlation_id),
                BatchRef(request.batch_id, index))
    return BatchPlan(sched.name, "sbatch-array", tuple(jobs), tuple(requests))


def _key(batch: BatchPlan) -> tuple[str, ...]:
    return tuple(a.batch_id for a in batch.requests)


def prepare(sched, batch: BatchPlan) -> None:
    """Start the driver of the batch's first round trip and send it that round trip's
    scripts: it reads and checks them while the caller records the jobs, and submits them
    when ``execute_batch`` sends GO (nothing is submitted before then)."""
    if batch.requests and _key(batch) not in sched.prepared:
        jobs, values = _jobs(batch)
        first = jobs[:remote.MAX_JOBS]
        data = remote.submit_input(first, values)  # bad input fails before anything starts
        started = sched.start_driver(batch.requests[0].tasks[0].work_dir, len(first))
        started.send(data)
        sched.prepared[_key(batch)] = (started, jobs, values)


def release(sched, batch: BatchPlan) -> None:
    prepared = sched.prepared.pop(_key(batch), None)
    if prepared is not None:
        prepared[0].abandon()  # it reads EOF instead of GO: nothing is submitted


def _jobs(batch: BatchPlan) -> tuple[list[remote.Job], dict[str, str]]:
    """The batch's scripts under names of their own, and the secret values they name."""
    import os
    import time

    from warpforge_launch import secrets

    stamp = f"{int(time.time())}-{os.urandom(4).hex()}"
    jobs = [remote.Job(f"warpforge-{stamp}-{k}.sbatch", a.script, a.secret_env)
            for k, a in enumerate(batch.requests)]
    return jobs, secrets.resolve(sorted({k for job in jobs for k in job.secret_env}))


def execute_batch(sched, batch: BatchPlan) -> dict[str, Any]:
    """Every array in ONE round trip; the cells of an array sbatch refused get its error,
    the others ``Submitted(<array job>_<task>)``."""
    arrays = list(batch.requests)
    if not arrays:
        return {}
    prepared = sched.prepared.pop(_key(batch), None)
    started, jobs, values = prepared if prepared is not None else (None, *_jobs(batch))
    results, stderr = {}, ""
    for k in range(0, len(jobs), remote.MAX_JOBS):
        chunk = jobs[k:k + remote.MAX_JOBS]
        done = sched._run_driver(arrays[0].tasks[0].work_dir, chunk, values,
                                 started if k == 0 else None,
                                 sent=k == 0 and started is not None)
        results.update(remote.submit_results(done.stdout))
        stderr = done.stderr
    by_array: dict[str, Any] = {}
    for job, array in zip(jobs, arrays, strict=True):
        rc, out = results.get(job.name, (-1, stderr or "no answer from the submit driver"))
        try:
            by_array[array.batch_id] = Submitted(sp.parse_sbatch_parsable(out)) if rc == 0 \
                else sched.rejected(out)
        except ValueError:
            by_array[array.batch_id] = sched.rejected(out)
    outcome: dict[str, Any] = {}
    for plan in batch.jobs:
        got = by_array[plan.batch.correlation_id]
        outcome[plan.correlation_id] = Submitted(
            sched.batch_native_id(got.native_id, plan.batch.index)) \
            if isinstance(got, Submitted) else got
    return outcome


@lru_cache(maxsize=1)
def _template():
    import jinja2  # lazy: only plan/submit need it

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters.update(sbatch_arg=ss.sbatch_arg, sh=ss.sh, sh_argv=ss.sh_argv,
                       env_name=ss.env_name, comment=ss.comment, secret_name=ss.secret_name,
                       require_env=ss.require_env)
    return env.from_string(_template_text())


def _template_text() -> str:
    try:
        packaged = resources.files("warpforge_launch").joinpath("templates/sbatch-array.sh.j2")
        if packaged.is_file():
            return packaged.read_text()
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    return (Path(__file__).resolve().parents[2] / "templates" / "sbatch-array.sh.j2").read_text()
