"""runs.ews_api_calls: the EWS requests of a run, counted by the Exchange connector, next to sf_api_calls.

The sandbox counts every authenticated EWS request it answers (the 401 legs of an NTLM handshake are
not calls; the test config logs on with NTLM), which is what the connector counts: nothing else talks
to it during a sync, so the two counts must agree exactly.
"""

from __future__ import annotations

import pytest

from connectors.errors import FatalError
from flows.history import history_frames
from tests.flows.conftest import at, user_block

ALICE, BOB = "alice@example.com", "bob@example.com"


def _sync(world) -> tuple[dict, int, int]:
    """Sync once; check the run row against the sandbox's own count and return
    (summary, EWS requests of the run, CreateItem requests among them)."""
    org = world.sb.exchange.org
    calls, creates = org.calls(), org.calls_by_operation.get("CreateItem", 0)
    summary = world.sync()
    spent = org.calls() - calls
    with world.store() as store:
        row = store.run(summary["run_id"])
    assert row["ews_api_calls"] == spent > 0, (row, spent)
    assert row["sf_api_calls"] > 0
    return summary, spent, org.calls_by_operation.get("CreateItem", 0) - creates


def _add_sf_events(world, subject: str, n: int) -> None:
    for i in range(n):
        world.sb.salesforce.org.add_event(world.ids[ALICE], f"{subject} {i}", at(i + 1, 9), at(i + 1, 10))


def test_finished_runs_record_their_ews_requests_and_writes_cost_more(world):
    world.configure(extra="batch_size = 1")  # one CreateItem request per email item written
    _add_sf_events(world, "First", 2)
    world.sb.exchange.org.add_item(BOB, "Mail side", at(2, 9), at(2, 10))
    runs = [_sync(world)]
    assert runs[0][0]["status"] == "succeeded" and runs[0][2] == 2

    # Every count below is taken against a run with nothing to write over the same mailbox contents, so
    # the difference is what the writes cost: N email items written, at least N more requests.
    # GetItem requests are left out of the difference: an incremental read fetches again, once, what the run
    # before it wrote, which the baseline run does and the write run does not.
    extra = {}
    gets = lambda: world.sb.exchange.org.calls_by_operation.get("GetItem", 0)  # noqa: E731 - a one-line probe
    for subject, n in (("Few", 2), ("Many", 5)):
        g0 = gets()
        steady, baseline, creates = _sync(world)
        g1 = gets()
        assert steady["totals"]["deltas"] == 0 and creates == 0
        _add_sf_events(world, subject, n)
        summary, spent, creates = _sync(world)
        assert len(summary["users"][ALICE]["created"]["email"]) == n == creates
        extra[n] = (spent - (gets() - g1)) - (baseline - (g1 - g0))
        assert extra[n] >= n
        runs += [(steady, baseline, 0), (summary, spent, creates)]
    assert extra[5] > extra[2]

    # One mailbox fewer to read (same contents) costs fewer requests.
    _, both, _ = _sync(world)
    world.configure(user_block(ALICE), extra="batch_size = 1")
    summary, alice_only, _ = _sync(world)
    assert summary["totals"]["deltas"] == 0 and 0 < alice_only < both
    runs += [(None, both, 0), (summary, alice_only, 0)]

    with world.store() as store:
        shown = store.con.execute("SELECT sf_api_calls, ews_api_calls FROM v_api_calls ORDER BY started_at").fetchall()
        history = history_frames(store)["runs"]
    assert [r[1] for r in shown] == [spent for _, spent, _ in runs]
    assert all(r[0] and r[0] > 0 for r in shown)
    assert history.columns[history.columns.index("sf_api_calls") + 1] == "ews_api_calls"
    assert sorted(history["ews_api_calls"].to_list()) == sorted(spent for _, spent, _ in runs)


def test_a_failed_run_records_the_calls_it_made_on_both_sides(world):
    world.configure()
    org = world.sb.exchange.org
    org.revoke_impersonation(world.sb.exchange.service_account[0])  # no mailbox can be read: fatal
    before = org.calls()
    with pytest.raises(FatalError, match="ApplicationImpersonation"):
        world.sync()
    spent = org.calls() - before
    (run_id,) = world.query("SELECT run_id FROM runs")[0]
    with world.store() as store:
        row = store.run(run_id)
    assert (row["status"], row["failed_stage"]) == ("failed", "extract")
    assert row["ews_api_calls"] == spent >= 2  # one refused request per mailbox at least
    assert row["sf_api_calls"] > 0  # the Salesforce reads before the mailboxes
