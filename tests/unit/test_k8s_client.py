"""The Kubernetes transport without a cluster: kubeconfig resolution and its cache, TLS with a
cluster CA and client certificates from inline data, chunked and sized bodies, kept-alive
connections, timeouts against a black hole, error lines, exec plugins. The servers are real
TLS/HTTP servers on 127.0.0.1 (the real apiserver is in tests/integration/k8s)."""

from __future__ import annotations

import base64
import datetime
import json
import os
import socket
import ssl
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
from warpforge_launch.schedulers import kubernetes_auth as auth
from warpforge_launch.schedulers.kubernetes_client import KubeClient

# --- certificates -------------------------------------------------------------------------------


def _pki(tmp: Path) -> dict[str, bytes]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(name, key, issuer, issuer_key, *, ca=False, ip=False):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=1))
             .not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ip:
            import ipaddress

            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def pem_key(key):
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = cert("test-ca", ca_key, ca_name, ca_key, ca=True)
    srv_key, cli_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    out = {"ca": ca.public_bytes(serialization.Encoding.PEM),
           "server": cert("127.0.0.1", srv_key, ca_name, ca_key, ip=True).public_bytes(
               serialization.Encoding.PEM), "server_key": pem_key(srv_key),
           "client": cert("alice", cli_key, ca_name, ca_key).public_bytes(
               serialization.Encoding.PEM), "client_key": pem_key(cli_key)}
    for name, data in out.items():
        (tmp / f"{name}.pem").write_bytes(data)
    return out


# --- a small API server ---------------------------------------------------------------------------


