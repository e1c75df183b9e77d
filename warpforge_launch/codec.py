"""JSON round-trip for the frozen dataclasses of the job model and scheduler configs.

One codec instead of a hand-written to_dict/from_dict per class: times are ISO-8601,
durations are seconds, enums are their values, sets are sorted lists. Kept free of pydantic
so that `status` and `list` start fast.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

_PLAIN = frozenset({str, int, float, bool, type(None)})  # exact types: a str enum is not one


def to_jsonable(value: Any) -> Any:
    t = type(value)
    if t in _PLAIN:
        return value  # the common case first: a sweep encodes thousands of these
    names = _field_names(t)
    if names is not None:
        out = {}
        for n in names:
            v = getattr(value, n)
            out[n] = v if type(v) in _PLAIN else to_jsonable(v)
        return out
    exact = _EXACT.get(t)  # the next most common types, by exact type: no ABC checks
    if exact is not None:
        return exact(value)
    if isinstance(value, enum.Enum):
        _EXACT[t] = _enum_value  # an enum class stays an enum class
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def _enum_value(value: enum.Enum) -> Any:
    return value.value


def _dict(value: dict) -> dict:
    return {str(k): v if type(v) in _PLAIN else to_jsonable(v) for k, v in value.items()}


def _items(value: list | tuple) -> list:
    return [v if type(v) in _PLAIN else to_jsonable(v) for v in value]


_EXACT: dict[type, Any] = {datetime: datetime.isoformat, timedelta: timedelta.total_seconds,
                           dict: _dict, list: _items, tuple: _items}


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """A dataclass's field names (None for any other type), looked up once per class."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_AS_IS = frozenset({str, int, float, bool, Any})  # from_jsonable returns such data unchanged


def _as_is(tp: Any) -> bool:
    """True when ``from_jsonable(tp, data)`` is ``data`` itself, whatever the data."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) != 1 or _as_is(args[0])
    return origin is typing.Literal or (origin is None and tp in _AS_IS)


@functools.cache
def _init_fields(cls: type) -> tuple[tuple[str, Any, bool], ...] | None:
    """A dataclass's init fields as (name, type, decoded as is), worked out once per class
    (None for any other type): a store read decodes hundreds of rows."""
    if not dataclasses.is_dataclass(cls):
        return None
    hints = _hints(cls)
    return tuple((f.name, hints[f.name], _as_is(hints[f.name]))
                 for f in dataclasses.fields(cls) if f.init)


def from_jsonable(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from what ``to_jsonable`` produced."""
    if data is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return from_jsonable(args[0], data) if len(args) == 1 else data
    if origin is typing.Literal:
        return data
    fields = _init_fields(tp) if isinstance(tp, type) else None
    if fields is not None:
        kwargs = {}
        for name, hint, as_is in fields:
            if name in data:
                v = data[name]
                kwargs[name] = v if as_is else from_jsonable(hint, v)
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if tp is datetime:
        dt = datetime.fromisoformat(data)
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    if tp is timedelta:
        return timedelta(seconds=float(data))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in data)
        return tuple(from_jsonable(a, v) for a, v in zip(args, data, strict=False))
    if origin in (frozenset, set):
        (arg,) = typing.get_args(tp)
        return frozenset(from_jsonable(arg, v) for v in data)
    if origin is list:
        (arg,) = typing.get_args(tp)
        return [from_jsonable(arg, v) for v in data]
    if origin in (dict, Mapping):
        args = typing.get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {k: from_jsonable(vt, v) for k, v in data.items()}
    return data
