"""`invoke ci`: the NUC orchestration, end to end, driven by the inventory.

NUC build -> images and SIFs (when configured) -> distribute + smoke -> box builds. The box
builds take the inventory's `ci.boxes` in order; a box runs only if every box it depends on
PASSED (NVIDIA first, AMD only after it). On each box, over the lab's SSH layer: wake if
asleep, fetch / hard reset / clean keeping the cache paths, build, test, JUnit floors, the
vendor's GPU tests, then power off on success unless the box's no-shutdown flag file exists.
Each step has a timeout (enforced on the box with coreutils `timeout`, and locally as a
backstop) and its output streams live to `<log_root>/<box>-<run id>.log`.

Other stages are reached through the small adapters at the end of this module, one place
each, so their modules can change shape without this one changing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shlex
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError
from warpforge_launch.lab import runsummary as rs
from warpforge_launch.lab.build import StageFailed, Tee, check_floors, default_run_id
from warpforge_launch.lab.build import run_streamed as _run_streamed

NO_SHUTDOWN_FLAG = ".no-shutdown"
STAGES = ("build", "images", "smoke", "boxes", "job")
KILL_AFTER = 10  # seconds between `timeout`'s TERM and KILL on the box

# Runs on the box: clone if missing, fetch, hard reset to origin/<branch>, clean keeping the
# cache paths ("-e PATH" pairs after the fixed arguments). Paths arrive as arguments only.
_SYNC = r"""
set -e
d=$1; repo=$2; branch=$3; shift 3
export GIT_TERMINAL_PROMPT=0
if [ ! -d "$d/.git" ]; then mkdir -p -- "$d"; git clone -q --no-checkout -- "$repo" "$d"; fi
cd -- "$d"
git remote set-url origin "$repo"
git fetch -q --prune origin
git checkout -q -B "$branch" "origin/$branch"
git reset -q --hard "origin/$branch"
git clean -q -ffdx "$@"
echo "at $(git rev-parse HEAD)"
"""
_IN_DIR = 'cd -- "$1" && shift && exec "$@"'
# The JUnit results of the floor modules, as one tar stream (nothing when none exist).
_RESULTS = r"""
d=$1; shift; cd -- "$d" || exit 1; k=$#
for m do if [ -d "$m/build/test-results" ]; then set -- "$@" "$m/build/test-results"; fi; done
shift "$k"
[ $# -gt 0 ] || exit 0
exec tar -cf - -- "$@"
"""


@dataclasses.dataclass(frozen=True)
class Options:
    run_id: str | None = None
    branch: str | None = None  # the NUC build's and the boxes' branch (default: inventory)
    skip_stages: frozenset[str] = frozenset()
    skip_boxes: tuple[str, ...] = ()
    no_shutdown: bool = False
    scheduler: str | None = None  # submit a trace job there at the end (None: no job)
    junit: Path | None = None  # default <log_root>/ci-<run id>-junit.xml
    log_root: Path | None = None
    accept_new: bool = False


def flag_path(box) -> str:
    return f"{box.install_dir.rstrip('/')}/{NO_SHUTDOWN_FLAG}"


def remote_dir(ci, box) -> str:
    """The checkout on the box; a relative ci.remote_dir is under the login's home."""
    if box.transport == "local" and not ci.remote_dir.startswith("/"):
        return str(Path.home() / ci.remote_dir)
    return ci.remote_dir


# ---- streaming a step ----------------------------------------------------------------------
def _step_argv(box, argv: Sequence[str], timeout: float, timeouts) -> list[str]:
    """The local argv that runs argv on the box under `timeout` (OpenSSH for ssh boxes)."""
    bounded = ["timeout", "-k", str(KILL_AFTER), f"{timeout:g}", *argv]
    if box.transport == "local":
        return bounded
    return _ssh_argv(box, timeouts, shlex.join(bounded))


def stream_step(box, argv: Sequence[str], timeout: float, tee: Tee, timeouts) -> None:
    """Run argv on the box, its output streamed to the log; StageFailed on a failure."""
    tee.log("$ " + shlex.join(argv))
    local = _step_argv(box, argv, timeout, timeouts)
    code = _run_streamed(local, Path.home(), timeout + KILL_AFTER + 30, tee)
    if code == 124 or code == 137:
        raise StageFailed(f"timed out after {timeout:g}s", "timeout")
    if code == 255 and box.transport == "ssh":
        raise InfrastructureError(f"box {box.name}: ssh failed (exit 255); see the log")
    if code != 0:
        raise StageFailed(f"exit {code}")


# ---- one box -------------------------------------------------------------------------------
class BoxBuild:
    """The box-build steps of one box, each a row of the run summary."""

    def __init__(self, inv, box, opts: Options, summary: rs.RunSummary, log_root: Path,
                 run_id: str, out: TextIO):
        self.inv, self.box, self.ci, self.opts = inv, box, inv.ci, opts
        self.summary, self.run_id = summary, run_id
        self.log = log_root / f"{box.name}-{run_id}.log"
        self.junit_dir = log_root / f"{box.name}-{run_id}-junit"
        self.tee = Tee(self.log, out)
        self.timeouts = _timeouts(inv, opts)
        self.session = None

    def row(self, stage: str, status: str, started: float, detail: str = "",
            exit_code: int | None = None) -> str:
        self.summary.add(stage, self.box.name, status, seconds=time.monotonic() - started,
                         detail=detail, log=self.log, exit_code=exit_code)
        self.tee.log(f"{stage}: {status}" + (f" - {detail}" if detail else ""))
        return status

    def run(self) -> str:
        """PASSED, FAILED or SKIPPED for the whole box."""
        try:
            self.tee.log(f"==== BOX BUILD {self.box.name} (run {self.run_id}) ====")
            return self._run()
        finally:
            if self.session is not None:
                with contextlib.suppress(Exception):
                    self.session.close()
            self.tee.close()

    def _run(self) -> str:
        box, ci, lab = self.box, self.ci, self.inv.lab
        t = time.monotonic()
        try:
            w = _wake(box, send=lab.wake_boxes, timeout=lab.wake_timeout,
                      poll=lab.wake_interval, probe=lab.connect_timeout)
        except LaunchError as e:
            return self._rest_skipped(self.row("wake", rs.FAILED, t, str(e), e.exit_code))
        if not w.reachable:
            if lab.skip_if_unreachable:
                self.row("wake", rs.SKIPPED, t, f"{w.note} (SKIP_IF_UNREACHABLE=1)")
                return self._rest_skipped(rs.SKIPPED, "box unreachable")
            self.row("wake", rs.FAILED, t, f"{w.note} (SKIP_IF_UNREACHABLE=0)", 3)
            return self._rest_skipped(rs.FAILED)
        self.row("wake", rs.PASSED, t, ("woken: " if w.sent else "") + w.note)
        directory = remote_dir(ci, box)
        keep = [a for p in ci.cache_paths for a in ("-e", p)]
        steps = [
            ("sync", ["sh", "-c", _SYNC, "wf-ci-sync", directory, ci.repository,
                      self.opts.branch or ci.branch, *keep], ci.timeouts.sync),
            ("build", ["sh", "-c", _IN_DIR, "wf-ci", directory, *ci.build], ci.timeouts.build),
            ("test", ["sh", "-c", _IN_DIR, "wf-ci", directory, *ci.test], ci.timeouts.test),
            ("test floors", None, ci.timeouts.test),
            ("gpu tests", None, ci.timeouts.gpu_tests),
        ]
        for stage, argv, timeout in steps:
            t = time.monotonic()
            try:
                if stage == "sync":
                    self.session = _open_session(box, self.timeouts, self.opts.accept_new)
                if stage == "test floors":
                    detail = self._floors(directory)
                elif stage == "gpu tests":
                    gpu = ci.gpu_tests.get(box.gpu_type)
                    if not gpu:
                        self.row(stage, rs.SKIPPED, t, f"no GPU tests for {box.gpu_type}")
                        continue
                    stream_step(box, ["sh", "-c", _IN_DIR, "wf-ci", directory, *gpu], timeout,
                                self.tee, self.timeouts)
                    detail = ""
                else:
                    stream_step(box, argv, timeout, self.tee, self.timeouts)
                    detail = ""
            except StageFailed as e:
                status = rs.TIMEOUT if e.status == "timeout" else rs.FAILED
                return self._rest_skipped(self.row(stage, status, t, str(e)))
            except LaunchError as e:
                return self._rest_skipped(self.row(stage, rs.FAILED, t, str(e), e.exit_code))
            self.row(stage, rs.PASSED, t, detail)
        self._power_off()
        return rs.PASSED

    def _floors(self, directory: str) -> str:
        floors = self.ci.test_floors
        if not floors:
            return "none configured"
        r = self.session.run(["sh", "-c", _RESULTS, "wf-ci-results", directory, *floors],
                             timeout=self.ci.timeouts.test, what="reading the JUnit results")
        self.junit_dir.mkdir(parents=True, exist_ok=True)
        if r.stdout:
            with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
                tar.extractall(self.junit_dir, filter="data")
        return check_floors(self.junit_dir, floors, self.tee)

    def _power_off(self) -> None:
        t = time.monotonic()
        if self.opts.no_shutdown:
            self.row("power off", rs.SKIPPED, t, "--no-shutdown: the box stays on")
            return
        try:
            flag = self.session.run(["test", "-e", flag_path(self.box)], check=False,
                                    timeout=30)
            if flag.ok:
                self.row("power off", rs.SKIPPED, t,
                         f"no-shutdown flag {flag_path(self.box)} is set: the box stays on")
                return
            self.tee.log("$ " + shlex.join(self.ci.power_off))
            r = self.session.run(self.ci.power_off, check=False,
                                 timeout=self.ci.timeouts.power_off)
        except InfrastructureError as e:  # the box went down under the command: that is it
            self.row("power off", rs.PASSED, t, f"connection closed ({e})")
            return
        except LaunchError as e:
            self.row("power off", rs.FAILED, t, str(e), e.exit_code)
            return
        for line in (r.out + r.err).splitlines():
            self.tee.line(line)
        if r.ok:
            self.row("power off", rs.PASSED, t, shlex.join(self.ci.power_off))
        else:
            self.row("power off", rs.FAILED, t, f"{self.ci.power_off[0]}: {r.reason()}")

    def _rest_skipped(self, status: str, why: str = "") -> str:
        done = {r.stage for r in self.summary.rows if r.box == self.box.name}
        for stage in ("wake", "sync", "build", "test", "test floors", "gpu tests", "power off"):
            if stage not in done:
                self.summary.add(stage, self.box.name, rs.SKIPPED,
                                 detail=why or "an earlier step failed", log=self.log)
        return status


# ---- the run -------------------------------------------------------------------------------
def run_ci(inv, opts: Options = Options(), out: TextIO | None = None) -> rs.RunSummary:
    """Every stage in order; never raises for a failed stage (the summary says what failed)."""
    out = out or sys.stdout
    run_id = opts.run_id or default_run_id(os.environ)
    ci = inv.ci
    log_root = Path(opts.log_root or ci.log_root or inv.lab.log_root).expanduser()
    try:
        log_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the log root {log_root}: {e.strerror}",
                         hint="set ci.log_root or pass --log-root") from None
    summary = rs.RunSummary("CI", run_id)
    nuc_log = log_root / f"nuc-{run_id}.log"
    selected = ci_boxes(inv, opts.skip_boxes)

    def blocked() -> bool:
        return not summary.ok

    t = time.monotonic()
    if "build" in opts.skip_stages:
        summary.add("build", "nuc", rs.SKIPPED, detail="--skip build")
    else:
        code, detail = nuc_build(inv, log_root, run_id, opts.branch, out)
        summary.add("build", "nuc", rs.PASSED if code == 0 else rs.FAILED,
                    seconds=time.monotonic() - t, detail=detail, log=nuc_log, exit_code=code)
    for stage, fn in (("images", images_stage), ("sif", sif_stage)):
        t = time.monotonic()
        if blocked() or "images" in opts.skip_stages:
            summary.add(stage, "nuc", rs.SKIPPED,
                        detail="an earlier stage failed" if blocked() else "--skip images")
            continue
        code, detail = fn(inv, run_id)
        status = rs.SKIPPED if code is None else rs.PASSED if code == 0 else rs.FAILED
        summary.add(stage, "nuc", status, seconds=time.monotonic() - t, detail=detail,
                    exit_code=code or 0)
    smoke_boxes = [inv.boxes[e.box] for e in selected]
    if blocked() or "smoke" in opts.skip_stages or not smoke_boxes:
        why = ("an earlier stage failed" if blocked() else "--skip smoke"
               if "smoke" in opts.skip_stages else "no ci.boxes")
        for b in smoke_boxes or [None]:
            summary.add("distribute + smoke", b.name if b else "-", rs.SKIPPED, detail=why)
    else:
        for row in smoke_stage(inv, smoke_boxes, opts):
            summary.rows.append(row)
    results: dict[str, str] = {}
    for entry in ci.boxes:
        box = inv.boxes[entry.box]
        if entry.box in opts.skip_boxes:
            summary.add("box build", box.name, rs.SKIPPED, detail="--skip-boxes")
            results[entry.box] = rs.SKIPPED
            continue
        unmet = [d for d in entry.depends_on if results.get(d) != rs.PASSED]
        if blocked() or "boxes" in opts.skip_stages or unmet:
            why = (f"{', '.join(unmet)} did not pass" if unmet else "an earlier stage failed"
                   if blocked() else "--skip boxes")
            summary.add("box build", box.name, rs.SKIPPED, detail=why)
            results[entry.box] = rs.SKIPPED
            continue
        results[entry.box] = BoxBuild(inv, box, opts, summary, log_root, run_id, out).run()
    if opts.scheduler:
        t = time.monotonic()
        if blocked():
            summary.add("job", opts.scheduler, rs.SKIPPED, detail="an earlier stage failed")
        else:
            code, detail = trace_job(inv, opts.scheduler, out)
            summary.add("job", opts.scheduler, rs.PASSED if code == 0 else rs.FAILED,
                        seconds=time.monotonic() - t, detail=detail, exit_code=code)
    junit = opts.junit or log_root / f"ci-{run_id}-junit.xml"
    rs.write_junit(summary, junit)
    rs.write_step_summary(summary)
    with open(log_root / f"ci-{run_id}.log", "a", encoding="utf-8") as log:
        for line in ["", *rs.table_lines(summary), f"JUnit: {junit}"]:
            out.write(line + "\n")
            log.write(line + "\n")
    out.flush()
    return summary


