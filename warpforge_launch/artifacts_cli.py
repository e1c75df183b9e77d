"""`warpforge-launch fetch` and `warpforge-launch artifacts list|gc`: options and output.

Exit codes: 0 all fetched; 1 a job's files could not be verified or an entry was refused
(a symlink leading out of its directory); 2 bad input (unknown job, job not finished);
3 a backend was unreachable.
"""

from __future__ import annotations

import sys

from warpforge_launch.errors import UsageError


def add_parser(sub, parents) -> None:
    f = sub.add_parser("fetch", parents=parents,
                       help="copy finished jobs' outputs and logs into the artifact store")
    f.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    f.add_argument("--to", metavar="DIR", help="store under DIR/<job id>/ instead of "
                   "$WARPFORGE_HOME/artifacts/<job id>/")
    f.set_defaults(run=cmd_fetch)
    a = sub.add_parser("artifacts", parents=parents, help="list or clean up fetched results")
    verbs = a.add_subparsers(dest="verb", metavar="VERB", parser_class=sub._parser_class)
    li = verbs.add_parser("list", parents=parents, help="fetched jobs: files, bytes, when")
    li.add_argument("--root", metavar="DIR", help="the artifact store (default "
                    "$WARPFORGE_HOME/artifacts)")
    li.set_defaults(run=cmd_list)
    gc = verbs.add_parser("gc", parents=parents, help="remove fetched results")
    gc.add_argument("--older-than", type=float, metavar="DAYS",
                    help="remove results fetched more than DAYS ago")
    gc.add_argument("--keep", type=int, metavar="N", help="keep the N most recently fetched")
    gc.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    gc.add_argument("--root", metavar="DIR", help="the artifact store (default "
                    "$WARPFORGE_HOME/artifacts)")
    gc.set_defaults(run=cmd_gc)
    a.set_defaults(run=lambda args: _missing_verb())


def _missing_verb() -> int:
    raise UsageError("artifacts needs a verb: list or gc",
                     hint="`warpforge-launch artifacts list`")


def _size(n: int) -> str:
    from warpforge_launch.output import human_size  # not on the parser's path

    return human_size(n)


def fetch_and_report(launcher, job_ids, to, as_json: bool) -> tuple[int, list]:
    """Fetch, print one line per job (or nothing with --json), return (exit code, results)."""
    from warpforge_launch.artifacts import fetch
    from warpforge_launch.output import print_error, safe

    results = fetch(launcher, job_ids, to)
    for r in results:
        for entry in r.refused:
            target = f" -> {entry['target']}" if entry["target"] else ""
            print_error(f"{r.job_id}: refused {entry['path']}{target}: {entry['reason']}")
        if r.error and not r.refused:
            print_error(f"{r.job_id}: nothing fetched: {r.error}")
        if r.kept_gone:
            print(safe(f"warning: {r.job_id}: kept {len(r.kept_gone)} file(s) of the last "
                       f"fetch that the source no longer has ({', '.join(r.kept_gone[:3])}"
                       f"{', ...' if len(r.kept_gone) > 3 else ''})"), file=sys.stderr)
        if as_json or (r.error and not r.refused):
            continue
        moved = (f"fetched {r.transferred_files} file(s), {_size(r.transferred_bytes)}"
                 if r.changed else "unchanged, nothing transferred")
        print(safe(f"{r.job_id}: {r.files} file(s), {_size(r.bytes)} in {r.path} ({moved})"))
    codes = [r.exit_code for r in results]
    return (3 if 3 in codes else 1 if any(codes) else 0), results


def cmd_fetch(args) -> int:
    from warpforge_launch.launcher import Launcher
    from warpforge_launch.output import emit_json

    with Launcher(args.inventory) as launcher:
        code, results = fetch_and_report(launcher, args.job_ids, args.to, args.json)
    if args.json:
        emit_json([r.to_dict() for r in results])
    return code


def cmd_list(args) -> int:
    from warpforge_launch.artifacts_store import ArtifactStore
    from warpforge_launch.output import emit_json, table

    rows = ArtifactStore(args.root).entries()
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("no fetched results", file=sys.stderr)
        return 0
    table(["JOB ID", "STATE", "FILES", "BYTES", "FETCHED AT", "PATH"],
          [[r["job_id"], r["state"] or "-", r["files"], _size(r["bytes"]),
            str(r["fetched_at"])[:19].replace("T", " "), r["path"]] for r in rows])
    return 0


def cmd_gc(args) -> int:
    from warpforge_launch.artifacts_store import ArtifactStore
    from warpforge_launch.output import emit_json, safe

    removed = ArtifactStore(args.root).gc(args.older_than, args.keep, args.dry_run)
    if args.json:
        emit_json({"dry_run": args.dry_run, "removed": removed})
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        what = r["job_id"] or "leftover of an interrupted fetch"
        print(safe(f"{verb} {what}: {r['path']} ({r['files']} file(s), {_size(r['bytes'])})"))
    if not removed:
        print("nothing to remove", file=sys.stderr)
    return 0
