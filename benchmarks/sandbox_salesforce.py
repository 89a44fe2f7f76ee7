"""Speed of the Salesforce sandbox, driven through simple-salesforce (issue 2: each well under a second).

    .venv/bin/python benchmarks/sandbox_salesforce.py

Prints and returns:
- query_2000_events_s: one SOQL query returning 2,000 events, each with its 3 EventRelations
  (subquery with Relation.Email/Type) and Owner/Who parent fields;
- collection_create_200_s: one composite/sobjects POST creating 200 events.
Both are the median of several runs, measured at the client (HTTPS round trip included).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simple_salesforce import Salesforce

from sandbox.clock import Clock
from sandbox.faults import Faults
from sandbox.salesforce import SalesforceSandbox

QUERY = (
    "SELECT Id, Subject, StartDateTime, EndDateTime, IsAllDayEvent, Description, IsPrivate, OwnerId, "
    "Owner.Email, WhoId, Who.Email, IsChild, LastModifiedDate, SystemModstamp, "
    "(SELECT Id, RelationId, Relation.Email, Relation.Type, Status, IsInvitee FROM EventRelations) "
    "FROM Event WHERE IsChild = false AND StartDateTime >= 2026-11-01T00:00:00Z ORDER BY StartDateTime"
)


def _median(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> dict:
    start = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory() as tmp, SalesforceSandbox(Clock(), Faults(), Path(tmp)) as sb:
        org = sb.org
        owner = org.add_user("owner@example.com", "Owner One")
        contacts = [org.add_contact(f"c{i}@customer.com", f"Contact{i}") for i in range(300)]
        for i in range(2000):
            s = start + timedelta(minutes=30 * i)
            inv = [contacts[i % 300], contacts[(i + 7) % 300], contacts[(i + 13) % 300]]
            org.add_event(owner, f"Meeting {i}", s, s + timedelta(minutes=30), description="agenda " * 20,
                          invitee_ids=inv, who_ids=inv[:1])
        sf = Salesforce(instance_url=sb.instance_url, session_id=sb.session_id, session=sb.client_session(),
                        version="59.0")

        def query() -> None:
            res = sf.query(QUERY)
            assert res["totalSize"] == 2000 and len(res["records"]) == 2000 and res["done"]
            assert res["records"][0]["EventRelations"]["totalSize"] == 3

        batch = [0]

        def create() -> None:
            batch[0] += 1
            records = [
                {"attributes": {"type": "Event"}, "Subject": f"Bulk {batch[0]}-{i}", "OwnerId": owner,
                 "StartDateTime": (start + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
                 "DurationInMinutes": 45, "Description": "created in bulk", "WhoId": contacts[i]}
                for i in range(200)
            ]
            res = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": records})
            assert len(res) == 200 and all(r["success"] for r in res)

        query()  # warm up the connection
        figures = {
            "query_2000_events_s": round(_median(query, 5), 4),
            "collection_create_200_s": round(_median(create, 5), 4),
        }
    return figures


if __name__ == "__main__":
    for name, value in main().items():
        print(f"{name}: {value:.4f}")
