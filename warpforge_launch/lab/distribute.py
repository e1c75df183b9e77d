"""Push the dist to boxes as atomic, content-addressed releases; switch back with rollback.

On each box, under `<install_dir>`:

    releases/<content hash>/      one complete dist tree per release (never modified)
    releases/.partial-<hash>-<n>  an upload in progress (or interrupted: removed next time)
    releases/.history             "<time> <release>" per switch, oldest first
    current -> releases/<hash>    switched with ONE rename (ln -s to a temp name, mv -T)
    bin -> current/bin            so <install_dir>/bin/snakegrinder always runs the current one
    .lock                         flock: one distribute/rollback per box at a time

A push sends one tar stream with the directories, symlinks and only the files whose content
differs from the box's current release; unchanged files are hard-linked from it on the box.
The box then checks the SHA-256 of every file it received and only then switches `current`.
An interrupted push therefore leaves the previous release in place and runnable, and an
unchanged re-push sends nothing at all.

The remote side needs only sh, coreutils, tar, findutils and flock (python3, when the box has
it, checks hashes about 4x faster than sha256sum). The scripts below are constants: every
path and name reaches them as a positional argument, never pasted into the script text.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError
from warpforge_launch.lab import manifest as manifests
from warpforge_launch.lab.manifest import RELEASE_FILE, Entry, Manifest
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

LOCKED = b"@@warpforge-locked@@"
_SAFE = re.compile(r"[A-Za-z0-9._-]+")  # release and staging names: one word in the request
LOCK_BUSY_EXIT = 75
LINKS_FILE = ".warpforge-links"
VERIFY_FILE = ".warpforge-verify.sha256"

# Take the box's lock, report its state, then hold the lock until our stdin closes (the task
# ends or its connection drops: a dead client never leaves a stale lock behind).
_LOCK_SCRIPT = r"""
d=$1; w=$2
mkdir -p -- "$d/releases" || exit 70
exec flock -E 75 -w "$w" "$d/.lock" sh -c "$3" wf-probe "$d"
"""
_PROBE_SCRIPT = r"""
d=$1
cur=$(readlink -- "$d/current" 2>/dev/null || true)
echo "current $cur"
cd -- "$d/releases" || exit 71
for r in * .partial-*; do
  if [ -d "$r" ] && [ ! -L "$r" ]; then echo "release $r"; fi
done
if [ -f .history ]; then sed 's/^/history /' .history; fi
if command -v python3 >/dev/null 2>&1; then echo "python3 yes"; fi
echo "holder $$"
if [ -n "$cur" ] && [ -d "$d/$cur" ]; then
  if [ -f "$d/$cur/.warpforge-release.json" ]; then echo "record yes"; fi
  # one line instead of a line per file: the digest of the sorted "size path" listing
  printf 'listing '
  find "$d/$cur/" -type f ! -path "$d/$cur/.warpforge-release.json" -printf '%s %P\n' \
    | LC_ALL=C sort | sha256sum | cut -d' ' -f1
fi
echo @@warpforge-locked@@
exec cat >/dev/null
"""
_VERIFY_PY = r"""
import hashlib, os, sys
from concurrent.futures import ThreadPoolExecutor
src = sys.stdin if sys.argv[1] == "-" else open(sys.argv[1])
jobs = [line.rstrip("\n").split("  ", 1) for line in src if line.strip()]
def ok(job):
    want, path = job
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return False
    return h.hexdigest() == want
# hashlib releases the GIL on large buffers: one thread per core hashes in parallel
with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
    bad = [path for (want, path), good in zip(jobs, pool.map(ok, jobs)) if not good]
for path in bad:
    sys.stderr.write("%s: FAILED checksum\n" % path)
sys.exit(1 if bad else 0)
"""
_VERIFY = r"""
if [ "$verifier" = python3 ]; then python3 -c "$vpy" "$1"
else sha256sum -c --quiet --strict "$1"; fi
"""
_SWITCH = r"""
if ! kill -0 "$holder" 2>/dev/null; then
  echo "lost the box lock (its connection dropped): not switching" >&2; exit 75
fi
ln -sfn -- "releases/$rel" "$d/.current.new"
mv -T -- "$d/.current.new" "$d/current"
if [ ! -L "$d/bin" ]; then
  if [ -e "$d/bin" ]; then mv -T -- "$d/bin" "$d/bin.before-releases"; fi
  ln -s current/bin "$d/bin"
