"""`cluster-info --all`: every configured scheduler asked at once, each on its own.

One thread per scheduler instance; a scheduler that fails shows its error line and the
others still answer. Each backend bounds its own calls; the overall deadline only guards
against one that does not (its thread is a daemon and is left behind, reported as timed out).
Exit codes: 0 every scheduler answered; 1 some did not; 3 none did.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any


@dataclasses.dataclass
class Answer:
    scheduler: str
    type: str
    info: Any = None  # ClusterInfo
    error: str | None = None
    hint: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.info is not None

    def to_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler, "type": self.type, "ok": self.ok,
                "info": self.info.to_dict() if self.info is not None else None,
                "error": self.error, "seconds": round(self.seconds, 3)}


def _ask(entry, home, answer: Answer) -> None:
    from warpforge_launch.errors import LaunchError
    from warpforge_launch.schedulers import registry

    t0 = time.monotonic()
    sched = None
    try:
        sched = registry.create(entry.name, entry.type, entry.config, home)
        answer.info = sched.cluster_info()
    except LaunchError as e:
        answer.error, answer.hint = str(e), e.hint
    except Exception as e:  # noqa: BLE001 - one scheduler's bug must not hide the others
        answer.error = f"{type(e).__name__}: {e}"
    finally:
        answer.seconds = time.monotonic() - t0
        if sched is not None:
            try:
                sched.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass


def gather(inventory, timeout: float = 60.0) -> list[Answer]:
    from warpforge_launch.store import home

    answers = [Answer(e.name, e.type) for e in inventory.schedulers.values()]
    threads = [threading.Thread(target=_ask, args=(e, home(), a), daemon=True,
                                name=f"cluster-info-{e.name}")
               for e, a in zip(inventory.schedulers.values(), answers, strict=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t, a in zip(threads, answers, strict=True):
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            a.error, a.seconds = f"no answer within {timeout:g}s", timeout
    return answers


def exit_code(answers: list[Answer]) -> int:
    if answers and not any(a.ok for a in answers):
        return 3
    return 0 if all(a.ok for a in answers) else 1


def table(answers: list[Answer]) -> None:
    from warpforge_launch.output import table as draw

    rows = []
    for a in answers:
        i = a.info
        if i is None:
            rows.append([a.scheduler, a.type, "FAILED", "-", "-", "-", f"{a.seconds:.2f}s"])
            continue
        gpus = ", ".join(f"{k} {v}" for k, v in sorted(i.gpus_by_type.items())) or "none"
        rows.append([a.scheduler, a.type, "ok", i.scheduler_version,
                     f"{i.available_nodes}/{i.total_nodes}", gpus, f"{a.seconds:.2f}s"])
    draw(["SCHEDULER", "TYPE", "STATE", "VERSION", "NODES UP", "GPUS", "TIME"], rows)


def command(inventory_path: str | None, *, timeout: float = 60.0,
            json_output: bool = False) -> int:
    import math

    from warpforge_launch import inventory
    from warpforge_launch.errors import UsageError

    if not math.isfinite(timeout) or timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout}")
    answers = gather(inventory.load(inventory_path), timeout)
    if json_output:
        from warpforge_launch.output import emit_json

        emit_json([a.to_dict() for a in answers])
    else:
        table(answers)
    from warpforge_launch.output import print_error

    for a in answers:  # on stderr in both forms: --json keeps stdout machine-readable
        if not a.ok:
            print_error(f"scheduler {a.scheduler}: {a.error}", hint=a.hint or "")
    return exit_code(answers)
