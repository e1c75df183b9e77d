"""A re-push answered before the inventory is read: the last full run's probes, started at
once.

With nothing to send, `invoke distribute` is one login per box and one look at its state
(noopcheck). The full way reaches those logins only after reading the inventory and
importing the push machinery. So, per command, the full way leaves behind what it computed
for it (each box's probe command line, the dist dir, the probes' deadline) in the state dir
(0600, the 32 written last kept; command lines and paths, no secret), with a digest of
everything that was computed from: the command's arguments, the working directory, the
environment the inventory reads, every file the inventory could have come from, and this
package's sources. A run with the same digest starts those probes first and scans the dist
while they log in; a box shown on the dist's release is answered "unchanged" as the full way
would, and any other box (or any trouble here) goes the full way.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

from warpforge_launch.errors import LaunchError
from warpforge_launch.lab.noopcheck import Probe
from warpforge_launch.storefile import home_dir, owned_private, write_cache

_ENV = ("HOME", "WARPFORGE_INVENTORY", "WARPFORGE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME")
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CODE_DIRS = (_PACKAGE, os.path.join(_PACKAGE, "lab"))
_INVENTORIES = ("inventory.yaml", "~/.config/warpforge/inventory.yaml")  # inventory.find


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(os.path.expanduser(path))
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def fingerprint(request: dict) -> str | None:
    """Digest of everything the plan for `request` was computed from; None if unknowable."""
    try:
        cwd = os.getcwd()
        code = []
        for d in _CODE_DIRS:
            with os.scandir(d) as entries:
                for e in entries:
                    if e.name.endswith(".py"):
                        st = e.stat()
                        code.append((d, e.name, st.st_mtime_ns, st.st_size))
    except OSError:
        return None
    env = sorted((k, v) for k, v in os.environ.items() if k in _ENV or k.endswith("_OVERRIDE"))
    named = [request.get("inventory") or "", os.environ.get("WARPFORGE_INVENTORY", "")]
    files = [(p, _stat(p)) for p in [*named, *_INVENTORIES] if p]
    text = json.dumps([request, cwd, env, files, sorted(code), sys.version])
    return hashlib.sha256(text.encode()).hexdigest()


def _file(request: dict) -> str:
    key = json.dumps([request, os.getcwd()])
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(home_dir(), "cache", f"distribute-{name}.json")


def remember(request: dict, boxes, opts, dist) -> None:
    """Keep what the full way computed for this command; trouble only costs the shortcut."""
    from warpforge_launch.lab import noopcheck, pushresult
    from warpforge_launch.lab.boxstate import check_install_dir

    digest = fingerprint(request)
    if digest is None:
        return
    rows = []
    for box in boxes:
        row: dict = {"name": box.name}
        try:
            d = check_install_dir(box.name, box.install_dir)
            if noopcheck.usable(box, opts):
                row.update(install_dir=d, argv=noopcheck.probe_argv(box, d, opts),
                           hint=pushresult.hint_key(box, d))
        except LaunchError:
            pass  # the full way says what is wrong with this box, every time
        rows.append(row)
    plan = {"fingerprint": digest, "dist": str(dist),
            "timeout": opts.timeouts.connect + opts.timeouts.command, "boxes": rows}
    write_cache(_file(request), json.dumps(plan).encode())


class Quick:
    """The probes of a remembered plan, running; `answers` reads them."""

    def __init__(self, plan: dict):
        self.t0 = time.monotonic()
        self.plan = plan
        self.names = [row["name"] for row in plan["boxes"]]
        self.probes: dict[str, Probe] = {}
        try:
            for row in plan["boxes"]:
                if row.get("argv"):
                    self.probes[row["name"]] = Probe(row["name"], row["install_dir"],
                                                     row["argv"], timeout=plan["timeout"])
        except BaseException:
            self.close()
            raise

    def answers(self) -> dict:
        """{box name: BoxResult} for the boxes found on the dist's release."""
        from pathlib import Path

        from warpforge_launch.lab import manifest as manifests
        from warpforge_launch.lab import pushplan, pushresult

        found = {}
        try:
            dist = manifests.check_dist(Path(self.plan["dist"]))
            m = manifests.summary(dist, cache=manifests.default_cache(dist))
            for row in self.plan["boxes"]:
                probe = self.probes.get(row["name"])
                last = pushresult.recorded_release(row.get("hint")) or ""
                r = (probe.unchanged(m, pushresult.BoxResult)
                     if probe and pushplan.release_hash(last) == m.hash else None)
                if r is not None:
                    r.seconds = time.monotonic() - self.t0
                    found[r.box] = r
        except Exception:  # noqa: BLE001 - anything unexpected: the full way does it all
            found = {}
        finally:
            self.close()
        return found

    def close(self) -> None:
        for probe in self.probes.values():
            probe.cancel()


def start(request: dict) -> Quick | None:
    """The remembered plan's probes, started; None when there is no valid plan."""
    try:
        path = _file(request)
        if not (owned_private(os.path.dirname(path)) and owned_private(path)):
            return None
        with open(path) as f:
            plan = json.load(f)
        if plan.get("fingerprint") != fingerprint(request):
            return None
        lines = [row["argv"] for row in plan["boxes"] if row.get("argv")]
        if not lines or any(line[0] != "ssh" for line in lines):
            return None  # nothing a probe can answer, or not a plan we wrote
        return Quick(plan)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, LaunchError):
        return None  # no plan, an unreadable one, or no ssh client: the full way
