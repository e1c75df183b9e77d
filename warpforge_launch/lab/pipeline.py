"""`invoke pipeline`: the whole path from source to a traced model, in one command.

build -> images/SIF (when configured) -> distribute -> smoke -> submit a trace job of the
stand-in's example to the chosen scheduler -> wait -> print the result (StableHLO head and the
time of each stage). On the built-in default inventory everything happens on this machine (a
local box, the Local scheduler).

A stage is skipped when its output is already current: the content hash of its inputs and of
what it produced is recorded in `$WARPFORGE_HOME/pipeline-state.json`, so a second run with
nothing changed only pays for the hashing and the trace job itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from warpforge_launch.errors import LaunchError, UsageError
from warpforge_launch.lab import ci
from warpforge_launch.lab import runsummary as rs
from warpforge_launch.lab.build import default_run_id

STATE_FILE = "pipeline-state.json"
BUILTIN = "builtin"  # --inventory builtin: the built-in default even where ./inventory.yaml is
EXAMPLE = ("examples/models/simple_mlp.py", "SimpleMLP", "[(1, 8)]")
JOB_WAIT = 900.0
HEAD_LINES = 8
HEAD_WIDTH = 120
# What a profile's build reads (relative to build.source); "." is the whole checkout.
PROFILE_INPUTS = {"standin": ("examples/snakegrinder",), "gradle": (".",)}
_SKIP_DIRS = {".git", ".venv", "__pycache__", ".gradle", "build", ".pytest_cache",
              ".ruff_cache", "snakegrinder-dist"}
REPO = Path(__file__).resolve().parents[2]


# ---- state -----------------------------------------------------------------------------------
class State:
    """The recorded keys of the last successful run of each stage, per inventory."""

    def __init__(self, path: Path, inventory_key: str):
        self.path, self.key = path, inventory_key
        try:
            self.doc = json.loads(path.read_text())
        except (OSError, ValueError):
            self.doc = {}
        self.stages: dict[str, Any] = self.doc.setdefault(inventory_key, {})

    def current(self, stage: str, key: str) -> bool:
        return self.stages.get(stage, {}).get("key") == key

    def record(self, stage: str, key: str, **extra: Any) -> None:
        self.stages[stage] = {"key": key, **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.doc, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def forget(self, *stages: str) -> None:
        for s in stages:
            self.stages.pop(s, None)


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()
                          ).hexdigest()[:24]


def _files(source: Path, scope: str) -> list[Path]:
    """Files a build reads: git's view (tracked + untracked, not ignored) when it is a
    checkout, else a walk that leaves build outputs and caches out."""
    root = source / scope
    if (source / ".git").exists():
        r = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "-co",
                            "--exclude-standard", "--", scope], capture_output=True,
                           timeout=60, stdin=subprocess.DEVNULL, check=False)
        if r.returncode == 0:
            return sorted(source / p for p in os.fsdecode(r.stdout).split("\0") if p)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(".pyc")]
    return out


def source_key(inv, branch: str | None = None) -> str:
    """The content hash of what the build reads, its steps and its floors."""
    from warpforge_launch.lab.build import resolve_steps

    cfg = inv.build
    steps, floors = resolve_steps(cfg)
    recipe = [cfg.profile, [list(s.run) for s in steps], dict(floors), sys.executable,
              str(ci.dist_dir(inv))]
    source = Path(cfg.source).expanduser().absolute()
    if cfg.repository:
        r = subprocess.run(["git", "ls-remote", "--", cfg.repository,
                            f"refs/heads/{branch or cfg.branch}"], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
                           env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        head = r.stdout.split()[0] if r.returncode == 0 and r.stdout.strip() else None
        return digest(recipe, head or f"unknown-{time.time()}")
    h = hashlib.sha256()
    for scope in PROFILE_INPUTS.get(cfg.profile, (".",)):
        for f in _files(source, scope):
            if f.is_file():
                h.update(os.fsencode(str(f.relative_to(source))) + b"\0")
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return digest(recipe, h.hexdigest())


def release_of(dist: Path) -> str | None:
    """The dist's content hash (its release name on the boxes), None if there is no dist."""
    from warpforge_launch.lab import manifest as manifests

    if not (dist / "bin" / "snakegrinder").exists():
        return None
    return manifests.scan(dist, cache=manifests.default_cache(dist)).hash


