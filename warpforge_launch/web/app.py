"""The ASGI app behind `warpforge-launch serve`: the page, its static files and the JSON API.

Safe by default: the guard below checks the token (when one is set) on every request, refuses
Host headers other than the bind address when no token is set (a page on another site cannot
read the API through DNS rebinding), and adds headers that forbid inline scripts, framing and
sniffing. Every asset is served from the package: the lab has no internet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

STATIC = Path(__file__).parent / "static"
COOKIE = "wf_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8700
    token: str | None = None
    allow_cancel: bool = False
    inventory: str | None = None
    store: Path | None = None  # default: the job store under $WARPFORGE_HOME
    refresh_interval: float = 2.0  # seconds between refresh cycles; 0: no refresher thread
    smoke_junit: Path | None = Path("reports/smoke-junit.xml")
    probe_ttl: float = 5.0
    release_ttl: float = 30.0
    ssh_timeout: float = 5.0  # connect, banner, auth and command, each, for a release read


class Guard:
    """Token, Host check, security headers and a Server-Timing header, as plain ASGI."""

    def __init__(self, app, token: str | None, allowed_hosts: set[str] | None):
        self.app, self.token, self.allowed_hosts = app, token, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        api = scope["path"].startswith("/api/")
        if self.allowed_hosts is not None and _hostname(headers.get("host", "")) \
                not in self.allowed_hosts:
            return await _plain(send, 421, "unexpected Host header", api)
        if self.token is not None:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                              keep_blank_values=True)
            given = [v for k, v in query if k == "token"]
            if given and scope["method"] == "GET" and not api and self._ok(given[-1]):
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                return await _redirect(send, scope["path"] + ("?" + rest if rest else ""),
                                       self.token)
            if not self._authorized(headers):
                return await _plain(send, 401, "token required: open the address `serve` "
                                    "printed, with ?token=...", api)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000
                message["headers"] = [*message.get("headers", []), *_HEADERS,
                                      (b"server-timing", f"app;dur={ms:.2f}".encode())]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self._ok(auth[7:].strip()):
            return True
        if "x-warpforge-token" in headers and self._ok(headers["x-warpforge-token"]):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and self._ok(value):
                return True
        return False


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _plain(send, status: int, text: str, as_json: bool) -> None:
    import json

    body = json.dumps({"error": text}).encode() if as_json else (text + "\n").encode()
    ctype = b"application/json" if as_json else b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"cache-control", b"no-store"),
                            *_HEADERS]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send, location: str, token: str) -> None:
    """First visit with ?token=: keep it in a cookie and drop it from the address bar."""
    cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                            (b"cache-control", b"no-store"), *_HEADERS]})
    await send({"type": "http.response.body", "body": b""})


def allowed_hosts(settings: Settings) -> set[str] | None:
    """Without a token only the bind address and loopback names may appear in Host."""
    if settings.token is not None:
        return None
    return {settings.host, *LOOPBACK_NAMES}


def create_app(settings: Settings, inventory=None):
    """The app; `inventory` defaults to the one `settings.inventory` names."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from warpforge_launch import inventory as inventories
    from warpforge_launch.web import api
    from warpforge_launch.web.jobs import Launchers, Refresher, Results
    from warpforge_launch.web.lab import Lab

    inv = inventory if inventory is not None else inventories.load(settings.inventory)
    launchers = Launchers(settings.inventory, settings.store)
    refresher = Refresher(launchers, settings.refresh_interval)
    lab = Lab(inv, settings.smoke_junit, probe_ttl=settings.probe_ttl,
              release_ttl=settings.release_ttl, ssh_timeout=settings.ssh_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        refresher.start()
        try:
            yield
        finally:
            refresher.stop()
            lab.close()
            launchers.close()

    def index(request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/meta", api.meta),
        Route("/api/boxes", api.boxes),
        Route("/api/jobs", api.job_list),
        Route("/api/jobs/{job_id:str}", api.job_detail),
        Route("/api/jobs/{job_id:str}/logs", api.job_logs),
        Route("/api/jobs/{job_id:str}/cancel", api.job_cancel, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: api.not_found, 405: api.not_found}, middleware=[
        Middleware(Guard, token=settings.token, allowed_hosts=allowed_hosts(settings))])
    app.state.settings = settings
    app.state.inventory = inv
    app.state.launchers = launchers
    app.state.refresher = refresher
    app.state.results = Results()
    app.state.lab = lab
    return app
