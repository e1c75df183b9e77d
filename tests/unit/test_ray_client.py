"""The Ray HTTP client against loopback listeners that misbehave the way networks do.

Ray's dashboard itself answers 5xx only for a duplicate submission id (the integration tests
cover that one); the other server errors here come from a small HTTP listener standing where
a reverse proxy in front of Ray would (HTTP 502/503), which no Ray head produces on demand.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
from warpforge_launch.schedulers.ray_client import RayClient


class Listener:
    """A TCP listener on 127.0.0.1 that accepts and then does what ``serve`` says."""

    def __init__(self, serve):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.serve = serve
        self.conns: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def close(self):
        self.stopped = True
        self.sock.close()
        for conn in self.conns:
            conn.close()


def black_hole(conn):
    """Accept, read, never answer."""
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def trickle(conn):
    """Answer one byte every 0.2 s, forever: per-read timeouts never fire."""
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while True:
            conn.sendall(b" ")
            time.sleep(0.2)
    except OSError:
        pass


@pytest.fixture()
def listener():
    made = []

    def make(serve):
        made.append(Listener(serve))
        return made[-1]

    yield make
    for each in made:
        each.close()


def client(port, request_timeout=1.0):
    return RayClient(f"http://127.0.0.1:{port}", connect_timeout=1.0,
                     request_timeout=request_timeout)


@pytest.mark.parametrize("serve", [black_hole, trickle])
def test_a_dashboard_that_never_finishes_times_out_in_time(listener, serve):
    server = listener(serve)
    c = client(server.port, request_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(InfrastructureError, match=r"timed out \(request, 1 s\)") as info:
        c.call("GET", "/api/jobs/wf-1")
    took = time.monotonic() - t0
    assert 0.9 <= took < 2.0
    assert info.value.exit_code == 3 and "\n" not in str(info.value)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Ray's dashboard (aiohttp) does
    status = 503
    text = "upstream connect error\nor disconnect/reset before headers\n"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        data = self.text.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def http_server():
    servers = []

    def make(status, text=_Handler.text):
        handler = type("H", (_Handler,), {"status": status, "text": text})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_infrastructure_exit_3_in_one_line(http_server, status):
    port = http_server(status)
    with pytest.raises(InfrastructureError) as info:
        client(port).call("GET", "/api/jobs/")
    assert info.value.exit_code == 3
    assert f"HTTP {status}" in str(info.value) and "\n" not in str(info.value)


def test_client_errors_are_bad_input_and_404_is_what_the_caller_says(http_server):
    with pytest.raises(UsageError) as info:
        client(http_server(400, "bad\nrequest")).call("GET", "/api/jobs/")
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    port = http_server(404, "Job wf-1 does not exist")
    with pytest.raises(NotFoundError, match="no job x"):
        client(port).call("GET", "/api/jobs/wf-1", not_found=NotFoundError("no job x"))
    assert client(port).call("GET", "/api/jobs/wf-1", missing_ok=True) is None


def test_one_connection_serves_many_calls(http_server):
    port = http_server(200, '{"ok": true}')
    c = client(port)
    seen = []
    c.observers.append(lambda method, path: seen.append((method, path)))
    assert c.call("GET", "/api/version") == {"ok": True}
    first = c._conn.sock
    assert [c.call("GET", "/api/version") for _ in range(3)] == [{"ok": True}] * 3
    assert c._conn.sock is first  # kept alive, not reopened
    assert seen == [("GET", "/api/version")] * 4
    c.close()


def test_a_refused_port_is_unreachable(listener):
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(InfrastructureError, match="unreachable") as info:
        client(port).call("GET", "/api/version")
    assert f"127.0.0.1:{port}" in str(info.value)


def answer_once_then_hang_up(conn):
    """Answer one request as keep-alive, then close: what an idle-timeout on the server does."""
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        time.sleep(0.1)
    finally:
        conn.close()


def test_a_kept_connection_the_server_closed_is_reopened_for_a_get(listener):
    server = listener(answer_once_then_hang_up)
    c = client(server.port)
    assert c.call("GET", "/api/version") == {}
    time.sleep(0.3)
    assert c.call("GET", "/api/version") == {}  # retried once on a fresh connection
    assert len(server.conns) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_login_points_at_the_auth_header(http_server, status):
    with pytest.raises(InfrastructureError, match=f"HTTP {status}") as info:
        client(http_server(status, "denied")).call("GET", "/api/jobs/")
    assert info.value.exit_code == 3 and "auth_header" in info.value.hint


class _AnyJson(_Handler):
    """Answers every request 200 with one JSON object: not the Jobs API (a proxy, another
    service on the dashboard's port)."""

    status, text = 200, '{"a": 1}'

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()

    do_PUT = do_POST


def test_a_submit_answer_without_the_submission_id_is_not_a_submit(tmp_path, monkeypatch):
    from warpforge_launch.inputs import parse_inputs
    from warpforge_launch.jobs import JobDefinition, JobQuery
    from warpforge_launch.launcher import Launcher

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnyJson)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WARPFORGE_HOME", str(tmp_path / "home"))
    inv = tmp_path / "inv.yaml"
    inv.write_text(f"schedulers:\n  ray:\n    type: ray\n    dashboard_url: "
                   f"http://127.0.0.1:{server.server_address[1]}\n")
    (tmp_path / "m.py").write_text("class M: pass\n")
    try:
        with Launcher(str(inv)) as launcher:
            with pytest.raises(InfrastructureError, match="without its submission id"):
                launcher.submit(JobDefinition(name="m", source=str(tmp_path / "m.py"),
                                              inputs=parse_inputs("[(1,8)]"), model_class="M"))
            (row,) = launcher.store.query(JobQuery())
            assert row.submitting  # unknown whether it went in: left to reconcile
    finally:
        server.shutdown()
        server.server_close()
