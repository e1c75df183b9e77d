"""The `warpforge-launch` command.

Start-up is kept cheap: a command builds only its own argument parser (the whole parser is
built for top-level --help, a missing or unknown command, and to word a usage error; argparse
itself, cli_parser.py, is not imported for a plain `status ID...`), and `status` is answered
from the store and one lean backend call (quickstatus.py). Inventory validation (pydantic),
rich tables, the job model and backend clients are imported by the commands that use them.
The program (``run``) freezes the heap before exit. Errors are one line (`error: ...`) with
the exit codes of errors.py. Before any command, a stat or two refuse a state directory that
is a file and a named inventory that cannot be read; while it runs, a stdout whose reader
went away (or a full disk) never turns its exit code into another (``_Output``).

Adding a subcommand is one self-contained edit: write ``_NAME(sub, parents)``, which calls
``sub.add_parser("NAME", parents=parents, help=...)`` and adds its arguments (importing
nothing heavy), list it in ``COMMANDS`` under its name, and write ``cmd_NAME(args)`` in
commands.py (or ``p.set_defaults(run=FUNCTION)`` for a command that lives in its own
package, whose ``add_parser(sub, parents)`` is then called from ``_NAME``).
"""

from __future__ import annotations

import os
import sys

from warpforge_launch import __version__
from warpforge_launch.errors import LaunchError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def _common(top: bool = False) -> argparse.ArgumentParser:
    """--json, --inventory and --debug: the top level's hold defaults, a subcommand's
    override them only when given."""
    import argparse

    from warpforge_launch.cli_parser import Parser

    p = Parser(add_help=False)
    flag_default = False if top else argparse.SUPPRESS
    p.add_argument("--json", action="store_true", default=flag_default,
                   help="machine-readable output (stable keys, ISO-8601 times)")
    p.add_argument("--inventory", metavar="PATH", default=None if top else argparse.SUPPRESS,
                   help="inventory file (default: "
                   "$WARPFORGE_INVENTORY, ./inventory.yaml, ~/.config/warpforge/inventory.yaml, "
                   "built-in)")
    p.add_argument("--debug", action="store_true", default=flag_default,
                   help="show tracebacks")
    return p


# ---- one function per subcommand: the subparser and its arguments --------------------------
def _submit(sub, parents) -> None:
    s = sub.add_parser("submit", parents=parents, help="submit a snakegrinder job")
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


def _status(sub, parents) -> None:
    p = sub.add_parser("status", parents=parents, help="show job status")
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID")


def _cancel(sub, parents) -> None:
    p = sub.add_parser("cancel", parents=parents, help="cancel jobs")
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID")


def _result(sub, parents) -> None:
    r = sub.add_parser("result", parents=parents, help="show finished jobs' results")
    r.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    r.add_argument("--fetch", action="store_true",
                   help="also copy the jobs' files into the artifact store (see `fetch`)")
    r.add_argument("--to", metavar="DIR", help="with --fetch: store under DIR/<job id>/")


def _logs(sub, parents) -> None:
    g = sub.add_parser("logs", parents=parents, help="print a job's output")
    g.add_argument("job_id", metavar="JOB_ID")
    g.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")


def _list(sub, parents) -> None:
    from warpforge_launch.states import JobState

    li = sub.add_parser("list", parents=parents, help="list jobs from the job store")
    li.add_argument("--state", action="append", type=str.upper,
                    choices=[s.value for s in JobState], default=[])
    li.add_argument("--scheduler", action="append", default=[])
    li.add_argument("--limit", type=int, default=50)
    li.add_argument("--no-refresh", action="store_true", help="do not ask the schedulers")
    li.add_argument("--from-cluster", action="store_true",
                    help="ask the scheduler(s) which jobs they know (also jobs submitted by "
                    "other tools), instead of reading the job store")


def _cluster_info(sub, parents) -> None:
    c = sub.add_parser("cluster-info", parents=parents, help="show a scheduler's capacity")
    c.add_argument("--scheduler", help="scheduler instance (default: the inventory's default)")
    c.add_argument("--all", action="store_true",
                   help="every configured scheduler at once (exit 0 all answered, 1 some "
                   "failed, 3 none answered)")
    c.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="with --all: give up on a scheduler after this long (default 60)")


