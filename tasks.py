"""Invoke tasks: thin wrappers over warpforge_launch (the logic lives in the package).

`invoke --list` shows them. Lab tasks take --inventory; never point them at the production
inventory from a test machine. Only invoke is imported here: each task imports what it
needs in its body, so listing and starting a task stay fast.
"""

from __future__ import annotations

import shlex
import sys

from invoke import task


def _usage_errors_exit_2() -> None:
    """invoke's own parser prints "No idea what '--bogus' is!" and exits 1; the lab's usage
    errors are one `error:` line with exit 2 (docs/lab.md), so the parse of the task
    arguments, which runs after this file is loaded, is wrapped to say it that way."""
    from invoke.exceptions import Exit, ParseError
    from invoke.program import Program

    parse = Program.parse_tasks
    if getattr(parse, "wf_usage", False):
        return

    def parse_tasks(self):
        try:
            parse(self)
        except ParseError as exc:
            raise Exit(f"error: {exc}\nhint: `invoke --help TASK` lists its options",
                       code=2) from None

    parse_tasks.wf_usage = True
    Program.parse_tasks = parse_tasks


_usage_errors_exit_2()


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
    import gc

    from invoke import Exit

    gc.freeze()  # the task's work is done: the collections at exit need not walk it all
    if code:
        raise Exit(code=code)


@task(help={**{k: v for k, v in _LAB_HELP.items() if k != "accept_new"},
            "no_send": "only wait for SSH, send no magic packet",
            "timeout": "seconds to wait per box", "interval": "seconds between polls"})
def wake(c, boxes=None, inventory="", no_send=False, timeout="", interval="", json=False):
    """Wake boxes (wake-on-LAN) and wait until they answer SSH."""
    from warpforge_launch.lab import commands

    _exit(commands.wake(boxes=boxes, inventory=inventory, send=not no_send, timeout=timeout,
                        interval=interval, as_json=json))


@task(help={**_LAB_HELP, "dist": "dist directory (default: DIST_DIR_OVERRIDE or the build's)",
            "keep": "releases to keep per box", "verify": "re-check every file's checksum",
            "repair": "re-check every file and re-send the ones that differ"})
def distribute(c, boxes=None, inventory="", dist="", keep="", accept_new=False, verify=False,
               repair=False, json=False):
    """Push the dist to boxes: atomic release switch, only changed files sent, in parallel."""
    from warpforge_launch.lab import commands

    _exit(commands.distribute(boxes=boxes, inventory=inventory, dist=dist, keep=keep,
                              accept_new=accept_new, verify=verify, repair=repair,
                              as_json=json))


@task(help={**_LAB_HELP, "to": "release (hash prefix) to switch to (default: the previous)"})
def rollback(c, boxes=None, inventory="", to="", accept_new=False, json=False):
    """Switch boxes back to their previous release."""
    from warpforge_launch.lab import commands

    _exit(commands.rollback(boxes=boxes, inventory=inventory, to=to, accept_new=accept_new,
                            as_json=json))


@task(help={**_LAB_HELP, "dist": "dist directory (default: DIST_DIR_OVERRIDE or the build's)",
            "checks": "comma-separated: exists,help,version,trace-example,checksums",
            "junit": "JUnit XML report path ('' for none)"})
def smoke(c, boxes=None, inventory="", dist="", checks="", junit="reports/smoke-junit.xml",
          accept_new=False, json=False):
    """Smoke-test the dist on boxes: dist check, wake, wait, distribute, verify (testinfra)."""
    from warpforge_launch.lab import commands

    _exit(commands.smoke(boxes=boxes, inventory=inventory, dist=dist, checks=checks,
                         junit=junit, accept_new=accept_new, as_json=json))


@task(name="gpu-info", help={"boxes": _LAB_HELP["boxes"], "inventory": _LAB_HELP["inventory"],
                             "json": _LAB_HELP["json"],
                             "wake": "wake asleep boxes first (wake-on-LAN)",
                             "timeout": "seconds per box (default 20)"})
def gpu_info(c, boxes=None, inventory="", wake=False, timeout="", json=False):
    """The boxes' GPUs: nvidia-smi / rocm-smi / amd-smi over SSH, every box at once."""
    from warpforge_launch.lab import commands

    _exit(commands.gpu_info(boxes=boxes, inventory=inventory, wake=wake, timeout=timeout,
                            as_json=json))


# ---- CI on the NUC and the whole pipeline (bodies in warpforge_launch.lab.ci / .pipeline) ----
@task(help={"inventory": "inventory file (tests generate a loopback one)",
            "run_id": "run id for the log names (default: $GITHUB_RUN_ID, else a timestamp)",
            "branch": "branch for the NUC build and the boxes (default: the inventory's)",
            "skip": "stages to skip, comma-separated: build,images,smoke,boxes,job",
            "skip_boxes": "ci boxes to leave out, comma-separated",
            "no_shutdown": "leave every box on after its build",
            "scheduler": "submit the example trace job there at the end (default: no job)",
            "junit": "JUnit XML of the run (default: <log_root>/ci-<run id>-junit.xml)",
            "log_root": "where the logs go (default: ci.log_root, else lab.log_root)",
            "accept_new": "record unknown host keys (a changed key is still refused)"})
