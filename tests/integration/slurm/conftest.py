"""Session fixtures: the real Slurm 22.05 lab cluster (with and without accounting), a
shared work dir, scheduler instances, and a loopback sshd login node.

SLURM_CONF is exported at import time, before any client can run: without it every Slurm
client does a DNS SRV lookup (traffic off loopback).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import lab_unavailable
from tests.testlab import slurm as slurm_lab

os.environ["SLURM_CONF"] = str(slurm_lab.lab_root() / "cluster" / "etc" / "slurm.conf")

HERE = Path(__file__).parent
PAYLOAD = HERE / "fake_snakegrinder.sh"


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
    d = slurm_lab.lab_root() / "shared"
    slurm_lab.shared_work_dir(d)
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
        settings.update(work_dir=slurm_lab.shared_work_dir(shared),
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
@pytest.fixture(scope="session")
def login_node(slurm_cluster):
    try:
        node = slurm_lab.start_login_node(slurm_cluster.conf)
    except slurm_lab.LabError as exc:
        lab_unavailable(str(exc))
    yield {"host": node.host, "port": node.port, "user": node.user,
           "identity_file": node.identity_file, "known_hosts_file": node.known_hosts_file,
           "dir": node.dir}
    slurm_lab.stop_login_node(node)
