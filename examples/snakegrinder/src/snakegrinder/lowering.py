"""Lower a torch.fx graph to StableHLO MLIR text, in the form the real snakegrinder emits.

Shapes and dtypes come from running ShapeProp on the sample inputs, so every tensor type is
static. Weights become ``stablehlo.constant`` ops holding the real values (hex dense
literals, exact to the bit). Anything outside the small supported op set raises
``Unsupported``: the caller reports ``FAILED: <op> is not supported`` and never emits a fake.

The shape of the text follows the real binary: ``module @main {``, one
``func.func public @forward(...) -> (...)``, pretty-printed stablehlo ops, and a closing
``stablehlo.return``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

MLIR_DTYPES = {
    torch.float32: "f32",
    torch.float64: "f64",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.bool: "i1",
}


class Unsupported(Exception):
    """An op the stand-in cannot lower; str() is the op's user-facing name."""


@dataclass(frozen=True)
class Value:
    """An SSA value with its static type."""

    ssa: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def type(self) -> str:
        return tensor_type(self.shape, self.dtype)


def tensor_type(shape: tuple[int, ...], dtype: torch.dtype) -> str:
    elem = MLIR_DTYPES.get(dtype)
    if elem is None:
        raise Unsupported(f"dtype {dtype}")
    return "tensor<" + "".join(f"{d}x" for d in shape) + elem + ">"


def _scalar_literal(value: Any, dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "true" if value else "false"
    if dtype.is_floating_point:
        return f"{float(value):.6e}"
    return str(int(value))


def dense_literal(t: torch.Tensor) -> str:
    """``dense<...>`` for a tensor: a splat when all elements are equal, else exact hex bytes."""
    t = t.detach().cpu().contiguous()
    flat = t.reshape(-1)
    if flat.numel() == 0:
        raise Unsupported("empty tensor constant")
    if flat.numel() == 1 or bool((flat == flat[0]).all()):
        return f"dense<{_scalar_literal(flat[0].item(), t.dtype)}>"
    if t.dtype == torch.bool:  # i1 hex is bit-packed in MLIR: spell the elements out
        return "dense<[" + ", ".join("true" if b else "false" for b in flat.tolist()) + "]>"
    raw = flat.view(torch.uint8).numpy().tobytes()
    return f'dense<"0x{raw.hex().upper()}">'


def _fn_name(fn: Any) -> str:
    """The name a user wrote: torch.nn.functional.gelu, torch.sin, operator.pow."""
    name = getattr(fn, "__name__", None) or repr(fn)
    for prefix, namespace in (("torch.nn.functional", F), ("torch", torch), ("operator", operator)):
        if getattr(namespace, name, None) is fn:
            return f"{prefix}.{name}"
    module = getattr(fn, "__module__", None) or ""
    return f"{module}.{name}" if module else name


_ADD = {operator.add, torch.add, operator.iadd}
_SUB = {operator.sub, torch.sub, operator.isub}
_MUL = {operator.mul, torch.mul, operator.imul}
_DIV = {operator.truediv, torch.div, operator.itruediv}
_BINARY_FN = {
    **{f: "add" for f in _ADD},
    **{f: "subtract" for f in _SUB},
    **{f: "multiply" for f in _MUL},
    **{f: "divide" for f in _DIV},
}
_BINARY_METHOD = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide",
                  "add_": "add", "sub_": "subtract", "mul_": "multiply", "div_": "divide"}
_UNARY_FN = {torch.tanh: "tanh", torch.sigmoid: "logistic", F.sigmoid: "logistic",
             torch.neg: "negate", operator.neg: "negate", torch.exp: "exponential"}
_UNARY_METHOD = {"tanh": "tanh", "sigmoid": "logistic", "neg": "negate", "exp": "exponential"}
_UNARY_MODULE = {nn.Tanh: "tanh", nn.Sigmoid: "logistic"}
_RELU_FN = {torch.relu, F.relu}
_MATMUL_FN = {torch.matmul, operator.matmul, torch.mm, torch.bmm}
_RESHAPE_FN = {torch.flatten, torch.reshape}
_RESHAPE_METHOD = {"flatten", "reshape", "view"}
_IDENTITY_METHOD = {"contiguous", "clone", "detach"}
_STATIC_METHOD = {"size", "dim"}


