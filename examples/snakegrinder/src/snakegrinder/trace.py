"""Load a model, build seeded inputs, run it eagerly, trace it with torch.fx, lower it.

The seeded recipe (what a test or a user repeats to check ``outputs/*.npy``):
``torch.manual_seed(seed)``; ``model = cls(); model.eval()``; then each input in order
(float dtypes: ``torch.randn(shape)`` cast to the dtype; integer dtypes:
``torch.randint(0, 16, shape)``; bool: ``torch.randint(0, 2, shape).bool()``); then
``model(*inputs)`` under ``torch.no_grad()``.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.fx
from torch import nn

from snakegrinder.inputs import InputSpec
from snakegrinder.lowering import Unsupported, to_stablehlo

TORCH_DTYPES = {
    "f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16,
    "i32": torch.int32, "i64": torch.int64, "i16": torch.int16, "i8": torch.int8,
    "bool": torch.bool,
}
INT_INPUT_HIGH = 16


class TraceFailed(Exception):
    """The work failed (exit 1): the message is what follows ``FAILED: ``."""


@dataclass
class Traced:
    mlir: str
    fx_graph: str
    inputs: list[torch.Tensor] = field(default_factory=list)
    weights: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)


def load_class(source: Path, class_name: str) -> type[nn.Module]:
    """Import ``source`` as a fresh module and return its nn.Module subclass ``class_name``."""
    if not source.is_file():
        raise TraceFailed(f"cannot read source file {source}: no such file")
    name = f"snakegrinder_model_{abs(hash(str(source.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, source)
    if spec is None or spec.loader is None:
        raise TraceFailed(f"cannot load {source} as Python source")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report what broke, one line
        raise TraceFailed(f"importing {source} raised {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise TraceFailed(f"class {class_name} not found in {source}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TraceFailed(f"{class_name} in {source} is not a torch.nn.Module subclass")
    return cls


def make_input(spec: InputSpec) -> torch.Tensor:
    dtype = TORCH_DTYPES[spec.dtype]
    if dtype == torch.bool:
        return torch.randint(0, 2, spec.shape).bool()
    if dtype.is_floating_point:
        return torch.randn(spec.shape).to(dtype)
    return torch.randint(0, INT_INPUT_HIGH, spec.shape, dtype=dtype)


def trace(cls: type[nn.Module], specs: tuple[InputSpec, ...], seed: int) -> Traced:
    """Seeded build + eager run + fx trace + StableHLO lowering."""
    torch.manual_seed(seed)
    try:
        model = cls()
    except Exception as exc:  # noqa: BLE001 - the user's code: report it in one line
        raise TraceFailed(
            f"constructing {cls.__name__}() raised {type(exc).__name__}: {exc}") from exc
    model.eval()
    inputs = [make_input(s) for s in specs]
    try:
        with torch.no_grad():
            eager = model(*inputs)
    except Exception as exc:
        raise TraceFailed(
            f"running {cls.__name__} on inputs {[tuple(i.shape) for i in inputs]} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise TraceFailed(f"torch.fx.symbolic_trace failed: {type(exc).__name__}: {exc}") from exc
    try:
        mlir = to_stablehlo(gm, inputs)
    except Unsupported as exc:
        raise TraceFailed(f"{exc} is not supported") from exc
    fx_graph = gm.code.strip() + "\n\n" + str(gm.graph) + "\n"
    weights = [(k, v.detach()) for k, v in model.state_dict().items()]
    return Traced(mlir, fx_graph, inputs, weights, _tensors(eager))


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out.detach()]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    raise TraceFailed(f"model output of type {type(out).__name__} is not a tensor")
