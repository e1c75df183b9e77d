import socket

import pytest

from tests import netguard


def test_guard_refuses_non_loopback_and_records_it():
    before = len(netguard.blocked)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(netguard.NetworkGuardError):
            s.sendto(b"x", ("192.0.2.1", 9))  # TEST-NET-1: never routed, and never sent
        with pytest.raises(netguard.NetworkGuardError):
            s.connect(("255.255.255.255", 9))
    finally:
        s.close()
    assert len(netguard.blocked) == before + 2
    netguard.blocked[before:] = []  # these two were this test's own, on purpose


def test_guard_allows_loopback():
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"ok", r.getsockname())
        assert r.recv(10) == b"ok"
    finally:
        r.close()
        s.close()


@pytest.mark.parametrize("addr,ok", [
    (("127.0.0.21", 22), True), (("::1", 22, 0, 0), True), ("/tmp/sock", True),
    (("10.0.0.1", 22), False), (("8.8.8.8", 53), False), (("example.com", 80), False),
])
def test_is_allowed_table(addr, ok):
    assert netguard.is_allowed(addr) is ok


@pytest.mark.parametrize("name,ok", [
    ("localhost", True), (None, True), ("127.0.0.5", True), ("::1", True),
    ("example.com", False), ("nuc.local", False), ("10.1.2.3", False),
])
def test_name_lookup_table(name, ok):
    assert netguard.name_allowed(name) is ok


def test_guard_refuses_dns_lookup_and_records_it():
    before = len(netguard.blocked)
    with pytest.raises(netguard.NetworkGuardError, match="needs DNS"):
        socket.getaddrinfo("warpforge-guard-test.example", 80)
    assert socket.getaddrinfo("localhost", 80)  # loopback names still resolve
    assert len(netguard.blocked) == before + 1
    netguard.blocked[before:] = []
