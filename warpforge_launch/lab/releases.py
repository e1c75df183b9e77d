"""Push the dist to boxes as atomic, content-addressed releases; switch back with rollback.

On each box, under `<install_dir>`:

    releases/<content hash>/      one complete dist tree per release (never modified)
    releases/.partial-<hash>-<n>  an upload in progress (removed when it fails, or, if its
                                  holder died, at the start of the next push)
    releases/.history             "<time> <release>" per switch, oldest first
    current -> releases/<hash>    switched with ONE rename (ln -s to a temp name, mv -T)
    bin -> current/bin            so <install_dir>/bin/snakegrinder always runs the current one
    .lock                         flock: one distribute/rollback per box at a time

Each box goes facts -> decision -> commands: the probe reads its state under its lock
(boxstate), a pure function decides the push (pushplan), then the box runs it (boxscripts,
with the stream from tarstream). A push sends only the files whose content differs from the
current release and hard-links the rest; the box verifies before it switches, so an
interrupted or damaged push leaves the previous release current and runnable.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from warpforge_launch import ssh
from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError
from warpforge_launch.lab import boxscripts, noopcheck, pushplan, tarstream
from warpforge_launch.lab import manifest as manifests
from warpforge_launch.lab.boxscripts import LINKS_FILE, VERIFY_FILE
from warpforge_launch.lab.boxstate import (
    LOCK_BUSY_EXIT,
    LOCKED,
    RELEASE_FILE,
    SAFE,
    SIZES_SCRIPT,
    BoxState,
    check_install_dir,
    lock_argv,
    parse_sizes,
    parse_state,
)
from warpforge_launch.lab.manifest import Manifest
from warpforge_launch.lab.pushresult import (  # noqa: F401 - part of this module's API
    BoxResult,
    Progress,
    exit_code,
    hint_key,
    last_release,
    recorded_release,
    remember_release,
)
from warpforge_launch.lab.remote import (
    BoxLike,
    BoxSession,
    HoldFailed,
    Sessions,
    Started,
    Timeouts,
    finish_stream,
    prestart,
)


@dataclasses.dataclass(frozen=True)
class Options:
    """How to distribute: kept releases, lock wait, parallelism, deadlines, host keys."""

    keep: int = 3
    lock_wait: float = 120.0
    parallel: int = 4
    verify_all: bool = False  # verify every file of the release the box ends on
    repair: bool = False  # verify the current release in full and re-send what differs
    timeouts: Timeouts = Timeouts()
    host_key_policy: str | None = None
    bulk: str = "auto"  # the stream's transport: auto (OpenSSH if present), openssh, paramiko
    prestart: bool = True  # open the stream's connection early when a push is likely
    local_tar: bool = True  # stream the files with this machine's GNU tar when it has one
    # how the box unpacks: "tar" (the box's GNU tar, then one hash pass over the received
    # files) or "python" (python3 unpacks and hashes while receiving: no second read, but on
    # a 2-core loopback lab its tarfile costs more CPU than the pass it saves)
    receive: str = "tar"

    def __post_init__(self) -> None:
        if self.keep < 2:
            raise UsageError(f"keep must be at least 2 (current and previous), not {self.keep}")
        if self.parallel < 1:
            raise UsageError(f"parallel must be at least 1, not {self.parallel}")


# ---- one box ----------------------------------------------------------------------------------
def push_box(session: BoxSession, install_dir: str, dist: Path, m: Manifest, opts: Options,
             progress: Progress, pending: Started | None = None) -> BoxResult:
    """Bring one box to release m (under its lock) and say what that took.

    `pending` is a push command already started (see prestart) that the stream can use."""
    r = BoxResult(session.name)
    with _locked(session, install_dir, opts, r) as state:
        _Push(session, install_dir, dist, m, opts, progress, state, r, pending).run()
    return r


class _locked:
    """Hold the box's lock; yield its state after refusing foreign entries we would touch."""

    def __init__(self, session, install_dir, opts, r):
        self.hold = session.hold(lock_argv(install_dir, opts.lock_wait), ready=LOCKED,
                                 timeout=opts.lock_wait + opts.timeouts.command)
        self.session, self.install_dir, self.r = session, install_dir, r

    def __enter__(self) -> BoxState:
        said = self.hold.__enter__()
        self.t0 = time.time()
        state = parse_state(said.decode(errors="replace"))
        self.r.previous = state.current
        self.r.notes += [f"left alone (not made by warpforge): {self.install_dir}/releases/{n}"
                         for n in state.foreign]
        self.r.notes += [f"removed a stale partial upload: {n}" for n in state.swept]
        try:
            pushplan.refuse_foreign(self.session.name, self.install_dir, state)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return state

    def __exit__(self, *exc):
        self.r.locked = (self.t0, time.time())
        return self.hold.__exit__(*exc)


