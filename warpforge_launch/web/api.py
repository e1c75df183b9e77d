"""The JSON API under /api/: what the page itself uses, and what scripts can call.

Endpoints are plain functions (Starlette runs them in its thread pool); each reads the job
store through its thread's own Launcher. Errors are JSON `{"error": "..."}` with a status
that says whose fault it was (400 bad input, 403 not allowed, 404 unknown, 503 backend down).
"""

from __future__ import annotations

from typing import Any

from warpforge_launch import __version__
from warpforge_launch.errors import InfrastructureError, LaunchError, NotFoundError, UsageError
from warpforge_launch.jobs import JobState
from warpforge_launch.web import jobs as views

MAX_LIMIT = 500
STATES = [s.value for s in JobState]


def _json(data: Any, status: int = 200):
    from starlette.responses import JSONResponse

    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def error(message: str, status: int):
    return _json({"error": message}, status)


def _job_id(request) -> str:
    """The job id of the path, checked as the CLI checks it (a bad one is 400, not 404)."""
    from warpforge_launch.jobs import check_job_id

    return check_job_id(request.path_params["job_id"])


def not_found(request, exc):
    """Starlette's 404/405 for a path no route serves: JSON under /api, as every API answer."""
    from starlette.responses import PlainTextResponse

    if request.url.path.startswith("/api/"):
        return error(exc.detail, exc.status_code)
    return PlainTextResponse(exc.detail, exc.status_code)


def _launch_error(e: LaunchError):
    if isinstance(e, NotFoundError):
        return error(str(e), 404)
    if isinstance(e, UsageError):
        return error(str(e), 400)
    if isinstance(e, InfrastructureError):
        return error(str(e), 503)
    return error(str(e), 502)


def _words(request, name: str) -> list[str]:
    """A filter given as ?x=a&x=b or ?x=a,b."""
    return [w.strip() for v in request.query_params.getlist(name) for w in v.split(",")
            if w.strip()]


def _int(request, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be an integer, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise UsageError(f"{name} must be within {low}-{high}" if high is not None
                         else f"{name} must be >= {low}, not {value}")
    return value


def meta(request):
    s = request.app.state.settings
    inv = request.app.state.inventory
    return _json({"version": __version__, "allow_cancel": s.allow_cancel,
                  "refresh_interval": s.refresh_interval, "states": STATES,
                  "schedulers": sorted(inv.schedulers), "inventory": inv.describe(),
                  "default_scheduler": inv.default_scheduler})


def boxes(request):
    lab = request.app.state.lab
    return _json({"boxes": lab.boxes(), "registry": lab.registry(),
                  "smoke_report": str(lab.smoke_junit) if lab.smoke_junit else None})


def job_list(request):
    try:
        states = [s.upper() for s in _words(request, "state")]
        unknown = [s for s in states if s not in STATES]
        if unknown:
            raise UsageError(f"unknown state {unknown[0]!r} (known: {', '.join(STATES)})")
        limit = _int(request, "limit", 50, 1, MAX_LIMIT)
        offset = _int(request, "offset", 0, 0)
    except UsageError as e:
        return error(str(e), 400)
    app = request.app.state
    launcher = app.launchers.get()
    records, total = launcher.store.page(states, _words(request, "scheduler"), limit, offset)
    refresher = app.refresher
    return _json({"jobs": [views.summary(r) for r in records], "total": total, "limit": limit,
                  "offset": offset, "backend_errors": dict(refresher.errors),
                  "refreshed_at": refresher.last_cycle.isoformat()
                  if refresher.last_cycle else None})


def job_detail(request):
    app = request.app.state
    launcher = app.launchers.get()
    try:
        r = launcher.store.get(_job_id(request))
    except LaunchError as e:
        return _launch_error(e)
    plan = r.plan or {}
    return _json({**views.summary(r), "correlation_id": r.correlation_id,
                  "definition": views.definition(r),
                  "plan": {"kind": plan.get("kind"), "argv": plan.get("argv") or []},
                  "timeline": views.timeline(r),
                  "result": app.results.get(launcher, r),
                  "can_cancel": app.settings.allow_cancel and not r.state.terminal})


def job_logs(request):
    try:
        offset = _int(request, "offset", 0, 0)
        return _json(views.logs_since(request.app.state.launchers.get(), _job_id(request),
                                      offset))
    except LaunchError as e:
        return _launch_error(e)


def job_cancel(request):
    app = request.app.state
    if not app.settings.allow_cancel:
        return error("this dashboard is read-only: start `warpforge-launch serve` with "
                     "--allow-cancel to cancel jobs from it", 403)
    if request.headers.get("x-warpforge-action") != "cancel":
        # a cross-site form cannot set this header: no cancel by a page the user visits
        return error("cancel needs the header X-Warpforge-Action: cancel", 403)
    launcher = app.launchers.get()
    try:
        job_id = _job_id(request)
        launcher.store.get(job_id)  # only jobs of the store: the page never routes by guess
        cancelled, status = launcher.cancel(job_id)
    except LaunchError as e:
        return _launch_error(e)
    app.refresher.poke()
    return _json({"job_id": job_id, "cancelled": cancelled, "state": status.state.value,
                  "message": status.message})
