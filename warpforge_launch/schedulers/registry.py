"""Scheduler types by name, imported on first use; third-party types via entry points.

Built-ins are a name -> "module:Class" table so `warpforge-launch status local-...` never
imports httpx, jinja2 or the kubernetes client.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from warpforge_launch import codec
from warpforge_launch.errors import UsageError
from warpforge_launch.schedulers.base import Scheduler

ENTRY_POINT_GROUP = "warpforge_launch.schedulers"
BUILTIN = {
    "local": "warpforge_launch.schedulers.local:LocalScheduler",
    "ray": "warpforge_launch.schedulers.ray:RayScheduler",
    "slurm": "warpforge_launch.schedulers.slurm:SlurmScheduler",
    "kubernetes": "warpforge_launch.schedulers.kubernetes:KubernetesScheduler",
}


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_types() -> list[str]:
    return sorted(set(BUILTIN) | set(_entry_points()))


def scheduler_class(type_name: str) -> type[Scheduler]:
    target = BUILTIN.get(type_name)
    if target is not None:
        module, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                raise UsageError(f"scheduler type {type_name!r} is not available in this "
                                 "version of warpforge-launch") from exc
            raise UsageError(f"scheduler type {type_name!r} needs the module {exc.name!r}",
                             hint="pip install the missing package") from exc
    else:
        ep = _entry_points().get(type_name)
        if ep is None:
            raise UsageError(f"unknown scheduler type {type_name!r}",
                             hint=f"known types: {', '.join(known_types())}")
        cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
        raise UsageError(f"scheduler type {type_name!r} does not implement the Scheduler interface")
    return cls


def create(name: str, type_name: str, config: Any, home: Path) -> Scheduler:
    """An instance from a validated Config object or its stored JSON form."""
    cls = scheduler_class(type_name)
    if isinstance(config, dict):
        config = codec.from_jsonable(cls.Config, config)
    return cls(name, config, home=home)
