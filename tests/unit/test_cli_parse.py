"""A command builds only its own parser: the same arguments and errors as the whole one."""

import pytest

from warpforge_launch import cli
from warpforge_launch.errors import UsageError


@pytest.mark.parametrize("argv", [
    ["status", "a-1", "b-2"],
    ["--json", "--inventory", "inv.yaml", "status", "a-1"],
    ["--inventory=inv.yaml", "--debug", "list", "--state", "running", "--lim", "3"],
    ["submit", "--source", "m.py", "--inputs", "[(1, 8)]", "--gpu", "amd", "--env", "A=1"],
    ["logs", "-f", "a-1"],
    ["cluster-info", "--scheduler", "hpc", "--json"],
    ["schedulers"],
    ["serve", "--port", "0"],
    ["--inv", "x.yaml", "status", "a-1"],
])
def test_one_command_parses_as_the_whole_parser(argv):
    assert vars(cli.parse(argv)) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["status"], ["list", "--state", "DONE"], ["status", "a-1", "--nope"], ["frobnicate"],
    ["submit", "--source", "x.py", "--gpu-count", "two"],
])
def test_errors_are_worded_by_the_whole_parser(argv):
    with pytest.raises(UsageError) as fast:
        cli.parse(argv)
    with pytest.raises(UsageError) as whole:
        cli.build_parser().parse_args(argv)
    assert str(fast.value) == str(whole.value) and fast.value.hint == whole.value.hint


def test_every_command_is_in_the_whole_help(capsys):
    cli.build_parser().print_help()
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)


def test_only_the_named_command_is_built():
    sub = next(a for a in cli.build_parser(only="status")._actions if a.dest == "command")
    assert list(sub.choices) == ["status"]
    assert cli._command_named(["--inventory", "status", "list"]) == "list"
    assert cli._command_named(["--help", "status"]) is None
    assert cli._command_named(["--inv", "x", "status"]) is None


def test_an_adder_of_several_commands_runs_once(monkeypatch):
    def both(sub, parents):
        for name in ("aa", "bb"):
            sub.add_parser(name, parents=parents).add_argument("x")

    monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, "aa": both, "bb": both})
    assert cli.parse(["bb", "1"]).command == "bb"
    assert vars(cli.parse(["--json", "aa", "2"])) == vars(cli.build_parser().parse_args(
        ["--json", "aa", "2"]))


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--json", "--help"], []])
def test_top_level_help_is_the_whole_parsers_help(argv, capsys, monkeypatch):
    """Top-level help is built from the commands' names and help lines only, and says
    exactly what the whole parser says."""
    monkeypatch.setenv("COLUMNS", "100")
    whole = cli.build_parser().format_help()
    assert cli.build_parser(names_only=True).format_help() == whole
    code = None
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's --help
        code = exc.code
    assert code == (2 if not argv else 0)
    assert capsys.readouterr().out == whole


@pytest.mark.parametrize("argv", [
    ["status", "a-1"],
    ["status", "a-1", "b-2", "c-3"],
    ["--json", "status", "a-1", "--json"],
    ["--inventory", "x.yaml", "status", "--inventory=y.yaml", "a-1", "--debug"],
    ["--inventory", "status", "status", "a-1"],
    ["status", "--inventory=", "a-1", "b-2", "--json", "--inventory", "z.yaml"],
])
def test_a_plain_status_is_read_without_argparse(argv):
    """`status ID...` skips argparse (its import costs a live status more than the request)
    and gives exactly the namespace argparse gives."""
    plain = cli.plain_status(argv)
    assert plain is not None
    assert vars(plain) == vars(cli.build_parser().parse_args(argv))
    assert vars(cli.parse(argv)) == vars(plain)


def test_plain_status_agrees_with_argparse_or_leaves_it_to_argparse():
    """Every mix of these words: read the same as argparse, or left to argparse (which
    then reads it, or words the error)."""
    import itertools
    import random

    words = ["status", "a-1", "b-2", "--json", "--debug", "--inventory", "x.yaml",
             "--inventory=y.yaml", "--inventory=", "-x", "--", "--inv", "list", "-1", "-h"]
    rng = random.Random(7)
    argvs = [list(p) for n in range(4) for p in itertools.product(words, repeat=n)]
    argvs += [rng.choices(words, k=rng.randint(4, 8)) for _ in range(4000)]
    taken = 0
    for argv in argvs:
        plain = cli.plain_status(argv)
        if plain is None:
            continue
        taken += 1
        assert vars(plain) == vars(cli.build_parser().parse_args(argv)), argv
    assert taken > 100  # the plain reading is not vacuous


def test_status_imports_no_argparse():
    import subprocess
    import sys

    code = ("import sys; from warpforge_launch import cli; "
            "a = cli.parse(['status', 'a-1', '--json']); "
            "print(a.command, 'argparse' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["status", "False"]
