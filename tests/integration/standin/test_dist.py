"""The built stand-in dist: the real layout, self-contained, relocatable, and it really traces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.testlab.standin import (
    GOLDEN_SIMPLE_MLP,
    MODELS,
    STANDIN_SRC,
    bare_env,
    build_dist,
    run_stablehlo,
)

pytestmark = pytest.mark.torch
PYVER = f"{sys.version_info[0]}.{sys.version_info[1]}"


def launch(dist, *args, env=None, cwd=None, timeout=300):
    return subprocess.run([str(dist / "bin" / "snakegrinder"), *args], env=env, cwd=cwd,
                          check=False,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_layout_matches_the_real_dist(standin_dist):
    launcher = standin_dist / "bin" / "snakegrinder"
    assert os.access(launcher, os.X_OK)
    assert launcher.read_text().startswith("#!/usr/bin/env bash")
    assert "snakegrinder-bin" in launcher.read_text()
    assert os.access(standin_dist / "bin" / "snakegrinder-bin", os.X_OK)
    site = standin_dist / "venv" / "lib" / f"python{PYVER}" / "site-packages"
    assert (site / "torch" / "__init__.py").exists()
    assert (site / "numpy" / "__init__.py").exists()
    assert not (site / "torch" / "include").exists()  # pruned
    info = json.loads((standin_dist / "BUILD-INFO.json").read_text())
    assert info["flavor"] == "stand-in" and info["pins"]["torch"] == "2.13.0"


def test_trace_example_on_a_box_with_only_python3(standin_dist, tmp_path):
    r = launch(standin_dist, "--trace-example", "--out", str(tmp_path / "ex"),
               env=bare_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "SUCCESS: Trace example completed" in r.stdout
    mlir = (tmp_path / "ex" / "model.mlir").read_text()
    assert "stablehlo" in mlir and "func.func" in mlir
    assert mlir == GOLDEN_SIMPLE_MLP.read_text()
    assert mlir.strip() in r.stdout  # printed between the dashes, like the real one
    manifest = json.loads((tmp_path / "ex" / "manifest.json").read_text())
    assert manifest["kind"] == "snakegrinder-fx-trace-bundle" and manifest["status"] == "ok"


def test_trace_with_values_bundle_equals_eager_run(standin_dist, tmp_path):
    import torch

    out = tmp_path / "bundle"
    r = launch(standin_dist, "--trace-with-values", "--source", str(MODELS / "deep_mlp.py"),
               "--class", "GatedMixer", "--inputs", "[(2, 8, 16), (2, 8, 16)]", "--seed", "7",
               "--out", str(out), env=bare_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "SUCCESS: Trace with values completed" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) >= {"kind", "version", "status", "tracer", "artifacts", "seed",
                             "timestamp"}
    assert (manifest["version"], manifest["status"], manifest["seed"]) == (2, "ok", 7)
    assert manifest["tracer"] == "torch.fx.symbolic_trace"
    art = manifest["artifacts"]
    assert art["mlir"] == "model.mlir" and art["fx_graph"] == "fx_graph.txt"
    assert art["inputs"] == ["inputs/input_0.npy", "inputs/input_1.npy"]
    assert art["outputs"] == ["outputs/output_0.npy"]
    assert len(art["weights"]) == len(art["weight_names"]) == 5
    for rel in [art["mlir"], art["fx_graph"], *art["inputs"], *art["weights"], *art["outputs"]]:
        assert (out / rel).is_file(), rel
    assert "GraphModule" in (out / "fx_graph.txt").read_text() or "graph" in (
        out / "fx_graph.txt").read_text()

    # Recompute with the documented recipe in this process: same seed, same result.
    sys.path.insert(0, str(MODELS))
    try:
        from deep_mlp import GatedMixer
    finally:
        sys.path.remove(str(MODELS))
    torch.manual_seed(7)
    model = GatedMixer().eval()
    x, y = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    with torch.no_grad():
        want = model(x, y).numpy()
    np.testing.assert_array_equal(np.load(out / "inputs" / "input_0.npy"), x.numpy())
    np.testing.assert_array_equal(np.load(out / "outputs" / "output_0.npy"), want)
    for name, rel in zip(art["weight_names"], art["weights"], strict=True):
        np.testing.assert_array_equal(np.load(out / rel), model.state_dict()[name].numpy())
    # And the MLIR computes the same thing.
    got = run_stablehlo((out / "model.mlir").read_text(),
                        [np.load(out / p) for p in art["inputs"]])
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)


def test_unsupported_op_fails_exit_1(standin_dist, tmp_path):
    out = tmp_path / "bad"
    r = launch(standin_dist, "--trace-with-values", "--source",
               str(MODELS / "unsupported_op.py"), "--class", "SoftmaxClassifier",
               "--inputs", "[(1, 8)]", "--out", str(out), env=bare_env(tmp_path))
    assert r.returncode == 1
    assert "FAILED: Softmax is not supported" in r.stderr
    assert not (out / "model.mlir").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("args, code, needle", [
    (["--source", "/nonexistent.py", "--class", "X", "--inputs", "[(1,8)]"], 1,
     "FAILED: cannot read source file"),
    (["--class", "Nope", "--inputs", "[(1,8)]"], 1, "FAILED: class Nope not found"),
    (["--class", "SimpleMLP", "--inputs", "[(1,9)]"], 1, "FAILED: running SimpleMLP"),
    (["--class", "SimpleMLP", "--inputs", "[(1,8):f32]"], 2, "cannot parse --inputs"),
])
def test_failures_through_the_launcher(standin_dist, tmp_path, args, code, needle):
    if "--source" not in args:
        args = ["--source", str(MODELS / "simple_mlp.py"), *args]
    r = launch(standin_dist, "--trace", *args, "--out", str(tmp_path / "o"),
               env=bare_env(tmp_path))
    assert r.returncode == code
    assert needle in r.stderr


def test_version_and_unknown_option(standin_dist, tmp_path):
    r = launch(standin_dist, "--version", env=bare_env(tmp_path))
    assert r.returncode == 0 and "stand-in" in r.stdout and "torch 2.13.0" in r.stdout
    r = launch(standin_dist, "--no-such-option", env=bare_env(tmp_path))
    assert r.returncode == 2 and "unknown option" in r.stderr


def test_dist_is_relocatable(tmp_path):
    """Build, move the whole tree elsewhere, and it still traces (paths derive from itself)."""
    first = tmp_path / "a" / "dist"
    r = build_dist(first, "--no-check")
    assert r.returncode == 0, r.stderr
    moved = tmp_path / "elsewhere" / "opt-warpforge"
    moved.parent.mkdir()
    first.rename(moved)
    r = launch(moved, "--trace-example", "--out", str(tmp_path / "ex"), env=bare_env(tmp_path),
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "stablehlo.dot_general" in (tmp_path / "ex" / "model.mlir").read_text()


def test_launcher_without_a_matching_python_fails_clearly(standin_dist, tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("bash", "readlink", "dirname", "env"):
        os.symlink(shutil.which(tool), tools / tool)
    r = launch(standin_dist, "--trace-example", env={"PATH": str(tools)})
    assert r.returncode == 1
    assert f"FAILED: snakegrinder needs python{PYVER}" in r.stderr
    # An explicit interpreter of the wrong kind is refused too, not run blindly.
    (tools / "python9").write_text("#!/bin/sh\nexit 1\n")
    (tools / "python9").chmod(0o755)
    r = launch(standin_dist, "--version",
               env={"PATH": str(tools), "SNAKEGRINDER_PYTHON": str(tools / "python9")})
    assert r.returncode == 1 and "none among" in r.stderr and "python9" in r.stderr


def test_rebuild_replaces_the_dist_in_place(tmp_path):
    out = tmp_path / "dist"
    assert build_dist(out, "--no-check").returncode == 0
    (out / "stale-file").write_text("x")
    r = build_dist(out, "--no-check")
    assert r.returncode == 0, r.stderr
    assert not (out / "stale-file").exists()
    assert (out / "bin" / "snakegrinder").exists()
    assert not any(p.name.startswith(".dist.") for p in tmp_path.iterdir())


def test_build_with_bad_site_packages_fails_exit_1(tmp_path):
    r = build_dist(tmp_path / "dist", "--site-packages", str(tmp_path))
    assert r.returncode == 1
    assert "holds no torch package" in r.stderr
    assert not (tmp_path / "dist").exists()


def test_build_bad_option_exits_2(tmp_path):
    assert build_dist(tmp_path / "dist", "--frobnicate").returncode == 2


def test_stand_in_source_is_importable_without_torch():
    """The CLI part of the stand-in never imports torch at module import time."""
    code = (f"import sys; sys.path.insert(0, {str(STANDIN_SRC)!r}); "
            "import snakegrinder.cli, snakegrinder.inputs; assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
