"""One warm HTTP/1.1 connection to a Ray dashboard, with deadlines and one-line errors.

Why the standard library's ``http.client`` and not httpx: a ``status`` command is one GET,
and importing httpx (which also loads rich, click and pygments through its command-line
entry point) costs about 100 ms more on the CLI's path than ``http.client`` - more than the
whole budget of the command. The connection is kept alive and reused by every call of a
scheduler instance (``submit --wait`` polls, ``cancel`` loops).

Every call has a deadline: ``connect_timeout`` for the TCP connect and ``request_timeout``
for the whole exchange after it, enforced by closing the socket, so a dashboard that accepts
and never answers (or trickles bytes) gives exit 3 in time, never a hang.

A ``one_shot`` client (`status` of live jobs: a GET or a few) sends each GET on a fresh
connection through ``warpforge_launch.httpget`` and never imports ``http.client``, whose
import costs more than the request.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Mapping

from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError
from warpforge_launch.httpget import server_address
from warpforge_launch.schedulers.ray_parse import one_line, reduce_ray_error

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: `status` goes without importing typing
    from typing import Any

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# a kept-alive connection the server closed (http.client's RemoteDisconnected is one)
_DROPPED = (ConnectionResetError, BrokenPipeError)
STALE_AFTER_S = 4.0  # a POST never goes out on a connection idle this long (server may close)


class RayHttpError(LaunchError):
    """Ray answered with an HTTP error; ``detail`` is its reduced one-line text."""

    def __init__(self, message: str, status: int, detail: str, **kw):
        super().__init__(message, **kw)
        self.status = status
        self.detail = detail


class RayServerError(RayHttpError, InfrastructureError):
    """HTTP 5xx: the cluster failed, not the request (exit 3)."""


class RayRejected(RayHttpError, UsageError):
    """HTTP 4xx: Ray refused what we asked (exit 2)."""


class RayClient:
    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        request_timeout: float,
        headers: Mapping[str, str] | None = None,
        hint: str = "is the Ray head up?",
        one_shot: bool = False,
    ) -> None:
        scheme, host, port, path = server_address(base_url)
        self.base_url = base_url.rstrip("/")
        self._https = scheme == "https"
        self._host = host or "localhost"
        self._port = port or (443 if self._https else 80)
        self._prefix = path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.headers = {"Accept": "application/json", "User-Agent": "warpforge-launch",
                        **(headers or {})}
        self.hint = hint
        self.observers: list[Callable[[str, str], None]] = []  # (method, path) per request
        self.one_shot = one_shot
        self._conn = None  # http.client.HTTPConnection
        self._idle_since = 0.0

    # --- the one public call ---------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        not_found: LaunchError | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """Decoded JSON ({} for an empty answer); None for a 404 with ``missing_ok``."""
        headers = dict(self.headers)
        body = content
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif content is not None:
            headers["Content-Type"] = "application/octet-stream"
        status, data = self._exchange(method, path, body, headers)
        text = data.decode("utf-8", errors="replace")
        if status == 404 and missing_ok:
            return None
        if status == 404 and not_found is not None:
            raise not_found
        if status >= 400:
            detail = reduce_ray_error(text)
            what = f"{method} {path} (HTTP {status}): {detail}"
            if status in (401, 403):
                raise RayServerError(f"Ray dashboard at {self.base_url} refused {what}",
                                     status, detail, hint="check the scheduler's auth_header")
            if status >= 500:
                raise RayServerError(f"Ray at {self.base_url} failed {what}", status, detail,
                                     hint=self.hint)
            raise RayRejected(f"Ray rejected {what}", status, detail)
        if not data.strip():
            return {}
        try:
            return json.loads(text)
        except ValueError:
            raise InfrastructureError(
                f"{self.base_url}{path} did not answer JSON (is it a Ray dashboard?): "
                f"{one_line(text)[:120]}", hint=self.hint) from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- transport -------------------------------------------------------------------------

    def _exchange(self, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, bytes]:
        for observe in self.observers:
            observe(method, path)
        if self.one_shot and method == "GET" and body is None:
            return self._get_once(path, headers)
        reused = self._conn is not None
        if reused and method not in IDEMPOTENT and \
                time.monotonic() - self._idle_since > STALE_AFTER_S:
            self.close()
            reused = False
        while True:
            try:
                return self._once(method, path, body, headers)
            except _DROPPED:
                # a kept-alive connection the server had closed: retry once on a fresh one
                self.close()
                if not (reused and method in IDEMPOTENT):
                    raise self._unreachable(method, path, "connection closed by the server"
                                            ) from None
                reused = False

    def _get_once(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        from warpforge_launch import httpget

        tls = None
        if self._https:
            import ssl

            tls = ssl.create_default_context()
        try:
            return httpget.get(self._host, self._port, self._prefix + path, headers,
                               connect_timeout=self.connect_timeout,
                               timeout=self.request_timeout, tls=tls)
        except httpget.Timeout as exc:
            raise self._timed_out("GET", path, exc.phase) from None
        except httpget.Failed as exc:
            raise self._unreachable("GET", path, one_line(str(exc))) from None

    def _once(self, method: str, path: str, body: bytes | None,
              headers: dict[str, str]) -> tuple[int, bytes]:
        import http.client

        conn = self._connect(method, path)
        fired = threading.Event()

        def cut() -> None:  # the whole-exchange deadline: unblocks a read that never ends
            fired.set()
            if conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.request_timeout, cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except _DROPPED:
            if fired.is_set():
                self.close()
                raise self._timed_out(method, path, "request") from None
            raise
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            self.close()
            if fired.is_set() or isinstance(exc, TimeoutError):
                raise self._timed_out(method, path, "request") from None
            raise self._unreachable(method, path, one_line(str(exc)) or type(exc).__name__
                                    ) from None
        finally:
            watchdog.cancel()
        if fired.is_set():
            self.close()
            raise self._timed_out(method, path, "request")
        if response.will_close:
            self.close()
        self._idle_since = time.monotonic()
        return response.status, data

    def _connect(self, method: str, path: str):
        import http.client

        if self._conn is not None:
            return self._conn
        if self._https:
            import ssl

            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.connect_timeout,
                context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port,
                                              timeout=self.connect_timeout)
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise self._timed_out(method, path, "connect") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._unreachable(method, path, one_line(str(exc)) or type(exc).__name__,
                                    not_sent=True) from None
        conn.sock.settimeout(self.request_timeout)
        self._conn = conn
        return conn

    def _timed_out(self, method: str, path: str, phase: str) -> InfrastructureError:
        limit = self.connect_timeout if phase == "connect" else self.request_timeout
        return InfrastructureError(
            f"Ray dashboard at {self.base_url} timed out ({phase}, {limit:g} s): {method} {path}",
            hint=self.hint, not_sent=phase == "connect")

    def _unreachable(self, method: str, path: str, why: str, *, not_sent: bool = False
                     ) -> InfrastructureError:
        """``not_sent``: the connection failed, so no request went out."""
        return InfrastructureError(
            f"Ray dashboard at {self.base_url} is unreachable ({method} {path}): {why}",
            hint=self.hint, not_sent=not_sent)


def client_for(instance: str, config: Any, one_shot: bool = False) -> RayClient:
    """The client of one Ray scheduler instance; ``config`` is its settings with attribute
    access (a RayConfig, or a namespace of the config a job was stored with)."""
    headers = {}
    if config.auth_header:
        name, _, value = config.auth_header.partition(":")
        headers[name.strip()] = auth_value(instance, value.strip())
    return RayClient(config.dashboard_url, connect_timeout=config.connect_timeout,
                     request_timeout=config.request_timeout, headers=headers,
                     hint=f"is the Ray head up? check schedulers.{instance}.dashboard_url",
                     one_shot=one_shot)


def auth_value(instance: str, template: str) -> str:
    """``${VAR}`` in auth_header comes from the environment at call time, so tokens stay
    out of the inventory and out of the job store (which keeps each job's config)."""
    import os
    import string

    try:
        value = string.Template(template).substitute(os.environ)
    except KeyError as exc:
        raise UsageError(
            f"schedulers.{instance}.auth_header names ${{{exc.args[0]}}}, which is not set",
            hint=f"export {exc.args[0]}",
        ) from None
    except ValueError:
        raise UsageError(
            f"schedulers.{instance}.auth_header has a stray '$' (write $$ for a '$')"
        ) from None
    if any(c in value for c in "\r\n\0"):
        raise UsageError(f"schedulers.{instance}.auth_header: the value holds a line break")
    return value


# `status` asks for a few ids one by one (what `curl` of one job costs); more in one list
FEW_JOBS = 4


def job_record(client: RayClient, sid: str, not_found: LaunchError | None = None
               ) -> dict | None:
    """One submission's record; None when Ray does not know it (or ``not_found`` raised)."""
    job = client.call("GET", f"/api/jobs/{sid}", not_found=not_found,
                      missing_ok=not_found is None)
    if job is not None and not isinstance(job, dict):
        raise InfrastructureError(f"Ray at {client.base_url} answered /api/jobs/{sid} with "
                                  f"{type(job).__name__}, not a job record", hint=client.hint)
    return job


def all_jobs(client: RayClient) -> list[dict]:
    """Every submission Ray keeps: ONE ``GET /api/jobs/``."""
    jobs = client.call("GET", "/api/jobs/")
    if not isinstance(jobs, list):
        raise InfrastructureError(f"Ray at {client.base_url} answered /api/jobs/ with "
                                  f"{type(jobs).__name__}, not a list", hint=client.hint)
    return jobs


def jobs_by_id(client: RayClient, sids: list[str], one_by_one: bool = False
               ) -> dict[str, dict]:
    """Ray's records of the submissions ``sids`` it knows: ONE ``GET /api/jobs/`` (a
    refresh of many jobs, a sweep's), or with ``one_by_one`` one GET per id (the list's
    size grows with the cluster's history, not with the question)."""
    from warpforge_launch.schedulers.ray_parse import submissions

    if one_by_one:
        found = {sid: job_record(client, sid) for sid in dict.fromkeys(sids)}
        return {sid: job for sid, job in found.items() if job is not None}
    wanted = set(sids)
    return {sid: job for sid, job in submissions(all_jobs(client)) if sid in wanted}


_LIVE_KEYS = ("dashboard_url", "connect_timeout", "request_timeout", "auth_header")


def live_statuses(instance: str, config: dict[str, Any], home: str,
                  natives: list[str]) -> dict[str, dict[str, Any]] | None:
    """JobStatus fields by submission id for the jobs Ray knows, without the job model (the
    `status` path). None when the stored config or an id is not what the scheduler takes."""
    from types import SimpleNamespace

    from warpforge_launch.schedulers.ray_parse import status_fields, valid_submission_id

    if any(k not in config for k in _LIVE_KEYS) or not all(map(valid_submission_id, natives)):
        return None
    client = client_for(instance, SimpleNamespace(**{k: config[k] for k in _LIVE_KEYS}),
                        one_shot=True)
    try:
        found = jobs_by_id(client, natives, one_by_one=len(set(natives)) <= FEW_JOBS)
        return {sid: status_fields(job) for sid, job in found.items()}
    finally:
        client.close()
