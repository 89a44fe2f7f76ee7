"""Progress of long extracts and loads, shown in the terminal.

A rich progress bar when stderr is a terminal; otherwise (logs, CI) a line at each quarter. The same
callback also logs through Prefect when a flow run is active.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

log = logging.getLogger("calsync")


class TerminalProgress:
    """Callable ``(stage, done, total)``; use as a context manager around a run."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._bar = None
        self._tasks: dict[str, int] = {}
        self._last: dict[str, int] = {}

    def __enter__(self) -> "TerminalProgress":
        if self.enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(file=self.stream), transient=False)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        _prefect_log(stage, done, total)
        if not self.enabled or total <= 0:
            return
        if self._bar is not None:
            if stage not in self._tasks:
                self._tasks[stage] = self._bar.add_task(stage, total=total)
            self._bar.update(self._tasks[stage], completed=done, total=total)
            return
        quarter = (4 * done) // total
        if done == total or quarter > self._last.get(stage, -1):
            self._last[stage] = quarter
            print(f"  {stage}: {done}/{total}", file=self.stream, flush=True)


def _prefect_log(stage: str, done: int, total: int) -> None:
    try:
        from prefect.context import FlowRunContext
        from prefect.logging import get_run_logger

        if FlowRunContext.get() is not None:
            get_run_logger().info("%s: %d/%d", stage, done, total)
    except Exception:  # progress must never break a run
        pass
