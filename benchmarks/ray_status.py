"""Ray status cost against its floors: `warpforge-launch status` vs `ray job status`, vs the
raw REST GET, vs a bare Python start; and `list` over 50 jobs.

Run from the repository root with the project's venv (the Ray venv of
.ci/setup.d/40-ray.sh must exist):

    .venv/bin/python -m benchmarks.ray_status [--rounds 15] [--jobs 50] [--no-fail]

Side by side, one job RUNNING on the loopback lab head (a finished job would be answered from
the job store without asking Ray), rounds alternating, medians:
  status  `warpforge-launch status <job>` (the real CLI, a fresh process each time)
  ray     `ray job status <submission id>` from the Ray venv
  curl    `curl` of the same `GET /api/jobs/<id>` (a process: the REST floor from a shell)
  python  `python -c pass` with the CLI's interpreter (the start every Python CLI pays)
  get     the same GET in-process on a fresh connection (the network and Ray's own time)
Then 50 jobs are submitted through the library and one `list` refreshes them all: its HTTP
requests are counted in-process, and the CLI's wall time is reported.

Ends with a table of target vs measured and exits 1 when a target is missed (unless --no-fail).
Uses the lab head (started here if none runs, stopped at the end only then).
"""

from __future__ import annotations

import argparse
import http.client
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
RATIO_TO_RAY = 0.25  # status at most a quarter of `ray job status`
BUDGET_MS = 60.0  # status at most python start + the GET + this much


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    return time.perf_counter() - t0, done


