"""The one-shot GET of `status`, against a real loopback HTTP server and a black hole."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from warpforge_launch import httpget

DOC = {"status": "RUNNING", "text": "é" * 5000}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = json.dumps({**DOC, "path": self.path, "auth": self.headers.get("Authorization"),
                           "close": self.headers.get("Connection")}).encode()
        if self.path == "/missing":
            self.send_response(404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 777):
                part = body[i:i + 777]
                self.wfile.write(f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path", ["/api/jobs/wf-1", "/chunked"])
def test_body_by_length_and_by_chunks(server, path):
    status, body = httpget.get("127.0.0.1", server, path, {"Authorization": "Bearer t"},
                               connect_timeout=2, timeout=5)
    doc = json.loads(body)
    assert status == 200 and doc["text"] == DOC["text"] and doc["path"] == path
    assert doc["auth"] == "Bearer t" and doc["close"] == "close"


def test_an_error_status_is_returned_with_its_body(server):
    assert httpget.get("127.0.0.1", server, "/missing", {}, connect_timeout=2,
                       timeout=5) == (404, b"no")


def test_a_black_hole_times_out_within_the_deadline(black_hole):
    t0 = time.monotonic()
    with pytest.raises(httpget.Timeout) as err:
        httpget.get("127.0.0.1", black_hole, "/", {}, connect_timeout=2, timeout=0.5)
    assert err.value.phase == "request" and 0.45 <= time.monotonic() - t0 < 1.5


def test_a_tls_handshake_that_never_ends_is_a_connect_timeout(black_hole):
    import ssl

    t0 = time.monotonic()
    with pytest.raises(httpget.Timeout) as err:
        httpget.get("127.0.0.1", black_hole, "/", {}, connect_timeout=0.5, timeout=5,
                    tls=ssl.create_default_context(), server_name="apiserver.test")
    assert err.value.phase == "connect" and 0.45 <= time.monotonic() - t0 < 1.5


def test_a_trickling_server_is_cut_at_the_deadline():
    """One byte every 0.1 s would keep a per-read timeout alive forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        conn, _ = listener.accept()
        conn.recv(4096)
        while not stop.is_set():
            conn.sendall(b"H")
            time.sleep(0.1)
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(httpget.Timeout):
            httpget.get("127.0.0.1", listener.getsockname()[1], "/", {}, connect_timeout=2,
                        timeout=0.6)
        assert time.monotonic() - t0 < 1.5
    finally:
        stop.set()
        listener.close()


def test_a_closed_port_fails_with_the_reason():
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(httpget.Failed, match="refused"):
        httpget.get("127.0.0.1", port, "/", {}, connect_timeout=2, timeout=2)


@pytest.mark.parametrize("raw, why", [
    (b"", "empty answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n", "no complete"),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "cut short"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "cut short"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed"),
])
def test_answers_that_are_not_whole_http_are_refused(raw, why):
    with pytest.raises(httpget.Failed, match=why):
        httpget.parse(raw)


def test_read_to_the_end_without_a_length():
    assert httpget.parse(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n{\"a\": 1}") == (200,
                                                                               b'{"a": 1}')


# --- the URL helpers: urllib.parse's answers without importing it --------------------------
@pytest.mark.parametrize("url", [
    "https://127.0.0.1:16443", "https://KUBE.Example:6443/prefix/", "http://h", "https://h:0",
    "http://[::1]:8265", "https://[FE80::1]/x", "https://user@h:1/p", "https://h:1/p?q#f",
    "HTTPS://h", "http://h:8265/", "https://h:99999", "https://h: 1", "", "h:1", "ftp://a.b/c d",
])
def test_server_address_is_urlsplit(url):
    from urllib.parse import urlsplit

    def split():
        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.port, parts.path

    try:
        want = split()
    except ValueError:
        with pytest.raises(ValueError):
            httpget.server_address(url)
        return
    assert httpget.server_address(url) == want


def test_quote_and_urlencode_are_urllibs():
    import random
    import urllib.parse

    rng = random.Random(3)
    alphabet = "aZ09-._~/:@ =,()!%+&?#\u00e9\u00ff\u4e2d\n"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        safe = rng.choice(["/", "", "/:@-._~"])
        assert httpget.quote(text, safe) == urllib.parse.quote(text, safe=safe)
        query = {text: text[::-1], "n": rng.randint(-5, 500), "flag": True}
        assert httpget.urlencode(query) == urllib.parse.urlencode(query)