def ci_boxes(inv, skip_boxes: Sequence[str] = ()) -> list:
    unknown = [b for b in skip_boxes if b not in {e.box for e in inv.ci.boxes}]
    if unknown:
        raise UsageError(f"--skip-boxes: {', '.join(unknown)} not in ci.boxes "
                         f"({', '.join(e.box for e in inv.ci.boxes) or 'none'})")
    return [e for e in inv.ci.boxes if e.box not in skip_boxes]


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


def main(inventory: str | None = None, *, run_id: str = "", branch: str = "",
         skip: str = "", skip_boxes: str = "", no_shutdown: bool = False, scheduler: str = "",
         junit: str = "", log_root: str = "", accept_new: bool = False) -> int:
    """`invoke ci`: the exit code of the first failure, 0 when every stage passed."""
    from warpforge_launch import inventory as inv_mod

    try:
        stages = frozenset(parse_list(skip))
        if stages - set(STAGES):
            raise UsageError(f"--skip: unknown stage(s) {', '.join(sorted(stages - set(STAGES)))}",
                             hint=f"stages: {', '.join(STAGES)}")
        inv = inv_mod.load(inventory or None)
        opts = Options(run_id=run_id or None, branch=branch or None, skip_stages=stages,
                       skip_boxes=parse_list(skip_boxes), no_shutdown=no_shutdown,
                       scheduler=scheduler or None, junit=Path(junit) if junit else None,
                       log_root=Path(log_root) if log_root else None, accept_new=accept_new)
        ci_boxes(inv, opts.skip_boxes)
        if opts.scheduler:
            inv.scheduler(opts.scheduler)
        summary = run_ci(inv, opts)
    except LaunchError as e:
        from warpforge_launch.output import print_error

        print_error(e)
        return e.exit_code
    return summary.exit_code


