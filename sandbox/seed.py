"""Seeding the sandbox: from a declarative file, or from a seeded generator.

A seed is a dict (a TOML or JSON file under ``data/``) with days relative to ``today``, so the same
file always lands inside the sync window:

    [org]
    shared_activities = true

    [[users]]                 # synced users: a Salesforce User and a mailbox each
    email = "alice@example.com"
    name = "Alice Adams"
    time_zone = "Europe/Berlin"
    mailbox_kind = "graph"    # hosted in Exchange Online (served over Graph); default "ews" (on premises)

    [[contacts]]              # also [[leads]] (with company)
    email = "carol@customer.example"
    last_name = "Customer"
    owner = "alice@example.com"

    [[salesforce_events]]     # owner; subject; day (from today); time "HH:MM" + minutes, or all_day + days
    owner = "alice@example.com"
    subject = "Pipeline review"
    day = 2
    time = "15:00"
    minutes = 45
    invitees = ["carol@customer.example", "bob@example.com"]   # Contacts, Leads or synced Users

    [[email_events]]          # mailbox; the same timing keys; attendees; private
    mailbox = "bob@example.com"
    subject = "Lunch"
    day = -3
    all_day = true
    days = 1
"""

from __future__ import annotations

import json
import random
import tomllib
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any


def load_seed(path: str | Path) -> dict:
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    return tomllib.loads(text)


def _timing(ev: dict, today: date) -> tuple[datetime | date, datetime | date, bool]:
    day = today + timedelta(days=int(ev.get("day", 0)))
    if ev.get("all_day"):
        return day, day + timedelta(days=int(ev.get("days", 1))), True
    hh, mm = (int(x) for x in str(ev.get("time", "09:00")).split(":"))
    start = datetime.combine(day, time(hh, mm), tzinfo=timezone.utc)
    return start, start + timedelta(minutes=int(ev.get("minutes", 60))), False


def apply_seed(sandbox: Any, spec: dict, today: date) -> dict[str, str]:
    """Create the seed's records in ``sandbox`` (a ``sandbox.Sandbox``). Returns email -> record id."""
    sf = sandbox.salesforce.org
    ex = sandbox.exchange.org
    org = spec.get("org", {})
    if "shared_activities" in org:
        sf.set_shared_activities(bool(org["shared_activities"]))
    if org.get("required_custom_field"):
        sf.set_required_custom_field(org["required_custom_field"])
    ids: dict[str, str] = {}
    for user in spec.get("users", []):
        email = user["email"].lower()
        ids[email] = sf.add_user(email, name=user.get("name"))
        ex.add_mailbox(email, time_zone=user.get("time_zone", "UTC"), kind=user.get("mailbox_kind", "ews"))
    for c in spec.get("contacts", []):
        ids[c["email"].lower()] = sf.add_contact(
            c["email"].lower(), c.get("last_name", "Contact"), c.get("first_name"),
            owner_id=ids.get(str(c.get("owner", "")).lower()),
        )
    for lead in spec.get("leads", []):
        ids[lead["email"].lower()] = sf.add_lead(
            lead["email"].lower(), lead.get("last_name", "Lead"), lead.get("company", "Acme"),
            owner_id=ids.get(str(lead.get("owner", "")).lower()),
        )
    for ev in spec.get("salesforce_events", []):
        start, end, all_day = _timing(ev, today)
        if all_day:
            # Salesforce keeps an all-day event's end on its last day (inclusive), 00:00Z.
            start = datetime.combine(start, time(0), tzinfo=timezone.utc)
            end = datetime.combine(end - timedelta(days=1), time(0), tzinfo=timezone.utc)
        invitees = [ids[e.lower()] for e in ev.get("invitees", []) if e.lower() in ids]
        sf.add_event(
            ids[ev["owner"].lower()], ev["subject"], start, end,
            is_all_day=all_day, description=ev.get("description"),
            is_private=bool(ev.get("private", False)), invitee_ids=invitees,
        )
    for ev in spec.get("email_events", []):
        start, end, all_day = _timing(ev, today)
        mailbox = ev["mailbox"].lower()
        ex.add_item(
            mailbox, ev["subject"], start, end, is_all_day=all_day, body=ev.get("description"),
            sensitivity="Private" if ev.get("private") else "Normal",
            required_attendees=[a.lower() for a in ev.get("attendees", [])],
            organizer=mailbox if ev.get("attendees") else None,
        )
    return ids


_TOPICS = ["Pipeline review", "Demo", "Renewal call", "QBR", "Kick-off", "Pricing", "Onboarding",
           "Check-in", "Contract review", "Roadmap", "Lunch", "Workshop", "1:1", "Offsite prep"]


def generate(users: int, events: int, seed: int = 7, domain: str = "example.com", graph_share: float = 0.0) -> dict:
    """A realistic org: ``users`` synced users with ``events`` events a side each, contacts and leads,
    invitees, duplicates, private and all-day events; some events already on both sides (to pair).

    ``graph_share`` (0..1) puts that share of the users' mailboxes in Exchange Online (kind "graph"), spread
    evenly: 0.5 is every other user (user0001, user0003, ...), 1.0 every user."""
    if not 0.0 <= graph_share <= 1.0:
        raise ValueError("graph_share must be between 0 and 1")
    rng = random.Random(seed)
    spec: dict[str, Any] = {"org": {"shared_activities": True}, "users": [], "contacts": [],
                            "leads": [], "salesforce_events": [], "email_events": []}
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Europe/London"]
    emails = [f"user{i:04d}@{domain}" for i in range(users)]
    for i, email in enumerate(emails):
        kind = "graph" if int((i + 1) * graph_share) > int(i * graph_share) else "ews"
        spec["users"].append({"email": email, "name": f"User {i}", "time_zone": zones[i % len(zones)],
                              "mailbox_kind": kind})
    people = []
    for i in range(max(4, users * 3)):
        kind = "leads" if i % 4 == 0 else "contacts"
        email = f"{'lead' if kind == 'leads' else 'contact'}{i:05d}@customer{i % 17}.example"
        rec = {"email": email, "last_name": f"Person{i}", "owner": emails[i % users]}
        if kind == "leads":
            rec["company"] = f"Customer {i % 17}"
        spec[kind].append(rec)
        people.append(email)
    for email in emails:
        for j in range(events):
            ev: dict[str, Any] = {"subject": f"{rng.choice(_TOPICS)} #{j}", "day": rng.randint(-25, 55)}
            if rng.random() < 0.1:
                ev.update(all_day=True, days=rng.choice([1, 1, 2]))
            else:
                ev.update(time=f"{rng.randint(7, 17):02d}:{rng.choice(['00', '30'])}",
                          minutes=rng.choice([30, 45, 60, 90]))
            if rng.random() < 0.05:
                ev["private"] = True
            invited = rng.sample(people, k=rng.choice([0, 0, 1, 1, 2, 3]))
            roll = rng.random()
            if roll < 0.45:
                spec["salesforce_events"].append({**ev, "owner": email, "invitees": invited})
            elif roll < 0.9:
                spec["email_events"].append({**ev, "mailbox": email, "attendees": invited})
            else:  # already on both sides: pairs by key on the first run
                spec["salesforce_events"].append({**ev, "owner": email, "invitees": invited})
                spec["email_events"].append({**ev, "mailbox": email, "attendees": invited})
            if rng.random() < 0.02:  # a duplicate on one side
                spec["email_events"].append({**ev, "mailbox": email, "attendees": invited})
    return spec
