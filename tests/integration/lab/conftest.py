"""Session fixtures for the lab tests: real sshd boxes on loopback and a wake-on-LAN listener.

The boxes are reused when they already run (a previous session, the benchmarks); only what
this session started is stopped at its end, by PID. Box `intel` is the sleeper: it is never
started by the session, and the `sleeping_box` fixture puts it back to sleep after each test.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests import netguard
from tests.conftest import lab_unavailable
from tests.integration.lab.fakedist import make_dist
from tests.testlab import sshboxes

AWAKE = ("nvidia", "amd")
SLEEPER = "intel"


@pytest.fixture(scope="session")
def ssh_lab():
    why = sshboxes.available()
    if why:
        lab_unavailable(why)
    lab = sshboxes.SshLab(sshboxes.default_root("tests"), sshboxes.BOX_SETS["tests"])
    try:
        lab.setup()
        started = [n for n in AWAKE if lab.start(n)]
        wol_started = lab.start_wol_listener()
    except Exception as e:  # noqa: BLE001 - any failure to bring the lab up is "unavailable"
        lab_unavailable(f"sshd boxes could not start: {e}")
    lab.stop(SLEEPER)
    yield lab
    lab.close_control_masters()
    lab.stop_all([*started, SLEEPER])
    if wol_started:
        lab.stop_wol_listener()


@pytest.fixture
def sleeping_box(ssh_lab):
    """The sleeper box, asleep (sshd not running) at the start and the end of the test."""
    ssh_lab.stop(SLEEPER)
    yield SLEEPER
    ssh_lab.stop(SLEEPER)


@pytest.fixture
def install_dir():
    """A fresh install dir per test, so tests never see each other's releases on a box."""
    return f"/opt/wf-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def fake_dist(tmp_path_factory) -> Path:
    return make_dist(tmp_path_factory.mktemp("dist") / "dist")


@pytest.fixture
def make_fake_dist(tmp_path):
    """Factory: a fresh stand-in dist of the given mode (see fakedist.py)."""
    def make(mode: str = "good", **kw) -> Path:
        return make_dist(tmp_path / f"dist-{mode}-{uuid.uuid4().hex[:6]}", mode=mode, **kw)
    return make


@pytest.fixture(autouse=True)
def _no_traffic_left_loopback():
    """Every lab test: the network guard saw no attempt to leave loopback."""
    before = len(netguard.blocked)
    yield
    assert netguard.blocked[before:] == [], "lab test tried to reach a non-loopback address"


@pytest.fixture
def write_inventory(ssh_lab, install_dir, tmp_path):
    """Factory: a loopback lab inventory file (never the production inventory.yaml)."""
    def write(**kw) -> Path:
        kw.setdefault("install_dir", install_dir)
        return ssh_lab.write_inventory(tmp_path / f"inventory-{uuid.uuid4().hex[:6]}.yaml", **kw)
    return write


@pytest.fixture
def box(ssh_lab, install_dir):
    """Factory: the inventory Box for a lab box, with this test's install dir."""
    from tests.integration.lab.boxes import lab_box

    def make(name: str, **over):
        over.setdefault("install_dir", install_dir)
        return lab_box(ssh_lab, name, **over)
    return make


@pytest.fixture(autouse=True)
def _lab_env(monkeypatch):
    """The seed's variables are the test's to set: none leaks in from the caller's shell."""
    for var in ("WAKE_BOXES", "SKIP_IF_UNREACHABLE", "DIST_DIR_OVERRIDE", "INSTALL_DIR_OVERRIDE",
                "NVIDIA_HOST_OVERRIDE", "AMD_HOST_OVERRIDE"):
        monkeypatch.delenv(var, raising=False)
