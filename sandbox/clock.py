"""The clock both sandbox servers stamp modification times with.

Real time by default; tests set or advance it through the control API.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone


class Clock:
    """A settable UTC clock, shared by the Salesforce and Exchange sandboxes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._fixed: datetime | None = None

    def now(self) -> datetime:
        with self._lock:
            if self._fixed is not None:
                return self._fixed
            return datetime.now(timezone.utc) + self._offset

    def set(self, when: datetime) -> None:
        """Freeze the clock at ``when`` (aware, or naive meaning UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        with self._lock:
            self._fixed = when.astimezone(timezone.utc)

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward (frozen or not) and return the new time."""
        with self._lock:
            if self._fixed is not None:
                self._fixed += delta
            else:
                self._offset += delta
        return self.now()

    def reset(self) -> None:
        """Back to real time."""
        with self._lock:
            self._fixed = None
            self._offset = timedelta(0)
