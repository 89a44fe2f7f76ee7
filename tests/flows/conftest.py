"""End-to-end fixtures: the sandbox servers, a config pointing at them, and the real clients.

Tests change the calendars the way a person would: through simple-salesforce, and through exchangelib
or Microsoft Graph (``World.person``) as the mailbox's kind is, never through our connectors.

The mailboxes are of kind ``ews`` unless a test module asks for both kinds:

    pytestmark = pytest.mark.parametrize("mailbox_kind", MAILBOX_KINDS, indirect=True)
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from connectors.store import Store
from flows.config import load_config
from flows.demo import write_config
from flows.sync import run_sync
from sandbox import Sandbox

TODAY = datetime.now(timezone.utc).date()
MAILBOX_KINDS = ["ews", "graph"]
ALICE_, BOB_ = "alice@example.com", "bob@example.com"


def at(day: int, hour: int = 10, minute: int = 0) -> datetime:
    """A UTC instant ``day`` days from today."""
    return datetime.combine(TODAY + timedelta(days=day), datetime.min.time(), tzinfo=timezone.utc).replace(
        hour=hour, minute=minute
    )


ZONES = {"alice@example.com": "Europe/Berlin", "bob@example.com": "America/New_York"}


def one(items, **match):
    """The single item whose fields equal ``match`` (fails, listing the items, otherwise)."""
    found = [i for i in items if all(i.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one item matching {match}, found {len(found)} in {items}"
    return found[0]


def mail_with(world: "World", mailbox: str, subject: str) -> list[dict]:
    return [i for i in world.mail_items(mailbox) if i["subject"] == subject]


def sf_with(world: "World", owner: str, subject: str) -> list[dict]:
    return [e for e in world.sf_events(owner) if e["Subject"] == subject and not e.get("IsDeleted")]


def user_block(email: str, **settings) -> str:
    settings.setdefault("time_zone", ZONES.get(email, "UTC"))
    lines = [f'\n[[users]]\nemail = "{email}"\nmailbox = "{settings.pop("mailbox", email)}"']
    for k, v in settings.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, date):
            lines.append(f"{k} = {v.isoformat()}")
        else:
            lines.append(f'{k} = "{v}"')
    return "\n".join(lines) + "\n"


@dataclass
class World:
    sb: Sandbox
    tmp: Path
    ids: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    today: date = TODAY
    config_path: Path | None = None
    kind: str = "ews"  # the kind of every mailbox the fixture made (a user block may say otherwise)

    def configure(self, *blocks: str, extra: str = "", exchange: str = "max_retry_wait_s = 2") -> Path:
        """Write the config; ``extra`` goes into [sync], ``exchange`` into [exchange] and [graph]."""
        kind_of = self.sb.exchange.org.mailbox
        users = "".join(blocks) or (user_block(ALICE_, time_zone="Europe/Berlin", mailbox_kind=kind_of(ALICE_).kind)
                                    + user_block(BOB_, time_zone="America/New_York", mailbox_kind=kind_of(BOB_).kind))
        self.config_path = write_config(self.sb, {}, self.tmp / "calsync.toml", self.tmp / "calsync.duckdb",
                                        env=self.env, users=users, default_kind=self.kind)
        text = self.config_path.read_text()
        text = (text.replace("[sync]\n", "[sync]\n" + extra + "\n")
                .replace("[exchange]\n", "[exchange]\n" + exchange + "\n")
                .replace("[graph]\n", "[graph]\n" + exchange + "\n"))
        self.config_path.write_text(text)
        return self.config_path

    def add_mailbox(self, email: str, time_zone: str = "UTC") -> None:
        """A mailbox of the world's kind (not synced until configured)."""
        self.sb.exchange.org.add_mailbox(email, time_zone=time_zone, kind=self.kind)

    @property
    def create_route(self) -> str:
        """The fault-injection route of a mailbox create: EWS CreateItem, or Graph's POST of an event."""
        return "CreateItem" if self.kind == "ews" else "POST /v1.0/users"

    def native_id(self, store_id: str, mailbox: str = ALICE_) -> str:
        """The id the mailbox's protocol gives a stored item (Graph's REST form of the EWS id)."""
        from sandbox.graph.events import rest_id

        return rest_id(store_id) if self.sb.exchange.org.mailbox(mailbox).kind == "graph" else store_id

    def person(self, mailbox: str) -> "Person":
        """The mailbox's owner, editing through the protocol of its kind (exchangelib or Graph)."""
        kind = self.sb.exchange.org.mailbox(mailbox).kind
        return EwsPerson(self, mailbox) if kind == "ews" else GraphPerson(self, mailbox)

    def mail_invitees(self, item: dict) -> list[str]:
        """Whom a mail item lists for the meeting: its attendees, and on Exchange Online the external invitees
        calsync recorded instead of inviting them (C24)."""
        from connectors.graph import EXTERNALS_PROPERTY

        emails = {a["email"] for a in item["required_attendees"] + item["optional_attendees"]}
        recorded = item.get("extended_properties", {}).get(EXTERNALS_PROPERTY)
        if recorded:
            emails |= {e.lower() for e in json.loads(recorded)}
        return sorted(emails)

    def sync(self, today: date | None = None, allow_deletes: bool = False) -> dict:
        if self.config_path is None:
            self.configure()
        cfg = load_config(self.config_path, env=self.env)
        return run_sync(cfg, today or self.today, allow_deletes)

    def store(self) -> Store:
        return Store(self.tmp / "calsync.duckdb")

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with self.store() as store:
            return store.con.execute(sql, params or []).fetchall()

    # -- the real clients, as a person's tools ---------------------------------------------------
    def salesforce(self):
        from simple_salesforce import Salesforce

        return Salesforce(instance_url=self.sb.salesforce.instance_url, session_id=self.sb.salesforce.session_id,
                          session=self.sb.salesforce.client_session(), version="59.0")

    def account(self, mailbox: str):  # an EWS mailbox's owner, through exchangelib (see also ``person``)
        from exchangelib import BASIC, IMPERSONATION, Account, Configuration, Credentials, Version
        from exchangelib.version import EXCHANGE_2016

        user, password = self.sb.exchange.service_account
        config = Configuration(service_endpoint=self.sb.exchange.url, credentials=Credentials(user, password),
                               auth_type=BASIC, version=Version(build=EXCHANGE_2016))
        return Account(primary_smtp_address=mailbox, config=config, autodiscover=False, access_type=IMPERSONATION)

    def sf_events(self, owner: str) -> list[dict]:
        uid = self.ids[owner]
        return [e for e in self.sb.salesforce.org.events() if e["OwnerId"] == uid]

    def mail_items(self, mailbox: str) -> list[dict]:
        """The mailbox's items, with start/end as aware datetimes."""
        items = self.sb.exchange.org.items(mailbox)
        for item in items:
            for k in ("start", "end"):
                item[k] = datetime.fromisoformat(item[k].replace("Z", "+00:00"))
        return items


