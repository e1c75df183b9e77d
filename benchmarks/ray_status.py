"""Ray status cost: `warpforge-launch status` vs `ray job status`, and `list` over 50 jobs.

Run from the repository root with the project's venv (the Ray venv of
.ci/setup.d/40-ray.sh must exist):

    .venv/bin/python -m benchmarks.ray_status [--rounds 10] [--jobs 50]

A: `warpforge-launch status <job>` (the real CLI, a fresh process each time) on a RUNNING
   job (a finished job would be answered from the job store without asking Ray).
B: `ray job status <submission id>` from the Ray venv, same job, same head.
Rounds alternate A and B; the figures are medians. Then 50 jobs are submitted through the
library and `warpforge-launch list` refreshes them all: the HTTP requests of that refresh are
counted in-process (target: one), and the CLI's wall time is reported.
Uses the loopback lab head (started here if none runs, stopped at the end only then).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.testlab import ray as raylab  # noqa: E402

FAKE = ROOT / "tests" / "integration" / "ray" / "fake_snakegrinder.py"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    return time.perf_counter() - t0, done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=50)
    args = ap.parse_args()

    head = raylab.start_head()
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=raylab.lab_dir()))
    try:
        return run(head, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if head.owned:
            head.stop()


def run(head, work: Path, args) -> int:
    sg = work / "snakegrinder"
    sg.write_text(f"#!{sys.executable}\n{FAKE.read_text()}")
    sg.chmod(0o755)
    inventory = work / "inventory.yaml"
    inventory.write_text(
        "default_scheduler: raylab\n"
        "schedulers:\n"
        "  raylab:\n"
        "    type: ray\n"
        f"    dashboard_url: {head.url}\n"
        f"    snakegrinder: {sg}\n"
        f"    output_root: {work / 'out'}\n"
    )
    env = dict(os.environ, WARPFORGE_HOME=str(work / "home"), NO_PROXY="127.0.0.1")
    os.environ.update(WARPFORGE_HOME=env["WARPFORGE_HOME"])
    cli = [sys.executable, "-m", "warpforge_launch"]
    wf_bin = Path(sys.executable).with_name("warpforge-launch")
    if wf_bin.is_file():
        cli = [str(wf_bin)]
    model = work / "mlp.py"
    model.write_text("class SimpleMLP: pass\n")

    # one RUNNING job that both tools ask about
    _, sub = timed([*cli, "submit", "--inventory", str(inventory), "--source", str(model),
                    "--class", "SimpleMLP", "--inputs", "[(1, 8)]", "--memory", "256M",
                    "--env", "WF_FAKE_SLEEP=600"], env)  # fmt: skip
    if sub.returncode != 0:
        print(sub.stderr, file=sys.stderr)
        return 1
    job_id = sub.stdout.strip().splitlines()[-1]
    sid = job_id.removeprefix("raylab-")
    status_argv = [*cli, "status", job_id, "--inventory", str(inventory)]
    ray_argv = [str(head.ray_bin), "job", "status", sid, "--address", head.url]
    deadline = time.monotonic() + 60
    while "RUNNING" not in timed(status_argv, env)[1].stdout:
        if time.monotonic() > deadline:
            print("job never ran", file=sys.stderr)
            return 1
        time.sleep(0.5)

    ours, theirs = [], []
    for _ in range(args.rounds):
        t, done = timed(status_argv, env)
        assert done.returncode == 0 and "RUNNING" in done.stdout, done.stderr
        ours.append(t)
        t, done = timed(ray_argv, env)
        assert done.returncode == 0 and "RUNNING" in (done.stdout + done.stderr), done.stderr
        theirs.append(t)
    import httpx

    with httpx.Client(trust_env=False) as client:
        raw = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            client.get(f"{head.url}/api/jobs/{sid}").raise_for_status()
            raw.append(time.perf_counter() - t0)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"status of a RUNNING Ray job, median of {args.rounds} alternating rounds:")
    print(f"  warpforge-launch status : {a * 1000:7.1f} ms")
    print(f"  ray job status          : {b * 1000:7.1f} ms")
    print(f"  raw REST GET (in-proc)  : {statistics.median(raw) * 1000:7.1f} ms")
    print(f"  ratio                   : {a / b:.3f}  (target <= 0.25)")
    subprocess.run([*cli, "cancel", job_id, "--inventory", str(inventory)],
                   env=env, capture_output=True, timeout=60, check=False)  # fmt: skip

    # 50 jobs in the store, all PENDING there; one `list` refreshes them
    from warpforge_launch.inputs import parse_inputs
    from warpforge_launch.jobs import JobDefinition, ResourceRequirements
    from warpforge_launch.launcher import Launcher

    definition = JobDefinition(
        name="bench", source=str(model), model_class="SimpleMLP",
        inputs=parse_inputs("[(1, 8)]"), resources=ResourceRequirements(memory_mb=64),
    )  # fmt: skip
    t0 = time.perf_counter()
    with Launcher(str(inventory)) as launcher:
        ids = [launcher.submit(definition, "raylab") for _ in range(args.jobs)]
    submit_s = time.perf_counter() - t0
    store = Path(env["WARPFORGE_HOME"])
    snapshot = work / "home-snapshot"
    shutil.copytree(store, snapshot)

    requests: list[str] = []
    original_send = httpx.Client.send

    def counting_send(self, request, *a, **kw):
        requests.append(f"{request.method} {request.url.path}")
        return original_send(self, request, *a, **kw)

    httpx.Client.send = counting_send
    try:
        from warpforge_launch.jobs import JobQuery

        with Launcher(str(inventory)) as launcher:
            rows = launcher.list(JobQuery(limit=None))
    finally:
        httpx.Client.send = original_send
    refreshed = [r for r, _ in rows if r.job_id in set(ids)]

    walls = []
    for _ in range(args.rounds):
        shutil.rmtree(store)
        shutil.copytree(snapshot, store)  # every round refreshes 50 non-terminal jobs
        t, done = timed([*cli, "list", "--limit", str(args.jobs + 10), "--inventory",
                         str(inventory)], env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        walls.append(t)
    print(f"\n{args.jobs} Ray jobs (submitted through the library in {submit_s:.2f} s):")
    print(f"  HTTP requests for one list refresh : {len(requests)} {sorted(set(requests))}")
    print(f"  jobs refreshed                      : {len(refreshed)}")
    print(f"  warpforge-launch list (median)      : {statistics.median(walls) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
