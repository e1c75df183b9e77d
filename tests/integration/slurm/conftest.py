"""Session fixtures: the real Slurm 22.05 lab cluster (with and without accounting), a
shared work dir, scheduler instances, and a loopback sshd login node.

SLURM_CONF is exported at import time, before any client can run: without it every Slurm
client does a DNS SRV lookup (traffic off loopback).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import lab_unavailable
from tests.testlab import slurm as slurm_lab

os.environ["SLURM_CONF"] = str(slurm_lab.lab_root() / "slurm" / "etc" / "slurm.conf")

HERE = Path(__file__).parent
PAYLOAD = HERE / "fake_snakegrinder.sh"
# the brief's 127.0.0.31:2231 is taken by the SSH-layer helper's benchmark boxes; the end of
# the sshd range is free
SSH_ADDR, SSH_PORT = "127.0.0.39", 2239


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration/slurm" in str(item.fspath):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The accounting cluster (MariaDB + slurmdbd); reused if running, stopped if we started it."""
    if os.geteuid() != 0:
        lab_unavailable("the Slurm lab needs root (daemons, mknod)")
    try:
        lab = slurm_lab.start(accounting=True)
    except slurm_lab.LabError as exc:
        lab_unavailable(str(exc))
    yield lab
    slurm_lab.stop(lab)


@pytest.fixture(scope="session")
def slurm_cluster_noacct(slurm_cluster):
    """The accounting-disabled variant in its own network namespace (same ports)."""
    try:
        lab = slurm_lab.start(accounting=False)
    except slurm_lab.LabError as exc:
        lab_unavailable(str(exc))
    yield lab
    slurm_lab.stop(lab)
    if not any(lab.alive(d) for d in ("slurmctld", "slurmd", "munged")):
        slurm_lab.remove_netns()


@pytest.fixture(scope="session")
def shared_dir(slurm_cluster):
    """The "shared storage" of the one-node cluster: the work dir and the payload binary."""
    d = slurm_cluster.base.parent / "slurm-shared"
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    payload = d / "bin" / "fake_snakegrinder.sh"
    payload.parent.mkdir(exist_ok=True)
    shutil.copy2(PAYLOAD, payload)
    payload.chmod(0o755)
    return d


def make_scheduler(home: Path, cluster, shared: Path, *, transport=None, name="slurm",
                   **overrides):
    from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler
    from warpforge_launch.schedulers.slurm_transport import LocalTransport

    settings = dict(runtime="none", partition="debug", command_timeout=20.0)
    if shared is not None:
        settings.update(work_dir=str(shared / "work"),
                        snakegrinder=str(shared / "bin" / "fake_snakegrinder.sh"))
    settings.update(overrides)
    if transport is None:
        transport = LocalTransport(env={"SLURM_CONF": str(cluster.conf)},
                                   prefix=cluster.client_prefix()[:-2] if cluster.netns else ())
    return SlurmScheduler(name, SlurmConfig(**settings), home=home, transport=transport)


@pytest.fixture
def slurm(slurm_cluster, shared_dir, _private_home):
    sched = make_scheduler(_private_home, slurm_cluster, shared_dir)
    yield sched
    sched.close()


@pytest.fixture
def slurm_noacct(slurm_cluster_noacct, shared_dir, _private_home):
    sched = make_scheduler(_private_home, slurm_cluster_noacct, shared_dir, name="hpcna")
    yield sched
    sched.close()


# -- a loopback sshd as the login node ----------------------------------------------------------
def _banner(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


@pytest.fixture(scope="session")
def login_node(slurm_cluster):
    """sshd on 127.0.0.31:2231 with its own host key; the client gets a known_hosts file
    with exactly that key (strict checking) and a key pair of its own."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists() or not shutil.which("ssh"):
        lab_unavailable("OpenSSH server/client not installed (.ci/setup.d/50-slurm.sh)")
    d = slurm_lab.lab_root() / "slurm-login"
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    for key in ("host_ed25519", "client"):
        if not (d / key).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"wf-{key}",
                            "-f", str(d / key)], check=True, timeout=30)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    (d / "authorized_keys").chmod(0o644)
    host_pub = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[{SSH_ADDR}]:{SSH_PORT} {host_pub}\n")
    (d / "sshd_config").write_text(f"""\
Port {SSH_PORT}
ListenAddress {SSH_ADDR}
HostKey {d}/host_ed25519
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
SetEnv SLURM_CONF={slurm_cluster.conf}
LogLevel ERROR
""")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    started = None
    pidfile = d / "sshd.pid"
    ours = pidfile.exists() and slurm_lab._alive_pidfile(pidfile) is not None
    if not ours and _banner(SSH_ADDR, SSH_PORT):
        lab_unavailable(f"{SSH_ADDR}:{SSH_PORT} is served by an sshd this lab did not start")
    if not ours:
        check = subprocess.run([sshd, "-t", "-f", str(d / "sshd_config")], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            lab_unavailable(f"sshd config rejected: {check.stderr.strip()}")
        started = subprocess.Popen([sshd, "-D", "-E", str(d / "sshd.log"), "-f",
                                    str(d / "sshd_config")], stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        end = time.monotonic() + 15
        while not _banner(SSH_ADDR, SSH_PORT):
            if started.poll() is not None or time.monotonic() > end:
                lab_unavailable(f"sshd on {SSH_ADDR}:{SSH_PORT} did not come up: "
                                f"{(d / 'sshd.log').read_text()[-300:] if (d / 'sshd.log').exists() else ''}")
            time.sleep(0.05)
    info = {"host": SSH_ADDR, "port": SSH_PORT, "user": "root",
            "identity_file": str(d / "client"), "known_hosts_file": str(d / "known_hosts"),
            "dir": d}
    yield info
    if started is not None:
        for child in _children(started.pid):  # open sessions end with the listener
            _kill(child)
        _kill(started.pid)
        started.wait(timeout=10)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pass
