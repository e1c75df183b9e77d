"""An unchanged box is answered by one OpenSSH probe; anything else goes the full way."""

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
