"""Sessions without SSH: the local transport, its deadlines and the lock-style hold."""

import time
from dataclasses import replace

import pytest

from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError
from warpforge_launch.inventory import Box
from warpforge_launch.lab import remote

LOCAL = Box(name="here", transport="local")


def test_local_run_passes_argv_untouched_and_feeds_stdin():
    with remote.open_session(LOCAL) as s:
        r = s.run(["printf", "%s|", "a b", "$(id)", ";"])
        assert r.out == "a b|$(id)|;|"
        r = s.run(["wc", "-c"], input=lambda write: [write(b"x" * 1000) for _ in range(5)])
        assert r.out.strip() == "5000"


def test_local_run_failure_carries_the_reason():
    with remote.open_session(LOCAL) as s:
        with pytest.raises(LaunchError, match="boom"):
            s.run(["sh", "-c", "echo boom >&2; exit 4"], what="the thing")
        assert s.run(["sh", "-c", "exit 4"], check=False).exit_code == 4


def test_local_run_has_a_deadline():
    with remote.open_session(LOCAL) as s:
        t0 = time.monotonic()
        with pytest.raises(InfrastructureError, match="timed out"):
            s.run(["sleep", "5"], timeout=0.5)
        assert time.monotonic() - t0 < 3


def test_hold_yields_what_came_before_ready_and_ends_on_exit(tmp_path):
    lock = tmp_path / "lock"
    argv = ["flock", "-E", "75", "-w", "0", str(lock), "sh", "-c",
            "echo state; echo READY; exec cat >/dev/null"]
    with remote.open_session(LOCAL) as s, s.hold(argv, ready=b"READY", timeout=5) as said:
        assert said == b"state\n"
        with pytest.raises(remote.HoldFailed) as err:
            with s.hold(argv, ready=b"READY", timeout=5):
                pass
        assert err.value.exit_status == 75
    with remote.open_session(LOCAL) as s, s.hold(argv, ready=b"READY", timeout=5):
        pass  # released when the first block ended


def test_unknown_transport_and_policy_are_bad_input():
    with pytest.raises(UsageError, match="transport"):
        remote.open_session(replace(LOCAL, transport="carrier-pigeon"))
    with pytest.raises(UsageError, match="host_key_policy"):
        remote.SshSession(replace(LOCAL, transport="ssh", host_key_policy="yolo"),
                          remote.Timeouts())


def test_host_key_names_follow_openssh():
    from warpforge_launch.ssh import Endpoint

    assert Endpoint("10.0.0.1", 22).key_name == "10.0.0.1"
    assert Endpoint("127.0.0.21", 2221).key_name == "[127.0.0.21]:2221"


def test_unreachable_box_is_an_infrastructure_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    b = Box(name="gone", address="127.0.0.1", port=port, known_hosts_file="/dev/null")
    with pytest.raises(InfrastructureError, match="unreachable: connection refused"):
        remote.open_session(b, timeouts=remote.Timeouts(connect=2))


@pytest.mark.parametrize("connect, banner", [(1, 3), (4, 2)])
def test_a_box_that_never_answers_ssh_is_named_so_after_the_banner_wait(connect, banner):
    """A listener that accepts TCP and never says a word: the wait is the banner deadline
    (not the TCP connect timeout) and the error says what happened, not paramiko's words."""
    from tests.testlab.blackhole import black_hole

    with black_hole() as port:
        b = Box(name="hole", address="127.0.0.1", port=port, known_hosts_file="/dev/null")
        t0 = time.monotonic()
        with pytest.raises(InfrastructureError) as err:
            remote.open_session(b, timeouts=remote.Timeouts(connect=connect, banner=banner))
        took = time.monotonic() - t0
    assert f"unreachable: no SSH banner within {banner}s" in str(err.value)
    assert "No existing session" not in str(err.value)
    assert banner - 0.5 <= took < banner + 2
