"""One HTTP/1.1 GET on a fresh connection, for `status` of live jobs.

``http.client`` costs 15-25 ms to import (it loads the email package to parse headers):
a third of what `status` may spend beside its one request. A GET sent with
``Connection: close`` needs only the status line, two headers and the body, so this reads
them itself; keep-alive, request bodies and everything else stay with ``http.client`` in the
backends' clients.

The deadline covers the whole exchange: a server that accepts and never answers, or
trickles bytes, raises ``Timeout`` in time.

The URL helpers (``server_address``, ``quote``, ``urlencode``) give urllib.parse's answers
for the URLs the clients build, without importing it: it imports ``ipaddress``, 3 ms of a
`status`. A server URL of any other shape goes to urllib.parse itself.
"""

from __future__ import annotations

import re
import socket
import time

MAX_HEAD = 64 * 1024
MAX_BODY = 256 * 1024 * 1024
# scheme://host[:port][/path] with a DNS name or an IPv4 address (IPv6 goes to urlsplit)
_PLAIN_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>[A-Za-z0-9._-]+)"
                        r"(?::(?P<port>[0-9]{1,5}))?(?P<path>/[^?#]*)?")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def server_address(url: str) -> tuple[str, str | None, int | None, str]:
    """(scheme, host, port, path) of ``url`` as ``urlsplit`` gives them (``scheme``,
    ``hostname``, ``port``, ``path``): lower-cased, None where absent; ValueError for a
    port out of range."""
    plain = _PLAIN_URL.fullmatch(url)
    port = plain and plain["port"]
    if plain is None or (port and int(port) > 65535):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.port, parts.path
    return (plain["scheme"].lower(), plain["host"].lower(), int(port) if port else None,
            plain["path"] or "")


def quote(text: str, safe: str = "/") -> str:
    """``urllib.parse.quote(text, safe)``: UTF-8, unreserved and ``safe`` bytes kept."""
    keep = _UNRESERVED.union(safe.encode("ascii"))
    return "".join(chr(b) if b in keep else f"%{b:02X}" for b in text.encode("utf-8"))


def urlencode(query: dict) -> str:
    """``urllib.parse.urlencode(query)`` of str or number values (quote_plus of each)."""
    return "&".join(f"{quote(str(k), ' ')}={quote(str(v), ' ')}".replace(" ", "+")
                    for k, v in query.items())


class Timeout(Exception):
    """The connect (``phase`` "connect") or the exchange after it ("request") ran late."""

    def __init__(self, phase: str):
        super().__init__(phase)
        self.phase = phase


class Failed(Exception):
    """Could not connect, or the answer is not HTTP/1.x; the message says why."""


def get(host: str, port: int, target: str, headers: dict[str, str], *,
        connect_timeout: float, timeout: float, tls=None,
        server_name: str | None = None) -> tuple[int, bytes]:
    """(status, body) of ``GET target``; ``tls`` is an ``ssl.SSLContext`` for https, and
    ``server_name`` the name its certificate is checked against (default ``host``). The
    TCP connect and the TLS handshake share ``connect_timeout``."""
    try:
        sock = socket.create_connection((ascii_name(host), port), timeout=connect_timeout)
    except TimeoutError:
        raise Timeout("connect") from None
    except OSError as exc:
        raise Failed(str(exc) or type(exc).__name__) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname=sni_name(tls, server_name or host))
            except TimeoutError:
                raise Timeout("connect") from None
        deadline = time.monotonic() + timeout
        lines = [f"GET {target} HTTP/1.1", f"Host: {_host_header(host, port, tls)}",
                 "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        sock.settimeout(timeout)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        raw = _read_all(sock, deadline)
    except TimeoutError:
        raise Timeout("request") from None
    except OSError as exc:
        raise Failed(str(exc) or type(exc).__name__) from None
    finally:
        sock.close()
    return parse(raw)


def _read_all(sock: socket.socket, deadline: float) -> bytes:
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(262144)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_HEAD + MAX_BODY:
            raise Failed(f"answer larger than {MAX_BODY} bytes")


def parse(raw: bytes) -> tuple[int, bytes]:
    """A whole response read to the end of the connection -> (status, decoded body)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or len(head) > MAX_HEAD:
        raise Failed("no complete HTTP response head" if raw else "empty answer")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise Failed(f"not an HTTP/1.x answer: {status_line[:80]!r}")
    names = {}
    for field in fields:
        name, _, value = field.partition(":")
        names[name.strip().lower()] = value.strip()
    if "chunked" in names.get("transfer-encoding", "").lower():
        return int(code), _dechunk(body)
    length = names.get("content-length")
    if length is not None:
        if not length.isdigit() or len(body) < int(length):
            raise Failed(f"answer cut short ({len(body)} of {length} bytes)")
        body = body[:int(length)]
    return int(code), body


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise Failed("chunked answer cut short")
        try:
            size = int(body[pos:end].split(b";", 1)[0], 16)
        except ValueError:
            raise Failed("malformed chunked answer") from None
        if size == 0:
            return b"".join(out)
        start = end + 2
        if len(body) < start + size + 2:
            raise Failed("chunked answer cut short")
        out.append(body[start:start + size])
        pos = start + size + 2


def _host_header(host: str, port: int, tls) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if tls is not None else 80) else f"{name}:{port}"


def ascii_name(name: str) -> str | bytes:
    """An ASCII host name as bytes: socket and ssl then take it as it is, where a str goes
    through the idna codec, whose import (unicodedata, stringprep) costs more than the
    lookup."""
    return name.encode("ascii") if name.isascii() else name


def sni_name(tls, name: str) -> str | bytes | None:
    """The TLS server name to send: none for an address the certificate is not checked
    against (SNI carries host names only)."""
    if tls.check_hostname:
        return ascii_name(name)
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name)
            return None
        except OSError:
            pass
    return ascii_name(name)
