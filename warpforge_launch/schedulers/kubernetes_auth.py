"""Credentials and the TLS context for one Kubernetes cluster, with the standard library.

A kubeconfig is YAML, and parsing it (plus importing a YAML library) would cost a ``status``
more than its whole request. The context it names is resolved once into plain JSON and cached
under ``$WARPFORGE_HOME/cache/kubernetes/`` (0600 files in a 0700 directory, like the
kubeconfig itself they hold a token or a key), keyed by the file's path, context, mtime, size
and inode: an edited kubeconfig is read again. Handled: bearer tokens (inline or ``tokenFile``),
client certificates and keys (files or inline data), basic auth, the cluster CA (file or inline
data), ``insecure-skip-tls-verify``, ``tls-server-name``, exec credential plugins (run on first
use, as kubectl does) and the in-cluster service account. ``auth-provider`` entries (the
removed gcp/azure/oidc plugins) are refused with a hint, as lightkube and kubectl >= 1.26 do.
"""

from __future__ import annotations

import binascii  # crc32 as zlib has it; already loaded by ssl (base64), unlike zlib
import json
import os
from collections import namedtuple
from functools import lru_cache

from warpforge_launch.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: `status` goes without importing typing
    from typing import Any

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"  # os.path: no pathlib import
CACHE_VERSION = 1


class Credentials(namedtuple("Credentials", (
        "server", "ca_file", "ca_data", "insecure", "tls_server_name", "token", "token_file",
        "cert_file", "key_file", "cert_data", "key_data", "username", "password", "exec_json"),
        defaults=(None, None, False, *[None] * 10))):
    """What a request needs: where the apiserver is, how to trust it (ca_file, or ca_data:
    base64 of PEM as in a kubeconfig; insecure; tls_server_name), who we are (token or
    token_file, a client certificate as files or base64 data, username/password, or the
    exec plugin's section as JSON). A named tuple: hashable, and cheap to define on the
    `status` path."""

    __slots__ = ()

    def __repr__(self) -> str:  # never the token, password or key in a log or traceback
        return f"Credentials(server={self.server!r}, ...)"

    def bearer(self) -> str | None:
        if self.token_file:
            try:
                with open(self.token_file, encoding="utf-8") as fh:
                    return fh.read().strip()
            except OSError as exc:
                raise UsageError(f"token file {self.token_file} cannot be read: "
                                 f"{exc.strerror or exc}") from None
        return self.token


def kubeconfig_path(given: str | None) -> str:
    """The configured file, else the first of $KUBECONFIG, else ~/.kube/config."""
    path = given or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    return os.path.abspath(os.path.expanduser(path))


def from_kubeconfig(path: str, context: str | None,
                    cache_dir: str | os.PathLike | None) -> Credentials:
    """The credentials of ``context`` (default: current-context), from the cache when the
    file is unchanged."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"kubeconfig {path} cannot be read: {exc.strerror or exc}") from None
    stamp = [CACHE_VERSION, path, context, st.st_mtime_ns, st.st_size, st.st_ino]
    cached = _cache_file(cache_dir, stamp)
    if cached is not None:
        try:
            with open(cached, encoding="utf-8") as fh:
                doc = json.load(fh)
            if doc.get("stamp") == stamp:
                return Credentials(**doc["credentials"])
        except (OSError, ValueError, TypeError):
            pass
    creds = _resolve(_read_yaml(path), path, context)
    if cached is not None:
        _write_private(cached, json.dumps({"stamp": stamp,
                                           "credentials": creds._asdict()}))
    return creds


def in_cluster() -> Credentials:
    """The pod's service account (the token file is read again on every process start)."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
        "KUBERNETES_SERVICE_PORT", "443")
    token = os.path.join(SERVICE_ACCOUNT, "token")
    if not host or not os.path.isfile(token):
        raise UsageError("in_cluster is set but this is not a pod with a service account "
                         "(no KUBERNETES_SERVICE_HOST or token)")
    host = f"[{host}]" if ":" in host else host
    return Credentials(server=f"https://{host}:{port}",
                       ca_file=os.path.join(SERVICE_ACCOUNT, "ca.crt"), token_file=token)


def _read_yaml(path: str) -> Any:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise UsageError(f"kubeconfig {path} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"kubeconfig {path} is not valid YAML: "
                         f"{str(exc).splitlines()[0]}") from None


def _named(doc: dict, section: str, name: str, path: str) -> dict:
    for entry in doc.get(section) or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get(section[:-1]) or {}
    raise UsageError(f"kubeconfig {path} has no {section[:-1]} {name!r}")


