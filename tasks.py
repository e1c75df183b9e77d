"""Invoke tasks: thin wrappers over warpforge_launch (the logic lives in the package).

`invoke --list` shows them. Lab tasks take --inventory; never point them at the production
inventory from a test machine. Only invoke is imported here: each task imports what it
needs in its body, so listing and starting a task stay fast.
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

    from warpforge_launch.lab import build as lab_build

    code = lab_build.main(inventory or None, branch=branch or None, run_id=run_id or None,
                      sync=not no_sync)
    if code:
        raise Exit(code=code)


# ---- lab: wake, distribute, rollback, smoke (bodies in warpforge_launch.lab.commands) -------
_LAB_HELP = {"boxes": "box names, aliases or groups, comma-separated (default: all)",
             "inventory": "inventory file (tests generate a loopback one)",
             "json": "machine-readable output", "accept_new": "record unknown host keys "
             "(like ssh's accept-new; a changed key is still refused)"}


def _exit(code: int) -> None:
    from invoke import Exit

    if code:
        raise Exit(code=code)


@task(help={**{k: v for k, v in _LAB_HELP.items() if k != "accept_new"},
            "no_send": "only wait for SSH, send no magic packet",
            "timeout": "seconds to wait per box", "interval": "seconds between polls"})
def wake(c, boxes="", inventory="", no_send=False, timeout="", interval="", json=False):
    """Wake boxes (wake-on-LAN) and wait until they answer SSH."""
    from warpforge_launch.lab import commands

    _exit(commands.wake(boxes=boxes, inventory=inventory, send=not no_send, timeout=timeout,
                        interval=interval, as_json=json))


@task(help={**_LAB_HELP, "dist": "dist directory (default: DIST_DIR_OVERRIDE or the build's)",
            "keep": "releases to keep per box", "verify": "re-check every file's checksum",
            "repair": "re-check every file and re-send the ones that differ"})
def distribute(c, boxes="", inventory="", dist="", keep="", accept_new=False, verify=False,
               repair=False, json=False):
    """Push the dist to boxes: atomic release switch, only changed files sent, in parallel."""
    from warpforge_launch.lab import commands

    _exit(commands.distribute(boxes=boxes, inventory=inventory, dist=dist, keep=keep,
                              accept_new=accept_new, verify=verify, repair=repair,
                              as_json=json))


@task(help={**_LAB_HELP, "to": "release (hash prefix) to switch to (default: the previous)"})
def rollback(c, boxes="", inventory="", to="", accept_new=False, json=False):
    """Switch boxes back to their previous release."""
    from warpforge_launch.lab import commands

    _exit(commands.rollback(boxes=boxes, inventory=inventory, to=to, accept_new=accept_new,
                            as_json=json))


@task(help={**_LAB_HELP, "dist": "dist directory (default: DIST_DIR_OVERRIDE or the build's)",
            "checks": "comma-separated: exists,help,version,trace-example,checksums",
            "junit": "JUnit XML report path ('' for none)"})
def smoke(c, boxes="", inventory="", dist="", checks="", junit="reports/smoke-junit.xml",
          accept_new=False, json=False):
    """Smoke-test the dist on boxes: dist check, wake, wait, distribute, verify (testinfra)."""
    from warpforge_launch.lab import commands

    _exit(commands.smoke(boxes=boxes, inventory=inventory, dist=dist, checks=checks,
                         junit=junit, accept_new=accept_new, as_json=json))