# ---- shutdown-mode -------------------------------------------------------------------------
def shutdown_mode(action: str, *, boxes: str = "", inventory: str = "",
                  accept_new: bool = False) -> int:
    """status | enable | disable power-off after a green box build (the no-shutdown flag)."""
    from warpforge_launch import inventory as inv_mod

    try:
        if action not in ("status", "enable", "disable"):
            raise UsageError(f"unknown shutdown-mode action {action!r}",
                             hint="status, enable (power off after success) or disable "
                                  "(set the no-shutdown flag: the box stays on)")
        inv = inv_mod.load(inventory or None)
        sel = parse_list(boxes) or tuple(e.box for e in inv.ci.boxes)
        selected = inv.select_boxes(sel)
        timeouts = _timeouts(inv, Options())
        code = 0
        for box in selected:
            path = flag_path(box)
            argv = {"status": ["test", "-e", path],
                    "enable": ["rm", "-f", "--", path],
                    "disable": ["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && touch -- "$1"',
                                "wf-no-shutdown", path]}[action]
            try:
                with _open_session(box, timeouts, accept_new) as s:
                    r = s.run(argv, check=action != "status", timeout=30,
                              what=f"shutdown-mode {action}")
                flagged = r.ok if action == "status" else action == "disable"
                state = ("no-shutdown flag set: stays on after a green run" if flagged
                         else "powers off after a green run")
                print(f"{box.name}: {state} ({path})")
            except LaunchError as e:
                print(f"{box.name}: error: {e}", file=sys.stderr)
                code = code or e.exit_code
        return code
    except LaunchError as e:
        from warpforge_launch.output import print_error

        print_error(e)
        return e.exit_code


