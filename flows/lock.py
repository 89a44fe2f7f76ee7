"""One sync at a time per store: a second run that starts while one is going skips, and says so.

Every run syncs every enabled user of its config, so a lock on the store is a lock on each of its
users. The lock is an advisory ``flock`` on ``<store>.lock``: the operating system releases it when
the holder exits, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from connectors.errors import CalsyncError


class RunInProgress(CalsyncError):
    """Another run holds the store; this one did nothing."""


@contextmanager
def run_lock(store_path: Path, run_id: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the store's run lock, waiting up to ``wait_s`` seconds for it."""
    path = Path(str(store_path) + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read(fd)
                    raise RunInProgress(
                        f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')}, started"
                        f" {holder.get('started', '?')}) is still syncing with {store_path}; run {run_id}"
                        " is skipped so the two never write the same calendars at once. It will be"
                        " picked up by the next scheduled run."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"run_id": run_id, "pid": os.getpid(),
                                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