fi
printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$rel" >> "$d/releases/.history"
echo "switched $rel"
cd -- "$d/releases"
for p in "$@"; do rm -rf -- "$p"; done
"""
# push: unpack the stream into a staging dir, hard-link the unchanged files from the old
# release, verify what arrived, rename staging to the release, switch, prune.
_PUSH_SCRIPT = r"""
set -eu
d=$1; vpy=$2
# the request is the first line of stdin (so the stream can be started before it is known);
# an empty stdin means no push after all
if ! IFS=' ' read -r stage rel old verifier holder rest; then exit 0; fi
if [ "$old" = - ]; then old=; fi
set -f; set -- $rest; set +f
cd -- "$d/releases"
rm -rf -- "$stage"
mkdir -- "$stage"
tar -x -i -p --no-same-owner -f - -C "$stage"
cd -- "$stage"
if [ ! -f .warpforge-verify.sha256 ]; then
  echo "transfer incomplete: the checksum list never arrived" >&2; exit 65
fi
if [ -s .warpforge-links ]; then
  (cd -- "../$old" && xargs -0 -r cp -P -l --parents -t "../$stage" --) < .warpforge-links
fi
set -- .warpforge-verify.sha256 "$@"
""" + _VERIFY + r"""
shift
rm -f .warpforge-links .warpforge-verify.sha256
cd ..
mv -T -- "$stage" "$rel"
""" + _SWITCH
# switch: verify an existing release against the list on stdin, then switch to it.
_SWITCH_SCRIPT = r"""
set -eu
d=$1; rel=$2; verifier=$3; vpy=$4; holder=$5; shift 5
cd -- "$d/releases/$rel"
set -- - "$@"
""" + _VERIFY + r"""
shift
""" + _SWITCH


@dataclasses.dataclass(frozen=True)
class Options:
    """How to distribute: kept releases, lock wait, parallelism, deadlines, host keys."""

    keep: int = 3
    lock_wait: float = 120.0
    parallel: int = 4
    verify_all: bool = False
    timeouts: Timeouts = Timeouts()
    host_key_policy: str | None = None
    bulk: str = "auto"  # the stream's transport: auto (OpenSSH if present), openssh, paramiko
    prestart: bool = True  # open the stream's connection early when a push is likely
    local_tar: bool = True  # stream the files with this machine's GNU tar when it has one

    def __post_init__(self) -> None:
        if self.keep < 2:
            raise UsageError(f"keep must be at least 2 (current and previous), not {self.keep}")
        if self.parallel < 1:
            raise UsageError(f"parallel must be at least 1, not {self.parallel}")


@dataclasses.dataclass
class BoxResult:
    """What happened on one box (also the row of the summary table)."""

    box: str
    action: str = "failed"  # pushed | unchanged | reactivated | rolled-back | failed
    release: str | None = None
    previous: str | None = None
    files_sent: int = 0
    bytes_sent: int = 0
    files_linked: int = 0
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    hint: str | None = None
    locked: tuple[float, float] | None = None  # wall-clock times the box lock was held

    @property
    def ok(self) -> bool:
        return self.error is None


class Progress:
    """Progress callbacks (the default does nothing); see report.py for the rich one."""

    def start(self, box: str, total: int) -> None: ...
    def advance(self, box: str, n: int) -> None: ...
    def done(self, result: BoxResult) -> None: ...


@dataclasses.dataclass
class BoxState:
    current: str | None = None
    releases: list[str] = dataclasses.field(default_factory=list)
    partials: list[str] = dataclasses.field(default_factory=list)
    history: list[str] = dataclasses.field(default_factory=list)
    python3: bool = False
    holder: str = ""  # PID of the process holding the box lock (checked before a switch)
    manifest: Manifest | None = None
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    listing: str | None = None  # digest of the current release's sorted "size path" lines
    record: bool = False  # the current release has its .warpforge-release.json


def parse_state(text: str) -> BoxState:
    """The probe's report (see _PROBE_SCRIPT) as a BoxState."""
    s = BoxState()
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "current" and rest.startswith("releases/"):
            s.current = rest[len("releases/"):]
        elif word == "release":
            if _SAFE.fullmatch(rest):  # anything else is not ours: leave it alone
                (s.partials if rest.startswith(".partial-") else s.releases).append(rest)
        elif word == "history":
            name = rest.split(" ", 1)[-1]
            s.history.append(name)
        elif word == "python3":
            s.python3 = True
        elif word == "holder":
            s.holder = rest.strip()
        elif word == "manifest":
            try:
                s.manifest = Manifest.from_json(rest)
            except (ValueError, TypeError, KeyError):
                s.manifest = None  # a damaged record: treat the release as unknown content
        elif word == "size":
            size, _, path = rest.partition(" ")
            s.sizes[path] = int(size)
        elif word == "listing":
            s.listing = rest.strip()
        elif word == "record":
            s.record = True
    return s


