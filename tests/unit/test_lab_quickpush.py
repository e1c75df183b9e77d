"""The remembered re-push plan: what invalidates it, who may read it, what it holds."""

import json
import os
import shutil
import stat

import pytest

from warpforge_launch.inventory import Box
from warpforge_launch.lab import quickpush
from warpforge_launch.lab.releases import Options

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")


@pytest.fixture
def inv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INSTALL_DIR_OVERRIDE", raising=False)
    path = tmp_path / "inv.yaml"
    path.write_text("version: 1\n")
    return path


def request(inv, **over):
    return {"boxes": "", "inventory": str(inv), "dist": "", "keep": "", **over}


def boxes():
    return [Box(name="b1", address="127.0.0.21", port=2221, install_dir="/opt/wf-x"),
            Box(name="here", transport="local", install_dir="/opt/wf-y"),
            Box(name="bad", address="127.0.0.22", install_dir="relative")]


def plan_file(inv):
    return quickpush._file(request(inv))


def test_the_fingerprint_follows_what_the_plan_was_computed_from(inv, tmp_path, monkeypatch):
    first = quickpush.fingerprint(request(inv))
    assert quickpush.fingerprint(request(inv)) == first
    assert quickpush.fingerprint(request(inv, boxes="b1")) != first
    monkeypatch.setenv("INSTALL_DIR_OVERRIDE", "/opt/elsewhere")
    assert quickpush.fingerprint(request(inv)) != first
    monkeypatch.delenv("INSTALL_DIR_OVERRIDE")
    os.utime(inv, ns=(1, 1))  # the inventory edited (here: only its times)
    edited = quickpush.fingerprint(request(inv))
    assert edited != first
    (tmp_path / "inventory.yaml").write_text("version: 1\n")  # a file `find` would prefer
    assert quickpush.fingerprint(request(inv)) != edited
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert quickpush.fingerprint(request(inv)) not in (first, edited)


def test_the_plan_is_private_and_holds_probe_lines_only(inv):
    quickpush.remember(request(inv), boxes(), Options(), "/srv/dist")
    path = plan_file(inv)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.stat(os.path.dirname(path)).st_mode & 0o077
    plan = json.loads(open(path).read())
    assert plan["dist"] == "/srv/dist" and plan["timeout"] == Options().timeouts.connect + \
        Options().timeouts.command
    b1, here, bad = plan["boxes"]
    assert b1["name"] == "b1" and b1["install_dir"] == "/opt/wf-x" and b1["argv"][0] == "ssh"
    assert "127.0.0.21" in " ".join(b1["argv"]) and b1["hint"].endswith(":2221:/opt/wf-x")
    assert here == {"name": "here"} and bad == {"name": "bad"}  # both go the full way


def test_a_plan_is_used_only_when_current_private_and_plain_ssh(inv, monkeypatch):
    assert quickpush.start(request(inv)) is None  # nothing remembered yet
    started = []
    monkeypatch.setattr(quickpush, "Quick", lambda plan: started.append(plan) or "quick")
    quickpush.remember(request(inv), boxes()[:1], Options(), "/srv/dist")
    path = plan_file(inv)
    assert quickpush.start(request(inv)) == "quick" and len(started) == 1

    os.chmod(path, 0o666)  # writable by others: it holds commands we would run
    assert quickpush.start(request(inv)) is None
    os.chmod(path, 0o600)

    plan = json.loads(open(path).read())
    plan["boxes"][0]["argv"][0] = "/tmp/not-ssh"
    with open(path, "w") as f:
        json.dump(plan, f)
    assert quickpush.start(request(inv)) is None

    quickpush.remember(request(inv), boxes()[:1], Options(), "/srv/dist")
    inv.write_text("version: 1\n# edited\n")
    assert quickpush.start(request(inv)) is None
    assert len(started) == 1


def test_a_broken_plan_file_costs_only_the_shortcut(inv):
    quickpush.remember(request(inv), boxes()[:1], Options(), "/srv/dist")
    with open(plan_file(inv), "w") as f:
        f.write("{not json")
    assert quickpush.start(request(inv)) is None
