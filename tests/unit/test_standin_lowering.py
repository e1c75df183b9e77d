"""The stand-in's fx -> StableHLO lowering: every supported op lowers to StableHLO that XLA
compiles and that computes what PyTorch computes; unsupported ops fail, never fake."""

import sys

import numpy as np
import pytest

from tests.testlab.standin import GOLDEN_SIMPLE_MLP, STANDIN_SRC, require_torch, run_stablehlo

pytestmark = pytest.mark.torch
require_torch(module_level=True)
sys.path.insert(0, str(STANDIN_SRC))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from snakegrinder.inputs import InputSpec, parse  # noqa: E402
from snakegrinder.trace import TraceFailed, trace  # noqa: E402
from torch import nn  # noqa: E402


def _module(forward, init=None):
    """A one-off nn.Module class whose forward is ``forward(self, *xs)``."""

    def __init__(self):
        nn.Module.__init__(self)
        if init:
            init(self)

    return type("M", (nn.Module,), {"__init__": __init__, "forward": forward})


def _linear(self):
    self.fc = nn.Linear(8, 5)


def _param(self):
    self.w = nn.Parameter(torch.randn(8, 3))
    self.b = nn.Parameter(torch.randn(3))


def _param_left(self):
    self.m = nn.Parameter(torch.randn(4, 4))


