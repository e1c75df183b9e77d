"""What a push did on each box, and what this machine last left each box on.

Kept apart from the push machinery (releases.py) so that a re-push answered by probes alone
(quickpush) imports none of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path


@dataclasses.dataclass
class BoxResult:
    """What happened on one box (also the row of the summary table)."""

    box: str
    action: str = "failed"  # pushed | repaired | unchanged | verified | reactivated |
    #                         rolled-back | failed
    release: str | None = None
    previous: str | None = None
    files_sent: int = 0
    bytes_sent: int = 0  # the content of the files sent (files_sent of them)
    stream_bytes: int = 0  # all that went over: the files, tar headers, the release record
    files_linked: int = 0
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    hint: str | None = None
    locked: tuple[float, float] | None = None  # wall-clock times the box lock was held
    notes: list[str] = dataclasses.field(default_factory=list)  # foreign entries, fallbacks
    phases: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per phase

    @property
    def ok(self) -> bool:
        return self.error is None


class Progress:
    """Progress callbacks (the default does nothing); see report.py for the rich one."""

    def start(self, box: str, total: int) -> None: ...
    def advance(self, box: str, n: int) -> None: ...
    def done(self, result: BoxResult) -> None: ...


# What each box was last brought to by this machine: only a hint (the box's own state
# decides), used to start a push's stream connection early when a push is likely.
_HINTS_LOCK = threading.Lock()


def _hints_file() -> Path:
    from warpforge_launch.storefile import home

    return home() / "lab" / "releases.json"


def hint_key(box, install_dir: str) -> str:
    return f"{box.user or ''}@{box.host}:{box.port}:{install_dir}"


def last_release(box, install_dir: str) -> str | None:
    return recorded_release(hint_key(box, install_dir))


def recorded_release(key: str) -> str | None:
    """The release this machine last left the box of `key` (hint_key) on, if any."""
    try:
        return json.loads(_hints_file().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def remember_release(box, install_dir: str, release: str | None) -> None:
    path = _hints_file()
    with _HINTS_LOCK:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                hints = json.loads(path.read_text())
            except (OSError, ValueError):
                hints = {}
            hints[hint_key(box, install_dir)] = release
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(hints))
            os.replace(tmp, path)
        except OSError:
            pass  # a hint that cannot be written costs only speed


def exit_code(results: Sequence[BoxResult]) -> int:
    """0 all ok; 2 if any box failed on bad input (host key, config); else 1 if any work
    failed; else 3 (every failure was an unreachable box or a timeout)."""
    codes = {r.exit_code for r in results if not r.ok}
    if not codes:
        return 0
    for code in (2, 1, 3):
        if code in codes:
            return code
    return 1
