"""One ExchangeConnector used from several threads at once, each thread on its own mailbox (issue 12): every read,
confirm and apply gives what it gives alone, nothing leaks between mailboxes, the session pool is respected and
every request is counted."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pytest

from connectors.exchange import ExchangeConnector
from sandbox.clock import Clock
from sandbox.exchange import ExchangeSandbox
from sandbox.faults import Faults
from tests.connectors.mail_builders import email_deltas

UTC = dt.timezone.utc
WS, WE = dt.datetime(2024, 5, 1, tzinfo=UTC), dt.datetime(2024, 7, 1, tzinfo=UTC)
MAILBOXES = [f"user{i}@example.com" for i in range(6)]
ZONES = {m: ("Europe/Berlin", "America/New_York", "UTC")[i % 3] for i, m in enumerate(MAILBOXES)}


def u(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def ex():
    clock = Clock()
    clock.set(u(2024, 5, 2, 12))
    with ExchangeSandbox(clock, Faults()) as server:
        yield server


@pytest.fixture
def org(ex):
    ex.org.reset()
    ex.faults.clear()
    for i, mailbox in enumerate(MAILBOXES):
        ex.org.add_mailbox(mailbox, time_zone=ZONES[mailbox])
        for k in range(25):
            day = 3 + k % 20
            if k % 7 == 0:
                ex.org.add_item(mailbox, f"{mailbox} all-day {k}", dt.date(2024, 5, day), dt.date(2024, 5, day + 1),
                                is_all_day=True)
            else:
                ex.org.add_item(mailbox, f"{mailbox} meeting {k}", u(2024, 5, day, 8 + k % 9), u(2024, 5, day, 9 + k % 9),
                                body=f"body {k} of {i}", required_attendees=[MAILBOXES[(i + 1) % 6], "x@customer.com"])
    return ex.org


@pytest.fixture
def conn(ex, org):
    user, password = ex.service_account
    c = ExchangeConnector(ex.url, user, password, auth_type="ntlm", max_wait_s=5, time_zones=ZONES, page_size=10,
                          batch_size=7, max_connections=3)
    yield c
    c.close()


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("native_id")


def test_concurrent_reads_of_different_mailboxes_equal_sequential_reads(conn, ex, org):
    alone = {m: conn.read(m, m, WS, WE) for m in MAILBOXES}
    known = {m: dict(zip(r.events["native_id"], r.events["version"])) for m, r in alone.items()}
    calls_before = ex.org.calls()

    def work(mailbox: str):
        full = conn.read(mailbox, mailbox, WS, WE)
        quiet = conn.read(mailbox, mailbox, WS, WE, known=known[mailbox])
        some = list(known[mailbox])[:3]
        confirmed = conn.confirm(mailbox, mailbox, some + ["no-such-id"])
        return full, quiet, confirmed, some

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = dict(zip(MAILBOXES, pool.map(work, MAILBOXES * 1)))
    for mailbox, (full, quiet, confirmed, some) in results.items():
        assert full.events.height == 25 and full.problems == []
        assert _sorted(full.events).equals(_sorted(alone[mailbox].events))
        assert set(full.events["mailbox"]) == {mailbox} and set(full.events["user_key"]) == {mailbox}
        assert quiet.events.height == 0 and sorted(quiet.unchanged) == sorted(known[mailbox])
        assert sorted(confirmed.events["native_id"]) == sorted(some)
    assert conn.api_calls == ex.org.calls() > calls_before
    protocol = conn.account(MAILBOXES[0]).protocol
    assert 1 < protocol._session_pool_size <= 3  # requests went in parallel, never on more sessions than allowed


def test_concurrent_writes_land_in_their_own_mailbox_only(conn, ex, org):
    before = {m: conn.read(m, m, WS, WE) for m in MAILBOXES}

    def write(mailbox: str):
        first = before[mailbox].events.sort("start").to_dicts()[1]
        return conn.apply(email_deltas(
            *({"delta_id": f"{mailbox}-c{k}", "op": "create", "subject": f"new {k} for {mailbox}",
               "start": u(2024, 6, 3 + k, 9), "end": u(2024, 6, 3 + k, 10)} for k in range(9)),
            {"delta_id": f"{mailbox}-u", "op": "update", "target_id": first["native_id"],
             "target_version": first["version"], "subject": f"renamed in {mailbox}", "start": first["start"],
             "end": first["end"], "is_all_day": first["is_all_day"], "description": first["description"],
             "invitees": None},
            mailbox=mailbox))

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = dict(zip(MAILBOXES, pool.map(write, MAILBOXES)))
    for mailbox, out in outcomes.items():
        assert out["status"].to_list() == ["applied"] * 10, out["error"].to_list()
        after = conn.read(mailbox, mailbox, WS, WE).events
        subjects = set(after["subject"])
        assert {f"new {k} for {mailbox}" for k in range(9)} <= subjects
        assert f"renamed in {mailbox}" in subjects
        assert not any(s.startswith("new ") and not s.endswith(mailbox) for s in subjects)
        # besides its own: the copy of a neighbour's renamed meeting it attends (internal attendees get updates)
        foreign = [s for s in after["subject"] if not s.startswith(("new ", mailbox, f"renamed in {mailbox}"))]
        assert all(s.startswith("renamed in ") for s in foreign) and after.height == 25 + 9 + len(foreign)
    assert conn.api_calls == ex.org.calls()


def test_a_throttled_mailbox_waits_while_the_others_go_on(conn, ex, org):
    ex.faults.add("throttle", count=2, route="FindItem", backoff_ms=200)
    with ThreadPoolExecutor(max_workers=6) as pool:
        reads = list(pool.map(lambda m: conn.read(m, m, WS, WE), MAILBOXES))
    assert [r.events.height for r in reads] == [25] * 6
    assert ex.org.calls_by_operation["FindItem"] >= 6 * 3 + 2  # 3 pages per mailbox, plus the 2 throttled attempts


def test_throttling_while_every_session_is_busy_does_not_deadlock_the_pool(conn):
    # exchangelib's own decrease_poolsize (called on ErrorServerBusy) took a session under the pool lock; with none
    # idle and the pool below its maximum it grew the pool under the same lock and hung every thread for good.
    import threading

    protocol = conn.account(MAILBOXES[0]).protocol
    busy = [protocol.get_session(), protocol.get_session()]  # two of three sessions, both in use: none idle
    assert protocol.session_pool_size == 2
    done = threading.Event()
    worker = threading.Thread(target=lambda: (protocol.decrease_poolsize(), done.set()), daemon=True)
    worker.start()
    worker.join(5)
    assert done.is_set(), "decrease_poolsize hung"
    for session in busy:
        protocol.release_session(session)
    protocol.decrease_poolsize()  # an idle one now: retired
    assert protocol.session_pool_size == 1