CASES = {
    "Linear": (_module(lambda s, x: s.fc(x), _linear), "[(2, 8)]", "stablehlo.dot_general"),
    "Linear on 3-D input": (_module(lambda s, x: s.fc(x), _linear), "[(2, 3, 8)]",
                            "contracting_dims = [2] x [1]"),
    "Linear without bias": (_module(lambda s, x: s.fc(x),
                                    lambda s: setattr(s, "fc", nn.Linear(8, 5, bias=False))),
                            "[(2, 8)]", "stablehlo.dot_general"),
    "F.linear": (_module(lambda s, x: F.linear(x, s.w.t(), s.b), _param), "[(2, 8)]",
                 "stablehlo.transpose"),
    "ReLU module": (_module(lambda s, x: s.r(x), lambda s: setattr(s, "r", nn.ReLU())),
                    "[(2, 8)]", "stablehlo.maximum"),
    "torch.relu": (_module(lambda s, x: torch.relu(x)), "[(2, 8)]", "stablehlo.maximum"),
    "Tensor.relu": (_module(lambda s, x: x.relu()), "[(2, 8)]", "stablehlo.maximum"),
    "add": (_module(lambda s, x, y: x + y), "[(2, 8), (2, 8)]", "stablehlo.add"),
    "add broadcast": (_module(lambda s, x, y: x + y), "[(2, 8), (8,)]",
                      "stablehlo.broadcast_in_dim"),
    "add scalar": (_module(lambda s, x: x + 2), "[(2, 8)]", "stablehlo.add"),
    "torch.add": (_module(lambda s, x, y: torch.add(x, y)), "[(2, 8), (2, 8)]", "stablehlo.add"),
    "add i64": (_module(lambda s, x: x + 3), "[(2, 8, 'i64')]", "xi64>"),
    "sub": (_module(lambda s, x, y: x - y), "[(2, 8), (2, 8)]", "stablehlo.subtract"),
    "mul": (_module(lambda s, x, y: x * y), "[(2, 8), (2, 8)]", "stablehlo.multiply"),
    "mul scalar": (_module(lambda s, x: x * 0.5), "[(2, 8)]", "stablehlo.multiply"),
    "Tensor.mul": (_module(lambda s, x, y: x.mul(y)), "[(2, 8), (1, 8)]", "stablehlo.multiply"),
    "div": (_module(lambda s, x, y: x / y), "[(2, 8), (2, 8)]", "stablehlo.divide"),
    "matmul 2-D": (_module(lambda s, x, y: x @ y), "[(3, 8), (8, 5)]", "contracting_dims"),
    "torch.matmul batched": (_module(lambda s, x, y: torch.matmul(x, y)),
                             "[(2, 3, 8), (2, 8, 5)]", "batching_dims = [0] x [0]"),
    "matmul broadcast": (_module(lambda s, x: torch.matmul(s.m, x), _param_left),
                         "[(2, 4, 6)]", "batching_dims"),
    "matmul vector": (_module(lambda s, x, y: x @ y), "[(3, 8), (8,)]", "stablehlo.reshape"),
    "torch.mm": (_module(lambda s, x, y: torch.mm(x, y)), "[(3, 8), (8, 5)]", "dot_general"),
    "torch.bmm": (_module(lambda s, x, y: torch.bmm(x, y)), "[(2, 3, 8), (2, 8, 5)]",
                  "batching_dims"),
    "Tensor.matmul": (_module(lambda s, x, y: x.matmul(y)), "[(3, 8), (8, 5)]", "dot_general"),
    "torch.flatten": (_module(lambda s, x: torch.flatten(x, 1)), "[(2, 3, 4)]",
                      "stablehlo.reshape"),
    "Flatten module": (_module(lambda s, x: s.f(x), lambda s: setattr(s, "f", nn.Flatten())),
                       "[(2, 3, 4)]", "stablehlo.reshape"),
    "reshape": (_module(lambda s, x: x.reshape(4, 6)), "[(2, 3, 4)]", "stablehlo.reshape"),
    "view with size()": (_module(lambda s, x: x.view(x.size(0), -1)), "[(2, 3, 4)]",
                         "stablehlo.reshape"),
    "transpose": (_module(lambda s, x: x.transpose(1, 2)), "[(2, 3, 4)]", "stablehlo.transpose"),
    "permute": (_module(lambda s, x: x.permute(2, 0, 1)), "[(2, 3, 4)]", "stablehlo.transpose"),
    "tanh": (_module(lambda s, x: torch.tanh(x)), "[(2, 8)]", "stablehlo.tanh"),
    "sigmoid": (_module(lambda s, x: torch.sigmoid(x)), "[(2, 8)]", "stablehlo.logistic"),
    "f64 input": (_module(lambda s, x: x * x + 1.0), "[(2, 8, 'f64')]", "xf64>"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_supported_op_lowers_and_computes_the_eager_result(name):
    cls, spec, needle = CASES[name]
    traced = trace(cls, parse(spec), seed=5)
    assert traced.mlir.startswith("module @main {\n  func.func public @forward(")
    assert needle in traced.mlir
    assert traced.mlir.rstrip().endswith("}") and "    stablehlo.return " in traced.mlir
    got = run_stablehlo(traced.mlir, [t.numpy() for t in traced.inputs])
    assert len(got) == len(traced.outputs)
    for g, want in zip(got, traced.outputs, strict=True):
        assert g.shape == tuple(want.shape)
        np.testing.assert_allclose(g, want.numpy(), rtol=1e-5, atol=1e-5)


def test_two_outputs_are_both_returned():
    cls = _module(lambda s, x: (x + 1, x * 2))
    traced = trace(cls, parse("[(2, 3)]"), seed=1)
    assert "-> (tensor<2x3xf32>, tensor<2x3xf32>)" in traced.mlir
    got = run_stablehlo(traced.mlir, [traced.inputs[0].numpy()])
    np.testing.assert_allclose(got[1], traced.outputs[1].numpy())


@pytest.mark.parametrize("forward, init, op", [
    (lambda s, x: s.sm(x), lambda s: setattr(s, "sm", nn.Softmax(dim=-1)), "Softmax"),
    (lambda s, x: torch.sin(x), None, "torch.sin"),
    (lambda s, x: x.softmax(-1), None, "Tensor.softmax"),
    (lambda s, x: F.gelu(x), None, "torch.nn.functional.gelu"),
    (lambda s, x: s.c(x.reshape(1, 1, 2, 4)),
     lambda s: setattr(s, "c", nn.Conv2d(1, 1, 1)), "Conv2d"),
])
def test_unsupported_op_fails_with_its_name(forward, init, op):
    with pytest.raises(TraceFailed, match=f"^{op} is not supported$"):
        trace(_module(forward, init), parse("[(2, 4)]"), seed=0)


def test_untraceable_control_flow_fails_clearly():
    def forward(s, x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(TraceFailed, match="symbolic_trace failed"):
        trace(_module(forward), parse("[(2, 4)]"), seed=0)


def test_wrong_input_shape_fails_clearly():
    with pytest.raises(TraceFailed, match=r"running M on inputs \[\(2, 7\)\]"):
        trace(_module(lambda s, x: s.fc(x), _linear), parse("[(2, 7)]"), seed=0)


def test_same_seed_same_mlir_other_seed_other_weights():
    cls = _module(lambda s, x: s.fc(x), _linear)
    a, b = trace(cls, parse("[(2, 8)]"), 1), trace(cls, parse("[(2, 8)]"), 1)
    c = trace(cls, parse("[(2, 8)]"), 2)
    assert a.mlir == b.mlir
    assert a.mlir != c.mlir
    assert torch.equal(a.outputs[0], b.outputs[0])


def test_simple_mlp_golden(tmp_path):
    """--trace-example's SimpleMLP MLIR, byte for byte (seed 42, torch pinned in pins.txt).

    Regenerate after an intended change: snakegrinder --trace-example --out DIR and copy
    DIR/model.mlir over examples/snakegrinder/tests/golden/simple_mlp.mlir.
    """
    from snakegrinder.example import INPUTS, SimpleMLP

    traced = trace(SimpleMLP, INPUTS, 42)
    assert traced.mlir == GOLDEN_SIMPLE_MLP.read_text()
    golden = GOLDEN_SIMPLE_MLP.read_text()
    assert golden.startswith("module @main {\n")
    assert "func.func public @forward(%arg0: tensor<1x8xf32>)" in golden
    assert "stablehlo.dot_general" in golden and "stablehlo.constant" in golden
    assert golden.rstrip().splitlines()[-3].strip().startswith("stablehlo.return")


def test_input_recipe_is_the_documented_one():
    specs = (InputSpec((2, 3)), InputSpec((4,), "i64"), InputSpec((2,), "bool"))
    traced = trace(_module(lambda s, x, y, z: x * 2), specs, seed=9)
    torch.manual_seed(9)
    x = torch.randn(2, 3)
    y = torch.randint(0, 16, (4,), dtype=torch.int64)
    z = torch.randint(0, 2, (2,)).bool()
    for got, want in zip(traced.inputs, (x, y, z), strict=True):
        assert torch.equal(got, want)
