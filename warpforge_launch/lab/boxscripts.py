"""Commands: the box-side scripts of a push, a switch and a check, and their argv.

The scripts are constants: every path and name reaches them as a positional argument or on
the first line of stdin, never pasted into the script text. They need only sh, coreutils,
tar, findutils and flock (python3, when the box has it, hashes on every core).

Ownership: a push creates its staging directory with a marker holding the lock holder's PID
and removes it on the way out if it fails; the switch replaces only our own `current` link,
creates `bin` only where nothing exists, and prunes only directories carrying the release
record. Before `current` moves, the release's data is on disk (syncfs), and the directory
holding the new link is synced after it.
"""

from __future__ import annotations

import re

LINKS_FILE = ".warpforge-links"
VERIFY_FILE = ".warpforge-verify.sha256"

VERIFY_PY = r"""
import hashlib, os, sys
from concurrent.futures import ThreadPoolExecutor
src = sys.stdin if sys.argv[1] == "-" else open(sys.argv[1])
jobs = [line.rstrip("\n").split("  ", 1) for line in src if line.strip()]
# digests taken while the files were received (RECEIVE_PY): no second read of those bytes
seen = set()
if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
    seen = {tuple(line.rstrip("\n").split("  ", 1)) for line in open(sys.argv[2])}
def ok(job):
    want, path = job
    if (want, path) in seen:
        return True
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
case $verifier in
python3*) python3 -c "$vpy" "$1" .warpforge-received.sha256 ;;
*) sha256sum -c --quiet --strict "$1" ;;
esac
"""
# receive with python3: unpack the tar stream and hash every file while writing it, so the
# check before the switch need not read the received bytes back
RECEIVE_PY = r"""
import hashlib, os, sys, tarfile
dest, dirs, sums = sys.argv[1], [], []
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|", bufsize=1 << 20,
                  ignore_zeros=True) as tar:  # two archives: the files, then the control files
    for ti in tar:
        parts = ti.name.split("/")
        if ti.name.startswith("/") or ".." in parts:
            sys.exit("unsafe path in the stream: %r" % ti.name)
        path = os.path.join(dest, ti.name)
        if ti.isdir():
            os.makedirs(path, exist_ok=True)
            dirs.append((path, ti.mode))
        elif ti.issym():
            os.symlink(ti.linkname, path)
        elif ti.isreg():
            src, h = tar.extractfile(ti), hashlib.sha256()
            with open(path, "xb") as out:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
            os.chmod(path, ti.mode)
            os.utime(path, (ti.mtime, ti.mtime))
            sums.append("%s  ./%s\n" % (h.hexdigest(), ti.name))
        else:
            sys.exit("unsupported member in the stream: %r" % ti.name)
for path, mode in reversed(dirs):
    os.chmod(path, mode)
with open(os.path.join(dest, ".warpforge-received.sha256"), "w") as f:
    f.writelines(sums)
"""
# stamps (box clock, ns) let the client split the box's time into receive, verify, switch
_STAMP = 'echo "stamp {0} $(date +%s%N)"'
_SWITCH = r"""
if ! kill -0 "$holder" 2>/dev/null; then
  echo "lost the box lock (its connection dropped): not switching" >&2; exit 75
fi
ln -s -- "releases/$rel" "$d/.current.$$"
mv -T -- "$d/.current.$$" "$d/current"
if [ ! -L "$d/bin" ] && [ ! -e "$d/bin" ]; then ln -s current/bin "$d/bin"; fi
printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$rel" >> "$d/releases/.history"
sync -- "$d" "$d/releases" 2>/dev/null || sync
echo "switched $rel"
""" + _STAMP.format("switched") + r"""
cd -- "$d/releases"
for p in "$@"; do
  if [ -d "$p" ] && [ ! -L "$p" ] && [ -f "$p/.warpforge-release.json" ]; then rm -rf -- "$p"
  else echo "not pruned: $p is not a release of ours" >&2; fi
done
"""
# record what was verified (size, mtime, path of every file) and the digest of its "size
# path" listing (what the state probe reports while nothing changes), then put the data on
# disk; the listing goes first, so a recorded listing always belongs to the recorded files
_RECORD = r"""
rm -f .warpforge-verified.listing
find . -type f ! -name '.warpforge-verified*' -printf '%s %T@ %P\n' | LC_ALL=C sort \
  > .warpforge-verified.new
mv -f -- .warpforge-verified.new .warpforge-verified
find . -type f ! -name '.warpforge-verified*' ! -path ./.warpforge-release.json \
  -printf '%s %P\n' | LC_ALL=C sort | sha256sum | cut -d' ' -f1 > .warpforge-verified.lst
mv -f -- .warpforge-verified.lst .warpforge-verified.listing
"""
_SYNC_RELEASE = _RECORD + r"""
sync -f . 2>/dev/null || sync
"""
# push: unpack the stream into a staging dir, hard-link the unchanged files from the old
# release, verify, rename staging to the release, switch, prune.
PUSH_SCRIPT = r"""
set -eu
d=$1; vpy=$2; rpy=$3
# the request is the first line of stdin (so the stream can be started before it is known);
# an empty stdin means no push after all
if ! IFS=' ' read -r stage rel old verifier holder rest; then exit 0; fi
if [ "$old" = - ]; then old=; fi
set -f; set -- $rest; set +f
cd -- "$d/releases"
mkdir -- "$stage"
trap 'cd / && rm -rf -- "$d/releases/$stage"' EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; trap 'exit 143' TERM
printf '%s\n' "$holder" > "$stage/.warpforge-partial"
""" + _STAMP.format("start") + r"""
if [ "$verifier" = python3 ]; then python3 -c "$rpy" "$stage"
else tar -x -i -p --no-same-owner -f - -C "$stage"; fi
""" + _STAMP.format("received") + r"""
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
rm -f .warpforge-links .warpforge-verify.sha256 .warpforge-partial .warpforge-received.sha256
""" + _SYNC_RELEASE + _STAMP.format("verified") + r"""
cd ..
mv -T -- "$stage" "$rel"
""" + _SWITCH
# switch: verify an existing release against the list on stdin, then switch to it.
SWITCH_SCRIPT = r"""
set -eu
d=$1; rel=$2; verifier=$3; vpy=$4; holder=$5; shift 5
cd -- "$d/releases/$rel"
set -- - "$@"
""" + _VERIFY + r"""
shift
""" + _SYNC_RELEASE + _SWITCH
# check: verify a release in place against the list on stdin (no switch).
CHECK_SCRIPT = r"""
set -eu
d=$1; rel=$2; verifier=$3; vpy=$4
cd -- "$d/releases/$rel"
set -- -
""" + _VERIFY + _RECORD
CLEANUP_SCRIPT = 'cd -- "$1/releases" && shift && rm -rf -- "$@"'

