"""Network guard for the test suite: refuse any socket traffic that would leave loopback.

TESTLAB.md rule: tests may only talk to 127.0.0.0/8, ::1, unix sockets and the network
namespaces the tests create themselves (registered with ``allow_network``). The guard is an
audit hook, so it sees every ``socket.connect``/``sendto``/``sendmsg`` and every name lookup
(``getaddrinfo``, ``gethostbyname``) made in this process, whichever library makes it; it
raises before the packet or the query is sent and records the attempt, and the suite fails
any test that caused one (tests/conftest.py). It is diagnostics for Python code only: the
hard guarantee is that CI runs the whole suite in a network namespace with only loopback
(.ci/run), where no subprocess, daemon or C extension can reach another host either.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

_allowed: list[ipaddress._BaseNetwork] = [
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
]
blocked: list[tuple[str, object]] = []
_installed = False


class NetworkGuardError(PermissionError):
    """Raised when a test tries to reach an address outside loopback and the lab namespaces."""


def allow_network(cidr: str) -> None:
    """Allow a network the tests created themselves (e.g. a veth pair into a netns)."""
    _allowed.append(ipaddress.ip_network(cidr, strict=False))


def is_allowed(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path or abstract socket
        return True
    if not isinstance(address, tuple) or not address:
        return True
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False  # a host name would need DNS resolution first; tests use addresses
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _allowed)


def _local_names() -> set[str]:
    """Names that resolve without DNS: localhost, this host's own name, and /etc/hosts
    entries that point into loopback (the Slurm lab's node name is one)."""
    names = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
             socket.gethostname()}
    try:
        with open("/etc/hosts", encoding="utf-8") as hosts:
            for line in hosts:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and is_allowed((fields[0], 0)):
                    names.update(fields[1:])
    except OSError:
        pass
    return names


def name_allowed(host: object) -> bool:
    """May this name be looked up? Address literals in range and local names only: a
    resolver query for any other name could leave the machine."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host == "" or host.rstrip(".").lower() in _names:
        return True
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return is_allowed((host, 0))


_names: set[str] = set()
_RESOLVE = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"}


def _hook(event: str, args: tuple) -> None:
    if event in _RESOLVE:
        if not name_allowed(args[0]):
            blocked.append((event, args[0]))
            raise NetworkGuardError(f"network guard: {event} of {args[0]!r} needs DNS")
        return
    if event not in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        return
    sock, address = args[0], args[-1]
    if getattr(sock, "family", None) == socket.AF_UNIX:
        return
    if event == "socket.sendmsg" and address is None:
        return  # sendmsg on a connected socket: its connect was already checked
    if not is_allowed(address):
        blocked.append((event, address))
        raise NetworkGuardError(f"network guard: {event} to {address!r} is outside loopback")


def install() -> None:
    global _installed
    if not _installed:
        _names.update(n.lower() for n in _local_names())
        sys.addaudithook(_hook)
        _installed = True
