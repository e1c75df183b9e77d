"""A real single-node Kubernetes cluster for the tests, on loopback: start, reuse, stop.

``k8s-node.sh`` beside this file does the work (see its header): etcd, kube-apiserver on
127.0.0.1:16443, controller-manager, scheduler and a kubelet with dockershim against a
private dockerd, a fake CNI plugin and fake GPUs (node ``wf-node`` advertises
``nvidia.com/gpu: 1`` and ``amd.com/gpu: 1``, labels ``accelerator=nvidia`` and
``warpforge.test/amd=true``). The binaries come from the cache ``.ci/setup.d/70-k8s.sh``
fills; a cluster that already answers is reused and left running.

Images cannot be pulled: the test image is the cached Python 3.11 rootfs plus the test
payload as ``/opt/warpforge/bin/snakegrinder``, built in the private dockerd and used with
``imagePullPolicy: Never``.

Also a small command line for benchmarks and by-hand use:
``python -m tests.testlab.k8s up|down|status``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "k8s-node.sh"
API = "https://127.0.0.1:16443"
NODE = "wf-node"
NAMESPACE = "warpforge"
BINARIES = ("kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
            "kubectl", "etcd")


class LabError(RuntimeError):
    """The cluster could not be had (no binaries, no rootfs, no start)."""


def tools_dir() -> Path:
    return Path(os.environ.get("WF_LAB_TOOLS", "/opt/wf-lab-tools"))


def cache_dir() -> Path:
    return Path(os.environ.get("WF_K8S_CACHE") or tools_dir() / "k8s")


def rootfs_dir() -> Path:
    return Path(os.environ.get("WF_ROOTFS_CACHE") or tools_dir() / "rootfs") / "python3.11"


def lab_dir() -> Path:
    return Path(os.environ.get("WF_LAB", "/tmp/wf-lab"))


def run_dir() -> Path:
    return lab_dir() / "k8s"


def kubectl() -> Path:
    return cache_dir() / "bin" / "kubectl"


def missing() -> str | None:
    """Why the cluster cannot start here, or None."""
    absent = [b for b in BINARIES if not os.access(cache_dir() / "bin" / b, os.X_OK)]
    if absent:
        return (f"no Kubernetes binaries ({', '.join(absent)}) in {cache_dir()}/bin "
                "(run .ci/setup.d/70-k8s.sh)")
    if not (rootfs_dir() / ".complete").is_file():
        return f"no Python rootfs at {rootfs_dir()} (run .ci/setup.d/70-k8s.sh)"
    for tool in ("/usr/sbin/dockerd", "/usr/bin/docker", "/usr/sbin/runc"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (apt-get install docker.io)"
    return None


def _script(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def kc(*args: str, kubeconfig: Path | None = None, timeout: float = 60,
       check: bool = True) -> subprocess.CompletedProcess:
    """kubectl as the cluster admin (or with another kubeconfig)."""
    done = subprocess.run([str(kubectl()), "--kubeconfig",
                           str(kubeconfig or run_dir() / "kubeconfig"), *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise LabError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done


@dataclasses.dataclass
class Cluster:
    owned: bool
    started_in_s: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        return run_dir() / "kubeconfig"

    @property
    def nobody_kubeconfig(self) -> Path:
        """Authenticated, without any RBAC rights."""
        return run_dir() / "nobody.kubeconfig"

    def stop(self) -> None:
        if self.owned:
            _script("down", timeout=120)


def ready() -> bool:
    return missing() is None and _script("ready", timeout=30).returncode == 0


def start(deadline_s: float = 150) -> Cluster:
    """Reuse the lab cluster when it answers, else bring it up (about 20-30 s)."""
    why = missing()
    if why:
        raise LabError(why)
    if ready():
        cluster = Cluster(owned=False)
    else:
        t0 = time.monotonic()
        done = _script("up", timeout=deadline_s)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            _script("down", timeout=120)
            raise LabError(f"k8s-node.sh up failed ({done.returncode}): {tail}; "
                           f"logs in {run_dir() / 'logs'}")
        cluster = Cluster(owned=True, started_in_s=time.monotonic() - t0)
    if kc("get", "namespace", NAMESPACE, check=False).returncode != 0:
        kc("create", "namespace", NAMESPACE)
    return cluster


def dist_image(dist: Path) -> str:
    """The rootfs plus a whole snakegrinder dist at /opt/warpforge (the stand-in's, so pods
    trace for real); tagged by the dist's listing (names, sizes, mtimes)."""
    h = hashlib.sha256()
    for p in sorted(dist.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(dist)} {st.st_size} {st.st_mtime_ns}\n".encode())
    tag = "wf-test/standin:" + h.hexdigest()[:12]
    done = _script("testdist", str(dist), tag, timeout=600)
    if done.returncode != 0:
        raise LabError(f"stand-in image build failed: {done.stderr.strip()[-500:]}")
    return tag


def payload_image(payload: Path) -> str:
    """The rootfs plus ``payload`` as the image's snakegrinder; tagged by content."""
    text = payload.read_text()
    lines = text.splitlines(keepends=True)
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    script = "#!/usr/bin/python3.11\n" + "".join(lines)
    tag = "wf-test/snakegrinder:" + hashlib.sha256(script.encode()).hexdigest()[:12]
    staged = run_dir() / "snakegrinder-payload"
    staged.write_text(script)
    done = _script("testimage", str(staged), tag, timeout=180)
    if done.returncode != 0:
        raise LabError(f"test image build failed: {done.stderr.strip()[-500:]}")
    return tag


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "up":
        cluster = start()
        print(f"kubernetes lab up (owned={cluster.owned}); KUBECONFIG={cluster.kubeconfig}")
        return 0
    if command == "down":
        _script("down", timeout=120)
        return 0
    if command == "status":
        print("ready" if ready() else f"not ready ({missing() or 'not running'})")
        return 0 if ready() else 1
    print("usage: python -m tests.testlab.k8s up|down|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
