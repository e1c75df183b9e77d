"""One HTTP/1.1 client connection (plain or TLS socket) for the Kubernetes API.

Why not ``http.client``: it imports the ``email`` package to parse headers, about 20 ms on
every ``status`` - a third of kubectl's whole run - for headers we read three of. The
apiserver speaks plain HTTP/1.1 (JSON bodies with Content-Length or chunked, keep-alive), which
is all this reads. Every read has a deadline: the socket timeout is set to what is left of it
before each ``recv``, so a peer that trickles bytes cannot stretch an exchange.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping

MAX_HEAD = 64 * 1024


class Dropped(ConnectionError):
    """The server closed the connection before any byte of an answer (a stale keep-alive)."""


class Truncated(ConnectionError):
    """The server closed the connection in the middle of an answer."""


class BadResponse(ConnectionError):
    """Not an HTTP/1.x answer."""


class Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers  # lower-case names

    @property
    def will_close(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


class Connection:
    def __init__(self, host: str, port: int, *, ssl_context=None,
                 server_name: str | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context, self.server_name = ssl_context, server_name
        self.sock: socket.socket | None = None
        self._buf = bytearray()
        self._deadline: float | None = None

    def connect(self, timeout: float) -> None:
        """TCP connect and TLS handshake, both within ``timeout``."""
        # an ASCII host as bytes: getaddrinfo then skips loading the idna codec
        host = self.host.encode() if self.host.isascii() else self.host
        sock = socket.create_connection((host, self.port), timeout=timeout)
        try:
            # the request follows the TLS Finished message at once: without this, Nagle holds
            # it until the server's delayed ACK (40 ms on Linux)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                name = self.server_name or self.host
                if not self.ssl_context.check_hostname and _is_ip(name):
                    name = None  # no SNI for an address anyway; spares the idna codec
                sock = self.ssl_context.wrap_socket(sock, server_hostname=name)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._buf.clear()

    def send(self, method: str, target: str, headers: Mapping[str, str],
             body: bytes | None, deadline: float | None) -> Response:
        """Send one request and read the answer's head; the body is read with ``body()``."""
        self._deadline = deadline
        host = self.host if ":" not in self.host else f"[{self.host}]"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        self._settimeout()
        self.sock.sendall(data)
        status_line = self._line(first=True)
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP answer: {status_line[:60]!r}")
        found: dict[str, str] = {}
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            found[name.strip().lower()] = value.strip()
        return Response(int(parts[1]), found)

    def body(self, response: Response, method: str) -> bytes:
        return b"".join(self.chunks(response, method))

    def chunks(self, response: Response, method: str = "GET") -> Iterator[bytes]:
        """The body as it arrives (chunked, by Content-Length, or until the server closes)."""
        if method == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
            return
        if "chunked" in response.headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self._line():  # trailers
                        pass
                    return
                yield self._exact(size)
                self._line()
        elif "content-length" in response.headers:
            left = int(response.headers["content-length"])
            while left > 0:
                piece = self._some(left)
                left -= len(piece)
                yield piece
        else:
            while True:
                try:
                    piece = self._some(1 << 16)
                except Truncated:
                    self.close()
                    return
                yield piece

    def no_deadline(self) -> None:
        """For a stream that lasts as long as its source (a followed log)."""
        self._deadline = None
        self.sock.settimeout(None)

    # --- reading ------------------------------------------------------------------------------

    def _settimeout(self) -> None:
        if self._deadline is None:
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(left)

    def _fill(self, first: bool = False) -> None:
        self._settimeout()
        data = self.sock.recv(1 << 16)
        if not data:
            if first and not self._buf:
                raise Dropped("the server closed the connection")
            raise Truncated("the server closed the connection mid-answer")
        self._buf += data

    def _line(self, first: bool = False) -> bytes:
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end]).rstrip(b"\r")
                del self._buf[:end + 1]
                return line
            if len(self._buf) > MAX_HEAD:
                raise BadResponse("an answer line longer than 64 KiB")
            self._fill(first)

    def _exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def _some(self, most: int) -> bytes:
        if not self._buf:
            self._fill()
        data = bytes(self._buf[:most])
        del self._buf[:most]
        return data


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False