def _read_record(session: BoxSession, install_dir: str, release: str) -> Manifest | None:
    """The manifest a release was made from; None if unreadable (then nothing is linked)."""
    r = session.run(["cat", "--", f"{install_dir}/releases/{release}/{RELEASE_FILE}"],
                    check=False)
    try:
        return Manifest.from_json(r.out) if r.ok else None
    except (ValueError, TypeError, KeyError):
        return None


#: A release's own files beside the dist's (the record, verification listings, push leftovers).
_OWN_FILES = frozenset({RELEASE_FILE, LINKS_FILE, VERIFY_FILE, ".warpforge-verified",
                        ".warpforge-verified.listing", ".warpforge-verified.new",
                        ".warpforge-verified.lst", ".warpforge-received.sha256",
                        ".warpforge-partial"})
_LIST_SCRIPT = r"""
cd -- "$1" || exit 0
cat -- .warpforge-release.json 2>/dev/null; printf '\0'
find . -mindepth 1 -printf '%P\0'
"""


def foreign_files(session: BoxSession, install_dir: str, release: str) -> list[str] | None:
    """The entries of a release its record does not list (an operator's notes, a stray
    build): such a release is never pruned. None: the record cannot be read (keep it too)."""
    r = session.run(["sh", "-c", _LIST_SCRIPT, "wf-list", f"{install_dir}/releases/{release}"],
                    check=False)
    record, _, listing = r.out.partition("\0")
    try:
        m = Manifest.from_json(record) if r.ok else None
    except (ValueError, TypeError, KeyError):
        m = None
    if m is None:
        return None
    known = {e.path for e in m.entries} | _OWN_FILES
    return sorted(p for p in listing.split("\0") if p and p not in known)


def spare_foreign(session: BoxSession, install_dir: str, d: pushplan.Decision,
                  notes: list[str]) -> pushplan.Decision:
    """d without the releases to prune that hold entries the tool did not put there; each
    kept one is named in notes with those entries."""
    kept = []
    for rel in d.prune:
        extra = foreign_files(session, install_dir, rel)
        if extra == []:
            continue
        kept.append(rel)
        what = ("its record cannot be read" if extra is None else
                "holds files the tool did not put there: " + ", ".join(extra[:5])
                + (f", ... ({len(extra)} in all)" if len(extra) > 5 else ""))
        note = f"kept releases/{rel} (not pruned): {what}"
        if note not in notes:
            notes.append(note)
    return dataclasses.replace(d, prune=tuple(p for p in d.prune if p not in kept))


