"""The lab tasks' bodies: inventory -> boxes -> options -> work -> report -> exit code.

tasks.py wraps each in a few lines; tests call these directly (or run invoke in a process).
Every function returns the exit code: 0 ok, 1 work failed, 2 bad input, 3 unreachable.
"""

from __future__ import annotations

import sys
from pathlib import Path

from warpforge_launch.errors import LaunchError, UsageError


def _inventory(inventory: str | None):
    from warpforge_launch import inventory as inv_mod

    return inv_mod.load(inventory or None)


def _selectors(boxes: str) -> list[str]:
    return [s.strip() for s in (boxes or "").split(",") if s.strip()]


def _dist_options(inv, *, keep=None, accept_new=False, verify=False, parallel=None):
    from warpforge_launch.lab.distribute import Options
    from warpforge_launch.lab.remote import Timeouts

    lab = inv.lab
    t = Timeouts(connect=lab.connect_timeout, banner=max(lab.connect_timeout, 10.0),
                 command=lab.command_timeout)
    return Options(keep=int(keep) if keep else lab.keep_releases, lock_wait=lab.lock_wait,
                   parallel=int(parallel) if parallel else lab.parallel, verify_all=verify,
                   timeouts=t, host_key_policy="accept-new" if accept_new else None)


def dist_dir(inv, dist: str | None) -> Path:
    """--dist > DIST_DIR_OVERRIDE (applied by the inventory) > build.dist_dir under source."""
    if dist:
        return Path(dist).expanduser()
    d = Path(inv.build.dist_dir).expanduser()
    return d if d.is_absolute() else Path(inv.build.source).expanduser() / d


def _guard(fn):
    """One line on stderr (+ hint) for a LaunchError, and its exit code."""
    def wrapper(*args, **kwargs) -> int:
        try:
            return fn(*args, **kwargs)
        except LaunchError as e:
            print(f"error: {e}", file=sys.stderr)
            if e.hint:
                print(f"hint: {e.hint}", file=sys.stderr)
            return e.exit_code
    wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
    return wrapper


@_guard
def wake(*, boxes="", inventory="", send=True, timeout=None, interval=None,
         as_json=False) -> int:
    """Wake the selected boxes and wait for SSH; 0 if all are up, else 3."""
    from warpforge_launch.lab import report
    from warpforge_launch.lab import wake as wake_mod

    inv = _inventory(inventory)
    selected = inv.select_boxes(_selectors(boxes))
    timeout = check_positive("--timeout", timeout or inv.lab.wake_timeout)
    poll = check_positive("--interval", interval or inv.lab.wake_interval)
    spinner = report.WakeProgress(timeout) if sys.stderr.isatty() and not as_json else None
    if spinner:
        with spinner:
            results = wake_mod.wake(selected, send=send, timeout=timeout, poll=poll,
                                    parallel=inv.lab.parallel, on_attempt=spinner)
    else:
        results = wake_mod.wake(selected, send=send, timeout=timeout, poll=poll,
                                parallel=inv.lab.parallel)
    report.print_json(results) if as_json else report.wake_table(results)
    return 0 if all(r.reachable for r in results) else 3


@_guard
def distribute(*, boxes="", inventory="", dist="", keep=None, accept_new=False, verify=False,
               as_json=False) -> int:
    """Push the dist to the selected boxes (atomic, incremental, parallel)."""
    from warpforge_launch.lab import distribute as dist_mod
    from warpforge_launch.lab import report

    inv = _inventory(inventory)
    selected = inv.select_boxes(_selectors(boxes))
    opts = _dist_options(inv, keep=keep, accept_new=accept_new, verify=verify)
    bars = None if as_json else report.progress_for_terminal()
    if bars:
        with bars:
            results = dist_mod.distribute(selected, dist_dir(inv, dist), opts=opts,
                                          progress=bars)
    else:
        results = dist_mod.distribute(selected, dist_dir(inv, dist), opts=opts)
    report.print_json(results) if as_json else report.distribute_table(results)
    return dist_mod.exit_code(results)


@_guard
def rollback(*, boxes="", inventory="", to="", accept_new=False, as_json=False) -> int:
    """Switch the selected boxes back to their previous release (or --to a named one)."""
    from warpforge_launch.lab import distribute as dist_mod
    from warpforge_launch.lab import report

    inv = _inventory(inventory)
    selected = inv.select_boxes(_selectors(boxes))
    results = dist_mod.rollback(selected, opts=_dist_options(inv, accept_new=accept_new),
                                to=to or None)
    report.print_json(results) if as_json else report.distribute_table(results, "rollback")
    return dist_mod.exit_code(results)


@_guard
def smoke(*, boxes="", inventory="", dist="", checks="", junit="reports/smoke-junit.xml",
          accept_new=False, as_json=False) -> int:
    """dist check -> wake (WAKE_BOXES) -> wait -> distribute -> verify; 1 if any box FAILED."""
    import dataclasses

    from warpforge_launch.lab import report
    from warpforge_launch.lab import smoke as smoke_mod

    inv = _inventory(inventory)
    sel = _selectors(boxes)
    if not sel and any("gpu-boxes" in b.groups for b in inv.boxes.values()):
        sel = ["gpu-boxes"]  # the seed's smoke test ran on the GPU boxes
    selected = inv.select_boxes(sel)
    check_list = smoke_mod.parse_checks(checks) if checks else tuple(inv.lab.smoke_checks)
    opts = smoke_mod.Options(
        wake=inv.lab.wake_boxes, skip_if_unreachable=inv.lab.skip_if_unreachable,
        wake_timeout=inv.lab.wake_timeout, wake_interval=inv.lab.wake_interval,
        checks=check_list, junit=Path(junit) if junit else None,
        distribute=_dist_options(inv, accept_new=accept_new))
    bars = None if as_json else report.progress_for_terminal()
    if bars:
        with bars:
            rep = smoke_mod.smoke(selected, dist_dir(inv, dist), opts, progress=bars)
    else:
        rep = smoke_mod.smoke(selected, dist_dir(inv, dist), opts)
    if as_json:
        print(__import__("json").dumps({"overall": rep.overall, "boxes": [
            dataclasses.asdict(o) for o in rep.outcomes]}, indent=2))
    else:
        report.smoke_table(rep)
        if opts.junit:
            print(f"JUnit report: {opts.junit}")
    return rep.exit_code


def check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None
    if v <= 0:
        raise UsageError(f"{name} must be positive, not {value!r}")
    return v
