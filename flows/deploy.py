"""``calsync deploy``, ``calsync start``, ``calsync stop``: the scheduled Prefect deployment (R17, C22).

``deploy`` registers the sync flow as the deployment ``calsync-sync/calsync`` with two schedules and
serves it (this process executes the runs) until Ctrl-C:

* ``every-2-hours``: cron ``0 */2 * * *`` in UTC, active — the normal schedule (runs at 00:00, 02:00,
  ... UTC);
* ``syncing-every-10-minutes``: an interval of 10 minutes, paused — the "start syncing" schedule.

``start`` triggers a run now, pauses the 2-hour schedule and activates the 10-minute one (anchored
10 minutes from now, so the next runs come at now + 10, + 20, ... minutes); ``stop`` does the
reverse. Both change the deployment's schedules through the Prefect API, so they work against any
Prefect server that holds the deployment.

Schedules only fire with a real Prefect server (its scheduler service). When ``PREFECT_API_URL`` is
not set, ``deploy`` starts one itself (``prefect server start`` on a free loopback port, SQLite under
``PREFECT_HOME``, default ``data/prefect``), records its URL in ``PREFECT_HOME/calsync-server.json``
so ``start``/``stop`` find it, and stops it on exit. ``calsync deploy`` re-registers the schedules
each time it starts, so a restart always comes back on the 2-hour schedule.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent

FLOW_NAME = "calsync-sync"  # the name of flows.sync.sync_flow
DEPLOYMENT_NAME = "calsync"
FULL_NAME = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"

NORMAL_SLUG = "every-2-hours"
NORMAL_CRON = "0 */2 * * *"  # C22: every two hours, on even UTC hours
NORMAL_TZ = "UTC"
SYNCING_SLUG = "syncing-every-10-minutes"
SYNCING_EVERY = timedelta(minutes=10)  # C22: "start syncing" runs every 10 minutes

STATE_FILE = "calsync-server.json"
SERVER_START_TIMEOUT_S = 120.0


class DeployError(Exception):
    """Something the operator must fix; the message says what (and what to run first)."""


# -- where things live -------------------------------------------------------------------------------


def prefect_home() -> Path:
    """``PREFECT_HOME`` if set, else ``data/prefect`` in the repository."""
    home = os.environ.get("PREFECT_HOME")
    return Path(home).expanduser().resolve() if home else ROOT / "data" / "prefect"


def state_path(home: Path | None = None) -> Path:
    return (home or prefect_home()) / STATE_FILE


def read_state(home: Path | None = None) -> dict | None:
    try:
        return json.loads(state_path(home).read_text())
    except (OSError, ValueError):
        return None


def _configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment (or the active Prefect profile), if any."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url.rstrip("/")
    try:
        from prefect.settings import PREFECT_API_URL

        value = PREFECT_API_URL.value()
    except Exception:  # no usable profile means no configured URL
        value = None
    return str(value).rstrip("/") if value else None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether the Prefect API at ``api_url`` answers its health check."""
    import httpx

    try:
        with httpx.Client(trust_env=False, timeout=timeout) as http:
            return http.get(f"{api_url.rstrip('/')}/health").status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ui_url(api_url: str) -> str:
    return api_url[: -len("/api")] if api_url.endswith("/api") else api_url


# -- a local Prefect server --------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """New session (Ctrl-C in the terminal reaches only calsync, which then stops the server in
    order), and on Linux a SIGTERM when the calsync process dies, so a killed deploy leaks nothing."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the session alone must do
        pass


