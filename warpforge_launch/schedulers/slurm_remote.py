"""The shell programs the Slurm backend runs where sbatch lives, and what they read on stdin.

Fixed text, never formatted: data arrives as "$@" (paths) or on stdin
(scripts, secret values). Secret values travel only on stdin, so they are never on a command
line (``ps``) or in a file: the submit driver puts them into the environment of the one
``sbatch`` that needs them, and sbatch exports its environment to the job.
"""

from __future__ import annotations

import base64
import locale
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Exit codes of the submit driver before any sbatch ran (the job scripts were not used).
BAD_INPUT, CANNOT_WRITE, CANNOT_UNPACK, UNSAFE_DIR, NOT_SENT = 95, 90, 91, 92, 96
# The last line of the driver's stdin, sent once the caller has recorded the jobs: the driver
# holds every script (read and checked) until it comes, and submits nothing without it.
GO = "GO\n"
MAX_JOBS = 256  # scripts per round trip (bounds the driver's run time, see its deadline)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Job:
    """One script to submit: its file name, text and the secret names its job needs."""

    name: str
    script: str
    secret_env: tuple[str, ...] = ()


def submit_input(jobs: Sequence[Job], secrets: Mapping[str, str]) -> str:
    """The driver's stdin up to ``GO``: ``S <name>`` + newline + the raw value + NUL per
    secret, ``J <script> <bytes> <names...>`` per job, ``SCRIPTS``, then each script and
    SCRIPT_END. Byte counts use the encoding the transport writes stdin with (text mode: the
    locale's)."""
    encoding = locale.getpreferredencoding(False)
    head = []
    for key in sorted({k for job in jobs for k in job.secret_env}):
        if not _NAME.match(key):
            raise ValueError(f"invalid secret name {key!r}")
        if "\0" in secrets[key]:
            raise ValueError(f"secret {key} holds a NUL character")
        head.append(f"S {key}\n{secrets[key]}\0")
    for job in jobs:
        if not _SCRIPT_NAME.match(job.name) or not job.script.startswith("#!"):
            raise ValueError(f"invalid job script {job.name!r}")
        size = len(job.script.encode(encoding)) + len(SCRIPT_END)
        head.append(f"J {job.name} {size} {' '.join(job.secret_env)}\n")
    return "".join([*head, "SCRIPTS\n", *(job.script + SCRIPT_END for job in jobs)])


# After each script on the driver's stdin, stripped before sbatch sees it: a script cut short
# (the sender died mid-write) or misaligned lacks it, and is refused instead of submitted.
SCRIPT_END = "\n#warpforge-end\n"


_SCRIPT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def submit_results(stdout: str) -> dict[str, tuple[int, str]]:
    """The driver's answer -> {script: (sbatch rc, sbatch's output)}: per script a line
    ``WF+ <script>``, what sbatch printed, and a line ``WF <script> <rc>``."""
    results: dict[str, tuple[int, str]] = {}
    name, said = None, []
    for line in stdout.splitlines():
        parts = line.split(" ")
        if len(parts) == 2 and parts[0] == "WF+":
            name, said = parts[1], []
        elif (len(parts) == 3 and parts[0] == "WF" and parts[1] == name
              and parts[2].lstrip("-").isdigit()):
            results[name] = (int(parts[2]), "\n".join(ln for ln in said if ln.strip()))
            name = None
        elif name is not None:
            said.append(line)
    return results


