"""The NUC build stage (`invoke build`): sync the source, build, test, check, summarise.

What the original orchestrate-nuc-build.sh did, in Python and driven by the inventory's
``build`` section:

1. sync - clone ``build.repository`` into ``build.source`` if missing, fetch, hard reset to
   ``origin/<branch>``, ``git clean -ffdx`` keeping ``build.cache_paths``. Only when
   ``build.repository`` is set: a checkout without one (the built-in default builds the
   stand-in from the working copy you are in) is never reset or cleaned under your feet.
2. steps - the profile's (or the inventory's) argv steps, each with a timeout, streamed live
   and tee'd to ``<lab.log_root>/nuc-<run id>.log`` (run id: GITHUB_RUN_ID, else a timestamp).
3. test floors - executed-test counts from each module's JUnit XML must reach the floor
   (the original refused a green run whose tests had silently been skipped).
4. dist check - ``bin/snakegrinder`` executable, ``bin/snakegrinder-bin`` and the bundled
   ``venv/lib/python3.*/site-packages`` present.

Then a summary table of every stage with its duration and status. Exit codes: 0 success,
1 the build failed (a step, a floor, the dist, a branch missing on origin), 2 bad
configuration, 3 origin unreachable or git timed out.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError
from warpforge_launch.inventory import BuildConfig, BuildStep

GIT_TIMEOUT = 600.0
KILL_GRACE = 5.0

# Each profile: default steps and default test floors (module -> minimum executed tests).
# Placeholders in step argv elements: {python} (this interpreter), {dist_dir}, {source}.
PROFILES: dict[str, dict] = {
    "gradle": {
        "steps": (
            BuildStep("assemble", ("./gradlew", "clean", "assemble"), 3600.0),
            BuildStep("test", ("./gradlew", "test"), 3600.0),
            BuildStep("dist", ("./gradlew", ":snakegrinder-dist:assembleDist"), 3600.0),
        ),
        # The floors the original NUC script enforced.
        "floors": {"snakeburger-core": 300, "warpforge-core": 100, "warpforge-io": 150},
    },
    "standin": {
        "steps": (
            BuildStep("dist", ("{python}", "examples/snakegrinder/build.py", "--out",
                               "{dist_dir}"), 1800.0),
            BuildStep("test", ("{python}", "examples/snakegrinder/selftest.py", "--dist",
                               "{dist_dir}", "--junit-xml",
                               "snakegrinder-dist/build/test-results/test/TEST-standin.xml"),
                      900.0),
        ),
        "floors": {"snakegrinder-dist": 9},
    },
}


@dataclass
class Stage:
    name: str
    status: str = "pending"  # ok | failed | timeout | skipped
    seconds: float = 0.0
    detail: str = ""


@dataclass
class BuildReport:
    run_id: str
    log_path: Path
    source: Path
    dist_dir: Path
    stages: list[Stage] = field(default_factory=list)
    error: str | None = None
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class StageFailed(Exception):
    """A stage failed; str() is the one-line reason."""

    def __init__(self, message: str, status: str = "failed"):
        super().__init__(message)
        self.status = status


# -- logging: every line to the terminal and the run log -----------------------------------
class Tee:
    def __init__(self, path: Path, out: TextIO):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._out = out
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()
            self._file.write(text + "\n")
            self._file.flush()

    def log(self, text: str) -> None:
        self.line(f"[{datetime.now().isoformat(timespec='seconds')}] {text}")

    def close(self) -> None:
        self._file.close()


def run_streamed(argv: list[str], cwd: Path, timeout: float, tee: Tee,
                 env: Mapping[str, str] | None = None) -> int:
    """Run argv, stream its merged output line by line, kill its process group on timeout."""
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=dict(env) if env is not None else None,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except FileNotFoundError:
        raise StageFailed(f"{argv[0]}: command not found") from None
    except PermissionError:
        raise StageFailed(f"{argv[0]}: not executable") from None

    def pump():
        for raw in proc.stdout:
            tee.line(raw.decode("utf-8", "replace").rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        reader.join(5)
        raise StageFailed(f"timed out after {timeout:g}s", "timeout") from None
    reader.join(10)
    return code


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the step's process group, then SIGKILL whatever is left of it."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


# -- git sync ------------------------------------------------------------------------------
_NETWORK_GIT = {"clone", "fetch"}


def _git(args: list[str], cwd: Path, tee: Tee, what: str) -> None:
    """A git command, streamed and logged. Clone/fetch trouble is the origin's (exit 3)."""
    tee.log("$ " + shlex.join(["git", *args]))
    error = InfrastructureError if what in _NETWORK_GIT else StageFailed
    try:
        code = run_streamed(["git", *args], cwd, GIT_TIMEOUT, tee,
                            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except StageFailed as exc:
        raise error(f"git {what} {exc}") from None
    if code != 0:
        if error is InfrastructureError:
            raise InfrastructureError(f"git {what} failed (exit {code})",
                                      hint="is the origin reachable, and the URL right?")
        raise StageFailed(f"git {what} failed (exit {code})")


def _git_out(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL, check=False)


def sync_source(config: BuildConfig, source: Path, branch: str, tee: Tee) -> str:
    """Clone if missing, fetch, reset to origin/<branch>, clean keeping the cache paths."""
    repository = config.repository
    if not (source / ".git").exists():
        if source.exists() and any(source.iterdir()):
            raise UsageError(f"build.source {source} exists but is not a git checkout",
                             hint="empty it, or point build.source elsewhere")
        source.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "--no-checkout", repository, str(source)], source.parent, tee, "clone")
    else:
        current = _git_out(["remote", "get-url", "origin"], source)
        if current.returncode != 0:
            _git(["remote", "add", "origin", repository], source, tee, "remote add")
        elif current.stdout.strip() != repository:
            _git(["remote", "set-url", "origin", repository], source, tee, "remote set-url")
    _git(["fetch", "--prune", "origin"], source, tee, "fetch")
    ref = f"refs/remotes/origin/{branch}"
    if _git_out(["show-ref", "--verify", "--quiet", ref], source).returncode != 0:
        known = _git_out(["for-each-ref", "--format=%(refname:lstrip=3)",
                          "refs/remotes/origin/"], source).stdout.split()
        known = [b for b in known if b != "HEAD"]
        raise StageFailed(f"branch {branch!r} does not exist on origin {repository} "
                          f"(branches: {', '.join(known) or 'none'})")
    _git(["checkout", "-q", "-B", branch, f"origin/{branch}"], source, tee, "checkout")
    _git(["reset", "-q", "--hard", f"origin/{branch}"], source, tee, "reset")
    clean = ["clean", "-ffdx"]
    for keep in config.cache_paths:
        clean += ["-e", keep]
    _git(clean, source, tee, "clean")
    return _git_out(["rev-parse", "HEAD"], source).stdout.strip()