def release_hash(name: str) -> str:
    return name.split(".", 1)[0]


def listing_digest(m: Manifest) -> str:
    """What the probe's `listing` line is for a release holding exactly m's files."""
    return m.listing


def intact(state: BoxState, m: Manifest) -> bool:
    """Does the box's current release hold exactly m's files with their sizes?"""
    if state.listing is not None:
        return state.listing == listing_digest(m)
    sizes = {p: n for p, n in state.sizes.items() if p != RELEASE_FILE}
    return sizes == {e.path: e.size for e in m.files}


_SIZES = r"""
cd -- "$1" && find . -type f -printf 'size %s %P\n'
"""


def plan_prune(state: BoxState, new: str, keep: int) -> list[str]:
    """Releases to delete after switching to `new`: keep the `keep` most recently current
    (always the new one and the one before it), delete the rest and any stale partial."""
    order: list[str] = []
    for name in [new, state.current, *reversed(state.history)]:
        if name and name not in order and (name == new or name in state.releases):
            order.append(name)
    for name in sorted(state.releases):  # releases never switched to: oldest to go first
        if name not in order:
            order.append(name)
    return order[keep:] + state.partials


def _lock_argv(install_dir: str, wait: float) -> list[str]:
    return ["sh", "-c", _LOCK_SCRIPT, "wf-lock", install_dir, str(max(0, int(wait))),
            _PROBE_SCRIPT]


class _Stream(io.RawIOBase):
    """A write-only, tell()-able sink for tarfile that batches writes into the session."""

    def __init__(self, send: Callable[[bytes], None], on_bytes: Callable[[int], None],
                 limit: int = 256 * 1024):
        super().__init__()
        self.send, self.on_bytes, self.limit = send, on_bytes, limit
        self.buf = bytearray()
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = len(b)
        self.buf += b
        self.pos += n
        if len(self.buf) >= self.limit:
            self.flush()
        return n

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            self.send(data)
            self.on_bytes(len(data))


def _tar_producer(dist: Path, m: Manifest, send: list[Entry], control: dict[str, bytes],
                  on_bytes: Callable[[int], None]):
    def produce(write: Callable[[bytes], None]) -> None:
        sink = _Stream(write, on_bytes)
        now = int(time.time())
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT) as tar:
            tar.copybufsize = 1 << 20
            for e in m.entries:
                if e.kind in ("d", "l"):
                    ti = tarfile.TarInfo(e.path)
                    ti.mtime = now
                    if e.kind == "d":
                        ti.type, ti.mode = tarfile.DIRTYPE, e.mode
                    else:
                        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e.target, 0o777
                    tar.addfile(ti)
            for e in send:
                path = dist / e.path
                ti = tarfile.TarInfo(e.path)
                ti.size, ti.mode = e.size, e.mode
                ti.mtime = int(os.lstat(path).st_mtime)
                with open(path, "rb") as f:
                    tar.addfile(ti, f)
            for name, data in control.items():  # last: their arrival proves a complete stream
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.mtime = len(data), 0o644, now
                tar.addfile(ti, io.BytesIO(data))
        sink.flush()

    return produce


def _gnu_tar() -> str | None:
    """This machine's GNU tar, if any: it streams the dist's files for a fraction of the CPU
    of Python's tarfile (which costs about 0.1 ms per file, 1 s per box for a 9000-file
    dist); the generated control files then follow as a second archive."""
    global _GNU_TAR
    if _GNU_TAR is None:
        path = shutil.which("tar")
        try:
            ok = bool(path) and "GNU tar" in subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            ok = False
        _GNU_TAR = path if ok else ""
    return _GNU_TAR or None


_GNU_TAR: str | None = None


