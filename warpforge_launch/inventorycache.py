"""The parsed inventory, kept between commands: validating it (pydantic) costs more than
most commands' own work.

One pickle per inventory file in the state directory (0700, files 0600; the 32 written last
are kept), valid while the file's path, inode, size, mtime and ctime and this package's own
source files are unchanged. Only a cache file owned by this user and writable by no one else
is read (a pickle runs code when loaded). An inventory with a credential in it (e.g. a
literal auth header) is never written out. Any trouble reading or writing the cache only
costs the parse.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys

from warpforge_launch import __version__
from warpforge_launch.storefile import home_dir, owned_private, write_cache

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_CODE_DIRS = (_PACKAGE, os.path.join(_PACKAGE, "schedulers"))
_CREDENTIAL_WORDS = ("auth", "token", "password", "secret", "credential")


def _key(path: str) -> tuple | None:
    try:
        st = os.stat(path)
        code = []
        for d in _CODE_DIRS:
            with os.scandir(d) as entries:
                code += sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                               for e in entries if e.name.endswith(".py"))
    except OSError:
        return None
    return (__version__, sys.version, path, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns, tuple(code))


def _file(path: str) -> str:
    name = hashlib.sha256(path.encode()).hexdigest()[:16]
    return os.path.join(home_dir(), "cache", f"inventory-{name}.pickle")


def get(path: str):
    """The inventory parsed from ``path`` earlier, if nothing it depends on changed."""
    path = os.path.abspath(path)
    key = _key(path)
    if key is None:
        return None
    cached = _file(path)
    if not (owned_private(os.path.dirname(cached)) and owned_private(cached)):
        return None  # a pickle runs code when loaded: only ever our own, unshared file
    try:
        with open(cached, "rb") as f:
            stored_key, inventory = pickle.load(f)
    except Exception:  # noqa: BLE001 - absent, partial or from another version: parse again
        return None
    return inventory if stored_key == key else None


def put(path: str, inventory) -> None:
    path = os.path.abspath(path)
    key = _key(path)
    if key is None or _holds_credential(inventory):
        return
    try:
        data = pickle.dumps((key, inventory), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - not picklable: only speed is lost
        return
    write_cache(_file(path), data)


def _holds_credential(inventory) -> bool:
    """Whether any scheduler setting named like a credential has a value."""
    import dataclasses

    for entry in inventory.schedulers.values():
        config = entry.config
        fields = dataclasses.fields(config) if dataclasses.is_dataclass(config) else ()
        for f in fields:
            if any(w in f.name.lower() for w in _CREDENTIAL_WORDS) and getattr(config, f.name):
                return True
    return False
