"""A finished job's files, read through the shared output root without trusting the cluster
(Ray's ``output_root``, Kubernetes' ``local_output_root``).

The job writes ``<output_root>/<submission id>/`` on a worker; this machine sees the same
directory under ``local_output_root``. Whatever lands there was written by the cluster, so:
the directory is ``<root>/<submission id>`` and nothing else (never a path from job metadata);
it is opened without following a symlink in its place; files are listed without following
symlinks, and a symlink whose target leaves the job's output directory is refused;
``model.mlir`` is read only as a regular file inside it (else it is refused too). A job that
left something refused is not a success: ``with_refusals`` says so, as Slurm's result does.
Directory descriptors (``dir_fd``,
``O_NOFOLLOW``) make the checks and the reads one step, so a link swapped in between cannot
redirect a read.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

MAX_FILES = 10_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Outputs:
    files: list[str] = field(default_factory=list)
    mlir: str | None = None
    # symlinks leaving the job's output directory, a model.mlir that is not a regular file
    refused: list[str] = field(default_factory=list)
    mounted: bool = True  # False: the output root is not visible from this machine


def read_outputs(local_root: str, sid: str) -> Outputs:
    """The files of ``<local_root>/<sid>`` and the MLIR text; ``sid`` is one safe segment."""
    if "/" in sid or sid in ("", ".", ".."):
        raise ValueError(f"not one path segment: {sid!r}")
    if not os.path.isdir(local_root):
        return Outputs(mounted=False)
    found = Outputs()
    root_fd = os.open(local_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            job_fd = os.open(sid, _DIR_FLAGS, dir_fd=root_fd)
        except OSError as exc:
            if os.path.islink(os.path.join(local_root, sid)):
                found.refused.append(".")  # the job's output directory itself
            elif exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # else: nothing written
                raise
            return found
        try:
            job_dir = os.path.join(local_root, sid)
            _walk(job_fd, job_dir, os.path.realpath(job_dir), "", found)
            found.files.sort()
            found.mlir, odd = _read_regular(job_fd, "model.mlir")
            if odd and "model.mlir" not in found.refused:
                found.refused.append("model.mlir")
        finally:
            os.close(job_fd)
    finally:
        os.close(root_fd)
    return found


def _walk(fd: int, job_dir: str, real_job_dir: str, rel: str, found: Outputs) -> None:
    with os.scandir(fd) as entries:
        for entry in entries:
            if len(found.files) >= MAX_FILES:
                return
            path = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_symlink():
                target = os.path.realpath(os.path.join(job_dir, path))
                inside = os.path.commonpath([target, real_job_dir]) == real_job_dir
                if inside and os.path.isfile(target):
                    found.files.append(os.path.join(job_dir, path))
                elif not inside:
                    found.refused.append(path)
            elif entry.is_dir(follow_symlinks=False):
                try:
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # replaced or removed while we looked
                try:
                    _walk(sub, job_dir, real_job_dir, path, found)
                finally:
                    os.close(sub)
            elif entry.is_file(follow_symlinks=False):
                found.files.append(os.path.join(job_dir, path))


def _read_regular(dir_fd: int, name: str) -> tuple[str | None, bool]:
    """(text, refused): refused for a symlink or anything but a regular file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except OSError as exc:
        return None, exc.errno != errno.ENOENT  # a symlink (ELOOP) is never followed
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None, True  # a FIFO or device would block or never end
        return fh.read().decode("utf-8", errors="replace"), False


def with_refusals(success: bool, error: str | None, refused: list[str], job_dir: str
                  ) -> tuple[bool, str | None]:
    """(success, error message) of a result once the refused paths are counted: a job that
    left a symlink out of its output directory did not succeed (`result` exits 1), and
    each refused path is named."""
    if not refused:
        return success, error
    job_dir = job_dir.rstrip("/")
    named = [refusal(job_dir if p == "." else f"{job_dir}/{p}") for p in refused]
    return False, "; ".join(([error] if error else []) + named)


def refusal(path: str) -> str:
    """How `result` and `logs` name a file they would not read (every backend)."""
    return f"refused {path}: a symlink or not a regular file (never followed)"