class Person:
    """A mailbox's owner changing an item the way Outlook would, through the mailbox's own protocol."""

    def __init__(self, world: World, mailbox: str) -> None:
        self.world, self.mailbox = world, mailbox

    def item_id(self, **match) -> str:
        """The store id of the one calendar item whose fields equal ``match``."""
        return one(self.world.mail_items(self.mailbox), **match)["id"]

    def occurrence_id(self, subject: str, start: datetime) -> str:
        """The id of the occurrence of a series (as the calendar view shows it) with this subject and start."""
        org = self.world.sb.exchange.org
        with org.lock:
            found = [o.id for o in org.calendar_view(self.mailbox, start - timedelta(hours=1), start + timedelta(hours=1))
                     if o.subject == subject and o.start == start]
        assert len(found) == 1, f"{len(found)} occurrences of {subject!r} at {start}"
        return found[0]

    def edit(self, item_id: str, send: bool = False, **changes) -> None:
        """Change ``subject``, ``start``, ``end`` and/or ``body`` of an item (an organizer's edit is sent to the
        attendees with ``send``; Graph always sends it)."""
        raise NotImplementedError

    def delete(self, item_id: str) -> None:
        raise NotImplementedError

    def invite(self, subject: str, start: datetime, end: datetime, attendees: list[str]) -> None:
        """Organise a meeting and send it to ``attendees``, as Outlook does."""
        raise NotImplementedError


