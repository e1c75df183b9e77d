"""snakegrinder's own input grammar: ``[(1, 128, 'i64'), (4,)]``.

A list of tuples, one per model input: the dimensions, then optionally a quoted dtype
(default f32). Parsed with ``ast.literal_eval`` so nothing in the text is executed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

DTYPES = ("f32", "f64", "f16", "bf16", "i32", "i64", "i16", "i8", "bool")
DEFAULT_DTYPE = "f32"


class InputSpecError(ValueError):
    """The --inputs text is not in snakegrinder's dialect (a usage error: exit 2)."""


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: str = DEFAULT_DTYPE

    def render(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        if len(self.shape) == 1:
            dims += ","
        return f"({dims})" if self.dtype == DEFAULT_DTYPE else f"({dims}, '{self.dtype}')"


def parse(text: str) -> tuple[InputSpec, ...]:
    """Parse ``[(1,8)]`` / ``[(1, 128, 'i64'), (1, 128, 'i64')]`` into specs."""
    if text is None or not text.strip():
        raise InputSpecError("--inputs is empty; expected e.g. [(1, 8)] or [(1, 128, 'i64')]")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as exc:
        raise InputSpecError(
            f"cannot parse --inputs {text!r}: expected e.g. [(1, 8)] or [(1, 128, 'i64')]"
        ) from exc
    if isinstance(value, tuple) and all(isinstance(v, tuple) for v in value) and value:
        value = list(value)  # "(1, 8), (2, 3)" without the brackets
    elif isinstance(value, tuple):
        value = [value]  # a single "(1, 8)"
    if not isinstance(value, list) or not value:
        raise InputSpecError(f"--inputs {text!r} must be a non-empty list of tuples")
    return tuple(_one(item, i) for i, item in enumerate(value))


def _one(item: object, index: int) -> InputSpec:
    if not isinstance(item, tuple):
        raise InputSpecError(f"input {index}: {item!r} is not a tuple like (1, 8)")
    parts = list(item)
    dtype = DEFAULT_DTYPE
    if parts and isinstance(parts[-1], str):
        dtype = parts.pop()
        if dtype not in DTYPES:
            raise InputSpecError(
                f"input {index}: unknown dtype {dtype!r} (one of {', '.join(DTYPES)})"
            )
    for dim in parts:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise InputSpecError(f"input {index}: dimension {dim!r} is not a positive integer")
    return InputSpec(tuple(parts), dtype)


def render(specs: tuple[InputSpec, ...]) -> str:
    return "[" + ", ".join(s.render() for s in specs) + "]"
