"""The artifact store on this machine: one directory per fetched job, each with a manifest.

Layout: ``<root>/<job id>/`` holds ``output/...`` (what the payload wrote into its --out
directory), ``stdout.log`` and ``stderr.log`` (what the job printed), and
``artifacts.json`` (the manifest: sha256, size and mtime of every file, the job definition,
the scheduler instance, status and times). The manifest is also the tool's ownership mark:
``artifacts gc`` removes a directory only when it carries one that names it.

A fetch never leaves a half-written directory that looks complete: everything lands in a
private staging directory (``.wf-staging-*/<job id>``), files the last fetch already holds
intact are hard-linked over, the manifest is written last, and the staging directory
replaces the old one by rename. A file arriving is hashed as it is written and checked
against the size (and, where the source sends one, the sha256) announced for it: a short or
corrupt stream is an error and nothing is committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from warpforge_launch.errors import LaunchError, UsageError
from warpforge_launch.jobs import check_job_id  # noqa: F401 - a job id names a directory

KIND = "warpforge-artifacts"
VERSION = 1
MANIFEST = "artifacts.json"
STAGING_PREFIX = ".wf-staging-"
TRASH_PREFIX = ".wf-trash-"
STAGING_MARK = ".warpforge-staging"
LEFTOVER_AGE = 3600.0  # staging/trash dirs older than this belong to no live fetch
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class TransferError(LaunchError):
    """What arrived is not what the source announced (short stream, wrong sha256)."""


def default_root() -> Path:
    from warpforge_launch.store import home

    return home() / "artifacts"


def safe_relpath(path: str) -> str:
    """A relative path of plain segments: never absolute, never '..', never empty parts."""
    if path and path[0] not in "./" and path[-1] != "/" and "//" not in path and \
            "/." not in path and "\0" not in path:
        return path  # no segment starts with a dot and none is empty: the common case
    parts = path.split("/")
    if not path or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise TransferError(f"unsafe path {path!r} from the source: refused")
    return path


# Why an entry was not fetched. The output dir is the unit a link may stay inside: on Slurm
# it sits in the shared work dir beside other jobs' logs and outputs.
OUT_OF_DIR = "a symlink leading out of the job's output directory: not followed"
NOT_REGULAR = "not a regular file (fifo, socket or device): not read"


def link_leaves(link_path: str, target: str) -> bool:
    """True when a symlink at ``link_path`` (relative to the job's output directory) names
    something outside it. Judged on the text alone: the link is never followed."""
    if not target or target.startswith("/"):
        return True
    depth = len(link_path.split("/")) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


@dataclass(frozen=True)
class FileEntry:
    path: str  # inside the artifact dir: output/model.mlir, stdout.log
    size: int
    sha256: str
    mtime_ns: int
    source_mtime: str  # the source's own mtime token, compared on the next fetch

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "mtime_ns": self.mtime_ns, "source_mtime": self.source_mtime}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileEntry:
        return cls(str(d["path"]), int(d["size"]), str(d["sha256"]), int(d["mtime_ns"]),
                   str(d["source_mtime"]))


@dataclass
class Staging:
    """One job's fetch in progress, what a backend's ``fetch_outputs`` fills in.

    ``have`` holds the files the last fetch left intact (size and mtime as recorded), so a
    backend sends only what differs; ``keep`` confirms one is unchanged at the source,
    ``write`` stores a new or changed one, ``link`` records a symlink that stays inside the
    job's output directory (never recreated), ``refuse`` one that leaves it or is no regular
    file.
    """

    job_id: str
    dir: Path
    have: dict[str, FileEntry]
    old_manifest: dict[str, Any] | None = None
    kept: dict[str, FileEntry] = field(default_factory=dict)
    new: dict[str, FileEntry] = field(default_factory=dict)
    links: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""
    bytes_written: int = 0
    _made: set[str] = field(default_factory=set, repr=False)
    _root: str = field(default="", repr=False)

    def _set_root(self) -> str:
        self._root = os.fspath(self.dir)
        return self._root

    def keep(self, path: str, size: int, source_mtime: str) -> bool:
        """The source still has ``path`` as the last fetch saw it: keep the copy we hold."""
        old = self.have.get(path)
        if old is None or old.size != size or old.source_mtime != source_mtime:
            return False
        self.kept[path] = old
        return True

    def write(self, path: str, chunks: Iterable[bytes], *, size: int, mtime_ns: int,
              source_mtime: str, sha256: str | None = None) -> FileEntry:
        """Store one file from ``chunks``; its size (and sha256, when the source sent one)
        must match what the source announced."""
        safe_relpath(path)
        if path in self.new or path == MANIFEST:
            raise TransferError(f"{self.job_id}: {path} arrived twice")
        root = self._root or self._set_root()  # plain strings: pathlib costs per file
        parent = path.rpartition("/")[0]
        if parent not in self._made:
            self._mkdirs(root, parent)
        fd = os.open(f"{root}/{path}", _NEW_FILE, 0o600)
        digest, n = hashlib.sha256(), 0
        try:  # plain descriptor writes: no buffering, no tty probe, one syscall per chunk
            for chunk in chunks:
                digest.update(chunk)
                n += len(chunk)
                done = os.write(fd, chunk)
                if done < len(chunk):
                    view = memoryview(chunk)[done:]
                    while view:
                        view = view[os.write(fd, view):]
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)
        self.bytes_written += n
        if n != size:
            raise TransferError(f"{self.job_id}: {path}: {n} bytes arrived, {size} announced "
                                "(the stream was cut short or the file changed)")
        got = digest.hexdigest()
        if sha256 is not None and got != sha256:
            raise TransferError(f"{self.job_id}: {path}: sha256 {got} differs from the "
                                f"source's {sha256}")
        entry = FileEntry(path, n, got, mtime_ns, source_mtime)
        self.new[path] = entry
        return entry

    def make_dirs(self, *parents: str) -> None:
        """Make these dirs now (a source still listing leaves time for it); one left empty
        is removed again by the commit."""
        root = self._root or self._set_root()
        for parent in parents:
            if parent not in self._made:
                self._mkdirs(root, safe_relpath(parent) if parent else parent)

    def _mkdirs(self, root: str, parent: str) -> None:
        """Create ``parent`` ("" is the staging dir itself, made when first needed) and what
        it lacks above it, top down, each once."""
        if "" not in self._made:
            os.mkdir(root, 0o700)
            self._made.add("")
        parts = parent.split("/") if parent else []
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in self._made:
                os.mkdir(f"{root}/{sub}", 0o700)
                self._made.add(sub)

    def link(self, path: str, target: str) -> None:
        self.links.append({"path": path, "target": target})

    def refuse(self, path: str, target: str | None, reason: str) -> None:
        self.refused.append({"path": path, "target": target or "", "reason": reason})

    @property
    def files(self) -> dict[str, FileEntry]:
        return {**self.kept, **self.new}


@dataclass(frozen=True)
class Fetched:
    """One job's fetch: where its artifacts are, what they hold, what travelled this time."""

    job_id: str
    path: Path
    files: int = 0
    bytes: int = 0
    transferred_files: int = 0
    transferred_bytes: int = 0
    changed: bool = False
    refused: tuple[dict[str, str], ...] = ()
    error: str | None = None
    exit_code: int = 0  # 0 ok, 1 verification failed or a link refused, 3 unreachable
    kept_gone: tuple[str, ...] = ()  # files of the last fetch the source no longer has

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "path": str(self.path), "files": self.files,
                "bytes": self.bytes, "transferred_files": self.transferred_files,
                "transferred_bytes": self.transferred_bytes, "changed": self.changed,
                "refused": list(self.refused), "kept_gone": list(self.kept_gone),
                "error": self.error}


