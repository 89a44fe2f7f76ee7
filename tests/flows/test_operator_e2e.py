"""Issue 11, end to end: failures an operator can see. The Prefect state and artifact of a failed run, a refused
user's exit code, status view and notification (received by a local webhook receiver), an unreadable
mailbox, a run killed before planning, and `calsync check`. Against the sandbox, through the real clients."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from flows.replay import NotReplayable, replay
from tests.flows.conftest import ALICE_, BOB_, at, user_block
from tests.flows.receiver import Receiver, closed_port

ALICE, BOB = ALICE_, BOB_
ROOT = Path(__file__).resolve().parents[2]
HOOK_ENV = "CALSYNC_TEST_WEBHOOK"


def _notify(world, receiver: Receiver, monkeypatch) -> None:
    """Point the world's config at the receiver ([notify] webhook_url_env) and export its secrets."""
    world.env[HOOK_ENV] = receiver.url
    with world.config_path.open("a") as f:
        f.write(f'\n[notify]\nwebhook_url_env = "{HOOK_ENV}"\n')
    for k, v in world.env.items():
        monkeypatch.setenv(k, v)


def _artifact(run_id: str) -> str:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def latest():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["calsync-summary"])))
            return [a.data for a in found if run_id in (a.description or "")]

    (data,) = asyncio.run(latest())
    return data


@pytest.mark.prefect
def test_failed_deltas_end_the_flow_failed_with_the_artifact_and_a_notification(world, prefect_harness, monkeypatch):
    from flows.sync import sync_flow

    world.configure()
    for n in range(2):
        world.sb.salesforce.org.add_event(world.ids[ALICE], f"Cannot land {n}", at(n + 1, 9), at(n + 1, 10))
    world.sb.faults.add("http_503", count=100, route="CreateItem")
    with Receiver() as receiver:
        _notify(world, receiver, monkeypatch)
        state = sync_flow(str(world.config_path), world.today, return_state=True)
        (note,) = receiver.wait(1)
    summary = state.result(raise_on_failure=False)
    assert state.is_failed() and state.name == "Failed", state
    assert f"calsync replay {summary['run_id']}" in state.message and summary["status"] == "partial"
    assert "2 of 2 deltas failed" in _artifact(summary["run_id"])
    assert note["subject"].startswith(f"calsync run {summary['run_id']}: failed: 2 of 2 deltas failed")
    assert "create on email" in note["text"] and "retry or replay" in note["text"]
    assert world.env["CALSYNC_EWS_PASSWORD"] not in json.dumps(note)


@pytest.mark.prefect
def test_a_refused_user_is_visible_exit_code_state_view_and_notification(world, prefect_harness, monkeypatch, capsys):
    from flows.sync import sync_flow

    world.configure()
    for n in range(6):
        world.sb.salesforce.org.add_event(world.ids[ALICE], f"Customer call {n}", at(n + 1, 9), at(n + 1, 10))
    first = world.sync()
    sf = world.salesforce()
    for ev in [e for e in world.sf_events(ALICE) if e["Subject"].startswith("Customer call")]:
        sf.Event.delete(ev["Id"])
    with Receiver() as receiver:
        _notify(world, receiver, monkeypatch)
        state = sync_flow(str(world.config_path), world.today, return_state=True)
        (note,) = receiver.wait(1)
        summary = state.result()
        # Prefect: a Completed state named "Refused" that automations and filters can match.
        assert state.is_completed() and state.name == "Refused" and "mass-deletion guard" in state.message
        assert summary["totals"]["refusals"] == {ALICE: "mass_deletion"}
        assert "Refused users" in _artifact(summary["run_id"]) and "MassDeletionRefused: 6 of 6" in _artifact(summary["run_id"])
        assert ALICE in note["subject"] and "mass_deletion" in note["text"]
        # The command line: exit 5, the refusal in the headline; --no-prefect notifies through the same block.
        receiver.clear()
        code = main(["sync", "--config", str(world.config_path), "--no-prefect", "--today", world.today.isoformat()])
        out = capsys.readouterr().out
        assert code == 5 and "refused by the mass-deletion guard" in out.splitlines()[0], out
        assert ALICE in receiver.wait(1)[0]["subject"]
    with world.store() as store:
        rows = store.con.execute(
            "SELECT user_key, last_outcome, last_synced_at, refused_since, refused_reason, refused_detail,"
            " pending_failed_deltas FROM v_user_status ORDER BY user_key").fetchall()
        started = dict(store.con.execute("SELECT run_id, started_at FROM runs").fetchall())
    alice, bob = rows
    assert alice[:2] == (ALICE, "refused") and alice[2] == started[first["run_id"]]
    assert alice[3] == started[summary["run_id"]]  # refused since the first refused run, not the latest
    assert alice[4] == "mass_deletion" and "6 of 6 paired events" in alice[5] and alice[6] == 0
    assert bob[1] == "synced" and bob[3] is None
    world.sync(allow_deletes=True)
    with world.store() as store:
        after = store.con.execute("SELECT last_outcome, refused_since FROM v_user_status WHERE user_key = ?",
                                  [ALICE]).fetchall()
    assert after == [("synced", None)]


