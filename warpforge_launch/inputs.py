"""Input-spec grammar: read both dialects, always write snakegrinder's own.

Launcher dialect:     [(1,3,224,224):f32, (2,4):i64]
snakegrinder dialect: [(1, 128, 'i64'), (4,)]
The original launcher wrote the first to the payload, which snakegrinder cannot parse;
here every backend gets ``to_snakegrinder(parse_inputs(text))``.
"""

from __future__ import annotations

import re

from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import DTYPES, InputSpec

_TOKEN = re.compile(
    r"""\s*(?:(?P<num>[+-]?\d+)|(?P<str>'[^']*'|"[^"]*")|(?P<word>[A-Za-z_]\w*)"""
    r"""|(?P<op>[\[\](),:])|(?P<bad>\S))""")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                break
            kind = m.lastgroup
            self.tokens.append((kind, m.group(kind), m.start(kind) + 1))
            pos = m.end()
        self.i = 0

    def fail(self, what: str, col: int | None = None) -> UsageError:
        if col is None:
            col = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text) + 1
        return UsageError(f"bad input spec {self.text!r} at column {col}: {what}",
                          hint="write e.g. [(1, 8)] or [(1,3,224,224):f32, (2,4):i64]")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            expected = repr(value) if value else (kind or "more")
            raise self.fail(f"unexpected end, expected {expected}"
                            + (" (unbalanced brackets?)" if value in ("]", ")") else ""))
        if tok[0] == "bad":
            raise self.fail(f"unexpected character {tok[1]!r}")
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise self.fail(f"expected {value or kind!r}, found {tok[1]!r}")
        self.i += 1
        return tok

    def dtype(self, tok: tuple[str, str, int]) -> str:
        name = tok[1].strip("'\"")
        if name not in DTYPES:
            raise self.fail(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}", tok[2])
        return name

    def spec(self) -> InputSpec:
        self.take("(")
        dims: list[int] = []
        dtype: str | None = None
        while True:
            tok = self.peek()
            if tok and tok[1] == ")":
                break
            if dtype is not None:
                raise self.fail("the quoted dtype must come last in a tuple")
            if tok and tok[0] == "str":
                dtype = self.dtype(self.take(kind="str"))
            else:
                if tok and tok[0] in ("word", "str"):
                    raise self.fail(f"expected a dimension, found {tok[1]!r}")
                num = self.take(kind="num")
                if int(num[1]) <= 0:
                    raise self.fail(f"dimension {num[1]} must be a positive integer", num[2])
                dims.append(int(num[1]))
            if self.peek() and self.peek()[1] == ",":
                self.take(",")
            elif not (self.peek() and self.peek()[1] == ")"):
                self.take(")")
        close = self.take(")")
        if not dims:
            raise self.fail("an input needs at least one dimension", close[2])
        if self.peek() and self.peek()[1] == ":":
            self.take(":")
            if dtype is not None:
                raise self.fail("dtype given twice (quoted and after ':')")
            tok = self.peek()
            if tok is None or tok[0] not in ("word", "str"):
                raise self.fail("expected a dtype after ':'")
            dtype = self.dtype(self.take())
        return InputSpec(tuple(dims), dtype or "f32")

    def parse(self) -> tuple[InputSpec, ...]:
        if not self.tokens:
            raise self.fail("the spec is empty", 1)
        self.take("[")
        specs: list[InputSpec] = []
        while self.peek() and self.peek()[1] != "]":
            specs.append(self.spec())
            if self.peek() and self.peek()[1] == ",":
                self.take(",")
            elif not (self.peek() and self.peek()[1] == "]"):
                self.take("]")
        self.take("]")
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r} after the closing ']'")
        if not specs:
            raise self.fail("no inputs in the list", 1)
        return tuple(specs)


def parse_inputs(text: str) -> tuple[InputSpec, ...]:
    """Parse an input spec in either dialect; errors name the column at fault."""
    if text is None:
        raise UsageError("no input spec given", hint="pass --inputs '[(1, 8)]'")
    return _Parser(text).parse()


def to_snakegrinder(specs: tuple[InputSpec, ...]) -> str:
    """snakegrinder's own dialect, dtype always explicit: [(1, 8, 'f32')]."""
    return "[" + ", ".join(
        "(" + ", ".join([*map(str, s.shape), repr(s.dtype)]) + ")" for s in specs) + "]"