def fresh_get(host: str, port: int, path: str) -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path, headers={"Accept": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    args = ap.parse_args()

    head = raylab.start_head()
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=raylab.lab_dir()))
    try:
        missed = run(head, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if head.owned:
            head.stop()
    return 1 if missed and not args.no_fail else 0


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
    # as installed: bytecode cached (a dev shell's PYTHONDONTWRITEBYTECODE would make every
    # run compile the project from source), in a cache dir of this run's own
    env = dict(os.environ, WARPFORGE_HOME=str(work / "home"), NO_PROXY="127.0.0.1",
               PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.update(WARPFORGE_HOME=env["WARPFORGE_HOME"])
    cli = [sys.executable, "-m", "warpforge_launch"]
    model = work / "mlp.py"
    model.write_text("class SimpleMLP: pass\n")

    # one RUNNING job that every tool asks about
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
    curl_argv = [shutil.which("curl") or "", "-sf", "-m", "10", "--noproxy", "*",
                 f"{head.url}/api/jobs/{sid}"]
    python_argv = [sys.executable, "-c", "pass"]
    deadline = time.monotonic() + 60
    while "RUNNING" not in timed(status_argv, env)[1].stdout:
        if time.monotonic() > deadline:
            print("job never ran", file=sys.stderr)
            return 1
        time.sleep(0.5)

    host, port = head.url.removeprefix("http://").split(":")
    samples: dict[str, list[float]] = {k: [] for k in ("status", "ray", "curl", "python", "get")}
    for _ in range(args.rounds):
        t, done = timed(status_argv, env)
        assert done.returncode == 0 and "RUNNING" in done.stdout, done.stderr
        samples["status"].append(t)
        t, done = timed(ray_argv, env)
        assert done.returncode == 0 and "RUNNING" in (done.stdout + done.stderr), done.stderr
        samples["ray"].append(t)
        if curl_argv[0]:
            t, done = timed(curl_argv, env)
            assert done.returncode == 0 and "RUNNING" in done.stdout, done.stderr
            samples["curl"].append(t)
        samples["python"].append(timed(python_argv, env)[0])
        samples["get"].append(fresh_get(host, int(port), f"/api/jobs/{sid}"))
    med = {k: statistics.median(v) * 1000 if v else float("nan") for k, v in samples.items()}
    print(f"status of a RUNNING Ray job, median of {args.rounds} alternating rounds (ms):")
    for name, label in (("status", "warpforge-launch status"), ("ray", "ray job status"),
                        ("curl", "curl GET (process)"), ("python", "python -c pass"),
                        ("get", "GET in-process, new conn")):
        print(f"  {label:<26}: {med[name]:7.1f}")
    print(f"  status / ray job status   : {med['status'] / med['ray']:.3f}")
    print(f"  status / curl GET         : {med['status'] / med['curl']:.2f}")
    print(f"  status - python - GET     : {med['status'] - med['python'] - med['get']:.1f} ms")
    _importtime(status_argv, env)
    subprocess.run([*cli, "cancel", job_id, "--inventory", str(inventory)],
                   env=env, capture_output=True, timeout=60, check=False)  # fmt: skip

    requests, list_ms = _list_refresh(inventory, model, work, cli, env, args)
    rows = [
        ("status / `ray job status`", f"<= {RATIO_TO_RAY}", f"{med['status'] / med['ray']:.3f}",
         med["status"] / med["ray"] <= RATIO_TO_RAY),
        ("status - python start - GET", f"<= {BUDGET_MS:.0f} ms",
         f"{med['status'] - med['python'] - med['get']:.1f} ms",
         med["status"] <= med["python"] + med["get"] + BUDGET_MS),
        (f"HTTP requests of a list refreshing {args.jobs} jobs", "== 1", str(len(requests)),
         len(requests) == 1),
    ]
    print(f"\n  (list of {args.jobs} Ray jobs, median wall: {list_ms:.1f} ms)")
    print(f"\n{'target':<44} {'wanted':>10} {'measured':>12}  verdict")
    for name, wanted, got, ok in rows:
        print(f"{name:<44} {wanted:>10} {got:>12}  {'met' if ok else 'MISSED'}")
    return sum(1 for *_, ok in rows if not ok)


def _importtime(status_argv: list[str], env: dict[str, str]) -> None:
    """Where a status run's import time goes: the ten largest cumulative top-level imports."""
    done = subprocess.run([status_argv[0], "-X", "importtime", *status_argv[1:]],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    top = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            top.append((int(parts[1]), parts[2].strip()))
    top.sort(reverse=True)
    print("  top-level imports of one status run (cumulative ms):",
          ", ".join(f"{name} {us / 1000:.1f}" for us, name in top[:10]))


def _list_refresh(inventory, model, work, cli, env, args) -> tuple[list[str], float]:
    from warpforge_launch.inputs import parse_inputs
    from warpforge_launch.jobs import JobDefinition, JobQuery, ResourceRequirements
    from warpforge_launch.launcher import Launcher
    from warpforge_launch.schedulers.ray_client import RayClient

    definition = JobDefinition(
        name="bench", source=str(model), model_class="SimpleMLP",
        inputs=parse_inputs("[(1, 8)]"), resources=ResourceRequirements(memory_mb=64),
    )  # fmt: skip
    with Launcher(str(inventory)) as launcher:
        ids = [launcher.submit(definition, "raylab") for _ in range(args.jobs)]
    store = Path(env["WARPFORGE_HOME"])
    snapshot = work / "home-snapshot"
    shutil.copytree(store, snapshot)

    requests: list[str] = []
    original = RayClient.call

    def counting(self, method, path, **kw):
        requests.append(f"{method} {path}")
        return original(self, method, path, **kw)

    RayClient.call = counting
    try:
        with Launcher(str(inventory)) as launcher:
            rows = launcher.list(JobQuery(limit=None))
    finally:
        RayClient.call = original
    assert {r.job_id for r, _ in rows} >= set(ids)

    walls = []
    for _ in range(max(3, args.rounds // 3)):
        shutil.rmtree(store)
        shutil.copytree(snapshot, store)  # every round refreshes the non-terminal jobs
        t, done = timed([*cli, "list", "--limit", str(args.jobs + 10), "--inventory",
                         str(inventory)], env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        walls.append(t)
    return requests, statistics.median(walls) * 1000


if __name__ == "__main__":
    sys.exit(main())
