"""Smoke-test the dist on GPU boxes: dist check -> wake -> wait -> distribute -> verify.

The seed's smoke-test-gpu-binaries, done right: the whole dist tree is pushed (not just the
launcher), the checks run with pytest-testinfra on each box in parallel, missing StableHLO
markers are a failure (not a warning), `--version` is only checked where configured (the real
snakegrinder has none), and the installed files must match the dist manifest.

Per box the outcome is PASSED, SKIPPED (unreachable and SKIP_IF_UNREACHABLE=1) or FAILED, with
the reason. Exit code: 1 if any box FAILED, else 0 (all SKIPPED prints "OVERALL: SKIPPED").
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from warpforge_launch.errors import LaunchError, UsageError
from warpforge_launch.lab import manifest as manifests
from warpforge_launch.lab import releases
from warpforge_launch.lab import wake as wake_mod
from warpforge_launch.lab.boxstate import VERIFIED_FILE
from warpforge_launch.lab.manifest import RELEASE_FILE, Manifest
from warpforge_launch.lab.remote import BoxLike, Sessions, Timeouts

PASSED, SKIPPED, FAILED = "PASSED", "SKIPPED", "FAILED"
CHECKS = ("exists", "help", "version", "trace-example", "checksums")
DEFAULT_CHECKS = ("exists", "help", "trace-example", "checksums")
MIN_MLIR_BYTES = 100
MARKERS = ("stablehlo", "func.func")


@dataclasses.dataclass
class CheckResult:
    name: str
    status: str
    message: str = ""
    seconds: float = 0.0


@dataclasses.dataclass
class BoxOutcome:
    box: str
    status: str = PASSED
    reason: str = ""
    steps: list[CheckResult] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    release: str | None = None

    def fail(self, step: str, message: str, seconds: float = 0.0) -> BoxOutcome:
        self.steps.append(CheckResult(step, FAILED, message, seconds))
        self.status, self.reason = FAILED, f"{step}: {message}"
        return self


@dataclasses.dataclass
class SmokeReport:
    outcomes: list[BoxOutcome]

    @property
    def overall(self) -> str:
        states = {o.status for o in self.outcomes}
        if FAILED in states or not states:
            return FAILED
        return SKIPPED if states == {SKIPPED} else PASSED

    @property
    def exit_code(self) -> int:
        return 1 if self.overall == FAILED else 0


@dataclasses.dataclass(frozen=True)
class Options:
    wake: bool = True
    skip_if_unreachable: bool = True
    wake_timeout: float = 60.0
    wake_interval: float = 10.0
    checks: tuple[str, ...] = DEFAULT_CHECKS
    junit: Path | None = None
    distribute: releases.Options = releases.Options()

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown or not self.checks:
            raise UsageError(f"unknown smoke check(s): {', '.join(unknown) or '(none given)'}",
                             hint=f"known checks: {', '.join(CHECKS)}")


def parse_checks(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


# ---- checks (pytest-testinfra) --------------------------------------------------------------
class Verifier:
    """testinfra hosts for the boxes: ssh:// through an ssh_config written for this run (same
    host keys, identity, strictness and timeouts as the inventory says), local:// for local."""

    def __init__(self, boxes: Sequence[BoxLike], timeouts: Timeouts, host_key_policy=None):
        from warpforge_launch import ssh

        self.dir = Path(tempfile.mkdtemp(prefix="wf-smoke-"))
        self.config = self.dir / "ssh_config"
        self.timeouts = timeouts
        blocks = [ssh.config_block(self.alias(b), ssh.Endpoint.of(b, host_key_policy),
                                   connect_timeout=timeouts.connect,
                                   control=ssh.control_path(self.dir, ssh.Endpoint.of(b)))
                  for b in boxes if b.transport == "ssh"]
        self.config.write_text("".join(blocks))
        self.boxes = {b.name: b for b in boxes}

    @staticmethod
    def alias(box: BoxLike) -> str:
        return f"wf-{box.name}"

    def host(self, box: BoxLike):
        import testinfra

        if box.transport == "local":
            return testinfra.get_host("local://")
        return testinfra.get_host(f"ssh://{self.alias(box)}", ssh_config=str(self.config),
                                  timeout=max(1, round(self.timeouts.connect)))

    def close(self) -> None:
        """End the ControlMaster processes testinfra left (ControlPersist) and the temp dir."""
        for b in self.boxes.values():
            if b.transport == "ssh":
                subprocess.run(["ssh", "-F", str(self.config), "-O", "exit", self.alias(b)],
                               capture_output=True, timeout=15, stdin=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_checks(host, box: BoxLike, checks: Sequence[str], m: Manifest) -> list[CheckResult]:
    """Run the configured checks on one box; a check that raises is a failure with its reason."""
    install = box.install_dir.rstrip("/")
    binary = f"{install}/bin/snakegrinder"
    results = []
    for name in checks:
        t0 = time.monotonic()
        try:
            message = _CHECKS[name](host, binary, install, m)
            status = PASSED
        except AssertionError as e:
            status, message = FAILED, str(e) or "assertion failed"
        except Exception as e:  # noqa: BLE001 - testinfra raises RuntimeError on ssh failure
            status, message = FAILED, _failure(e)
        results.append(CheckResult(name, status, message, time.monotonic() - t0))
    return results


def _failure(e: Exception) -> str:
    """What went wrong, in one line: for testinfra's ssh failure (a RuntimeError carrying
    the CommandResult), the ssh client's own last word, e.g. "Host key verification failed."."""
    result = e.args[0] if e.args else None
    stderr = getattr(result, "stderr", None)
    if getattr(result, "exit_status", None) == 255 and stderr:
        lines = [ln.strip() for ln in stderr.splitlines()
                 if ln.strip() and not ln.strip().startswith("@")]
        if lines:
            return f"ssh failed: {lines[-1][:300]}"
    return f"{type(e).__name__}: {_first_line(str(e))}"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def _run(host, argv: Sequence[str]):
    return host.run(shlex.join(argv))


def _check_exists(host, binary, install, m) -> str:
    f = host.file(binary)
    assert f.exists, f"{binary} does not exist"
    assert _run(host, ["test", "-x", binary]).rc == 0, f"{binary} is not executable"
    return binary


def _check_help(host, binary, install, m) -> str:
    r = _run(host, [binary, "--help"])
    assert r.rc == 0, f"--help exited {r.rc}: {_first_line(r.stderr or r.stdout)}"
    return "exit 0"


def _check_version(host, binary, install, m) -> str:
    r = _run(host, [binary, "--version"])
    assert r.rc == 0, f"--version exited {r.rc}: {_first_line(r.stderr or r.stdout)}"
    return _first_line(r.stdout)


def _check_trace_example(host, binary, install, m) -> str:
    tmp = _run(host, ["mktemp", "-d"]).stdout.strip()
    assert tmp.startswith("/"), "mktemp -d failed on the box"
    try:
        r = _run(host, [binary, "--trace-example", "--out", tmp])
        assert r.rc == 0, f"--trace-example exited {r.rc}: {_first_line(r.stderr or r.stdout)}"
        mlir = host.file(f"{tmp}/model.mlir")
        assert mlir.exists, f"--trace-example wrote no model.mlir in {tmp}"
        size = mlir.size
        assert size >= MIN_MLIR_BYTES, f"model.mlir is {size} bytes (< {MIN_MLIR_BYTES})"
        text = mlir.content_string
        missing = [k for k in MARKERS if k not in text]
        assert not missing, f"model.mlir lacks the StableHLO markers: {', '.join(missing)}"
        return f"model.mlir {size} bytes with {' and '.join(MARKERS)}"
    finally:
        _run(host, ["rm", "-rf", "--", tmp])


# every file but the release record and the verification records (VERIFIED_FILE*)
_SUMS = ('cd -- "$1" && find . -type f ! -path "./$2" ! -path "./$3*" '
         '-exec sha256sum -- {} +')


def _check_checksums(host, binary, install, m) -> str:
    r = _run(host, ["sh", "-c", _SUMS, "wf-sums", f"{install}/current/", RELEASE_FILE,
                    VERIFIED_FILE])
    assert r.rc == 0, f"hashing the installed files failed: {_first_line(r.stderr)}"
    got = {}
    for line in r.stdout.splitlines():
        digest, _, path = line.partition("  ")
        got[path.removeprefix("./")] = digest
    want = {e.path: e.sha256 for e in m.files}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(p for p in set(want) & set(got) if want[p] != got[p])
    problems = [f"{what} {len(paths)} ({', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''})"
                for what, paths in (("missing", missing), ("differing", wrong),
                                    ("unexpected", extra)) if paths]
    assert not problems, "installed files differ from the dist manifest: " + "; ".join(problems)
    return f"{len(want)} files match the dist manifest"


_CHECKS: dict[str, Callable] = {
    "exists": _check_exists, "help": _check_help, "version": _check_version,
    "trace-example": _check_trace_example, "checksums": _check_checksums,
}


# ---- the pipeline ---------------------------------------------------------------------------
def run(boxes: Sequence[BoxLike], dist: Path, opts: Options = Options(),
          on_outcome: Callable[[BoxOutcome], None] | None = None,
          progress: releases.Progress | None = None) -> SmokeReport:
    """Run the pipeline on every box (in parallel) and write the JUnit report if asked."""
    if not boxes:
        raise UsageError("no boxes selected for the smoke test")
    dist = manifests.check_dist(dist)  # phase 1: a missing dist is bad input, not a box failure
    m = manifests.scan(dist, cache=manifests.default_cache(dist))
    dopts = opts.distribute
    verifier = Verifier(boxes, dopts.timeouts, dopts.host_key_policy)
    sessions = Sessions(timeouts=dopts.timeouts, host_key_policy=dopts.host_key_policy,
                        bulk=dopts.bulk)
    try:
        def one(box: BoxLike) -> BoxOutcome:
            out = _smoke_box(box, dist, m, opts, sessions, verifier, progress)
            if on_outcome:
                on_outcome(out)
            return out

        workers = max(1, min(dopts.parallel, len(boxes)))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="smoke") as ex:
            outcomes = list(ex.map(one, boxes))
    finally:
        sessions.close()
        verifier.close()
    report = SmokeReport(outcomes)
    if opts.junit:
        write_junit(report, opts.junit)
    return report


