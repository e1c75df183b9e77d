"""Kubernetes cost, side by side with kubectl against the same live cluster and Jobs.

Run from the repository root with the project's venv (the binaries of
.ci/setup.d/70-k8s.sh must exist; the loopback lab cluster is started if none runs and
stopped at the end only then):

    .venv/bin/python -m benchmarks.k8s_status [--rounds 10] [--jobs 200] [--no-fail]

status: `warpforge-launch status <id>` on a RUNNING Job (a finished one is answered from
        the job store) vs `kubectl get job <name> -o json`.            target <= 1.0x
list:   `warpforge-launch list` refreshing N Jobs (all Pending: they ask for more GPUs than
        the node has) vs `kubectl get jobs -l <instance label> -o json`; the HTTP requests
        of one refresh are counted in-process.             target <= 1.5x and 1 request
submit: `warpforge-launch submit` (the Job, then its Secret owned by it: two requests) vs
        `kubectl create -f job.json` of the same rendered Job.         target <= 1.5x
Rounds alternate A and B; figures are medians. kubectl runs with a warm discovery cache; the
CLI runs from this checkout with its caches warm (a second run of a command, as a user's).
The floor lines show what any Python CLI pays before its first request: the interpreter's
start, and the import of ``ssl`` that HTTPS needs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import FAKE_SNAKEGRINDER  # noqa: E402
from tests.testlab import k8s as k8slab  # noqa: E402

TARGETS = {"status": 1.0, "list": 1.5, "submit": 1.5}


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          check=False, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed: {done.stderr.strip()[:300]}")
    return took


def alternate(a, b, rounds: int) -> tuple[float, float]:
    sa, sb = [], []
    for i in range(rounds):  # position-balanced: A first on even rounds, B first on odd
        if i % 2:
            sb.append(b(i))
            sa.append(a(i))
        else:
            sa.append(a(i))
            sb.append(b(i))
    return statistics.median(sa), statistics.median(sb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    args = ap.parse_args()
    cluster = k8slab.start()
    work = Path(tempfile.mkdtemp(prefix="bench-k8s-", dir=k8slab.lab_dir()))
    instance = f"bench{uuid.uuid4().hex[:6]}"
    try:
        rows = run(cluster, work, instance, args)
    finally:
        k8slab.kc("-n", k8slab.NAMESPACE, "delete", "jobs", "-l",
                  f"warpforge.io/instance={instance}", "--wait=false", check=False, timeout=120)
        shutil.rmtree(work, ignore_errors=True)
        cluster.stop()
    print(f"\n{'measure':<8} {'warpforge-launch':>17} {'kubectl':>10} {'ratio':>7} "
          f"{'target':>7}  result")
    missed = False
    for name, ours, theirs, extra in rows:
        ratio = ours / theirs
        ok = ratio <= TARGETS[name] and extra.get("ok", True)
        missed |= not ok
        note = f"  ({extra['note']})" if "note" in extra else ""
        print(f"{name:<8} {ours * 1000:>14.0f} ms {theirs * 1000:>7.0f} ms {ratio:>6.2f}x "
              f"{TARGETS[name]:>6.1f}x  {'ok' if ok else 'MISSED'}{note}")
    return 1 if missed and not args.no_fail else 0


def run(cluster, work: Path, instance: str, args) -> list:
    import yaml

    image = k8slab.payload_image(FAKE_SNAKEGRINDER)
    out = work / "out"
    out.mkdir()
    out.chmod(0o1777)
    settings = {"type": "kubernetes", "kubeconfig": str(cluster.kubeconfig),
                "namespace": k8slab.NAMESPACE, "image_nvidia": image, "image_cpu": image,
                "image_pull_policy": "Never", "output_host_path": str(out),
                "local_output_root": str(out), "allow_pending": True}  # one config: one instance
    inventory = work / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"default_scheduler": instance,
                                         "schedulers": {instance: settings}}))
    home = work / "home"
    env = dict(os.environ, WARPFORGE_HOME=str(home), KUBECONFIG=str(cluster.kubeconfig),
               HOME=str(work))  # kubectl's discovery cache lives under $HOME/.kube
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's install has its bytecode cached
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    os.environ["WARPFORGE_HOME"] = str(home)
    cli = [sys.executable, "-m", "warpforge_launch"]
    wf_bin = Path(sys.executable).with_name("warpforge-launch")
    if wf_bin.is_file():
        cli = [str(wf_bin)]
    kubectl = [str(k8slab.kubectl()), "-n", k8slab.NAMESPACE]
    model = work / "mlp.py"
    model.write_text("class SimpleMLP: pass\n")
    submit = [*cli, "submit", "--inventory", str(inventory), "--source", str(model),
              "--class", "SimpleMLP", "--inputs", "[(1, 8)]", "--memory", "64M"]
    rows = []

    # status of a RUNNING Job
    live = subprocess.run([*submit, "--env", "WF_FAKE_SLEEP=900"], capture_output=True,
                          text=True, env=env, check=True).stdout.strip()
    for _ in range(120):
        st = json.loads(subprocess.run([*cli, "status", live, "--json", "--inventory",
                                        str(inventory)], capture_output=True, text=True,
                                       env=env, check=True).stdout)
        if st["state"] == "RUNNING":
            break
        time.sleep(0.5)
    name = live.removeprefix(f"{instance}-")
    timed([*kubectl, "get", "job", name, "-o", "json"], env)  # warm kubectl's cache
    a, b = alternate(lambda i: timed([*cli, "status", live, "--inventory", str(inventory)], env),
                     lambda i: timed([*kubectl, "get", "job", name, "-o", "json"], env),
                     args.rounds)
    from warpforge_launch.launcher import Launcher

    with Launcher(str(inventory)) as launcher:
        sched = launcher.scheduler(instance)
        sched.status(live)
        rows.append(("status", a, b, {"ok": len(sched.requests) == 1,
                                      "note": f"{len(sched.requests)} request(s)"}))
        sched.close()

    # list refreshing N pending Jobs
    from warpforge_launch.inputs import parse_inputs
    from warpforge_launch.jobs import JobDefinition, JobQuery, ResourceRequirements

    t0 = time.perf_counter()
    with Launcher(str(inventory)) as launcher:
        definition = JobDefinition(
            name="pending", source=str(model), model_class="SimpleMLP",
            inputs=parse_inputs("[(1, 8)]"),
            resources=ResourceRequirements(gpu_type="NVIDIA", gpu_count=8, memory_mb=64))
        for _ in range(args.jobs):
            launcher.submit(definition, instance)
        print(f"submitted {args.jobs} pending Jobs in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        for _ in range(120):  # until the Job controller made every pod
            done = k8slab.kc("-n", k8slab.NAMESPACE, "get", "pods", "-l",
                             f"warpforge.io/instance={instance}", "-o", "name")
            if len(done.stdout.split()) >= args.jobs + 1:
                break
            time.sleep(1)
        records = launcher.store.query(JobQuery(limit=None), include_active=True)
        launcher.refresh(records)
        for sched in launcher._instances.values():
            sched.requests.clear()
        launcher.refresh(records)
        counted = [r for sched in launcher._instances.values() for r in sched.requests]
    label = f"warpforge.io/instance={instance}"
    a, b = alternate(
        lambda i: timed([*cli, "list", "--limit", str(args.jobs + 10), "--inventory",
                         str(inventory)], env),
        lambda i: timed([*kubectl, "get", "jobs", "-l", label, "-o", "json"], env), args.rounds)
    rows.append(("list", a, b, {"ok": len(counted) == 1,
                                "note": f"{args.jobs} Jobs, {len(counted)} request(s)"}))

    # submit vs kubectl create of the same Job
    plan = json.loads(subprocess.run([*submit, "--dry-run", "--json"], capture_output=True,
                                     text=True, env=env, check=True).stdout)["plan"]
    job = plan["request"]["job"]
    job["spec"]["template"]["spec"]["volumes"][0] = {"name": "source", "emptyDir": {}}

    def kubectl_create(i: int) -> float:
        doc = copy.deepcopy(job)
        doc["metadata"]["name"] = f"kubectl-{instance}-{i}"
        path = work / f"job-{i}.json"
        path.write_text(json.dumps(doc))
        return timed([*kubectl, "create", "-f", str(path)], env)

    timed(submit, env)  # warm the CLI's caches (kubeconfig, template, schema shapes)
    a, b = alternate(lambda i: timed(submit, env), kubectl_create, args.rounds)
    with Launcher(str(inventory)) as launcher:
        counted = launcher.submit(JobDefinition(
            name="count", source=str(model), model_class="SimpleMLP",
            inputs=parse_inputs("[(1, 8)]"), resources=ResourceRequirements(memory_mb=64)),
            instance)
        sent = [r for sched in launcher._instances.values() for r in sched.requests]
        launcher.wait(counted, timeout=120)
    rows.append(("submit", a, b, {"ok": len(sent) == 2, "note": f"{len(sent)} requests"}))
    # what any run pays before Kubernetes: the interpreter, ssl, and the CLI itself (the
    # status of a finished job is answered from the job store, without a request)
    floor = {name: statistics.median(timed(argv, env) for _ in range(args.rounds)) for name, argv
             in (("python start", [sys.executable, "-c", "pass"]),
                 ("+ import ssl, socket", [sys.executable, "-c", "import ssl, socket"]),
                 ("CLI status, no request", [*cli, "status", counted, "--inventory",
                                             str(inventory)]))}
    print("floor: " + "; ".join(f"{k} {v * 1000:.0f} ms" for k, v in floor.items()),
          file=sys.stderr)
    return rows


if __name__ == "__main__":
    sys.exit(main())
