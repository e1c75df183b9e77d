"""Slurm backend timings against the real lab cluster (tests/testlab/slurm.py).

Run as root from the repository root:  .venv/bin/python benchmarks/slurm_status.py [--jobs 100]

1. One status refresh of N finished jobs: SlurmScheduler.statuses() (a fresh instance, as a
   new CLI process has) vs the hand-batched floor (one squeue + one sacct by hand), with the
   calls counted; then the same refresh once every job is cached (zero calls); and, once,
   the original per-job loop (squeue + sacct per job) for reference.
2. `warpforge-launch status` of one running job through an SSH login node (loopback sshd,
   OpenSSH ControlMaster reused across CLI invocations) vs the same CLI with local clients,
   vs a bare local `squeue`, and a fresh SSH connection per call for reference.
3. 50 submissions through the login node: submit_many (one remote shell for the sweep) vs
   one remote shell running 50 `sbatch` by hand; 50 round trips once for reference.

Alternating A/B, several rounds, medians. It ends with a table of target vs measured and
exits 1 when a target is missed (``--no-fail`` turns that off). Every daemon this script
starts is stopped at the end (a running lab is reused and left up).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._util import med, report_targets, target, timed  # noqa: E402
from tests.testlab import slurm as lab  # noqa: E402
from warpforge_launch.jobs import (  # noqa: E402
    InputSpec,
    JobDefinition,
    JobSubmission,
    ResourceRequirements,
)
from warpforge_launch.schedulers import slurm_parse as sp  # noqa: E402
from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler  # noqa: E402
from warpforge_launch.schedulers.slurm_transport import LocalTransport  # noqa: E402

PAYLOAD = REPO / "tests" / "integration" / "slurm" / "fake_snakegrinder.sh"
MODEL = REPO / "tests" / "unit" / "fixtures" / "slurm" / "models" / "simple_mlp.py"




def definition(env=None) -> JobDefinition:
    return JobDefinition(name="bench", source=str(MODEL), model_class="SimpleMLP",
                         inputs=(InputSpec((1, 8)),), resources=ResourceRequirements(memory_mb=100),
                         environment=env or {}, timeout=timedelta(minutes=10))


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, **kw)


def wait_terminal(sched: SlurmScheduler, ids, deadline=600):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        probe = SlurmScheduler(sched.name, sched.config, home=sched.home,
                               transport=sched.transport)
        got = probe.statuses(ids)
        if len(got) == len(ids) and all(s.state.terminal for s in got.values()):
            return
        time.sleep(1)
    raise SystemExit("jobs did not finish in time")


def bench_refresh(sched: SlurmScheduler, n: int, rounds: int) -> None:
    print(f"\n== 1. one refresh of {n} finished jobs")
    t, ids = timed(sched.submit_many, [JobSubmission.new(definition()) for _ in range(n)])
    print(f"submitted {n} jobs in {t:.2f}s (one submit round trip); waiting for them to end")
    wait_terminal(sched, ids)
    natives = ",".join(i.rsplit("-", 1)[1] for i in ids)

    def ours():
        fresh = SlurmScheduler(sched.name, sched.config, home=sched.home,
                               transport=sched.transport)
        got = fresh.statuses(ids)
        assert len(got) == n
        return fresh

    def floor():
        run(["squeue", "-h", "-t", "all", "-j", natives, "-o", sp.SQUEUE_FORMAT])
        run(["sacct", "-X", "-P", "-n", "-j", natives, f"--format={sp.SACCT_FIELDS}"])

    a, b = [], []
    fresh = None
    for _ in range(rounds):
        dt, fresh = timed(ours)
        a.append(dt)
        b.append(timed(floor)[0])
    print(f"statuses() fresh instance : median {med(a)*1000:7.1f} ms  calls {dict(fresh.calls)}")
    print(f"hand-batched floor        : median {med(b)*1000:7.1f} ms  (1 squeue + 1 sacct)")
    print(f"ratio ours/floor          : {med(a)/med(b):.2f}x  (target <= 1.2x)")
    target(f"refresh of {n} finished jobs / floor", "<= 1.20x", f"{med(a)/med(b):.2f}x",
           med(a) / med(b) <= 1.2)
    target("client calls of that refresh", "2", str(sum(fresh.calls.values())),
           dict(fresh.calls) == {"squeue": 1, "sacct": 1})
    fresh.calls.clear()
    cached = [timed(fresh.statuses, ids)[0] for _ in range(rounds)]
    print(f"all terminal and cached   : median {med(cached)*1000:7.3f} ms  "
          f"calls {dict(fresh.calls)}")
    target("client calls once all are cached", "0", str(sum(fresh.calls.values())),
           not fresh.calls)

    def per_job():
        for native in natives.split(","):
            run(["squeue", "-h", "-t", "all", "-j", native, "-o", sp.SQUEUE_FORMAT])
            run(["sacct", "-X", "-P", "-n", "-j", native, f"--format={sp.SACCT_FIELDS}"])

    print(f"per-job loop (original)   : {timed(per_job)[0]*1000:7.1f} ms  (1 round, "
          f"{2*n} calls)")


def inventory(path: Path, shared: Path, login: lab.LoginNode | None) -> Path:
    lines = ["default_scheduler: hpc", "schedulers:", "  hpc:", "    type: slurm",
             f"    work_dir: {lab.shared_work_dir(shared)}", "    runtime: none",
             "    partition: debug",
             f"    snakegrinder: {shared / 'bin' / 'fake_snakegrinder.sh'}"]
    if login:
        lines += [f"    login_host: {login.host}", f"    login_port: {login.port}",
                  f"    login_user: {login.user}", f"    identity_file: {login.identity_file}",
                  f"    known_hosts_file: {login.known_hosts_file}"]
    else:
        lines += [f"    slurm_conf: {os.environ['SLURM_CONF']}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_cli_status(sched, shared: Path, login: lab.LoginNode, rounds: int, home: Path):
    """As a user runs it: jobs submitted with the CLI (so they are in the job store, with the
    config they went to), then `status` from fresh CLI processes with cached bytecode."""
    print("\n== 2. CLI `status` of one running job")
    inv_ssh = inventory(home / "inv-ssh.yaml", shared, login)
    inv_local = inventory(home / "inv-local.yaml", shared, None)
    cli = [sys.executable, "-m", "warpforge_launch"]
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base_env["PYTHONPATH"] = str(REPO)
    run([sys.executable, "-m", "compileall", "-q", str(REPO / "warpforge_launch")], env=base_env)
    env_ssh = {**base_env, "WARPFORGE_HOME": str(home / "wfhome-ssh")}
    env_local = {**base_env, "WARPFORGE_HOME": str(home / "wfhome-local")}

    def cli_submit(inv, env):
        r = run([*cli, "--inventory", str(inv), "submit", "--source", str(MODEL),
                 "--class", "SimpleMLP", "--inputs", "[(1, 8)]", "--memory", "100",
                 "--env", "WF_FAKE_SLEEP=600", "--json"], env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["job_id"]

    ssh_id, local_id = cli_submit(inv_ssh, env_ssh), cli_submit(inv_local, env_local)
    native = ssh_id.rsplit("-", 1)[1]
    end = time.monotonic() + 60
    while not all(sched.status(j).state.value == "RUNNING" for j in (ssh_id, local_id)):
        if time.monotonic() > end:
            raise SystemExit(f"{ssh_id}/{local_id} did not start")
        time.sleep(0.5)

    def cli_status(inv, env, job_id):
        r = run([*cli, "--inventory", str(inv), "status", job_id], env=env)
        assert r.returncode == 0 and "RUNNING" in r.stdout, (r.stdout, r.stderr)

    ssh_base = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={login.known_hosts_file}", "-i", login.identity_file,
                "-p", str(login.port), "-l", login.user, login.host]

    def fresh_ssh_squeue():
        r = run([*ssh_base, shlex.join(["squeue", "-h", "-j", native])])
        assert r.returncode == 0, r.stderr

    def lib_status():
        # a fresh instance, as a new process has: no cache, the shared connection reused
        s = SlurmScheduler("hpc", sched_config(shared, login), home=home / "wfhome")
        assert s.status(ssh_id).state.value == "RUNNING"

    cli_status(inv_ssh, env_ssh, ssh_id)  # opens the shared connection (kept by ControlPersist)
    a, b, c, d, e, f = [], [], [], [], [], []
    for _ in range(rounds):
        a.append(timed(cli_status, inv_ssh, env_ssh, ssh_id)[0])
        b.append(timed(cli_status, inv_local, env_local, local_id)[0])
        c.append(timed(run, ["squeue", "-h", "-j", native])[0])
        d.append(timed(fresh_ssh_squeue)[0])
        e.append(timed(lib_status)[0])
        f.append(timed(run, [sys.executable, "-c", "pass"], env=base_env)[0])
    print(f"CLI status via SSH login node (reused) : median {med(a)*1000:7.1f} ms")
    print(f"CLI status, local Slurm clients        : median {med(b)*1000:7.1f} ms")
    print(f"bare local `squeue -j`                 : median {med(c)*1000:7.1f} ms")
    print(f"bare `python -c pass`                  : median {med(f)*1000:7.1f} ms")
    print(f"fresh ssh + squeue (no reuse)          : median {med(d)*1000:7.1f} ms")
    print(f"library status() via SSH (reused)      : median {med(e)*1000:7.1f} ms")
    print(f"ratio SSH CLI / local CLI              : {med(a)/med(b):.2f}x")
    print(f"ratio library-via-SSH / local squeue   : {med(e)/med(c):.2f}x  (target <= 3x)")
    target("library status via SSH / local squeue", "<= 3.00x", f"{med(e)/med(c):.2f}x",
           med(e) / med(c) <= 3)
    print(f"ratio SSH CLI / bare local squeue      : {med(a)/med(c):.2f}x  (the CLI's "
          "Python start-up dominates)")
    print(f"ratio (SSH CLI - python start) / squeue: {(med(a)-med(f))/med(c):.2f}x")
    for job_id in (ssh_id, local_id):
        sched.cancel(job_id)
    SlurmScheduler("hpc", sched_config(shared, login), home=home / "wfhome").transport \
        .stop_master()


def sched_config(shared: Path, login: lab.LoginNode | None) -> SlurmConfig:
    kw = dict(work_dir=lab.shared_work_dir(shared), runtime="none", partition="debug",
              snakegrinder=str(shared / "bin" / "fake_snakegrinder.sh"), command_timeout=60)
    if login:
        kw.update(login_host=login.host, login_port=login.port, login_user=login.user,
                  identity_file=login.identity_file, known_hosts_file=login.known_hosts_file)
    return SlurmConfig(**kw)


def bench_submit(shared: Path, login: lab.LoginNode, rounds: int, home: Path):
    print("\n== 3. 50 submissions through the SSH login node")
    remote = SlurmScheduler("hpc", sched_config(shared, login), home=home)
    held = definition()
    all_ids: list[str] = []
    script = remote.plan(JobSubmission.new(held)).request.script.replace(
        "#SBATCH --nodes=1", "#SBATCH --nodes=1\n#SBATCH --hold")
    script_path = shared / "bench" / "hand.sbatch"  # readable by the login user
    script_path.parent.mkdir(exist_ok=True)
    script_path.parent.chmod(0o755)
    script_path.write_text(script)
    script_path.chmod(0o644)
    hand = ("for i in $(seq 50); do sbatch --parsable " + shlex.quote(str(script_path)) +
            "; done")
    held_remote = SlurmScheduler("hpc", SlurmConfig(**{**sched_config(shared, login).__dict__,
                                                      "extra_sbatch": ("--hold",)}), home=home)
    held_remote.transport.run(["true"], timeout=30)  # open the shared connection

    def ours():
        all_ids.extend(held_remote.submit_many([JobSubmission.new(held) for _ in range(50)]))

    def by_hand():
        r = held_remote.transport.run(["bash", "-c", hand], timeout=120)
        ids = r.stdout.split()
        assert len(ids) == 50, r.stderr
        all_ids.extend(f"hpc-{i}" for i in ids)

    a, b = [], []
    for _ in range(rounds):
        a.append(timed(ours)[0])
        b.append(timed(by_hand)[0])
    one_by_one = timed(lambda: [all_ids.append(held_remote.submit(JobSubmission.new(held)))
                                for _ in range(50)])[0]
    print(f"submit_many (one remote shell)          : median {med(a)*1000:7.1f} ms")
    print(f"one remote shell running 50 sbatch      : median {med(b)*1000:7.1f} ms")
    print(f"ratio ours/by-hand                      : {med(a)/med(b):.2f}x  (target <= 1.5x)")
    target("submit_many of 50 via SSH / by hand", "<= 1.50x", f"{med(a)/med(b):.2f}x",
           med(a) / med(b) <= 1.5)
    print(f"50 separate submits (50 round trips)    : {one_by_one*1000:7.1f} ms (1 round)")
    natives = [i.rsplit("-", 1)[1] for i in all_ids]
    for k in range(0, len(natives), 200):
        run(["scancel", *natives[k:k + 200]])
    held_remote.transport.stop_master()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    args = ap.parse_args()
    cluster = lab.start(accounting=True)
    login = None
    try:
        shared = lab.shared_with_payload(PAYLOAD)
        login = lab.start_login_node(cluster.conf)
        with tempfile.TemporaryDirectory(prefix="wf-slurm-bench-") as tmp:
            home = Path(tmp)
            local = SlurmScheduler("hpc", sched_config(shared, None), home=home,
                                   transport=LocalTransport(env={"SLURM_CONF": str(cluster.conf)}))
            print(f"Slurm {cluster.run('sinfo', '--version').stdout.strip()}, "
                  f"{os.cpu_count()} cores, rounds={args.rounds}")
            bench_refresh(local, args.jobs, args.rounds)
            bench_cli_status(local, shared, login, args.rounds, home)
            bench_submit(shared, login, max(3, args.rounds // 2), home)
    finally:
        if login:
            lab.stop_login_node(login)
        lab.stop(cluster)
    met = report_targets()
    return 0 if met or args.no_fail else 1


if __name__ == "__main__":
    raise SystemExit(main())
