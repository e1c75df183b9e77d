"""Fetch finished Slurm jobs' files from the work dir in ONE round trip, as one archive.

One remote shell (over the SSH login node, or the local clients' machine) gets the job ids
as arguments and, on stdin, what this machine already holds (``size mtime path`` per file,
from the last fetch's manifest; nothing on a first fetch). It lists every job's entries
without following links (``find -P``), picks the regular files that differ from what we
hold (``sort | comm``), hashes them (OpenSSL's sha256, or ``sha256sum`` where there is no
openssl) and streams them as one tar (never dereferencing: links are listed, not archived;
hard links go as plain files). Its stdout is::

    WFFETCH 3\n
    <listing: "<type> <size> <mtime> <path>\0<link target>\0" per entry>E\0\0
    <tar of the files sent, only when there are any>

and, hashed while the archive streams, the files' sha256 follow on stderr, in the archive's
order, as one ``WFSUMS openssl <base64 of the raw digests>`` or ``WFSUMS sha256sum <base64
of "<sha256>  <path>\0" per file>`` line. This side knows from the listing which members
must arrive, checks each one's name, type and size, hands it to the writer threads
(artifacts_writers.py), which write it into the job's staging dir hashing it, then checks
every sha256 against the source's; a missing member (a short stream), an unannounced one or
a wrong hash fails the fetch before anything is committed. A second fetch of unchanged jobs
streams no file.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tarfile
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from warpforge_launch.artifacts_store import (
    NOT_REGULAR,
    OUT_OF_DIR,
    Staging,
    TransferError,
    link_leaves,
    safe_relpath,
)
from warpforge_launch.artifacts_writers import Writers
from warpforge_launch.errors import InfrastructureError
from warpforge_launch.tar_stream import Member, TarStream

if TYPE_CHECKING:
    from warpforge_launch.schedulers.slurm import SlurmScheduler
    from warpforge_launch.schedulers.slurm_transport import Transport

MAX_JOBS = 2000  # job ids per round trip (they travel as arguments)
MIN_TIMEOUT = 600.0  # the whole archive must arrive within max(this, 20 x command_timeout)
NO_WORK_DIR = 94

# Fixed text, never formatted: args are the work dir and the job ids; stdin what we hold.
FETCH_DRIVER = r"""
set -u
export LC_ALL=C
d=$1; held=$2; shift 2
cd -- "$d" 2>/dev/null || { echo "warpforge-fetch: cannot enter the work dir $d" >&2; exit 94; }
t=$(mktemp -d) || exit 90
trap 'rm -rf -- "$t"' EXIT
trap 'exit 143' TERM INT HUP
names=()
for id in "$@"; do
  case $id in ''|*[!0-9_]*) continue ;; esac
  names+=("output-$id" "warpforge-$id.out" "warpforge-$id.err")
done
printf 'WFFETCH 3\n'
if [ "${#names[@]}" = 0 ]; then
  :
elif [ "$held" = 0 ]; then  # a first fetch: every regular file goes
  find "${names[@]}" ! -type d \( -type f -fprintf "$t/send" '%p\0' -o -true \) \
    -printf '%y %s %T@ %p\0%l\0' 2>/dev/null
else  # only files whose size or mtime differ from what this machine holds
  sort -z >"$t/have"
  find "${names[@]}" ! -type d \( -type f -fprintf "$t/files" '%s %T@ %p\0' -o -true \) \
    -printf '%y %s %T@ %p\0%l\0' 2>/dev/null
  sort -z "$t/files" | comm -z -23 - "$t/have" | sed -z 's/^[^ ]* [^ ]* //' >"$t/send"
fi
printf 'E\0\0'
[ -s "$t/send" ] || exit 0
# the sums are made while the archive streams, in its order, and follow on stderr once both
# are done: OpenSSL's sha256 where there is one (it uses the CPU's SHA instructions,
# several times faster than coreutils), else sha256sum
{
  if command -v openssl >/dev/null 2>&1 &&
     xargs -0 openssl dgst -sha256 -binary -- <"$t/send" >"$t/sums" 2>/dev/null; then
    echo openssl >"$t/how"
  else
    xargs -0 sha256sum -z -- <"$t/send" >"$t/sums" 2>/dev/null
    echo sha256sum >"$t/how"
  fi
} &
tar -c -f - --format=gnu --hard-dereference --no-recursion --null --verbatim-files-from \
  -T "$t/send"
