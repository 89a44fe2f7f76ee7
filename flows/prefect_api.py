"""Which Prefect API a flow run of this process reports to, found (or started) before the flow runs.

In order:

1. ``PREFECT_API_URL`` (the environment or the active Prefect profile): that server, or Prefect Cloud. It
   must answer; calsync never falls back to a temporary server behind the operator's back.
2. The server ``calsync deploy`` started (``PREFECT_HOME/calsync-server.json``), when it answers: no start-up
   cost, and the run shows in the same UI as the scheduled ones.
3. Otherwise a temporary server for this process, as Prefect's own ephemeral mode runs it (the API app and
   its ephemeral services on the SQLite database in ``PREFECT_HOME``), stopped when the process exits. It is
   spawned by ``begin()`` as early as possible, so its start-up (7-9 s on 2 cores) overlaps calsync's own
   imports, and calsync never imports the server itself (Prefect's ephemeral mode does: another ~5 s).
   It gets ``STARTUP_TIMEOUT_S`` to answer (Prefect's own default, 20 s, is not enough on a loaded 2-core
   machine); ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` in the environment overrides it.

When none can be had, ``PrefectUnavailable`` says in one line which of those to do (or ``--no-prefect``).
"""

from __future__ import annotations

import atexit
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from connectors.errors import CalsyncError

STARTUP_TIMEOUT_S = 120.0
TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
_WHAT_TO_DO = ("set PREFECT_API_URL to a running Prefect server, or keep `calsync deploy --config FILE` running"
               " (its server is reused), or run with --no-prefect")


class PrefectUnavailable(CalsyncError):
    """No Prefect API could be had; the message says what to do."""


def startup_timeout() -> float:
    """Seconds a temporary server gets to answer: the environment's Prefect setting, else STARTUP_TIMEOUT_S."""
    try:
        return float(os.environ[TIMEOUT_ENV])
    except (KeyError, ValueError):
        return STARTUP_TIMEOUT_S


@dataclass
class Api:
    """The API a run reports to: its URL, where it came from, and the temporary server if calsync started one."""

    url: str | None
    source: str
    server: object | None = None  # flows.deploy.LocalServer (temporary)

    def describe(self) -> str:
        return f"Prefect server: {self.url} ({self.source})"


_lock = threading.Lock()
_api: Api | None = None


def begin() -> Api:
    """Find the API to use, spawning a temporary server (without waiting for it) when there is none. A
    temporary server serves every flow of the process; the other choices are made afresh each call."""
    global _api
    import sys

    from flows import deploy  # no Prefect import

    url = os.environ.get("PREFECT_API_URL")
    if url:
        return Api(url.rstrip("/"), "PREFECT_API_URL")
    settings_loaded = "prefect.settings" in sys.modules
    if settings_loaded and (url := deploy._configured_api_url()):
        return Api(url, "PREFECT_API_URL from the Prefect settings")
    state = deploy.read_state()
    if state and state.get("api_url") and deploy.healthy(state["api_url"]):
        return Api(state["api_url"].rstrip("/"), f"started by `calsync deploy` (pid {state.get('pid', '?')})")
    with _lock:
        if _api is not None and _api.server.proc is not None and _api.server.proc.poll() is None:
            return _api
        # Spawned before Prefect's settings are read (importing them costs ~3 s): a URL set in the active
        # profile, prefect.toml or .env still wins, and the server is stopped again.
        server = deploy.LocalServer(deploy.prefect_home(), temporary=True).spawn()
        if not settings_loaded and (url := deploy._configured_api_url()):
            server.stop()
            return Api(url, "PREFECT_API_URL from the Prefect settings")
        atexit.register(server.stop)
        _api = Api(server.api_url, "temporary, for this process; stops when it exits", server)
        return _api


def ready() -> Api:
    """The chosen API once it answers; ``PrefectUnavailable`` (one line) when it does not."""
    from flows import deploy

    api = begin()
    if api.server is None:
        if not deploy.healthy(api.url, timeout=5.0):
            raise PrefectUnavailable(
                f"the Prefect server at {api.url} ({api.source}) does not answer: start it (or fix the URL), or"
                " unset PREFECT_API_URL to use a temporary server, or run with --no-prefect")
        return api
    timeout = startup_timeout()
    _preload()  # while the server boots on one core, the other imports what the first flow run needs
    try:
        api.server.wait(timeout)
    except deploy.DeployError:
        _forget()
        raise PrefectUnavailable(
            f"the temporary Prefect server did not answer within {timeout:.0f} s (a busy machine? see"
            f" {api.server.log_path}; {TIMEOUT_ENV} gives it longer): {_WHAT_TO_DO}") from None
    return api


def _preload() -> None:
    """Import what a flow run imports on first use (the engines, artifacts, Arrow for the store: about 1.3 s)."""
    import importlib

    for name in ("prefect.flow_engine", "prefect.task_engine", "prefect.engine", "prefect.artifacts",
                 "prefect.states", "pyarrow", "connectors.store_views"):
        try:
            importlib.import_module(name)
        except Exception:  # only an optimisation
            pass


def _forget() -> None:
    global _api
    with _lock:
        if _api is not None:
            _api.server.stop()
        _api = None


@contextmanager
def connected() -> Iterator[Api]:
    """Run the block (a flow call) against the chosen API."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    api = ready()
    with temporary_settings(updates={PREFECT_API_URL: api.url,
                                     PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: int(startup_timeout())}):
        yield api
