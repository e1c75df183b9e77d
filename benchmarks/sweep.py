"""Sweep timings on the real lab clusters (tests/testlab): Slurm through an SSH login node,
and the loopback Ray head.

Run as root from the repository root, holding the lab lock:
    flock /tmp/wf-itest.lock .venv/bin/python benchmarks/sweep.py [--cells 100] [--no-fail]

1. Slurm submit of an N-cell sweep (one resource shape, held so nothing runs) through the
   login node: the whole `sweep` path (plan, job store, one remote shell, sbatch --array)
   vs the floor, one remote shell running one `sbatch --array` of the same script (sent on
   its stdin: `ssh login sbatch --parsable < array.sh`); the submit's steps are timed too
   (planning, the driver's head start, the SUBMITTING transaction, GO to the answer, the
   completion), and a send without the head start.
2. Slurm status refresh of all N cells once they ran: a fresh scheduler (as a new CLI
   process has), client calls counted (target: 1 squeue + 1 sacct), vs the same two calls
   by hand over the same connection.
3. Ray: N submissions (the sweep's concurrent batch) vs N concurrent raw POSTs of the same
   bodies over the same number of kept-alive connections. The jobs ask for a resource no
   node has, so no job process starts on this 2-core machine (they fail after the lab's
   RAY_JOB_START_TIMEOUT_SECONDS).
4. HOOK: fetch of the N Slurm results (benchmarks/fetch.py supplies it; see FETCH_HOOK).

Alternating rounds, medians; a table of target vs measured at the end; exit 1 on a miss
unless --no-fail. Daemons this script starts are stopped at the end (a running lab is
reused and left up).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._util import med, report_targets, target, timed  # noqa: E402
from tests.testlab import ray as raylab  # noqa: E402
from tests.testlab import slurm as lab  # noqa: E402
from warpforge_launch import sweep_launch, sweeps  # noqa: E402
from warpforge_launch.launcher import Launcher  # noqa: E402
from warpforge_launch.schedulers import slurm_parse as sp  # noqa: E402
from warpforge_launch.schedulers.slurm import SlurmScheduler  # noqa: E402

PAYLOAD = REPO / "tests" / "integration" / "slurm" / "fake_snakegrinder.sh"
MODEL = REPO / "tests" / "unit" / "fixtures" / "slurm" / "models" / "simple_mlp.py"


def sweep_spec(cells: int, *, sleep: str | None = None) -> sweeps.SweepSpec:
    """One model, ``cells`` input shapes, one GPU type: one array of ``cells`` tasks."""
    env = {"WF_FAKE_SLEEP": sleep} if sleep else {}
    return sweeps.parse({"name": "bench", "models": [{"source": str(MODEL),
                                                      "class": "SimpleMLP"}],
                         "inputs": [f"[(1, {i + 1})]" for i in range(cells)],
                         "options": {"memory": "50M", "timeout": 5, "env": env}},
                        base_dir=REPO)


@dataclass
class SweepBenchContext:
    """What the fetch hook gets: the lab, the login node and N finished Slurm cells."""

    cluster: object
    login: object
    shared: Path
    home: Path
    inventory: Path
    job_ids: list[str] = field(default_factory=list)
    rounds: int = 5
    target: Callable[[str, str, str, bool], None] = target


# -- HOOK: fetch ------------------------------------------------------------------------------
# The artifact store's benchmark plugs in here: benchmarks/fetch.py defines
#     measure_sweep_fetch(ctx: SweepBenchContext) -> None
# which times `fetch` of ctx.job_ids (finished Slurm array tasks, files in the shared work
# dir, reached through ctx.login) against `ssh tar | tar` of the same files, and records its
# targets with ctx.target(what, goal, measured, met). Until that file exists, it is skipped.
FETCH_HOOK = "measure_sweep_fetch"


def bench_fetch(ctx: SweepBenchContext) -> None:
    print(f"\n== 4. fetch of {len(ctx.job_ids)} Slurm results (hook)")
    try:
        from benchmarks import fetch
    except ImportError:
        print("skipped: benchmarks/fetch.py is not here yet")
        return
    hook = getattr(fetch, FETCH_HOOK, None)
    if hook is None:
        print(f"skipped: benchmarks/fetch.py has no {FETCH_HOOK}()")
        return
    hook(ctx)


# -- Slurm -----------------------------------------------------------------------------------
def slurm_inventory(path: Path, shared: Path, login, *, hold: bool) -> Path:
    lines = ["default_scheduler: hpc", "schedulers:", "  hpc:", "    type: slurm",
             f"    work_dir: {lab.shared_work_dir(shared)}", "    runtime: none",
             "    partition: debug", "    command_timeout: 60",
             f"    snakegrinder: {shared / 'bin' / 'fake_snakegrinder.sh'}",
             f"    login_host: {login.host}", f"    login_port: {login.port}",
             f"    login_user: {login.user}", f"    identity_file: {login.identity_file}",
             f"    known_hosts_file: {login.known_hosts_file}"]
    if hold:
        lines.append('    extra_sbatch: ["--hold"]')
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def _spans(into: dict[str, list[float]]):
    """Time the steps of a sweep submit while the block runs: planning, the driver's head
    start (prepare: it gets the scripts), the SUBMITTING transaction, GO to the answer
    (execute), the completion; what is left of the whole is building the rows."""
    from warpforge_launch.schedulers.slurm import SlurmScheduler
    from warpforge_launch.store import JobStore

    steps = [(sweep_launch, "plan", "plan"), (SlurmScheduler, "prepare_batch", "prepare"),
             (JobStore, "add_sweep", "SUBMITTING txn"), (SlurmScheduler, "execute_batch",
                                                          "GO to answer"),
             (JobStore, "complete_many", "completion")]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in steps]

    def timing(fn, label):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                into.setdefault(label, []).append(time.perf_counter() - t0)
        return run

    for (owner, name, fn), (_, _, label) in zip(saved, steps, strict=True):
        setattr(owner, name, timing(fn, label))
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def bench_slurm(ctx: SweepBenchContext, cells: int, rounds: int) -> None:
    print(f"\n== 1. Slurm: submit a {cells}-cell sweep through the login node")
    held_inv = slurm_inventory(ctx.home / "held.yaml", ctx.shared, ctx.login, hold=True)
    spec = sweep_spec(cells)
    launcher = Launcher(str(held_inv))
    sched = sweep_launch.plan(launcher, spec)[0].scheduler
    sched.transport.run(["true"], timeout=30)  # the shared connection, as a CLI finds it
    script = sweep_launch.plan(launcher, spec)[0].batch.requests[0].script
    arrays: list[str] = []

    submitted: list[str] = []

    def ours():
        sweep_id, failed = sweep_launch.submit(launcher, spec)
        assert not failed, failed
        submitted.append(sweep_id)

    def by_hand():  # `ssh login sbatch --parsable < array.sh`: the script travels too
        r = sched.transport.run(["sbatch", "--parsable"], input=script, timeout=60)
        assert r.returncode == 0, r.stderr
        arrays.append(r.stdout.strip().split(";")[0])

    def send_only():  # the backend's part: the planned arrays through the submit driver
        batch = sweep_launch.plan(launcher, spec)[0].batch
        t0 = time.perf_counter()
        got = sched.execute_batch(batch)
        dt = time.perf_counter() - t0
        arrays.extend({o.native_id.partition("_")[0] for o in got.values()})
        return dt

    a, b, c = [], [], []
    sched.calls.clear()
    spans: dict[str, list[float]] = {}
    for _ in range(rounds):
        with _spans(spans):
            a.append(timed(ours)[0])
        b.append(timed(by_hand)[0])
        c.append(send_only())
    sbatch_calls = sched.calls["sbatch"] - rounds  # send_only's own
    print(f"sweep submit (plan + store + one remote shell) : median {med(a)*1000:7.1f} ms")
    print("  its spans: " + ", ".join(f"{name} {med(v)*1000:.1f}" for name, v in spans.items())
          + " ms (medians)")
    print(f"  a send without the head start                : median {med(c)*1000:7.1f} ms")
    print(f"one remote shell running one sbatch --array    : median {med(b)*1000:7.1f} ms")
    print(f"ratio                                          : {med(a)/med(b):.2f}x (<= 1.5x)")
    print(f"ratio of that send alone                       : {med(c)/med(b):.2f}x")
    target(f"Slurm submit of {cells} cells / one sbatch --array", "<= 1.50x",
           f"{med(a)/med(b):.2f}x", med(a) / med(b) <= 1.5)
    target("remote shells per sweep submit", "1", f"{sbatch_calls / rounds:g}",
           sbatch_calls == rounds)
    for sweep_id in submitted:
        rows = launcher.store.by_correlation([c for c, _ in launcher.store.get_sweep(
            sweep_id).cells])
        arrays.extend({r.native_id.partition("_")[0] for r in rows.values()})
    sched.transport.run(["scancel", *arrays], timeout=60)
    launcher.close()

    print(f"\n== 2. Slurm: one status refresh of all {cells} cells (they ran)")
    inv = slurm_inventory(ctx.home / "run.yaml", ctx.shared, ctx.login, hold=False)
    ctx.inventory = inv
    with Launcher(str(inv)) as runner:
        sweep_id, failed = sweep_launch.submit(runner, spec)
        assert not failed, failed
        rows = runner.store.by_correlation([c for c, _ in runner.store.get_sweep(
            sweep_id).cells])
        ids = sorted((r.job_id for r in rows.values()), key=lambda j: sp.id_key(
            j.removeprefix("hpc-")))
        run_sched = runner._for_record(next(iter(rows.values())))
        end = time.monotonic() + 900
        while True:
            probe = SlurmScheduler("hpc", run_sched.config, home=ctx.home / "probe")
            got = probe.statuses(ids)
            if len(got) == len(ids) and all(s.state.terminal for s in got.values()):
                break
            if time.monotonic() > end:
                raise SystemExit(f"the {cells} cells did not finish in time")
            time.sleep(2)
    ctx.job_ids = ids
    natives = [j.removeprefix("hpc-") for j in ids]
    job = natives[0].partition("_")[0]

    def fresh_refresh():
        s = SlurmScheduler("hpc", run_sched.config, home=ctx.home / "probe")  # its SSH master
        got = s.statuses(ids)
        assert len(got) == len(ids)
        return s

    def floor():
        for argv in (["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", sp.SQUEUE_FORMAT],
                     ["sacct", "-X", "-P", "-n", "-j", job, f"--format={sp.SACCT_FIELDS}"]):
            r = probe.transport.run(argv, timeout=60)
            assert r.returncode == 0, r.stderr

    a, b, last = [], [], None
    for _ in range(rounds):
        dt, last = timed(fresh_refresh)
        a.append(dt)
        b.append(timed(floor)[0])
    calls = dict(last.calls)
    print(f"refresh of {cells} cells, fresh instance : median {med(a)*1000:7.1f} ms  "
          f"calls {calls}")
    print(f"squeue + sacct by hand over SSH     : median {med(b)*1000:7.1f} ms")
    target(f"client calls of a {cells}-cell refresh", "1+1", "+".join(
        str(calls.get(k, 0)) for k in ("squeue", "sacct")), calls == {"squeue": 1, "sacct": 1})
    target(f"refresh of {cells} cells / squeue+sacct by hand", "<= 1.50x",
           f"{med(a)/med(b):.2f}x", med(a) / med(b) <= 1.5)


# -- Ray ---------------------------------------------------------------------------------------
def bench_ray(cells: int, rounds: int, home: Path) -> None:
    print(f"\n== 3. Ray: {cells} submissions vs {cells} concurrent raw POSTs")
    head = raylab.start_head()
    try:
        inv = home / "ray.yaml"
        inv.write_text("default_scheduler: raylab\nschedulers:\n  raylab:\n    type: ray\n"
                       f"    dashboard_url: {head.url}\n    snakegrinder: /bin/true\n"
                       f"    output_root: {home / 'rayout'}\n"
                       "    gpu_resources: {NVIDIA: wf_bench_never}\n")
        doc = {"models": [{"source": str(MODEL), "class": "SimpleMLP"}],
               "inputs": [f"[(1, {i + 1})]" for i in range(cells)], "gpus": ["NVIDIA"],
               "options": {"memory": "50M", "timeout": 1}}
        spec = sweeps.parse(doc, base_dir=REPO)
        launcher = Launcher(str(inv))
        groups = sweep_launch.plan(launcher, spec)
        sched = groups[0].scheduler
        bodies = [p.request.wire_body({}) for p in groups[0].batch.jobs]
        sweep_launch.submit(launcher, spec)  # warm: the source package is uploaded once
        from warpforge_launch.schedulers.ray import BATCH_CONNECTIONS

        host, port = head.url.removeprefix("http://").split(":")

        def raw():
            local = {}

            def post(body):
                key = threading.get_ident()
                conn = local.get(key)
                if conn is None:
                    conn = local[key] = http.client.HTTPConnection(host, int(port), timeout=30)
                data = json.dumps({**body, "submission_id": f"raw-{uuid.uuid4().hex}"})
                conn.request("POST", "/api/jobs/", body=data,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status

            with ThreadPoolExecutor(BATCH_CONNECTIONS) as pool:
                list(pool.map(post, bodies))
            for conn in local.values():
                conn.close()

        def ours():
            _, failed = sweep_launch.submit(launcher, spec)
            assert not failed, failed

        a, b = [], []
        for _ in range(rounds):
            a.append(timed(ours)[0])
            b.append(timed(raw)[0])
        print(f"sweep submit (plan + store + concurrent POSTs) : median {med(a)*1000:7.1f} ms")
        print(f"{cells} concurrent raw POSTs ({BATCH_CONNECTIONS} connections)    : "
              f"median {med(b)*1000:7.1f} ms")
        target(f"Ray submit of {cells} cells / raw concurrent POSTs", "<= 2.00x",
               f"{med(a)/med(b):.2f}x", med(a) / med(b) <= 2.0)
        sched.close()
        launcher.close()
    finally:
        if head.owned:
            head.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-slurm", action="store_true")
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wf-sweep-bench-") as tmp:
        home = Path(tmp)
        os.environ["WARPFORGE_HOME"] = str(home / "wfhome")
        print(f"{os.cpu_count()} cores, cells={args.cells}, rounds={args.rounds}")
        if not args.skip_slurm:
            cluster = lab.start(accounting=True)
            os.environ["SLURM_CONF"] = str(cluster.conf)
            login = None
            try:
                shared = lab.shared_with_payload(PAYLOAD)
                login = lab.start_login_node(cluster.conf)
                ctx = SweepBenchContext(cluster, login, shared, home, home / "run.yaml",
                                        rounds=args.rounds)
                bench_slurm(ctx, args.cells, args.rounds)
                bench_fetch(ctx)
            finally:
                if login:
                    lab.stop_login_node(login)
                lab.stop(cluster)
        if not args.skip_ray:
            bench_ray(args.cells, args.rounds, home)
    met = report_targets()
    return 0 if met or args.no_fail else 1


if __name__ == "__main__":
    raise SystemExit(main())

