"""Test helpers for the stand-in snakegrinder: run it, build its dist, and execute its MLIR.

``run_stablehlo`` compiles the stand-in's StableHLO text with XLA (jaxlib's CPU client) and
runs it, so tests compare what the MLIR *computes* with PyTorch's eager result instead of
trusting the text. jaxlib is a test-only dependency (installed by .ci/setup.d/20-torch.sh).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "examples" / "snakegrinder"
STANDIN_SRC = STANDIN / "src"
MODELS = REPO / "examples" / "models"
GOLDEN_SIMPLE_MLP = STANDIN / "tests" / "golden" / "simple_mlp.mlir"
RUN_TIMEOUT = 300


def run_source(*args: str, cwd: Path | None = None, timeout: float = RUN_TIMEOUT):
    """The stand-in from its source tree, with the test interpreter (which has torch)."""
    env = dict(os.environ, PYTHONPATH=str(STANDIN_SRC))
    return subprocess.run([sys.executable, "-m", "snakegrinder", *args], cwd=cwd, env=env,
                          check=False,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def build_dist(out: Path, *extra: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STANDIN / "build.py"), "--out", str(out), *extra],
                          check=False,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def bare_env(home: Path) -> dict[str, str]:
    """What a box with only python3 offers: the system PATH, no venv, no PYTHONPATH."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def require_torch(module_level: bool = False):
    """torch or a loud skip (a failure in CI); module_level for use at import time."""
    try:
        import torch  # noqa: F401
    except ImportError:
        from tests.conftest import lab_unavailable, require_lab

        reason = "torch is not installed in the test venv (.ci/setup.d/20-torch.sh)"
        if module_level and not require_lab():
            pytest.skip(f"LAB COMPONENT UNAVAILABLE: {reason}", allow_module_level=True)
        lab_unavailable(reason)


def _xla():
    try:
        from jaxlib import xla_client
    except ImportError:
        from tests.conftest import lab_unavailable

        lab_unavailable("jaxlib (XLA) is not installed in the test venv (.ci/setup.d/20-torch.sh)")
    return xla_client


_CLIENT = None


def _mlir_type(arr) -> str:
    elem = {"float32": "f32", "float64": "f64", "float16": "f16", "int32": "i32",
            "int64": "i64", "int16": "i16", "int8": "i8"}[str(arr.dtype)]
    return "tensor<" + "".join(f"{d}x" for d in arr.shape) + elem + ">"


def run_stablehlo(mlir: str, inputs: list) -> list:
    """Execute the stand-in's module on XLA CPU; returns numpy arrays.

    The real snakegrinder ends ``@forward`` with ``stablehlo.return`` (the contract keeps it);
    XLA wants ``func.return``. The inputs go in as constants through a wrapper ``@main``.
    """
    global _CLIENT
    import numpy as np

    xc = _xla()
    if _CLIENT is None:
        _CLIENT = xc.make_cpu_client()
    body = mlir.replace("stablehlo.return", "func.return")
    body = body.replace("func.func public @forward", "func.func private @forward")
    signature = body.split("@forward(", 1)[1].split(") -> (", 1)[1].split(") {", 1)[0]
    lines, args = [], []
    for i, x in enumerate(inputs):
        x = np.ascontiguousarray(x)
        lines.append(f'    %in{i} = stablehlo.constant dense<"0x{x.tobytes().hex().upper()}"> '
                     f": {_mlir_type(x)}")
        args.append((f"%in{i}", _mlir_type(x)))
    arg_ssa = ", ".join(a for a, _ in args)
    arg_types = ", ".join(t for _, t in args)
    main = [f"  func.func public @main() -> ({signature}) {{", *lines,
            (f"    %r:{signature.count('tensor<')} = func.call @forward({arg_ssa}) : "
             f"({arg_types}) -> ({signature})"),
            ("    func.return " + ", ".join(f"%r#{i}" for i in range(signature.count("tensor<")))
             + f" : {signature}"),
            "  }"]
    text = body.rstrip().removesuffix("}").rstrip() + "\n" + "\n".join(main) + "\n}\n"
    devices = _CLIENT.local_devices()[:1]
    exe = _CLIENT.compile_and_load(text, xc.DeviceList(tuple(devices)), xc.CompileOptions())
    results = exe.execute_sharded([]).disassemble_into_single_device_arrays()
    return [np.asarray(r[0]) for r in results]


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args, cwd):
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, **GIT_ENV}, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


class Origin:
    """A bare origin plus the working clone that pushes to it."""

    def __init__(self, root: Path):
        self.bare = root / "origin.git"
        self.work = root / "origin-work"
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=root)
        git("clone", "-q", str(self.bare), str(self.work), cwd=root)
        git("checkout", "-q", "-b", "main", cwd=self.work)

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for rel, text in files.items():
            (self.work / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.work / rel).write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work).strip()

    def add_tree(self, src: Path, rel: str) -> None:
        shutil.copytree(src, self.work / rel,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
