"""`warpforge-launch sweep`: parse a sweep file, submit it, show its matrix and results.

``sweep FILE`` is ``sweep submit FILE``; ``status``, ``result``, ``cancel`` take a sweep id
(``sweep-<8 hex>``), ``list`` shows recent sweeps. Heavy imports stay inside the handlers.
"""

from __future__ import annotations

import sys
import time

from warpforge_launch.errors import LaunchError, UsageError

SUBCOMMANDS = ("submit", "status", "result", "cancel", "fetch", "list")


def add_parser(sub, parents) -> None:
    p = sub.add_parser("sweep", parents=parents,
                       help="run a matrix of models x inputs x GPU types x schedulers",
                       description="`sweep FILE` submits the sweep file (same as "
                       "`sweep submit FILE`).")
    ss = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND",
                          parser_class=type(p))
    p.default_command = "submit"  # what default_submit() inserts; read by shell completion
    s = ss.add_parser("submit", parents=parents, help="submit every cell of a sweep file")
    s.add_argument("file", metavar="FILE.yaml")
    s.add_argument("--dry-run", action="store_true",
                   help="print what each scheduler would receive; submit nothing")
    s.add_argument("--wait", action="store_true",
                   help="wait for every cell to finish, then show the results")
    s.add_argument("--snakegrinder", metavar="PATH",
                   help="snakegrinder to run (every scheduler of the sweep)")
    for name, text in (("status", "the sweep's matrix: state and time per cell"),
                       ("result", "a table of the cells' results (exit 1 if any failed)"),
                       ("cancel", "cancel every cell still running")):
        c = ss.add_parser(name, parents=parents, help=text)
        c.add_argument("sweep_id", metavar="SWEEP_ID")
    f = ss.add_parser("fetch", parents=parents,
                      help="copy every finished cell's outputs into the artifact store "
                      "(exit 1 if a cell is not finished or a fetch failed)")
    f.add_argument("sweep_id", metavar="SWEEP_ID")
    f.add_argument("--to", metavar="DIR", help="artifact root (default: "
                   "$WARPFORGE_HOME/artifacts)")
    li = ss.add_parser("list", parents=parents, help="recent sweeps")
    li.add_argument("--limit", type=int, default=20)
    p.set_defaults(run=main)


def default_submit(argv: list[str]) -> list[str]:
    """``sweep FILE`` -> ``sweep submit FILE`` (the subcommand may be left out)."""
    skip = False
    for i, word in enumerate(argv):
        if skip or word.startswith("-"):
            skip = word == "--inventory"
            continue
        if word != "sweep":
            return argv
        skip = False
        for w in argv[i + 1:]:
            if skip or w.startswith("-"):
                skip = w == "--inventory"
                continue
            return argv if w in SUBCOMMANDS else [*argv[:i + 1], "submit", *argv[i + 1:]]
        return argv
    return argv


def main(args) -> int:
    from warpforge_launch.launcher import Launcher

    command = args.sweep_command
    if command is None:
        raise UsageError("sweep needs a FILE or a subcommand",
                         hint="warpforge-launch sweep FILE.yaml | status|result|cancel ID | list")
    with Launcher(getattr(args, "inventory", None)) as launcher:
        code = {"submit": _submit, "status": _status, "result": _result,
                "cancel": _cancel, "fetch": _fetch, "list": _list}[command](launcher, args)
    # cells on an instance that could not be reached were shown as last known (see
    # sweep_launch._cells): say which, and let the exit code say it too
    from warpforge_launch.output import warn_unreachable

    warn_unreachable(launcher.unreachable)
    return max(code, 3) if launcher.unreachable else code


