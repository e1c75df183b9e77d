"""CLI start-up and the whole Local round trip, as a user types them, against a bare
`python -c pass` in the same venv (alternating rounds, medians).

Measured: `--help`; `status` of a finished job (answered from the job store); `status` of a
RUNNING Local job (the backend is asked: job files, supervisor liveness, store update);
`list`; and a whole `submit --wait` of a payload that exits at once (inventory, plan,
supervisor start, polling, result).

Targets are overheads over the bare interpreter; a miss exits 1 (`--no-fail`: report only).
Run: .venv/bin/python benchmarks/cli_start.py [--rounds 30] [--no-fail]
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
from tests.testlab.payload import FAKE_SNAKEGRINDER as FAKE  # noqa: E402
from tests.testlab.payload import behaviour  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BARE = "python -c pass"

# overhead over the bare interpreter, seconds (None: measured, no target)
TARGETS = {
    "--help": None,
    "status (finished job)": 0.120,
    "status (RUNNING Local job)": 0.150,
    "list": None,
    "submit --wait (no-op payload)": 0.500,
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--no-fail", action="store_true", help="report misses, exit 0")
    opts = ap.parse_args()
    cli = shutil.which("warpforge-launch", path=os.path.dirname(sys.executable))
    home = Path(tempfile.mkdtemp(prefix="wf-bench-"))
    env = dict(os.environ, WARPFORGE_HOME=str(home), PYTHONPATH=str(REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure what an installed copy does: cached .pyc
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "warpforge_launch")],
                   env=env, check=True)
    model = home / "m.py"
    model.write_text("class M: pass\n")
    noop = home / "noop"
    noop.write_text("#!/bin/sh\nexit 0\n")
    noop.chmod(0o755)
    inv = home / "inventory.yaml"
    inv.write_text(f"schedulers: {{local: {{type: local, snakegrinder: {noop}}}}}\n")
    submit = [cli, "--inventory", str(inv), "submit", "--source", str(model), "--class", "M",
              "--inputs", "[(1,8)]"]

    def run(argv, **kw):
        return subprocess.run(argv, env={**env, **kw.pop("env", {})}, capture_output=True,
                              text=True, check=True, cwd=home, **kw)

    done = json.loads(run([*submit, "--wait", "--json"]).stdout)["job_id"]
    running = run([*submit, "--snakegrinder", str(FAKE)], env=behaviour(sleep=3600)
                  ).stdout.strip()
    try:
        cases = {
            BARE: lambda: wall([sys.executable, "-c", "pass"], env=env),
            "--help": lambda: wall([cli, "--help"], env=env),
            "status (finished job)": lambda: wall([cli, "status", done], env=env, cwd=home),
            "status (RUNNING Local job)": lambda: wall([cli, "status", running], env=env,
                                                       cwd=home),
            "list": lambda: wall([cli, "list"], env=env, cwd=home),
            "submit --wait (no-op payload)": lambda: wall([*submit, "--wait"], env=env,
                                                          cwd=home),
        }
        state = json.loads(run([cli, "status", "--json", running]).stdout)["state"]
        if state != "RUNNING":
            raise SystemExit(f"the long job is {state}, not RUNNING: cannot measure")
        medians = alternate(cases, opts.rounds)
    finally:
        subprocess.run([cli, "cancel", running], env=env, cwd=home, capture_output=True,
                       check=False)
    report(f"CLI start, {opts.rounds} rounds (alternating)", medians, baseline=BARE)
    missed = verdict(medians)
    shutil.rmtree(home, ignore_errors=True)
    return 1 if missed and not opts.no_fail else 0


def verdict(medians: dict[str, float]) -> list[str]:
    """Print target vs measured; the names of the missed targets."""
    print(f"\n{'case':<32} {'target':>12} {'measured':>12}  verdict")
    missed = []
    for name, target in TARGETS.items():
        extra = medians[name] - medians[BARE]
        ok = target is None or extra <= target
        missed += [] if ok else [name]
        shown = "-" if target is None else f"+{target * 1000:.0f} ms"
        verdict = "-" if target is None else "MET" if ok else "MISSED"
        print(f"{name:<32} {shown:>12} {'+%.0f ms' % (extra * 1000):>12}  {verdict}")
    return missed


if __name__ == "__main__":
    sys.exit(main())
