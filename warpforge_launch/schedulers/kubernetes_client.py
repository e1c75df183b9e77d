"""The Kubernetes API over one kept-alive HTTPS connection, with deadlines and the project's
one-line errors.

Why not lightkube (or the official client): every call here is a plain JSON request on a
known path, and importing lightkube (httpx, httpcore, trio, anyio, h2, its models) cost a
``status`` about 0.3 s - several times kubectl's whole run - while a request on a kept
connection costs a few milliseconds. Objects stay the API's JSON dicts; nothing becomes a
model. The connection itself is ``kubernetes_http``: ``http.client`` on a socket opened
there (connect and handshake deadlines, TCP_NODELAY, the TLS server name).

Deadlines: ``connect_timeout`` bounds the TCP connect and the TLS handshake (a listener that
accepts and never answers is a timeout, not a hang); ``request_timeout`` bounds the whole
exchange after it. A followed log stream has no overall deadline (it ends with the
container); TCP keep-alives detect a peer that vanished.

A ``one_shot`` client (`status` of live jobs: one list request or two) sends each GET on a
fresh connection through ``warpforge_launch.httpget`` and never imports ``http.client``,
whose import costs more than the request.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator, Mapping

from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
from warpforge_launch.httpget import quote, server_address, urlencode
from warpforge_launch.schedulers.kubernetes_auth import Credentials, run_exec_plugin, ssl_context

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from warpforge_launch.schedulers.kubernetes_http import Connection

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
UNREACHABLE_HINT = "is the apiserver up? check the kubeconfig's server"
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           409: "Conflict", 422: "Unprocessable Entity", 500: "Internal Server Error",
           503: "Service Unavailable"}


class KubeClient:
    """Requests to one apiserver as one identity; ``observers`` see "METHOD path?query"."""

    def __init__(self, creds: Credentials, *, connect_timeout: float, request_timeout: float,
                 rights_hint: str, one_shot: bool = False) -> None:
        scheme, host, port, path = server_address(creds.server)
        self.creds = creds
        self.server = creds.server
        self._https = scheme == "https"
        self._host = host or "localhost"
        self._port = port or (443 if self._https else 80)
        self._prefix = path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.rights_hint = rights_hint
        self.one_shot = one_shot
        self.observers: list[Callable[[str], None]] = []
        self._conn: Connection | None = None
        self._exec_status: dict[str, Any] | None = None

    # --- requests -----------------------------------------------------------------------------

    def call(self, method: str, path: str, what: str, *, query: Mapping[str, Any] | None = None,
             body: Any = None, content_type: str = "application/json",
             missing: str | None = None) -> Any:
        """The decoded JSON answer; ``missing``: the NotFoundError text for a 404."""
        target = self._target(path, query)
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        status, data = self._exchange(method, target, payload, content_type, what)
        if status >= 400:
            self._fail(status, data, what, missing)
        try:
            return json.loads(data) if data.strip() else {}
        except ValueError:
            raise InfrastructureError(
                f"{self.server} did not answer JSON to {what} (is it a Kubernetes API?): "
                f"{_one_line(data.decode('utf-8', errors='replace'))[:120]}",
                hint=UNREACHABLE_HINT) from None

    def lines(self, path: str, what: str, *, query: Mapping[str, Any] | None = None,
              follow: bool = False) -> Iterator[str]:
        """A text stream (pod logs) line by line, on a connection of its own."""
        target = self._target(path, query)
        self._notify("GET", target)
        conn = self._open(what)
        try:
            response = conn.send("GET", target, self._headers(None), None,
                                 time.monotonic() + self.request_timeout)
            if response.status >= 400:
                self._fail(response.status, conn.body(response, "GET"), what, None)
            if follow:  # no overall deadline: the kubelet ends the stream with the container
                conn.no_deadline()
                _keepalive(conn.sock)
            rest = b""
            for piece in conn.chunks(response):
                rest += piece
                *whole, rest = rest.split(b"\n")
                for line in whole:
                    yield line.decode("utf-8", errors="replace") + "\n"
            if rest:
                yield rest.decode("utf-8", errors="replace")
        except TimeoutError:
            raise self._timed_out("request", what) from None
        except OSError as exc:
            raise InfrastructureError(f"the log stream of {what} broke: "
                                      f"{_one_line(exc)}") from None
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- transport ----------------------------------------------------------------------------

    def _target(self, path: str, query: Mapping[str, Any] | None) -> str:
        target = self._prefix + quote(path, safe="/:@-._~")
        if query:
            target += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        return target

    def _notify(self, method: str, target: str) -> None:
        for observe in self.observers:
            observe(f"{method} {target}")

    def _exec(self) -> dict[str, Any]:
        if self._exec_status is None:
            self._exec_status = run_exec_plugin(self.creds.exec_json, self.request_timeout)
        return self._exec_status

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "warpforge-launch"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self._exec().get("token") if self.creds.exec_json else self.creds.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif self.creds.username and self.creds.password is not None:
            import base64

            pair = f"{self.creds.username}:{self.creds.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    def _exchange(self, method: str, target: str, body: bytes | None, content_type: str,
                  what: str) -> tuple[int, bytes]:
        self._notify(method, target)
        kind = content_type if body is not None else None
        status, data = self._retrying(method, target, body, self._headers(kind), what)
        if status == 401 and self.creds.exec_json:
            self._exec_status = None  # an expired plugin token: ask the plugin again
            status, data = self._retrying(method, target, body, self._headers(kind), what)
        return status, data

    def _retrying(self, method: str, target: str, body: bytes | None,
                  headers: dict[str, str], what: str) -> tuple[int, bytes]:
        if self.one_shot and method == "GET" and body is None:
            return self._get_once(target, headers, what)
        from warpforge_launch.schedulers.kubernetes_http import Dropped

        reused = self._conn is not None
        while True:
            try:
                return self._once(method, target, body, headers, what)
            except Dropped:
                self.close()  # a kept-alive connection the server had closed: once more
                if not (reused and method in IDEMPOTENT):
                    raise self._unreachable(what, "connection closed by the server") from None
                reused = False

    def _get_once(self, target: str, headers: dict[str, str], what: str
                  ) -> tuple[int, bytes]:
        from warpforge_launch import httpget

        try:
            return httpget.get(self._host, self._port, target, headers,
                               connect_timeout=self.connect_timeout,
                               timeout=self.request_timeout, tls=self._tls(),
                               server_name=self.creds.tls_server_name)
        except httpget.Timeout as exc:
            raise self._timed_out(exc.phase, what) from None
        except httpget.Failed as exc:
            raise self._unreachable(what, _one_line(exc)) from None

    def _once(self, method: str, target: str, body: bytes | None, headers: dict[str, str],
              what: str) -> tuple[int, bytes]:
        from warpforge_launch.schedulers.kubernetes_http import Dropped

        conn = self._conn or self._connect(what)
        try:
            response = conn.send(method, target, headers, body,
                                 time.monotonic() + self.request_timeout)
            data = conn.body(response, method)
        except Dropped:
            raise
        except TimeoutError:
            self.close()
            raise self._timed_out("request", what) from None
        except OSError as exc:
            self.close()
            raise self._unreachable(what, _one_line(exc)) from None
        if response.will_close:
            self.close()
        return response.status, data

    def _connect(self, what: str) -> Connection:
        self._conn = self._open(what)
        return self._conn

    def _tls(self):
        """The TLS context of this cluster and identity (None for plain HTTP)."""
        if not self._https:
            return None
        exec_cert = None
        if self.creds.exec_json and self._exec().get("clientCertificateData"):
            exec_cert = (self._exec()["clientCertificateData"], self._exec()["clientKeyData"])
        return ssl_context(self.creds, exec_cert)

    def _open(self, what: str) -> Connection:
        from warpforge_launch.schedulers.kubernetes_http import Connection

        conn = Connection(self._host, self._port, ssl_context=self._tls(),
                          server_name=self.creds.tls_server_name)
        try:
            conn.connect(self.connect_timeout)  # TCP and the TLS handshake
        except TimeoutError:
            conn.close()
            raise self._timed_out("connect", what) from None
        except OSError as exc:
            conn.close()
            raise self._unreachable(what, _one_line(exc), not_sent=True) from None
        return conn

    # --- errors -------------------------------------------------------------------------------

    def _fail(self, code: int, data: bytes, what: str, missing: str | None):
        message = _status_message(data) or REASONS.get(code, "error")
        if code == 404 and missing is not None:
            raise NotFoundError(missing)
        if code in (401, 403):  # authentication and authorization come first: nothing done
            raise InfrastructureError(
                f"Kubernetes API at {self.server} refused {what} (HTTP {code}): {message}",
                hint=self.rights_hint, not_sent=True)
        if code >= 500:
            raise InfrastructureError(f"Kubernetes API at {self.server} failed {what} "
                                      f"(HTTP {code}): {message}")
        raise KubeRejected(f"Kubernetes refused {what} (HTTP {code}): {message}", code)

    def _timed_out(self, phase: str, what: str) -> InfrastructureError:
        limit = self.connect_timeout if phase == "connect" else self.request_timeout
        return InfrastructureError(
            f"Kubernetes API at {self.server} timed out ({phase}, {limit:g} s): {what}",
            hint=UNREACHABLE_HINT, not_sent=phase == "connect")

    def _unreachable(self, what: str, why: str, *, not_sent: bool = False
                     ) -> InfrastructureError:
        """``not_sent``: the connection (TCP or TLS) failed, so no request went out."""
        return InfrastructureError(
            f"Kubernetes API at {self.server} is unreachable ({what}): {why}",
            hint=UNREACHABLE_HINT, not_sent=not_sent)


class KubeRejected(UsageError):
    """A 4xx other than 401/403/404-as-missing: the apiserver refused what we sent (exit 2)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _status_message(data: bytes) -> str:
    """The message of a Kubernetes Status object, else the body's last line."""
    text = data.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except ValueError:
        pass
    return _one_line(text)


def _one_line(value: Any, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(value).splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else type(value).__name__


def _keepalive(sock: socket.socket) -> None:
    """A followed stream notices a vanished peer within about a minute."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