class Lowering:
    """One pass over a ShapeProp-annotated GraphModule, emitting MLIR lines."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm
        self.lines: list[str] = []
        self.counter = 0
        self.values: dict[torch.fx.Node, Value] = {}
        self.static: dict[torch.fx.Node, Any] = {}  # compile-time ints (x.size(0), x.shape)

    # -- emission helpers -------------------------------------------------------------
    def _fresh(self) -> str:
        ssa = f"%{self.counter}"
        self.counter += 1
        return ssa

    def _emit(self, text: str, shape, dtype) -> Value:
        value = Value(self._fresh(), tuple(shape), dtype)
        self.lines.append(f"    {value.ssa} = {text}")
        return value

    def _comment(self, text: str) -> None:
        self.lines.append(f"    // {text}")

    def constant(self, t: torch.Tensor) -> Value:
        shape = tuple(t.shape)
        return self._emit(
            f"stablehlo.constant {dense_literal(t)} : {tensor_type(shape, t.dtype)}", shape, t.dtype
        )

    def splat(self, scalar: Any, shape, dtype) -> Value:
        lit = _scalar_literal(scalar, dtype)
        return self._emit(
            f"stablehlo.constant dense<{lit}> : {tensor_type(tuple(shape), dtype)}", shape, dtype
        )

    def convert(self, v: Value, dtype: torch.dtype) -> Value:
        if v.dtype == dtype:
            return v
        out = tensor_type(v.shape, dtype)
        return self._emit(f"stablehlo.convert {v.ssa} : ({v.type}) -> {out}", v.shape, dtype)

    def broadcast(self, v: Value, shape: tuple[int, ...], dims: list[int] | None = None) -> Value:
        """broadcast_in_dim with numpy's right-aligned rule unless dims are given."""
        shape = tuple(shape)
        if v.shape == shape:
            return v
        if dims is None:
            dims = [len(shape) - len(v.shape) + i for i in range(len(v.shape))]
        out = tensor_type(shape, v.dtype)
        return self._emit(
            f"stablehlo.broadcast_in_dim {v.ssa}, dims = {_dims(dims)} : ({v.type}) -> {out}",
            shape, v.dtype,
        )

    def reshape(self, v: Value, shape: tuple[int, ...]) -> Value:
        shape = tuple(shape)
        if v.shape == shape:
            return v
        out = tensor_type(shape, v.dtype)
        return self._emit(f"stablehlo.reshape {v.ssa} : ({v.type}) -> {out}", shape, v.dtype)

    def elementwise(self, op: str, operands: list[Value], shape, dtype) -> Value:
        ssas = ", ".join(o.ssa for o in operands)
        return self._emit(f"stablehlo.{op} {ssas} : {tensor_type(tuple(shape), dtype)}",
                          shape, dtype)

    def dot_general(self, lhs: Value, rhs: Value, batching: int, lhs_c: int, rhs_c: int,
                    shape, dtype) -> Value:
        attrs = []
        if batching:
            b = _dims(list(range(batching)))
            attrs.append(f"batching_dims = {b} x {b}")
        attrs.append(f"contracting_dims = [{lhs_c}] x [{rhs_c}]")
        out = tensor_type(tuple(shape), dtype)
        return self._emit(
            f"stablehlo.dot_general {lhs.ssa}, {rhs.ssa}, {', '.join(attrs)} : "
            f"({lhs.type}, {rhs.type}) -> {out}",
            shape, dtype,
        )

    # -- node helpers -----------------------------------------------------------------
    def _meta(self, node: torch.fx.Node) -> tuple[tuple[int, ...], torch.dtype]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise Unsupported(f"{node.op} {node.target} producing a non-tensor value")
        return tuple(int(d) for d in meta.shape), meta.dtype

    def _operand(self, arg: Any, shape, dtype) -> Value:
        """A node or Python scalar as a value of exactly (shape, dtype)."""
        if isinstance(arg, torch.fx.Node):
            if arg in self.static:
                return self.splat(self.static[arg], shape, dtype)
            v = self.convert(self.values[arg], dtype)
            return self.broadcast(v, tuple(shape))
        if isinstance(arg, (bool, int, float)):
            return self.splat(arg, shape, dtype)
        raise Unsupported(f"operand {arg!r}")

    def _value(self, arg: Any) -> Value:
        if isinstance(arg, torch.fx.Node) and arg in self.values:
            return self.values[arg]
        raise Unsupported(f"operand {arg!r}")

    # -- the pass ---------------------------------------------------------------------
    def run(self) -> str:
        graph = self.gm.graph
        args = []
        for node in graph.nodes:
            if node.op == "placeholder":
                shape, dtype = self._meta(node)
                v = Value(f"%arg{len(args)}", shape, dtype)
                self.values[node] = v
                args.append(v)
        outputs: list[Value] = []
        for node in graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                outputs = [self._value(a) for a in _flatten_output(node.args[0])]
                continue
            self._lower(node)
        sig = ", ".join(f"{a.ssa}: {a.type}" for a in args)
        results = ", ".join(o.type for o in outputs)
        head = ["module @main {", f"  func.func public @forward({sig}) -> ({results}) {{"]
        ret = ", ".join(o.ssa for o in outputs)
        tail = [f"    stablehlo.return {ret} : {results}", "  }", "}"]
        return "\n".join(head + self.lines + tail) + "\n"

    def _lower(self, node: torch.fx.Node) -> None:
        if node.op == "get_attr":
            attr = _fetch_attr(self.gm, node.target)
            if not isinstance(attr, torch.Tensor):
                raise Unsupported(f"attribute {node.target}")
            self.values[node] = self.constant(attr)
        elif node.op == "call_module":
            self._lower_module(node, self.gm.get_submodule(node.target))
        elif node.op == "call_function":
            self._lower_function(node)
        elif node.op == "call_method":
            self._lower_method(node)
        else:
            raise Unsupported(f"{node.op} {node.target}")

    def _lower_module(self, node, mod: nn.Module) -> None:
        kind = type(mod)
        if kind is nn.Linear:
            self._comment(f"{node.target}: Linear({mod.in_features} -> {mod.out_features})")
            bias = mod.bias if mod.bias is not None else None
            self.values[node] = self._linear(node, self._value(node.args[0]), mod.weight, bias)
        elif kind is nn.ReLU:
            self._comment(f"{node.target}: ReLU")
            self.values[node] = self._relu(node)
        elif kind is nn.Flatten:
            self._comment(f"{node.target}: Flatten")
            self.values[node] = self.reshape(self._value(node.args[0]), self._meta(node)[0])
        elif kind in (nn.Identity, nn.Dropout) and not (kind is nn.Dropout and mod.training):
            self.values[node] = self._value(node.args[0])
        elif kind in _UNARY_MODULE:
            self._comment(f"{node.target}: {kind.__name__}")
            self.values[node] = self._unary(node, _UNARY_MODULE[kind])
        else:
            raise Unsupported(kind.__name__)

    def _lower_function(self, node) -> None:
        fn = node.target
        if fn in _BINARY_FN:
            self._binary(node, _BINARY_FN[fn])
        elif fn in _RELU_FN:
            self.values[node] = self._relu(node)
        elif fn in _UNARY_FN:
            self.values[node] = self._unary(node, _UNARY_FN[fn])
        elif fn in _MATMUL_FN:
            self.values[node] = self._matmul(node)
        elif fn in _RESHAPE_FN:
            self.values[node] = self.reshape(self._value(node.args[0]), self._meta(node)[0])
        elif fn is F.linear:
            x, w = node.args[0], node.args[1]
            b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            self.values[node] = self._linear_values(node, self._value(x), self._value(w),
                                                    self._value(b) if b is not None else None)
        elif fn in (torch.transpose, torch.permute, torch.t):
            self.values[node] = self._transpose(node)
        elif fn is getattr and node.args[1] == "shape" and node.args[0] in self.values:
            self.static[node] = self.values[node.args[0]].shape
        elif fn is operator.getitem and node.args[0] in self.static:
            self.static[node] = self.static[node.args[0]][node.args[1]]
        else:
            raise Unsupported(_fn_name(fn))

    def _lower_method(self, node) -> None:
        name = node.target
        if name in _BINARY_METHOD:
            self._binary(node, _BINARY_METHOD[name])
        elif name in ("relu", "relu_"):
            self.values[node] = self._relu(node)
        elif name in _UNARY_METHOD:
            self.values[node] = self._unary(node, _UNARY_METHOD[name])
        elif name == "matmul":
            self.values[node] = self._matmul(node)
        elif name in _RESHAPE_METHOD:
            self.values[node] = self.reshape(self._value(node.args[0]), self._meta(node)[0])
        elif name in _IDENTITY_METHOD:
            self.values[node] = self._value(node.args[0])
        elif name in ("t", "transpose", "permute"):
            self.values[node] = self._transpose(node)
        elif name in _STATIC_METHOD:
            shape = self._value(node.args[0]).shape
            if name == "dim":
                self.static[node] = len(shape)
            else:
                dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
                self.static[node] = shape if dim is None else shape[dim]
        else:
            raise Unsupported(f"Tensor.{name}")

    # -- op lowerings -----------------------------------------------------------------
    def _binary(self, node, op: str) -> None:
        if set(node.kwargs) - {"other"} or len(node.args) != 2 and "other" not in node.kwargs:
            raise Unsupported(f"{op} with {sorted(node.kwargs)}")
        lhs = node.args[0]
        rhs = node.args[1] if len(node.args) > 1 else node.kwargs["other"]
        if all(not isinstance(a, torch.fx.Node) or a in self.static for a in (lhs, rhs)):
            self.static[node] = _python_binary(op, self._static(lhs), self._static(rhs))
            return
        shape, dtype = self._meta(node)
        operands = [self._operand(lhs, shape, dtype), self._operand(rhs, shape, dtype)]
        self.values[node] = self.elementwise(op, operands, shape, dtype)

    def _static(self, arg):
        return self.static[arg] if isinstance(arg, torch.fx.Node) else arg

    def _relu(self, node) -> Value:
        shape, dtype = self._meta(node)
        x = self._operand(node.args[0], shape, dtype)
        zero = self.splat(0, shape, dtype)
        return self.elementwise("maximum", [x, zero], shape, dtype)

    def _unary(self, node, op: str) -> Value:
        shape, dtype = self._meta(node)
        return self.elementwise(op, [self._operand(node.args[0], shape, dtype)], shape, dtype)

    def _linear(self, node, x: Value, weight: torch.Tensor, bias: torch.Tensor | None) -> Value:
        w = self.constant(weight)
        b = self.constant(bias) if bias is not None else None
        return self._linear_values(node, x, w, b)

    def _linear_values(self, node, x: Value, w: Value, b: Value | None) -> Value:
        shape, dtype = self._meta(node)
        x = self.convert(x, dtype)
        y = self.dot_general(x, w, 0, len(x.shape) - 1, 1, shape, dtype)
        if b is None:
            return y
        bb = self.broadcast(self.convert(b, dtype), shape, [len(shape) - 1])
        return self.elementwise("add", [y, bb], shape, dtype)

    def _matmul(self, node) -> Value:
        shape, dtype = self._meta(node)
        a = self.convert(self._value(node.args[0]), dtype)
        b = self.convert(self._value(node.args[1]), dtype)
        if len(a.shape) == 1:
            a = self.reshape(a, (1, a.shape[0]))
        if len(b.shape) == 1:
            b = self.reshape(b, (b.shape[0], 1))
        batch = tuple(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        a = self.broadcast(a, batch + a.shape[-2:])
        b = self.broadcast(b, batch + b.shape[-2:])
        k = len(batch)
        full = batch + (a.shape[-2], b.shape[-1])
        y = self.dot_general(a, b, k, k + 1, k, full, dtype)
        return self.reshape(y, shape)

    def _transpose(self, node) -> Value:
        x = self._value(node.args[0])
        rank = len(x.shape)
        name = node.target if isinstance(node.target, str) else node.target.__name__
        if name == "t":
            perm = list(range(rank))[::-1]
        elif name == "transpose":
            d0, d1 = (int(d) % rank for d in node.args[1:3])
            perm = list(range(rank))
            perm[d0], perm[d1] = perm[d1], perm[d0]
        else:
            dims = node.args[1:] if len(node.args) > 2 else node.args[1]
            perm = [int(d) % rank for d in dims]
        shape, dtype = self._meta(node)
        if perm == list(range(rank)):
            return x
        return self._emit(
            f"stablehlo.transpose {x.ssa}, dims = {_dims(perm)} : ({x.type}) -> "
            f"{tensor_type(shape, dtype)}",
            shape, dtype,
        )


def _dims(dims: list[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _python_binary(op: str, a, b):
    return {"add": operator.add, "subtract": operator.sub, "multiply": operator.mul,
            "divide": operator.truediv}[op](a, b)


def _flatten_output(arg) -> list:
    if isinstance(arg, (tuple, list)):
        out = []
        for a in arg:
            out.extend(_flatten_output(a))
        return out
    if isinstance(arg, torch.fx.Node):
        return [arg]
    raise Unsupported(f"model output {arg!r}")


def _fetch_attr(gm: torch.fx.GraphModule, target: str):
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def to_stablehlo(gm: torch.fx.GraphModule, sample_inputs: list[torch.Tensor]) -> str:
    """Annotate shapes with the sample inputs, then lower the graph."""
    with torch.no_grad():
        ShapeProp(gm).propagate(*sample_inputs)
    return Lowering(gm).run()