# Submit: arg work_dir; stdin as submit_input writes it. The work dir must be safe before
# anything is written: every existing ancestor owned by root or this user and not writable by
# others unless sticky, the work dir itself owned by this user, no symlink, not writable by
# others. It is checked before stdin is read, so the caller can start the driver first and
# send the scripts while it writes its own records: every script is read and checked before
# GO, and only GO (the last line, sent once the records are written) lets any sbatch run; EOF
# instead, at any point, submits nothing. Job scripts never touch a disk: each is read whole
# from stdin (`read -N`, which reads a pipe in blocks), checked for its end mark, and piped
# into its sbatch, whose output goes straight to stdout between WF+ and WF lines (no command
# substitution: a fork less per script). One stat process for the whole path (a second only
# when a component is a symlink), no temp files.
SUBMIT_DRIVER = r"""
set -u
umask 077
dir=$1
me=$EUID
unsafe() { echo "work dir $dir: $1" >&2; exit 92; }
check_dir() {
  local paths=() links=() p= rest=${dir#/} part i n owner towner mode whole=1
  while [ -n "$rest" ]; do
    part=${rest%%/*}; rest=${rest#"$part"}; rest=${rest#/}
    [ -n "$part" ] || continue
    p=$p/$part
    if [ ! -e "$p" ] && [ ! -L "$p" ]; then whole=0; break; fi
    paths+=("$p")
    [ -L "$p" ] && links+=("$p")
  done
  n=${#paths[@]}
  [ "$n" -gt 0 ] || return 0
  local targets=() lowners=() owners=()
  mapfile -t targets < <(stat -L -c '%u %a' -- "${paths[@]}" 2>/dev/null)
  [ "${#targets[@]}" = "$n" ] || unsafe "cannot stat its path"
  if [ "${#links[@]}" -gt 0 ]; then  # a symlink's own owner: whoever may repoint it
    mapfile -t lowners < <(stat -c %u -- "${links[@]}" 2>/dev/null)
    [ "${#lowners[@]}" = "${#links[@]}" ] || unsafe "cannot stat its path"
  fi
  local k=0
  for ((i = 0; i < n; i++)); do
    p=${paths[i]}; read -r towner mode <<<"${targets[i]}"; owner=$towner
    if [ "$k" -lt "${#links[@]}" ] && [ "${links[k]}" = "$p" ]; then
      owner=${lowners[k]}; k=$((k + 1))
    fi
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
check_dir  # before reading stdin: the caller may still be writing its records
if [ ! -d "$dir" ]; then
  mkdir -p -- "$dir" || exit 90
  check_dir
fi
declare -A val=()
names=() sizes=() keys=()
while IFS=' ' read -r tag a b c; do
  case $tag in
    S) case $a in ''|[!A-Za-z_]*|*[!A-Za-z0-9_]*) exit 95 ;; esac
       IFS= read -r -d '' v || exit 95; val[$a]=$v ;;
    J) case $a in ''|*[!A-Za-z0-9._-]*) exit 95 ;; esac
       case $b in ''|*[!0-9]*) exit 95 ;; esac
       names+=("$a"); sizes+=("$b"); keys+=("${c:-}") ;;
    SCRIPTS) break ;;
    *) exit 95 ;;
  esac
done
[ "${tag:-}" = SCRIPTS ] || exit 95  # the caller gave up before sending: nothing to do
end=$'\n#warpforge-end\n'
scripts=()
for ((j = 0; j < ${#names[@]}; j++)); do
  # whole, before any sbatch starts; bytes, not characters (LC_ALL=C for this read only)
  LC_ALL=C IFS= read -r -d '' -N "${sizes[j]}" s || s=
  case $s in
    '#!'*"$end") scripts+=("${s%"$end"}") ;;
    *) echo "job script ${names[j]} arrived cut short or damaged" >&2; exit 91 ;;
  esac
done
IFS= read -r go || exit 96  # the caller gave up before recording its jobs: nothing to do
[ "$go" = GO ] || exit 95
for ((j = 0; j < ${#names[@]}; j++)); do
  printf 'WF+ %s\n' "${names[j]}"
  if [ "${#val[@]}" -gt 0 ]; then
    (for k in "${!val[@]}"; do unset "$k"; done   # only the secrets this job named
     for k in ${keys[j]}; do export "$k=${val[$k]}"; done
     printf '%s' "${scripts[j]}" | sbatch --parsable 2>&1)
  else
    printf '%s' "${scripts[j]}" | sbatch --parsable 2>&1
  fi
  printf '\nWF %s %d\n' "${names[j]}" "$?"
done
"""

READ_MAX_JOBS = 64  # job ids per read round trip: bounds its answer (see the per-file caps)


def read_jobs(stdout: str) -> dict[str, dict[str, str]]:
    """The read driver's ``WF <id> <section> <b64>`` lines -> {id: {section: text,
    section_bytes: n}}; ``refused`` holds the paths (work dir relative) it would not read,
    one a line. A listing cut at its cap loses its unfinished last line."""
    jobs: dict[str, dict[str, str]] = {}
    for line in stdout.splitlines():
        parts = line.split(" ")
        if len(parts) != 4 or parts[0] != "WF":
            continue
        raw = base64.b64decode(parts[3])
        files = jobs.setdefault(parts[1], {})
        if parts[2] == "refused":
            files["refused"] = files.get("refused", "") + raw.decode(errors="replace") + "\n"
            continue
        if parts[2] == "list" and not raw.endswith(b"\n"):
            raw = raw[:raw.rfind(b"\n") + 1]
        files[parts[2]] = raw.decode(errors="replace")
        files[parts[2] + "_bytes"] = str(len(raw))
    return jobs


