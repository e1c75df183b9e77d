"""The completion callback and gpu-info, each beside its floor (alternating rounds, medians).

1. Completion: `warpforge-launch __complete ...` in a fresh process, as a Tab press runs it
   (command names; scheduler names from the inventory cache; job ids from a store of 20
   jobs; sweep ids from 3 sweeps) vs a bare `python -c pass` in the same venv.
2. gpu-info: a `warpforge-launch gpu-info --json` process over 10 loopback sshd boxes and
   over 1 box (each box with an nvidia-smi test double) vs `ssh box nvidia-smi
   --query-gpu=...` (OpenSSH, fresh connection) to one box and to all 10 at once: the
   floors of asking one box and every box (on 2 cores, 10 handshakes are CPU-bound).

Targets are in TARGETS; a miss exits 1 unless --no-fail. Part 2 needs root, sshd and the
bench boxes (.ci/setup.d/30-ssh.sh) and the lab lock:
  flock /tmp/wf-itest.lock .venv/bin/python benchmarks/gpu_info.py [--rounds N] [--no-fail]
  .venv/bin/python benchmarks/gpu_info.py --completion-only       # no lab needed
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._util import alternate, report, wall  # noqa: E402
from tests.testlab import gpudoubles, sshboxes  # noqa: E402
from warpforge_launch.lab import gpus  # noqa: E402

BARE = "python -c pass"
ONE_SSH = "ssh box nvidia-smi (1 box)"
ALL_SSH = "ssh box nvidia-smi (10 at once)"
# case -> (baseline, kind, limit): "over" = seconds above the baseline, "ratio" = times it
TARGETS = {
    "complete: command names": (BARE, "over", 0.060),
    "complete: scheduler names": (BARE, "over", 0.060),
    "complete: job ids": (BARE, "over", 0.060),
    "complete: sweep ids": (BARE, "over", 0.060),
    "gpu-info, 1 box": (ONE_SSH, "over", 0.350),
    "gpu-info, 10 boxes": (ALL_SSH, "over", 0.350),
}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "warpforge_launch", *args]


def completion_cases(home: Path, env: dict) -> dict:
    noop = home / "noop"
    noop.write_text("#!/bin/sh\nexit 0\n")
    noop.chmod(0o755)
    model = home / "m.py"
    model.write_text("class M: pass\n")
    inv = home / "inventory.yaml"
    inv.write_text(f"schedulers:\n  local: {{type: local, snakegrinder: {noop}}}\n"
                   "  ray_a: {type: ray, dashboard_url: 'http://127.0.0.1:1'}\n"
                   "boxes:\n  nvidia: {address: 127.0.0.21}\n  amd: {address: 127.0.0.22}\n")
    for _ in range(20):
        subprocess.run(cli("--inventory", str(inv), "submit", "--source", str(model), "--class",
                           "M", "--inputs", "[(1,8)]"), env=env, check=True, cwd=home,
                       capture_output=True, timeout=60)
    sweep = home / "sweep.yaml"
    sweep.write_text("name: s\nmodels: [{source: m.py, class: M}]\ninputs: ['[(1,8)]']\n")
    for _ in range(3):
        subprocess.run(cli("--inventory", str(inv), "sweep", str(sweep)), env=env, check=True,
                       cwd=home, capture_output=True, timeout=60)
    sweeps = subprocess.run(cli("__complete", "bash", "3", "warpforge-launch", "sweep", "status",
                                ""), env=env, capture_output=True, text=True, cwd=home)
    if len(sweeps.stdout.split()) != 3:
        raise SystemExit(f"completion gives the wrong sweep ids: {sweeps.stdout!r}")
    ids = subprocess.run([*cli("__complete", "bash", "2", "warpforge-launch", "status", "")],
                         env=env, capture_output=True, text=True, cwd=home).stdout.split()
    names = subprocess.run(cli("__complete", "bash", "5", "warpforge-launch", "--inventory",
                               str(inv), "submit", "--scheduler", ""), env=env, cwd=home,
                           capture_output=True, text=True).stdout.split()
    if len(ids) != 23 or names != ["local", "ray_a"]:
        raise SystemExit(f"completion gives the wrong candidates: {ids[:3]}... {names}")

    def tab(*words: str, cword: int):
        return lambda: wall(cli("__complete", "bash", str(cword), *words), env=env, cwd=home)

    return {
        BARE: lambda: wall([sys.executable, "-c", "pass"], env=env, cwd=home),
        "complete: command names": tab("warpforge-launch", "c", cword=1),
        "complete: scheduler names": tab("warpforge-launch", "--inventory", str(inv), "submit",
                                         "--scheduler", "", cword=5),
        "complete: job ids": tab("warpforge-launch", "status", "local-", cword=2),
        "complete: sweep ids": tab("warpforge-launch", "sweep", "status", "sweep-", cword=3),
    }


def gpu_cases(lab: sshboxes.SshLab, home: Path, env: dict) -> dict:
    bindir = "/opt/wf-bench-gpu/bin"
    for name in lab.boxes:
        gpudoubles.install(lab, name, bindir, "nvidia-smi", gpudoubles.nvidia())
    inv_all = lab.write_inventory(home / "lab.yaml", lab={"gpu_tool_path": [bindir]})
    first = next(iter(lab.boxes))
    inv_one = lab.write_inventory(home / "one.yaml", names=[first],
                                  lab={"gpu_tool_path": [bindir]})
    check = subprocess.run(cli("gpu-info", "--inventory", str(inv_all), "--json"), env=env,
                           capture_output=True, text=True, timeout=60)
    found = json.loads(check.stdout)["gpus"] if check.returncode == 0 else []
    if len(found) != 2 * len(lab.boxes):
        raise SystemExit(f"gpu-info did not read every box: {check.stderr or check.stdout}")
    def raw(name: str) -> list[str]:
        return ["ssh", "-F", str(lab.ssh_config), "-o", "ControlPath=none", name,
                shlex.join([f"{bindir}/nvidia-smi", *gpus.NVIDIA_ARGV[1:]])]

    def raw_all() -> float:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(raw(n), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env) for n in lab.boxes]
        for p in procs:
            p.wait(timeout=60)
        return time.perf_counter() - t0

    return {
        ONE_SSH: lambda: wall(raw(first), env=env),
        ALL_SSH: raw_all,
        "gpu-info, 1 box": lambda: wall(cli("gpu-info", "--inventory", str(inv_one), "--json"),
                                        env=env),
        "gpu-info, 10 boxes": lambda: wall(cli("gpu-info", "--inventory", str(inv_all),
                                               "--json"), env=env),
    }


def verdict(medians: dict[str, float]) -> list[str]:
    print(f"\n{'case':<28} {'baseline':<28} {'target':>10} {'measured':>10}  verdict")
    missed = []
    for name, (base, kind, limit) in TARGETS.items():
        if name not in medians:
            continue
        got = medians[name] - medians[base] if kind == "over" else medians[name] / medians[base]
        ok = got <= limit
        missed += [] if ok else [name]
        fmt = (lambda v: f"+{v * 1000:.0f} ms") if kind == "over" else (lambda v: f"{v:.2f}x")
        print(f"{name:<28} {base:<28} {fmt(limit):>10} {fmt(got):>10}  "
              f"{'MET' if ok else 'MISSED'}")
    return missed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--completion-only", action="store_true", help="skip the sshd boxes")
    ap.add_argument("--no-fail", action="store_true", help="report misses, exit 0")
    opts = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="wf-bench-gpu-"))
    env = dict(os.environ, WARPFORGE_HOME=str(home / "state"), PYTHONPATH=str(REPO))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: cached .pyc
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "warpforge_launch")],
                   env=env, check=True)
    medians: dict[str, float] = {}
    try:
        medians.update(alternate(completion_cases(home, env), opts.rounds))
        report(f"completion callback, {opts.rounds} rounds", medians, baseline=BARE)
        why = None if not opts.completion_only else "--completion-only"
        why = why or sshboxes.available()
        if why:
            print(f"\ngpu-info part skipped: {why}")
        else:
            lab = sshboxes.bench_lab(fresh=True)
            lab.setup()
            started = lab.start_all()
            try:
                gpu = alternate(gpu_cases(lab, home, env), opts.rounds)
            finally:
                for name in lab.boxes:
                    lab.ssh(name, "rm", "-rf", "/opt/wf-bench-gpu", check=False)
                lab.stop_all(started)
            report(f"gpu-info over {len(lab.boxes)} sshd boxes, {opts.rounds} rounds", gpu,
                   baseline=ONE_SSH)
            medians.update(gpu)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    missed = verdict(medians)
    return 1 if missed and not opts.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
