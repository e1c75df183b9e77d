"""The dashboard on the real test lab: sshd boxes with a release distributed by the real
smoke task (its JUnit report included), Local jobs, one `serve` process and one Chromium.

Everything is module-scoped and shares one WARPFORGE_HOME, so the jobs a test submits are
the jobs the served page shows. Only what these fixtures start is stopped, by PID.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import lab_unavailable
from tests.helpers import FAKE_SNAKEGRINDER
from tests.integration.lab.conftest import ssh_lab  # noqa: F401 - the session's sshd boxes
from tests.integration.lab.fakedist import make_dist
from tests.integration.web.browser import Browser, Served, missing

BOXES = ("nvidia", "amd", "intel")  # intel is the lab's sleeper: asleep throughout


@pytest.fixture(scope="module")
def web_home(tmp_path_factory):
    return tmp_path_factory.mktemp("web-home")


@pytest.fixture(autouse=True)
def _shared_home(web_home, monkeypatch):
    """Tests, the served app and the Local jobs all use one job store."""
    monkeypatch.setenv("WARPFORGE_HOME", str(web_home))


@pytest.fixture(scope="module")
def web_lab(ssh_lab, tmp_path_factory, web_home):  # noqa: F811
    """A lab inventory, a release pushed to the awake boxes by the real smoke task, and the
    JUnit report that task wrote."""
    from warpforge_launch.lab import commands
    from warpforge_launch.lab.manifest import scan

    tmp = tmp_path_factory.mktemp("web-lab")
    install_dir = f"/opt/wf-test-{uuid.uuid4().hex[:10]}"
    doc = ssh_lab.inventory(install_dir=install_dir, names=list(BOXES),
                            lab={"wake_boxes": False, "skip_if_unreachable": True,
                                 "wake_timeout": 1, "wake_interval": 0.2})
    doc["schedulers"]["local"]["snakegrinder"] = str(FAKE_SNAKEGRINDER)
    inv = tmp / "inventory.yaml"
    inv.write_text(json.dumps(doc, indent=2))
    dist = make_dist(tmp / "dist")
    junit = tmp / "reports" / "smoke-junit.xml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WARPFORGE_HOME", str(web_home))
        for var in ("WAKE_BOXES", "SKIP_IF_UNREACHABLE", "INSTALL_DIR_OVERRIDE"):
            mp.delenv(var, raising=False)
        rc = commands.smoke(inventory=str(inv), dist=str(dist), junit=str(junit),
                            boxes=",".join(BOXES))
    assert rc == 0 and junit.is_file(), "the smoke task failed on the lab boxes"
    return {"inventory": inv, "junit": junit, "install_dir": install_dir,
            "hash": scan(dist).hash, "lab": ssh_lab}


@pytest.fixture(scope="module")
def served(web_lab, web_home):
    s = Served("--inventory", str(web_lab["inventory"]), "--smoke-junit", str(web_lab["junit"]),
               "--refresh", "0.5", "--allow-cancel", env={"WARPFORGE_HOME": str(web_home)})
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def browser():
    why = missing()
    if why:
        lab_unavailable(why)
    b = Browser()
    yield b
    b.close()
