"""Wake-on-LAN: the packet goes exactly where the inventory says; waiting has a deadline."""

import socket
import threading
import time
from dataclasses import replace

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.inventory import Box
from warpforge_launch.lab import wake


@pytest.fixture
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    yield s
    s.close()


def box(**kw):
    base = Box(name="gpu", address="127.0.0.1", port=1, mac="aa:bb:cc:dd:ee:42",
               wol_host="127.0.0.1", wol_port=9)
    return replace(base, **kw)


def test_magic_packet_goes_to_the_configured_host_and_port(udp):
    wake.send_magic_packet(box(wol_port=udp.getsockname()[1]))
    data, _ = udp.recvfrom(200)
    assert data == b"\xff" * 6 + bytes.fromhex("aabbccddee42") * 16


@pytest.mark.parametrize("kw, message", [
    ({"mac": None}, "no valid MAC"), ({"mac": "aa:bb"}, "no valid MAC"),
    ({"wol_host": None}, "wol_host and wol_port"),
])
def test_no_packet_without_a_full_address(kw, message):
    with pytest.raises(UsageError, match=message):
        wake.send_magic_packet(box(**kw))


def test_wake_refuses_bad_settings_before_sending(udp):
    with pytest.raises(UsageError, match="positive"):
        wake.wake_boxes([box()], timeout=0)
    with pytest.raises(UsageError, match="invalid MAC"):
        wake.wake_boxes([box(wol_port=udp.getsockname()[1]), box(name="b2", mac="zz")], timeout=1)
    udp.settimeout(0.2)
    with pytest.raises(TimeoutError):
        udp.recvfrom(200)  # not even the good box got a packet


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_waiting_for_a_dead_box_stops_at_the_deadline():
    t0 = time.monotonic()
    r = wake.wait_for_ssh(box(port=closed_port()), timeout=1.0, poll=0.25)
    took = time.monotonic() - t0
    assert not r.reachable and 0.9 < took < 2.5
    assert 3 <= r.attempts <= 6 and "connection refused" in r.note


def test_waiting_ends_when_the_banner_arrives():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve_later():
        time.sleep(0.4)
        srv.listen()
        conn, _ = srv.accept()
        conn.sendall(b"SSH-2.0-test\r\n")
        conn.close()

    t = threading.Thread(target=serve_later)
    t.start()
    r = wake.wait_for_ssh(box(port=port), timeout=5, poll=0.1)
    t.join()
    srv.close()
    assert r.reachable and r.attempts >= 2 and r.seconds < 3


def test_local_boxes_are_always_up_and_get_no_packet():
    [r] = wake.wake_boxes([box(transport="local", mac=None)], timeout=1)
    assert r.reachable and not r.sent


@pytest.mark.parametrize("port", [-1, 70000])
def test_a_packet_that_cannot_be_sent_is_that_boxes_failure(udp, port):
    bad = box(name="bad", wol_port=port, port=closed_port())
    good = box(name="good", wol_port=udp.getsockname()[1], port=closed_port())
    results = wake.wake_boxes([bad, good], timeout=0.5, poll=0.1)
    assert [r.box for r in results] == ["bad", "good"]
    assert results[0].error and "wake-on-LAN packet" in results[0].error
    assert not results[0].sent and not results[0].reachable
    assert results[1].sent and results[1].error is None  # the other box still got its packet
    assert udp.recvfrom(200)[0].startswith(b"\xff" * 6)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_endless_or_negative_waits_are_refused(value):
    with pytest.raises(UsageError):
        wake.wake_boxes([box()], timeout=value)
    with pytest.raises(UsageError):
        wake.wake_boxes([box()], timeout=1, poll=value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "soon"])
def test_invoke_wake_timeout_must_be_finite(tmp_path, capsys, value):
    from warpforge_launch.lab import commands

    inv = tmp_path / "inventory.yaml"
    inv.write_text("boxes: {here: {transport: local}}\n")
    assert commands.wake(inventory=str(inv), timeout=value) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --timeout") and "Traceback" not in err


def test_smoke_reports_a_failed_packet_as_that_boxes_failure_with_junit(tmp_path, udp):
    import xml.etree.ElementTree as ET

    from tests.integration.lab.fakedist import make_dist
    from warpforge_launch.lab import smoke

    dist = make_dist(tmp_path / "dist")
    bad = box(name="bad", wol_port=-1, port=closed_port(), known_hosts_file="/dev/null")
    junit = tmp_path / "junit.xml"
    opts = smoke.Options(wake=True, skip_if_unreachable=True, wake_timeout=0.5,
                         wake_interval=0.1, junit=junit)
    report = smoke.run([bad], dist, opts)
    [o] = report.outcomes
    assert o.status == "FAILED" and "wake-on-LAN packet" in o.reason  # not SKIPPED
    assert report.exit_code == 1
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert case.get("name") == "reachable" and case.find("failure") is not None


def test_an_unexpected_error_in_a_lab_task_is_one_line_without_debug(tmp_path, capsys,
                                                                     monkeypatch):
    from warpforge_launch.lab import commands

    inv = tmp_path / "inventory.yaml"
    inv.write_text("boxes: {here: {transport: local}}\n")

    def boom(*a, **kw):
        raise RuntimeError("something odd")

    monkeypatch.setattr(wake, "wake_boxes", boom)
    monkeypatch.delenv("WARPFORGE_DEBUG", raising=False)
    assert commands.wake(inventory=str(inv)) == 1
    err = capsys.readouterr().err
    assert "error: wake failed: RuntimeError: something odd" in err and "Traceback" not in err
    monkeypatch.setenv("WARPFORGE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        commands.wake(inventory=str(inv))