def _box_key(boxes) -> list:
    return [[b.name, b.transport, b.host, b.port, b.install_dir] for b in boxes]


def _local_current(boxes, release: str) -> bool:
    """Local boxes still have the release current (an ssh box is trusted to the record)."""
    for b in boxes:
        if b.transport == "local":
            link = Path(b.install_dir).expanduser() / "current"
            if not os.path.realpath(link).startswith(
                    os.path.realpath(Path(b.install_dir).expanduser() / "releases" / release)):
                return False
    return True


# ---- the job ---------------------------------------------------------------------------------
def example_source(inv) -> Path:
    for root in (Path(inv.build.source).expanduser(), REPO):
        p = root / EXAMPLE[0]
        if p.is_file():
            return p.absolute()
    raise UsageError(f"the stand-in's example {EXAMPLE[0]} is not in {inv.build.source} "
                     f"nor in {REPO}")


def run_trace_job(inv, scheduler: str | None, *, boxes: Sequence = (), out: TextIO | None = None
                  ) -> tuple[int, str]:
    """Submit the example trace job, wait, print the StableHLO head; (exit code, detail)."""
    from warpforge_launch.inputs import parse_inputs
    from warpforge_launch.jobs import JobDefinition, JobState
    from warpforge_launch.launcher import Launcher

    out = out or sys.stdout
    definition = JobDefinition(name="simple_mlp", source=str(example_source(inv)),
                               model_class=EXAMPLE[1], inputs=parse_inputs(EXAMPLE[2]))
    entry = inv.scheduler(scheduler)
    overrides = {}
    if entry.type == "local" and getattr(entry.config, "snakegrinder", "x") is None:
        local = [b for b in (boxes or inv.boxes.values()) if b.transport == "local"]
        binary = (Path(local[0].install_dir).expanduser() / "bin" / "snakegrinder" if local
                  else ci.dist_dir(inv) / "bin" / "snakegrinder")
        overrides["snakegrinder"] = str(binary)
    with Launcher(str(inv.path) if inv.path else None) as launcher:
        launcher._inventory = inv  # the very inventory this run loaded (also "builtin")
        job_id = launcher.submit(definition, entry.name, **overrides)
        out.write(f"job {job_id} submitted to {entry.name}\n")
        status = launcher.wait(job_id, timeout=JOB_WAIT)
        if not status.state.terminal:
            return 3, f"{job_id} still {status.state.value} after {JOB_WAIT:.0f}s"
        if status.state is not JobState.COMPLETED:
            return 1, f"{job_id} {status.state.value}: {status.message or ''}".strip()
        result = launcher.result(job_id)
    mlir = result.mlir_output or ""
    out.write(f"job {job_id} COMPLETED in {result.execution_time}\n")
    lines = mlir.splitlines()
    out.write(f"StableHLO (the first {min(HEAD_LINES, len(lines))} of {len(lines)} lines; "
              f"`warpforge-launch result {job_id}` prints it all):\n")
    for line in lines[:HEAD_LINES]:
        out.write(f"  {line[:HEAD_WIDTH]}{' ...' if len(line) > HEAD_WIDTH else ''}\n")
    where = next((p for p in result.outputs if p.endswith("/model.mlir")), None)
    if where:
        out.write(f"  (whole file: {where})\n")
    out.flush()
    if "stablehlo" not in mlir:
        return 1, f"{job_id}: no StableHLO in the result"
    return 0, f"{job_id} COMPLETED"


# ---- the run ---------------------------------------------------------------------------------
def pipeline_boxes(inv, selectors: Sequence[str] = ()) -> list:
    if selectors:
        return inv.select_boxes(selectors)
    gpu = [b for b in inv.boxes.values() if "gpu-boxes" in b.groups]
    return gpu or list(inv.boxes.values())


