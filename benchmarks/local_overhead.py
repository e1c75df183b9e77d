"""Local job overhead: submit-to-COMPLETED for a payload that exits at once, minus the
payload's own run time (measured the same way, directly, in alternation).

Target (issue #2): under 150 ms median.
A miss exits 1 (`--no-fail`: report only).
Run: .venv/bin/python benchmarks/local_overhead.py [--rounds 30] [--no-fail]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from warpforge_launch.inputs import parse_inputs  # noqa: E402
from warpforge_launch.jobs import JobDefinition  # noqa: E402

TARGET = 0.150  # seconds of overhead, submit to COMPLETED


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--no-fail", action="store_true", help="report a miss, exit 0")
    opts = ap.parse_args()
    rounds = opts.rounds
    home = tempfile.mkdtemp(prefix="wf-bench-")
    os.environ["WARPFORGE_HOME"] = home
    payload = Path(home) / "instant"
    payload.write_text("#!/bin/sh\nexit 0\n")
    payload.chmod(0o755)
    model = Path(home) / "m.py"
    model.write_text("class M: pass\n")
    inv = Path(home) / "inv.yaml"
    inv.write_text(f"schedulers: {{local: {{type: local, snakegrinder: {payload}}}}}\n")

    from warpforge_launch.launcher import Launcher
    from warpforge_launch.schedulers import local_state

    definition = JobDefinition("m", str(model), parse_inputs("[(1,8)]"), model_class="M",
                               timeout=timedelta(minutes=1))
    launcher = Launcher(str(inv))
    sched = launcher.scheduler()  # load the inventory once, as a long-lived library user would
    total, direct = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        job = launcher.submit(definition)
        state_file = sched.job_dir(job) / "state.json"
        while (local_state.read_json(str(state_file)) or {}).get("state") != "COMPLETED":
            time.sleep(0.001)
        total.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([str(payload)], check=True)
        direct.append(time.perf_counter() - t0)
    sub = statistics.median(total)
    own = statistics.median(direct)
    print(f"== Local job overhead, {rounds} rounds")
    print(f"  submit -> COMPLETED median {sub * 1000:.1f} ms; payload alone {own * 1000:.1f} ms")
    met = sub - own < TARGET
    print(f"\n{'case':<32} {'target':>12} {'measured':>12}  verdict")
    print(f"{'submit -> COMPLETED overhead':<32} {'<%.0f ms' % (TARGET * 1000):>12} "
          f"{'%.0f ms' % ((sub - own) * 1000):>12}  {'MET' if met else 'MISSED'}")
    launcher.close()
    shutil.rmtree(home, ignore_errors=True)
    return 0 if met or opts.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