class Api:
    """Answers like an apiserver: JSON, chunked for /chunked, Status objects for errors."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, str, dict[str, str], str]] = []  # method, path, headers, peer
        self.connections: set[int] = set()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                api.connections.add(self.client_address[1])
                peer = ""
                if isinstance(self.connection, ssl.SSLSocket) and self.connection.getpeercert():
                    peer = dict(x[0] for x in self.connection.getpeercert()["subject"])[
                        "commonName"]
                api.seen.append(("GET", self.path, dict(self.headers), peer))
                if self.path.startswith("/status/"):
                    code = int(self.path.split("/")[2])
                    return self._send(code, {"kind": "Status", "code": code,
                                             "message": f"nope {code}"})
                if self.path.startswith("/chunked"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    body = json.dumps({"items": [{"n": i} for i in range(500)]}).encode()
                    for i in range(0, len(body), 1000):
                        part = body[i:i + 1000]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return None
                if self.path.startswith("/html"):
                    data = b"<html><body>a captive portal</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                if self.path.startswith("/close"):
                    self.close_connection = True
                return self._send(200, {"path": self.path})

            def _send(self, code, doc):
                data = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def client(creds: auth.Credentials, **kw) -> KubeClient:
    kw = {"connect_timeout": 2, "request_timeout": 5, "rights_hint": "rights!", **kw}
    return KubeClient(creds, **kw)


@pytest.fixture()
def plain_api():
    api = Api()
    yield api
    api.stop()


# --- kubeconfig -----------------------------------------------------------------------------------


def write_kubeconfig(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_contexts_tokens_relative_files_and_inline_data(tmp_path):
    (tmp_path / "tok").write_text("file-token\n")
    kc = write_kubeconfig(tmp_path / "config", {
        "clusters": [{"name": "a", "cluster": {"server": "https://127.0.0.1:1/",
                                               "certificate-authority": "ca.pem"}},
                     {"name": "b", "cluster": {"server": "https://127.0.0.1:2",
                                               "certificate-authority-data": "Q0E=",
                                               "tls-server-name": "kube"}}],
        "users": [{"name": "t", "user": {"tokenFile": "tok"}},
                  {"name": "c", "user": {"client-certificate-data": "Q0VSVA==",
                                         "client-key-data": "S0VZ"}}],
        "contexts": [{"name": "one", "context": {"cluster": "a", "user": "t"}},
                     {"name": "two", "context": {"cluster": "b", "user": "c"}}],
        "current-context": "one"})
    one = auth.from_kubeconfig(str(kc), None, None)
    assert one.server == "https://127.0.0.1:1" and one.ca_file == str(tmp_path / "ca.pem")
    assert one.bearer() == "file-token"  # read from the file, relative to the kubeconfig
    two = auth.from_kubeconfig(str(kc), "two", None)
    assert (two.ca_data, two.cert_data, two.key_data) == ("Q0E=", "Q0VSVA==", "S0VZ")
    assert two.tls_server_name == "kube" and two.bearer() is None
    with pytest.raises(UsageError, match="no context 'three'"):
        auth.from_kubeconfig(str(kc), "three", None)


@pytest.mark.parametrize("user, message", [
    ({"auth-provider": {"name": "oidc"}}, "auth-provider"),
    ({"token": "x"}, None)])
def test_auth_provider_is_refused_with_a_hint(tmp_path, user, message):
    kc = write_kubeconfig(tmp_path / "config", {
        "clusters": [{"name": "a", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "a", "user": "u"}}],
        "current-context": "c"})
    if message is None:
        assert auth.from_kubeconfig(str(kc), None, None).token == "x"
        return
    with pytest.raises(UsageError, match=message) as err:
        auth.from_kubeconfig(str(kc), None, None)
    assert err.value.hint


def test_the_resolved_kubeconfig_is_cached_privately_until_the_file_changes(tmp_path,
                                                                           monkeypatch):
    doc = {"clusters": [{"name": "a", "cluster": {"server": "https://127.0.0.1:1"}}],
           "users": [{"name": "u", "user": {"token": "first"}}],
           "contexts": [{"name": "c", "context": {"cluster": "a", "user": "u"}}],
           "current-context": "c"}
    kc = write_kubeconfig(tmp_path / "config", doc)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    assert auth.from_kubeconfig(str(kc), None, cache).token == "first"
    files = list(cache.iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    real_read = auth._read_yaml
    monkeypatch.setattr(auth, "_read_yaml", lambda path: pytest.fail("read the YAML again"))
    assert auth.from_kubeconfig(str(kc), None, cache).token == "first"  # from the cache
    doc["users"][0]["user"]["token"] = "second-and-longer"
    write_kubeconfig(kc, doc)
    monkeypatch.setattr(auth, "_read_yaml", real_read)
    assert auth.from_kubeconfig(str(kc), None, cache).token == "second-and-longer"


# --- TLS ------------------------------------------------------------------------------------------


def test_cluster_ca_and_client_certificate_from_inline_data(tmp_path):
    pem = _pki(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server_key.pem")
    server_ctx.load_verify_locations(tmp_path / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # a client without the certificate is refused
    api = Api(server_ctx)
    b64 = {k: base64.b64encode(v).decode() for k, v in pem.items()}
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    try:
        creds = auth.Credentials(server=f"https://127.0.0.1:{api.port}", ca_data=b64["ca"],
                                 cert_data=b64["client"], key_data=b64["client_key"])
        answer = client(creds).call("GET", "/version", "get the version")
        assert answer == {"path": "/version"} and api.seen[-1][3] == "alice"
        stranger = auth.Credentials(server=f"https://127.0.0.1:{api.port}")  # system CAs
        with pytest.raises(InfrastructureError, match="unreachable .*CERTIFICATE_VERIFY"):
            client(stranger).call("GET", "/version", "get the version")
    finally:
        api.stop()
    after = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    assert not [n for n in after - before if n.startswith("wf-k8s-")]  # key files removed


# --- HTTP -----------------------------------------------------------------------------------------


def test_sized_and_chunked_answers_on_one_kept_connection(plain_api):
    api = client(auth.Credentials(server=f"http://127.0.0.1:{plain_api.port}", token="t0k"))
    seen = []
    api.observers.append(seen.append)
    assert api.call("GET", "/a b", "x", query={"labelSelector": "k in (a,b)"}) == {
        "path": "/a%20b?labelSelector=k+in+%28a%2Cb%29"}
    assert len(api.call("GET", "/chunked", "x")["items"]) == 500
    assert len(plain_api.connections) == 1  # kept alive
    assert plain_api.seen[0][2]["Authorization"] == "Bearer t0k"
    assert seen == ["GET /a%20b?labelSelector=k+in+%28a%2Cb%29", "GET /chunked"]
    api.call("GET", "/close", "x")  # the server closes after answering
    api.call("GET", "/again", "x")
    assert len(plain_api.connections) == 2


@pytest.mark.parametrize("code, error, text", [
    (403, InfrastructureError, "refused get it (HTTP 403): nope 403"),
    (422, UsageError, "Kubernetes refused get it (HTTP 422): nope 422"),
    (500, InfrastructureError, "failed get it (HTTP 500): nope 500"),
    (404, NotFoundError, "no such thing")])
def test_errors_are_one_line_with_the_status_message(plain_api, code, error, text):
    api = client(auth.Credentials(server=f"http://127.0.0.1:{plain_api.port}"))
    with pytest.raises(error) as err:
        api.call("GET", f"/status/{code}", "get it", missing="no such thing")
    assert text in str(err.value) and "\n" not in str(err.value)
    if code == 403:
        assert err.value.hint == "rights!"


def test_an_answer_that_is_not_json_is_one_line(plain_api):
    api = client(auth.Credentials(server=f"http://127.0.0.1:{plain_api.port}"))
    with pytest.raises(InfrastructureError, match="did not answer JSON to list pods .*portal"):
        api.call("GET", "/html", "list pods")


def test_a_black_hole_is_a_connect_timeout_over_tls(black_hole):
    creds = auth.Credentials(server=f"https://127.0.0.1:{black_hole}", insecure=True)
    t0 = time.monotonic()
    with pytest.raises(InfrastructureError, match=r"timed out \(connect, 1 s\)"):
        client(creds, connect_timeout=1).call("GET", "/x", "list pods")
    assert time.monotonic() - t0 < 3


def test_an_answer_that_never_comes_is_a_request_timeout():
    """TCP accepted and the request read, but no answer: the whole-exchange deadline."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    try:
        creds = auth.Credentials(server=f"http://127.0.0.1:{server.getsockname()[1]}")
        t0 = time.monotonic()
        with pytest.raises(InfrastructureError, match=r"timed out \(request, 1 s\)"):
            client(creds, request_timeout=1).call("GET", "/x", "list pods")
        assert time.monotonic() - t0 < 3
    finally:
        server.close()


