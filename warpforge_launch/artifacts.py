"""Fetched results: copy finished jobs' files from wherever their backend left them.

``fetch(launcher, job_ids)`` is the library entry (``warpforge-launch fetch``, ``result
--fetch`` and a sweep's fetch of all its cells call it): one status refresh for all ids,
then one ``Scheduler.fetch_outputs`` call per scheduler instance with every job of that
instance (Slurm moves them all as one archive in one round trip), then one atomic commit per
job into the artifact store (artifacts_store.py). Idempotent: a second fetch of unchanged
jobs moves no file and rewrites nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warpforge_launch.artifacts_store import ArtifactStore, Fetched, Staging, check_job_id
from warpforge_launch.errors import LaunchError, UsageError

if TYPE_CHECKING:
    from warpforge_launch.launcher import Launcher
    from warpforge_launch.schedulers.base import Scheduler
    from warpforge_launch.store import JobRecord

__all__ = ["ArtifactStore", "Fetched", "fetch"]


def fetch(launcher: Launcher | None, job_ids: Sequence[str],
          to: Path | str | None = None) -> list[Fetched]:
    """Fetch finished jobs into ``<to or $WARPFORGE_HOME/artifacts>/<job id>/``.

    Raises UsageError (exit 2), before anything is copied, when an id is unknown or a job
    has not finished. A backend that fails (unreachable, a damaged stream) fails only its
    own jobs: their ``Fetched.error`` says why and ``exit_code`` is 3 (unreachable) or 1;
    nothing half-copied is ever committed. Results come in the order of ``job_ids``.
    """
    if launcher is None:
        from warpforge_launch.launcher import Launcher

        with Launcher() as own:
            return fetch(own, job_ids, to)
    ids = [check_job_id(j) for j in dict.fromkeys(job_ids)]
    if not ids:
        raise UsageError("no job ids to fetch")
    records = launcher.store.find_many(ids)
    # unknown ids raise NotFoundError (exit 2); the jobs of an instance that cannot be
    # reached are not fetched (exit 3) while the others are
    statuses = launcher._statuses(ids, records, partial=True)
    down = {j: launcher.unreachable[instance] for j in ids if (instance := (
        records[j].instance if j in records else j.partition("-")[0])) in launcher.unreachable}
    unfinished = [f"{j} ({statuses[j].state.value})" for j in ids
                  if j not in down and not statuses[j].state.terminal]
    if unfinished:
        raise UsageError(f"not finished yet, nothing fetched: {', '.join(unfinished)}",
                         hint="fetch copies finished jobs only; wait with `warpforge-launch "
                         "status`, or submit with --wait")
    for j in ids:
        if records.get(j) is not None and records[j].superseded_by:
            raise UsageError(f"job {j} can no longer be read from its backend: its id was "
                             f"given to {records[j].superseded_by}")
    with ArtifactStore(to) as store:
        got = {f.job_id: f for f in _fetch(launcher, [j for j in ids if j not in down],
                                           records, statuses, store)}
        got.update((j, Fetched(j, store.root / j, error=f"not fetched: {exc}", exit_code=3))
                   for j, exc in down.items())
    return [got[j] for j in ids]


def _fetch(launcher, ids, records, statuses, store: ArtifactStore) -> list[Fetched]:
    groups: dict[int, tuple[Scheduler, list[str]]] = {}
    for j in ids:
        _, sched = launcher._route(j, records.get(j))
        groups.setdefault(id(sched), (sched, []))[1].append(j)
    out: dict[str, Fetched] = {}
    for sched, members in groups.values():
        stagings = [store.stage(j) for j in members]
        try:
            sched.fetch_outputs(stagings)
        except LaunchError as exc:
            for st in stagings:
                store.discard(st)
                out[st.job_id] = Fetched(st.job_id, store.root / st.job_id, error=str(exc),
                                         exit_code=3 if exc.exit_code == 3 else 1)
            continue
        except BaseException:
            for st in stagings:
                store.discard(st)
            raise
        metas = {st.job_id: _meta(sched, st, records.get(st.job_id), statuses[st.job_id])
                 for st in stagings}
        _commit_all(store, stagings, metas, out)
    return [out[j] for j in ids]


def _commit_all(store: ArtifactStore, stagings: list[Staging], metas: dict[str, dict],
                out: dict[str, Fetched]) -> None:
    """Commit every job, on two threads when there are many: each commit creates a file
    (the manifest), and file creation is where a big fetch spends its time."""
    def commit(part: list[Staging]) -> None:
        for st in part:
            try:
                out[st.job_id] = store.commit(st, metas[st.job_id])
            except LaunchError as exc:
                store.discard(st)
                out[st.job_id] = Fetched(st.job_id, store.root / st.job_id, error=str(exc),
                                         exit_code=exc.exit_code)

    if len(stagings) < 16:
        commit(stagings)
        return
    import threading

    failed: list[BaseException] = []

    def other() -> None:
        try:
            commit(stagings[1::2])
        except BaseException as exc:  # raised again below, on the calling thread
            failed.append(exc)

    helper = threading.Thread(target=other, name="wf-fetch-commit", daemon=True)
    helper.start()
    try:
        commit(stagings[::2])
    finally:
        helper.join()
    if failed:
        raise failed[0]


def _meta(sched: Scheduler, st: Staging, record: JobRecord | None, status) -> dict[str, Any]:
    """What the manifest says about the job besides its files."""
    submission = record.submission if record is not None else {}
    elapsed = status.elapsed.total_seconds() if status.elapsed is not None else None
    shown = status.to_dict()
    return {
        "scheduler": {"instance": sched.name, "type": sched.type_name},
        "native_id": sched.native_id(st.job_id),
        "definition": submission.get("definition"),
        "correlation_id": record.correlation_id if record is not None else
        status.correlation_id,
        "status": shown,
        "timings": {"submitted_at": submission.get("submitted_at"),
                    "state_changed_at": shown.get("state_changed_at"),
                    "elapsed_seconds": elapsed},
    }
