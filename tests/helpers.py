"""Small helpers shared by tests: run the real CLI in a fresh process.

Builders and the fake payload live in tests/testlab/ (public to benchmarks); their old
names are re-exported here."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.testlab.builders import local_inventory, model_file  # noqa: F401
from tests.testlab.payload import FAKE_SNAKEGRINDER  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=None, env=None, timeout=60, check_json=False):
    """The installed command as a user runs it, in a fresh process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "warpforge_launch", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check_json:
        proc.json = json.loads(proc.stdout)
    return proc


# `status` in one process: the job-model-free path, the heavy modules it loaded, the HTTP
# GETs it sent, the statuses the store then holds, and the full path (commands.cmd_status)
# for the same ids
_LEAN_THEN_FULL = """
import json, sqlite3, sys
from warpforge_launch import cli, httpget, storefile
argv = sys.argv[1:]
gets, get = [], httpget.get
def counted(host, port, target, *args, **kwargs):
    gets.append(target)
    return get(host, port, target, *args, **kwargs)
httpget.get = counted
rc = cli.main(argv)
httpget.get = get
heavy = [m for m in ('dataclasses', 'warpforge_launch.jobs', 'warpforge_launch.launcher',
                     'warpforge_launch.schedulers.slurm', 'warpforge_launch.schedulers.ray',
                     'warpforge_launch.schedulers.kubernetes') if m in sys.modules]
db = sqlite3.connect(storefile.store_file())
rows = db.execute('SELECT job_id, status FROM jobs').fetchall()
print('@@', json.dumps(heavy), '@@', json.dumps(gets), '@@',
      json.dumps({j: json.loads(s) for j, s in rows}), '@@', sep='\\n')
from warpforge_launch import commands
sys.exit(rc or commands.cmd_status(cli.parse(argv)))
"""


def lean_and_full_status(*args: str, env=None, timeout=60):
    """(lean docs, heavy modules loaded, GET targets sent, stored docs by id, full docs) of
    one ``status --json`` command line (``args`` hold --json and the ids)."""
    proc = subprocess.run([sys.executable, "-c", _LEAN_THEN_FULL, *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    lean, heavy, gets, stored, full = proc.stdout.split("\n@@\n")
    def as_list(doc):
        return doc if isinstance(doc, list) else [doc]

    return (as_list(json.loads(lean)), json.loads(heavy), json.loads(gets),
            json.loads(stored), as_list(json.loads(full)))


def assert_same_status(lean: list[dict], full: list[dict]) -> None:
    """The lean path printed what the full path prints, up to the clock (elapsed grows)."""
    for a, b in zip(lean, full, strict=True):
        assert a.keys() == b.keys() and a["job_id"] == b["job_id"]
        for key in ("state", "node_name", "correlation_id", "message"):
            assert a[key] == b[key], key
        assert (a["elapsed"] is None) == (b["elapsed"] is None)
        assert a["elapsed"] is None or 0 <= a["elapsed"] <= b["elapsed"]


@contextlib.contextmanager
def stored_config(job_ids, **changes):
    """The jobs' stored scheduler config with ``changes`` for the block, restored after: a
    job whose cluster has since gone silent (its dashboard, login node or apiserver now a
    black hole)."""
    store = os.path.join(os.environ["WARPFORGE_HOME"], "jobs.sqlite3")
    with sqlite3.connect(store) as db:
        saved = {j: db.execute("SELECT config FROM jobs WHERE job_id = ?", (j,)).fetchone()[0]
                 for j in job_ids}
        for job_id, text in saved.items():
            db.execute("UPDATE jobs SET config = ? WHERE job_id = ?",
                       (json.dumps({**json.loads(text), **changes}), job_id))
    try:
        yield
    finally:
        with sqlite3.connect(store) as db:
            for job_id, text in saved.items():
                db.execute("UPDATE jobs SET config = ? WHERE job_id = ?", (text, job_id))


def timed_cli(*args: str, timeout=60):
    """(the finished process, seconds it took) of ``run_cli(*args)``."""
    import time

    t0 = time.monotonic()
    done = run_cli(*args, timeout=timeout)
    return done, time.monotonic() - t0


def wait_finished(launcher, ids, deadline=90.0):
    """The jobs' statuses once all of them are terminal (polled every 0.3 s)."""
    import time

    end = time.monotonic() + deadline
    while True:
        states = launcher.statuses(ids)
        if all(s.state.terminal for s in states.values()):
            return states
        assert time.monotonic() < end, {j: s.state for j, s in states.items()}
        time.sleep(0.3)