_FAILED = re.compile(r"^(?:\./)?(.+?): FAILED")


def push_argv(install_dir: str) -> list[str]:
    """The push command: everything that varies arrives later, on the first line of stdin."""
    return ["sh", "-c", PUSH_SCRIPT, "wf-push", install_dir, VERIFY_PY, RECEIVE_PY]


def switch_argv(install_dir: str, rel: str, verifier: str, holder: str,
                prune: list[str] | tuple[str, ...]) -> list[str]:
    return ["sh", "-c", SWITCH_SCRIPT, "wf-switch", install_dir, rel, verifier, VERIFY_PY,
            holder or "0", *prune]


def check_argv(install_dir: str, rel: str, verifier: str) -> list[str]:
    return ["sh", "-c", CHECK_SCRIPT, "wf-check", install_dir, rel, verifier, VERIFY_PY]


def failed_paths(text: str) -> list[str]:
    """The files a verifier (python3 or `sha256sum -c`) reported as not matching."""
    return [m.group(1) for line in text.splitlines() if (m := _FAILED.match(line.strip()))]


def stamps(text: str) -> dict[str, float]:
    """The box's `stamp NAME NS` lines, in seconds."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "stamp" and parts[2].isdigit():
            out[parts[1]] = int(parts[2]) / 1e9
    return out