# ---- adapters: the one place each other stage is called from -------------------------------
def _timeouts(inv, opts: Options):
    from warpforge_launch.lab.remote import Timeouts

    lab = inv.lab
    return Timeouts(connect=lab.connect_timeout, banner=max(lab.connect_timeout, 10.0),
                    command=lab.command_timeout)


def _ssh_argv(box, timeouts, command: str) -> list[str]:
    from warpforge_launch.lab.remote import openssh_argv

    return openssh_argv(box, timeouts, command)


def _open_session(box, timeouts, accept_new: bool):
    from warpforge_launch.lab.remote import open_session

    return open_session(box, timeouts=timeouts,
                        host_key_policy="accept-new" if accept_new else None)


def _wake(box, *, send: bool, timeout: float, poll: float, probe: float):
    """Wake the box only if it is asleep (no SSH banner now)."""
    from warpforge_launch.lab import wake

    if box.transport == "ssh" and wake.ssh_banner(box.host, box.port, probe) is None:
        return wake.WakeResult(box.name, reachable=True, note="up")
    return wake.wake_box(box, send=send, timeout=timeout, poll=poll)


def nuc_build(inv, log_root: Path, run_id: str, branch: str | None, out: TextIO
              ) -> tuple[int, str]:
    from warpforge_launch.lab.build import run_build

    report = run_build(inv.build, log_root, run_id=run_id, branch=branch, out=out)
    return report.exit_code, report.error or "; ".join(
        f"{s.name} {s.status}" for s in report.stages)


