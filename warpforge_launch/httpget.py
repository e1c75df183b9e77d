"""One HTTP/1.1 GET on a fresh connection, for `status` of live jobs.

``http.client`` costs 15-25 ms to import (it loads the email package to parse headers):
a third of what `status` may spend beside its one request. A GET sent with
``Connection: close`` needs only the status line, two headers and the body, so this reads
them itself; keep-alive, request bodies and everything else stay with ``http.client`` in the
backends' clients.

The deadline covers the whole exchange: a server that accepts and never answers, or
trickles bytes, raises ``Timeout`` in time.
"""

from __future__ import annotations

import socket
import time

MAX_HEAD = 64 * 1024
MAX_BODY = 256 * 1024 * 1024


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
        sock = socket.create_connection((host, port), timeout=connect_timeout)
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


def sni_name(tls, name: str) -> str | None:
    """The TLS server name to send: none for an address the certificate is not checked
    against (SNI carries host names only)."""
    if tls.check_hostname:
        return name
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name)
            return None
        except OSError:
            pass
    return name
