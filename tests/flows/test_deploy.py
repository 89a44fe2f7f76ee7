"""R17 / C22: the scheduled deployment, against a real local Prefect server.

The main test runs ``calsync deploy`` the way an operator does (no PREFECT_API_URL: it starts its own
server), checks what it registered, serves a second deployment of the real sync flow on a 5-second
interval to show that scheduled runs are created and completed, then runs ``calsync start`` and
``calsync stop`` and checks that they switch the schedules (and that start's run completes), and
finally stops ``deploy`` with Ctrl-C and checks the server went with it.

Every process is started in its own session and killed (group and local server) at teardown, so a
failing test leaks nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from flows import deploy as d
from tests.flows.conftest import at

ROOT = Path(__file__).resolve().parents[2]
ALICE = "alice@example.com"

pytestmark = pytest.mark.prefect


# -- process bookkeeping -----------------------------------------------------------------------------


class Procs:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.procs: list[subprocess.Popen] = []

    def spawn(self, *args: str, name: str) -> subprocess.Popen:
        out = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        proc.log = self.tmp / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    @staticmethod
    def kill(proc: subprocess.Popen, sig=signal.SIGTERM, wait: float = 20) -> None:
        for s, w in ((sig, wait), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                return
            try:
                os.killpg(proc.pid, s)
            except ProcessLookupError:
                return
            try:
                proc.wait(w)
            except subprocess.TimeoutExpired:
                pass

    def cleanup(self, home: Path) -> None:
        for proc in reversed(self.procs):
            self.kill(proc, wait=10)
        state = d.read_state(home)
        if state and state.get("server_pid"):  # deploy died without stopping its server
            try:
                os.killpg(state["server_pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _log(proc) -> str:
    return proc.log.read_text(errors="replace")


def _wait(what: str, check, timeout: float, *procs, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for p in procs:
            assert p.poll() is None, f"{p.args} exited ({p.returncode}) while waiting for {what}:\n{_log(p)}"
        if time.monotonic() > deadline:
            logs = "\n\n".join(f"--- {p.args[-3:]}\n{_log(p)[-3000:]}" for p in procs)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(step)


def _runs(client, deployment_id):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def _deployment_or_none(client, name):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


# -- the operator's path, end to end -----------------------------------------------------------------


FAST_SERVE = """
import sys
from datetime import timedelta
from pathlib import Path
from prefect.schedules import Interval
from flows.deploy import serve_sync
serve_sync(Path(sys.argv[1]), sys.argv[2], name="calsync-fast",
           schedules=[Interval(timedelta(seconds=5), slug="every-5-seconds")])
