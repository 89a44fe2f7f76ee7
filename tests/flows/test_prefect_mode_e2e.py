"""Issue 11: the default (Prefect) mode of `calsync sync`, run as an operator runs it: a process of its own.

- a temporary Prefect server that takes longer to start than Prefect's own 20 s does not kill the run;
- when no server can be had, one line says which of PREFECT_API_URL, `calsync deploy` or --no-prefect to use;
- a server `calsync deploy` started is reused (no temporary server);
- with Exchange down, one line per failure in the terminal; the traceback with --verbose and in the log file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.flows.conftest import at
from tests.flows.receiver import closed_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.prefect

# Makes the temporary server's process (and only it) sleep before it starts: a loaded machine, on purpose.
SLOW_START = """
import os, sys, time
if "prefect.server.api.server:create_app" in sys.argv:
    time.sleep(float(os.environ.get("CALSYNC_TEST_SERVER_DELAY", "0")))
"""


def _env(world, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(world.env)
    env.update({"PYTHONPATH": str(ROOT), "PREFECT_LOGGING_LEVEL": "WARNING", **extra})
    return env


def _sync(world, env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "sync", "--config", str(world.config_path),
                           "--today", world.today.isoformat(), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _harness_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def test_a_slow_temporary_server_does_not_kill_the_run_and_one_that_never_comes_is_one_line(world, tmp_path):
    world.configure()
    world.sb.salesforce.org.add_event(world.ids["alice@example.com"], "Slow server, still synced", at(1, 9), at(1, 10))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_START)
    home = tmp_path / "prefect-home"
    env = _env(world, PREFECT_HOME=str(home), PYTHONPATH=f"{site}{os.pathsep}{ROOT}")
    # 25 s: past Prefect's own 20 s start-up wait, which is what killed `calsync sync` on loaded machines.
    started = time.monotonic()
    done = _sync(world, {**env, "CALSYNC_TEST_SERVER_DELAY": "25"}, "--json")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["status"] == "succeeded" and took > 25
    assert [i for i in world.mail_items("alice@example.com") if i["subject"] == "Slow server, still synced"]
    # A server that does not come up within the wait (here the operator's own 3 s): one line, what to do.
    done = _sync(world, {**env, "CALSYNC_TEST_SERVER_DELAY": "30",
                         "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "3"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "the temporary Prefect server did not answer within 3 s" in lines[0]
    for what in ("PREFECT_API_URL", "calsync deploy", "--no-prefect", str(home / "temporary-server.log")):
        assert what in lines[0], lines[0]


def test_a_prefect_api_url_that_does_not_answer_is_one_line(world):
    world.configure()
    done = _sync(world, _env(world, PREFECT_API_URL=f"http://127.0.0.1:{closed_port()}/api"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "PrefectUnavailable: the Prefect server at http://127.0.0.1:" in lines[0] and "--no-prefect" in lines[0]
    assert world.query("SELECT count(*) FROM runs")[0][0] == 0  # nothing started


def test_the_server_calsync_deploy_started_is_reused(world, tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client

    world.configure()
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "calsync-server.json").write_text(json.dumps({"api_url": _harness_url(), "pid": os.getpid()}))
    done = _sync(world, _env(world, PREFECT_HOME=str(home)), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = json.loads(done.stdout)["run_id"]
    assert not (home / "temporary-server.log").exists()  # no temporary server was started
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    mine = [r for r in runs if r.parameters.get("config_path") == str(world.config_path)]
    assert mine and mine[0].state.is_completed(), runs
    assert world.query("SELECT status FROM runs WHERE run_id = ?", [run_id]) == [("succeeded",)]


def test_exchange_down_is_one_line_per_failure_with_the_traceback_in_the_log(world, prefect_harness):
    world.configure()
    url = f"http://127.0.0.1:{closed_port()}/EWS/Exchange.asmx"
    world.config_path.write_text(world.config_path.read_text().replace(world.sb.exchange.url, url))
    env = _env(world, PREFECT_API_URL=_harness_url())
    done = _sync(world, env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert not any("Traceback" in x or x.startswith((" ", "\t")) for x in lines), done.stderr
    assert len(lines) <= 12, done.stderr  # the extract's attempts (Prefect retries it twice) and the verdict
    last = lines[-1]
    assert last.startswith("calsync: run ") and "failed in extract: RetriableError: Exchange at " + url in last
    assert "refused the connection" in last and "nothing was written" in last, last
    log = world.tmp / "calsync.log"
    assert f"details: {log}" in last and "Traceback (most recent call last)" in log.read_text()
    assert world.env["CALSYNC_EWS_PASSWORD"] not in log.read_text()
    verbose = _sync(world, env, "--no-prefect", "--verbose")
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr
