"""The shell programs the Slurm backend runs where sbatch lives, and what they read on stdin.

Fixed text, never formatted: data arrives as "$@" (paths, script names) or on stdin
(scripts, secret values). Secret values travel only on stdin, so they are never on a command
line (``ps``) or in a file: the submit driver puts them into the environment of the one
``sbatch`` that needs them, and sbatch exports its environment to the job.
"""

from __future__ import annotations

import base64
import io
import re
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Exit codes of the submit driver before any sbatch ran (the job scripts were not used).
BAD_INPUT, CANNOT_WRITE, CANNOT_UNPACK, UNSAFE_DIR = 95, 90, 91, 92
MAX_JOBS = 256
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Job:
    """One script to submit: its file name, text and the secret names its job needs."""

    name: str
    script: str
    secret_env: tuple[str, ...] = ()


def submit_input(jobs: Sequence[Job], secrets: Mapping[str, str]) -> str:
    """The driver's stdin: ``S <name> <b64 value>`` per secret, ``J <script> <names...>``
    per job, ``TAR``, then a base64 tar of the scripts (mode 0600)."""
    lines = []
    for key in sorted({k for job in jobs for k in job.secret_env}):
        if not _NAME.match(key):
            raise ValueError(f"invalid secret name {key!r}")
        lines.append(f"S {key} {base64.b64encode(secrets[key].encode()).decode()}")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for job in jobs:
            if job.secret_env:
                lines.append(f"J {job.name} {' '.join(job.secret_env)}")
            data = job.script.encode()
            info = tarfile.TarInfo(job.name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    lines += ["TAR", base64.b64encode(archive.getvalue()).decode(), ""]
    return "\n".join(lines)


def submit_results(stdout: str) -> dict[str, tuple[int, str]]:
    """``WF <script> <sbatch rc> <output, newlines as ' // '>`` lines -> {script: (rc, out)}."""
    results: dict[str, tuple[int, str]] = {}
    for line in stdout.splitlines():
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0] == "WF" and parts[2].lstrip("-").isdigit():
            out = parts[3] if len(parts) == 4 else ""
            results[parts[1]] = (int(parts[2]), out.replace(" // ", "\n"))
    return results