def _not_sent(sweep_id: str, failed: dict[str, LaunchError], cells: int) -> int:
    """Say why cells could not be sent (each distinct reason once, on stderr); the exit
    code: the reason's own (3 unreachable, 2 refused) when no cell went out, else 1."""
    from warpforge_launch.output import safe

    reasons: dict[str, int] = {}
    for exc in failed.values():
        reasons[str(exc)] = reasons.get(str(exc), 0) + 1
    for why, n in reasons.items():
        print(safe(f"error: {n} of {cells} cell(s) of {sweep_id} not sent: {why}"),
              file=sys.stderr)
    print(f"hint: `warpforge-launch sweep status {sweep_id}` shows every cell",
          file=sys.stderr)
    codes = {exc.exit_code for exc in failed.values()}
    return codes.pop() if len(failed) == cells and len(codes) == 1 else 1


def _submit(launcher, args) -> int:
    from warpforge_launch import sweep_launch, sweeps
    from warpforge_launch.output import emit_json

    spec = sweeps.load(args.file)
    overrides = {"snakegrinder": args.snakegrinder} if args.snakegrinder else {}
    if args.dry_run:
        groups = sweep_launch.plan(launcher, spec, **overrides)
        if args.json:
            emit_json({"sweep": sweeps.to_dict(spec),
                       "batches": [g.batch.to_dict() for g in groups]})
            return 0
        cells = sum(len(g.cells) for g in groups)
        print(f"# dry run: sweep {spec.name!r}, {cells} cells (nothing submitted)")
        for g in groups:
            print(f"# scheduler {g.scheduler.name!r} ({g.scheduler.type_name}): "
                  f"{len(g.cells)} cells in {len(g.batch.requests)} request(s)")
            print(g.batch.render())
        return 0
    sweep_id, failed = sweep_launch.submit(launcher, spec, **overrides)
    cells = len(launcher.store.get_sweep(sweep_id).cells) if failed else 0
    code = _not_sent(sweep_id, failed, cells) if failed else 0
    if not args.wait or len(failed) == cells > 0:  # nothing went out: nothing to wait for
        if args.json:
            emit_json({"sweep_id": sweep_id,
                       "not_sent": {corr: str(exc) for corr, exc in failed.items()}})
        else:
            print(sweep_id)
        return code
    if not args.json:
        print(f"submitted {sweep_id}", file=sys.stderr)
    from warpforge_launch import sweep_launch as sl

    delay = 0.2
    while True:
        _, cells = sl.status(launcher, sweep_id)
        if all(c.status is None or c.status.state.terminal for c in cells):
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)
    args.sweep_id = sweep_id
    return _result(launcher, args)


def _elapsed(status) -> str:
    if status is None or status.elapsed is None:
        return "-"
    return f"{status.elapsed.total_seconds():.1f}s"


def _status(launcher, args) -> int:
    from warpforge_launch import sweep_launch
    from warpforge_launch.output import emit_json, table

    sweep, cells = sweep_launch.status(launcher, args.sweep_id)
    if args.json:
        emit_json({"sweep_id": sweep.sweep_id, "name": sweep.name,
                   "summary": sweep_launch.summary(cells),
                   "cells": [{**c.key, "job_id": c.status.job_id if c.status else None,
                              "status": c.status.to_dict() if c.status else None}
                             for c in cells]})
        return 0
    columns = list(dict.fromkeys(f"{c.key['gpu']}/{c.key['scheduler']}" for c in cells))
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for c in cells:
        state = c.status.state.value if c.status else "UNKNOWN"
        rows.setdefault((c.key["model"], c.key["shape"]), {})[
            f"{c.key['gpu']}/{c.key['scheduler']}"] = f"{state} {_elapsed(c.status)}"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sweep_launch.summary(cells).items()))
    print(f"sweep {sweep.sweep_id} ({sweep.name}): {len(cells)} cells: {counts}")
    table(["MODEL", "INPUTS", *columns],
          [[m, shape, *(cols.get(k, "-") for k in columns)] for (m, shape), cols in rows.items()])
    return 0