def test_a_refused_port_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(InfrastructureError, match="is unreachable .*refused"):
        client(auth.Credentials(server=f"https://127.0.0.1:{port}", insecure=True)).call(
            "GET", "/x", "list pods")


def test_an_exec_plugin_token_is_sent(plain_api, tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text("import json, os\n"
                      "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
                      "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': "
                      "'ExecCredential', 'status': {'token': 'from-' + os.environ['WHO']}}))\n")
    exec_section = {"apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": sys.executable, "args": [str(plugin)],
                    "env": [{"name": "WHO", "value": "plugin"}]}
    creds = auth.Credentials(server=f"http://127.0.0.1:{plain_api.port}",
                             exec_json=json.dumps(exec_section))
    client(creds).call("GET", "/x", "x")
    assert plain_api.seen[-1][2]["Authorization"] == "Bearer from-plugin"
    exec_section["args"] = ["-c", "import sys; sys.exit('no login')"]
    broken = auth.Credentials(server=creds.server, exec_json=json.dumps(exec_section))
    with pytest.raises(UsageError, match="exec plugin .* failed .*no login"):
        client(broken).call("GET", "/x", "x")


def test_a_refresh_loads_no_yaml_template_schema_or_http_client(plain_api, tmp_path):
    """What keeps `status` and `list` fast: the second run reads the cached kubeconfig, and
    nothing heavier than ssl is imported on the way to the request."""
    import subprocess

    kc = write_kubeconfig(tmp_path / "config", {
        "clusters": [{"name": "a", "cluster": {"server": f"http://127.0.0.1:{plain_api.port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "a", "user": "u"}}],
        "current-context": "c"})
    code = ("import sys\nfrom pathlib import Path\n"
            "from warpforge_launch.schedulers.kubernetes import KubernetesConfig, "
            "KubernetesScheduler\n"
            f"s = KubernetesScheduler('k8s', KubernetesConfig(kubeconfig={str(kc)!r}, "
            f"output_claim='out'), home=Path({str(tmp_path)!r}))\n"
            "assert s.statuses(['k8s-warpforge-1a2b3c4d']) == {}\n"
            "heavy = {'yaml', 'jinja2', 'jsonschema', 'kubernetes_validate',\n"
            "         'lightkube', 'httpx', 'pydantic', 'threading',\n"
            "         'warpforge_launch.schedulers.kubernetes_manifest'}\n"
            "print(sorted(heavy & set(sys.modules)))\n")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr + runs[1].stderr
    assert runs[1].stdout.strip() == "[]"  # the first run parsed the kubeconfig's YAML
    assert [p for _, p, _, _ in plain_api.seen][-1].startswith(
        "/apis/batch/v1/namespaces/warpforge/jobs?labelSelector=")


def test_a_job_create_whose_answer_is_lost_still_gets_its_secret(tmp_path):
    """The apiserver made the Job but the answer never came: the submit finds the Job (by
    its correlation label) and sends the owned Secret, so no pod waits for a Secret forever."""
    from warpforge_launch.inputs import parse_inputs
    from warpforge_launch.jobs import JobDefinition, JobSubmission
    from warpforge_launch.schedulers.kubernetes import KubernetesConfig, KubernetesScheduler

    made: dict[str, dict] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            made[doc["kind"]] = doc
            if doc["kind"] == "Job":
                doc["metadata"]["uid"] = "uid-1"
                self.close_connection = True  # made, but the answer is lost
                return
            self._json(201, doc)

        def do_GET(self):
            self._json(200, made["Job"]) if "Job" in made else self._json(404, {})

        def _json(self, code, doc):
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kc = write_kubeconfig(tmp_path / "config", {
            "clusters": [{"name": "a", "cluster": {
                "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "a", "user": "u"}}],
            "current-context": "c"})
        model = tmp_path / "mlp.py"
        model.write_text("class SimpleMLP: pass\n")
        sched = KubernetesScheduler("k8s", KubernetesConfig(kubeconfig=str(kc),
                                                            output_claim="out"), home=tmp_path)
        plan = sched.plan(JobSubmission.new(JobDefinition(
            name="mlp", source=str(model), model_class="SimpleMLP",
            inputs=parse_inputs("[(1, 8)]"))))
        assert sched.execute(plan).native_id == plan.native_id
        owner, = made["Secret"]["metadata"]["ownerReferences"]
        assert (owner["name"], owner["uid"]) == (plan.native_id, "uid-1")
        assert [r.split("?")[0].split("/")[-1] for r in sched.requests] == [
            "jobs", plan.native_id, "secrets"]
        sched.close()
    finally:
        server.shutdown()
        server.server_close()


# --- a trickling apiserver ------------------------------------------------------------------------


@pytest.fixture()
def trickler(tmp_path):
    """A TLS listener that answers ``HTTP/1.1 200 OK`` and then one header line every 0.2 s,
    for ever: every read is short, so only a deadline for the whole exchange ends it
    (http.client alone gives up after 100 headers, 20 s here)."""
    _pki(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server_key.pem")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def trickle(conn):
        try:
            with tls.wrap_socket(conn, server_side=True) as s:
                s.recv(65536)
                s.sendall(b"HTTP/1.1 200 OK\r\n")
                for i in range(1000):
                    if stop.wait(0.2):
                        return
                    s.sendall(f"X-Trickle-{i}: x\r\n".encode())
        except OSError:
            pass

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    stop.set()
    server.close()


@pytest.mark.parametrize("one_shot", [False, True], ids=["kept-connection", "lean-status"])
def test_a_trickling_apiserver_is_cut_at_the_request_timeout(trickler, one_shot):
    creds = auth.Credentials(server=f"https://127.0.0.1:{trickler}", insecure=True)
    api = client(creds, request_timeout=1, one_shot=one_shot)
    t0 = time.monotonic()
    with pytest.raises(InfrastructureError, match=r"timed out \(request, 1 s\)"):
        api.call("GET", "/api/v1/nodes", "list nodes")
    assert time.monotonic() - t0 < 2.5


def test_commands_against_a_trickling_apiserver_end_at_the_request_timeout(
        trickler, tmp_path, monkeypatch, capsys):
    """cluster-info, status (the full path, and the lean one without the job model) and
    submit: exit 3 within request_timeout (submit: its create, then one lookup for a Job
    the lost answer may have made)."""
    from tests.testlab.builders import inventory
    from warpforge_launch.cli import main
    from warpforge_launch.schedulers import kubernetes_watch as kw

    monkeypatch.setenv("WARPFORGE_HOME", str(tmp_path / "home"))
    kc = write_kubeconfig(tmp_path / "config", {
        "clusters": [{"name": "a", "cluster": {"server": f"https://127.0.0.1:{trickler}",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "a", "user": "u"}}],
        "current-context": "c"})
    config = {"type": "kubernetes", "kubeconfig": str(kc), "output_claim": "out",
              "connect_timeout": 1, "request_timeout": 1}
    inv = str(inventory(tmp_path / "inv.yaml", {"k8s": config}, default="k8s"))
    model = tmp_path / "mlp.py"
    model.write_text("class SimpleMLP: pass\n")
    for argv, limit in ((["cluster-info"], 2.5), (["status", "k8s-warpforge-1a2b3c4d"], 2.5),
                        (["submit", "--source", str(model), "--class", "SimpleMLP",
                          "--inputs", "[(1, 8)]"], 3.5)):
        t0 = time.monotonic()
        rc = main([*argv, "--inventory", inv])
        took = time.monotonic() - t0
        err = capsys.readouterr().err
        assert rc == 3 and took < limit, (argv, rc, took, err)
        assert err.startswith("error: Kubernetes API at https://127.0.0.1:") and \
            "timed out (request, 1 s)" in err, err
    t0 = time.monotonic()
    with pytest.raises(InfrastructureError, match=r"timed out \(request, 1 s\)"):
        kw.live_statuses("k8s", {**config, "in_cluster": False, "context": None,
                                 "namespace": "warpforge"}, str(tmp_path / "home"),
                         ["warpforge-1a2b3c4d"])
    assert time.monotonic() - t0 < 2.5
