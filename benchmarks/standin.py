"""Stand-in snakegrinder figures: build time, dist size, SimpleMLP trace time.

    .venv/bin/python benchmarks/standin.py [--rounds 3]

A/B pairs run alternately, several rounds, and the median is reported with a ratio:
- build: hard-linked from the installed torch (default) vs --copy;
- size: pruned + stripped (default) vs --no-prune --no-strip;
- trace: ``bin/snakegrinder --trace-example`` from the dist on a bare python3 vs the same
  program from source in the venv; plus the floor, ``python -c 'import torch, torch.fx'``.
Not a test: it never fails on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "examples" / "snakegrinder" / "build.py"
SRC = REPO / "examples" / "snakegrinder" / "src"
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def timed(argv, env=None, cwd=None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=cwd, capture_output=True, timeout=1800)
    return time.perf_counter() - started


def dist_size(path: Path) -> int:
    return json.loads((path / "BUILD-INFO.json").read_text())["size_bytes"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="standin-bench-") as tmp:
        tmp = Path(tmp)
        link_t, copy_t, trace_dist, trace_src, imp = [], [], [], [], []
        for _ in range(args.rounds):
            link_t.append(timed([sys.executable, BUILD, "--out", tmp / "link", "--no-check"]))
            copy_t.append(timed([sys.executable, BUILD, "--out", tmp / "copy", "--no-check",
                                 "--copy"]))
        timed([sys.executable, BUILD, "--out", tmp / "full", "--no-check", "--no-prune",
               "--no-strip"])
        env_src = dict(os.environ, PYTHONPATH=str(SRC))
        for i in range(args.rounds):
            trace_dist.append(timed([tmp / "link" / "bin" / "snakegrinder", "--trace-example",
                                     "--out", tmp / f"d{i}"], env=dict(BARE_ENV, HOME=str(tmp))))
            trace_src.append(timed([sys.executable, "-m", "snakegrinder", "--trace-example",
                                    "--out", tmp / f"s{i}"], env=env_src))
            imp.append(timed([sys.executable, "-c", "import torch, torch.fx"]))
        small, full = dist_size(tmp / "link"), dist_size(tmp / "full")
        shutil.rmtree(tmp / "copy", ignore_errors=True)

    med = statistics.median
    print(f"rounds: {args.rounds} (median)")
    print(f"build, hard-linked from installed torch : {med(link_t):6.2f} s")
    print(f"build, copied (--copy)                  : {med(copy_t):6.2f} s   "
          f"ratio copy/link {med(copy_t) / med(link_t):.2f}")
    print(f"dist size, pruned + stripped            : {small / 2**20:6.0f} MiB")
    print(f"dist size, --no-prune --no-strip        : {full / 2**20:6.0f} MiB   "
          f"ratio {full / small:.2f}")
    print(f"SimpleMLP --trace-example, dist, bare py: {med(trace_dist):6.2f} s")
    print(f"SimpleMLP --trace-example, source, venv : {med(trace_src):6.2f} s   "
          f"ratio dist/source {med(trace_dist) / med(trace_src):.2f}")
    print(f"floor: import torch, torch.fx           : {med(imp):6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
