"""The ``POST /api/jobs/`` request of one job, rendered before anything is sent.

What Ray does that shapes the body (checked against Ray 2.60):
- The entrypoint runs under ``/bin/sh -c`` with the PATH and cwd of ``ray start``: it is
  ``shlex.join`` of the payload argv, whose program is an absolute path.
- GPUs go in ``entrypoint_num_gpus`` (``{"GPU": n}`` in ``entrypoint_resources`` is accepted
  and then fails); the vendor is a custom resource the workers declare (``nvidia``/``amd``),
  so an AMD job cannot land on an NVIDIA worker.
- ``runtime_env.env_vars`` values go through ``os.path.expandvars`` on the worker and unknown
  ``${X}`` vanish, with no escape: values holding a ``$`` travel through ``env`` in the
  entrypoint instead, quoted like every argument.
- Metadata values must be strings.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping
from typing import Any

from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import GpuType, JobSubmission, ResourceRequirements
from warpforge_launch.schedulers.ray_package import SourcePackage
from warpforge_launch.schedulers.ray_parse import CORRELATION_KEY, META_PREFIX, iso

ENV_COMMAND = "/usr/bin/env"  # carries env values Ray would expand
IDENTITY_ENV = ("WARPFORGE_JOB_ID", "WARPFORGE_CORRELATION_ID")
MASK = "***"


@dataclasses.dataclass(frozen=True)
class RayRequest:
    """The job body and the source package it needs; secret-free.

    ``--secret-env`` names stand in the body's env_vars as ``***``; ``wire_body`` puts the
    values in, inside ``execute`` only.
    """

    body: dict[str, Any]
    package: SourcePackage | None = None
    secret_env: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"body": self.body}
        if self.package is not None:
            out["package"] = self.package.to_dict()
        if self.secret_env:
            out["secret_env"] = list(self.secret_env)
        return out

    def render(self) -> str:
        return json.dumps(self.body, indent=2, sort_keys=True)

    def wire_body(self, secrets: Mapping[str, str]) -> dict[str, Any]:
        """The body as sent: secret values in runtime_env.env_vars (never in the entrypoint)."""
        if not self.secret_env:
            return self.body
        dollar = sorted(k for k in self.secret_env if "$" in secrets[k])
        if dollar:
            raise UsageError(
                f"--secret-env {', '.join(dollar)}: Ray expands '$' in environment values and "
                "has no escape, so this value would arrive changed",
                hint="pass the secret without '$' (e.g. base64-encoded) and decode it in the job",
            )
        runtime_env = dict(self.body["runtime_env"])
        runtime_env["env_vars"] = {
            **runtime_env["env_vars"], **{k: secrets[k] for k in self.secret_env}}
        return {**self.body, "runtime_env": runtime_env}



def build(config, instance: str, submission: JobSubmission) -> tuple[list[str], RayRequest]:
    """The payload argv and the request for one submission (reads the source once)."""
    from warpforge_launch.payload import snakegrinder_argv
    from warpforge_launch.schedulers import ray_package

    definition = submission.definition
    res = definition.resources
    sid = f"wf-{submission.short_id}"
    job_id = f"{instance}-{sid}"
    out_dir = f"{config.output_root.rstrip('/')}/{sid}"
    package = None
    if config.upload_source:
        # the job's cwd is the unpacked package, so the payload reads the file by name
        package = ray_package.build(definition.source)
        definition = dataclasses.replace(definition, source=package.file_name)
    argv = snakegrinder_argv(config.snakegrinder, definition, out_dir)
    clash = sorted(set(definition.secret_env) & set(IDENTITY_ENV))
    if clash:
        raise UsageError(f"--secret-env {', '.join(clash)}: the job's identity variable")
    env = {str(k): str(v) for k, v in definition.environment.items()}
    literal = {k: v for k, v in env.items() if "$" in v and k not in IDENTITY_ENV}
    env = {k: v for k, v in env.items() if k not in literal}
    env.update(WARPFORGE_JOB_ID=job_id, WARPFORGE_CORRELATION_ID=str(submission.correlation_id))
    env.update({name: MASK for name in definition.secret_env})
    prefix: list[str] = []
    if literal:
        prefix += [ENV_COMMAND, "--", *(f"{k}={v}" for k, v in sorted(literal.items()))]
    if config.timeout_command:
        seconds = max(1, int(definition.timeout.total_seconds()))
        prefix += [config.timeout_command, "--kill-after=30", f"{seconds}s"]
    body: dict[str, Any] = {
        "entrypoint": shlex.join([*prefix, *argv]),
        "submission_id": sid,
        "entrypoint_num_cpus": res.cpu_cores,
        "entrypoint_num_gpus": res.gpu_count if res.gpu_type != GpuType.NONE else 0,
        "entrypoint_memory": int(res.memory_mb) * 1024 * 1024,
    }
    resources = custom_resources(config, instance, res)
    if resources:
        body["entrypoint_resources"] = resources
    body["runtime_env"] = {"env_vars": env}
    if package is not None:
        body["runtime_env"]["working_dir"] = package.uri
    body["metadata"] = {
        "job_name": definition.name,
        f"{META_PREFIX}instance": instance,
        f"{META_PREFIX}job_id": job_id,
        CORRELATION_KEY: str(submission.correlation_id),
        f"{META_PREFIX}submitted_by": str(submission.submitted_by),
        f"{META_PREFIX}submitted_at": iso(submission.submitted_at),
        f"{META_PREFIX}job_name": definition.name,
    }
    return argv, RayRequest(body, package, tuple(definition.secret_env))


def custom_resources(config, instance: str, res: ResourceRequirements) -> dict[str, float]:
    """The vendor's custom resource and a node pin; what Ray cannot honour is refused."""
    if res.queue:
        raise UsageError(
            f"Ray has no queues: --queue {res.queue!r} cannot be honoured",
            hint="drop --queue, or submit to a Slurm scheduler",
        )
    out: dict[str, float] = {}
    if res.gpu_type in (GpuType.NVIDIA, GpuType.AMD):
        resource = config.gpu_resources.get(res.gpu_type.name)
        if resource is None:
            raise UsageError(
                f"ray scheduler {instance!r} has no resource for {res.gpu_type.name} GPUs",
                hint=f"add gpu_resources.{res.gpu_type.name} to schedulers.{instance}",
            )
        out[resource] = res.gpu_count
    affinity = sorted(res.node_affinity)
    if len(affinity) > 1:
        raise UsageError(
            "ray can pin a job to one node only; got node affinity " + ", ".join(affinity)
        )
    if affinity:
        # every Ray node has the resource node:<ip> = 1; a sliver of it pins the job there
        out[f"node:{affinity[0]}"] = 0.001
    return out
