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