def _gnu_tar_producer(tar_bin: str, dist: Path, m: Manifest, send: list[Entry],
                      control: dict[str, bytes], on_bytes: Callable[[int], None]):
    def produce(write: Callable[[bytes], None]) -> None:
        names = [e.path for e in m.entries if e.kind in ("d", "l")] + [e.path for e in send]
        fd = getattr(write, "fd", None)  # a local pipe (the ssh client's stdin): tar writes
        with tempfile.NamedTemporaryFile(prefix="wf-tar-") as listing, \
                tempfile.TemporaryFile() as errors:
            listing.write(b"".join(n.encode() + b"\0" for n in names))
            listing.flush()
            argv = [tar_bin, "-c", "-f", "-", "--format=gnu", "--numeric-owner", "--owner=0",
                    "--group=0", "--no-recursion", "--null", "--verbatim-files-from",
                    "-C", str(dist), "-T", listing.name]
            if fd is not None:  # straight into the pipe: no copy through Python
                write.flush()
                proc = subprocess.Popen(argv, stdout=fd, stderr=errors,
                                        stdin=subprocess.DEVNULL)
                try:
                    _follow_writes(proc, on_bytes)
                except BaseException:
                    proc.kill()
                    proc.wait(timeout=10)
                    raise
            else:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors,
                                        stdin=subprocess.DEVNULL)
                try:
                    while chunk := os.read(proc.stdout.fileno(), 1 << 20):
                        write(chunk)
                        on_bytes(len(chunk))
                except BaseException:
                    proc.kill()
                    proc.wait(timeout=10)
                    raise
                finally:
                    proc.stdout.close()
            rc = proc.wait(timeout=60)
            errors.seek(0)
            err = errors.read().decode(errors="replace").strip()
        if rc == -signal.SIGPIPE:  # the reader (the ssh client) went away: its status says why
            raise BrokenPipeError("the stream's reader went away")
        if rc != 0:
            raise LaunchError(f"tar could not stream the dist {dist}: "
                              f"{err.splitlines()[-1] if err else f'exit {rc}'}")
        # the control files, last: their arrival proves the stream complete
        _tar_producer(dist, Manifest(()), [], control, on_bytes)(write)

    return produce


def _follow_writes(proc: subprocess.Popen, on_bytes: Callable[[int], None]) -> None:
    """Report the bytes a child has written (Linux /proc/<pid>/io) until it exits."""
    done = 0
    while True:
        finished = proc.poll() is not None
        try:
            text = Path(f"/proc/{proc.pid}/io").read_text()
            wchar = int(next(line.split()[1] for line in text.splitlines()
                             if line.startswith("wchar:")))
        except (OSError, StopIteration, ValueError):
            wchar = done
        if wchar > done:
            on_bytes(wchar - done)
            done = wchar
        if finished:
            return
        try:
            proc.wait(timeout=0.1)  # wakes at once when tar is done
        except subprocess.TimeoutExpired:
            pass


def push_box(session: BoxSession, install_dir: str, dist: Path, m: Manifest, opts: Options,
             progress: Progress, pending: Started | None = None) -> BoxResult:
    """Bring one box to release m (under its lock) and say what that took.

    `pending` is a push command already started (see prestart) that the stream can use."""
    r = BoxResult(session.name)
    with session.hold(_lock_argv(install_dir, opts.lock_wait), ready=LOCKED,
                      timeout=opts.lock_wait + opts.timeouts.command) as said:
        locked_at = time.time()
        try:
            state = parse_state(said.decode(errors="replace"))
            r.previous = state.current
            _push_locked(session, install_dir, dist, m, opts, progress, state, r, pending)
        finally:
            r.locked = (locked_at, time.time())
    return r


def push_argv(install_dir: str) -> list[str]:
    """The push command: everything that varies arrives later, on the first line of stdin."""
    return ["sh", "-c", _PUSH_SCRIPT, "wf-push", install_dir, _VERIFY_PY]