"""


def test_deploy_serves_scheduled_runs_and_start_stop_switch_the_schedule(world, tmp_path):
    home = tmp_path / "prefect-home"
    config = world.configure()
    # Something for the first sync to copy, so a completed run shows a real sync happened.
    world.sb.salesforce.org.add_event(world.ids[ALICE], "Scheduled sync check", at(3, 9), at(3, 10))

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(world.env, PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_RUNNER_POLL_FREQUENCY="2",
               PYTHONPATH=str(ROOT))
    procs = Procs(tmp_path, env)
    try:
        # 1. `calsync deploy` without PREFECT_API_URL: starts its own server and records it.
        deploy = procs.spawn("-m", "flows.deploy", "deploy", "--config", str(config), name="deploy")
        state = _wait("the local server's state file", lambda: d.read_state(home), 60, deploy)
        url = state["api_url"]
        assert url.startswith("http://127.0.0.1:") and d.healthy(url)
        assert (home / "prefect.db").exists(), "the SQLite database lives under PREFECT_HOME"

        with d._api(url) as client:
            dep = _wait("the deployment", lambda: _deployment_or_none(client, d.FULL_NAME), 30, deploy)
            assert dep.parameters == {"config_path": str(config.resolve())}
            schedules = {s.slug: s for s in client.read_deployment_schedules(dep.id)}
            normal, syncing = schedules[d.NORMAL_SLUG], schedules[d.SYNCING_SLUG]
            assert (normal.schedule.cron, normal.schedule.timezone, normal.active) == ("0 */2 * * *", "UTC", True)
            assert (syncing.schedule.interval, syncing.active) == (timedelta(minutes=10), False)
        out = _log(deploy)
        assert "PREFECT_API_URL is not set; starting a local one" in out and url in out

        # 2. A served deployment of the real sync flow on a 5-second interval: the server's scheduler
        #    creates runs and the runner completes them.
        fast = procs.spawn("-c", FAST_SERVE, str(config), url, name="fast")
        with d._api(url) as client:
            fast_dep = _wait("the 5-second deployment", lambda: _deployment_or_none(client, "calsync-sync/calsync-fast"),
                             30, fast, deploy)

            def completed_scheduled_run():
                return [r for r in _runs(client, fast_dep.id) if r.auto_scheduled and r.state and r.state.is_completed()]

            done = _wait("a scheduled run to complete", completed_scheduled_run, 60, fast, deploy, step=1)
            assert done[0].parameters["config_path"] == str(config.resolve())
        Procs.kill(fast)  # its next runs would compete for the store lock with start's run below
        assert [i for i in world.mail_items(ALICE) if i["subject"] == "Scheduled sync check"], \
            "the scheduled run really synced the Salesforce event into the mailbox"
        assert ("succeeded",) in world.query("SELECT status FROM runs")

        with d._api(url) as client:
            # The 2-hour schedule's runs, as created by the scheduler: on even UTC hours.
            upcoming = [r for r in _runs(client, dep.id) if r.auto_scheduled]
            assert upcoming, "the scheduler created the 2-hour schedule's runs"
            for r in upcoming:
                t = r.expected_start_time
                assert (t.utcoffset(), t.minute, t.second, t.hour % 2) == (timedelta(0), 0, 0, 0), t

        # 3. `calsync start` finds the server through the state file: a run now, then every 10 minutes.
        started = procs.run("-m", "flows.deploy", "start", "--config", str(config))
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"{url} (started by `calsync deploy`" in started.stdout
        with d._api(url) as client:
            schedules = {s.slug: s for s in client.read_deployment_schedules(dep.id)}
            assert (schedules[d.NORMAL_SLUG].active, schedules[d.SYNCING_SLUG].active) == (False, True)
            assert schedules[d.SYNCING_SLUG].schedule.interval == timedelta(minutes=10)
            now_runs = [r for r in _runs(client, dep.id) if "calsync-start" in r.tags]
            assert len(now_runs) == 1
            _wait("start's run to complete", lambda: client.read_flow_run(now_runs[0].id).state.is_completed(),
                  45, deploy, step=1)
            on_even_hours = [r for r in _runs(client, dep.id) if r.auto_scheduled and r.state.is_scheduled()
                             and (r.expected_start_time.minute, r.expected_start_time.second) == (0, 0)]
            assert not on_even_hours, "the 2-hour schedule's pending runs are gone while syncing"

        # 4. `calsync stop`: back to the 2-hour schedule.
        stopped = procs.run("-m", "flows.deploy", "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "Stopped syncing" in stopped.stdout
        with d._api(url) as client:
            schedules = {s.slug: s for s in client.read_deployment_schedules(dep.id)}
            assert (schedules[d.NORMAL_SLUG].active, schedules[d.SYNCING_SLUG].active) == (True, False)

        # 5. Ctrl-C stops deploy, which pauses the deployment and stops its server.
        server_pid = d.read_state(home)["server_pid"]
        os.kill(deploy.pid, signal.SIGINT)
        deploy.wait(30)
        assert deploy.returncode == 0, _log(deploy)
        assert not d.read_state(home), "the state file is removed"
        assert not d.healthy(url, timeout=1)
        with pytest.raises(ProcessLookupError):
            os.kill(server_pid, 0)

        # 6. Without a server, start says what to run first.
        again = procs.run("-m", "flows.deploy", "start")
        assert again.returncode == 1
        assert "run `calsync deploy --config FILE` first" in again.stderr
    finally:
        procs.cleanup(home)


# -- small pieces ------------------------------------------------------------------------------------


def test_add_commands_builds_deploy_start_stop():
    parser = argparse.ArgumentParser(prog="calsync")
    d.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deploy", "--config", "x.toml"])
    assert (args.func, args.config) == (d._cmd_deploy, Path("x.toml"))
    assert parser.parse_args(["start"]).func is d._cmd_start
    assert parser.parse_args(["stop", "--config", "x.toml"]).func is d._cmd_stop
    with pytest.raises(SystemExit):
        parser.parse_args(["deploy"])  # deploy needs the config


def test_start_without_a_server_names_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens on port 9
    assert d._cmd_start(argparse.Namespace(config=None)) == 1
    assert "does not answer" in capsys.readouterr().err
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setattr(d, "_configured_api_url", lambda: None)  # ignore any Prefect profile
    (tmp_path / d.STATE_FILE).write_text('{"api_url": "http://127.0.0.1:9/api", "pid": 1}')  # stale
    assert d._cmd_stop(argparse.Namespace(config=None)) == 1
    assert "run `calsync deploy --config FILE` first" in capsys.readouterr().err


def test_next_even_hour():
    from datetime import datetime, timezone

    t = datetime(2026, 3, 1, 13, 5, tzinfo=timezone.utc)
    assert d.next_even_hour(t) == datetime(2026, 3, 1, 14, tzinfo=timezone.utc)
    t = datetime(2026, 3, 1, 22, 0, tzinfo=timezone.utc)
    assert d.next_even_hour(t) == datetime(2026, 3, 2, 0, tzinfo=timezone.utc)
