"""A small stand-in snakegrinder dist for the lab tests (until issue #3's real one lands).

Same layout as the real `snakegrinder-dist/build/dist/`: `bin/snakegrinder` (a bash launcher
that finds its own release through symlinks and execs `bin/snakegrinder-bin` with the bundled
venv on the library path), `bin/snakegrinder-bin` (here a shell script standing in for the
native program) and `venv/lib/python3.12/site-packages/...`. The program refuses to run when
the bundled venv is missing, so a smoke test that passes proves the whole tree landed.

`mode` makes the broken variants the smoke tests need:
  good        --trace-example writes a valid model.mlir (stablehlo + func.func, >= 100 bytes)
  no-markers  writes a model.mlir of fine size without the StableHLO markers
  tiny        writes a model.mlir shorter than 100 bytes
  crash       snakegrinder-bin exits 1 on every call ("FAILED: ...")
"""

from __future__ import annotations

import os
import random
from pathlib import Path

LAUNCHER = r"""#!/usr/bin/env bash
# snakegrinder launcher: put the bundled torch libs on the library path, run the program.
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
root=$(dirname "$here")
export WARPFORGE_VENV="$root/venv"
libs="$root/venv/lib/python3.12/site-packages/torch/lib"
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/snakegrinder-bin" "$@"
"""

PROGRAM = r"""#!/bin/sh
# Stand-in for the native snakegrinder program (mode: @MODE@).
mode=@MODE@
torch="$WARPFORGE_VENV/lib/python3.12/site-packages/torch/__init__.py"
if [ ! -f "$torch" ]; then
  echo "FAILED: bundled torch not found at $torch" >&2; exit 1
fi
if [ "$mode" = crash ]; then
  echo "FAILED: simulated crash (libtorch_cpu.so: bad ELF)" >&2; exit 1
fi
usage() {
  echo "usage: snakegrinder [--trace-example|--trace|--trace-with-values] [--source F]"
  echo "                    [--class C] [--inputs SPEC] [--seed N] [--out DIR]"
}
out=""; action=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --trace-example|--trace|--trace-with-values) action=$1 ;;
    --out) shift; out=${1:-} ;;
    --source|--class|--inputs|--seed) shift ;;
    *) echo "snakegrinder: unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[ -n "$action" ] || { usage >&2; exit 2; }
[ -n "$out" ] || { echo "FAILED: --out is required" >&2; exit 1; }
mkdir -p "$out"
case "$mode" in
  tiny) echo 'module @main {}' >"$out/model.mlir" ;;
  no-markers)
    { echo 'module @main {'
      i=0; while [ $i -lt 20 ]; do echo "  // placeholder line $i"; i=$((i+1)); done
      echo '}'; } >"$out/model.mlir" ;;
  *) cat >"$out/model.mlir" <<'MLIR'
module @main {
  func.func public @forward(%arg0: tensor<1x8xf32>) -> tensor<1x4xf32> {
    %0 = stablehlo.constant dense<0.5> : tensor<8x16xf32>
    %1 = stablehlo.dot_general %arg0, %0, contracting_dims = [1] x [0]
      : (tensor<1x8xf32>, tensor<8x16xf32>) -> tensor<1x16xf32>
    %2 = stablehlo.constant dense<0.25> : tensor<16x4xf32>
    %3 = stablehlo.dot_general %1, %2, contracting_dims = [1] x [0]
      : (tensor<1x16xf32>, tensor<16x4xf32>) -> tensor<1x4xf32>
    stablehlo.return %3 : tensor<1x4xf32>
  }
}
MLIR
  ;;
esac
echo "SUCCESS: wrote $out/model.mlir"
"""


def make_dist(root: Path, *, mode: str = "good", size_mb: float = 2.0, files: int = 200,
              seed: int = 42) -> Path:
    """Write a stand-in dist under root (created or refreshed) and return root.

    size_mb of incompressible "shared libraries" plus `files` small Python sources, so the
    tree looks like a bundled venv: a few big files and many small ones.
    """
    if mode not in ("good", "no-markers", "tiny", "crash"):
        raise ValueError(f"unknown fake dist mode {mode!r}")
    rng = random.Random(seed)
    root = Path(root)
    bin_dir = root / "bin"
    site = root / "venv" / "lib" / "python3.12" / "site-packages"
    lib = site / "torch" / "lib"
    for d in (bin_dir, lib):
        d.mkdir(parents=True, exist_ok=True)
    _write(bin_dir / "snakegrinder", LAUNCHER.encode(), 0o755)
    _write(bin_dir / "snakegrinder-bin", PROGRAM.replace("@MODE@", mode).encode(), 0o755)
    _write(site / "torch" / "__init__.py", b"__version__ = '2.5.0+fake'\n", 0o644)
    big = int(size_mb * 1024 * 1024)
    shares = [0.6, 0.25, 0.15]
    for i, share in enumerate(shares):
        _write(lib / f"libtorch_part{i}.so", rng.randbytes(int(big * share)), 0o755)
    for i in range(files):
        pkg = site / f"pkg{i % 20:02d}"
        pkg.mkdir(exist_ok=True)
        body = "".join(f"CONST_{j} = {rng.random()!r}\n" for j in range(40 + i % 60))
        _write(pkg / f"mod{i:04d}.py", body.encode(), 0o644)
    link = root / "venv" / "bin" / "python3"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to("/usr/bin/python3")
    return root


def _write(path: Path, data: bytes, mode: int) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    os.chmod(path, mode)
