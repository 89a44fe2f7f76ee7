"""The mailbox-connector contract (connectors/mailbox.py), one suite run unchanged against every kind:
the EWS connector against the Exchange sandbox (exchangelib) and the Graph connector against the Graph
sandbox (msal + requests), both fronting the sandbox's one mail organisation.

Each test seeds mailboxes through the sandbox's own API (or changes them as a person would, through the
protocol's client), drives the connector under test through the contract only, and checks what the
mailbox holds afterwards. Kind-specific behaviour (NTLM, impersonation, tokens, scopes) has its own tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pytest

from connectors.errors import RetriableError
from connectors.mailbox import MailboxConnector, MailboxRead
from sandbox import Sandbox
from tests.connectors.mail_builders import by_subject, email_deltas, inv
from transforms.schema import EVENT_SCHEMA, OUTCOME_SCHEMA

UTC = dt.timezone.utc
ANN, BOB, CAL = "ann@example.com", "bob@example.com", "cal@example.com"
CUST = "carol@customer.example"


def u(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


WS, WE = u(2024, 5, 1), u(2024, 7, 1)


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    """One mailbox kind: how to make its connector and how to poke its server."""

    kind: str
    sb: Sandbox

    @property
    def org(self):
        return self.sb.exchange.org  # the one mail organisation behind both protocols

    def add_mailbox(self, email: str, time_zone: str = "UTC") -> None:
        raise NotImplementedError

    def connector(self, **kw) -> MailboxConnector:
        raise NotImplementedError

    def arm_throttle(self, write: bool, count: int, backoff_ms: int) -> None:
        raise NotImplementedError

    def server_calls(self) -> int:
        raise NotImplementedError

    def rename_as_person(self, mailbox: str, item_id: str, subject: str) -> None:
        """Change an item's subject the way Outlook would: through the protocol's own client."""
        raise NotImplementedError

    def item_fetches(self) -> int:
        """Items fetched one by one so far (EWS GetItem requests, Graph GETs of an event)."""
        raise NotImplementedError


class EwsBackend(Backend):
    def add_mailbox(self, email: str, time_zone: str = "UTC") -> None:
        self.org.add_mailbox(email, time_zone=time_zone)

    def connector(self, **kw) -> MailboxConnector:
        from connectors.exchange import ExchangeConnector

        user, password = self.sb.exchange.service_account
        kw.setdefault("max_wait_s", 2)
        return ExchangeConnector(self.sb.exchange.url, user, password, auth_type="ntlm", **kw)

    def arm_throttle(self, write: bool, count: int, backoff_ms: int) -> None:
        self.sb.faults.add("throttle", count=count, route="CreateItem" if write else "FindItem", backoff_ms=backoff_ms)

    def server_calls(self) -> int:
        return self.org.calls()

    def item_fetches(self) -> int:
        return self.org.calls_by_operation.get("GetItem", 0)

    def rename_as_person(self, mailbox: str, item_id: str, subject: str) -> None:
        from exchangelib import BASIC, IMPERSONATION, Account, Configuration, Credentials, Version
        from exchangelib.version import EXCHANGE_2016

        user, password = self.sb.exchange.service_account
        config = Configuration(service_endpoint=self.sb.exchange.url, credentials=Credentials(user, password),
                               auth_type=BASIC, version=Version(build=EXCHANGE_2016))
        account = Account(mailbox, config=config, autodiscover=False, access_type=IMPERSONATION)
        item = account.calendar.get(id=item_id)
        item.subject = subject
        item.save(update_fields=["subject"])


class GraphBackend(Backend):
    def add_mailbox(self, email: str, time_zone: str = "UTC") -> None:
        self.org.add_mailbox(email, time_zone=time_zone, kind="graph")

    def connector(self, **kw) -> MailboxConnector:
        from connectors.graph import GraphConnector

        g = self.sb.graph
        kw.setdefault("max_wait_s", 2)
        return GraphConnector(g.tenant_id, g.client_id, certificate_pem=g.certificate_file.read_text(),
                              authority_host=g.login_url, graph_url=g.graph_url, ca_file=str(g.ca_file),
                              internal_domains=["example.com"], **kw)

    def arm_throttle(self, write: bool, count: int, backoff_ms: int) -> None:
        self.sb.faults.add("throttle", count=count, route="POST /v1.0/users" if write else "/calendarView",
                           backoff_ms=backoff_ms)

    def server_calls(self) -> int:
        return self.sb.graph.calls()

    def item_fetches(self) -> int:
        g = self.sb.graph
        return g.calls_by_operation.get("getEvent", 0) + g.batch_operations.get("getEvent", 0)

    def rename_as_person(self, mailbox: str, item_id: str, subject: str) -> None:
        import msal

        g = self.sb.graph
        session = g.client_session()
        app = msal.ConfidentialClientApplication(g.client_id, authority=g.authority, client_credential=g.client_secret,
                                                 http_client=session, instance_discovery=False)
        token = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
        r = session.patch(f"{g.graph_url}/users/{mailbox}/events/{item_id}", json={"subject": subject},
                          headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text


BACKENDS = {"ews": EwsBackend, "graph": GraphBackend}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with Sandbox(tmp_path_factory.mktemp("contract")) as sb:
        yield sb


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, sandbox) -> Backend:
    sandbox.reset()
    sandbox.clock.set(u(2024, 5, 2, 12))
    b = BACKENDS[request.param](request.param, sandbox)
    b.add_mailbox(ANN, "Europe/Berlin")
    b.add_mailbox(BOB, "America/New_York")
    b.add_mailbox(CAL)
    return b


@pytest.fixture
def conn(backend):
    c = backend.connector(time_zones={ANN: "Europe/Berlin", BOB: "America/New_York"})
    yield c
    c.close()


def read(conn: MailboxConnector, mailbox: str = ANN) -> MailboxRead:
    got = conn.read(mailbox, mailbox, WS, WE)
    assert got.events.schema == pl.Schema(EVENT_SCHEMA)
    return got





def outcomes(frame: pl.DataFrame) -> dict[str, dict]:
    assert frame.schema == pl.Schema(OUTCOME_SCHEMA)
    return {r["delta_id"]: r for r in frame.to_dicts()}


# --------------------------------------------------------------------------- the contract


def test_implements_the_protocol(conn, backend):
    assert isinstance(conn, MailboxConnector) and conn.kind == backend.kind


def test_read_window_edges_all_day_private(conn, backend):
    org = backend.org
    org.add_item(ANN, "ends at window start", u(2024, 4, 30, 23), WS)
    org.add_item(ANN, "starts at window end", WE, u(2024, 7, 1, 1))
    org.add_item(ANN, "crosses start", u(2024, 4, 30, 23), u(2024, 5, 1, 1))
    org.add_item(ANN, "crosses end", u(2024, 6, 30, 23), u(2024, 7, 1, 1))
    # Berlin dates: 30 April is outside (though its UTC span reaches past 1 May 00:00Z), 1-2 May inside.
    org.add_item(ANN, "all-day 30 Apr", dt.date(2024, 4, 30), dt.date(2024, 5, 1), is_all_day=True)
    org.add_item(ANN, "all-day 1-2 May", dt.date(2024, 5, 1), dt.date(2024, 5, 3), is_all_day=True)
    org.add_item(ANN, "secret", u(2024, 5, 6, 9), u(2024, 5, 6, 10), sensitivity="Private", body="hush")
    org.add_item(ANN, "timed", u(2024, 5, 6, 11, 30), u(2024, 5, 6, 12, 15), body="Agenda\n- one\n- two")
    got = read(conn)
    rows = by_subject(got.events)
    assert set(rows) == {"crosses start", "crosses end", "all-day 1-2 May", "secret", "timed"}
    assert got.problems == []
    assert (rows["all-day 1-2 May"]["start"], rows["all-day 1-2 May"]["end"]) == (u(2024, 5, 1), u(2024, 5, 3))
    assert rows["all-day 1-2 May"]["is_all_day"] is True
    assert (rows["timed"]["start"], rows["timed"]["end"]) == (u(2024, 5, 6, 11, 30), u(2024, 5, 6, 12, 15))
    assert rows["timed"]["description"] == "Agenda\n- one\n- two"
    assert rows["secret"]["is_private"] is True and rows["timed"]["is_private"] is False
    for r in rows.values():
        assert (r["side"], r["user_key"], r["mailbox"]) == ("email", ANN, ANN)
        assert r["native_id"] and r["version"] and r["last_modified"] is not None


def test_read_recurring_occurrences_each_an_event(conn, backend):
    series = backend.org.add_item(ANN, "standup", u(2024, 5, 6, 8), u(2024, 5, 6, 8, 15),
                                  recurrence={"pattern": "daily", "occurrences": 5}, required_attendees=[BOB])
    rows = read(conn).events.filter(pl.col("subject") == "standup")
    assert rows.height == 5 and rows["native_id"].n_unique() == 5
    assert series not in rows["native_id"].to_list()  # the series master is not an event (C23)
    assert sorted(rows["start"].to_list()) == [u(2024, 5, 6 + d, 8) for d in range(5)]
    uids = rows.sort("start")["meeting_uid"].to_list()
    master_uid = next(i["uid"] for i in backend.org.items(ANN) if i["subject"] == "standup")
    assert uids == [f"{master_uid}/2024-05-{6 + d:02d}T08:00:00Z" for d in range(5)]


def test_read_attendees_responses_organizer_and_meeting_uid(conn, backend):
    org = backend.org
    mid = org.add_item(ANN, "meeting", u(2024, 5, 7, 9), u(2024, 5, 7, 10), required_attendees=[BOB, "Y@Customer.com"],
                       optional_attendees=[CUST], organizer=ANN)
    org.set_response(ANN, mid, BOB, "Accept")
    org.set_response(ANN, mid, CUST, "Tentative")
    m = by_subject(read(conn).events)["meeting"]
    assert m["organizer_email"] == ANN
    assert {i["email"]: i["response"] for i in m["invitees"]} == {BOB: "accepted", "y@customer.com": "none",
                                                                  CUST: "tentative"}
    uid = next(i["uid"] for i in org.items(ANN) if i["subject"] == "meeting")
    assert m["meeting_uid"] == uid
    # an attendee's copy of someone else's meeting names its organizer and carries the same uid
    org.add_item(BOB, "their meeting", u(2024, 5, 8, 9), u(2024, 5, 8, 10), required_attendees=[BOB],
                 organizer=CAL, uid=uid + "B")
    theirs = by_subject(read(conn, BOB).events)["their meeting"]
    assert theirs["organizer_email"] == CAL and theirs["meeting_uid"] == uid + "B"


def test_confirm_tells_present_from_gone(conn, backend):
    org = backend.org
    away = org.add_item(ANN, "moved away", u(2024, 9, 1, 9), u(2024, 9, 1, 10))
    gone = org.add_item(ANN, "deleted", u(2024, 5, 20, 9), u(2024, 5, 20, 10))
    with org.lock:
        del org.mailboxes[ANN].items[gone]
    got = conn.confirm(ANN, ANN, [away, gone, away])
    assert got.events["native_id"].to_list() == [away] and got.problems == []
    assert conn.confirm(ANN, ANN, []).events.height == 0


def test_create_update_delete_round_trip(conn, backend):
    created = outcomes(conn.apply(email_deltas(
        {"delta_id": "c1", "op": "create", "subject": "New timed", "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10),
         "description": "made by sync"},
        {"delta_id": "c2", "op": "create", "subject": "Holiday", "start": u(2024, 5, 9), "end": u(2024, 5, 11),
         "is_all_day": True},
        {"delta_id": "c3", "op": "create", "subject": "Private", "start": u(2024, 5, 10, 9), "end": u(2024, 5, 10, 10),
         "is_private": True},
    )))
    assert [o["status"] for o in created.values()] == ["applied"] * 3
    rows = by_subject(read(conn).events)
    assert rows["New timed"]["native_id"] == created["c1"]["new_id"]
    assert rows["New timed"]["version"] == created["c1"]["new_version"]
    assert rows["New timed"]["description"] == "made by sync"
    assert (rows["Holiday"]["start"], rows["Holiday"]["end"], rows["Holiday"]["is_all_day"]) == (
        u(2024, 5, 9), u(2024, 5, 11), True)
    raw = {i["subject"]: i for i in backend.org.items(ANN)}
    assert raw["Holiday"]["start"] == "2024-05-08T22:00:00Z"  # midnight in the mailbox's zone (Berlin)
    assert raw["Private"]["sensitivity"] == "Private" and rows["Private"]["is_private"] is True

    target = rows["New timed"]
    updated = outcomes(conn.apply(email_deltas(
        {"delta_id": "u1", "op": "update", "target_id": target["native_id"], "target_version": target["version"],
         "subject": "Renamed", "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 11), "description": "new text"},
    )))["u1"]
    assert updated["status"] == "applied", updated
    after = by_subject(read(conn).events)["Renamed"]
    assert (after["end"], after["description"], after["native_id"]) == (u(2024, 5, 8, 11), "new text", target["native_id"])
    assert after["version"] == updated["new_version"] != target["version"]

    gone = outcomes(conn.apply(email_deltas(
        {"delta_id": "d1", "op": "delete", "target_id": after["native_id"], "target_version": after["version"]},
    )))["d1"]
    assert gone["status"] == "applied"
    assert "Renamed" not in by_subject(read(conn).events)
    assert conn.confirm(ANN, ANN, [after["native_id"]]).events.height == 0
    # deleting what is already gone counts as applied
    again = outcomes(conn.apply(email_deltas({"delta_id": "d2", "op": "delete", "target_id": after["native_id"]})))["d2"]
    assert again["status"] == "applied" and "already_gone" in (again["error"] or "")


def test_an_update_that_changes_nothing_writes_nothing(conn, backend):
    backend.org.add_item(ANN, "Same", u(2024, 5, 8, 9), u(2024, 5, 8, 10), body="text")
    row = by_subject(read(conn).events)["Same"]
    before = next(i for i in backend.org.items(ANN) if i["subject"] == "Same")
    out = outcomes(conn.apply(email_deltas({"delta_id": "u", "op": "update", "target_id": row["native_id"],
                                      "target_version": row["version"], "subject": "Same", "start": row["start"],
                                      "end": row["end"], "description": "text"})))["u"]
    assert out["status"] == "applied"
    after = next(i for i in backend.org.items(ANN) if i["subject"] == "Same")
    assert after["changekey"] == before["changekey"] and after["last_modified"] == before["last_modified"]


def test_a_change_made_since_extract_is_not_overwritten(conn, backend):
    backend.org.add_item(ANN, "Original", u(2024, 5, 8, 9), u(2024, 5, 8, 10))
    row = by_subject(read(conn).events)["Original"]
    backend.sb.clock.advance(dt.timedelta(minutes=1))
    backend.rename_as_person(ANN, row["native_id"], "Edited in Outlook")
    out = outcomes(conn.apply(email_deltas(
        {"delta_id": "u", "op": "update", "target_id": row["native_id"], "target_version": row["version"],
         "subject": "From Salesforce", "start": row["start"], "end": row["end"]},
        {"delta_id": "d", "op": "delete", "target_id": row["native_id"], "target_version": row["version"]},
    )))
    assert out["u"]["status"] == "failed" and out["u"]["error"].startswith("changed_since_extract"), out["u"]
    assert out["d"]["status"] == "failed" and out["d"]["error"].startswith("changed_since_extract"), out["d"]
    assert [i["subject"] for i in backend.org.items(ANN)] == ["Edited in Outlook"]


def test_per_item_errors_stay_on_their_delta(conn, backend):
    keep = backend.org.add_item(ANN, "Keep", u(2024, 5, 8, 9), u(2024, 5, 8, 10))
    gone = backend.org.add_item(ANN, "Gone", u(2024, 5, 9, 9), u(2024, 5, 9, 10))
    with backend.org.lock:
        del backend.org.mailboxes[ANN].items[gone]
    out = outcomes(conn.apply(email_deltas(
        {"delta_id": "bad", "op": "create", "subject": "Backwards", "start": u(2024, 5, 8, 10), "end": u(2024, 5, 8, 9)},
        {"delta_id": "ok", "op": "create", "subject": "Fine", "start": u(2024, 5, 8, 11), "end": u(2024, 5, 8, 12)},
        {"delta_id": "missing", "op": "update", "target_id": gone, "subject": "Nope", "start": u(2024, 5, 9, 9),
         "end": u(2024, 5, 9, 10)},
        {"delta_id": "no_target", "op": "update", "subject": "Nope", "start": u(2024, 5, 9, 9), "end": u(2024, 5, 9, 10)},
        {"delta_id": "pair", "op": "pair", "target_id": keep},
        {"delta_id": "sf", "op": "create", "target_side": "salesforce", "subject": "x", "start": WS, "end": WS},
    )))
    assert list(out) == ["bad", "ok", "missing", "no_target", "pair", "sf"]  # one outcome per delta, in order
    assert {k: v["status"] for k, v in out.items()} == {"bad": "failed", "ok": "applied", "missing": "failed",
                                                         "no_target": "failed", "pair": "applied", "sf": "skipped"}
    assert out["bad"]["error"].startswith("bad_payload: end_before_start")
    assert "NotFound" in out["missing"]["error"] and out["missing"]["retriable"] is False
    assert sorted(i["subject"] for i in backend.org.items(ANN)) == ["Fine", "Keep"]


def test_throttled_requests_wait_and_succeed(conn, backend):
    backend.org.add_item(ANN, "There", u(2024, 5, 8, 9), u(2024, 5, 8, 10))
    backend.arm_throttle(write=False, count=1, backoff_ms=200)
    assert "There" in by_subject(read(conn).events)
    backend.arm_throttle(write=True, count=1, backoff_ms=200)
    out = outcomes(conn.apply(email_deltas({"delta_id": "c", "op": "create", "subject": "After a wait",
                                      "start": u(2024, 5, 9, 9), "end": u(2024, 5, 9, 10)})))
    assert out["c"]["status"] == "applied"
    assert "After a wait" in by_subject(read(conn).events)


def test_throttling_past_max_wait_is_retriable_and_loses_nothing(conn, backend):
    backend.arm_throttle(write=True, count=100, backoff_ms=900)  # 0.9 s a time, max_wait_s=2
    out = outcomes(conn.apply(email_deltas(
        *({"delta_id": f"c{i}", "op": "create", "subject": f"Throttled {i}", "start": u(2024, 5, 9, 9 + i),
           "end": u(2024, 5, 9, 10 + i)} for i in range(3)))))
    assert [o["status"] for o in out.values()] == ["failed"] * 3
    assert all(o["retriable"] for o in out.values()), out
    backend.sb.faults.clear()
    backend.arm_throttle(write=False, count=100, backoff_ms=900)
    with pytest.raises(RetriableError, match=ANN):
        read(conn)


def test_invitations_reach_mailboxes_of_the_organisation_only_unless_opted_in(conn, backend):
    meeting = {"op": "create", "subject": "Kickoff", "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10),
               "invitees": [inv(BOB, "user"), inv(CUST), inv(CAL, "none")]}
    out = outcomes(conn.apply(email_deltas({"delta_id": "c1", **meeting}), internal={CAL}))
    assert out["c1"]["status"] == "applied"
    org = backend.org
    assert sorted((i["recipient"], i["kind"]) for i in org.invitations()) == [(BOB, "request"), (CAL, "request")]
    assert [i["subject"] for i in org.items(BOB)] == ["Kickoff"]  # on the colleague's calendar, same uid
    assert org.items(BOB)[0]["uid"] == org.items(ANN)[0]["uid"]
    # the customer is not mailed, but counts as an invitee when the meeting is read back
    copy = by_subject(read(conn).events)["Kickoff"]
    assert sorted(i["email"] for i in copy["invitees"]) == [BOB, CAL, CUST]
    assert by_subject(read(conn, BOB).events)["Kickoff"]["meeting_uid"] == copy["meeting_uid"]

    out = outcomes(conn.apply(email_deltas({"delta_id": "c2", **meeting, "subject": "Opted in",
                                      "start": u(2024, 5, 9, 9), "end": u(2024, 5, 9, 10)}), send_external={ANN}))
    assert out["c2"]["status"] == "applied"
    assert sorted(i["recipient"] for i in org.invitations() if i["subject"] == "Opted in") == [BOB, CAL, CUST]


def test_private_events_are_sent_to_nobody(conn, backend):
    out = outcomes(conn.apply(email_deltas({"delta_id": "p", "op": "create", "subject": "Private", "is_private": True,
                                      "start": u(2024, 5, 8, 9), "end": u(2024, 5, 8, 10)})))
    assert out["p"]["status"] == "applied" and backend.org.invitations() == []


def test_find_by_key(conn, backend):
    backend.org.add_item(ANN, "  Quarterly   review ", u(2024, 5, 8, 9), u(2024, 5, 8, 10))
    backend.org.add_item(ANN, "Quarterly review", u(2024, 5, 8, 9), u(2024, 5, 8, 11))
    found = conn.find_by_key(ANN, "Quarterly review", u(2024, 5, 8, 9), u(2024, 5, 8, 10), False)
    assert len(found) == 1
    assert by_subject(conn.confirm(ANN, ANN, found).events)["  Quarterly   review "]["end"] == u(2024, 5, 8, 10)
    assert conn.find_by_key(ANN, "Quarterly review", u(2024, 5, 8, 9), u(2024, 5, 8, 10), True) == []


def test_api_calls_are_the_requests_the_server_answered(conn, backend):
    backend.org.add_item(ANN, "One", u(2024, 5, 8, 9), u(2024, 5, 8, 10))
    before, mine = backend.server_calls(), conn.api_calls
    read(conn)
    conn.apply(email_deltas({"delta_id": "c", "op": "create", "subject": "Two", "start": u(2024, 5, 9, 9),
                       "end": u(2024, 5, 9, 10)}))
    assert conn.api_calls - mine == backend.server_calls() - before > 0


def test_an_incremental_read_fetches_only_what_changed(conn, backend):
    org = backend.org
    ids = {n: org.add_item(ANN, n, u(2024, 5, 6 + i, 9), u(2024, 5, 6 + i, 10))
           for i, n in enumerate(["Same", "Renamed", "Touched", "Deleted", "Away"])}
    full = read(conn).events
    known = dict(zip(full["native_id"].to_list(), full["version"].to_list()))
    fetched = backend.item_fetches()
    quiet = conn.read(ANN, ANN, WS, WE, known=known)
    assert quiet.events.height == 0 and sorted(quiet.unchanged) == sorted(known)
    assert backend.item_fetches() == fetched  # nothing changed: nothing fetched

    backend.sb.clock.advance(dt.timedelta(minutes=1))
    renamed = full.filter(pl.col("subject") == "Renamed")["native_id"][0]
    backend.rename_as_person(ANN, renamed, "Renamed (edited)")
    with org.lock:
        org.touch(org.mailboxes[ANN].items[ids["Touched"]])  # opened: the change key moves, the content not
        del org.mailboxes[ANN].items[ids["Deleted"]]
        org.mailboxes[ANN].items[ids["Away"]].start = u(2024, 9, 1, 9)
        org.mailboxes[ANN].items[ids["Away"]].end = u(2024, 9, 1, 10)
    org.add_item(ANN, "New", u(2024, 5, 20, 9), u(2024, 5, 20, 10))
    got = conn.read(ANN, ANN, WS, WE, known=known)
    assert sorted(got.events["subject"].to_list()) == ["New", "Renamed (edited)", "Touched"]
    same = full.filter(pl.col("subject") == "Same")["native_id"][0]
    assert got.unchanged == [same]  # the deleted and the moved-away are in neither


def test_an_incremental_read_refetches_an_edited_occurrence(conn, backend):
    org = backend.org
    org.add_item(ANN, "standup", u(2024, 5, 6, 8), u(2024, 5, 6, 8, 15), recurrence={"pattern": "daily", "occurrences": 4})
    full = read(conn).events.sort("start")
    known = dict(zip(full["native_id"].to_list(), full["version"].to_list()))
    third = full["native_id"][2]
    backend.sb.clock.advance(dt.timedelta(minutes=1))
    backend.rename_as_person(ANN, third, "standup (moved to the lab)")
    got = conn.read(ANN, ANN, WS, WE, known=known)
    assert "standup (moved to the lab)" in got.events["subject"].to_list()
    assert third not in got.unchanged
    assert set(got.unchanged) | set(got.events["native_id"].to_list()) == set(known)