def _push_locked(session, install_dir, dist, m, opts, progress, state, r, pending) -> None:
    verifier = "python3" if state.python3 else "sha256sum"
    target = m.hash
    if state.current and release_hash(state.current) == target and intact(state, m):
        r.action, r.release = "unchanged", state.current
        if opts.verify_all:
            _run_switch(session, install_dir, state.current, verifier, m.sha256sums(),
                        state.partials, opts, state.holder)
        elif state.partials:
            session.run(["sh", "-c", 'cd -- "$1/releases" && shift && rm -rf -- "$@"', "wf",
                         install_dir, *state.partials], what="cleanup")
        return
    if target in state.releases and target != state.current:
        # a complete earlier release of the same tree (e.g. after a rollback): verify, switch
        _run_switch(session, install_dir, target, verifier, m.sha256sums(),
                    plan_prune(state, target, opts.keep), opts, state.holder)
        r.action, r.release = "reactivated", target
        return
    # the current release with this hash is damaged: re-push it beside it under a new name
    rel = target if target not in state.releases else f"{target}.{secrets.token_hex(3)}"
    if state.current and (state.record or RELEASE_FILE in state.sizes):
        state.manifest = _read_manifest(session, install_dir, state.current)
        if state.manifest is not None and not state.sizes:  # sizes: only for what we link
            listed = session.run(["sh", "-c", _SIZES, "wf-sizes",
                                  f"{install_dir}/releases/{state.current}"], check=False)
            state.sizes = parse_state(listed.out).sizes if listed.ok else {}
    old = state.current if state.manifest is not None else None
    link, send = _split(m, state if old else None)
    sums = m.sha256sums(m.files if opts.verify_all else send)
    control = {
        LINKS_FILE: b"".join(e.path.encode() + b"\0" for e in link),
        VERIFY_FILE: sums.encode(),
        RELEASE_FILE: m.to_json(source=str(dist)).encode(),
    }
    total = sum(e.size for e in send)
    progress.start(session.name, total)
    stage = f".partial-{target}-{secrets.token_hex(4)}"
    request = [stage, rel, old or "-", verifier, state.holder or "0",
               *plan_prune(state, rel, opts.keep)]
    if not all(_SAFE.fullmatch(word) for word in request):
        raise LaunchError(f"box {session.name}: unexpected names in the push request {request}")
    header = (" ".join(request) + "\n").encode()
    sent = [0]

    def on_bytes(n: int) -> None:
        sent[0] += n
        progress.advance(session.name, n)

    tar_bin = _gnu_tar() if opts.local_tar else None
    tar = (_gnu_tar_producer(tar_bin, dist, m, send, control, on_bytes) if tar_bin else
           _tar_producer(dist, m, send, control, on_bytes))

    def producer(write: Callable[[bytes], None]) -> None:
        write(header)
        tar(write)

    timeout = opts.timeouts.command + total / (5 * 1024 * 1024)
    if pending is not None and pending.alive:
        result = finish_stream(pending, producer, timeout)
    else:
        result = session.run(push_argv(install_dir), input=producer, timeout=timeout,
                             check=False)
    if not result.ok:
        raise LaunchError(f"box {session.name}: push failed, {state.current or 'nothing'} "
                          f"stays current: {result.reason()}")
    r.action, r.release = "pushed", rel
    r.files_sent, r.bytes_sent, r.files_linked = len(send), sent[0], len(link)


def _read_manifest(session: BoxSession, install_dir: str, release: str) -> Manifest | None:
    """The manifest a release was made from; None if unreadable (then nothing is linked)."""
    r = session.run(["cat", "--", f"{install_dir}/releases/{release}/{RELEASE_FILE}"],
                    check=False)
    try:
        return Manifest.from_json(r.out) if r.ok else None
    except (ValueError, TypeError, KeyError):
        return None


def _split(m: Manifest, state: BoxState | None) -> tuple[list[Entry], list[Entry]]:
    """Files the box already has unchanged in its current release, and files to send."""
    if state is None or state.manifest is None:
        return [], m.files
    old = state.manifest.by_path()
    link, send = [], []
    for e in m.files:
        o = old.get(e.path)
        same = (o is not None and o.kind == "f" and o.sha256 == e.sha256 and o.mode == e.mode
                and state.sizes.get(e.path) == e.size)
        (link if same else send).append(e)
    return link, send


def _run_switch(session, install_dir, rel, verifier, sums: str, prune, opts, holder) -> None:
    argv = ["sh", "-c", _SWITCH_SCRIPT, "wf-switch", install_dir, rel, verifier, _VERIFY_PY,
            holder, *prune]
    result = session.run(argv, input=sums.encode(), check=False,
                         timeout=opts.timeouts.command)
    if not result.ok:
        raise LaunchError(f"box {session.name}: release {rel} failed verification, not "
                          f"switched: {result.reason()}")


