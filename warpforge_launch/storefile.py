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


def store_error(path: object, exc: Exception):
    """The LaunchError (exit 1) for an SQLite error of the job store at ``path``: what is
    wrong with the file and what to do, never the bare SQLite exception. Nothing is written
    to a store SQLite cannot use, so nothing in it is lost."""
    from warpforge_launch.errors import LaunchError

    code = getattr(exc, "sqlite_errorname", "") or ""
    if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        return LaunchError(f"job store {path} cannot be written: {exc}",
                           hint="SQLite needs to write the file and create -wal and -shm "
                           "files beside it: make both writable, or set WARPFORGE_HOME to "
                           "another directory")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return LaunchError(f"job store {path} stayed locked by another process: {exc}",
                           hint="try again when the other warpforge-launch command is done")
    if code.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
        return LaunchError(f"job store {path} cannot be written: {exc}",
                           hint="free space on its disk (or fix the disk), then try again")
    return LaunchError(f"job store {path} is unreadable: {exc}",
                       hint="move it aside, with its -wal and -shm files if any (sqlite3's "
                       "`.recover` may salvage its rows); a new one is created on the next "
                       "command")


def home_error(directory: object, exc: OSError):
    """The error for a state directory that cannot be made or used: a setting pointing at a
    file is bad input (exit 2); anything else is this machine's trouble (exit 1)."""
    from warpforge_launch.errors import LaunchError, UsageError

    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        setting = "WARPFORGE_HOME " if os.environ.get("WARPFORGE_HOME") else ""
        return UsageError(f"{setting}{directory} is not a directory (or a file is in its way)",
                          hint="point WARPFORGE_HOME at a directory (it is created if missing)")
    return LaunchError(f"cannot create the job store in {directory}: {exc.strerror or exc}",
                       hint="make it writable, or set WARPFORGE_HOME to another directory")


def check_home() -> None:
    """Refuse a state directory that is a file (one stat): every command, not only those that
    open the job store, says so rather than finding nothing there."""
    import stat

    directory = home_dir()
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            raise home_error(directory, NotADirectoryError())
    except FileNotFoundError:
        pass  # made when first needed
    except OSError as exc:
        raise home_error(directory, exc) from None


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
