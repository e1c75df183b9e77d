"""Where the job store lives and which schema it has.

Kept apart from store.py (and free of the job model) so that `status` of finished jobs
can read the store without importing the dataclasses (quickstatus.py).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

SCHEMA_VERSION = 3
# A row's ``state`` is a JobState value, or SUBMITTING: recorded before the backend was
# asked, completed after it answered (a crash in between leaves it for ``reconcile``).
SUBMITTING = "SUBMITTING"
# A fresh status (state, status JSON, updated_at, job_id): a final or SUBMITTING row never
# changes this way (a SUBMITTING row is completed only by the submit's own reconciliation).
STATUS_UPDATE_SQL = ("UPDATE jobs SET state = ?, status = ?, updated_at = ? WHERE job_id = ? "
                     "AND state NOT IN ('CANCELLED','COMPLETED','FAILED','TIMEOUT', "
                     f"'{SUBMITTING}')")


def home_dir() -> str:
    """$WARPFORGE_HOME, default ~/.local/state/warpforge-launch (as a string: no pathlib)."""
    env = os.environ.get("WARPFORGE_HOME")
    if env:
        return os.path.expanduser(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "warpforge-launch")


def home() -> Path:
    """$WARPFORGE_HOME, default ~/.local/state/warpforge-launch."""
    from pathlib import Path

    return Path(home_dir())


def store_file() -> str:
    return os.path.join(home_dir(), "jobs.sqlite3")


def owned_private(path: str) -> bool:
    """Owned by this user and writable by no one else: a cache under the state dir is read
    only then (the inventory cache is unpickled, the re-push plan holds commands we run)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


CACHE_KEEP = 32  # cache files of one kind kept in the state dir (the newest written)


def write_cache(path: str, data: bytes, keep: int = CACHE_KEEP) -> None:
    """Replace the cache file ``path`` (``<kind>-<16 hex>.<ext>`` in the state dir's cache
    directory, made 0700) with ``data`` atomically, 0600; then remove the oldest files of the
    same kind beyond ``keep`` - only names of that exact shape, which only these caches
    write, and only this user's. Any trouble only costs the cache."""
    import re

    directory, name = os.path.split(path)
    shape = re.fullmatch(r"([a-z]+)-[0-9a-f]{16}(\.[a-z]+)", name)
    if shape is None:
        raise ValueError(f"not a cache file name: {name!r}")
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    kind = re.compile(re.escape(shape[1]) + r"-[0-9a-f]{16}" + re.escape(shape[2]))
    try:
        with os.scandir(directory) as entries:
            ours = [(e.stat(follow_symlinks=False).st_mtime_ns, e.path) for e in entries
                    if kind.fullmatch(e.name) and e.is_file(follow_symlinks=False)
                    and e.stat(follow_symlinks=False).st_uid == os.getuid()]
        for _, old in sorted(ours, reverse=True)[keep:]:
            os.unlink(old)
    except OSError:
        pass