def rollback_box(session: BoxSession, install_dir: str, opts: Options,
                 to: str | None = None) -> BoxResult:
    """Switch the box back to the release before the current one (or to `to`)."""
    r = BoxResult(session.name)
    with session.hold(_lock_argv(install_dir, opts.lock_wait), ready=LOCKED,
                      timeout=opts.lock_wait + opts.timeouts.command) as said:
        locked_at = time.time()
        try:
            state = parse_state(said.decode(errors="replace"))
            r.previous = state.current
            target = _rollback_target(session.name, state, to)
            m = _read_manifest(session, install_dir, target)
            if m is None:
                raise LaunchError(f"box {session.name}: release {target} has no readable "
                                  f"record ({RELEASE_FILE}): not switching to it")
            verifier = "python3" if state.python3 else "sha256sum"
            _run_switch(session, install_dir, target, verifier, m.sha256sums(), state.partials,
                        opts, state.holder)
            r.action, r.release = "rolled-back", target
        finally:
            r.locked = (locked_at, time.time())
    return r


def _rollback_target(box: str, state: BoxState, to: str | None) -> str:
    if to:
        hits = [n for n in state.releases if n.startswith(to)]
        if len(hits) != 1:
            raise UsageError(f"box {box}: release {to!r} matches {len(hits)} releases",
                             hint=f"releases on the box: {', '.join(state.releases) or 'none'}")
        return hits[0]
    for name in reversed(state.history):
        if name != state.current and name in state.releases:
            return name
    raise UsageError(f"box {box}: no earlier release to roll back to",
                     hint=f"current: {state.current or 'none'}")


# ---- many boxes -----------------------------------------------------------------------------
def _install_dir(box: BoxLike) -> str:
    d = str(getattr(box, "install_dir", "") or "")
    if not PurePosixPath(d).is_absolute() or d == "/":
        raise UsageError(f"box {box.name}: install_dir must be an absolute path, not {d!r}")
    return d.rstrip("/")


def _on_boxes(boxes: Sequence[BoxLike], opts: Options, work, progress: Progress,
              sessions: Sessions | None) -> list[BoxResult]:
    own = sessions is None
    if own:
        sessions = Sessions(timeouts=opts.timeouts, host_key_policy=opts.host_key_policy,
                            bulk=opts.bulk)

    def one(box: BoxLike) -> BoxResult:
        t0 = time.monotonic()
        try:
            r = work(box, sessions, _install_dir(box))
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
        workers = max(1, min(opts.parallel, len(boxes)))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="box") as ex:
            return list(ex.map(one, boxes))
    finally:
        if own:
            sessions.close()


# What each box was last brought to by this machine: only a hint (the box's own state
# decides), used to start a push's stream connection early when a push is likely.
_HINTS_LOCK = threading.Lock()


def _hints_file() -> Path:
    return manifests.state_dir() / "lab" / "releases.json"


def _hint_key(box: BoxLike, install_dir: str) -> str:
    return f"{box.user or ''}@{box.host}:{box.port}:{install_dir}"


def last_release(box: BoxLike, install_dir: str) -> str | None:
    try:
        return json.loads(_hints_file().read_text()).get(_hint_key(box, install_dir))
    except (OSError, ValueError, AttributeError):
        return None


def remember_release(box: BoxLike, install_dir: str, release: str | None) -> None:
    path = _hints_file()
    with _HINTS_LOCK:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                hints = json.loads(path.read_text())
            except (OSError, ValueError):
                hints = {}
            hints[_hint_key(box, install_dir)] = release
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(hints))
            os.replace(tmp, path)
        except OSError:
            pass  # a hint that cannot be written costs only speed


def _push_work(dist: Path, m: Manifest, opts: Options, progress: Progress):
    def work(box: BoxLike, sessions: Sessions, install_dir: str) -> BoxResult:
        pending = None
        policy = opts.host_key_policy or getattr(box, "host_key_policy", "strict")
        if (opts.prestart and opts.bulk != "paramiko" and policy == "strict"
                and release_hash(last_release(box, install_dir) or "") != m.hash):
            pending = prestart(box, opts.timeouts, push_argv(install_dir))
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
    m = manifest or manifests.scan(dist, cache=manifests.default_cache(dist))
    progress = progress or Progress()
    return _on_boxes(boxes, opts, _push_work(dist, m, opts, progress), progress, sessions)


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


def exit_code(results: Sequence[BoxResult]) -> int:
    """0 all ok; 2 if any box failed on bad input (host key, config); else 1 if any work
    failed; else 3 (every failure was an unreachable box or a timeout)."""
    codes = {r.exit_code for r in results if not r.ok}
    if not codes:
        return 0
    for code in (2, 1, 3):
        if code in codes:
            return code
    return 1