class _Push:
    """Facts -> decision -> commands for one box, with the fallbacks: a release that fails
    verification is never reused (a fresh push follows), damage found by a full check is
    re-sent under --repair."""

    def __init__(self, session, install_dir, dist, m, opts, progress, state, r, pending):
        self.session, self.dir, self.dist, self.m = session, install_dir, dist, m
        self.opts, self.progress, self.state, self.r = opts, progress, state, r
        self.pending = pending
        self.bad: set[str] = set()
        self.damaged: tuple[str, ...] = ()

    def decide(self) -> pushplan.Decision:
        s, o = self.state, self.opts
        kw = dict(keep=o.keep, suffix=secrets.token_hex(3), verify_all=o.verify_all,
                  check_current=o.verify_all or o.repair, bad=self.bad, damaged=self.damaged)
        d = pushplan.decide(s, self.m, **kw)
        if d.action == pushplan.PUSH and s.current and s.manifest is None \
                and s.current not in self.bad:
            s.manifest = _read_record(self.session, self.dir, s.current)
            if s.manifest is not None:
                listed = self.session.run(["sh", "-c", SIZES_SCRIPT, "wf-sizes",
                                           f"{self.dir}/releases/{s.current}"], check=False)
                s.sizes = parse_sizes(listed.out) if listed.ok else {}
                d = pushplan.decide(s, self.m, **kw)
        return d

    def run(self) -> None:
        name, r = self.session.name, self.r
        for _attempt in range(4):
            d = self.decide()
            if d.action == pushplan.UNCHANGED:
                r.action, r.release = "unchanged", d.release
                return
            if d.action == pushplan.CHECK:
                failed = self.check(d.release)
                if not failed:
                    r.action, r.release = "verified", d.release
                    return
                shown = ", ".join(failed[:3]) + (", ..." if len(failed) > 3 else "")
                if not self.opts.repair:
                    raise LaunchError(f"box {name}: release {d.release} is damaged: "
                                      f"{len(failed)} file(s) differ from the manifest "
                                      f"({shown})", hint="distribute --repair re-sends them")
                r.notes.append(f"repairing {len(failed)} damaged file(s): {shown}")
                self.damaged = tuple(failed)
                continue
            d = spare_foreign(self.session, self.dir, d, r.notes)
            if d.action == pushplan.REACTIVATE:
                result = self.session.run(
                    boxscripts.switch_argv(self.dir, d.release, self.state.verifier,
                                           self.state.holder, d.prune),
                    input=self.m.sha256sums().encode(), check=False,
                    timeout=self.opts.timeouts.command)
                if result.ok:
                    r.action, r.release = "reactivated", d.release
                    return
                r.notes.append(f"release {d.release} failed verification "
                               f"({result.reason()}): pushing afresh")
                self.bad.add(d.release)
                continue
            result = self.push(d)
            if result.ok:
                r.action = "repaired" if d.why == "repair" else "pushed"
                r.release = d.release
                return
            failed = set(boxscripts.failed_paths(result.err + result.out))
            linked = {e.path for e in d.link}
            if d.link_from and failed & linked:
                r.notes.append(f"release {d.link_from} had damaged files; sending them")
                self.bad.add(d.link_from)
                continue
            raise LaunchError(f"box {name}: push failed, {self.state.current or 'nothing'} "
                              f"stays current: {result.reason()}")
        raise LaunchError(f"box {name}: no consistent release after several attempts")

    def check(self, release: str) -> list[str]:
        result = self.session.run(
            boxscripts.check_argv(self.dir, release, self.state.verifier),
            input=self.m.sha256sums().encode(), check=False, timeout=self.opts.timeouts.command)
        if result.ok:
            return []
        failed = boxscripts.failed_paths(result.err + result.out)
        if not failed:
            raise LaunchError(f"box {self.session.name}: checking {release} failed: "
                              f"{result.reason()}")
        return failed

    def push(self, d: pushplan.Decision):
        s, m, opts, r = self.state, self.m, self.opts, self.r
        t_pack = time.monotonic()
        control = {
            LINKS_FILE: b"".join(e.path.encode() + b"\0" for e in d.link),
            VERIFY_FILE: m.sha256sums(d.verify).encode() if d.verify else b"",
            RELEASE_FILE: m.to_json(source=str(self.dist)).encode(),
        }
        stage = f".partial-{m.hash}-{secrets.token_hex(4)}"
        verifier = ("sha256sum" if not s.python3 else
                    "python3" if opts.receive == "python" else "python3-tar")
        request = [stage, d.release, d.link_from or "-", verifier, s.holder or "0",
                   *d.prune]
        if not all(SAFE.fullmatch(word) for word in request):
            raise LaunchError(f"box {self.session.name}: unexpected names in the push "
                              f"request {request}")
        header = (" ".join(request) + "\n").encode()
        self.progress.start(self.session.name, d.bytes)
        sent = [0]

        def on_bytes(n: int) -> None:
            sent[0] += n
            self.progress.advance(self.session.name, n)

        tar_bin = tarstream.gnu_tar() if opts.local_tar else None
        send = list(d.send)
        tar = (tarstream.gnu_tar_producer(tar_bin, self.dist, m, send, control, on_bytes)
               if tar_bin else tarstream.tar_producer(self.dist, m, send, control, on_bytes))

        def producer(write: Callable[[bytes], None]) -> None:
            write(header)
            tar(write)

        timeout = opts.timeouts.command + d.bytes / (5 * 1024 * 1024)
        t_stream = time.monotonic()
        pending, self.pending = self.pending, None
        if pending is not None and pending.alive:
            result = finish_stream(pending, producer, timeout)
        else:
            result = self.session.run(boxscripts.push_argv(self.dir), input=producer,
                                      timeout=timeout, check=False)
        t_end = time.monotonic()
        r.files_sent, r.bytes_sent, r.files_linked = len(send), d.bytes, len(d.link)
        r.stream_bytes = sent[0]
        box = boxscripts.stamps(result.out)
        r.phases = {"pack": t_stream - t_pack}
        if {"received", "verified", "switched"} <= set(box):
            r.phases["verify"] = box["verified"] - box["received"]
            r.phases["switch"] = box["switched"] - box["verified"]
            r.phases["transfer"] = (t_end - t_stream) - (box["switched"] - box["received"])
        return result


