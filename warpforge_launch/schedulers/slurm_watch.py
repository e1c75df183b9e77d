"""Watch many Slurm jobs with as few client calls as possible (submitit's SlurmInfoWatcher).

A refresh is ONE ``squeue`` for every job not known to be finished and ONE ``sacct -X -P``
for those squeue does not show as active. Finished jobs are cached (zero calls once every
job is terminal); a job asked about again inside its adaptive interval is answered from
memory, so a tight ``--wait`` loop cannot hammer slurmctld. When the cluster keeps no
accounting, the first ``sacct`` says so; that is remembered under $WARPFORGE_HOME and from
then on ``scontrol -o show job`` replaces squeue and sacct.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from warpforge_launch.errors import InfrastructureError
from warpforge_launch.schedulers import slurm_parse as sp
from warpforge_launch.schedulers.slurm_transport import Completed

INVALID_ID = "invalid job id specified"
COMMENT_PREFIX = "warpforge:"

Runner = Callable[..., Completed]  # (argv, *, check=True) -> Completed


class _AccountingDown(Exception):
    """sacct could not reach slurmdbd (the controller may well be up)."""


class SlurmWatcher:
    """Batched, cached status of one Slurm instance's jobs, by native id."""

    def __init__(self, run: Runner, state_file: str | os.PathLike,
                 max_poll_interval: float = 30.0):
        self._run = run
        self._state_file = os.fspath(state_file)  # a str: pathlib costs `status` 7 ms
        self.max_poll_interval = max_poll_interval
        self._terminal: dict[str, sp.SlurmRecord] = {}
        self._last: dict[str, tuple[float, sp.SlurmRecord]] = {}
        self._accounting: bool | None = None

    # -- accounting detection ----------------------------------------------------------------
    def accounting_enabled(self) -> bool | None:
        """True/False once known (remembered across processes), None before the first sacct."""
        if self._accounting is None:
            try:
                with open(self._state_file) as fh:
                    self._accounting = json.load(fh)["accounting"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
        return self._accounting

    def remember_accounting(self, enabled: bool) -> None:
        self._accounting = enabled
        os.makedirs(os.path.dirname(self._state_file), exist_ok=True)
        with open(self._state_file, "w") as fh:
            json.dump({"accounting": enabled, "checked_at": datetime.now(UTC).isoformat()}, fh)

    # -- refresh --------------------------------------------------------------------------------
    def interval(self, rec: sp.SlurmRecord) -> float:
        """0.5 s while a job is young, a tenth of its elapsed time after, capped."""
        elapsed = rec.elapsed.total_seconds() if rec.elapsed else 0.0
        return max(0.5, min(self.max_poll_interval, elapsed / 10))

    def last_interval(self, native: str) -> float:
        seen = self._last.get(native)
        return self.interval(seen[1]) if seen else 0.0

    def forget(self, *natives: str) -> None:
        """Drop the remembered answers (after a cancel, the next status must ask Slurm)."""
        for native in natives:
            self._last.pop(native, None)

    def records(self, natives: Sequence[str]) -> dict[str, sp.SlurmRecord]:
        """Records of the jobs Slurm knows, from cache or one batched refresh."""
        out: dict[str, sp.SlurmRecord] = {}
        todo: list[str] = []
        now = time.monotonic()
        for native in dict.fromkeys(natives):
            seen = self._last.get(native)
            if native in self._terminal:
                out[native] = self._terminal[native]
            elif seen is not None and now - seen[0] < self.interval(seen[1]):
                out[native] = seen[1]
            else:
                todo.append(native)
        if not todo:
            return out
        fetched = self._fetch(sorted(todo, key=sp.id_key))
        now = time.monotonic()
        for native in todo:
            rec = fetched.get(native)
            if rec is None:
                continue
            self._last[native] = (now, rec)
            if rec.terminal and rec.source != "squeue":  # squeue lacks the exit code
                self._terminal[native] = rec
            out[native] = rec
        return out

    def _fetch(self, natives: list[str]) -> dict[str, sp.SlurmRecord]:
        if self.accounting_enabled() is False:
            return self._scontrol(natives)
        queued = self._squeue(natives)
        active = {n: r for n, r in queued.items() if not r.terminal}
        rest = [n for n in natives if n not in active]
        if not rest:
            return active
        try:
            done = self._sacct(rest, queued)
        except _AccountingDown as exc:  # slurmdbd down: squeue's answer, where it has one
            unknown = [n for n in rest if n not in queued]
            if unknown:
                raise InfrastructureError(
                    f"Slurm accounting (slurmdbd) unreachable, and squeue no longer shows "
                    f"job {unknown[0]}: {exc}", hint="is slurmdbd running?") from None
            done = {}
        if done is None:  # accounting disabled: detected now, remembered from here on
            done = self._scontrol(rest)
        merged = dict(active)
        for n in rest:
            rec = done.get(n)
            if rec is not None and (rec.terminal or n not in queued):
                merged[n] = rec
            elif n in queued:
                merged[n] = queued[n]  # finished per squeue, accounting not caught up yet
        return merged

    def _squeue(self, natives: list[str]) -> dict[str, sp.SlurmRecord]:
        # -r: one line per array task, also for tasks still pending in one record
        done = self._run(["squeue", "-h", "-r", "-t", "all", "-j", _asked(natives),
                          "-o", sp.SQUEUE_FORMAT])
        if done.returncode != 0:
            if INVALID_ID in done.stderr.lower():
                return {}  # every id has left squeue (22.05 exits 1 for that)
            raise InfrastructureError(f"squeue failed: {sp.first_line(done.stderr)}")
        return _tasks(sp.parse_squeue(done.stdout), natives)

    def _sacct(self, natives: list[str], queued: dict[str, sp.SlurmRecord]
               ) -> dict[str, sp.SlurmRecord] | None:
        done = self._run(["sacct", "-X", "-P", "-n", "-j", _asked(natives),
                          f"--format={sp.SACCT_FIELDS}"], check=False)
        if done.returncode != 0:
            if sp.accounting_disabled(done.stderr):
                self.remember_accounting(False)
                return None
            if sp.accounting_unreachable(done.stderr):
                raise _AccountingDown(sp.first_line(done.stderr))
            raise InfrastructureError(f"sacct failed: {sp.first_line(done.stderr)}",
                                      hint="is slurmdbd up?")
        if self._accounting is not True:
            self.remember_accounting(True)
        return _tasks(sp.parse_sacct(done.stdout), natives, queued)

    def _scontrol(self, natives: list[str] | None = None) -> dict[str, sp.SlurmRecord]:
        # one call for every job the controller still holds (ids given one by one would
        # make it one call per job; an unknown id among several fails the whole call)
        done = self._run(["scontrol", "-o", "show", "job"])
        if done.returncode != 0 and INVALID_ID not in done.stderr.lower():
            raise InfrastructureError(f"scontrol failed: {sp.first_line(done.stderr)}")
        records = sp.parse_scontrol_jobs(done.stdout)
        if natives is None:
            return records
        records = _tasks(records, natives)
        wanted = set(natives)
        return {n: r for n, r in records.items() if n in wanted}

    # -- finding jobs by correlation id -----------------------------------------------------------
    def find_correlated(self, correlation_ids: Sequence[str]) -> dict[str, str]:
        """{correlation id: native id} of accepted jobs, found by the ``--comment`` marker
        (squeue, scontrol) or, in accounting, by the job name that carries the short id:
        ONE squeue plus, for what squeue did not show, ONE sacct (or one scontrol)."""
        wanted = {c: f"warpforge-{c[:8]}" for c in dict.fromkeys(correlation_ids)}
        if not wanted:
            return {}
        names = ",".join(sorted(set(wanted.values())))
        found: dict[str, str] = {}
        if self.accounting_enabled() is False:
            rows = self._run(["scontrol", "-o", "show", "job"])
            jobs = [(sp.scontrol_native(kv), kv.get("JobName", ""), kv.get("Comment", ""))
                    for kv in map(sp.parse_scontrol_kv, rows.stdout.splitlines())]
            return sp.match_correlated(jobs, wanted)
        queued = self._run(["squeue", "-h", "-t", "all", "--me", "-n", names,
                            "-o", "%i|%j|%k"])
        if queued.returncode != 0:
            raise InfrastructureError(f"squeue failed: {sp.first_line(queued.stderr)}")
        found.update(sp.match_correlated(
            [tuple((ln.split("|", 2) + ["", ""])[:3]) for ln in queued.stdout.splitlines()],
            wanted))
        rest = {c: n for c, n in wanted.items() if c not in found}
        if rest:
            acct = self._run(["sacct", "-X", "-P", "-n", "-S", "now-30days",
                              "--name", ",".join(sorted(set(rest.values()))),
                              "--format=JobID,JobName,Comment"], check=False)
            if acct.returncode == 0:
                found.update(sp.match_correlated(
                    [tuple((ln.split("|", 2) + ["", ""])[:3])
                     for ln in acct.stdout.splitlines()], rest))
            elif sp.accounting_disabled(acct.stderr):
                self.remember_accounting(False)
            else:
                raise InfrastructureError(f"sacct failed: {sp.first_line(acct.stderr)}",
                                          hint="is slurmdbd up?")
        return found


def _asked(natives: Sequence[str]) -> str:
    """The ``-j`` list: array tasks are asked for by their array job (``123`` for
    ``123_4``), which also returns tasks still pending in one record and an array that was
    cancelled before any task split from it."""
    return ",".join(sorted({n.partition("_")[0] for n in natives}, key=int))


def _tasks(records: dict[str, sp.SlurmRecord], natives: Sequence[str],
           queued: dict[str, sp.SlurmRecord] | None = None) -> dict[str, sp.SlurmRecord]:
    """Records by the ids asked for, each from a row that names that task (``123_4``), or
    from the array's own job record that holds it: a pending remainder (``123_[2-5%1]``,
    expanded by the parser) lists its indices; a row under the bare id (``123``) names none.

    The array's own record (``123``, job record id 123) holds the tasks still pending and
    finally runs as the last task to start; sacct shows it under the bare id until
    accounting learns which task that was, and squeue and sacct show it so for good once it
    was cancelled while pending. So a bare row is a task's only when squeue's row of the
    task carries the same job record id (squeue %A, sacct JobIDRaw), or, for a task squeue
    does not name, when that record never ran (no node): then it ran as no task, and every
    task that did run has a record of its own. Never another task's row."""
    out = {n: records[n] for n in natives if n in records}
    for n in natives:
        job, sep, _ = n.partition("_")
        bare = records.get(job)
        if not sep or n in out or bare is None or bare.raw_id not in (job, ""):
            continue
        seen = (queued or {}).get(n)
        if (seen.raw_id == job == bare.raw_id) if seen is not None else bare.node is None:
            out[n] = bare._replace(native_id=n)
    return out
