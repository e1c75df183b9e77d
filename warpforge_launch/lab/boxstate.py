"""Facts: what a box holds under its install dir, read in one command under its lock.

The probe takes the box's lock (`flock`, held by a process that lives as long as our
connection: a crashed client never leaves a stale lock) and reports the current release,
which release directories are ours (they carry the release record), which entries are not
(reported, never touched), the files of the current release changed since it was last
verified (size or mtime differ from the listing recorded then), and one digest of its "size
path" listing. Stale partial uploads of earlier holders are swept here, at the start.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re

from warpforge_launch.errors import UsageError
from warpforge_launch.lab.manifest import RELEASE_FILE, Manifest

__all__ = ["RELEASE_FILE", "BoxState", "parse_state", "lock_argv", "check_install_dir"]

LOCKED = b"@@warpforge-locked@@"
LOCK_BUSY_EXIT = 75
#: Written when a release is verified: its sorted "size mtime path" listing. A file whose
#: size or mtime no longer matches is suspect. Beside it, VERIFIED_FILE + ".listing": the
#: digest of the "size path" listing then (what the probe reports while nothing changed).
VERIFIED_FILE = ".warpforge-verified"
#: Inside a partial upload: the PID of the lock holder it was made under.
PARTIAL_FILE = ".warpforge-partial"
SAFE = re.compile(r"[A-Za-z0-9._-]+")  # release and staging names: one word in a request
#: Never an install dir: the root and the system's own trees (after normalisation).
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
    "/usr", "/usr/bin", "/usr/lib", "/usr/lib64", "/usr/local", "/usr/local/bin",
    "/usr/local/lib", "/usr/sbin", "/usr/share", "/var", "/var/lib", "/var/tmp"})

_LOCK_SCRIPT = r"""
d=$1; w=$2
[ -d "$d/releases" ] || mkdir -p -- "$d/releases" || exit 70
exec flock -E 75 -w "$w" "$d/.lock" sh -c "$3" wf-probe "$d" "${4:-sweep}"
"""
_PROBE_SCRIPT = r"""
d=$1
cur=$(readlink -- "$d/current" 2>/dev/null)
if [ -L "$d/current" ]; then echo "current $cur"
elif [ -e "$d/current" ]; then echo "current-foreign"; fi
if [ -L "$d/bin" ] || [ -e "$d/bin" ]; then
  if [ "$(readlink -- "$d/bin" 2>/dev/null)" = current/bin ]; then echo "bin ours"
  else echo "bin foreign"; fi
fi
cd -- "$d/releases" || exit 71
for r in * .partial-*; do
  if [ ! -e "$r" ] && [ ! -L "$r" ]; then continue; fi
  case $r in
  .partial-*)
    if [ -d "$r" ] && [ ! -L "$r" ] && [ -f "$r/.warpforge-partial" ]; then
      h=$(cat -- "$r/.warpforge-partial")
      # its holder still runs (a zombie does not count): a live upload, leave it
      if kill -0 "$h" 2>/dev/null && ! grep -qs '^State:.*Z' "/proc/$h/status"; then
        echo "partial $r"
      elif [ "$2" = look ]; then echo "stale $r"
      else rm -rf -- "$r" && echo "swept $r"; fi
    else echo "foreign $r"; fi ;;
  *)
    if [ -d "$r" ] && [ ! -L "$r" ] && [ -f "$r/.warpforge-release.json" ]; then
      echo "release $r"
    else echo "foreign $r"; fi ;;
  esac
done
if [ -f .history ]; then
  while IFS= read -r line; do echo "history $line"; done < .history
fi
if command -v python3 >/dev/null 2>&1; then echo "python3 yes"; fi
echo "holder $$"
if [ -n "$cur" ] && [ -d "$d/$cur" ]; then
  c="$d/$cur/"
  # the files as they are now, against the listing recorded when they were last verified:
  # identical (the common case) means nothing changed and the file list is the one whose
  # digest was recorded then; otherwise, the files that differ and a fresh digest
  if [ -f "$c.warpforge-verified.listing" ] && find "$c" -type f \
      ! -path "$c.warpforge-verified*" -printf '%s %T@ %P\n' | LC_ALL=C sort \
      | cmp -s - "$c.warpforge-verified"; then
    read -r digest < "$c.warpforge-verified.listing" || true
    echo "listing $digest"
  else
    if [ -f "$c.warpforge-verified" ]; then
      find "$c" -type f ! -path "$c.warpforge-verified*" -printf '%s %T@ %P\n' \
        | LC_ALL=C sort | LC_ALL=C comm -13 "$c.warpforge-verified" - \
        | sed 's/^[^ ]* [^ ]* /changed /'
    else echo "unverified"; fi
    # one line instead of a line per file: the digest of the sorted "size path" listing
    printf 'listing '
    find "$c" -type f ! -path "$c.warpforge-release.json" ! -path "$c.warpforge-verified*" \
      -printf '%s %P\n' | LC_ALL=C sort | sha256sum | cut -d' ' -f1
  fi