def test_an_unreadable_mailbox_exits_6_and_notifies(world, monkeypatch, capsys):
    world.configure(user_block(ALICE, mailbox="ghost@example.com"), user_block(BOB))
    world.sb.exchange.org.add_item(BOB, "Bob still syncs", at(1, 9), at(1, 10))
    with Receiver() as receiver:
        _notify(world, receiver, monkeypatch)
        code = main(["sync", "--config", str(world.config_path), "--no-prefect", "--today", world.today.isoformat()])
        (note,) = receiver.wait(1)
    out = capsys.readouterr().out
    assert code == 6, out
    assert f"not synced ({ALICE}: mailbox_unreadable)" in out.splitlines()[0]
    assert "ghost@example.com" in note["text"] and "mailbox_unreadable" in note["text"]
    assert [e["Subject"] for e in world.sf_events(BOB)] == ["Bob still syncs"]
    with world.store() as store:
        assert store.con.execute("SELECT last_outcome, refused_reason FROM v_user_status WHERE user_key = ?",
                                 [ALICE]).fetchall() == [("not_synced", "mailbox_unreadable")]


KILL_BEFORE_PLANNING = """
import os, signal, sys
from flows.config import load_config
from flows.sync import run_sync

def stage(name, fn, *args):
    if name == "reconcile":
        os.kill(os.getpid(), signal.SIGKILL)  # after extract and snapshot, before any delta is planned
    return fn(*args)

run_sync(load_config(sys.argv[1]), stage=stage)
"""


def test_a_run_killed_before_planning_says_so_and_the_next_sync_marks_it(world):
    world.configure()
    world.sb.salesforce.org.add_event(world.ids[ALICE], "After the crash", at(1, 9), at(1, 10))
    done = subprocess.run([sys.executable, "-c", KILL_BEFORE_PLANNING, str(world.config_path)], cwd=ROOT,
                          env={**os.environ, **world.env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    ((run_id, status),) = world.query("SELECT run_id, status FROM runs")
    assert status == "running"
    from flows.config import load_config

    with pytest.raises(NotReplayable, match=rf"run {run_id} was interrupted before planning .* nothing was written"
                                            " and there is nothing to replay; run a new sync"):
        replay(load_config(world.config_path, env=world.env), run_id)
    summary = world.sync()
    assert summary["status"] == "succeeded" and len([i for i in world.mail_items(ALICE)
                                                     if i["subject"] == "After the crash"]) == 1
    (row,) = world.query("SELECT status, failed_stage, error FROM runs WHERE run_id = ?", [run_id])
    assert row[:2] == ("interrupted", "before planning") and "nothing was written" in row[2]


def test_check_signs_in_everywhere_reads_one_calendar_per_kind_and_writes_nothing(tmp_path, capsys):
    from flows.demo import write_config
    from sandbox import Sandbox

    spec = {"users": [{"email": ALICE, "name": "Alice Adams"}, {"email": BOB, "name": "Bob Brown"}]}
    with Sandbox(tmp_path / "sb", required_custom_field="Region__c") as sb:
        sb.seed(spec, at(0).date())
        env: dict[str, str] = {"GRAPH_SECRET": "s3cr3t~graph"}
        users = (user_block(ALICE) + user_block(BOB) + user_block("nobody@example.com")
                 + user_block("erin@example.com", mailbox_kind="graph"))
        path = write_config(sb, {}, tmp_path / "calsync.toml", tmp_path / "store" / "calsync.duckdb", env=env,
                            users=users)
        port = closed_port()  # the Graph service of this config is not reachable
        text = re.sub(r'authority_host = ".*?"', f'authority_host = "https://127.0.0.1:{port}"', path.read_text())
        text = re.sub(r'graph_url = ".*?"', f'graph_url = "https://127.0.0.1:{port}/v1.0"', text)
        text = text.replace('certificate_env = "CALSYNC_GRAPH_CERTIFICATE"', 'client_secret_env = "GRAPH_SECRET"')
        path.write_text(text)
        os.environ.update(env)
        before = (sb.salesforce.org.dump()["objects"], sb.exchange.org.dump()["mailboxes"])
        code = main(["check", "--config", str(path)])
        lines = capsys.readouterr().out.strip().splitlines()
        after = (sb.salesforce.org.dump()["objects"], sb.exchange.org.dump()["mailboxes"])
        ops = sb.exchange.org.dump()["calls_by_operation"]
    assert code == 1, lines
    got = {line[6:].split(":")[0]: line[:4] for line in lines if line[:4] in ("PASS", "FAIL")}
    assert got["salesforce sign-in"] == "PASS" and got["ews sign-in"] == "PASS", lines
    assert got["salesforce Event"] == "FAIL" and any("requires custom field Region__c" in x for x in lines)
    assert got[f"user {ALICE}"] == "PASS" and got["user nobody@example.com"] == "FAIL"
    assert any(x.startswith("FAIL  user nobody@example.com: Salesforce: no active Salesforce User") for x in lines)
    assert any(x.startswith("FAIL  user nobody@example.com: mailbox:") and "ErrorNonExistentMailbox" in x for x in lines)
    graph = next(x for x in lines if x.startswith("FAIL  graph sign-in"))
    assert f"127.0.0.1:{port}" in graph and "refused the connection" in graph and "s3cr3t" not in "".join(lines)
    assert got["store"] == "PASS" and not (tmp_path / "store" / "calsync.duckdb").exists()
    assert lines[-1].startswith("check: ") and "failed" in lines[-1]
    assert before == after and not {"CreateItem", "UpdateItem", "DeleteItem"} & set(ops), ops


def test_check_passes_on_a_healthy_config(world, capsys):
    world.configure()
    os.environ.update(world.env)
    assert main(["check", "--config", str(world.config_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(x.startswith("PASS") for x in lines[:-1]) and lines[-1].endswith("0 failed"), lines
    assert any(x.startswith(f"PASS  user {BOB}: mailbox") for x in lines)