class LocalServer:
    """``prefect server start`` in a subprocess: SQLite under ``home``, on a free loopback port."""

    def __init__(self, home: Path, port: int | None = None, ui: bool | None = None, *,
                 temporary: bool = False) -> None:
        self.home = Path(home)
        self.port = port or _free_port()
        self.ui = ui
        self.temporary = temporary
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log_path = self.home / ("temporary-server.log" if temporary else "server.log")
        self.proc: subprocess.Popen | None = None

    @property
    def database(self) -> str:
        return os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or str(self.home / "prefect.db")

    def _command(self) -> list[str]:
        if self.temporary:
            # What Prefect itself runs for its temporary ("ephemeral") server: the API app under uvicorn with
            # the services an ephemeral server runs (task run recorder, event triggers), without the UI.
            # Spawned by calsync, the calsync process never imports the server (about 5 s on 2 cores).
            import prefect  # cheap: the client is imported anyway

            return [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
                    "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                str(self.port)]

    def spawn(self) -> "LocalServer":
        """Start the server process and return at once (``wait`` for it to answer)."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
        env.update(PREFECT_HOME=str(self.home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        if self.temporary:
            env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
        if self.ui is not None:
            env["PREFECT_UI_ENABLED"] = "true" if self.ui else "false"
        log = open(self.log_path, "ab")  # the child keeps writing to it
        try:
            self.proc = subprocess.Popen(
                self._command(), env=env, cwd=self.home, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent if os.name == "posix" else None,
            )
        finally:
            log.close()
        return self

    def wait(self, timeout: float = SERVER_START_TIMEOUT_S) -> "LocalServer":
        """Wait until the server answers its health check; DeployError (and the server stopped) if it exits
        or does not answer within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not healthy(self.api_url, timeout=1.0):
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc is not None else None
                self.proc = None
                raise DeployError(f"the local Prefect server exited with code {code} before it answered; see"
                                  f" {self.log_path}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DeployError(f"the local Prefect server did not answer {self.api_url}/health within"
                                  f" {timeout:.0f} s; see {self.log_path}:\n{self._log_tail()}")
            time.sleep(0.25)
        return self

    def start(self, timeout: float = SERVER_START_TIMEOUT_S) -> "LocalServer":
        return self.spawn().wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- talking to the server ---------------------------------------------------------------------------


def resolve_api_url() -> tuple[str, str]:
    """The API of the server that holds the deployment, and where that came from. Raises
    DeployError naming what to run first when none is reachable."""
    url = _configured_api_url()
    if url:
        if not healthy(url):
            raise DeployError(f"the Prefect server at {url} (PREFECT_API_URL) does not answer; start it, or"
                              " unset PREFECT_API_URL and run `calsync deploy --config FILE` first")
        return url, "PREFECT_API_URL"
    state = read_state()
    if state and state.get("api_url") and healthy(state["api_url"]):
        return state["api_url"].rstrip("/"), f"started by `calsync deploy` (pid {state.get('pid', '?')})"
    where = state_path()
    raise DeployError("no Prefect server is reachable: run `calsync deploy --config FILE` first (it starts a"
                      " local server and serves the sync until Ctrl-C), or set PREFECT_API_URL to your server"
                      f" (looked for {where}{'' if state else ', which does not exist'})")


@contextmanager
def _api(api_url: str) -> Iterator[Any]:
    """A synchronous Prefect client for ``api_url``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            yield client


def _deployment(client, api_url: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(FULL_NAME)
    except ObjectNotFound:
        raise DeployError(f"the Prefect server at {api_url} has no deployment {FULL_NAME}: run"
                          " `calsync deploy --config FILE` first") from None


def _schedules_by_slug(client, deployment) -> dict[str, Any]:
    schedules = {s.slug: s for s in client.read_deployment_schedules(deployment.id)}
    missing = [slug for slug in (NORMAL_SLUG, SYNCING_SLUG) if slug not in schedules]
    if missing:
        raise DeployError(f"deployment {FULL_NAME} has no schedule {', '.join(missing)} (was it changed by"
                          " hand?): restart `calsync deploy --config FILE` to register them again")
    return schedules


def _check_config(deployment, config: Path | None) -> None:
    if config is None:
        return
    deployed = (deployment.parameters or {}).get("config_path")
    if deployed and Path(deployed) != Path(config).resolve():
        raise DeployError(f"deployment {FULL_NAME} syncs {deployed}, not {Path(config).resolve()}: restart"
                          f" `calsync deploy --config {config}` to switch configs")


def _warn_if_not_served(deployment) -> None:
    if deployment.paused:
        print(f"warning: deployment {FULL_NAME} is paused (no `calsync deploy` is serving it): its runs wait"
              " until `calsync deploy` runs again", file=sys.stderr)


def start_syncing(api_url: str, config: Path | None = None, every: timedelta = SYNCING_EVERY) -> dict:
    """Run a sync now and then every ``every`` (10 minutes) until ``stop_syncing``."""
    from prefect.client.schemas.schedules import IntervalSchedule

    with _api(api_url) as client:
        deployment = _deployment(client, api_url)
        _check_config(deployment, config)
        schedules = _schedules_by_slug(client, deployment)
        anchor = datetime.now(timezone.utc) + every  # the run now covers the first slot
        client.update_deployment_schedule(
            deployment.id, schedules[SYNCING_SLUG].id, active=True,
            schedule=IntervalSchedule(interval=every, anchor_date=anchor, timezone="UTC"),
        )
        client.update_deployment_schedule(deployment.id, schedules[NORMAL_SLUG].id, active=False)
        run = client.create_flow_run_from_deployment(deployment.id, tags=["calsync-start"])
        _warn_if_not_served(deployment)
    return {"deployment_id": str(deployment.id), "flow_run_id": str(run.id), "flow_run_name": run.name,
            "next": anchor}


def stop_syncing(api_url: str, config: Path | None = None) -> dict:
    """Back to the normal schedule: every two hours on even UTC hours."""
    with _api(api_url) as client:
        deployment = _deployment(client, api_url)
        _check_config(deployment, config)
        schedules = _schedules_by_slug(client, deployment)
        was_syncing = schedules[SYNCING_SLUG].active or not schedules[NORMAL_SLUG].active
        client.update_deployment_schedule(deployment.id, schedules[SYNCING_SLUG].id, active=False)
        client.update_deployment_schedule(deployment.id, schedules[NORMAL_SLUG].id, active=True)
        _warn_if_not_served(deployment)
    return {"deployment_id": str(deployment.id), "was_syncing": was_syncing, "next": next_even_hour()}


def next_even_hour(now: datetime | None = None) -> datetime:
    now = now or datetime.now(timezone.utc)
    base = now.replace(minute=0, second=0, microsecond=0)
    nxt = base + timedelta(hours=2 - base.hour % 2)
    return nxt


# -- deploy ------------------------------------------------------------------------------------------


def default_schedules() -> list:
    from prefect.schedules import Cron, Interval

    return [
        Cron(NORMAL_CRON, timezone=NORMAL_TZ, slug=NORMAL_SLUG),
        Interval(SYNCING_EVERY, timezone="UTC", active=False, slug=SYNCING_SLUG),
    ]


def serve_sync(config_path: Path, api_url: str, *, schedules: Sequence | None = None,
               name: str = DEPLOYMENT_NAME) -> None:
    """Register the sync flow as deployment ``calsync-sync/<name>`` on ``api_url`` and serve it until
    Ctrl-C or SIGTERM (the runner then pauses the deployment)."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.types.entrypoint import EntrypointType

    from flows.sync import sync_flow

    # Each flow run is a `python -m prefect.engine` subprocess with this environment: point it at the
    # same server and let it import the project from anywhere.
    os.environ["PREFECT_API_URL"] = api_url
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        deployment = sync_flow.to_deployment(
            name=name,
            schedules=list(schedules) if schedules is not None else default_schedules(),
            parameters={"config_path": str(config_path)},
            description="calsync: two-way calendar sync (C22: every 2 hours on even UTC hours;"
                        " `calsync start` = now and every 10 minutes until `calsync stop`)",
            tags=["calsync"],
            # The runs import flows.sync.sync_flow afresh. (`sync_flow.serve()` would instead
            # cloudpickle the flow into each run; flows.sync's postponed annotations then lose
            # `date` and every run fails parameter validation.)
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        serve(deployment,
              limit=1,  # one sync at a time from this process (the store lock guards the rest)
              pause_on_shutdown=True, print_starting_message=False)

def deploy(config: Path) -> int:
    """``calsync deploy``: register and serve the deployment; starts a local server if needed."""
    from flows.config import load_config

    config_path = Path(config).resolve()
    load_config(config_path)  # fail now on a bad config, not at the first scheduled run

    server: LocalServer | None = None
    api_url = _configured_api_url()
    if api_url:
        if not healthy(api_url):
            raise DeployError(f"the Prefect server at {api_url} (PREFECT_API_URL) does not answer")
        print(f"Prefect server: {api_url} (from PREFECT_API_URL)")
    else:
        home = prefect_home()
        state = read_state(home)
        if state and state.get("api_url") and healthy(state["api_url"]):
            raise DeployError(f"`calsync deploy` is already running (pid {state.get('pid', '?')}, Prefect"
                              f" server {state['api_url']}): stop it first, or set"
                              f" PREFECT_API_URL={state['api_url']} to serve against that server")
        print(f"Prefect server: PREFECT_API_URL is not set; starting a local one (SQLite in {home}) ...",
              flush=True)
        server = LocalServer(home).start()
        api_url = server.api_url
        state_path(home).write_text(json.dumps({
            "api_url": api_url, "pid": os.getpid(), "server_pid": server.proc.pid if server.proc else None,
            "config_path": str(config_path), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }, indent=2))
        print(f"Prefect server: {api_url} (local, started by this command; database {server.database},"
              f" log {server.log_path}; stops when this command exits)")
    print(f"Prefect UI:     {_ui_url(api_url)}  (Deployments -> {FULL_NAME}; Runs)")
    print(f"Deployment:     {FULL_NAME}, config {config_path}")
    print(f"Schedule:       every 2 hours on even UTC hours ({NORMAL_CRON}, UTC); next at"
          f" {next_even_hour():%Y-%m-%d %H:%M} UTC. `calsync start` syncs now and every 10 minutes,"
          " `calsync stop` goes back.")
    print("Serving: this process runs the scheduled syncs. Press Ctrl-C to stop.", flush=True)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        serve_sync(config_path, api_url)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            state = read_state(server.home)
            if state and state.get("pid") == os.getpid():
                state_path(server.home).unlink(missing_ok=True)
            server.stop()
            print(f"Prefect server at {api_url} stopped.")
    return 0


# -- the command line --------------------------------------------------------------------------------


def _cmd_deploy(args: argparse.Namespace) -> int:
    try:
        return deploy(args.config)
    except DeployError as exc:
        print(f"calsync deploy: {exc}", file=sys.stderr)
        return 1


def _on_server(command: str, action, config):
    """Find the Prefect server, print which, and run ``action(api_url, config)``; None on DeployError."""
    try:
        api_url, source = resolve_api_url()
        print(f"Prefect server: {api_url} ({source})")
        return api_url, action(api_url, config)
    except DeployError as exc:
        print(f"calsync {command}: {exc}", file=sys.stderr)
        return None


def _cmd_start(args: argparse.Namespace) -> int:
    done = _on_server("start", start_syncing, args.config)
    if done is None:
        return 1
    api_url, result = done
    print(f"Started syncing: flow run {result['flow_run_name']} ({result['flow_run_id']}) runs now, then every"
          f" 10 minutes from {result['next']:%H:%M} UTC until `calsync stop`.")
    print(f"Watch it: {_ui_url(api_url)}/runs/flow-run/{result['flow_run_id']}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    done = _on_server("stop", stop_syncing, args.config)
    if done is None:
        return 1
    _, result = done
    state = "Stopped syncing" if result["was_syncing"] else "Was not syncing"
    print(f"{state}: back to every 2 hours on even UTC hours; next run at {result['next']:%Y-%m-%d %H:%M} UTC.")
    return 0


def add_commands(subparsers) -> None:
    """Add ``deploy``, ``start`` and ``stop`` to the ``calsync`` parser's subparsers."""
    p = subparsers.add_parser("deploy", help="register the scheduled Prefect deployment and serve it until Ctrl-C")
    p.add_argument("--config", type=Path, required=True, help="the TOML config file the runs sync")
    p.set_defaults(func=_cmd_deploy)

    p = subparsers.add_parser("start", help="start syncing: a run now, then every 10 minutes until `calsync stop`")
    p.add_argument("--config", type=Path,
                   help="the config `calsync deploy` serves (optional; checked against the deployment)")
    p.set_defaults(func=_cmd_start)

    p = subparsers.add_parser("stop", help="stop syncing: back to every 2 hours on even UTC hours")
    p.add_argument("--config", type=Path,
                   help="the config `calsync deploy` serves (optional; checked against the deployment)")
    p.set_defaults(func=_cmd_stop)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.deploy deploy|start|stop ...`` (the same commands as ``calsync``)."""
    parser = argparse.ArgumentParser(prog="calsync")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
