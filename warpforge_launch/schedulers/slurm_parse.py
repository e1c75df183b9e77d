"""Parsers for Slurm's text output (squeue, sacct, scontrol, sinfo).

Text formats only: ``sacct --json`` loses exit codes and ``squeue --json`` ignores ``-j`` in
22.05. Every parser is pure and tolerant: it skips blank lines, headers, job steps
(``42.batch``, ``42.extern``, ``42.0``) and lines it cannot read, and takes the first word of
states like ``CANCELLED by 0``. Fixtures are real output captured from the lab cluster.
"""

from __future__ import annotations

import re
from collections import namedtuple
from datetime import datetime, timedelta

# The formats the scheduler asks for; the parsers below read exactly these columns. The
# last one is Slurm's own id of the job record (squeue %A, sacct JobIDRaw): an array task
# that accounting has not yet given its index is listed under the bare array job id, and
# only this id says which task that row is (see slurm_watch._tasks).
SQUEUE_FORMAT = "%i|%T|%M|%N|%r|%V|%S|%A"
SACCT_FIELDS = "JobID,State,ExitCode,Elapsed,NodeList,Submit,Start,End,Reason,JobIDRaw"
SINFO_FORMAT = "%N|%T|%c|%m|%G|%P|%C|%e"

# Slurm state (first word) -> project state name (JobState member names).
STATE_MAP: dict[str, str] = {
    "PENDING": "PENDING", "CONFIGURING": "PENDING", "REQUEUED": "PENDING",
    "REQUEUE_FED": "PENDING", "REQUEUE_HOLD": "PENDING", "RESIZING": "PENDING",
    "SUSPENDED": "PENDING", "STOPPED": "PENDING", "RESV_DEL_HOLD": "PENDING",
    "RUNNING": "RUNNING", "COMPLETING": "RUNNING", "STAGE_OUT": "RUNNING",
    "SIGNALING": "RUNNING", "UPDATE_DB": "RUNNING", "POWER_UP_NODE": "PENDING",
    "COMPLETED": "COMPLETED",
    "FAILED": "FAILED", "OUT_OF_MEMORY": "FAILED", "NODE_FAIL": "FAILED",
    "BOOT_FAIL": "FAILED", "SPECIAL_EXIT": "FAILED", "PREEMPTED": "FAILED",
    "CANCELLED": "CANCELLED", "REVOKED": "CANCELLED",
    "TIMEOUT": "TIMEOUT", "DEADLINE": "TIMEOUT",
}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}

# What a user should read for states that map onto a coarser project state.
STATE_MESSAGES: dict[str, str] = {
    "OUT_OF_MEMORY": "out of memory: the job exceeded its --mem limit",
    "NODE_FAIL": "node failure: the node running the job went down",
    "BOOT_FAIL": "node boot failure",
    "PREEMPTED": "preempted by a higher-priority job",
    "DEADLINE": "missed its deadline",
    "TIMEOUT": "time limit reached",
    "SPECIAL_EXIT": "special exit (requeued and held)",
    "REVOKED": "revoked (federation sibling started the job)",
}

_ARRAY_ID = re.compile(r"^(\d+)_\[([^\]]*)\]$")
_JOBID = re.compile(r"^\d+(?:_\d+|_\[[^\]]*\]|\+\d+)?$")  # plain, array, hetjob; no steps


class SlurmRecord(namedtuple("SlurmRecord", (
        "native_id", "slurm_state", "state", "exit_code", "signal", "elapsed", "node", "reason",
        "submitted", "started", "ended", "detail", "source", "extra", "raw_id"),
        defaults=(None, None, None, None, None, None, None, None, "", "", None, ""))):
    """One job's status as Slurm reports it, before mapping to the project's model.

    A named tuple, not a dataclass: `status` of a running job builds these without the job
    model, and a dataclass costs more to define than the squeue call it describes.
      native_id, slurm_state (first word, e.g. CANCELLED from "CANCELLED by 0"), state (the
      project state name), exit_code, signal, elapsed (timedelta), node, reason,
      submitted/started/ended (datetimes), detail (the rest of the state field), source
      (squeue | sacct | scontrol), extra (other raw fields, or None), raw_id (Slurm's own
      id of the record: each started array task has one; ``""`` when not asked for)
    """

    __slots__ = ()

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def message(self) -> str:
        """One line for a user: why the job is in this state."""
        parts: list[str] = []
        if self.slurm_state in STATE_MESSAGES:
            parts.append(STATE_MESSAGES[self.slurm_state])
        elif self.slurm_state == "CANCELLED":
            by = self.detail.removeprefix("by").strip()
            parts.append(f"cancelled by uid {by}" if by else "cancelled")
        if self.state == "FAILED" and self.slurm_state == "FAILED":
            if self.signal:
                parts.append(f"killed by signal {self.signal}")
            elif self.exit_code is not None:
                parts.append(f"exit code {self.exit_code}")
        if self.reason and self.reason not in ("None", "(null)") and not self.terminal:
            parts.append(f"reason: {self.reason}")
        elif self.reason and self.reason in _FAILURE_REASONS and self.terminal:
            parts.append(f"reason: {self.reason}")
        return "; ".join(parts)


def status_fields(rec: SlurmRecord) -> dict:
    """A record as JobStatus fields (no job id; Slurm does not know the correlation id),
    shared by the scheduler and the job-model-free `status` path."""
    changed = rec.ended or rec.started or rec.submitted
    meta = {"slurm_state": rec.slurm_state, "source": rec.source}
    if rec.exit_code is not None:
        meta["exit_code"] = rec.exit_code
    if rec.signal:
        meta["signal"] = rec.signal
    if rec.reason and rec.reason not in ("None", "(null)"):
        meta["reason"] = rec.reason
    return {"correlation_id": None, "state": rec.state,
            "state_changed_at": changed.astimezone() if changed else None,  # cluster time
            "node_name": rec.node, "elapsed": rec.elapsed, "message": rec.message,
            "scheduler_metadata": meta}


_FAILURE_REASONS = {"BadConstraints", "JobLaunchFailure", "NonZeroExitCode", "OutOfMemory",
                    "NodeDown", "PartitionDown", "InvalidAccount", "InvalidQOS"}


def split_state(raw: str) -> tuple[str, str]:
    """``"CANCELLED by 0"`` -> ``("CANCELLED", "by 0")``; ``"RUNNING"`` -> ``("RUNNING", "")``."""
    raw = raw.strip()
    word, _, rest = raw.partition(" ")
    return word.rstrip("+").upper(), rest.strip()


def map_state(slurm_state: str) -> str:
    """Slurm state -> project state name; unknown states count as RUNNING (not terminal),
    so a new Slurm state never makes a live job look finished."""
    return STATE_MAP.get(split_state(slurm_state)[0], "RUNNING")


def parse_exit_code(raw: str) -> tuple[int | None, int | None]:
    """``"3:0"`` -> (3, None); ``"0:9"`` -> (0, 9) (killed by signal 9); ``""`` -> (None, None)."""
    raw = raw.strip()
    if not raw:
        return None, None
    code, _, sig = raw.partition(":")
    try:
        c = int(code)
        s = int(sig) if sig else 0
    except ValueError:
        return None, None
    return c, (s or None)


def parse_elapsed(raw: str) -> timedelta | None:
    """Slurm durations: ``SS``, ``MM:SS``, ``H:MM:SS``, ``D-HH:MM:SS``, ``D-HH``, ``D-HH:MM``
    and ``MM:SS.mmm``; ``UNLIMITED``, ``INVALID``, ``N/A``, ``""`` -> None."""
    raw = raw.strip()
    if not raw or raw.upper() in ("UNLIMITED", "INVALID", "N/A", "NONE", "PARTITION_LIMIT"):
        return None
    days = 0
    if "-" in raw:
        d, _, raw = raw.partition("-")
        if not d.isdigit():
            return None
        days = int(d)
        parts = raw.split(":")
        # with days, fields fill from hours down: D-HH, D-HH:MM, D-HH:MM:SS
        parts += ["0"] * (3 - len(parts))
        hours, minutes, seconds = parts[:3]
    else:
        parts = raw.split(":")
        if len(parts) > 3:
            return None
        parts = ["0"] * (3 - len(parts)) + parts
        hours, minutes, seconds = parts
    try:
        return timedelta(days=days, hours=int(hours), minutes=int(minutes),
                         seconds=float(seconds))
    except ValueError:
        return None


def _started(state: str, raw: str) -> datetime | None:
    """The start of a job that has started. A pending job's Start (squeue %S, sacct Start,
    scontrol StartTime) is Slurm's estimate or its --begin time, often in the future, or an
    earlier run's start (requeued): none of them is when it became pending."""
    return None if state == "PENDING" else parse_time(raw)


def parse_time(raw: str) -> datetime | None:
    """Slurm timestamps (``2026-11-28T12:36:25``, local time); ``Unknown``/``None`` -> None."""
    raw = raw.strip()
    if not raw or raw in ("Unknown", "None", "N/A", "(null)"):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def _node(raw: str) -> str | None:
    raw = raw.strip()
    return None if raw in ("", "None assigned", "(null)", "n/a") else raw


def _is_job_line(native: str) -> bool:
    return bool(_JOBID.match(native))


def expand_ids(native: str) -> list[str]:
    """``123_[0-3,7%2]`` (a pending array record) -> ``123_0 ... 123_3, 123_7``; any other
    id as it is."""
    m = _ARRAY_ID.match(native.strip())
    if not m:
        return [native]
    job, inner = m.group(1), m.group(2).split("%", 1)[0]
    out: list[str] = []
    for part in filter(None, inner.split(",")):
        first, _, rest = part.partition("-")
        last, _, step = rest.partition(":")
        try:
            lo, hi = int(first), int(last or first)
            out += [f"{job}_{i}" for i in range(lo, hi + 1, int(step or 1))]
        except ValueError:
            continue
    return out


def _expanded(records: dict[str, SlurmRecord]) -> dict[str, SlurmRecord]:
    """Pending array records (``123_[4-9%2]``) as one record per task; a task's own row
    wins over the range it was split from."""
    out: dict[str, SlurmRecord] = {}
    for native, rec in records.items():
        if "[" not in native:
            out[native] = rec
            continue
        for task in expand_ids(native):
            if task not in records:
                out.setdefault(task, rec._replace(native_id=task))
    return out


def parse_squeue(text: str) -> dict[str, SlurmRecord]:
    """Rows of ``squeue -h -t all -o SQUEUE_FORMAT`` -> records by native id."""
    out: dict[str, SlurmRecord] = {}
    for line in text.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 5 or not _is_job_line(cols[0].strip()):
            continue
        cols += [""] * (8 - len(cols))
        native = cols[0].strip()
        word, detail = split_state(cols[1])
        state = map_state(word)
        out[native] = SlurmRecord(
            native_id=native, slurm_state=word, state=state, detail=detail,
            # squeue shows no exit code, but Slurm's COMPLETED means every process exited 0
            # (so a job accounting has not caught up with yet still has its code)
            exit_code=0 if state == "COMPLETED" else None,
            elapsed=parse_elapsed(cols[2]), node=_node(cols[3]), reason=cols[4].strip() or None,
            submitted=parse_time(cols[5]), started=_started(state, cols[6]), source="squeue",
            raw_id=cols[7].strip(),
        )
    return _expanded(out)


def parse_sacct(text: str) -> dict[str, SlurmRecord]:
    """Rows of ``sacct -X -P -n --format=SACCT_FIELDS`` -> records by native id.

    Step rows are skipped even if ``-X`` was not honoured; when a requeued job has several
    rows, the last one wins (sacct lists them oldest first)."""
    out: dict[str, SlurmRecord] = {}
    for line in text.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 4:
            continue
        native = cols[0].strip()
        if not _is_job_line(native):
            continue  # header, step (42.batch / 42.0 / 42.extern) or noise
        cols += [""] * (10 - len(cols))
        word, detail = split_state(cols[1])
        state = map_state(word)
        code, sig = parse_exit_code(cols[2])
        out[native] = SlurmRecord(
            native_id=native, slurm_state=word, state=state, detail=detail,
            exit_code=code, signal=sig, elapsed=parse_elapsed(cols[3]), node=_node(cols[4]),
            submitted=parse_time(cols[5]), started=_started(state, cols[6]),
            ended=parse_time(cols[7]), reason=cols[8].strip() or None, source="sacct",
            raw_id=cols[9].strip(),
        )
    return _expanded(out)


_KV = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol_kv(line: str) -> dict[str, str]:
    """One ``scontrol -o show job`` line -> {key: value}; values may contain spaces."""
    matches = list(_KV.finditer(line))
    kv: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        kv[m.group(1)] = line[m.end():end].strip()
    return kv


def parse_scontrol_jobs(text: str) -> dict[str, SlurmRecord]:
    """``scontrol -o show job`` (one job per line) -> records by native id; an array task
    (``JobId=8 ArrayJobId=7 ArrayTaskId=0``) by its task id ``7_0``, a pending remainder
    (``ArrayTaskId=1-5%1``) as one record per task."""
    out: dict[str, SlurmRecord] = {}
    for line in text.splitlines():
        if not line.startswith("JobId="):
            continue
        kv = parse_scontrol_kv(line)
        native = scontrol_native(kv)
        if not _is_job_line(native):
            continue
        word, detail = split_state(kv.get("JobState", ""))
        state = map_state(word)
        code, sig = parse_exit_code(kv.get("ExitCode", ""))
        out[native] = SlurmRecord(
            native_id=native, slurm_state=word, state=state, detail=detail,
            exit_code=code, signal=sig, elapsed=parse_elapsed(kv.get("RunTime", "")),
            node=_node(kv.get("NodeList", "")), reason=kv.get("Reason") or None,
            submitted=parse_time(kv.get("SubmitTime", "")),
            started=_started(state, kv.get("StartTime", "")),
            ended=parse_time(kv.get("EndTime", "")) if state in TERMINAL else None,
            source="scontrol",
            extra={k: kv[k] for k in ("StdOut", "StdErr", "WorkDir") if k in kv},
            raw_id=kv.get("JobId", ""),
        )
    return _expanded(out)


# ArrayTaskId of an array record that holds no index any more (Slurm's NO_VAL): an array
# cancelled before any task started (squeue and sacct show it under the bare id too)
NO_TASK = "4294967294"


def scontrol_native(kv: dict[str, str]) -> str:
    """The id squeue and sacct use: ``JobId`` names a job record, which for an array task is
    not its array job (``JobId=8 ArrayJobId=7 ArrayTaskId=0`` is ``7_0``)."""
    job, task = kv.get("ArrayJobId", ""), kv.get("ArrayTaskId", "")
    if not (job and task) or task == NO_TASK:
        return kv.get("JobId", "")
    return f"{job}_{task}" if task.isdigit() else f"{job}_[{task}]"


class SinfoNode(namedtuple("SinfoNode", ("name", "state", "cpus", "memory_mb", "gpus",
                                         "partitions", "cpus_allocated", "free_memory_mb"),
                           defaults=(0, None))):
    """One node of ``sinfo -N``: state (idle, mixed, allocated, down*, ...), gpus (vendor ->
    count, "gpu" when untyped), partitions (a tuple)."""

    __slots__ = ()

    @property
    def available(self) -> bool:
        return self.state.rstrip("*~#!%$@^-") in ("idle", "mixed", "mix")


_GRES_ITEM = re.compile(r"^gpu(?::([A-Za-z0-9_.-]+))?:(\d+)")


def parse_gres(raw: str) -> dict[str, int]:
    """``gpu:nvidia:1,gpu:amd:1`` / ``gpu:2(S:0-1)`` / ``gpu:a100:4(IDX:0-3)`` -> {vendor: n}.

    A type that names a model (a100, mi250) is kept as is: sites name types freely."""
    gpus: dict[str, int] = {}
    if not raw or raw.strip() in ("(null)", "N/A"):
        return gpus
    depth, item, items = 0, "", []
    for ch in raw.strip():  # split on commas outside parentheses
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += ch
    items.append(item)
    for it in items:
        m = _GRES_ITEM.match(it.strip())
        if m:
            kind = (m.group(1) or "gpu").lower()
            gpus[kind] = gpus.get(kind, 0) + int(m.group(2))
    return gpus


def parse_sinfo_nodes(text: str) -> list[SinfoNode]:
    """``sinfo -N -h -o SINFO_FORMAT`` -> one entry per node (partitions merged)."""
    nodes: dict[str, SinfoNode] = {}
    for line in text.splitlines():
        cols = line.strip().split("|")
        if len(cols) < 5 or cols[0] in ("NODELIST", ""):
            continue
        cols += [""] * (8 - len(cols))
        name = cols[0].strip()
        part = cols[5].strip().rstrip("*")
        if name in nodes:
            prev = nodes[name]
            if part and part not in prev.partitions:
                nodes[name] = prev._replace(partitions=(*prev.partitions, part))
            continue
        alloc = 0
        if cols[6].count("/") == 3:
            try:
                alloc = int(cols[6].split("/")[0])
            except ValueError:
                alloc = 0
        nodes[name] = SinfoNode(
            name=name, state=cols[1].strip(), cpus=_int(cols[2]), memory_mb=_int(cols[3]),
            gpus=parse_gres(cols[4]), partitions=(part,) if part else (),
            cpus_allocated=alloc,
            free_memory_mb=_int(cols[7]) if cols[7].strip().isdigit() else None,
        )
    return list(nodes.values())


def gpu_kind(gpus: dict[str, int]) -> str:
    """A node's GPU vendor as a GpuType value: NONE, NVIDIA, AMD, or ANY for a mix."""
    kinds = {k for k, v in gpus.items() if v}
    if not kinds:
        return "NONE"
    return {frozenset({"nvidia"}): "NVIDIA", frozenset({"amd"}): "AMD"}.get(
        frozenset(kinds), "ANY")


def _int(raw: str) -> int:
    m = re.match(r"\d+", raw.strip())
    return int(m.group()) if m else 0


def parse_version(text: str) -> str:
    """``slurm-wlm 22.05.8`` / ``slurm 23.02.1`` -> ``22.05.8``."""
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    return m.group(1) if m else text.strip()


_SBATCH_ID = re.compile(r"^(\d+)(?:;(\S+))?$")


def parse_sbatch_parsable(text: str) -> str:
    """``sbatch --parsable`` prints ``<id>`` or ``<id>;<cluster>``; returns the id.
    Raises ValueError when no id line is present."""
    for line in reversed(text.strip().splitlines()):
        m = _SBATCH_ID.match(line.strip())
        if m:
            return m.group(1)
    raise ValueError(f"no job id in sbatch output: {text.strip()[:200]!r}")


