"""Builders for what tests and benchmarks submit: inventories, model files, definitions and
submissions, with defaults that run the fake payload on the Local scheduler."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.testlab.payload import FAKE_SNAKEGRINDER
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import JobDefinition, JobSubmission


def inventory(path: Path, schedulers: dict[str, dict[str, Any]],
              default: str | None = None) -> Path:
    """An inventory file with these scheduler instances (``{name: {type: ..., ...}}``),
    written as JSON (a subset of YAML): any value is quoted correctly."""
    import json

    doc: dict[str, Any] = {"schedulers": schedulers}
    if default:
        doc["default_scheduler"] = default
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def local_inventory(path: Path, snakegrinder: Path = FAKE_SNAKEGRINDER, **settings) -> Path:
    """One Local instance, ``local``, running ``snakegrinder`` (the fake by default)."""
    return inventory(path, {"local": {"type": "local", "snakegrinder": str(snakegrinder),
                                      **settings}})


def model_file(directory: Path, name: str = "simple_mlp.py") -> Path:
    p = Path(directory) / name
    p.write_text("class SimpleMLP:\n    pass\n")
    return p


def definition(source: str | Path = "/models/simple_mlp.py", *, name: str = "simple_mlp",
               inputs: str = "[(1,8)]", model_class: str | None = "SimpleMLP",
               env: dict[str, str] | None = None, timeout: timedelta = timedelta(minutes=5),
               **fields: Any) -> JobDefinition:
    return JobDefinition(name=name, source=str(source), inputs=parse_inputs(inputs),
                         model_class=model_class, environment=env or {}, timeout=timeout,
                         **fields)


def submission(source: str | Path = "/models/simple_mlp.py", **kw: Any) -> JobSubmission:
    return JobSubmission.new(definition(source, **kw))
