"""An unchanged box is answered by one OpenSSH probe; anything else goes the full way."""

import json
import subprocess
import sys
import time

import pytest

from tests.integration.lab.test_distribute import VICTIM, flip_first_byte
from warpforge_launch.lab import releases
from warpforge_launch.lab.remote import Sessions

pytestmark = pytest.mark.ssh


@pytest.fixture
def sessions_opened(monkeypatch):
    """The boxes a distribute opened a Fabric session to (the real Sessions.get runs)."""
    opened = []
    real = Sessions.get
    monkeypatch.setattr(Sessions, "get", lambda self, box: opened.append(box.name)
                        or real(self, box))
    return opened


def test_an_unchanged_box_opens_no_session(ssh_lab, box, install_dir, fake_dist,
                                           sessions_opened):
    b = box("nvidia")
    [first] = releases.distribute([b], fake_dist)
    assert first.action == "pushed" and sessions_opened == ["nvidia"]
    t0 = time.time()
    [again] = releases.distribute([b], fake_dist)
    assert again.ok and again.action == "unchanged", again
    assert (again.release, again.previous) == (first.release, first.release)
    assert again.files_sent == 0 and sessions_opened == ["nvidia"]
    assert t0 <= again.locked[0] <= again.locked[1] <= time.time()


def test_a_box_changed_since_its_push_goes_the_full_way(ssh_lab, box, install_dir, fake_dist,
                                                        sessions_opened):
    b = box("nvidia")
    [first] = releases.distribute([b], fake_dist)
    flip_first_byte(ssh_lab, "nvidia", f"{install_dir}/current/{VICTIM}")
    [again] = releases.distribute([b], fake_dist)
    assert again.ok and again.action == "repaired" and again.files_sent == 1, again
    assert sessions_opened == ["nvidia", "nvidia"]


def test_verify_always_goes_the_full_way(ssh_lab, box, install_dir, fake_dist,
                                         sessions_opened):
    b = box("nvidia")
    releases.distribute([b], fake_dist)
    [again] = releases.distribute([b], fake_dist, opts=releases.Options(verify_all=True))
    assert again.ok and again.action == "verified" and sessions_opened == ["nvidia"] * 2


def test_a_busy_lock_is_waited_for_the_full_way(ssh_lab, box, install_dir, fake_dist):
    b = box("nvidia")
    releases.distribute([b], fake_dist)
    holder = subprocess.Popen(
        ["ssh", "-F", str(ssh_lab.ssh_config), "nvidia",
         f"flock {install_dir}/.lock sh -c 'echo held; sleep 2; echo bye'"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        [r] = releases.distribute([b], fake_dist, opts=releases.Options(lock_wait=30))
        assert r.ok and r.action == "unchanged", r
        assert holder.stdout.readline().strip() == "bye"  # the lock was free only then
    finally:
        holder.wait(timeout=30)


def test_an_unchanged_repush_imports_no_paramiko(ssh_lab, write_inventory, fake_dist):
    inv = write_inventory()
    code = ("import sys; from warpforge_launch.lab import commands; "
            f"rc = commands.distribute(inventory={str(inv)!r}, dist={str(fake_dist)!r}, "
            "boxes='nvidia', as_json=True); print(rc, 'paramiko' in sys.modules, "
            "'fabric' in sys.modules, file=sys.stderr)")
    for expect in ("0 True True", "0 False False"):  # the first push, then the re-push
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300)
        assert done.stderr.strip().splitlines()[-1] == expect, done.stderr
        assert '"action": "' in done.stdout


def test_a_stale_partial_upload_is_swept_the_full_way(ssh_lab, box, install_dir, fake_dist,
                                                      sessions_opened):
    b = box("nvidia")
    releases.distribute([b], fake_dist)
    stale = f"{install_dir}/releases/.partial-0123-dead"
    ssh_lab.ssh("nvidia", "sh", "-c", 'mkdir "$1" && echo 999999 > "$1/.warpforge-partial"',
                "wf", stale)
    [again] = releases.distribute([b], fake_dist)
    assert again.ok and again.action == "unchanged" and sessions_opened == ["nvidia"] * 2
    assert any("removed a stale partial upload: .partial-0123-dead" in n for n in again.notes)
    assert not ssh_lab.landed("nvidia", stale).exists()


def test_a_changed_dist_lets_the_early_probe_go(ssh_lab, box, install_dir, make_fake_dist,
                                                sessions_opened):
    b = box("nvidia")
    [first] = releases.distribute([b], make_fake_dist())
    [second] = releases.distribute([b], make_fake_dist(seed=3))
    assert second.ok and second.action == "pushed" and second.release != first.release
    assert sessions_opened == ["nvidia"] * 2


def _distribute(inv, dist, **kw) -> list[dict]:
    """`invoke distribute --json` as the task body runs it (in this process)."""
    import contextlib
    import io

    from warpforge_launch.lab import commands

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = commands.distribute(inventory=str(inv), dist=str(dist), as_json=True, **kw)
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def test_a_repush_is_answered_before_the_inventory_is_read(ssh_lab, write_inventory,
                                                           fake_dist):
    inv = write_inventory(names=["nvidia", "amd"])
    code = ("import sys; from warpforge_launch.lab import commands; "
            f"rc = commands.distribute(inventory={str(inv)!r}, dist={str(fake_dist)!r}, "
            "as_json=True); print(rc, 'warpforge_launch.inventory' in sys.modules, "
            "'paramiko' in sys.modules, file=sys.stderr)")
    for expect in ("0 True True", "0 False False"):  # the push (it leaves the plan), again
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300)
        assert done.stderr.strip().splitlines()[-1] == expect, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["box"], r["action"], r["files_sent"]) for r in rows] == [
        ("nvidia", "unchanged", 0), ("amd", "unchanged", 0)]
    assert all(r["release"] == r["previous"] for r in rows)


def test_a_box_changed_since_the_last_run_goes_the_full_way(ssh_lab, write_inventory,
                                                            install_dir, fake_dist):
    inv = write_inventory(names=["nvidia", "amd"])
    _distribute(inv, fake_dist)  # the push leaves the plan
    flip_first_byte(ssh_lab, "amd", f"{install_dir}/current/{VICTIM}")
    nvidia, amd = _distribute(inv, fake_dist)
    assert (nvidia["action"], amd["action"], amd["files_sent"]) == ("unchanged", "repaired", 1)


def test_an_extra_file_in_the_release_is_not_unchanged(ssh_lab, write_inventory,
                                                       install_dir, fake_dist):
    inv = write_inventory(names=["nvidia"])
    _distribute(inv, fake_dist)
    stray = f"{install_dir}/current/venv/stray.py"
    ssh_lab.ssh("nvidia", "sh", "-c", 'echo x > "$1"', "wf", stray)
    [again] = _distribute(inv, fake_dist)
    assert again["action"] != "unchanged" and again["error"] is None, again
    assert ssh_lab.ssh("nvidia", "test", "-e", stray, check=False).returncode != 0


def test_an_edited_inventory_is_read_again(ssh_lab, write_inventory, install_dir, fake_dist):
    inv = write_inventory(names=["nvidia"])
    _distribute(inv, fake_dist)  # the plan probes install_dir
    moved = f"{install_dir}-moved"
    inv.write_text(inv.read_text().replace(install_dir, moved))
    [r] = _distribute(inv, fake_dist)
    assert r["action"] == "pushed", r  # a stale plan would have answered the old dir
    assert ssh_lab.ssh("nvidia", "test", "-L", f"{moved}/current", check=False).returncode == 0