rc=$?
wait $!
read -r how <"$t/how"
{ printf 'WFSUMS %s ' "$how"; base64 -w0 -- "$t/sums"; echo; } >&2
exit $rc
"""


def remote_names(native: str) -> dict[str, str]:
    """Where a job's files are in the work dir (see templates/sbatch.sh.j2) -> where they go
    in its artifact dir."""
    return {f"output-{native}": "output", f"warpforge-{native}.out": "stdout.log",
            f"warpforge-{native}.err": "stderr.log"}


class _Counting:
    """The stream's reader, counting what came over the wire; bytes read past the listing
    are pushed back for the archive."""

    def __init__(self, raw):
        self.raw, self.bytes, self.listing, self.back = raw, 0, 0, b""

    def read(self, n: int = -1) -> bytes:
        if self.back:
            data, self.back = (self.back, b"") if n < 0 or n >= len(self.back) else \
                (self.back[:n], self.back[n:])
            return data
        data = self.raw.read(n)
        self.bytes += len(data)
        return data

    def read1(self) -> bytes:
        data = self.raw.read1(1 << 20)
        self.bytes += len(data)
        return data


@contextlib.contextmanager
def stream(transport: Transport, argv: Sequence[str], data: bytes, timeout: float,
           program: str) -> Iterator[tuple[_Counting, dict]]:
    """Run ``argv`` with ``data`` on stdin; yield its stdout as it arrives and a dict that
    holds ``returncode`` and ``stderr`` once the block is over. The whole process group
    is killed at the deadline or when the reader fails."""
    full, env = transport.command(argv, timeout)
    errors = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=errors, env=env, start_new_session=True)
    except FileNotFoundError:
        errors.close()
        raise InfrastructureError(f"`{full[0]}` is not installed on this machine") from None
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            import os

            os.killpg(proc.pid, signal.SIGKILL)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.write(data)
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()

    timer = threading.Timer(timeout + 2, kill)
    timer.start()
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    done: dict = {}
    failed: BaseException | None = None
    try:
        yield _Counting(proc.stdout), done
    except BaseException as exc:
        failed = exc
        try:
            proc.wait(0.5)  # an ssh that died says why in its exit code
        except subprocess.TimeoutExpired:
            kill()
    finally:
        timer.cancel()
        proc.stdout.close()
        rc = proc.wait()
        feeder.join(5)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
        errors.close()
        done.update(returncode=rc, stderr=stderr)
        problem = transport.failure(rc, stderr, program, timeout)
        if fired.is_set():
            problem = InfrastructureError(f"`{program}` on {transport.where} did not finish "
                                          f"within {timeout:g}s")
        if problem is not None:
            raise problem from failed
    if failed is not None:
        raise failed


def fetch(sched: SlurmScheduler, stagings: Sequence[Staging]) -> Counter[str]:
    """Every job of ``stagings`` (one scheduler instance) in one round trip per MAX_JOBS;
    the bytes that came over the wire: ``wire`` in all, ``archive`` of them file data."""
    moved: Counter[str] = Counter()
    for k in range(0, len(stagings), MAX_JOBS):
        moved += _fetch_chunk(sched, stagings[k:k + MAX_JOBS])
    return moved


def _fetch_chunk(sched: SlurmScheduler, stagings: Sequence[Staging]) -> Counter[str]:
    work_dir = sched.work_dir
    places: dict[str, tuple[Staging, str]] = {}
    held = []
    for st in stagings:
        native = sched._native(st.job_id)
        names = remote_names(native)
        st.source = f"{sched.transport.where}:{work_dir}/output-{native}"
        for remote, local in names.items():
            places[remote] = (st, local)
        back = {v: k for k, v in names.items()}
        for path, entry in st.have.items():
            top, _, rest = path.partition("/")
            remote = back.get(path) or (f"{back['output']}/{rest}" if top == "output" and rest
                                        else None)
            if remote:
                held.append(f"{entry.size} {entry.source_mtime} {remote}".encode() + b"\0")
    argv = ["bash", "-c", FETCH_DRIVER, "warpforge-fetch", work_dir, "1" if held else "0",
            *(sched._native(st.job_id) for st in stagings)]
    sched.calls["warpforge-fetch"] += 1
    timeout = max(MIN_TIMEOUT, 20 * sched.config.command_timeout)
    done: dict = {}
    sent: dict[str, tuple[Staging, str]] = {}
    writers = Writers()
    if not held:  # a first fetch: the jobs' dirs are made while the login node lists
        for st in stagings:
            writers.make_dirs(st, "output")
    try:
        with stream(sched.transport, sched._argv(argv), b"".join(held), timeout,
                    "warpforge-fetch") as (out, done):
            sent = _receive(out, places, writers)
    except TransferError:
        if not done.get("returncode"):
            raise
    finally:
        writers.close(quiet=True)  # after _receive's own close: nothing left to wait for
    where, rc = sched.transport.where, done["returncode"]
    errors = [ln for ln in done["stderr"].splitlines()
              if ln.strip() and not ln.startswith("WFSUMS ")]
    if rc == NO_WORK_DIR:
        raise InfrastructureError(f"{where}: {errors[-1] if errors else 'no work dir'}")
    if rc != 0:
        raise TransferError(f"the fetch on {where} failed (exit {rc})"
                            + (f": {errors[-1].strip()}" if errors else ""))
    _verify(sent, done["stderr"])
    return Counter(wire=out.bytes, archive=out.bytes - out.listing)


def _verify(sent: dict[str, tuple[Staging, str]], stderr: str) -> None:
    """Every file that arrived has the sha256 the source computed for it. The sums come in
    the archive's order: raw 32-byte digests (openssl), or ``<hex>  <path>\\0`` records
    (sha256sum -z), whose paths are checked too."""
    if not sent:
        return
    line = next((ln for ln in stderr.splitlines() if ln.startswith("WFSUMS ")), None)
    if line is None:
        raise TransferError("the login node sent no checksums for the files it streamed")
    import base64

    how, _, data = line[7:].partition(" ")
    raw = base64.b64decode(data.strip())
    if how == "openssl":
        sums = [(None, raw[k:k + 32].hex()) for k in range(0, len(raw), 32)]
    else:
        sums = [(rec[66:], rec[:64].decode()) for rec in raw.split(b"\0")[:-1]]
    if len(sums) != len(sent):
        raise TransferError(f"the login node hashed {len(sums)} of the {len(sent)} files it "
                            "streamed: a file changed or vanished while it was sent")
    for (remote, (st, path)), (name, want) in zip(sent.items(), sums, strict=True):
        got = st.new[path].sha256
        if got != want or (name is not None and
                           name.decode(errors="surrogateescape") != remote):
            raise TransferError(f"{st.job_id}: {path}: sha256 {got} differs from the "
                                f"source's {want}")


def _place(places: dict[str, tuple[Staging, str]], remote: str) -> tuple[Staging, str]:
    if remote in places:
        return places[remote]
    head, _, rest = remote.partition("/")
    if head in places and places[head][1] == "output" and rest:
        return places[head][0], "output/" + safe_relpath(rest)
    raise TransferError(f"the login node listed {remote!r}, which no job asked for")


def _receive(out: _Counting, places: dict[str, tuple[Staging, str]], writers: Writers
             ) -> dict[str, tuple[Staging, str]]:
    """Read the listing and the archive into the stagings; what was sent, by remote path."""
    header = out.raw.readline()
    out.bytes += len(header)
    if header != b"WFFETCH 3\n":
        raise TransferError(f"unexpected answer from the fetch: {header[:200]!r}")
    listing = _listing(out)
    expected: dict[str, tuple[Staging, str, int, str]] = {}
    for meta, target in listing:
        kind, size, mtime, remote = meta.decode(errors="surrogateescape").split(" ", 3)
        safe_relpath(remote)
        st, path = _place(places, remote)
        if kind == "f":
            if not st.keep(path, int(size), mtime):
                expected[remote] = (st, path, int(size), mtime)
        elif kind == "l":
            link = target.decode(errors="surrogateescape")
            inside = path.partition("/")[2]
            if path.startswith("output/") and not link_leaves(inside, link):
                st.link(path, link)
            else:
                st.refuse(path, link, OUT_OF_DIR)
        else:
            st.refuse(path, None, NOT_REGULAR)
    sent: dict[str, tuple[Staging, str]] = {}  # in the archive's order, as the sums are
    if expected:
        back, out.back = out.back, b""
        try:
            for member, chunks in TarStream(out.read1, back).members():
                sent[member.name] = _member(member, chunks, expected, writers)
            while out.read1():  # the archive's padding: let the remote tar finish
                pass
        except tarfile.TarError as exc:
            raise TransferError(f"the archive from the login node is damaged: {exc}") \
                from None
    writers.close()
    if expected:
        first = next(iter(expected.values()))
        raise TransferError(f"the stream ended early: {len(expected)} file(s) never arrived "
                            f"({first[0].job_id}: {first[1]}, ...)")
    return sent


def _listing(out: _Counting) -> list[tuple[bytes, bytes]]:
    """``meta\\0target\\0`` pairs up to the ``E\\0\\0`` end mark (a meta field always holds
    spaces, so the mark cannot be a path); what follows is pushed back for the archive."""
    pairs: list[tuple[bytes, bytes]] = []
    data, pos = b"", 0
    while True:
        while (i := data.find(b"\0", pos)) >= 0 and (j := data.find(b"\0", i + 1)) >= 0:
            meta, target = data[pos:i], data[i + 1:j]
            pos = j + 1
            if meta == b"E" and not target:
                out.back = data[pos:]
                out.listing = out.bytes - len(out.back)
                return pairs
            pairs.append((meta, target))
        chunk = out.read1()
        if not chunk:
            raise TransferError("the stream ended inside the listing")
        data, pos = data[pos:] + chunk, 0


def _member(member: Member, chunks: Iterator[bytes],
            expected: dict[str, tuple[Staging, str, int, str]], writers: Writers
            ) -> tuple[Staging, str]:
    want = expected.pop(member.name, None)
    if want is None:
        raise TransferError(f"the archive holds {member.name!r}, which was not announced")
    st, path, size, mtime = want
    if not member.isreg():
        raise TransferError(f"{st.job_id}: {path} arrived as a link member: refused")
    if member.size != size:
        raise TransferError(f"{st.job_id}: {path} arrived with {member.size} bytes, "
                            f"{size} listed")
    writers.put(st, path, chunks, size=size, mtime_ns=_ns(mtime), source_mtime=mtime)
    return st, path


def _ns(mtime: str) -> int:
    """find's ``%T@`` (seconds with a fraction) as integer nanoseconds."""
    sec, _, frac = mtime.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