def _gpu_info(sub, parents) -> None:
    gi = sub.add_parser("gpu-info", parents=parents,
                        help="the GPUs of the lab's boxes (over SSH, every box at once)")
    gi.add_argument("--boxes", action="append", default=[], metavar="BOX,...",
                    help="boxes, aliases or groups, comma-separated (default: all)")
    gi.add_argument("--wake", action="store_true", help="wake asleep boxes first (wake-on-LAN)")
    gi.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="per box (default 20); exit 0 all answered, 1 a box failed, "
                    "3 none reachable")


def _completion(sub, parents) -> None:
    comp = sub.add_parser("completion", help="print the shell completion script")
    comp.add_argument("shell", choices=("bash", "zsh"))


def _schedulers(sub, parents) -> None:
    sub.add_parser("schedulers", parents=parents, help="list the configured scheduler instances")


def _serve(sub, parents) -> None:
    from warpforge_launch.web.cli import add_parser  # argparse only: fast start

    add_parser(sub, parents)


def _artifacts(sub, parents) -> None:
    from warpforge_launch.artifacts_cli import add_parser  # argparse only

    add_parser(sub, parents)


def _sweep(sub, parents) -> None:
    from warpforge_launch.sweep_cli import add_parser

    add_parser(sub, parents)


# The subcommands in --help order. A function that adds several subcommands (a package's
# own add_parser) is listed under each of their names; it runs once.
COMMANDS = {"submit": _submit, "status": _status, "cancel": _cancel, "result": _result,
            "logs": _logs, "list": _list, "cluster-info": _cluster_info, "gpu-info": _gpu_info,
            "completion": _completion, "schedulers": _schedulers, "serve": _serve,
            "fetch": _artifacts, "artifacts": _artifacts, "sweep": _sweep}


class _Names:
    """Stands in for the subparsers action: registers each subcommand with its help line
    only. Top-level --help shows no more, and building every command's arguments for it
    would cost more than the rest of printing it."""

    def __init__(self, sub) -> None:
        self._sub = sub
        self._parser_class = sub._parser_class

    def add_parser(self, name: str, **kwargs):
        self._sub.add_parser(name, help=kwargs.get("help"))
        return _Ignored()


class _Ignored:
    """Takes any argument definition (add_argument, set_defaults, nested subparsers)."""

    def __getattr__(self, _name: str):
        return lambda *args, **kwargs: self


