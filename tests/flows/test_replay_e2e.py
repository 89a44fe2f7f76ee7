"""Issue 5: a run whose load dies part-way is replayed from its snapshots, with nothing lost and
nothing written twice (including a write that reached the server but whose reply was lost)."""

from __future__ import annotations

from collections import Counter

import pytest

from connectors.errors import ApiLimitExceeded, RetriableError
from flows.config import load_config
from flows.replay import NotReplayable, replay
from tests.flows.conftest import MAILBOX_KINDS, at

# Replays hold for mailboxes on Exchange Server (EWS) and on Exchange Online (Microsoft Graph) alike.
pytestmark = pytest.mark.parametrize("mailbox_kind", MAILBOX_KINDS, indirect=True)

ALICE = "alice@example.com"
N = 5


def _cfg(world):
    return load_config(world.config_path, env=world.env)


def _subjects(items, prefix):
    return Counter(i["subject"] for i in items if i["subject"].startswith(prefix))


def _sf_subjects(world, prefix):
    return Counter(e["Subject"] for e in world.sf_events(ALICE) if e["Subject"].startswith(prefix))


@pytest.mark.parametrize("k", [0, 2, 4])
@pytest.mark.parametrize("kind", ["drop_after_write", "http_503"])
def test_load_dies_after_k_email_writes_then_replay_completes(world, k, kind):
    """Salesforce -> email: the (k+1)-th mailbox create fails (its reply lost, or refused)."""
    world.configure(extra="batch_size = 1")
    for n in range(N):
        world.sb.salesforce.org.add_event(world.ids[ALICE], f"Replay me {n}", at(n + 1, 9), at(n + 1, 10))
    world.sb.faults.add(kind, count=50, route=world.create_route, after=k)
    first = world.sync()
    assert first["status"] == "partial", first
    world.sb.faults.clear()
    written = sum(_subjects(world.mail_items(ALICE), "Replay me").values())
    assert written == k + (1 if kind == "drop_after_write" else 0)

    summary = replay(_cfg(world), first["run_id"])
    assert summary["status"] == "succeeded", summary
    assert summary["found_existing"] == (1 if kind == "drop_after_write" else 0)
    assert _subjects(world.mail_items(ALICE), "Replay me") == {f"Replay me {n}": 1 for n in range(N)}
    assert world.query("SELECT count(*) FROM pairs")[0][0] == N
    assert world.query("SELECT status FROM runs WHERE run_id = ?", [first["run_id"]])[0][0] == "succeeded"

    with pytest.raises(NotReplayable, match="nothing to replay"):
        replay(_cfg(world), first["run_id"])
    assert world.sync()["totals"]["deltas"] == 0


@pytest.mark.parametrize("k", [1, 3])
def test_load_dies_after_k_salesforce_writes_then_replay_completes(world, k):
    """Email -> Salesforce: a collection create is applied but its reply never arrives."""
    world.configure(extra="batch_size = 1")
    for n in range(N):
        world.sb.exchange.org.add_item(ALICE, f"From mail {n}", at(n + 1, 13), at(n + 1, 14))
    world.sb.faults.add("drop_after_write", count=50, route="composite/sobjects", after=k)
    first = world.sync()
    assert first["status"] == "partial", first
    world.sb.faults.clear()
    assert sum(_sf_subjects(world, "From mail").values()) == k + 1

    summary = replay(_cfg(world), first["run_id"])
    assert summary["status"] == "succeeded", summary
    assert _sf_subjects(world, "From mail") == {f"From mail {n}": 1 for n in range(N)}
    assert world.sync()["totals"]["deltas"] == 0


def test_run_failed_in_extract_is_not_replayable(world):
    world.configure()
    world.sb.faults.add("http_503", count=20, route="/query")
    with pytest.raises(RetriableError):
        world.sync()
    world.sb.faults.clear()
    run_id, stage, status = world.query("SELECT run_id, failed_stage, status FROM runs")[0]
    assert (stage, status) == ("extract", "failed")
    with pytest.raises(NotReplayable, match="failed in extract, before its snapshot"):
        replay(_cfg(world), run_id)


def test_daily_api_limit_stops_cleanly_and_replays_later(world):
    world.configure(extra="batch_size = 1")
    for n in range(N):
        world.sb.exchange.org.add_item(ALICE, f"Limited {n}", at(n + 1, 15), at(n + 1, 16))
    org = world.sb.salesforce.org
    # Reads of this run cost a handful of calls; leave room for two writes only.
    org.set_daily_limit(org.api_calls() + 9)
    with pytest.raises(ApiLimitExceeded):
        world.sync()
    run_id, status, error = world.query("SELECT run_id, status, error FROM runs")[0]
    assert status == "failed" and error.startswith("api_limit"), error
    made = sum(_sf_subjects(world, "Limited").values())
    assert 0 < made < N
    org.set_daily_limit(100_000)
    summary = replay(_cfg(world), run_id)
    assert summary["status"] == "succeeded", summary
    assert _sf_subjects(world, "Limited") == {f"Limited {n}": 1 for n in range(N)}


def test_a_newer_run_makes_an_older_one_unreplayable(world):
    world.configure(extra="batch_size = 1")
    world.sb.salesforce.org.add_event(world.ids[ALICE], "Older", at(1, 9), at(1, 10))
    world.sb.faults.add("http_503", count=50, route=world.create_route)
    first = world.sync()
    world.sb.faults.clear()
    world.sync()
    with pytest.raises(NotReplayable, match="started after"):
        replay(_cfg(world), first["run_id"])
