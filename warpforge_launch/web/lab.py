"""What the lab panel shows per box: awake, current release, last smoke result; and the
registry's images. Every probe is cheap, bounded by a short timeout and cached, so a page
that polls every few seconds costs the boxes almost nothing."""

from __future__ import annotations

import concurrent.futures
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Reads where `current` points and the switch history (distribute writes both); every path
# arrives as a positional argument.
_RELEASE_SCRIPT = r"""
d=$1
cur=$(readlink -- "$d/current" 2>/dev/null) || { echo "none"; exit 0; }
echo "current $cur"
h=$d/releases/.history
if [ -f "$h" ]; then tail -n 100 -- "$h" | sed 's/^/history /'; fi
"""


class _Cache:
    """A value per key, recomputed after `ttl` seconds; one computation at a time per key."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.clock = ttl, clock
        self._values: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            hit = self._values.get(key)
            if hit is not None and self.clock() - hit[0] < self.ttl:
                return hit[1]
            value = compute()
            self._values[key] = (self.clock(), value)
            return value

    def forget(self, key: str) -> None:
        self._values.pop(key, None)


def tcp_awake(host: str, port: int, timeout: float) -> bool:
    """Does something accept on the box's SSH port? (No handshake: that costs a key exchange.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def parse_release(text: str) -> dict[str, Any]:
    """The release script's output as {release, hash, switched_at}."""
    from warpforge_launch.lab.pushplan import release_hash

    current, switched = None, None
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "current" and rest.startswith("releases/"):
            current = rest[len("releases/"):].strip()
        elif word == "history" and current:
            when, _, name = rest.partition(" ")
            if name.strip() == current:
                switched = when
    if current is None:
        return {"release": None, "hash": None, "switched_at": None}
    return {"release": current, "hash": release_hash(current), "switched_at": switched}