def build_parser(only: str | None = None, *, names_only: bool = False
                 ) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` the top level and that one subcommand; with
    ``names_only`` the top level and the subcommands' names and help lines (for --help)."""
    from warpforge_launch.cli_parser import Parser

    top = Parser(prog="warpforge-launch", parents=[_common(top=True)],
                 description="Submit snakegrinder jobs to Local, Ray, Slurm and Kubernetes, "
                 "and track them.")
    top.add_argument("--version", action="version", version=f"warpforge-launch {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    common = [_common()]
    adders = [COMMANDS[only]] if only is not None else COMMANDS.values()
    for add in dict.fromkeys(adders):
        add(_Names(sub) if names_only else sub, common)
    return top


def _top_level_help(argv: list[str]) -> bool:
    """-h/--help before any command: argparse prints the top level's help for it."""
    for arg in argv:
        if arg in ("-h", "--help"):
            return True
        if not arg.startswith("-"):
            return False
    return False


def _command_named(argv: list[str]) -> str | None:
    """The subcommand ``argv`` runs, when that is plain to see: only --json, --debug and
    --inventory before it. None sends the arguments through the whole parser."""
    value_next = False
    for arg in argv:
        if value_next:
            value_next = False
        elif arg == "--inventory":
            value_next = True
        elif arg in ("--json", "--debug") or arg.startswith("--inventory="):
            continue
        else:
            return arg if arg in COMMANDS else None
    return None


def plain_status(argv: list[str]):
    """``status ID...`` with nothing around it but --json, --debug and --inventory PATH,
    read without argparse, whose import and parser cost a live `status` more than its
    request: the namespace argparse gives for it, or None to let argparse read ``argv``
    (anything else: another command, an abbreviation, ``--``, an id that looks like an
    option, ids interleaved with options, which argparse refuses)."""
    from types import SimpleNamespace

    found = {"json": False, "inventory": None, "debug": False}
    command, ids, ids_ended = None, [], False
    words = iter(argv)
    for word in words:
        if word == "--inventory":
            found["inventory"] = value = next(words, "")
            if not value or value.startswith("-"):
                return None
        elif word.startswith("--inventory="):
            found["inventory"] = word.partition("=")[2]
        elif word in ("--json", "--debug"):
            found[word[2:]] = True
        elif word.startswith("-"):
            return None
        elif command is None:
            if word != "status":
                return None
            command = word
            continue
        elif ids_ended:  # argparse reads one run of ids: more after an option is an error
            return None
        else:
            ids.append(word)
            continue
        ids_ended = bool(ids)
    if not ids:
        return None
    return SimpleNamespace(**found, command=command, job_ids=ids)


def parse(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    plain = plain_status(argv)
    if plain is not None:
        return plain
    name = _command_named(argv)
    if name is None and _top_level_help(argv):
        build_parser(names_only=True).parse_args(argv)  # prints the help and exits
    if name is not None:
        try:
            args = build_parser(only=name).parse_args(argv)
            if args.command == name:
                return args
        except UsageError:
            pass  # the whole parser words the error as it always does
    return build_parser().parse_args(argv)


def run() -> int:
    """The `warpforge-launch` program: ``main`` on the process's arguments, then the heap
    frozen, so the collection at interpreter exit need not walk every object of the
    finished command (some 5 ms of a 60 ms `status`)."""
    code = main()
    import gc

    gc.freeze()
    return code


class _Output:
    """sys.stdout or sys.stderr for the length of a command. A write that fails (the reader
    went away: EPIPE; a full disk: ENOSPC) sends the rest of the output to /dev/null instead
    of raising, so the command still finishes and exits with its own code (`result ID | head`
    of a FAILED job is 1, also under `set -o pipefail`); ``lost`` keeps the first error."""

    def __init__(self, stream) -> None:
        self.stream, self.lost = stream, None

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            self._discard(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            self._discard(exc)

    def _discard(self, exc: OSError) -> None:
        if self.lost is None:
            self.lost = exc
        try:  # what is still buffered, and all that follows, goes nowhere: no error at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (AttributeError, ValueError, OSError):
            pass

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code stands even when its output could not be written (a
    reader that went away is not an error; a full disk is one more `error:` line)."""
    closed = None
    if sys.stdout is None:  # started with fd 1 closed: it is /dev/null now, not a file we open
        closed = OSError(9, "standard output is closed")
        sys.stdout = open(os.devnull, "w")
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    out, err = sys.stdout, sys.stderr = _Output(sys.stdout), _Output(sys.stderr)
    out.lost = closed
    try:
        code = _main(argv)
        out.flush()
    finally:
        sys.stdout, sys.stderr = out.stream, err.stream
    lost = out.lost
    if lost is not None and not isinstance(lost, BrokenPipeError):
        from warpforge_launch.output import print_error

        print_error(f"cannot write the output: {lost.strerror or lost}")
        return code or 1
    return code


def _check_setup(args) -> None:
    """What every command relies on, checked with a stat or two and no parse: a state
    directory that is a directory, and an inventory named by --inventory or
    $WARPFORGE_INVENTORY that is a readable file (its contents are validated by the commands
    that use it)."""
    from warpforge_launch.storefile import check_home

    check_home()
    if args.command == "completion":
        return
    flag = getattr(args, "inventory", None)
    named = flag or os.environ.get("WARPFORGE_INVENTORY")
    if not named:
        return
    hint = f"named by {'--inventory' if flag else '$WARPFORGE_INVENTORY'}"
    try:
        if os.path.isdir(named):
            raise UsageError(f"inventory {named} is a directory", hint=hint)
        os.close(os.open(named, os.O_RDONLY | os.O_NONBLOCK))
    except FileNotFoundError:
        raise UsageError(f"inventory {named} does not exist", hint=hint) from None
    except OSError as exc:
        raise UsageError(f"inventory {named} cannot be read: {exc.strerror}", hint=hint) from None


def _main(argv: list[str] | None) -> int:
    args = None
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["__complete"]:  # the shells' Tab callback: hidden, fast, never an error
        from warpforge_launch.completion import main as complete

        return complete(argv[1:])
    try:
        args = plain_status(argv)
        if args is None:
            from warpforge_launch.sweep_cli import default_submit

            args = parse(default_submit(list(argv)))
        if not args.command:
            build_parser(names_only=True).print_help()
            return 2
        _check_setup(args)
        if getattr(args, "run", None):  # a command that lives in its own package (serve)
            return args.run(args)
        if args.command == "status":
            from warpforge_launch import quickstatus

            code = quickstatus.show(args)
            if code is not None:
                return code
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
    except Exception as exc:
        if args is not None and getattr(args, "debug", False):
            raise
        from warpforge_launch.output import print_error

        print_error(f"internal error: {type(exc).__name__}: {exc}",
                    hint="run again with --debug for the traceback")
        return 1