# Submit: args work_dir and script names. The work dir must be safe before anything is
# written: every existing ancestor owned by root or this user and not writable by others
# unless sticky, the work dir itself owned by this user, no symlink, not writable by others.
# Scripts are unpacked with umask 077 into a fresh private directory, opened, and all
# unlinked before the first sbatch starts (each sbatch reads its script from an open
# descriptor on stdin and sends its own copy to slurmctld); the directory goes on any exit.
# One call opens at most MAX_JOBS scripts (open files limit); the caller chunks bigger sweeps.
SUBMIT_DRIVER = r"""
set -u
umask 077
dir=$1; shift
me=$EUID
unsafe() { echo "work dir $dir: $1" >&2; exit 92; }
check_dir() {  # two stat processes for the whole path, however deep
  local paths=() p= rest=${dir#/} part i n owner towner mode whole=1
  while [ -n "$rest" ]; do
    part=${rest%%/*}; rest=${rest#"$part"}; rest=${rest#/}
    [ -n "$part" ] || continue
    p=$p/$part
    if [ ! -e "$p" ] && [ ! -L "$p" ]; then whole=0; break; fi
    paths+=("$p")
  done
  n=${#paths[@]}
  [ "$n" -gt 0 ] || return 0
  local owners=() targets=()
  mapfile -t owners < <(stat -c %u -- "${paths[@]}" 2>/dev/null)
  mapfile -t targets < <(stat -L -c '%u %a' -- "${paths[@]}" 2>/dev/null)
  [ "${#owners[@]}" = "$n" ] && [ "${#targets[@]}" = "$n" ] || unsafe "cannot stat its path"
  for ((i = 0; i < n; i++)); do
    p=${paths[i]}; owner=${owners[i]}; read -r towner mode <<<"${targets[i]}"
    if [ "$whole" = 0 ] || [ "$i" -lt $((n - 1)) ]; then
      case "$owner:$towner" in 0:0|0:"$me"|"$me":0|"$me:$me") ;;
        *) unsafe "$p belongs to another user (uid $towner)" ;; esac
      if (( 8#$mode & 8#022 )) && ! (( 8#$mode & 8#1000 )); then
        unsafe "$p is writable by other users and not sticky (mode $mode)"
      fi
    else
      [ -L "$p" ] && unsafe "it is a symlink"
      [ -d "$p" ] || unsafe "it is not a directory"
      [ "$towner" = "$me" ] || unsafe "it belongs to uid $towner, not to you (uid $me)"
      (( 8#$mode & 8#022 )) && unsafe "it is writable by other users (mode $mode): chmod go-w it"
    fi
  done
  return 0
}
declare -A val keys fds
while IFS=' ' read -r tag a b; do
  case $tag in
    S) case $a in ''|[!A-Za-z_]*|*[!A-Za-z0-9_]*) exit 95 ;; esac
       v=$(printf '%s' "$b" | base64 -d && echo .) || exit 95; val[$a]=${v%.} ;;
    J) keys[$a]=$b ;;
    TAR) break ;;
    *) exit 95 ;;
  esac
done
check_dir
if [ ! -d "$dir" ]; then
  mkdir -p -- "$dir" || exit 90
  check_dir
fi
# leftovers of a driver killed outright (SIGKILL runs no trap); no live driver is that old
shopt -s nullglob; old=("$dir"/.submit-*); shopt -u nullglob
[ "${#old[@]}" = 0 ] || find "$dir" -maxdepth 1 -type d -name '.submit-*' -mmin +60 \
  -exec rm -rf -- {} + 2>/dev/null
tmp=$(mktemp -d -- "$dir/.submit-XXXXXXXX") || exit 90
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 143' TERM INT HUP
base64 -d | tar -x -o --no-same-permissions -C "$tmp" -f - || exit 91
for name in "$@"; do  # open every script, then unlink them all before the first sbatch
  case $name in ''|*[!A-Za-z0-9._-]*) continue ;; esac
  exec {fd}<"$tmp/$name" || { echo "cannot open job script $name" >&2; exit 91; }
  fds[$name]=$fd
done
rm -rf -- "$tmp"
for name in "$@"; do
  [ -n "${fds[$name]:-}" ] || continue
  fd=${fds[$name]}
  out=$(for k in "${!val[@]}"; do unset "$k"; done   # only the secrets this job named
        for k in ${keys[$name]:-}; do export "$k=${val[$k]}"; done
        exec sbatch --parsable 2>&1 <&"$fd"); rc=$?
  exec {fd}<&-
  printf 'WF %s %d %s\n' "$name" "$rc" "${out//$'\n'/ // }"
done
"""

def read_sections(stdout: str) -> dict[str, str]:
    """``WF <section> <b64>`` lines of the read driver -> {section: text, section_bytes: n}."""
    sections: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "WF":
            raw = base64.b64decode(parts[2])
            sections[parts[1]] = raw.decode(errors="replace")
            sections[parts[1] + "_bytes"] = str(len(raw))
    return sections


# Read: args work_dir native max_bytes [out_offset err_offset]; prints "WF <section> <b64>".
READ_DRIVER = r"""
d=$1; id=$2; max=$3
emit() { printf 'WF %s ' "$1"; base64 -w0; echo; }
for s in out err; do
  f="$d/warpforge-$id.$s"
  [ -f "$f" ] || continue
  if [ $# -ge 5 ]; then
    if [ "$s" = out ]; then off=$4; else off=$5; fi
    tail -c +"$((off + 1))" -- "$f" | head -c "$max" | emit "$s"
  else
    tail -c "$max" -- "$f" | emit "$s"
  fi
done
[ $# -ge 5 ] && exit 0
o="$d/output-$id"
if [ -d "$o" ] && [ ! -L "$o" ]; then
  (cd -- "$o" && find . -type f | sed 's|^\./||' | sort) | emit list
  [ -f "$o/model.mlir" ] && head -c 8388608 -- "$o/model.mlir" | emit mlir
  [ -f "$o/manifest.json" ] && head -c 1048576 -- "$o/manifest.json" | emit manifest
fi
exit 0
"""