def read_smoke(path: Path) -> dict[str, dict[str, Any]]:
    """Per box, the outcome in the smoke task's JUnit report (one testsuite `smoke.<box>`)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    found = {}
    for suite in suites:
        name = suite.get("name", "")
        if not name.startswith("smoke."):
            continue
        cases = suite.findall("testcase")
        failures = [f for c in cases for f in c.findall("failure")]
        skipped = [c for c in cases if c.find("skipped") is not None]
        if failures:
            status = "FAILED"
        elif cases and len(skipped) == len(cases):
            status = "SKIPPED"
        else:
            status = "PASSED"
        reason = ""
        if failures:
            case = next(c for c in cases if c.find("failure") is not None)
            reason = f"{case.get('name')}: {failures[0].get('message', '')}"
        elif skipped:
            reason = skipped[0].find("skipped").get("message", "")
        found[name[len("smoke."):]] = {"status": status, "at": suite.get("timestamp"),
                                       "reason": reason, "tests": len(cases)}
    return found


class Lab:
    """The lab panel's data, from the inventory's boxes and registry section."""

    def __init__(self, inventory, smoke_junit: Path | None, *, probe_ttl: float = 5.0,
                 release_ttl: float = 30.0, probe_timeout: float = 0.5,
                 ssh_timeout: float = 5.0):
        self.inventory = inventory
        self.smoke_junit = smoke_junit
        self.probe_timeout, self.ssh_timeout = probe_timeout, ssh_timeout
        self._awake = _Cache(probe_ttl)
        self._release = _Cache(release_ttl)
        self._registry = _Cache(release_ttl)
        self._smoke: tuple[tuple[float, int], dict] | None = None
        self._sessions: dict[str, Any] = {}
        self._session_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="lab-probe")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._session_lock:
            for s in self._sessions.values():
                s.close()
            self._sessions.clear()

    # -- per box ---------------------------------------------------------------------------
    def awake(self, box) -> bool:
        if box.transport == "local":
            return True
        return self._awake.get(box.name, lambda: tcp_awake(box.host, box.port,
                                                           self.probe_timeout))

    def release(self, box) -> dict[str, Any]:
        return self._release.get(box.name, lambda: self._read_release(box))

    def _read_release(self, box) -> dict[str, Any]:
        from warpforge_launch.errors import LaunchError
        from warpforge_launch.lab.remote import Timeouts, open_session

        t = self.ssh_timeout
        try:
            with self._session_lock:
                session = self._sessions.get(box.name)
            if session is None:
                # strict host keys whatever the box says: a dashboard never records a key
                session = open_session(box, timeouts=Timeouts(t, t, t, t, t),
                                       host_key_policy="strict")
                with self._session_lock:
                    self._sessions[box.name] = session
            result = session.run(["sh", "-c", _RELEASE_SCRIPT, "wf-release",
                                  str(box.install_dir).rstrip("/") or "/"], timeout=t,
                                 check=False)
            if not result.ok:
                return {"release": None, "hash": None, "switched_at": None,
                        "error": result.reason()}
            return parse_release(result.out)
        except (LaunchError, OSError, EOFError) as e:
            self._drop_session(box.name)
            return {"release": None, "hash": None, "switched_at": None, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - paramiko raises its own types mid-session
            self._drop_session(box.name)
            return {"release": None, "hash": None, "switched_at": None,
                    "error": f"{type(e).__name__}: {e}"}

    def _drop_session(self, name: str) -> None:
        with self._session_lock:
            s = self._sessions.pop(name, None)
        if s is not None:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass

    def smoke(self) -> dict[str, dict[str, Any]]:
        """The JUnit report's results, re-read only when the file changed."""
        path = self.smoke_junit
        if path is None:
            return {}
        try:
            st = os.stat(path)
        except OSError:
            self._smoke = None
            return {}
        key = (st.st_mtime, st.st_size)
        if self._smoke is None or self._smoke[0] != key:
            try:
                self._smoke = (key, read_smoke(path))
            except Exception:  # noqa: BLE001 - a half-written or foreign XML file
                self._smoke = (key, {})
        return self._smoke[1]

    def box_view(self, box, smoke: dict[str, dict]) -> dict[str, Any]:
        awake = self.awake(box)
        if awake:
            release = self.release(box)
        else:
            self._release.forget(box.name)
            self._drop_session(box.name)
            release = {"release": None, "hash": None, "switched_at": None}
        return {"name": box.name, "aliases": list(box.aliases), "groups": list(box.groups),
                "transport": box.transport, "address": box.host, "port": box.port,
                "gpu_type": str(box.gpu_type), "gpu_count": box.gpu_count,
                "install_dir": box.install_dir, "awake": awake, **release,
                "smoke": smoke.get(box.name)}

    def boxes(self) -> list[dict[str, Any]]:
        smoke = self.smoke()
        boxes = list(self.inventory.boxes.values())
        return list(self._pool.map(lambda b: self.box_view(b, smoke), boxes))

    # -- registry --------------------------------------------------------------------------
    def registry(self) -> dict[str, Any]:
        cfg = getattr(self.inventory, "registry", None)
        if cfg is None or not getattr(self.inventory, "registry_configured", True):
            return {"configured": False}
        return self._registry.get("registry", lambda: read_registry(cfg, self.ssh_timeout))


def registry_url(cfg) -> str:
    url = getattr(cfg, "url", None)
    if url:
        return str(url).rstrip("/")
    host = getattr(cfg, "host", None) or "127.0.0.1"
    port = getattr(cfg, "port", None) or 5000
    return f"http://{host}:{port}"


def read_registry(cfg, timeout: float, max_repos: int = 100) -> dict[str, Any]:
    """Repositories and tags through the registry's v2 API (no Docker client needed)."""
    import httpx

    url = registry_url(cfg)
    out: dict[str, Any] = {"configured": True, "url": url, "repositories": []}
    try:
        with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as client:
            r = client.get("/v2/_catalog", params={"n": max_repos})
            r.raise_for_status()
            for repo in r.json().get("repositories") or []:
                t = client.get(f"/v2/{repo}/tags/list")
                tags = sorted(t.json().get("tags") or []) if t.status_code == 200 else []
                out["repositories"].append({"name": repo, "tags": tags})
    except (httpx.HTTPError, ValueError) as e:
        out["error"] = f"{url}: {type(e).__name__}: {e}"
    return out