fi
echo @@warpforge-locked@@
exec cat >/dev/null
"""
SIZES_SCRIPT = r"""
cd -- "$1" && find . -type f -printf 'size %s %P\n'
"""


@dataclasses.dataclass
class BoxState:
    current: str | None = None  # release name `current` points to
    current_foreign: bool = False  # `current` exists but is not our symlink into releases/
    bin_foreign: bool = False  # `<install_dir>/bin` exists and is not our link
    releases: list[str] = dataclasses.field(default_factory=list)  # ours: carry RELEASE_FILE
    partials: list[str] = dataclasses.field(default_factory=list)  # a live holder's upload
    swept: list[str] = dataclasses.field(default_factory=list)  # stale partials removed
    stale: list[str] = dataclasses.field(default_factory=list)  # seen, not removed (look)
    foreign: list[str] = dataclasses.field(default_factory=list)  # not ours: left alone
    history: list[str] = dataclasses.field(default_factory=list)
    python3: bool = False
    holder: str = ""  # PID of the process holding the box lock (checked before a switch)
    listing: str | None = None  # digest of the current release's sorted "size path" lines
    changed: list[str] | None = None  # current's files changed since verified; None: never
    manifest: Manifest | None = None  # the current release's record, when read
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # of current, when read

    @property
    def verifier(self) -> str:
        return "python3" if self.python3 else "sha256sum"


def parse_state(text: str) -> BoxState:
    """The probe's report as a BoxState; a name that is not one safe word is foreign."""
    s = BoxState()
    changed: list[str] = []
    unverified = False
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "current":
            if rest.startswith("releases/") and SAFE.fullmatch(rest[len("releases/"):]):
                s.current = rest[len("releases/"):]
            else:
                s.current_foreign = True
        elif word == "current-foreign":
            s.current_foreign = True
        elif word == "bin":
            s.bin_foreign = rest == "foreign"
        elif word in ("release", "partial", "swept", "stale", "foreign"):
            if word != "foreign" and not SAFE.fullmatch(rest):
                word = "foreign"
            {"release": s.releases, "partial": s.partials, "swept": s.swept,
             "stale": s.stale, "foreign": s.foreign}[word].append(rest)
        elif word == "history":
            s.history.append(rest.split(" ", 1)[-1])
        elif word == "python3":
            s.python3 = True
        elif word == "holder":
            s.holder = rest.strip()
        elif word == "listing":
            s.listing = rest.strip()
        elif word == "unverified":
            unverified = True
        elif word == "changed":
            changed.append(rest)
    if s.current is not None and s.current not in s.releases:
        # into a directory we did not make: foreign; at nothing at all: ours, dangling
        s.current_foreign = s.current in s.foreign
        s.current = None
    s.changed = None if unverified else changed
    return s


def parse_sizes(text: str) -> dict[str, int]:
    sizes = {}
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "size":
            size, _, path = rest.partition(" ")
            sizes[path] = int(size)
    return sizes


def lock_argv(install_dir: str, wait: float, *, sweep: bool = True) -> list[str]:
    """The locked probe; with sweep False it only looks (stale partials are reported as
    `stale`, left for the next holder that sweeps)."""
    return ["sh", "-c", _LOCK_SCRIPT, "wf-lock", install_dir, str(max(0, int(wait))),
            _PROBE_SCRIPT, "sweep" if sweep else "look"]


def check_install_dir(box: str, path: str) -> str:
    """The install dir, normalised; UsageError for a relative path, `/` or a system tree."""
    d = str(path or "")
    if not d.startswith("/"):
        raise UsageError(f"box {box}: install_dir must be an absolute path, not {d!r}")
    norm = "/" + posixpath.normpath(d).lstrip("/")
    if norm in SYSTEM_DIRS or any(c in d for c in "\n\0"):
        raise UsageError(f"box {box}: install_dir {d!r} is {norm}, a system directory: "
                         f"refusing to manage releases there",
                         hint="use a directory of its own, e.g. /opt/warpforge")
    return norm
