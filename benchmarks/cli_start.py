"""CLI start-up: `--help` and `status <id>` against a bare `python -c pass` in the same venv.

Target (issue #2): status within 120 ms of the bare interpreter start.
Run: .venv/bin/python benchmarks/cli_start.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import alternate, report, wall  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAKE = REPO / "tests" / "fixtures" / "fake_snakegrinder.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    rounds = ap.parse_args().rounds
    cli = shutil.which("warpforge-launch", path=os.path.dirname(sys.executable))
    home = tempfile.mkdtemp(prefix="wf-bench-")
    env = dict(os.environ, WARPFORGE_HOME=home)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure what an installed copy does: cached .pyc
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "warpforge_launch")],
                   env=env, check=True)
    model = Path(home) / "m.py"
    model.write_text("class M: pass\n")
    out = subprocess.run([cli, "submit", "--source", str(model), "--class", "M", "--inputs",
                          "[(1,8)]", "--snakegrinder", str(FAKE), "--wait", "--json"],
                         env=env, capture_output=True, text=True, check=True, cwd=home)
    job = json.loads(out.stdout)["job_id"]
    cases = {
        "python -c pass": lambda: wall([sys.executable, "-c", "pass"], env=env),
        "warpforge-launch --help": lambda: wall([cli, "--help"], env=env),
        f"warpforge-launch status {job}": lambda: wall([cli, "status", job], env=env, cwd=home),
        "warpforge-launch list": lambda: wall([cli, "list"], env=env, cwd=home),
    }
    medians = alternate(cases, rounds)
    report(f"CLI start, {rounds} rounds (alternating)", medians, baseline="python -c pass")
    extra = medians[f"warpforge-launch status {job}"] - medians["python -c pass"]
    print(f"status overhead over bare python: {extra * 1000:.0f} ms (target <= 120 ms): "
          f"{'MET' if extra <= 0.120 else 'MISSED'}")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