def _resolve(doc: Any, path: str, context: str | None) -> Credentials:
    if not isinstance(doc, dict):
        raise UsageError(f"kubeconfig {path} is not a kubeconfig (no mapping)")
    name = context or doc.get("current-context")
    if not name:
        raise UsageError(f"kubeconfig {path} has no current-context",
                         hint="set context: in the scheduler's settings")
    ctx = _named(doc, "contexts", name, path)
    cluster = _named(doc, "clusters", ctx.get("cluster", ""), path)
    user = _named(doc, "users", ctx["user"], path) if ctx.get("user") else {}
    if not cluster.get("server"):
        raise UsageError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    if user.get("auth-provider"):
        raise UsageError(f"kubeconfig {path}: user {ctx.get('user')!r} uses an auth-provider, "
                         "which is not supported", hint="use an exec credential plugin")
    base = os.path.dirname(path)

    def file(value: Any) -> str | None:  # kubeconfig paths are relative to the file
        return os.path.join(base, os.path.expanduser(str(value))) if value else None

    exec_section = user.get("exec")
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=file(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        token=user.get("token"), token_file=file(user.get("tokenFile")),
        cert_file=file(user.get("client-certificate")), key_file=file(user.get("client-key")),
        cert_data=user.get("client-certificate-data"), key_data=user.get("client-key-data"),
        username=user.get("username"), password=user.get("password"),
        exec_json=json.dumps(exec_section, sort_keys=True) if exec_section else None)


def _cache_file(cache_dir: str | os.PathLike | None, stamp: list) -> str | None:
    if cache_dir is None:
        return None
    # the stamp inside the file is checked on read: a clash of names only costs a re-read
    return os.path.join(cache_dir,
                        f"kubeconfig-{binascii.crc32(json.dumps(stamp[:3]).encode()):08x}.json")


def _write_private(path: str, text: str) -> None:
    """Atomically, 0600 in a 0700 directory; a cache that cannot be written is skipped."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _pem(data: str, what: str) -> bytes:
    import base64

    try:
        return base64.b64decode(data, validate=False)
    except ValueError:
        raise UsageError(f"kubeconfig {what} is not base64") from None


@lru_cache(maxsize=8)
def ssl_context(creds: Credentials, exec_cert: tuple[str, str] | None = None):
    """One TLS context per cluster and identity: only the cluster's CA is loaded (as kubectl
    does), not the system store, unless the kubeconfig names no CA."""
    import ssl

    if creds.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif creds.ca_file or creds.ca_data:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            if creds.ca_file:
                ctx.load_verify_locations(cafile=creds.ca_file)
            else:
                ctx.load_verify_locations(cadata=_pem(creds.ca_data, "CA data").decode())
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise UsageError(f"the cluster CA cannot be loaded: {exc}") from None
    else:
        ctx = ssl.create_default_context()
    cert, key = creds.cert_file, creds.key_file
    if exec_cert or creds.cert_data or creds.key_data:
        # load_cert_chain reads files only: inline data goes through a private temp dir
        pem_cert = exec_cert[0].encode() if exec_cert else (
            _pem(creds.cert_data, "client certificate data") if creds.cert_data else None)
        pem_key = exec_cert[1].encode() if exec_cert else (
            _pem(creds.key_data, "client key data") if creds.key_data else None)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="wf-k8s-") as tmp:  # 0700
            if pem_cert is not None:
                cert = _private_file(os.path.join(tmp, "cert.pem"), pem_cert)
            if pem_key is not None:
                key = _private_file(os.path.join(tmp, "key.pem"), pem_key)
            _load_chain(ctx, cert, key)
    elif cert or key:
        _load_chain(ctx, cert, key)
    return ctx


def _private_file(path: str, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return str(path)


def _load_chain(ctx, cert: str | None, key: str | None) -> None:
    import ssl

    if not cert:
        raise UsageError("kubeconfig gives a client key but no client certificate")
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"the client certificate or key cannot be loaded: {exc}") from None


def run_exec_plugin(exec_json: str, timeout: float) -> dict[str, Any]:
    """An exec credential plugin's ExecCredential status (token, or certificate and key)."""
    import subprocess

    spec = json.loads(exec_json)
    api = spec.get("apiVersion") or "client.authentication.k8s.io/v1beta1"
    command = spec.get("command")
    if not command:
        raise UsageError("kubeconfig exec plugin has no command")
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in spec.get("env") or () if "name" in e})
    env["KUBERNETES_EXEC_INFO"] = json.dumps({"apiVersion": api, "kind": "ExecCredential",
                                              "spec": {"interactive": False}})
    try:
        done = subprocess.run([command, *(spec.get("args") or ())], env=env,
                              capture_output=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"kubeconfig exec plugin {command!r} could not run: {exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise UsageError(f"kubeconfig exec plugin {command!r} failed "
                         f"(exit {done.returncode}): {why[0]}")
    try:
        status = json.loads(done.stdout)["status"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"kubeconfig exec plugin {command!r} did not print an "
                         "ExecCredential") from None
    if not (status.get("token") or (status.get("clientCertificateData")
                                    and status.get("clientKeyData"))):
        raise UsageError(f"kubeconfig exec plugin {command!r} gave neither a token nor a "
                         "client certificate")
    return status
