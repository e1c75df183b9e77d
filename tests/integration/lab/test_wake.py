"""Wake-on-LAN against the loopback lab: a sleeping box is woken and answers SSH."""

import pytest

from warpforge_launch.lab import commands, wake
from warpforge_launch.lab.remote import open_session

pytestmark = pytest.mark.ssh


def test_wake_starts_a_sleeping_box_and_it_accepts_ssh(ssh_lab, sleeping_box, box):
    assert not ssh_lab.running(sleeping_box)
    b = box(sleeping_box)
    seen = len(ssh_lab.wol_received())
    [r] = wake.wake_boxes([b], timeout=10, poll=0.2)
    assert r.sent and r.reachable, r.note
    assert ssh_lab.running(sleeping_box)
    packets = ssh_lab.wol_received()[seen:]
    assert packets and packets[-1] == {"mac": b.mac, "box": sleeping_box, "size": 102}
    with open_session(b) as s:
        assert s.run(["echo", "awake"]).out.strip() == "awake"


def test_waiting_without_a_packet_times_out_with_exit_3(ssh_lab, sleeping_box,
                                                       write_inventory, capsys):
    inv = write_inventory(names=[sleeping_box])
    rc = commands.wake(boxes=sleeping_box, inventory=str(inv), send=False, timeout=1,
                       interval=0.3)
    out = capsys.readouterr().out
    assert rc == 3
    assert "DOWN" in out and "unreachable after 1s (connection refused)" in out
    assert not ssh_lab.running(sleeping_box)


def test_wake_task_reports_each_box(ssh_lab, sleeping_box, write_inventory, capsys):
    inv = write_inventory(names=["nvidia", sleeping_box])
    rc = commands.wake(boxes=f"nvidia,{sleeping_box}", inventory=str(inv), as_json=True)
    rows = {r["box"]: r for r in __import__("json").loads(capsys.readouterr().out)}
    assert rc == 0
    assert rows[sleeping_box]["sent"] and rows[sleeping_box]["reachable"]
    assert rows["nvidia"]["reachable"]


def test_wake_refuses_a_box_without_a_wake_address(box):
    b = box("nvidia", wol_host=None)
    from warpforge_launch.errors import UsageError

    with pytest.raises(UsageError, match="wol_host"):
        wake.send_magic_packet(b)


def test_bad_timeout_is_bad_input(write_inventory, capsys):
    inv = write_inventory(names=["nvidia"])
    assert commands.wake(inventory=str(inv), timeout="soon") == 2
    assert "error: --timeout must be a number" in capsys.readouterr().err
