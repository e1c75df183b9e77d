"""Start-up budget: every command against "Python start + its own I/O", in one run.

Fresh processes, cached bytecode (as an installed copy runs), interleaved rounds, medians.
The CLI runs as its console script `warpforge-launch` (what a user types; it runs this
checkout, which PYTHONPATH puts first), `python -m warpforge_launch` where that is missing.
For each command: its median, `python -c pass` in the same venv, the floor of its own work
(one SQLite read, one GET of the Ray Jobs API with curl, one bare `squeue`), and the verdict:

  --help, `invoke --list`                  <= python start + 30 ms
  (and `invoke --list` <= invoke's own start, a one-task tasks.py, + 30 ms: our part)
  status of a stored finished job          <= python start + 40 ms
  status of a RUNNING Ray job              <= python start + curl GET + 60 ms
  status of a RUNNING Slurm job (local)    <= python start + squeue + 60 ms
  status of 30 active Slurm ids            <= 1.1x `list` of the same jobs

`invoke distribute` with nothing to send is measured side by side with rsync by
benchmarks/distribute.py (the same target from the push side).

Run as root from the repository root (starts the loopback Ray head and Slurm cluster when
none runs, and stops only what it started):
    .venv/bin/python -m benchmarks.startup [--rounds 15] [--no-fail] [--skip ray,slurm]
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.testlab.payload import FAKE_SNAKEGRINDER as FAKE  # noqa: E402

PY = [sys.executable, "-c", "pass"]
CLI = [sys.executable, "-m", "warpforge_launch"]
# what a user types: the console script (it runs this checkout: PYTHONPATH comes first)
_SCRIPT = shutil.which("warpforge-launch", path=os.path.dirname(sys.executable))
LAUNCH = [_SCRIPT] if _SCRIPT else CLI


def wall(argv: list[str], env: dict[str, str], expect: str | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          check=False, cwd=env.get("WARPFORGE_HOME"))
    took = time.perf_counter() - t0
    if done.returncode != 0 or (expect and expect not in done.stdout):
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-300:]}")
    return took


def medians(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(fn())
    return {k: statistics.median(v) * 1000 for k, v in samples.items()}


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, WARPFORGE_HOME=str(home), PYTHONPATH=str(ROOT),
               PYTHONPYCACHEPREFIX=str(home / "pycache"), NO_PROXY="127.0.0.1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    home.mkdir(parents=True, exist_ok=True)
    return env


def submit(env, inventory: Path, model: Path, *extra: str) -> str:
    done = subprocess.run([*CLI, "--inventory", str(inventory), "submit", "--source", str(model),
                           "--class", "M", "--inputs", "[(1, 8)]", "--json", *extra],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"submit failed: {done.stderr.strip()}")
    return json.loads(done.stdout)["job_id"]


def wait_state(env, job_ids: list[str], states: set[str], deadline_s: float = 90) -> None:
    end = time.monotonic() + deadline_s
    while True:
        out = subprocess.run([*CLI, "status", "--json", *job_ids], capture_output=True,
                             text=True, env=env, timeout=120, check=False).stdout
        rows = json.loads(out) if out.strip() else []
        rows = rows if isinstance(rows, list) else [rows]
        if rows and all(r["state"] in states for r in rows):
            return
        if time.monotonic() > end:
            raise SystemExit(f"jobs never reached {states}: {[r['state'] for r in rows]}")
        time.sleep(0.5)


def bench_local(work: Path, rounds: int) -> tuple[dict[str, float], list[tuple]]:
    env = cli_env(work / "local")
    model = work / "m.py"
    inv = work / "local.yaml"
    inv.write_text(f"schedulers: {{local: {{type: local, snakegrinder: {FAKE}}}}}\n")
    done = submit(env, inv, model, "--wait")
    invoke = shutil.which("invoke", path=os.path.dirname(sys.executable)) or "invoke"
    bare = work / "bare-tasks"  # invoke's own start: a tasks.py with one empty task
    bare.mkdir()
    (bare / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef a(c):\n    pass\n")
    m = medians({
        "python -c pass": lambda: wall(PY, env),
        "warpforge-launch --help": lambda: wall([*LAUNCH, "--help"], env),
        "invoke --list": lambda: wall([invoke, "--search-root", str(ROOT), "--list"], env),
        "invoke --list (one-task tasks.py)": lambda: wall(
            [invoke, "--search-root", str(bare), "--list"], env),
        "status (stored, finished)": lambda: wall([*LAUNCH, "status", done], env, "COMPLETED"),
    }, rounds)
    py = m["python -c pass"]
    rows = [("warpforge-launch --help", m["warpforge-launch --help"], py + 30, "python + 30 ms"),
            ("invoke --list", m["invoke --list"], py + 30, "python + 30 ms"),
            ("  tasks.py over invoke's own start", m["invoke --list"],
             m["invoke --list (one-task tasks.py)"] + 30, "bare invoke + 30 ms"),
            ("status of a stored finished job", m["status (stored, finished)"], py + 40,
             "python + 40 ms")]
    return m, rows


def bench_ray(work: Path, rounds: int) -> tuple[dict[str, float], list[tuple]]:
    from tests.testlab import ray as raylab

    head = raylab.start_head()
    try:
        env = cli_env(work / "ray")
        sg = work / "ray-snakegrinder"
        sg.write_text(f"#!{sys.executable}\n{FAKE.read_text()}")
        sg.chmod(0o755)
        inv = work / "ray.yaml"
        inv.write_text(f"schedulers:\n  raylab:\n    type: ray\n    dashboard_url: {head.url}\n"
                       f"    snakegrinder: {sg}\n    output_root: {work / 'ray-out'}\n")
        job = submit(env, inv, work / "m.py", "--scheduler", "raylab", "--memory", "256M",
                     "--env", "WF_FAKE_SLEEP=600")
        wait_state(env, [job], {"RUNNING"})
        sid = job.removeprefix("raylab-")
        curl = [shutil.which("curl") or "curl", "-sf", "-m", "10", "--noproxy", "*",
                f"{head.url}/api/jobs/{sid}"]
        m = medians({
            "python -c pass": lambda: wall(PY, env),
            "curl GET /api/jobs/<id>": lambda: wall(curl, env, "RUNNING"),
            "status (RUNNING Ray job)": lambda: wall([*LAUNCH, "status", job], env, "RUNNING"),
        }, rounds)
        subprocess.run([*CLI, "cancel", job], env=env, capture_output=True, timeout=60,
                       check=False)
    finally:
        if head.owned:
            head.stop()
    floor = m["python -c pass"] + m["curl GET /api/jobs/<id>"]
    return m, [("status of a RUNNING Ray job", m["status (RUNNING Ray job)"], floor + 60,
                "python + GET + 60 ms")]


def bench_slurm(work: Path, rounds: int) -> tuple[dict[str, float], list[tuple]]:
    from tests.testlab import slurm as lab

    cluster = lab.start(accounting=True)
    try:
        env = cli_env(work / "slurm")
        env["SLURM_CONF"] = str(cluster.conf)
        shared = lab.lab_root() / "shared"
        work_dir = lab.shared_work_dir(shared)
        sg = shared / "bin" / "bench-snakegrinder"
        sg.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FAKE, sg)
        sg.chmod(0o755)
        inv = work / "slurm.yaml"
        inv.write_text("schedulers:\n  hpc:\n    type: slurm\n    runtime: none\n"
                       f"    partition: debug\n    work_dir: {work_dir}\n"
                       f"    snakegrinder: {sg}\n    slurm_conf: {cluster.conf}\n")
        model = shared / "bench-m.py"
        model.write_text("class M: pass\n")
        jobs = [submit(env, inv, model, "--scheduler", "hpc", "--memory", "64",
                       "--env", "WF_FAKE_SLEEP=600") for _ in range(30)]
        wait_state(env, jobs[:1], {"RUNNING"})
        native = jobs[0].removeprefix("hpc-")
        squeue = shutil.which("squeue") or "squeue"
        m = medians({
            "python -c pass": lambda: wall(PY, env),
            "squeue -h -j <id>": lambda: wall([squeue, "-h", "-j", native], env),
            "status (RUNNING Slurm job)": lambda: wall([*LAUNCH, "status", jobs[0]], env,
                                                       "RUNNING"),
            "status of 30 ids": lambda: wall([*LAUNCH, "status", *jobs], env),
            "list (same 30)": lambda: wall([*LAUNCH, "list", "--scheduler", "hpc"], env),
        }, rounds)
        subprocess.run([*CLI, "cancel", *jobs], env=env, capture_output=True, timeout=120,
                       check=False)
    finally:
        lab.stop(cluster)
    floor = m["python -c pass"] + m["squeue -h -j <id>"]
    return m, [("status of a RUNNING Slurm job", m["status (RUNNING Slurm job)"], floor + 60,
                "python + squeue + 60 ms"),
               ("status of 30 active Slurm ids", m["status of 30 ids"],
                1.1 * m["list (same 30)"], "1.1x list")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--skip", default="", help="comma-separated: ray,slurm")
    ap.add_argument("--no-fail", action="store_true", help="report misses, exit 0")
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    work = Path(tempfile.mkdtemp(prefix="wf-startup-"))
    (work / "m.py").write_text("class M: pass\n")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "warpforge_launch")],
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                   check=True)
    rows: list[tuple] = []
    try:
        for name, bench in (("local", bench_local), ("ray", bench_ray), ("slurm", bench_slurm)):
            if name in skip:
                continue
            m, r = bench(work, args.rounds)
            print(f"== {name}: medians of {args.rounds} interleaved rounds (ms)")
            for case, ms in m.items():
                print(f"  {case:<34} {ms:8.1f}")
            rows += r
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'command':<36} {'target':>24} {'budget':>9} {'measured':>9}  verdict")
    missed = 0
    for what, measured, budget, label in rows:
        ok = measured <= budget
        missed += not ok
        print(f"{what:<36} {label:>24} {budget:8.1f}  {measured:8.1f}  "
              f"{'met' if ok else 'MISSED'}")
    return 1 if missed and not args.no_fail else 0


if __name__ == "__main__":
    raise SystemExit(main())
