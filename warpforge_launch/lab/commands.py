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


def box_selectors(boxes: str | None) -> list[str]:
    """The --boxes names; None (not given) selects the default. A given value that names no
    box (`''`, `,`) is bad input, never "every box"."""
    if boxes is None:
        return []
    names = [s.strip() for s in boxes.split(",") if s.strip()]
    if not names:
        raise UsageError(f"--boxes {boxes!r}: no box named",
                         hint="name boxes, aliases or groups (comma-separated), or leave "
                              "--boxes out for the default")
    return names


def check_count(name: str, value, minimum: int = 1) -> int:
    """A whole number of at least `minimum` from a task option (a string from invoke)."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{name} must be a whole number, not {value!r}") from None
    if n < minimum:
        raise UsageError(f"{name} must be at least {minimum}, not {n}")
    return n


def _dist_options(inv, *, keep=None, accept_new=False, verify=False, repair=False,
                  parallel=None):
    from warpforge_launch.lab.releases import Options
    from warpforge_launch.lab.remote import Timeouts

    lab = inv.lab
    t = Timeouts(connect=lab.connect_timeout, banner=max(lab.connect_timeout, 10.0),
                 command=lab.command_timeout)
    return Options(keep=check_count("--keep", keep, 2) if keep else lab.keep_releases,
                   lock_wait=lab.lock_wait,
                   parallel=check_count("--parallel", parallel) if parallel else lab.parallel,
                   verify_all=verify,
                   repair=repair, timeouts=t, host_key_policy="accept-new" if accept_new else None)


def dist_dir(inv, dist: str | None) -> Path:
    """--dist > DIST_DIR_OVERRIDE (applied by the inventory) > build.dist_dir under source."""
    if dist:
        return Path(dist).expanduser()
    d = Path(inv.build.dist_dir).expanduser()
    return d if d.is_absolute() else Path(inv.build.source).expanduser() / d


def debugging() -> bool:
    """`invoke --debug` (root logger at DEBUG) or WARPFORGE_DEBUG=1: show tracebacks."""
    import logging
    import os

    return (os.environ.get("WARPFORGE_DEBUG", "") not in ("", "0")
            or logging.getLogger().getEffectiveLevel() <= logging.DEBUG)


def _guard(fn):
    """One line on stderr (+ hint) for any failure, and its exit code; a traceback only
    when debugging."""
    def wrapper(*args, **kwargs) -> int:
        try:
            return fn(*args, **kwargs)
        except LaunchError as e:
            if debugging():
                raise
            from warpforge_launch.output import print_error

            print_error(e)
            return e.exit_code
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
        except Exception as e:  # noqa: BLE001 - a lab task never shows a bare traceback
            if debugging():
                raise
            print(f"error: {fn.__name__} failed: {type(e).__name__}: {e}", file=sys.stderr)
            print("hint: run with `invoke --debug ...` for the traceback", file=sys.stderr)
            return 1
    wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
    return wrapper


@_guard
def wake(*, boxes=None, inventory="", send=True, timeout=None, interval=None,
         as_json=False) -> int:
    """Wake the selected boxes and wait for SSH; 0 if all are up, else 3."""
    from warpforge_launch.lab import report, wake

    inv = _inventory(inventory)
    selected = inv.select_boxes(box_selectors(boxes))
    timeout = check_positive("--timeout", timeout or inv.lab.wake_timeout)
    poll = check_positive("--interval", interval or inv.lab.wake_interval)
    spinner = report.WakeProgress(timeout) if sys.stderr.isatty() and not as_json else None
    if spinner:
        with spinner:
            results = wake.wake_boxes(selected, send=send, timeout=timeout, poll=poll,
                                    parallel=inv.lab.parallel, on_attempt=spinner)
    else:
        results = wake.wake_boxes(selected, send=send, timeout=timeout, poll=poll,
                                parallel=inv.lab.parallel)
    report.print_json(results) if as_json else report.wake_table(results)
    if any(r.error and not r.reachable for r in results):
        return 1  # a packet could not be sent: the work failed, not only the wait
    return 0 if all(r.reachable for r in results) else 3


@_guard
def distribute(*, boxes=None, inventory="", dist="", keep=None, accept_new=False, verify=False,
               repair=False, as_json=False) -> int:
    """Push the dist to the selected boxes (atomic, incremental, parallel). Boxes the last
    run's probes (quickpush) find on the dist's release are answered before the inventory
    is read; the rest go the full way."""
    from warpforge_launch.lab import quickpush

    box_selectors(boxes)  # bad input fails before any answer, quick or not
    if keep:
        check_count("--keep", keep, 2)
    request = {"boxes": boxes or "", "inventory": str(inventory or ""),
               "dist": str(dist or ""), "keep": str(keep or "")}
    plain = not (accept_new or verify or repair)
    quick = quickpush.start(request) if plain else None
    answered = quick.answers() if quick else {}
    if quick and answered and len(answered) == len(quick.names):
        return _show_distribute([answered[n] for n in quick.names], as_json)
    from warpforge_launch.lab import releases, report

    inv = _inventory(inventory)
    selected = inv.select_boxes(box_selectors(boxes))
    opts = _dist_options(inv, keep=keep, accept_new=accept_new, verify=verify, repair=repair)
    path = dist_dir(inv, dist)
    rest = [b for b in selected if b.name not in answered]
    bars = None if as_json else report.progress_for_terminal()
    if bars:
        with bars:
            done = releases.distribute(rest, path, opts=opts, progress=bars)
    else:
        done = releases.distribute(rest, path, opts=opts)
    if plain:
        quickpush.remember(request, selected, opts, path)
    by_box = {**{r.box: r for r in done}, **answered}
    return _show_distribute([by_box[b.name] for b in selected], as_json)


def _show_distribute(results, as_json: bool) -> int:
    from warpforge_launch.lab import pushresult, report

    report.print_json(results) if as_json else report.distribute_table(results)
    return pushresult.exit_code(results)


@_guard
def rollback(*, boxes=None, inventory="", to="", accept_new=False, as_json=False) -> int:
    """Switch the selected boxes back to their previous release (or --to a named one)."""
    from warpforge_launch.lab import releases, report

    inv = _inventory(inventory)
    selected = inv.select_boxes(box_selectors(boxes))
    results = releases.rollback(selected, opts=_dist_options(inv, accept_new=accept_new),
                                to=to or None)
    report.print_json(results) if as_json else report.distribute_table(results, "rollback")
    return releases.exit_code(results)


@_guard
def smoke(*, boxes=None, inventory="", dist="", checks="", junit="reports/smoke-junit.xml",
          accept_new=False, as_json=False) -> int:
    """dist check -> wake (WAKE_BOXES) -> wait -> distribute -> verify; 1 if any box FAILED."""
    import dataclasses

    from warpforge_launch.lab import report, smoke

    junit_path = _writable("--junit", junit) if junit else None
    inv = _inventory(inventory)
    sel = box_selectors(boxes)
    if not sel and any("gpu-boxes" in b.groups for b in inv.boxes.values()):
        sel = ["gpu-boxes"]  # the seed's smoke test ran on the GPU boxes
    selected = inv.select_boxes(sel)
    check_list = smoke.parse_checks(checks) if checks else tuple(inv.lab.smoke_checks)
    opts = smoke.Options(
        wake=inv.lab.wake_boxes, skip_if_unreachable=inv.lab.skip_if_unreachable,
        wake_timeout=inv.lab.wake_timeout, wake_interval=inv.lab.wake_interval,
        checks=check_list, junit=junit_path,
        distribute=_dist_options(inv, accept_new=accept_new))
    bars = None if as_json else report.progress_for_terminal()
    if bars:
        with bars:
            rep = smoke.run(selected, dist_dir(inv, dist), opts, progress=bars)
    else:
        rep = smoke.run(selected, dist_dir(inv, dist), opts)
    if as_json:
        print(__import__("json").dumps({"overall": rep.overall, "boxes": [
            dataclasses.asdict(o) for o in rep.outcomes]}, indent=2))
    else:
        report.smoke_table(rep)
        if opts.junit:
            print(f"JUnit report: {opts.junit}")
    return rep.exit_code


@_guard
def gpu_info(*, boxes=None, inventory="", wake=False, timeout=None, as_json=False) -> int:
    """The selected boxes' GPUs; 0 all reached answered, 1 a box failed, 3 none reachable."""
    from warpforge_launch.lab import gpuinfo

    return gpuinfo.command(boxes=boxes, inventory=inventory, wake=wake, timeout=timeout,
                           json_output=as_json)


def _writable(name: str, path: str) -> Path:
    """A report path whose directory exists (made here) and takes a new file: checked before
    any box is touched, so a bad path costs no smoke run."""
    import os

    p = Path(path).expanduser()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_dir():
            raise UsageError(f"{name} {path}: is a directory")
        if not os.access(p.parent, os.W_OK | os.X_OK) or (p.exists()
                                                         and not os.access(p, os.W_OK)):
            raise UsageError(f"{name} {path}: not writable")
    except OSError as e:
        raise UsageError(f"{name} {path}: cannot write there: {e.strerror or e}") from None
    return p


def check_positive(name: str, value) -> float:
    """A finite positive number of seconds (NaN and inf would make a wait endless)."""
    import math

    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
    return v