class EwsPerson(Person):
    def _item(self, item_id: str):
        return self.world.account(self.mailbox).calendar.get(id=item_id)

    def edit(self, item_id: str, send: bool = False, **changes) -> None:
        item = self._item(item_id)
        for name, value in changes.items():
            setattr(item, name, value)
        item.save(update_fields=list(changes), **({"send_meeting_invitations": "SendToAllAndSaveCopy"} if send else {}))

    def delete(self, item_id: str) -> None:
        self._item(item_id).delete()

    def invite(self, subject: str, start: datetime, end: datetime, attendees: list[str]) -> None:
        from exchangelib import CalendarItem
        from exchangelib.properties import Attendee, Mailbox

        account = self.world.account(self.mailbox)
        item = CalendarItem(account=account, folder=account.calendar, subject=subject, start=start, end=end,
                            required_attendees=[Attendee(mailbox=Mailbox(email_address=a)) for a in attendees])
        item.save(send_meeting_invitations="SendToAllAndSaveCopy")


class GraphPerson(Person):
    def _call(self, method: str, item_id: str | None, body: dict | None = None) -> None:
        import msal

        from sandbox.graph.events import rest_id

        g = self.world.sb.graph
        session = g.client_session()
        app = msal.ConfidentialClientApplication(g.client_id, authority=g.authority, client_credential=g.client_secret,
                                                 http_client=session, instance_discovery=False)
        token = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
        url = f"{g.graph_url}/users/{self.mailbox}/events" + (f"/{rest_id(item_id)}" if item_id else "")
        r = session.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (200, 201, 204), r.text

    def edit(self, item_id: str, send: bool = False, **changes) -> None:  # Graph always sends
        body: dict = {}
        for name, value in changes.items():
            if name in ("start", "end"):
                body[name] = {"dateTime": value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}
            elif name == "body":
                body["body"] = {"contentType": "text", "content": value}
            else:
                body[name] = value
        self._call("PATCH", item_id, body)

    def delete(self, item_id: str) -> None:
        self._call("DELETE", item_id)

    def invite(self, subject: str, start: datetime, end: datetime, attendees: list[str]) -> None:
        when = {k: {"dateTime": v.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}
                for k, v in (("start", start), ("end", end))}
        self._call("POST", None, {"subject": subject, **when, "attendees": [
            {"emailAddress": {"address": a}, "type": "required"} for a in attendees]})


@pytest.fixture
def mailbox_kind(request) -> str:
    """The kind of the world's mailboxes: ``ews`` unless the test is parametrised over MAILBOX_KINDS."""
    return getattr(request, "param", "ews")


@pytest.fixture
def world(tmp_path: Path, mailbox_kind: str):
    with make_world(tmp_path, {ALICE_: mailbox_kind, BOB_: mailbox_kind}) as w:
        yield w


@pytest.fixture
def hybrid(tmp_path: Path):
    """A hybrid organisation: Alice's mailbox on Exchange Server (EWS), Bob's in Exchange Online (Graph)."""
    with make_world(tmp_path, {ALICE_: "ews", BOB_: "graph"}) as w:
        yield w


@contextmanager
def make_world(tmp_path: Path, kinds: dict[str, str]):
    with Sandbox(tmp_path / "sandbox") as sb:
        spec = {
            "org": {"shared_activities": True},
            "users": [{"email": "alice@example.com", "name": "Alice Adams", "time_zone": "Europe/Berlin",
                       "mailbox_kind": kinds[ALICE_]},
                      {"email": "bob@example.com", "name": "Bob Brown", "time_zone": "America/New_York",
                       "mailbox_kind": kinds[BOB_]}],
            "contacts": [{"email": "carol@customer.example", "last_name": "Customer", "owner": "alice@example.com"}],
            "leads": [{"email": "frank@prospect.example", "last_name": "Prospect", "owner": "alice@example.com"}],
        }
        ids = sb.seed(spec, TODAY)
        yield World(sb, tmp_path, ids, kind=kinds[ALICE_])
