"""``POST /_sandbox/items/edit``: the mailbox's owner edits an item (the benchmark's "steady" run uses it): the
fields change, the change key moves, nothing is sent. EWS takes the EWS id, Graph the Graph (REST) form."""

from __future__ import annotations

from datetime import datetime, timezone

import requests

from sandbox import Sandbox
from sandbox.graph.events import rest_id

UTC = timezone.utc


def test_an_edit_moves_the_change_key_and_sends_nothing(tmp_path):
    with Sandbox(tmp_path) as sb:
        sb.org.add_mailbox("carol@example.com")
        sb.org.add_mailbox("ann@example.com", kind="graph")
        start = datetime(2026, 12, 3, 10, tzinfo=UTC)
        ews_item = sb.org.add_item("carol@example.com", "Plan", start, start.replace(hour=11),
                                   required_attendees=["x@customer.example"])
        graph_item = sb.org.add_item("ann@example.com", "Lunch", start, start.replace(hour=11))
        before = {i: sb.org.find_item(i).changekey for i in (ews_item, graph_item)}

        r = requests.post(sb.exchange.control_url + "/items/edit", timeout=10,
                          json={"item": ews_item, "subject": "Plan (moved)", "body": "new agenda"})
        assert r.status_code == 200 and r.json()["changekey"] != before[ews_item]
        s = sb.graph.client_session()
        r = s.post(sb.graph.control_url + "/items/edit", json={"item": rest_id(graph_item), "subject": "Lunch!"},
                   timeout=10)
        assert r.status_code == 200

        ews, graph = sb.org.find_item(ews_item), sb.org.find_item(graph_item)
        assert (ews.subject, ews.body, graph.subject) == ("Plan (moved)", "new agenda", "Lunch!")
        assert graph.changekey == r.json()["changeKey"]
        assert ews.changekey != before[ews_item] and graph.changekey != before[graph_item]
        assert sb.org.invitations() == []
        assert requests.post(sb.exchange.control_url + "/items/edit", json={"item": "AAMk-nothing"},
                             timeout=10).status_code == 400