# -- steps, floors, dist -------------------------------------------------------------------
def expand(step: BuildStep, values: Mapping[str, str]) -> list[str]:
    argv = []
    for arg in step.run:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        argv.append(arg)
    return argv


def count_tests(results_dir: Path) -> tuple[int, int, int]:
    """(executed, failed, files) over every JUnit XML file under results_dir."""
    executed = failed = files = 0
    for xml in sorted(results_dir.rglob("*.xml")):
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise StageFailed(f"{xml} is not valid JUnit XML: {exc}") from None
        suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
        for suite in suites:
            tests = int(suite.get("tests", 0))
            skipped = int(suite.get("skipped", 0) or suite.get("disabled", 0) or 0)
            executed += tests - skipped
            failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        files += 1
    return executed, failed, files


def check_floors(source: Path, floors: Mapping[str, int], tee: Tee) -> str:
    notes, problems = [], []
    for module, floor in floors.items():
        results = source / module / "build" / "test-results"
        executed, failed, files = count_tests(results) if results.is_dir() else (0, 0, 0)
        tee.log(f"{module}: {executed} tests executed ({files} JUnit files), floor {floor}")
        if files == 0:
            problems.append(f"{module}: no JUnit results under {results}")
        elif failed:
            problems.append(f"{module}: {failed} failing tests")
        elif executed < floor:
            problems.append(f"{module}: {executed} tests executed, floor is {floor} "
                            "(tests were skipped or not run)")
        notes.append(f"{module} {executed}/{floor}")
    if problems:
        raise StageFailed("; ".join(problems))
    return ", ".join(notes)