def ci(c, inventory="", run_id="", branch="", skip="", skip_boxes="", no_shutdown=False,
       scheduler="", junit="", log_root="", accept_new=False):
    """The NUC orchestration: build -> images/SIF -> distribute + smoke -> box builds."""
    from warpforge_launch.lab import ci as ci_mod

    _exit(ci_mod.main(inventory or None, run_id=run_id, branch=branch, skip=skip,
                      skip_boxes=skip_boxes, no_shutdown=no_shutdown, scheduler=scheduler,
                      junit=junit, log_root=log_root, accept_new=accept_new))


@task(name="shutdown-mode", positional=["action"],
      help={"action": "status | enable (power off after a green run) | disable (stay on)",
            "boxes": "box names, aliases or groups (default: the ci boxes)",
            "inventory": "inventory file", "accept_new": _LAB_HELP["accept_new"]})
def shutdown_mode(c, action, boxes="", inventory="", accept_new=False):
    """Show or set the no-shutdown flag file (<install_dir>/.no-shutdown) on boxes."""
    from warpforge_launch.lab import ci as ci_mod

    _exit(ci_mod.shutdown_mode(action, boxes=boxes, inventory=inventory,
                               accept_new=accept_new))


@task(help={"inventory": "inventory file (default: the usual search order)",
            "scheduler": "scheduler instance for the trace job (default: the inventory's)",
            "boxes": "boxes to distribute to and smoke-test (default: gpu-boxes, else all)",
            "force": "run every stage even when its output is current"})
def pipeline(c, inventory="", scheduler="", boxes="", force=False):
    """build -> images/SIF -> distribute -> smoke -> trace job -> result; current stages skip."""
    from warpforge_launch.lab import pipeline as pipeline_mod

    _exit(pipeline_mod.main(inventory or None, scheduler=scheduler, boxes=boxes, force=force))


# ---- containers: the registry, images and SIFs (bodies in warpforge_launch.lab.registry,
# .images and .sif); `invoke registry.up` etc. come from the namespace built at the end.
_REG_HELP = {"inventory": "inventory file (tests generate a loopback one)",
             "json": "machine-readable output"}


@task(help=_REG_HELP)
def registry_up(c, inventory="", json=False):
    """Start the registry container (restart=always, data kept); idempotent."""
    from warpforge_launch.lab import registry

    _exit(registry.command("up", inventory=inventory, as_json=json))


@task(help=_REG_HELP)
def registry_down(c, inventory="", json=False):
    """Stop and remove the registry container; its data stays."""
    from warpforge_launch.lab import registry

    _exit(registry.command("down", inventory=inventory, as_json=json))


@task(help=_REG_HELP)
def registry_status(c, inventory="", json=False):
    """Repositories, tags, digests and disk use of the registry."""
    from warpforge_launch.lab import registry

    _exit(registry.command("status", inventory=inventory, as_json=json))


@task(help=_REG_HELP)
def registry_gc(c, inventory="", json=False):
    """Delete blobs no tag refers to; prints the disk use before and after."""
    from warpforge_launch.lab import registry

    _exit(registry.command("gc", inventory=inventory, as_json=json))


@task(help={**_LAB_HELP})
def registry_trust(c, boxes="", inventory="", accept_new=False, json=False):
    """Merge the registry into insecure-registries of the boxes' daemon.json (over SSH)."""
    from warpforge_launch.lab import registry

    _exit(registry.trust_command(boxes=boxes, inventory=inventory, accept_new=accept_new,
                                 as_json=json))


@task(help={**_REG_HELP, "dist": "dist directory (default: DIST_DIR_OVERRIDE or the build's)",
            "vendors": "nvidia,amd (default: images.vendors)",
            "no_push": "build and check only"})
def images(c, inventory="", dist="", vendors="", no_push=False, json=False):
    """Build, check, push and verify the NVIDIA and AMD images (Docker SDK)."""
    from warpforge_launch.lab import images as images_mod

    _exit(images_mod.command(inventory=inventory, dist=dist, vendors=vendors, no_push=no_push,
                             as_json=json))


@task(help={**_REG_HELP, "vendors": "nvidia,amd (default: images.vendors)",
            "check": "only report configured SIFs that are missing (exit 1 if any)"})
def sif(c, inventory="", vendors="", check=False, json=False):
    """One SIF per vendor from the pushed image, published where Slurm looks for it."""
    from warpforge_launch.lab import sif as sif_mod

    _exit(sif_mod.command(inventory=inventory, vendors=vendors, check=check, as_json=json))


def _namespace():
    from invoke import Collection

    root = Collection.from_module(sys.modules[__name__])
    reg = Collection("registry")
    for name, fn in (("up", registry_up), ("down", registry_down), ("status", registry_status),
                     ("gc", registry_gc), ("trust", registry_trust)):
        for key in [k for k, t in root.tasks.items() if t is fn]:
            root.tasks.pop(key)
        reg.add_task(fn, name=name)
    root.add_collection(reg)
    return root


ns = _namespace()
