"""Errors grouped by what happens next (STYLE.md lesson 7).

- ``RetriableError``: throttling, 5xx, timeouts, a dropped connection. Prefect retries the task;
  a run that still fails can be replayed.
- ``FatalError``: bad credentials, a missing permission, a broken config. The run stops with the
  message; retrying will not help until a person acts.
- Per-event data errors are not exceptions: the loader records them on the delta's outcome and goes on.

Messages name the thing and what to do, and never carry a secret.
"""

from __future__ import annotations


class CalsyncError(Exception):
    """Base of calsync's own errors."""


class RetriableError(CalsyncError):
    """A passing fault: throttling, a 5xx, a timeout. ``back_off`` is seconds to wait, if the server said."""

    def __init__(self, message: str, back_off: float | None = None) -> None:
        super().__init__(message)
        self.back_off = back_off


class FatalError(CalsyncError):
    """The run cannot go on until a person acts (credentials, permissions, configuration)."""


class ApiLimitExceeded(FatalError):
    """Salesforce's daily API allocation is used up: stop cleanly, replay once calls are available."""


class MassDeletionRefused(CalsyncError):
    """A user's run would delete too large a share of their paired events (C9)."""
