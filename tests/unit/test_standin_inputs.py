"""The stand-in snakegrinder's --inputs grammar (its own dialect, not the launcher's)."""

import sys

import pytest

from tests.testlab.standin import STANDIN_SRC

sys.path.insert(0, str(STANDIN_SRC))
from snakegrinder.inputs import DTYPES, InputSpec, InputSpecError, parse, render


def test_default_dtype_is_f32():
    assert parse("[(1,8)]") == (InputSpec((1, 8), "f32"),)


def test_dtype_and_single_dim_tuple():
    assert parse("[(1, 128, 'i64'), (4,)]") == (InputSpec((1, 128), "i64"), InputSpec((4,)))


def test_double_quotes_and_bare_tuple():
    assert parse('(2, 3, "bf16")') == (InputSpec((2, 3), "bf16"),)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_documented_dtype(dtype):
    assert parse(f"[(2, '{dtype}')]")[0].dtype == dtype


def test_render_round_trips():
    text = "[(1, 128, 'i64'), (4,), (1, 8)]"
    assert render(parse(text)) == text
    assert parse(render(parse(text))) == parse(text)


@pytest.mark.parametrize("text", [
    "", "   ", "[]", "[(1,8):f32]", "[(1,3,224,224):f32]", "[(0, 8)]", "[(-1, 8)]",
    "[(1.5, 8)]", "[(1, 'f128')]", "[1, 2]", "hello", "[(True, 2)]",
    "__import__('os').system('true')",
])
def test_bad_specs_are_rejected(text):
    with pytest.raises(InputSpecError):
        parse(text)


def test_error_names_the_bad_dtype():
    with pytest.raises(InputSpecError, match="'f128'"):
        parse("[(1, 'f128')]")
