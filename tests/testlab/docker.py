"""A private Docker engine for the container tests and benchmarks, plus the images they need.

dockerd runs on its own unix socket with its own data root, exec root and pid file under
$WF_LAB/dk (short: unix socket paths are limited), with no bridge, no iptables and dead proxy
variables, so nothing it does leaves loopback and a stray Docker Hub pull fails at once. It
never touches another dockerd on the machine (the Kubernetes tests run their own).

No image can be pulled here, so the lab builds what production pulls:
  * `registry:2`: Debian's docker-registry (the same distribution registry v2) in an image
    laid out like the official one (/bin/registry, /etc/docker/registry/config.yml, data in
    /var/lib/registry, busybox for `du`), so `invoke registry.up` runs its production path;
  * `wf-test/python:3.11`: a Debian minbase root filesystem with Python 3.11 (debootstrap,
    cached outside the repository by .ci/setup.d/60-docker.sh): the stand-in dist's base.

    python tests/testlab/docker.py up|down|status
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

DOCKERD = shutil.which("dockerd") or "/usr/bin/dockerd"
REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX = "/bin/busybox"
ROOTFS = Path(os.environ.get("WF_ROOTFS_CACHE", "/opt/wf-lab-tools/rootfs")) / "py311-bookworm"
PY_IMAGE = "wf-test/python:3.11"
REGISTRY_IMAGE = "registry:2"
DEAD_PROXY = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "NO_PROXY": "localhost,127.0.0.0/8,::1", "no_proxy": "localhost,127.0.0.0/8,::1"}

_REGISTRY_CONFIG = """version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: /var/lib/registry}
  delete: {enabled: true}
http: {addr: ":5000"}
"""


def default_root() -> Path:
    return Path(os.environ.get("WF_LAB", "/tmp/wf-lab")) / "dk"


def missing_tools() -> list[str]:
    need = [DOCKERD, REGISTRY_BIN, BUSYBOX, "/usr/bin/docker"]
    out = [p for p in need if not os.path.exists(p)]
    out += [t for t in ("mksquashfs", "siftool") if not shutil.which(t)]
    if not (ROOTFS / "usr/bin/python3.11").exists():
        out.append(str(ROOTFS))
    return out


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class DockerLab:
    def __init__(self, root: Path | None = None):
        self.root = Path(root or default_root())
        self.sock = self.root / "d.sock"
        self.url = f"unix://{self.sock}"
        self.pidfile = self.root / "dockerd.pid"
        self.mine = self.root / "dockerd.mine"  # "pid start-time" of the dockerd we started
        self.started = False

    # ---- dockerd ------------------------------------------------------------------------
    def client(self, timeout: int = 600):
        import docker

        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def reachable(self) -> bool:
        try:
            c = self.client(timeout=5)
            try:
                return bool(c.ping())
            finally:
                c.close()
        except Exception:
            return False

    def start(self, timeout: float = 60.0) -> None:
        """Start our dockerd unless one of ours already answers on the socket."""
        if self.reachable():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for d in ("data", "exec"):
            (self.root / d).mkdir(exist_ok=True)
        env = {**{k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}, **DEAD_PROXY}
        log = open(self.root / "dockerd.log", "ab")
        proc = subprocess.Popen(
            [DOCKERD, "--host", self.url, "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.pidfile),
             "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
             "--ip-masq=false", "--storage-driver=overlay2"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited ({proc.returncode}); see "
                                   f"{self.root / 'dockerd.log'}")
            if self.reachable():
                self.mine.write_text(f"{proc.pid} {_start_time(proc.pid)}")
                self.started = True
                return
            time.sleep(0.2)
        proc.kill()
        proc.wait(timeout=30)
        raise RuntimeError(f"dockerd did not answer on {self.sock} within {timeout:.0f}s")

    def owned(self) -> bool:
        """Is the dockerd on our socket the one this lab started (pid and start time)?"""
        try:
            pid_s, start = self.mine.read_text().split()
            return _start_time(int(pid_s)) == start
        except (OSError, ValueError):
            return False

    def stop(self) -> bool:
        """Stop the dockerd this lab started (by its recorded pid and start time), then
        unmount what it left under its exec root. False: not ours, nothing touched."""
        if not self.owned():
            return False
        pid_s, start = self.mine.read_text().split()
        pid = int(pid_s)
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            if _start_time(pid) != start:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self.mine.unlink(missing_ok=True)
        self._umount_leftovers()
        return True

    def restart(self) -> None:
        if not self.stop():
            raise RuntimeError(f"the dockerd on {self.sock} was not started by this lab: "
                               "it is not restarted")
        self.start()

    def _umount_leftovers(self) -> None:
        prefix = str(self.root) + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(prefix)]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False, timeout=30)

    # ---- images the lab cannot pull -----------------------------------------------------
    def ensure_images(self) -> None:
        client = self.client()
        try:
            have = {t for img in client.images.list() for t in img.tags}
            if REGISTRY_IMAGE not in have:
                self.build_registry_image(client)
            if PY_IMAGE not in have:
                self.import_rootfs(client, ROOTFS, PY_IMAGE)
        finally:
            client.close()

    def build_registry_image(self, client) -> None:
        """registry:2 from Debian's docker-registry (dynamically linked: libc goes along)."""
        files = {"bin/registry": REGISTRY_BIN, "bin/busybox": BUSYBOX}
        for line in subprocess.run(["ldd", REGISTRY_BIN], capture_output=True, text=True,
                                   check=True, timeout=30).stdout.splitlines():
            path = next((w for w in line.split() if w.startswith("/")), None)
            if path:
                files[path.lstrip("/")] = path
        dockerfile = "\n".join([
            "FROM scratch", "COPY rootfs/ /",
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
            "ENV PATH=/bin:/usr/bin", "VOLUME /var/lib/registry", "EXPOSE 5000",
            'ENTRYPOINT ["/bin/registry"]',
            'CMD ["serve", "/etc/docker/registry/config.yml"]', ""])
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for rel, src in files.items():
                tar.add(os.path.realpath(src), arcname=f"rootfs/{rel}")
            for name, text in (("rootfs/etc/docker/registry/config.yml", _REGISTRY_CONFIG),
                               ("Dockerfile", dockerfile)):
                info = tarfile.TarInfo(name)
                info.size = len(text.encode())
                tar.addfile(info, io.BytesIO(text.encode()))
        buf.seek(0)
        client.images.build(fileobj=buf, custom_context=True, tag=REGISTRY_IMAGE,
                            network_mode="none", rm=True)

    @staticmethod
    def import_rootfs(client, rootfs: Path, tag: str) -> None:
        """`tar -C rootfs -c . | docker import`: a base image from a root filesystem."""
        with tempfile.TemporaryFile() as tmp:
            subprocess.run(["tar", "-C", str(rootfs), "-c", "."], stdout=tmp, check=True,
                           timeout=600)
            tmp.seek(0)
            repo, _, version = tag.partition(":")
            client.api.import_image_from_data(tmp, repository=repo, tag=version or "latest")


def free_port(first: int = 15510, last: int = 15599) -> int:
    import socket

    for port in range(first, last + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in 127.0.0.1:{first}-{last}")


def main(argv=None) -> int:
    here = str(Path(__file__).resolve().parent)  # run as a script: `import docker` is the SDK
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("action", choices=["up", "down", "status"])
    a = p.parse_args(argv)
    lab = DockerLab(a.root)
    if a.action == "up":
        lab.start()
        lab.ensure_images()
        print(f"DOCKER_HOST={lab.url}")
    elif a.action == "down":
        lab.stop()
    else:
        print("up" if lab.reachable() else "down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
