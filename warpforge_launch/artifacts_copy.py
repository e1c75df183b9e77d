"""Fetch from a directory this machine sees (Local job dirs, Ray's and Kubernetes' shared
output roots) into a Staging, without ever following a symlink.

What lies there was written by the job, so it is not trusted: every directory is opened
relative to its parent with ``O_NOFOLLOW`` (a link swapped in between cannot redirect a
read), symlinks are recorded (inside the job's output directory) or refused (leading out),
and only regular files are read. A file whose size and mtime match the last fetch is not
read at all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

from warpforge_launch.artifacts_store import NOT_REGULAR, OUT_OF_DIR, Staging, link_leaves

MAX_ENTRIES = 100_000
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def copy_tree(staging: Staging, parent: str, name: str, prefix: str = "output") -> bool:
    """``<parent>/<name>`` (the job's --out dir) into ``prefix/...``; False when absent."""
    try:
        parent_fd = os.open(parent, _DIR & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        try:
            fd = os.open(name, _DIR, dir_fd=parent_fd)
        except OSError:
            try:
                target = os.readlink(name, dir_fd=parent_fd)
            except OSError:
                return False  # absent or not a directory: nothing written there
            staging.refuse(prefix, target, OUT_OF_DIR)
            return True
        try:
            _walk(staging, fd, prefix, "", [0])
        finally:
            os.close(fd)
    finally:
        os.close(parent_fd)
    return True


def copy_file(staging: Staging, parent: str, name: str, dest: str) -> bool:
    """One file (a log) into ``dest``; a symlink in its place is refused."""
    try:
        parent_fd = os.open(parent, _DIR & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        _entry(staging, parent_fd, name, st, dest, dest)
    finally:
        os.close(parent_fd)
    return True


def _walk(staging: Staging, fd: int, prefix: str, rel: str, count: list[int]) -> None:
    with os.scandir(fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        count[0] += 1
        if count[0] > MAX_ENTRIES:
            staging.notes.append(f"more than {MAX_ENTRIES} entries: the rest was not fetched")
            return
        sub = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(entry.name, _DIR, dir_fd=fd)
            except OSError:
                continue  # replaced or removed while we looked
            try:
                _walk(staging, child, prefix, sub, count)
            finally:
                os.close(child)
        else:
            _entry(staging, fd, entry.name, st, f"{prefix}/{sub}", sub)


def _entry(staging: Staging, dir_fd: int, name: str, st: os.stat_result, path: str,
           inside: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=dir_fd)
        if not path.startswith("output/") or link_leaves(inside, target):
            staging.refuse(path, target, OUT_OF_DIR)
        else:
            staging.link(path, target)
        return
    if not stat.S_ISREG(st.st_mode):
        staging.refuse(path, None, NOT_REGULAR)
        return
    token = str(st.st_mtime_ns)
    if staging.keep(path, st.st_size, token):
        return
    try:
        fd = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError:
        staging.refuse(path, None, "replaced while fetching: not read")
        return
    with os.fdopen(fd, "rb") as f:
        now = os.fstat(f.fileno())
        if not stat.S_ISREG(now.st_mode):
            staging.refuse(path, None, NOT_REGULAR)
            return
        staging.write(path, _chunks(f), size=now.st_size, mtime_ns=now.st_mtime_ns,
                      source_mtime=str(now.st_mtime_ns))


def _chunks(f) -> Iterator[bytes]:
    while chunk := f.read(1 << 20):
        yield chunk


def save_log(staging: Staging, path: str, read: Callable[[], str]) -> None:
    """A log a backend serves as text (Ray, a pod), asked for only when the last fetch does
    not hold it already: a finished job's log does not change."""
    if staging.keep(path, staging.have[path].size, "log") if path in staging.have else False:
        return
    data = read().encode()
    import time

    now = time.time_ns()
    staging.write(path, [data], size=len(data), mtime_ns=now, source_mtime="log")
