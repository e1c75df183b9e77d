"""Error types, each tied to the exit code a user and a script can rely on.

0 ok; 1 the work failed (job failed, smoke failed); 2 bad input or usage;
3 infrastructure unreachable or timed out.
"""

from __future__ import annotations


class LaunchError(Exception):
    """Base error: a one-line message, an optional hint, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(LaunchError):
    """Bad input: arguments, inventory, input specs, paths."""

    exit_code = 2


class NotFoundError(UsageError):
    """A job id, scheduler or box that nobody knows."""


class InfrastructureError(LaunchError):
    """A cluster, box or service could not be reached, or did not answer in time.

    ``not_sent``: the request provably never reached the backend (the connection itself
    failed), so a submit that raised this left nothing behind to reconcile."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None, not_sent: bool = False):
        super().__init__(message, hint=hint)
        self.not_sent = not_sent


class CancelIncomplete(LaunchError):
    """Some jobs of a batched cancel could not be stopped (a Ray job still PENDING): the
    others were. ``done``: job id -> cancelled, for every job; ``errors``: why, per job."""

    def __init__(self, done: dict[str, bool], errors: dict[str, LaunchError]):
        super().__init__(f"{len(errors)} job(s) could not be cancelled")
        self.done, self.errors = done, errors