def check_dist(dist: Path) -> str:
    launcher = dist / "bin" / "snakegrinder"
    if not launcher.is_file():
        raise StageFailed(f"{launcher} is missing")
    if not os.access(launcher, os.X_OK):
        raise StageFailed(f"{launcher} is not executable")
    if not (dist / "bin" / "snakegrinder-bin").is_file():
        raise StageFailed(f"{dist / 'bin' / 'snakegrinder-bin'} is missing")
    sites = [p for p in sorted((dist / "venv" / "lib").glob("python3.*/site-packages"))
             if any(p.iterdir())]
    if not sites:
        raise StageFailed(f"no bundled payload under {dist / 'venv' / 'lib'}"
                          " (python3.*/site-packages)")
    size = sum(f.stat().st_size for f in dist.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{dist} ({size / 2**20:.0f} MiB)"


# -- the run -------------------------------------------------------------------------------
def default_run_id(env: Mapping[str, str]) -> str:
    return env.get("GITHUB_RUN_ID") or "manual-" + datetime.now().strftime("%Y%m%d-%H%M%S")


def resolve_steps(config: BuildConfig) -> tuple[tuple[BuildStep, ...], Mapping[str, int]]:
    profile = PROFILES[config.profile]
    steps = config.steps if config.steps is not None else profile["steps"]
    floors = config.test_floors if config.test_floors is not None else profile["floors"]
    return steps, floors


def run_build(config: BuildConfig, log_root: Path, *, run_id: str | None = None,
              branch: str | None = None, sync: bool = True, out: TextIO | None = None,
              python: str | None = None, env: Mapping[str, str] | None = None) -> BuildReport:
    """The whole NUC build. Never raises for a failed stage: the report says what failed."""
    env = os.environ if env is None else env
    run_id = run_id or default_run_id(env)
    branch = branch or config.branch
    source = Path(config.source).expanduser().absolute()
    dist = Path(config.dist_dir).expanduser()
    dist = dist if dist.is_absolute() else source / dist
    log_path = Path(log_root).expanduser() / f"nuc-{run_id}.log"
    report = BuildReport(run_id, log_path, source, dist)
    steps, floors = resolve_steps(config)
    values = {"python": python or sys.executable, "dist_dir": str(dist), "source": str(source)}
    tee = Tee(log_path, out or sys.stdout)

    def sync_stage() -> str:
        if not sync:
            return "skipped: --no-sync"
        if config.repository is None:
            return "skipped: no build.repository (building the tree as it is)"
        head = sync_source(config, source, branch, tee)
        return f"origin/{branch} at {head[:12]}"

    def step_stage(step: BuildStep):
        def run() -> str:
            argv = expand(step, values)
            tee.log("$ " + shlex.join(argv))
            code = run_streamed(argv, source, step.timeout, tee)
            if code != 0:
                raise StageFailed(f"exit {code}")
            return ""
        return run

    plan = [(Stage("sync"), sync_stage)]
    plan += [(Stage(step.name), step_stage(step)) for step in steps]
    plan.append((Stage("test floors"),
                 lambda: check_floors(source, floors, tee) if floors else "none configured"))
    plan.append((Stage("dist check"), lambda: check_dist(dist)))
    report.stages = [stage for stage, _ in plan]
    try:
        tee.log(f"==== NUC BUILD START (run {run_id}, profile {config.profile}) ====")
        tee.log(f"source {source}  branch {branch}  repository {config.repository or '-'}")
        tee.log(f"log {log_path}")
        for stage, action in plan:
            if report.exit_code:
                stage.status = "skipped"
                continue
            tee.log(f"==== {stage.name} ====")
            started = time.monotonic()
            try:
                if stage.name != "sync" and not source.is_dir():
                    raise StageFailed(f"build.source {source} does not exist")
                stage.detail = str(action() or "")
                stage.status = "skipped" if stage.detail.startswith("skipped") else "ok"
            except StageFailed as exc:
                stage.status, stage.detail = exc.status, str(exc)
                report.error, report.exit_code = f"{stage.name}: {exc}", 1
            except LaunchError as exc:
                stage.status, stage.detail = "failed", str(exc)
                report.error, report.exit_code = f"{stage.name}: {exc}", exc.exit_code
            stage.seconds = time.monotonic() - started
            tee.log(f"{stage.name}: {stage.status.upper()}"
                    + (f" - {stage.detail}" if stage.detail else ""))
        for line in summary_lines(report):
            tee.line(line)
        tee.log("Overall: SUCCESS" if report.ok else f"Overall: FAILURE ({report.error})")
    finally:
        tee.close()
    return report


def summary_lines(report: BuildReport) -> list[str]:
    width = max(len(s.name) for s in report.stages)
    lines = ["", f"{'stage':<{width}}  {'status':<8}  {'time':>8}  detail",
             f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 6}"]
    for s in report.stages:
        secs = f"{s.seconds:7.1f}s" if s.status not in ("pending", "skipped") or s.seconds \
            else "       -"
        lines.append(f"{s.name:<{width}}  {s.status.upper():<8}  {secs:>8}  {s.detail}")
    lines.append("")
    return lines


def main(inventory: str | None = None, *, branch: str | None = None,
         run_id: str | None = None, sync: bool = True) -> int:
    """`invoke build`: load the inventory, run, print errors one line each; the exit code."""
    from warpforge_launch import inventory as inv_mod

    try:
        inv = inv_mod.load(inventory)
        if inv.build.repository is None and sync:
            print("note: build.repository is not set: building the source tree as it is "
                  "(no fetch, reset or clean)", file=sys.stderr)
        report = run_build(inv.build, Path(inv.lab.log_root), run_id=run_id, branch=branch,
                           sync=sync)
    except LaunchError as exc:
        from warpforge_launch.output import print_error

        print_error(exc)
        return exc.exit_code
    if not report.ok:
        print(f"error: build failed: {report.error}", file=sys.stderr)
        print(f"hint: full log: {report.log_path}", file=sys.stderr)
    return report.exit_code
