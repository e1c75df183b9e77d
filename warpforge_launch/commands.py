"""What each CLI command does; cli.py only parses. Heavy imports stay inside functions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import JobState, JobStatus, check_name
from warpforge_launch.launcher import Launcher
from warpforge_launch.output import emit_json, safe, status_line


def _launcher(args) -> Launcher:
    return Launcher(getattr(args, "inventory", None))


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {pair!r} is not KEY=VALUE")
        env[key] = value
    return env


def definition_from_args(args):
    """Arguments -> JobDefinition; every value is checked by the model, in its words."""
    from warpforge_launch.inputs import parse_inputs
    from warpforge_launch.jobs import (
        GpuType,
        JobDefinition,
        ResourceRequirements,
        memory_mb,
        timeout_minutes,
    )

    if args.inputs is None:
        raise UsageError("--inputs is required: the model's input shapes",
                         hint="e.g. --inputs '[(1, 8)]' or '[(1,3,224,224):f32]'")
    gpu = GpuType(args.gpu)
    resources = ResourceRequirements(
        gpu, 0 if gpu is GpuType.NONE else args.gpu_count, memory_mb(args.memory),
        args.cpus, args.queue, args.priority, frozenset(args.node))
    source = os.path.abspath(args.source)
    name = check_name(args.name or Path(args.source).name.removesuffix(".py"), "--name")
    return JobDefinition(name=name, source=source, inputs=parse_inputs(args.inputs),
                         type=args.type, model_class=args.model_class, resources=resources,
                         environment=parse_env(args.env),
                         timeout=timeout_minutes(args.timeout), seed=args.seed,
                         secret_env=tuple(dict.fromkeys(args.secret_env)))


def cmd_submit(args) -> int:
    definition = definition_from_args(args)
    overrides = {"snakegrinder": args.snakegrinder} if args.snakegrinder else {}
    if getattr(args, "allow_pending", False):
        overrides["allow_pending"] = True
    with _launcher(args) as launcher:
        if args.dry_run:
            submission, sched, plan = launcher.plan(definition, args.scheduler, **overrides)
            unset = [k for k in definition.secret_env if k not in os.environ]
            if unset:  # the dry run shows names only; the real submit reads the values
                print(safe(f"warning: --secret-env {', '.join(unset)}: not set in this "
                           "environment, so the real submit would refuse it"), file=sys.stderr)
            if args.json:
                emit_json({"submission": submission.to_dict(), "plan": plan.to_dict()})
            else:
                print(f"# dry run: {plan.kind} on scheduler {sched.name!r} "
                      f"(nothing submitted)")
                print(plan.render())
            return 0
        job_id = launcher.submit(definition, args.scheduler, **overrides)
        if not args.wait:
            if args.json:
                emit_json({"job_id": job_id})
            else:
                print(job_id)
            return 0
        if not args.json:
            print(f"submitted {job_id}", file=sys.stderr)
        status = _wait(launcher, job_id, progress=not args.json)
        result = launcher.result(job_id) if status.state.terminal else None
        if args.json:
            emit_json({"job_id": job_id, "status": status.to_dict(),
                       "result": result.to_dict() if result else None})
        else:
            from warpforge_launch.output import print_result

            print_result(result)
        return 0 if status.state is JobState.COMPLETED else 1


def _status_line(st: JobStatus) -> str:
    return status_line(st.job_id, st.state.value,
                       st.elapsed.total_seconds() if st.elapsed is not None else None,
                       st.node_name, st.message)


def _wait(launcher: Launcher, job_id: str, progress: bool) -> JobStatus:
    if not (progress and sys.stderr.isatty()):
        return launcher.wait(job_id)
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"{job_id}: PENDING") as spinner:
        def show(st: JobStatus) -> None:
            extra = f" {st.elapsed.total_seconds():.1f}s" if st.elapsed else ""
            spinner.update(safe(f"{job_id}: {st.state.value}{extra}"))

        return launcher.wait(job_id, on_status=show)


def cmd_status(args) -> int:
    """The known jobs are shown even when another id is unknown (that one is an error
    line, and the exit code is 2)."""
    missing: dict = {}
    with _launcher(args) as launcher:
        statuses = list(launcher.statuses(args.job_ids, missing=missing).values())
    if missing and not statuses:
        raise next(iter(missing.values()))
    if args.json:
        emit_json([s.to_dict() for s in statuses] if len(dict.fromkeys(args.job_ids)) > 1
                  else statuses[0].to_dict())
    else:
        for st in statuses:
            print(_status_line(st))
    from warpforge_launch.output import print_error

    for i, exc in enumerate(missing.values()):
        print_error(str(exc), hint=exc.hint if i == len(missing) - 1 else "")
    return 2 if missing else 0


def cmd_result(args) -> int:
    if args.to and not args.fetch:
        raise UsageError("--to goes with --fetch")
    fetch_code, fetched = 0, []
    with _launcher(args) as launcher:
        results = list(launcher.results(args.job_ids).values())
        if args.fetch:
            from warpforge_launch.artifacts_cli import fetch_and_report

            fetch_code, fetched = fetch_and_report(launcher, args.job_ids, args.to, args.json)
    if args.json:
        docs = [r.to_dict() for r in results]
        for doc, f in zip(docs, fetched, strict=False):
            doc["fetched"] = f.to_dict()
        emit_json(docs if len(docs) > 1 else docs[0])
    else:
        from warpforge_launch.output import print_result

        for i, result in enumerate(results):
            if i:
                print()
            print_result(result)
    return fetch_code or (0 if all(r.success for r in results) else 1)


def cmd_logs(args) -> int:
    with _launcher(args) as launcher:
        if args.json:
            text = "".join(launcher.logs(args.job_id, follow=args.follow))
            emit_json({"job_id": args.job_id, "logs": text})
            return 0
        for chunk in launcher.logs(args.job_id, follow=args.follow):
            sys.stdout.write(chunk)
            sys.stdout.flush()
            if getattr(sys.stdout, "lost", None) is not None:
                break  # nobody reads any more (`logs -f ID | head`): stop following
    return 0


def cmd_cancel(args) -> int:
    with _launcher(args) as launcher:
        results = launcher.cancel_many(args.job_ids)
    errors = launcher.cancel_errors
    if args.json:
        emit_json([{"job_id": j, "cancelled": c, "status": s.to_dict(),
                    **({"error": str(errors[j])} if j in errors else {})}
                   for j, (c, s) in results.items()])
    else:
        for job_id, (cancelled, status) in results.items():
            if cancelled:
                print(safe(f"{job_id}: cancelled"))
            elif job_id not in errors:
                print(safe(f"{job_id}: not cancelled, already {status.state.value}"
                           + (f" ({status.message})" if status.message else "")))
    from warpforge_launch.output import print_error

    for exc in errors.values():  # after the others: they were stopped
        print_error(exc)
    return max((e.exit_code for e in errors.values()), default=0)


def cmd_list(args) -> int:
    from warpforge_launch.jobs import JobQuery

    if args.limit <= 0:
        raise UsageError(f"--limit must be > 0, got {args.limit}")
    query = JobQuery(states=frozenset(JobState(s) for s in args.state),
                     schedulers=frozenset(args.scheduler), limit=args.limit)
    if args.from_cluster:
        return _list_from_cluster(args, query)
    with _launcher(args) as launcher:
        _check_instances(launcher, args.scheduler)
        rows = launcher.list(query, refresh=not args.no_refresh)
    if args.json:
        emit_json([{"job_id": s.job_id, "name": r.name, "scheduler": r.instance,
                    "submitted_by": r.submitted_by, "submitted_at": r.submitted_at.isoformat(),
                    "status": s.to_dict()} for r, s in rows])
    else:
        from warpforge_launch.output import table

        table(["JOB ID", "NAME", "STATE", "SUBMITTED", "ELAPSED", "MESSAGE"],
              [[s.job_id, r.name, s.state.value, r.submitted_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{s.elapsed.total_seconds():.1f}s" if s.elapsed is not None else "-",
                s.message] for r, s in rows])
    # a scheduler that could not be reached: its jobs are listed as last known, and the
    # exit code says that the list is not fresh
    from warpforge_launch.output import warn_unreachable

    warn_unreachable(launcher.unreachable)
    return 3 if launcher.unreachable else 0


def _check_instances(launcher: Launcher, names: list[str]) -> None:
    """A --scheduler filter names an instance the job store has jobs of, or one the inventory
    configures (read only then): a typo is an error, not an empty table."""
    from warpforge_launch.errors import NotFoundError

    unknown = set(names) - launcher.store.instances(names)
    if unknown:
        inv = launcher.inventory
        for name in sorted(unknown - set(inv.schedulers)):
            raise NotFoundError(f"no scheduler {name!r} in the job store or the inventory "
                                f"({inv.describe()})",
                                hint=f"configured: {', '.join(sorted(inv.schedulers))}")


def _list_from_cluster(args, query) -> int:
    """Jobs as the backends see them, including ones other tools submitted."""
    if args.no_refresh:
        raise UsageError("--from-cluster asks the schedulers; it cannot be --no-refresh")
    with _launcher(args) as launcher:
        rows = launcher.cluster_jobs(sorted(args.scheduler), query)
    if args.json:
        emit_json([{"scheduler": inst, "in_store": known, "status": s.to_dict()}
                   for inst, s, known in rows])
        return 0
    from warpforge_launch.output import table

    table(["JOB ID", "STATE", "ELAPSED", "NODE", "IN STORE", "MESSAGE"],
          [[s.job_id, s.state.value,
            f"{s.elapsed.total_seconds():.1f}s" if s.elapsed is not None else "-",
            s.node_name or "-", "yes" if known else "no", s.message] for _, s, known in rows])
    return 0


def cmd_cluster_info(args) -> int:
    if args.all:
        if args.scheduler:
            raise UsageError("--all and --scheduler exclude each other")
        from warpforge_launch import clusters

        return clusters.command(args.inventory, timeout=args.timeout, json_output=args.json)
    with _launcher(args) as launcher:
        info = launcher.cluster_info(args.scheduler)
    if args.json:
        emit_json(info.to_dict())
        return 0
    from warpforge_launch.output import print_cluster

    print_cluster(info)
    return 0


def cmd_schedulers(args) -> int:
    from warpforge_launch import codec

    with _launcher(args) as launcher:
        inv = launcher.inventory
    from warpforge_launch.secrets import shown_header

    rows = [{"name": e.name, "type": e.type, "default": e.name == inv.default_scheduler,
             "config": codec.to_jsonable(e.config)} for e in inv.schedulers.values()]
    for row in rows:  # a token written out in the inventory is not printed
        if row["config"].get("auth_header"):
            row["config"]["auth_header"] = shown_header(row["config"]["auth_header"])
    if args.json:
        emit_json(rows)
        return 0
    from warpforge_launch.output import table

    print(f"inventory: {inv.describe()}")
    table(["NAME", "TYPE", "DEFAULT"], [[r["name"], r["type"], "*" if r["default"] else ""]
                                        for r in rows])
    return 0




def cmd_gpu_info(args) -> int:
    from warpforge_launch.lab import gpuinfo

    return gpuinfo.command(boxes=args.boxes, inventory=args.inventory, wake=args.wake,
                           timeout=args.timeout, json_output=args.json)


def cmd_completion(args) -> int:
    from warpforge_launch.completion import script

    sys.stdout.write(script(args.shell))
    return 0
