"""Job states: the one definition, in a module light enough for the CLI's argument parser.

PENDING and RUNNING are active; the other four are terminal, and only COMPLETED is success.
``jobs`` re-exports these names.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def terminal(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)

    @property
    def success(self) -> bool:
        return self is JobState.COMPLETED


# the one spelling of "finished" for every module (the job store's SQL included)
TERMINAL_STATES = frozenset(s for s in JobState if s.terminal)
ACTIVE_STATES = frozenset(s for s in JobState if not s.terminal)
