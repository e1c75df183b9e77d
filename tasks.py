"""Invoke tasks: thin wrappers over warpforge_launch (the logic lives in the package).

`invoke --list` shows them. Lab tasks take --inventory; never point them at the production
inventory from a test machine.
"""

from __future__ import annotations

import shlex
import sys

from invoke import task


@task(help={"k": "only tests matching this expression", "args": "extra pytest arguments"})
def test(c, k="", args=""):
    """Run the test suite (the lab components start from the tests' own fixtures)."""
    argv = [sys.executable, "-m", "pytest", "tests"] + (["-k", k] if k else [])
    c.run(shlex.join(argv) + (" " + args if args else ""), pty=False)


@task
def lint(c):
    """ruff over the package, tests, benchmarks and tasks."""
    c.run(shlex.join([sys.executable, "-m", "ruff", "check", "warpforge_launch", "tests",
                      "benchmarks", "tasks.py"]))


@task(help={"scheduler": "scheduler instance (default: the inventory's default)",
            "source": "model source", "cls": "model class", "inputs": "input specs",
            "inventory": "inventory file"})
def submit(c, source="examples/models/simple_mlp.py", cls="SimpleMLP", inputs="[(1, 8)]",
           scheduler="", inventory=""):
    """Submit a model through warpforge-launch, wait, and print the result."""
    argv = [sys.executable, "-m", "warpforge_launch"]
    if inventory:
        argv += ["--inventory", inventory]
    argv += ["submit", "--source", source, "--class", cls, "--inputs", inputs, "--wait"]
    if scheduler:
        argv += ["--scheduler", scheduler]
    c.run(shlex.join(argv))


@task(help={"inventory": "inventory file (default: the usual search order)",
            "branch": "branch to build (default: build.branch; CI passes $GITHUB_REF_NAME)",
            "run_id": "run id for the log name (default: $GITHUB_RUN_ID, else a timestamp)",
            "no_sync": "build the source tree as it is: no fetch, reset or clean"})
def build(c, inventory="", branch="", run_id="", no_sync=False):
    """NUC build: sync the source, run the build steps, check test floors and the dist."""
    from invoke import Exit

    from warpforge_launch.lab.build import main as build_main

    code = build_main(inventory or None, branch=branch or None, run_id=run_id or None,
                      sync=not no_sync)
    if code:
        raise Exit(code=code)