def run_pipeline(inv, *, scheduler: str | None = None, boxes: Sequence[str] = (),
                 force: bool = False, out: TextIO | None = None) -> rs.RunSummary:
    from warpforge_launch.store import home

    out = out or sys.stdout
    run_id = default_run_id(os.environ)
    summary = rs.RunSummary("Pipeline", run_id)
    state = State(home() / STATE_FILE, inv.describe())
    if force:
        state.forget("build", "distribute", "smoke")
    targets = pipeline_boxes(inv, boxes)
    dist = ci.dist_dir(inv)
    releases: dict[str, str | None] = {}

    def release(fresh: bool = False) -> str | None:
        """The dist's release, scanned once per run (again after a build)."""
        if fresh or "r" not in releases:
            releases["r"] = release_of(dist)
        return releases["r"]
    log_root = Path(inv.lab.log_root).expanduser()

    def stage(name: str, box: str, fn) -> bool:
        t = time.monotonic()
        if not summary.ok:
            summary.add(name, box, rs.SKIPPED, detail="an earlier stage failed")
            return False
        try:
            status, detail, code = fn()
        except LaunchError as e:
            status, detail, code = rs.FAILED, str(e), e.exit_code
        summary.add(name, box, status, seconds=time.monotonic() - t, detail=detail,
                    exit_code=code)
        out.write(f"[pipeline] {name}: {status}" + (f" - {detail}" if detail else "") + "\n")
        out.flush()
        return status != rs.FAILED

    def build():
        key = source_key(inv)
        have = release()
        if state.current("build", key) and have and state.stages["build"].get("release") == have:
            return rs.SKIPPED, f"current (release {have})", 0
        code, detail = ci.nuc_build(inv, log_root, run_id, None, out)
        if code:
            return rs.FAILED, detail, code
        state.record("build", key, release=release(fresh=True))
        return rs.PASSED, f"release {release()}", 0

    def optional(fn):
        def run():
            code, detail = fn(inv, run_id)
            if code is None:
                return rs.SKIPPED, detail, 0
            return (rs.PASSED, detail, 0) if code == 0 else (rs.FAILED, detail, code)
        return run

    def distribute():
        from warpforge_launch.lab import releases as dist_mod

        key = digest(release(), _box_key(targets))
        if release() and state.current("distribute", key) and \
                _local_current(targets, release()):
            return rs.SKIPPED, f"current on {len(targets)} box(es)", 0
        results = dist_mod.distribute(targets, dist, opts=ci.smoke_options(inv).distribute)
        failed = [r for r in results if not r.ok]
        if failed:
            return rs.FAILED, "; ".join(f"{r.box}: {r.error}" for r in failed), \
                dist_mod.exit_code(results)
        state.record("distribute", key)
        return rs.PASSED, ", ".join(f"{r.box} {r.action}" for r in results), 0

    def smoke():
        from warpforge_launch.lab import smoke as smoke_mod

        opts = ci.smoke_options(inv)
        key = digest(release(), _box_key(targets), opts.checks)
        if state.current("smoke", key) and state.stages.get("distribute"):
            return rs.SKIPPED, "current (passed with this release)", 0
        report = smoke_mod.run(targets, dist, opts)
        detail = "; ".join(f"{o.box} {o.status}" + (f" ({o.reason})" if o.reason else "")
                           for o in report.outcomes)
        if report.exit_code:
            return rs.FAILED, detail, report.exit_code
        if report.overall == smoke_mod.PASSED:
            state.record("smoke", key)
        return rs.PASSED, detail, 0

    def job():
        code, detail = run_trace_job(inv, scheduler, boxes=targets, out=out)
        return (rs.PASSED if code == 0 else rs.FAILED), detail, code

    stage("build", "nuc", build)
    stage("images", "nuc", optional(ci.images_stage))
    stage("sif", "nuc", optional(ci.sif_stage))
    names = ",".join(b.name for b in targets)
    stage("distribute", names, distribute)
    stage("smoke", names, smoke)
    stage("job", inv.scheduler(scheduler).name, job)
    for line in ["", *rs.table_lines(summary)]:
        out.write(line + "\n")
    out.flush()
    rs.write_step_summary(summary)
    return summary


def main(inventory: str | None = None, *, scheduler: str = "", boxes: str = "",
         force: bool = False) -> int:
    """`invoke pipeline`: 0 when the trace job COMPLETED, else the first failure's code."""
    from warpforge_launch import inventory as inv_mod

    try:
        if inventory == BUILTIN:
            inv = inv_mod.parse(inv_mod.default_document(), None, os.environ)
        else:
            inv = inv_mod.load(inventory or None)
        inv.scheduler(scheduler or None)
        summary = run_pipeline(inv, scheduler=scheduler or None, boxes=ci.parse_list(boxes),
                               force=force)
    except LaunchError as e:
        from warpforge_launch.output import print_error

        print_error(e)
        return e.exit_code
    return summary.exit_code
