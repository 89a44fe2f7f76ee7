"""Salesforce connector: the calls a write costs, counted by the sandbox (``GET /_sandbox/calls``).

The ideal is the end-to-end benchmark's (issue 12): per sObject and kind of write ``ceil(records / 200)``
sObject Collections calls, per sObject read ``max(1, ceil(rows / 2000))`` SOQL pages. EventRelations are
packed across Event batches, and each relation write's outcome stays tied to its own delta.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
import requests

from connectors.errors import ApiLimitExceeded
from connectors.salesforce import SalesforceConnector
from sandbox.clock import Clock
from sandbox.faults import Faults
from sandbox.salesforce import SalesforceSandbox
from transforms.schema import DELTA_SCHEMA

UTC = timezone.utc
T0 = datetime(2025, 3, 3, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def sandbox_server(tmp_path_factory):
    with SalesforceSandbox(Clock(), Faults(), tmp_path_factory.mktemp("sf-counts")) as server:
        yield server


@pytest.fixture
def sb(sandbox_server):
    sandbox_server.faults.clear()
    sandbox_server.org.reset()
    return sandbox_server


def connect(sb) -> SalesforceConnector:
    return SalesforceConnector.from_session(sb.instance_url, sb.session_id, session=sb.client_session(), timeout=30)


def control_counts(sb) -> dict:
    s = requests.Session()
    s.trust_env, s.verify = False, str(sb.ca_file)
    return s.get(f"{sb.instance_url}/_sandbox/calls", timeout=10).json()


def ideal(counts: dict) -> int:
    pages = sum(max(1, math.ceil(q["rows"] / 2000)) for q in counts["queries"].values() if q["queries"])
    return pages + sum(math.ceil(n / 200) for n in counts["records_written"].values())


def slot(i: int) -> tuple[datetime, datetime]:
    start = T0 + timedelta(minutes=30 * i)
    return start, start + timedelta(minutes=30)


def inv(rid: str, response: str = "none") -> dict:
    return {"email": f"{rid.lower()}@x.com", "response": response, "record_id": rid, "record_type": "contact"}


def frame(rows: list[dict]) -> pl.DataFrame:
    base = {"user_key": "ann@example.com", "target_side": "salesforce", "reason": "test", "is_all_day": False,
            "description": "", "is_private": False}
    return pl.DataFrame([{**base, "delta_id": f"d{i:04d}", **r} for i, r in enumerate(rows)], schema=DELTA_SCHEMA)


def creates(owner: str, contacts: list[str], n: int, first_slot: int = 0) -> list[dict]:
    """``n`` creates, the i-th with 1 + i % 3 Contact invitees."""
    rows = []
    for i in range(n):
        start, end = slot(first_slot + i)
        invitees = [inv(contacts[(i + k) % len(contacts)]) for k in range(1 + i % 3)]
        rows.append({"op": "create", "owner_id": owner, "subject": f"New {i}", "start": start, "end": end,
                     "invitees": invitees})
    return rows


def test_a_multi_batch_write_with_invitees_costs_the_ideal_calls_and_each_delta_keeps_its_outcome(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    contacts = [org.add_contact(f"c{i:03d}@x.com", f"C{i}") for i in range(400)]
    gone = org.add_contact("gone@x.com", "Gone")
    org.delete("Contact", gone, org.api_user_id)
    # 250 events to update, each inviting two contacts: one to drop, one to accept; a third gets added
    existing = []
    for i in range(250):
        start, end = slot(1000 + i)
        existing.append(org.add_event(ann, f"Old {i}", start, end, invitee_ids=[contacts[i], contacts[i + 1]]))
    doomed = [org.add_event(ann, f"Doomed {i}", *slot(2000 + i)) for i in range(210)]

    rows = [{"op": "delete", "target_id": e} for e in doomed]
    for i, event in enumerate(existing):
        start, end = slot(1000 + i)
        rows.append({"op": "update", "target_id": event, "subject": f"Old {i}", "start": start, "end": end,
                     "invitees": [inv(contacts[i + 1], "accepted"), inv(contacts[i + 2])]})
    new = creates(ann, contacts, 450)
    new[301]["invitees"] = [inv(contacts[7]), inv(gone)]  # one relation of one delta, mid-collection, fails
    rows += new

    sf = connect(sb)
    info = sf.org_info()
    sb.reset_counts()
    out = sf.apply(frame(rows), info)

    counts = control_counts(sb)
    assert counts["records_written"] == {
        "delete Event": 210, "update Event": 250, "create Event": 450,
        "delete EventRelation": 250, "update EventRelation": 250, "create EventRelation": 250 + 900,
    }
    assert counts["queries"] == {"EventRelation": {"queries": 1, "pages": 1, "rows": 500}}
    assert counts["calls_by_operation"] == {"collection delete": 2 + 2, "collection update": 2 + 2,
                                            "collection create": 3 + 6, "query": 1}
    assert counts["calls"] == ideal(counts) == 18

    result = {r["delta_id"]: r for r in out.iter_rows(named=True)}
    assert out["status"].unique().to_list() == ["applied"]
    bad = f"d{210 + 250 + 301:04d}"
    assert result[bad]["error"].startswith("relations: "), result[bad]["error"]
    assert "ENTITY_IS_DELETED" in result[bad]["error"] or "INVALID_CROSS_REFERENCE_KEY" in result[bad]["error"]
    assert [d for d, r in result.items() if r["error"]] == [bad]
    assert not out["retriable"].any()

    for i in (0, 199, 200, 249):  # both update batches: one dropped, one accepted, one added
        rels = {r["RelationId"]: r["Status"] for r in org.relations(existing[i]) if r["IsInvitee"]}
        assert rels == {contacts[i + 1]: "Accepted", contacts[i + 2]: "New"}
    for k in (0, 1, 2, 200, 449):
        want = {i["record_id"] for i in new[k]["invitees"]} - {gone}
        got = {r["RelationId"] for r in org.relations(result[f"d{460 + k:04d}"]["new_id"])}
        assert got == want
    assert {r["RelationId"] for r in org.relations(result[bad]["new_id"])} == {contacts[7]}


def test_a_stop_among_the_relation_writes_notes_only_the_deltas_whose_relations_were_not_all_written(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    contacts = [org.add_contact(f"c{i:03d}@x.com", f"C{i}") for i in range(50)]
    rows = creates(ann, contacts, 450)  # 900 relations: 3 Event calls, then 5 relation calls
    sf = connect(sb)
    info = sf.org_info()
    sb.faults.add("http_503", route="composite/sobjects", after=3 + 2)  # the third relation call
    out = sf.apply(frame(rows), info)

    assert out["status"].unique().to_list() == ["applied"]
    assert not out["retriable"].any()
    # relation records in write order: delta i holds 1 + i % 3 of them; the first 400 were written
    first_record, done_through = {}, 0
    for i, r in enumerate(rows):
        first_record[i] = done_through
        done_through += len(r["invitees"])
    errors = out["error"].to_list()
    for i, r in enumerate(rows):
        last = first_record[i] + len(r["invitees"]) - 1
        if last < 400:
            assert errors[i] is None, (i, errors[i])
            assert len(org.relations(out["new_id"][i])) == len(r["invitees"])
        else:
            assert errors[i].startswith("relations: not all written (Salesforce is unavailable"), (i, errors[i])
            assert "the next run sees the difference" in errors[i]


def test_the_daily_limit_among_the_event_batches_notes_the_written_events_relations_as_not_written(sb):
    org = sb.org
    ann = org.add_user("ann@example.com")
    contacts = [org.add_contact(f"c{i:03d}@x.com", f"C{i}") for i in range(20)]
    rows = creates(ann, contacts, 300)
    rows[5]["invitees"] = []  # nothing to relate: no note
    sf = connect(sb)
    info = sf.org_info()
    org.set_daily_limit(org.api_calls() + 1)  # the first Event batch only
    with pytest.raises(ApiLimitExceeded) as caught:
        sf.apply(frame(rows), info)
    out = caught.value.outcomes
    assert out["status"].value_counts().sort("status").rows() == [("applied", 200), ("failed", 100)]
    applied = out.filter(pl.col("status") == "applied")
    notes = applied["error"].to_list()
    assert notes[5] is None
    assert all(n.startswith("relations: not written (Salesforce's daily API request limit is used up")
               for i, n in enumerate(notes) if i != 5)
    assert out.filter(pl.col("status") == "failed")["retriable"].all()


# --- reads -----------------------------------------------------------------------------------------


def test_in_lists_are_packed_to_the_uri_budget_exactly():
    from urllib.parse import quote_plus

    from simple_salesforce.format import format_soql

    from connectors.salesforce_records import QUERY_BUDGET, packed

    template = "SELECT Id, Email FROM Contact WHERE Email IN {emails}"
    emails = [f"first.last{i}@customer{i % 7}.com" for i in range(2000)] + ["o'brien@x.com"]
    parts = list(packed(emails, lambda p: format_soql(template, emails=p)))
    assert [e for p in parts for e in p] == emails
    for i, part in enumerate(parts):
        size = len(quote_plus(format_soql(template, emails=part)))
        assert size <= QUERY_BUDGET
        if i + 1 < len(parts):  # full: one more value would not fit
            assert len(quote_plus(format_soql(template, emails=part + parts[i + 1][:1]))) > QUERY_BUDGET
    assert len(parts) < 2001 / 200  # fewer queries than 200 emails apiece


def test_reads_of_many_users_fit_salesforces_uri_limit_and_the_directory_does_not_ask_again_for_the_users(sb):
    org = sb.org
    users = {f"synced.user.number.{i:04d}@example-corporation.com": None for i in range(700)}
    for email in users:
        users[email] = org.add_user(email)
    for i, email in enumerate(users):
        org.add_event(users[email], f"E{i}", *slot(i % 300))
    invitees = [f"a.customer.contact.{i:04d}@customer-{i % 9}.example.com" for i in range(900)]
    for email in invitees[::3]:
        org.add_contact(email, "Customer")
    sf = connect(sb)
    info = sf.org_info()
    sb.reset_counts()

    ids = sf.user_ids(list(users))
    assert ids == users
    events = sf.extract({e: i for e, i in ids.items()}, T0 - timedelta(days=1), T0 + timedelta(days=30))
    assert events.height == 700
    found = sf.directory(invitees + list(users))
    assert found.filter(pl.col("record_type") == "contact").height == 300
    assert found.filter(pl.col("record_type") == "user").height == 700

    counts = control_counts(sb)  # every query answered: none over the 16,384-byte limit (414/431)
    assert counts["queries"]["User"]["rows"] == 700  # the directory took the synced users from user_ids
    from simple_salesforce.format import format_soql

    from connectors.salesforce import USERS_SOQL
    from connectors.salesforce_records import packed, window_soql

    def packs(values, template=USERS_SOQL):
        return len(list(packed(sorted(values), lambda p: format_soql(template, emails=p))))

    user_template = "SELECT Id, Email FROM User WHERE Email IN {emails} AND IsActive = true"
    assert counts["queries"]["User"]["queries"] == packs(users) + packs(invitees, user_template)
    window = lambda p: window_soql(p, T0 - timedelta(days=1), T0 + timedelta(days=30), info)  # noqa: E731
    assert counts["queries"]["Event"]["queries"] == len(list(packed(sorted(users.values()), window))) == 2
    assert counts["queries"]["Contact"]["queries"] < (900 + 700) / 200
