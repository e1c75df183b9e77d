"""Write the trace bundle in the real snakegrinder's layout and manifest keys.

``model.mlir``, ``fx_graph.txt``, ``manifest.json`` (kind ``snakegrinder-fx-trace-bundle``,
version 1 for a plain trace / 2 with values, status ok|failed, tracer, metadata, artifacts
{mlir, fx_graph, inputs[], weights[], weight_names[], outputs[]}, seed, weight_count,
timestamp), ``inputs/input_<i>.npy``, ``weights/weight_<i>.npy``, ``outputs/output_<i>.npy``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

KIND = "snakegrinder-fx-trace-bundle"
TRACER = "torch.fx.symbolic_trace"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _save_npy(path: Path, tensor) -> None:
    import numpy as np
    import torch

    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: widen exactly to f32
        t = t.to(torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, t.numpy(), allow_pickle=False)


def write_ok(out: Path, traced, metadata: dict, *, with_values: bool, seed: int | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.mlir").write_text(traced.mlir)
    (out / "fx_graph.txt").write_text(traced.fx_graph)
    artifacts: dict = {"mlir": "model.mlir", "fx_graph": "fx_graph.txt"}
    manifest: dict = {"kind": KIND, "version": 2 if with_values else 1, "status": "ok",
                      "tracer": TRACER, "metadata": metadata}
    if with_values:
        groups = (
            ("inputs", "input", traced.inputs),
            ("weights", "weight", [w for _, w in traced.weights]),
            ("outputs", "output", traced.outputs),
        )
        for key, stem, tensors in groups:
            paths = []
            for i, t in enumerate(tensors):
                rel = f"{key}/{stem}_{i}.npy"
                _save_npy(out / rel, t)
                paths.append(rel)
            artifacts[key] = paths
            if key == "weights":
                artifacts["weight_names"] = [n for n, _ in traced.weights]
    manifest["artifacts"] = artifacts
    if with_values:
        manifest["seed"] = seed
        manifest["weight_count"] = len(traced.weights)
    manifest["timestamp"] = _now()
    _write_manifest(out, manifest)
    return manifest


def write_failed(out: Path, error: str, metadata: dict, *, with_values: bool) -> None:
    """Best effort: a failed run still leaves a manifest saying why (if --out is writable)."""
    manifest = {"kind": KIND, "version": 2 if with_values else 1, "status": "failed",
                "tracer": TRACER, "error": error, "metadata": metadata, "artifacts": {},
                "timestamp": _now()}
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_manifest(out, manifest)
    except OSError:
        pass


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / "manifest.json")
