"""One HTTP/1.1 client connection (plain or TLS) for the Kubernetes API, on ``http.client``.

The socket is opened here, not by ``http.client``: the TCP connect and the TLS handshake get
their own timeout, ``TCP_NODELAY`` is set before the handshake (without it the request waits
for the server's delayed ACK, 40 ms on Linux), and the TLS server name can differ from the
address (a kubeconfig's ``tls-server-name``). ``http.client`` then speaks HTTP on it:
headers, Content-Length and chunked bodies, keep-alive. An exchange has one deadline, from
the request to the answer's last byte, checked before every socket read ``http.client``
makes (it reads through ``_DeadlineSocket``): a server that trickles a header line a second
keeps each read short, and http.client alone would read 100 headers before giving up. No
watchdog thread: ``threading`` is not imported on a `list` refresh.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from collections.abc import Iterator, Mapping

READ_SIZE = 64 * 1024


class Dropped(ConnectionError):
    """The server closed the connection before any byte of an answer (a stale keep-alive)."""


class Truncated(ConnectionError):
    """The server closed the connection in the middle of an answer."""


class BadResponse(ConnectionError):
    """Not an HTTP/1.x answer."""


class Response:
    def __init__(self, raw: http.client.HTTPResponse) -> None:
        self.raw = raw
        self.status = raw.status
        self.headers = {k.lower(): v for k, v in raw.getheaders()}  # lower-case names

    @property
    def will_close(self) -> bool:
        return bool(self.raw.will_close)


class Connection:
    def __init__(self, host: str, port: int, *, ssl_context=None,
                 server_name: str | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context, self.server_name = ssl_context, server_name
        self.sock: socket.socket | None = None
        self._http: http.client.HTTPConnection | None = None
        self._deadline: float | None = None

    def connect(self, timeout: float) -> None:
        """TCP connect and TLS handshake, both within ``timeout``."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                from warpforge_launch.httpget import sni_name

                sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=sni_name(self.ssl_context,
                                                   self.server_name or self.host))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._http = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._http.sock = _DeadlineSocket(self)  # http.client sends and reads through it

    def close(self) -> None:
        if self._http is not None:
            self._http.close()  # closes the socket too
            self._http = None
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def send(self, method: str, target: str, headers: Mapping[str, str],
             body: bytes | None, deadline: float | None) -> Response:
        """Send one request and read the answer's head; the body is read with ``body()``."""
        self._deadline = deadline
        self._settimeout()
        try:
            self._http.request(method, target, body=body, headers=dict(headers))
            self._settimeout()
            return Response(self._http.getresponse())
        except http.client.RemoteDisconnected as exc:
            raise Dropped(str(exc) or "the server closed the connection") from None
        except http.client.HTTPException as exc:
            raise BadResponse(f"not an HTTP answer: {exc}") from None

    def body(self, response: Response, method: str) -> bytes:
        return b"".join(self.chunks(response, method))

    def chunks(self, response: Response, method: str = "GET") -> Iterator[bytes]:
        """The body as it arrives (chunked, by Content-Length, or until the server closes)."""
        raw = response.raw
        try:
            while True:
                self._settimeout()
                piece = raw.read1(READ_SIZE)  # what has arrived, up to READ_SIZE: streams
                if not piece:
                    raw.close()  # read to the end: the connection is free for the next request
                    return
                yield piece
        except http.client.IncompleteRead:
            raise Truncated("the server closed the connection mid-answer") from None
        except http.client.HTTPException as exc:
            raise BadResponse(f"a broken answer: {exc}") from None

    def no_deadline(self) -> None:
        """For a stream that lasts as long as its source (a followed log)."""
        self._deadline = None
        self.sock.settimeout(None)

    def _settimeout(self) -> None:
        if self._deadline is None:
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(left)


class _DeadlineSocket:
    """What ``http.client`` sees of the socket: each send and read first sets the timeout to
    what is left of the exchange's deadline, and fails once it has passed."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def sendall(self, data) -> None:
        self._conn._settimeout()
        self._conn.sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._conn))

    def close(self) -> None:
        self._conn.sock.close()


class _DeadlineReader(io.RawIOBase):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._conn._settimeout()
        return self._conn.sock.recv_into(buffer)