def _optional_stage(module: str, inv, run_id: str) -> tuple[int | None, str]:
    """(None, why) when the stage is not available or not configured, else (exit code, '')."""
    import importlib

    try:
        mod = importlib.import_module(f"warpforge_launch.lab.{module}")
    except ImportError:
        return None, "not configured (this version has no " + module + " stage)"
    configured = getattr(mod, "configured", None)
    entry = getattr(mod, "main", None)
    if entry is None or configured is None or not configured(inv):
        return None, "not configured"
    code = entry(str(inv.path) if inv.path else None)
    return code, "" if code == 0 else f"exit {code}"


def images_stage(inv, run_id: str) -> tuple[int | None, str]:
    return _optional_stage("images", inv, run_id)


def sif_stage(inv, run_id: str) -> tuple[int | None, str]:
    return _optional_stage("sif", inv, run_id)


def smoke_options(inv, accept_new: bool = False):
    from warpforge_launch.lab import releases as dist_mod
    from warpforge_launch.lab import smoke as smoke_mod

    lab = inv.lab
    dopts = dist_mod.Options(keep=lab.keep_releases, lock_wait=lab.lock_wait,
                             parallel=lab.parallel, timeouts=_timeouts(inv, Options()),
                             host_key_policy="accept-new" if accept_new else None)
    return smoke_mod.Options(wake=lab.wake_boxes, skip_if_unreachable=lab.skip_if_unreachable,
                             wake_timeout=lab.wake_timeout, wake_interval=lab.wake_interval,
                             checks=tuple(lab.smoke_checks), distribute=dopts)


def dist_dir(inv) -> Path:
    d = Path(inv.build.dist_dir).expanduser()
    return d if d.is_absolute() else Path(inv.build.source).expanduser() / d


def smoke_stage(inv, boxes, opts: Options) -> list[rs.Row]:
    from warpforge_launch.lab import smoke as smoke_mod

    t = time.monotonic()
    try:
        report = smoke_mod.run(boxes, dist_dir(inv), smoke_options(inv, opts.accept_new))
    except LaunchError as e:
        return [rs.Row("distribute + smoke", b.name, rs.FAILED, time.monotonic() - t, str(e),
                       exit_code=e.exit_code) for b in boxes]
    rows = []
    for o in report.outcomes:
        detail = o.reason or (f"release {o.release}" if o.release else "")
        rows.append(rs.Row("distribute + smoke", o.box, o.status, o.seconds, detail,
                           exit_code=1 if o.status == rs.FAILED else 0))
    return rows


def trace_job(inv, scheduler: str, out: TextIO) -> tuple[int, str]:
    from warpforge_launch.lab import pipeline

    return pipeline.run_trace_job(inv, scheduler, out=out)