# Read: args work_dir max_bytes what id...; "what" is "result" (per job the stdout/stderr
# tails, the output listing (at most 1 MiB), model.mlir (8 MiB) and manifest.json (1 MiB)),
# "logs" (the tails only) or "from" (ONE id, then its stdout and stderr byte offsets:
# max_bytes from each on). Prints "WF <id> <section> <b64>" lines, and "WF <id> refused
# <b64 path>" for a file it would not read. What a job left behind is untrusted: no symlink
# is ever followed. dd opens each file with O_NOFOLLOW (a symlink swapped in after the check
# fails the open, and is refused) and O_NONBLOCK (a FIFO reads as empty, never hangs); the
# output dir is entered, its parent checked to be the work dir, and its files opened
# relative to it, so swapping the dir for a symlink afterwards changes nothing. Residual
# (bash cannot enter a directory without following a link): an output dir swapped for a
# symlink to another dir of the work dir between the check and the cd is read as that dir,
# never anything outside the work dir.
READ_DRIVER = r"""
set -u
export LC_ALL=C
d=$1; max=$2; what=$3; shift 3
cd -- "$d" 2>/dev/null || exit 0
emit() { printf 'WF %s %s ' "$1" "$2"; base64 -w0; echo; }
refuse() { printf '%s' "$2" | emit "$1" refused; }
# read ID SECTION FILE SKIP COUNT: COUNT bytes from byte SKIP of a regular file, else refused
read_file() {
  if [ -L "$3" ] || { [ -e "$3" ] && [ ! -f "$3" ]; }; then refuse "$1" "$4"; return; fi
  [ -f "$3" ] || return 0
  dd if="$3" iflag=nofollow,nonblock,skip_bytes,count_bytes skip="$5" count="$6" \
    bs=65536 status=none 2>/dev/null | emit "$1" "$2"
  [ "${PIPESTATUS[0]}" = 0 ] || refuse "$1" "$4"
}
ids=()
for id in "$@"; do
  case $id in ''|*[!0-9_]*) ;; *) ids+=("$id") ;; esac
  [ "$what" = from ] && break
done
[ "${#ids[@]}" -gt 0 ] || exit 0
if [ "$what" = from ]; then
  id=${ids[0]}
  case ${2:-}:${3:-} in *[!0-9:]*|:*|*:) exit 0 ;; esac
  read_file "$id" out "warpforge-$id.out" "warpforge-$id.out" "$2" "$max"
  read_file "$id" err "warpforge-$id.err" "warpforge-$id.err" "$3" "$max"
  exit 0
fi
declare -A size=()  # every log's size in one find (its own entry: find -P follows nothing)
logs=()
for id in "${ids[@]}"; do logs+=("warpforge-$id.out" "warpforge-$id.err"); done
while IFS=' ' read -r -d '' n p; do size[$p]=$n; done \
  < <(find -P "${logs[@]}" -maxdepth 0 -type f -printf '%s %p\0' 2>/dev/null)
for id in "${ids[@]}"; do
  for s in out err; do
    f=warpforge-$id.$s; n=${size[$f]:-0}
    read_file "$id" "$s" "$f" "$f" "$((n > max ? n - max : 0))" "$max"
  done
  [ "$what" = result ] || continue
  o=output-$id
  if [ -L "$o" ]; then refuse "$id" "$o"; continue; fi
  [ -d "$o" ] && cd -- "$o" 2>/dev/null || continue
  if [ .. -ef "$d" ]; then
    find -P . -type f -printf '%P\n' 2>/dev/null | sort | head -c 1048576 | emit "$id" list
    read_file "$id" mlir model.mlir "$o/model.mlir" 0 8388608
    read_file "$id" manifest manifest.json "$o/manifest.json" 0 1048576
  else
    refuse "$id" "$o"
  fi
  cd -- "$d" || exit 0
done
exit 0
"""
