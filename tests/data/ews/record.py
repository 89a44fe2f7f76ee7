"""Record the EWS replies that tests/connectors/test_ews_soap.py parses both ways (lxml and exchangelib's objects).

    .venv/bin/python tests/data/ews/record.py      # rewrites tests/data/ews/*.xml

The replies are the EWS sandbox's (``sandbox/exchange``), answering what ``connectors.exchange`` sends: a calendar
view (FindItem) and GetItem of its items plus an id that is gone (a per-item error), for one mailbox holding a timed
meeting with attendees who answered, an all-day item in Europe/Berlin, a private item, a recurring series with an
edited occurrence, a meeting organised by another mailbox, bodies with characters XML cannot carry, markup and CRLF,
an HTML body, and an all-day item in a time zone no one can map. ``world()`` builds that mailbox; the test builds it
again to compare live reads.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

UTC = dt.timezone.utc
ANN, BOB, CAL, CUST = "ann@example.com", "bob@example.com", "cal@example.com", "x@customer.com"
WINDOW = (dt.datetime(2024, 5, 1, tzinfo=UTC), dt.datetime(2024, 7, 1, tzinfo=UTC))
NOW = dt.datetime(2024, 5, 2, 12, tzinfo=UTC)


def u(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def world(org) -> dict[str, str]:
    """The recorded mailbox's items (subject -> id) in the sandbox ``org`` (empty before)."""
    org.add_mailbox(ANN, time_zone="Europe/Berlin")
    org.add_mailbox(BOB)
    org.add_mailbox(CAL)
    ids = {}
    ids["Review"] = org.add_item(ANN, "Review", u(2024, 5, 7, 9), u(2024, 5, 7, 10), body="Agenda\r\nline two\r\n",
                                 required_attendees=[BOB, "Y@Customer.com"], optional_attendees=[CUST, CAL])
    org.set_response(ANN, ids["Review"], BOB, "Accept")
    org.set_response(ANN, ids["Review"], CUST, "Tentative")
    org.set_response(ANN, ids["Review"], CAL, "Decline")
    ids["Trade fair"] = org.add_item(ANN, "Trade fair", dt.date(2024, 5, 10), dt.date(2024, 5, 12), is_all_day=True)
    ids["secret"] = org.add_item(ANN, "secret", u(2024, 5, 6, 9), u(2024, 5, 6, 10), sensitivity="Private",
                                 body="hush", required_attendees=[BOB])
    ids["Confidential"] = org.add_item(ANN, "Confidential", u(2024, 5, 6, 11), u(2024, 5, 6, 12),
                                       sensitivity="Confidential")
    ids["standup"] = org.add_item(ANN, "standup", u(2024, 5, 13, 8), u(2024, 5, 13, 8, 15),
                                  recurrence={"pattern": "daily", "occurrences": 4}, required_attendees=[BOB])
    with org.lock:
        master = org.mailboxes[ANN].items[ids["standup"]]
        moved = u(2024, 5, 14, 8)
        master.modified_occurrences[moved] = {"subject": "standup (lab)", "start": u(2024, 5, 14, 15),
                                              "end": u(2024, 5, 14, 15, 30)}
        org.touch(master)
    ids["Bob's call"] = org.add_item(ANN, "Bob's call", u(2024, 5, 8, 13), u(2024, 5, 8, 14), organizer=BOB,
                                     required_attendees=[ANN, CUST], my_response="Accept")
    ids["odd"] = org.add_item(ANN, "Budget\x0b2027\x00 R&D <review> \u00e9\u4e2d\U0001f600", u(2024, 5, 9, 9),
                              u(2024, 5, 9, 10), body='totals\x01\x1fdue & "Q&A" <b>bold</b> \r\n\r\n  ')
    ids["html"] = org.add_item(ANN, "html body", u(2024, 5, 9, 11), u(2024, 5, 9, 12), body="<p>Hello<br>there</p>")
    with org.lock:
        org.mailboxes[ANN].items[ids["html"]].body_type = "HTML"
    ids["empty"] = org.add_item(ANN, "", u(2024, 5, 9, 13), u(2024, 5, 9, 14))
    ids["Mars"] = org.add_item(ANN, "odd zone", dt.date(2024, 5, 20), dt.date(2024, 5, 21), is_all_day=True,
                               time_zone="Mars Standard Time")
    ids["crosses"] = org.add_item(ANN, "crosses start", u(2024, 4, 30, 23), u(2024, 5, 1, 1))
    return ids


def record() -> None:
    import warnings

    from connectors.exchange import CallCounter, ExchangeConnector
    from sandbox.clock import Clock
    from sandbox.exchange import ExchangeSandbox
    from sandbox.faults import Faults

    replies: list[tuple[str, bytes]] = []
    counted = CallCounter.__call__

    def keep(self, response, *args, **kwargs):
        counted(self, response, *args, **kwargs)
        body = response.request.body
        operation = (body.decode() if isinstance(body, bytes) else body).split("<s:Body><m:", 1)[1].split(">", 1)[0]
        replies.append((operation.split(" ")[0], response.content))

    clock = Clock()
    clock.set(NOW)
    with ExchangeSandbox(clock, Faults()) as ex:
        world(ex.org)
        user, password = ex.service_account
        CallCounter.__call__ = keep
        try:
            with ExchangeConnector(ex.url, user, password, time_zones={ANN: "Europe/Berlin"}) as conn, \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = conn.read(ANN, ANN, *WINDOW)
                ids = got.events["native_id"].to_list() + [p[1] for p in got.problems if p[1]]
                missing = ex.org.new_item_id(ANN)  # an id of this mailbox that names no item: a per-item error
                conn._get(conn.account(ANN), [(i, None) for i in ids] + [(missing, None)])
        finally:
            CallCounter.__call__ = counted
    names = {"FindItem": "find_item_view.xml", "GetItem": "get_item_read.xml"}
    done = set()
    for operation, content in replies:
        if operation in names:
            name = names[operation]
            if operation == "GetItem" and operation in done:
                name = "get_item_by_id.xml"
            (HERE / name).write_bytes(content)
            done.add(operation)
            print(f"wrote {name} ({len(content)} bytes)")


if __name__ == "__main__":
    record()
