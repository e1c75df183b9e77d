"""The `warpforge-launch` command.

Start-up is kept cheap: only argparse and the job store load for status/list; inventory
validation (pydantic), rich tables and backend clients are imported by the commands that
use them. Errors are one line (`error: ...`) with the exit codes of errors.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from warpforge_launch import __version__
from warpforge_launch.errors import LaunchError, UsageError
from warpforge_launch.states import JobState


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other bad input
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def _common(json_default: Any = argparse.SUPPRESS) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", default=json_default,
                   help="machine-readable output (stable keys, ISO-8601 times)")
    p.add_argument("--inventory", metavar="PATH", default=argparse.SUPPRESS if json_default
                   is argparse.SUPPRESS else None, help="inventory file (default: "
                   "$WARPFORGE_INVENTORY, ./inventory.yaml, ~/.config/warpforge/inventory.yaml, "
                   "built-in)")
    p.add_argument("--debug", action="store_true", default=json_default,
                   help="show tracebacks")
    return p


def build_parser() -> argparse.ArgumentParser:
    top = _Parser(prog="warpforge-launch", parents=[_common(False)],
                  description="Submit snakegrinder jobs to Local, Ray, Slurm and Kubernetes, "
                  "and track them.")
    top.add_argument("--version", action="version", version=f"warpforge-launch {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = [_common()]

    s = sub.add_parser("submit", parents=common, help="submit a snakegrinder job")
    s.add_argument("--source", required=True, help="model source file (.py)")
    s.add_argument("--class", dest="model_class", help="model class in the source")
    s.add_argument("--inputs", help="input specs, e.g. '[(1, 8)]' or '[(1,3,224,224):f32]'")
    s.add_argument("--scheduler", help="scheduler instance from the inventory")
    s.add_argument("--gpu", default="NONE", type=str.upper,
                   choices=("NVIDIA", "AMD", "ANY", "NONE"), help="GPU vendor (default NONE)")
    s.add_argument("--gpu-count", type=int, default=1, help="GPUs when --gpu is set (default 1)")
    s.add_argument("--cpus", type=int, default=1, help="CPU cores (default 1)")
    s.add_argument("--memory", default="4096", help="memory in MB, or with a unit: 16G, 512M")
    s.add_argument("--timeout", default="30", help="minutes (default 30)")
    s.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the payload (repeatable; kept in the job store)")
    s.add_argument("--secret-env", action="append", default=[], metavar="KEY",
                   help="pass this process's KEY to the payload; the value is never printed "
                   "or stored (repeatable)")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--name", help="job name (default: source file name without .py)")
    s.add_argument("--type", default="FULL_PIPELINE", type=str.upper,
                   choices=("FULL_PIPELINE", "STABLEHLO_ONLY", "PYTORCH_NATIVE"))
    s.add_argument("--queue", help="queue or partition")
    s.add_argument("--priority", type=int, default=50, help="0-100 (default 50)")
    s.add_argument("--node", action="append", default=[], help="node affinity (repeatable)")
    s.add_argument("--snakegrinder", metavar="PATH", help="snakegrinder to run")
    s.add_argument("--wait", action="store_true", help="wait for the end and show the result")
    s.add_argument("--dry-run", action="store_true", help="print the plan, submit nothing")
    s.add_argument("--allow-pending", action="store_true",
                   help="kubernetes: accept a GPU request no node can satisfy now (it waits)")

    for name, text in (("status", "show job status"), ("cancel", "cancel jobs")):
        p = sub.add_parser(name, parents=common, help=text)
        p.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    r = sub.add_parser("result", parents=common, help="show finished jobs' results")
    r.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    r.add_argument("--fetch", action="store_true",
                   help="also copy the jobs' files into the artifact store (see `fetch`)")
    r.add_argument("--to", metavar="DIR", help="with --fetch: store under DIR/<job id>/")
    g = sub.add_parser("logs", parents=common, help="print a job's output")
    g.add_argument("job_id", metavar="JOB_ID")
    g.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    li = sub.add_parser("list", parents=common, help="list jobs from the job store")
    li.add_argument("--state", action="append", type=str.upper,
                    choices=[s.value for s in JobState], default=[])
    li.add_argument("--scheduler", action="append", default=[])
    li.add_argument("--limit", type=int, default=50)
    li.add_argument("--no-refresh", action="store_true", help="do not ask the schedulers")
    li.add_argument("--from-cluster", action="store_true",
                    help="ask the scheduler(s) which jobs they know (also jobs submitted by "
                    "other tools), instead of reading the job store")
    c = sub.add_parser("cluster-info", parents=common, help="show a scheduler's capacity")
    c.add_argument("--scheduler", help="scheduler instance (default: the inventory's default)")
    c.add_argument("--all", action="store_true",
                   help="every configured scheduler at once (exit 0 all answered, 1 some "
                   "failed, 3 none answered)")
    c.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="with --all: give up on a scheduler after this long (default 60)")
    gi = sub.add_parser("gpu-info", parents=common,
                        help="the GPUs of the lab's boxes (over SSH, every box at once)")
    gi.add_argument("--boxes", action="append", default=[], metavar="BOX,...",
                    help="boxes, aliases or groups, comma-separated (default: all)")
    gi.add_argument("--wake", action="store_true", help="wake asleep boxes first (wake-on-LAN)")
    gi.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="per box (default 20); exit 0 all answered, 1 a box failed, "
                    "3 none reachable")
    comp = sub.add_parser("completion", help="print the shell completion script")
    comp.add_argument("shell", choices=("bash", "zsh"))
    sub.add_parser("schedulers", parents=common, help="list the configured scheduler instances")
    from warpforge_launch.sweep_cli import add_parser as add_sweep
    from warpforge_launch.web.cli import add_parser as add_serve  # argparse only: fast start

    add_serve(sub, common)
    from warpforge_launch.artifacts_cli import add_parser as add_artifacts  # argparse only

    add_artifacts(sub, common)
    add_sweep(sub, common)
    return top


def main(argv: list[str] | None = None) -> int:
    args = None
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["__complete"]:  # the shells' Tab callback: hidden, fast, never an error
        from warpforge_launch.completion import main as complete

        return complete(argv[1:])
    try:
        from warpforge_launch.sweep_cli import default_submit

        args = build_parser().parse_args(default_submit(list(argv)))
        if not args.command:
            build_parser().print_help()
            return 2
        if getattr(args, "run", None):  # a command that lives in its own package (serve)
            return args.run(args)
        from warpforge_launch import commands

        return getattr(commands, "cmd_" + args.command.replace("-", "_"))(args)
    except LaunchError as exc:
        if args is not None and getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        from warpforge_launch.output import print_error

        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args is not None and getattr(args, "debug", False):
            raise
        from warpforge_launch.output import print_error

        print_error(f"internal error: {type(exc).__name__}: {exc}",
                    hint="run again with --debug for the traceback")
        return 1
