import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.inputs import parse_inputs, to_snakegrinder
from warpforge_launch.jobs import InputSpec as S

GOOD = [
    ("[(1,3,224,224):f32, (2,4):i64]", (S((1, 3, 224, 224)), S((2, 4), "i64"))),
    ("[(1, 128, 'i64'), (1, 128, 'i64')]", (S((1, 128), "i64"), S((1, 128), "i64"))),
    ("[(1,8)]", (S((1, 8)),)),
    ("[(4,)]", (S((4,)),)),
    ('[(2, 2, "bf16")]', (S((2, 2), "bf16"),)),
    ("  [ ( 1 , 8 ) : bool ]  ", (S((1, 8), "bool"),)),
    ("[(1,8), (3,):'i8']", (S((1, 8)), S((3,), "i8"))),
    ("[(1,8),]", (S((1, 8)),)),
]
BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("[]", "no inputs"),
    ("[(1,8)", "unbalanced"),
    ("[(1,8]", "expected ')'"),
    ("(1,8)", "expected '['"),
    ("[(1,0)]", "dimension 0 must be a positive"),
    ("[(1,-3)]", "dimension -3 must be a positive"),
    ("[(1,8):f99]", "unknown dtype 'f99'"),
    ("[(1,8,'float')]", "unknown dtype 'float'"),
    ("[(1,'i64',8)]", "must come last"),
    ("[(1,'i64'):f32]", "dtype given twice"),
    ("[()]", "at least one dimension"),
    ("[(x,8)]", "expected a dimension"),
    ("[(1,8)] junk", "after the closing"),
    ("[(1;8)]", "unexpected character ';'"),
    ("[(1,8):]", "expected a dtype"),
    ("[(1 8)]", "expected ')'"),
]


@pytest.mark.parametrize("text,expected", GOOD)
def test_good_specs(text, expected):
    assert parse_inputs(text) == expected


@pytest.mark.parametrize("text,fragment", BAD)
def test_bad_specs_point_at_the_problem(text, fragment):
    with pytest.raises(UsageError) as err:
        parse_inputs(text)
    assert fragment in str(err.value)
    assert "column" in str(err.value) and "\n" not in str(err.value)


def test_payload_dialect_is_snakegrinders_own():
    specs = parse_inputs("[(1,3,224,224):f32, (2,4):i64, (5,)]")
    text = to_snakegrinder(specs)
    assert text == "[(1, 3, 224, 224, 'f32'), (2, 4, 'i64'), (5, 'f32')]"
    assert ":" not in text
    assert parse_inputs(text) == specs


def test_missing_spec():
    with pytest.raises(UsageError, match="no input spec"):
        parse_inputs(None)  # type: ignore[arg-type]