def sbatch_error_line(stderr: str) -> str:
    """The one line of sbatch's stderr a user needs ("Invalid partition name specified")."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "submission failed:" in ln:
            return ln.split("submission failed:", 1)[1].strip()
    for ln in reversed(lines):
        if ln.startswith("sbatch: error:"):
            return ln.removeprefix("sbatch: error:").strip()
    return lines[-1] if lines else "sbatch failed without a message"


ACCOUNTING_DISABLED = (
    "accounting storage is disabled",
    "slurm accounting storage is disabled",
    "slurmdbd: no such file",
)


ACCOUNTING_UNREACHABLE = ("slurmdbd", "persist_conn", "problem talking to the database",
                          "connection refused")


def accounting_unreachable(stderr: str) -> bool:
    """Does sacct's error say that slurmdbd did not answer?"""
    low = stderr.lower()
    return any(s in low for s in ACCOUNTING_UNREACHABLE)


def accounting_disabled(stderr: str) -> bool:
    """Does sacct's error say that this cluster keeps no accounting database?"""
    low = stderr.lower()
    return any(s in low for s in ACCOUNTING_DISABLED)


def first_line(text: str) -> str:
    """The first non-blank line of a client's stderr (its own message)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


# Messages of a Slurm client that cannot even start: slurm.conf missing or unreadable, a
# parse error, or no munge credential. Infrastructure (exit 3), never a rejected job.
CLIENT_CONFIG_ERRORS = (
    "unable to process configuration file", "s_p_parse_file", "parse error in file",
    "could not establish a configuration source", "munge", "authentication error",
    "invalid authentication credential", "auth/munge", "unable to create auth",
)


def client_config_error(stderr: str) -> str | None:
    """The client's own line when stderr says its configuration or authentication failed."""
    for line in stderr.splitlines():
        if any(s in line.lower() for s in CLIENT_CONFIG_ERRORS):
            return line.strip()
    return None


LIST_NAME_PREFIX = "warpforge-"


def parse_list(squeue_text: str, sacct_text: str = "") -> dict[str, SlurmRecord]:
    """warpforge jobs (named warpforge-*) from ``squeue -o SQUEUE_FORMAT|%j`` and
    ``sacct --format=SACCT_FIELDS,JobName``: a finished sacct row wins over squeue's."""
    def ours(line: str) -> bool:
        return line.rsplit("|", 1)[-1].strip().startswith(LIST_NAME_PREFIX)

    squeue_rows = [ln.rsplit("|", 1)[0] for ln in squeue_text.splitlines()
                   if ln.count("|") >= 7 and ours(ln)]
    records = parse_squeue("\n".join(squeue_rows))
    for line in sacct_text.splitlines():
        if not ours(line):
            continue
        for native, rec in parse_sacct(line.rsplit("|", 1)[0]).items():
            if native not in records or rec.terminal:
                records[native] = rec
    return records


def match_correlated(rows, wanted: dict[str, str]) -> dict[str, str]:
    """{correlation id: native id} from (job id, job name, comment) rows. The comment
    ``warpforge:<id>`` decides when present; without one (accounting that does not store
    comments) the job name ``warpforge-<short id>`` does, newest job first."""
    by_name: dict[str, list[str]] = {}
    for cid, name in wanted.items():
        by_name.setdefault(name, []).append(cid)
    found: dict[str, str] = {}
    for native, name, comment in sorted(rows, key=lambda r: _id_key(r[0]), reverse=True):
        native, name, comment = native.strip(), name.strip(), comment.strip()
        if not _is_job_line(native):
            continue
        if comment.startswith("warpforge:"):
            cid = comment.removeprefix("warpforge:")
            if cid in wanted:
                found.setdefault(cid, native)
        elif comment in ("", "(null)"):
            for cid in by_name.get(name, ()):
                found.setdefault(cid, native)
    return found


def _id_key(native: str) -> int:
    m = re.match(r"\d+", native.strip())
    return int(m.group()) if m else -1


def id_key(native: str) -> tuple[int, int]:
    """Sort key of plain and array task ids: ``42`` < ``123_2`` < ``123_10``."""
    job, _, task = native.strip().partition("_")
    return (int(job) if job.isdigit() else -1, int(task) if task.isdigit() else -1)
