"""What an operator sees in the terminal, and what the log file keeps.

- The terminal (every handler writing to stderr/stdout, Prefect's console handler included) shows one line
  per record: a traceback becomes its last line (the exception and its message), other multi-line messages
  their first line. ``--verbose`` shows everything, tracebacks included, from INFO up.
- The log file (``[log] file``, default ``calsync.log`` beside the store) keeps every record from ``[log]
  level`` up with its traceback, so a one-line failure in the terminal can be looked up there.
- Warnings (``warnings.warn``, e.g. exchangelib's about an unknown time zone) are logged, so they follow the
  same rules instead of printing a paragraph.

Secrets and private event details never reach a record in the first place: connector errors carry none,
and ``connectors.exchange`` redacts exchangelib's DEBUG dumps of requests and replies.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

CONSOLE_LEVEL = logging.WARNING
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_state: dict[str, object] = {"verbose": False, "file": None}


def one_line(message: str, exc_info=None) -> str:
    """A record's message in one line: a traceback's last line (the exception), else the first line."""
    text = str(message)
    if "Traceback (most recent call last):" in text:
        head, _, tail = text.partition("Traceback (most recent call last):")
        last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
        text = f"{head.strip()} {last}".strip()
    else:
        text = text.strip().splitlines()[0] if text.strip() else ""
    if exc_info and exc_info is not True and exc_info[1] is not None:
        exc = exc_info[1]
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if said and said not in text:
            text = f"{text} ({type(exc).__name__}: {said})"
    return text


class OneLineFormatter(logging.Formatter):
    """Formats a copy of each record through ``inner`` with its message cut to one line and no traceback."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        copy = logging.makeLogRecord(record.__dict__)
        copy.msg, copy.args = one_line(record.getMessage(), record.exc_info), None
        copy.exc_info = copy.exc_text = copy.stack_info = None
        return self.inner.format(copy)


class _NoStateEcho(logging.Filter):
    """Drops Prefect's "Finished in state Failed(...)" echo of a failure the line before already reported."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and str(record.msg).startswith("Finished in state "))


_NO_STATE_ECHO = _NoStateEcho()


def _is_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__) and not isinstance(
        handler, logging.FileHandler)


def _loggers() -> list[logging.Logger]:
    named = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
             if isinstance(logging.root.manager.loggerDict[n], logging.Logger)]
    return [logging.getLogger(), *named]


def configure(cfg=None, *, verbose: bool | None = None, log_file: Path | None = None) -> Path | None:
    """Set up the terminal and the log file (idempotent; call again after Prefect configured its logging).
    Returns the log file in use."""
    if verbose is not None:
        _state["verbose"] = verbose
    verbose = bool(_state["verbose"])
    level = logging.getLevelName(cfg.log.level) if cfg is not None else logging.INFO
    target = log_file or (cfg.log_file if cfg is not None else None)
    root = logging.getLogger()
    logging.captureWarnings(True)
    console_level = logging.INFO if verbose else CONSOLE_LEVEL
    for logger in _loggers():
        for handler in logger.handlers:
            if not _is_terminal(handler):
                continue
            if not verbose and not isinstance(handler.formatter, OneLineFormatter):
                handler.setFormatter(OneLineFormatter(handler.formatter))
                handler.addFilter(_NO_STATE_ECHO)
            elif verbose and isinstance(handler.formatter, OneLineFormatter):
                handler.setFormatter(handler.formatter.inner)
                handler.removeFilter(_NO_STATE_ECHO)
            handler.setLevel(max(handler.level, console_level) if not verbose else console_level)
    if not root.handlers:  # no Prefect in this process: a plain one-line handler on stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(console_level)
        handler.setFormatter(handler.formatter if verbose else OneLineFormatter(None))
        root.addHandler(handler)
    if target is not None and _state["file"] != str(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        for old in [h for h in root.handlers if getattr(h, "_calsync", False)]:
            root.removeHandler(old)
            old.close()
        file_handler = logging.FileHandler(target, encoding="utf-8")
        file_handler._calsync = True  # type: ignore[attr-defined]
        file_handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        file_handler.setLevel(level)
        root.addHandler(file_handler)
        _state["file"] = str(target)
    # Records below the root's level never reach the file: let calsync's and Prefect's run loggers through.
    floor = min(level, console_level)
    root.setLevel(min(root.level or logging.WARNING, floor))
    for name in ("calsync", "connectors", "flows", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level > floor:
            logger.setLevel(floor)
    return Path(target) if target is not None else None


def log_file() -> Path | None:
    return Path(_state["file"]) if _state["file"] else None