def read_manifest(job_dir: Path) -> dict[str, Any] | None:
    """The manifest of a directory this tool made, or None (absent, foreign, unreadable)."""
    path = job_dir / MANIFEST
    try:  # the manifest first: one failing call when the job was never fetched
        if not stat.S_ISREG(os.lstat(path).st_mode) or job_dir.is_symlink():
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != KIND or \
            data.get("job_id") != job_dir.name:
        return None
    return data


class ArtifactStore:
    """``<root>/<job id>/`` directories; ``root`` defaults to ``$WARPFORGE_HOME/artifacts``."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self._lock_fd: int | None = None
        self._threads_lock = threading.Lock()
        self._staging: Path | None = None

    def close(self) -> None:
        """Remove this store's staging dir (its jobs are committed or discarded by now)."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def stage(self, job_id: str) -> Staging:
        """A private staging dir for ``job_id`` (made when first written to), knowing what
        the last fetch left."""
        check_job_id(job_id)
        if self._staging is None:  # one per store: cheap for a sweep's hundreds of jobs
            import tempfile

            try:
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise UsageError(f"cannot create the artifacts directory {self.root}: "
                                 f"{exc.strerror}") from None
            if not self.root.is_dir():
                raise UsageError(f"{self.root} is not a directory")

            self._staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
            (self._staging / STAGING_MARK).touch(mode=0o600)
        d = self._staging / job_id  # made by the first file written, or by commit
        old = read_manifest(self.root / job_id)
        return Staging(job_id, d, self._intact(job_id, old), old)

    def _intact(self, job_id: str, manifest: dict[str, Any] | None) -> dict[str, FileEntry]:
        """Files of the last fetch still as it left them (size and mtime): cheap, no reads."""
        have: dict[str, FileEntry] = {}
        for raw in (manifest or {}).get("files", []):
            try:
                entry = FileEntry.from_dict(raw)
                safe_relpath(entry.path)
                st = os.lstat(self.root / job_id / entry.path)
            except (OSError, KeyError, TypeError, ValueError, TransferError):
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size == entry.size \
                    and st.st_mtime_ns == entry.mtime_ns:
                have[entry.path] = entry
        return have

    def discard(self, staging: Staging) -> None:
        shutil.rmtree(staging.dir, ignore_errors=True)

    def commit(self, staging: Staging, meta: dict[str, Any]) -> Fetched:
        """Make the staged fetch the job's artifact dir (or drop it when nothing changed)."""
        # what the last fetch verified and the source no longer offers (deleted there, or
        # now a link that is refused): kept, never lost to a later fetch (an artifact store
        # outlives the cluster's scratch), and said
        gone = tuple(sorted(p for p in staging.have if p not in staging.kept and
                            p not in staging.new))
        for path in gone:
            staging.kept[path] = staging.have[path]
        if gone:
            staging.notes.append(f"kept {len(gone)} file(s) of the last fetch that the source "
                                 f"no longer has: {', '.join(gone)}")
        files = staging.files
        final = self.root / staging.job_id
        old = staging.old_manifest
        transferred = (len(staging.new), staging.bytes_written)
        if old is not None and not staging.new and \
                sorted(f["path"] for f in old.get("files", [])) == sorted(files) and \
                old.get("links") == staging.links and old.get("refused") == staging.refused:
            self.discard(staging)
            return self._fetched(staging, final, files, transferred, changed=False,
                                 gone=gone)
        stage_dir, final_s = os.fspath(staging.dir), os.fspath(final)
        for path in staging.kept:  # unchanged files: hard links, no copy
            parent = path.rpartition("/")[0]
            if parent not in staging._made:
                staging._mkdirs(stage_dir, parent)
            try:
                os.link(f"{final_s}/{path}", f"{stage_dir}/{path}", follow_symlinks=False)
            except OSError:
                shutil.copy2(f"{final_s}/{path}", f"{stage_dir}/{path}", follow_symlinks=False)
        for made in sorted(staging._made, key=len, reverse=True):  # deepest first
            if made and not any(p.startswith(made + "/") for p in files):
                with contextlib.suppress(OSError):  # made ahead and never used
                    os.rmdir(f"{stage_dir}/{made}")
        manifest = {
            "kind": KIND, "version": VERSION, **meta, "job_id": staging.job_id,
            "source": staging.source, "fetched_at": datetime.now(UTC).isoformat(),
            "files": [files[p].to_dict() for p in sorted(files)],
            "links": staging.links, "refused": staging.refused, "notes": staging.notes,
            "transfer": {"files": transferred[0], "bytes": transferred[1]}}
        # last; the staging dir is private until the rename below makes it the job's
        data = json.dumps(manifest, sort_keys=True, default=str).encode()  # C encoder: fast
        if "" not in staging._made:
            staging._mkdirs(stage_dir, "")
        fd = os.open(f"{stage_dir}/{MANIFEST}", _NEW_FILE, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        with self._lock():
            trash = None
            try:
                os.lstat(final_s)
            except FileNotFoundError:
                pass
            else:
                if read_manifest(final) is None:
                    self.discard(staging)
                    raise UsageError(f"{final} exists and was not made by warpforge-launch: "
                                     "refusing to replace it",
                                     hint="move it away or fetch --to another directory")
                trash = self.root / f"{TRASH_PREFIX}{staging.job_id}-{os.urandom(4).hex()}"
                os.rename(final_s, trash)
            os.rename(stage_dir, final_s)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        return self._fetched(staging, final, files, transferred, changed=True, gone=gone)

    @staticmethod
    def _fetched(staging: Staging, final: Path, files: dict[str, FileEntry],
                 transferred: tuple[int, int], changed: bool, gone: tuple[str, ...] = ()
                 ) -> Fetched:
        n = len(staging.refused)
        return Fetched(staging.job_id, final, len(files), sum(f.size for f in files.values()),
                       transferred[0], transferred[1], changed, tuple(staging.refused),
                       error=f"{n} entr{'y' if n == 1 else 'ies'} refused" if n else None,
                       exit_code=1 if n else 0, kept_gone=gone)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialises the final renames of concurrent fetches into the same root."""
        import fcntl

        with self._threads_lock:  # flock excludes other processes, not our own threads
            if self._lock_fd is None:
                self._lock_fd = os.open(self.root / ".lock", os.O_WRONLY | os.O_CREAT |
                                        os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- list and gc ---------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every directory this tool made under the root, newest fetch first."""
        rows = []
        if not self.root.is_dir():
            return rows
        for d in self.root.iterdir():
            if d.name.startswith(".") or not d.is_dir() or d.is_symlink():
                continue
            m = read_manifest(d)
            if m is None:
                continue
            files = m.get("files", [])
            rows.append({"job_id": m["job_id"], "path": str(d), "files": len(files),
                         "bytes": sum(int(f.get("size", 0)) for f in files),
                         "fetched_at": m.get("fetched_at"),
                         "state": (m.get("status") or {}).get("state"),
                         "refused": len(m.get("refused", []))})
        rows.sort(key=lambda r: str(r["fetched_at"]), reverse=True)
        return rows

    def gc(self, older_than_days: float | None = None, keep: int | None = None,
           dry_run: bool = False) -> list[dict[str, Any]]:
        """Remove fetched jobs older than ``older_than_days`` and/or beyond the ``keep``
        newest (both given: only those matching both). Only directories carrying this
        tool's manifest for their own name, and stale staging leftovers, are touched."""
        if older_than_days is None and keep is None:
            raise UsageError("say what to remove: --older-than DAYS and/or --keep N")
        if (older_than_days is not None and older_than_days < 0) or (keep is not None and keep < 0):
            raise UsageError("--older-than and --keep must not be negative")
        rows = self.entries()
        cutoff = datetime.now(UTC) - timedelta(days=older_than_days or 0)
        doomed = []
        for i, row in enumerate(rows):
            if keep is not None and i < keep:
                continue
            if older_than_days is not None:
                try:
                    when = datetime.fromisoformat(str(row["fetched_at"]))
                except ValueError:
                    continue
                if when > cutoff:
                    continue
            doomed.append(row)
        for row in doomed:
            d = Path(row["path"])
            if not dry_run and read_manifest(d) is not None:  # checked again, right before
                shutil.rmtree(d)
        for d in self._leftovers():
            doomed.append({"job_id": None, "path": str(d), "files": 0, "bytes": 0,
                           "fetched_at": None, "leftover": True})
            if not dry_run:
                shutil.rmtree(d, ignore_errors=True)
        return doomed

    def _leftovers(self) -> list[Path]:
        """Staging and trash dirs of fetches that died, older than an hour."""
        found = []
        if not self.root.is_dir():
            return found
        now = time.time()
        for d in self.root.iterdir():
            if d.is_symlink() or not d.is_dir():
                continue
            ours = (d.name.startswith(STAGING_PREFIX) and (d / STAGING_MARK).is_file()) or \
                (d.name.startswith(TRASH_PREFIX) and (d / MANIFEST).is_file())
            if ours and now - d.lstat().st_mtime > LEFTOVER_AGE:
                found.append(d)
        return found
