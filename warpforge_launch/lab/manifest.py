"""The dist manifest: every file of the dist tree with its mode, size and SHA-256.

A release on a box is named by the manifest's content hash, so the same tree always lands in
the same release directory and an unchanged re-push is recognised without sending a byte.
Hashes are cached by (size, mtime, inode, ctime; a write that puts the mtime back still moves
the ctime): re-scanning an unchanged 200 MB dist costs a stat per file, not a re-read.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from warpforge_launch.errors import UsageError

#: The files a dist must have to be worth pushing (the original pushed only the launcher).
REQUIRED = ("bin/snakegrinder", "bin/snakegrinder-bin")
REQUIRED_DIRS = ("venv",)
#: Written by `distribute` into each release: the manifest the release was made from.
RELEASE_FILE = ".warpforge-release.json"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One path of the tree: kind 'f' (file), 'l' (symlink) or 'd' (directory)."""

    path: str
    kind: str
    mode: int
    size: int = 0
    sha256: str | None = None
    target: str | None = None

    def key(self) -> list:
        return [self.path, self.kind, self.mode, self.size, self.sha256, self.target]


@dataclasses.dataclass(frozen=True)
class Manifest:
    entries: tuple[Entry, ...]

    @functools.cached_property
    def hash(self) -> str:
        """Content hash of the whole tree (paths, kinds, modes, contents, link targets)."""
        text = "".join(f"{e.path}\0{e.kind}\0{e.mode:o}\0{e.size}\0{e.sha256 or ''}\0"
                       f"{e.target or ''}\n" for e in self.entries)
        return hashlib.sha256(os.fsencode(text)).hexdigest()[:20]

    @functools.cached_property
    def listing(self) -> str:
        """SHA-256 of the sorted "size path" lines of the files (what a box reports for a
        release holding exactly these files: `find -printf '%s %P\\n' | LC_ALL=C sort`)."""
        lines = sorted(os.fsencode(f"{e.size} {e.path}\n") for e in self.files)
        return hashlib.sha256(b"".join(lines)).hexdigest()

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == "f"]

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.files)

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    def to_json(self, **extra) -> str:
        doc = {"hash": self.hash, **extra, "entries": [e.key() for e in self.entries]}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        doc = json.loads(text)
        return cls(tuple(Entry(*row) for row in doc["entries"]))

    def sha256sums(self, entries: Iterable[Entry] | None = None) -> str:
        """`sha256sum -c` input for the given files (default: all)."""
        return "".join(f"{e.sha256}  ./{e.path}\n" for e in (entries or self.files))


def check_dist(dist: Path) -> Path:
    """The dist dir, resolved; UsageError saying what is missing if it cannot be pushed."""
    dist = Path(dist).expanduser()
    hint = "build it first (invoke build), or point DIST_DIR_OVERRIDE at a built dist"
    if not dist.is_dir():
        raise UsageError(f"dist directory {dist} does not exist", hint=hint)
    for rel in REQUIRED:
        p = dist / rel
        if not p.is_file():
            raise UsageError(f"dist {dist} has no {rel}", hint=hint)
        if not os.access(p, os.X_OK):
            raise UsageError(f"dist {dist}: {rel} is not executable", hint=hint)
    for rel in REQUIRED_DIRS:
        if not (dist / rel).is_dir():
            raise UsageError(f"dist {dist} has no {rel}/ (the bundled venv)", hint=hint)
    return dist.resolve()


def scan(dist: Path, *, cache: Path | None = None) -> Manifest:
    """Walk the dist tree (symlinks are recorded, never followed) and hash every file."""
    dist = Path(dist)
    old = _load_cache(cache)
    new_cache: dict[str, list] = {}
    entries: list[Entry] = []

    def walk(directory: str, prefix: str) -> None:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda d: d.name)
        for child in children:
            rel = prefix + child.name
            if "\n" in rel or "\0" in rel:
                raise UsageError(f"dist {dist}: unsupported file name {rel!r}")
            st = child.stat(follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entries.append(Entry(rel, "l", 0o777, target=os.readlink(child.path)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(Entry(rel, "d", mode))
                walk(child.path, rel + "/")
            elif stat.S_ISREG(st.st_mode):
                sig = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
                cached = old.get(rel)
                digest = cached[4] if cached and cached[:4] == sig else _sha256(child.path)
                new_cache[rel] = [*sig, digest]
                entries.append(Entry(rel, "f", mode, st.st_size, digest))
            else:
                raise UsageError(f"dist {dist}: {rel} is neither file, directory nor symlink")

    walk(str(dist), "")
    entries.sort(key=lambda e: e.path)
    if cache is not None and new_cache != old:
        _save_cache(cache, new_cache)
    return Manifest(tuple(entries))


@dataclasses.dataclass(frozen=True)
class Summary:
    """A tree's release name and file-list digest (Manifest.hash, .listing), no entries."""

    hash: str
    listing: str


def summary(dist: Path, *, cache: Path) -> Manifest | Summary:
    """The dist's hash and listing, from the last scan when no entry's path, type, mode,
    size, mtime, ctime, inode or link target changed since (one stat per entry: no hash
    cache to read, no entries to build); else a full scan, which is recorded for next time.
    """
    signature = _signature(str(dist))
    kept = Path(cache).with_suffix(".summary.json")
    try:
        doc = json.loads(kept.read_text())
        if doc["signature"] == signature:
            return Summary(doc["hash"], doc["listing"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    m = scan(dist, cache=cache)
    _save_cache(kept, {"signature": signature, "hash": m.hash, "listing": m.listing})
    return m


def _signature(top: str) -> str:
    h = hashlib.sha256()

    def walk(directory: str, prefix: str) -> None:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda d: d.name)
        for child in children:
            st = child.stat(follow_symlinks=False)
            target = os.readlink(child.path) if stat.S_ISLNK(st.st_mode) else ""
            h.update(os.fsencode(f"{prefix}{child.name}\0{st.st_mode}\0{st.st_size}\0"
                                 f"{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0"
                                 f"{target}\n"))
            if stat.S_ISDIR(st.st_mode):
                walk(child.path, f"{prefix}{child.name}/")

    walk(top, "")
    return h.hexdigest()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _load_cache(cache: Path | None) -> dict:
    if cache is None:
        return {}
    try:
        return json.loads(Path(cache).read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(cache: Path, data: dict) -> None:
    cache = Path(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, cache)


def state_dir() -> Path:
    """Where the lab keeps its caches: the one state directory (store.home)."""
    from warpforge_launch.storefile import home

    return home()


def default_cache(dist: Path) -> Path:
    """Where the hash cache of a dist lives (per dist path, under the state dir)."""
    key = hashlib.sha256(str(Path(dist).resolve()).encode()).hexdigest()[:16]
    # "-2": entries [size, mtime, inode, ctime, digest]; a file of the older layout (no
    # ctime) is left to the versions that read it that way
    return state_dir() / "cache" / f"dist-{key}-2.json"