def _result(launcher, args) -> int:
    from warpforge_launch import sweep_launch
    from warpforge_launch.output import emit_json, table

    sweep, rows = sweep_launch.results(launcher, args.sweep_id)
    ok = all(r is not None and r.success for _, r in rows)
    if args.json:
        emit_json({"sweep_id": sweep.sweep_id, "name": sweep.name, "ok": ok,
                   "cells": [{**c.key, "job_id": c.status.job_id if c.status else None,
                              "state": c.status.state.value if c.status else None,
                              "ok": r.success if r else None,
                              "exit_code": r.exit_code if r else None,
                              "mlir_bytes": len(r.mlir_output.encode()) if r and r.mlir_output
                              else None,
                              "seconds": r.execution_time.total_seconds()
                              if r and r.execution_time else None,
                              "error": r.error_message if r else None} for c, r in rows]})
    else:
        table(["CELL", "MODEL", "INPUTS", "GPU/SCHEDULER", "JOB ID", "STATE", "OK", "EXIT",
               "MLIR", "TIME", "ERROR"],
              [[c.key["index"], c.key["model"], c.key["shape"],
                f"{c.key['gpu']}/{c.key['scheduler']}", c.status.job_id if c.status else "-",
                c.status.state.value if c.status else "-",
                "-" if r is None else ("yes" if r.success else "no"),
                "-" if r is None or r.exit_code is None else r.exit_code,
                f"{len(r.mlir_output.encode())} B" if r and r.mlir_output else "-",
                f"{r.execution_time.total_seconds():.1f}s" if r and r.execution_time else "-",
                (r.error_message or "") if r else ""] for c, r in rows])
    return 0 if ok else 1


def _cancel(launcher, args) -> int:
    from warpforge_launch import sweep_launch
    from warpforge_launch.output import emit_json

    sweep, cancelled, cells = sweep_launch.cancel(launcher, args.sweep_id)
    if args.json:
        emit_json({"sweep_id": sweep.sweep_id, "cancelled": sorted(j for j, c in
                                                                 cancelled.items() if c),
                   "summary": sweep_launch.summary(cells)})
    else:
        n = sum(cancelled.values())
        counts = ", ".join(f"{k} {s}" for s, k in sorted(sweep_launch.summary(cells).items()))
        print(f"{sweep.sweep_id}: cancelled {n} cell(s); now {counts}")
    from warpforge_launch.output import print_error

    for exc in launcher.cancel_errors.values():  # cells that could not be stopped
        print_error(exc)
    return 1 if launcher.cancel_errors else 0


def _fetch(launcher, args) -> int:
    """Every finished cell in one fetch (one archive round trip per Slurm instance)."""
    from warpforge_launch import sweep_launch
    from warpforge_launch.artifacts_cli import fetch_and_report
    from warpforge_launch.output import emit_json, print_error

    sweep, cells = sweep_launch.status(launcher, args.sweep_id)
    done = [c.status.job_id for c in cells if c.record is not None and c.status is not None
            and c.status.state.terminal and not c.record.submitting
            and not c.record.superseded_by]
    waiting = len(cells) - len(done)
    code, results = fetch_and_report(launcher, done, args.to, args.json) if done else (0, [])
    if args.json:
        emit_json({"sweep_id": sweep.sweep_id, "not_fetched": waiting,
                   "fetched": [r.to_dict() for r in results]})
    if waiting:
        print_error(f"{sweep.sweep_id}: {waiting} of {len(cells)} cell(s) not finished, "
                    "not fetched", hint="fetch again when `warpforge-launch sweep status "
                    f"{sweep.sweep_id}` shows them finished")
        return max(code, 1)
    return code


def _list(launcher, args) -> int:
    from warpforge_launch.output import emit_json, table

    if args.limit <= 0:
        raise UsageError(f"--limit must be > 0, got {args.limit}")
    rows = launcher.store.sweeps(args.limit)
    if args.json:
        emit_json([{"sweep_id": s.sweep_id, "name": s.name, "submitted_by": s.submitted_by,
                    "submitted_at": s.submitted_at.isoformat(), "cells": len(s.cells),
                    "stored_states": counts} for s, counts in rows])
        return 0
    table(["SWEEP ID", "NAME", "SUBMITTED", "CELLS", "STATES (as last seen)"],
          [[s.sweep_id, s.name, s.submitted_at.strftime("%Y-%m-%d %H:%M:%S"), len(s.cells),
            ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))] for s, counts in rows])
    return 0