def rollback_box(session: BoxSession, install_dir: str, opts: Options,
                 to: str | None = None) -> BoxResult:
    """Switch the box back to the release before the current one (or to `to`)."""
    r = BoxResult(session.name)
    with _locked(session, install_dir, opts, r) as state:
        target = pushplan.rollback_target(session.name, state, to)
        m = _read_record(session, install_dir, target)
        if m is None:
            raise LaunchError(f"box {session.name}: release {target} has no readable "
                              f"record ({RELEASE_FILE}): not switching to it")
        result = session.run(boxscripts.switch_argv(install_dir, target, state.verifier,
                                                    state.holder, ()),
                             input=m.sha256sums().encode(), check=False,
                             timeout=opts.timeouts.command)
        if not result.ok:
            raise LaunchError(f"box {session.name}: release {target} failed verification, "
                              f"not switched: {result.reason()}")
        r.action, r.release = "rolled-back", target
    return r


# ---- many boxes -------------------------------------------------------------------------------
def _on_boxes(boxes: Sequence[BoxLike], opts: Options, work, progress: Progress,
              sessions: Sessions | None) -> list[BoxResult]:
    own = sessions is None
    if own:
        sessions = Sessions(timeouts=opts.timeouts, host_key_policy=opts.host_key_policy,
                            bulk=opts.bulk)

    def one(box: BoxLike) -> BoxResult:
        t0 = time.monotonic()
        try:
            r = work(box, sessions, check_install_dir(box.name, box.install_dir))
        except HoldFailed as e:
            r = BoxResult(box.name, error=str(e), exit_code=e.exit_code, hint=e.hint)
            if e.exit_status == LOCK_BUSY_EXIT:
                r.error = (f"box {box.name}: another distribute or rollback holds the box's "
                           f"lock (waited {opts.lock_wait:.0f}s)")
                r.exit_code = InfrastructureError.exit_code
        except LaunchError as e:
            r = BoxResult(box.name, error=str(e), exit_code=e.exit_code, hint=e.hint)
        except OSError as e:  # this machine's side: a dist file vanished, a pipe broke
            r = BoxResult(box.name, error=f"box {box.name}: {e}", exit_code=1)
        r.seconds = time.monotonic() - t0
        progress.done(r)
        return r

    try:
        return ssh.fan_out(list(boxes), one, opts.parallel)
    finally:
        if own:
            sessions.close()


def _push_work(dist: Path, m: Manifest, opts: Options, progress: Progress,
               probes: dict[str, noopcheck.Probe]):
    def work(box: BoxLike, sessions: Sessions, install_dir: str) -> BoxResult:
        last = pushplan.release_hash(last_release(box, install_dir) or "")
        probe = probes.pop(box.name, None)
        if probe is not None:
            r = probe.unchanged(m, BoxResult) if last == m.hash else None
            probe.cancel()
            if r is not None:
                return r
        pending = None
        policy = opts.host_key_policy or getattr(box, "host_key_policy", "strict")
        if (opts.prestart and opts.bulk != "paramiko" and policy == "strict"
                and last != m.hash):
            pending = prestart(box, opts.timeouts, boxscripts.push_argv(install_dir))
        try:
            r = push_box(sessions.get(box), install_dir, dist, m, opts, progress, pending)
        finally:
            if pending is not None:
                pending.cancel()
        if r.ok:
            remember_release(box, install_dir, r.release)
        return r

    return work


def distribute(boxes: Sequence[BoxLike], dist: Path, *, opts: Options = Options(),
               progress: Progress | None = None, sessions: Sessions | None = None,
               manifest: Manifest | None = None) -> list[BoxResult]:
    """Push the dist to every box, in parallel across boxes; one result per box, in order.

    Pass `sessions` to reuse the connections of an enclosing task (smoke does), and
    `manifest` when the caller has already scanned the dist."""
    dist = manifests.check_dist(dist)
    # no shared sessions: a box already on the dist is answered without opening one, by a
    # probe that logs in while the dist is scanned (noopcheck)
    probes = {} if sessions is not None else noopcheck.start(
        boxes, opts, lambda b: check_install_dir(b.name, b.install_dir),
        lambda b, d: last_release(b, d) is not None)
    try:
        m = manifest or manifests.scan(dist, cache=manifests.default_cache(dist))
        progress = progress or Progress()
        work = _push_work(dist, m, opts, progress, probes)
        return _on_boxes(boxes, opts, work, progress, sessions)
    finally:
        for probe in probes.values():
            probe.cancel()


def rollback(boxes: Sequence[BoxLike], *, opts: Options = Options(), to: str | None = None,
             progress: Progress | None = None, sessions: Sessions | None = None
             ) -> list[BoxResult]:
    """Switch every box back to its previous release (or to the release named `to`)."""
    def work(box, sessions, install_dir):
        r = rollback_box(sessions.get(box), install_dir, opts, to)
        if r.ok:
            remember_release(box, install_dir, r.release)
        return r

    return _on_boxes(boxes, opts, work, progress or Progress(), sessions)