def _smoke_box(box, dist, m, opts, sessions, verifier, progress) -> BoxOutcome:
    out = BoxOutcome(box.name)
    t0 = time.monotonic()
    try:
        # phase 2-3: wake (if asked) and wait for SSH
        t = time.monotonic()
        try:
            w = wake_mod.wake_box(box, send=opts.wake, timeout=opts.wake_timeout,
                                  poll=opts.wake_interval)
        except UsageError as e:
            return out.fail("reachable", str(e))
        if w.error and not w.reachable:  # a packet that cannot be sent is a failure
            return out.fail("reachable", w.note, time.monotonic() - t)
        if not w.reachable:
            if opts.skip_if_unreachable:
                out.status, out.reason = SKIPPED, w.note
                out.steps.append(CheckResult("reachable", SKIPPED, w.note,
                                             time.monotonic() - t))
            else:
                out.fail("reachable", w.note, time.monotonic() - t)
            return out
        out.steps.append(CheckResult("reachable", PASSED, w.note, time.monotonic() - t))
        # phase 4: distribute over the task's one connection to the box
        t = time.monotonic()
        [r] = releases.distribute([box], dist, opts=opts.distribute, sessions=sessions,
                                  progress=progress, manifest=m)
        if not r.ok:
            return out.fail("distribute", r.error or "failed", time.monotonic() - t)
        out.release = r.release
        out.steps.append(CheckResult("distribute", PASSED, f"{r.action} {r.release}",
                                     time.monotonic() - t))
        # phase 5: verify with testinfra
        results = run_checks(verifier.host(box), box, opts.checks, m)
        out.steps += results
        failed = [c for c in results if c.status == FAILED]
        if failed:
            out.status, out.reason = FAILED, f"{failed[0].name}: {failed[0].message}"
        return out
    except LaunchError as e:
        return out.fail("smoke", str(e))
    except OSError as e:  # this machine's side (a dist file vanished): this box's failure
        return out.fail("smoke", f"{type(e).__name__}: {e}")
    finally:
        out.seconds = time.monotonic() - t0


def write_junit(report: SmokeReport, path: Path) -> Path:
    """JUnit XML: one testsuite per box, one testcase per step (reachable, distribute, checks)."""
    import socket
    import xml.etree.ElementTree as ET

    path = Path(path)
    root = ET.Element("testsuites", name="warpforge-smoke")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    for o in report.outcomes:
        suite = ET.SubElement(root, "testsuite", name=f"smoke.{o.box}", timestamp=stamp,
                              hostname=socket.gethostname(), time=f"{o.seconds:.3f}")
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for step in o.steps:
            case = ET.SubElement(suite, "testcase", classname=f"smoke.{o.box}", name=step.name,
                                 time=f"{step.seconds:.3f}")
            counts["tests"] += 1
            if step.status == FAILED:
                ET.SubElement(case, "failure", message=step.message).text = step.message
                counts["failures"] += 1
            elif step.status == SKIPPED:
                ET.SubElement(case, "skipped", message=step.message)
                counts["skipped"] += 1
            elif step.message:
                ET.SubElement(case, "system-out").text = step.message
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("errors", "0")
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("errors", "0")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
