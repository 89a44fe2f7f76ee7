"""End-to-end fixtures: the sandbox servers, a config pointing at them, and the real clients.

Tests change the calendars the way a person would: through simple-salesforce and exchangelib,
never through our connectors.
"""

from __future__ import annotations

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

    def configure(self, *blocks: str, extra: str = "", exchange: str = "max_retry_wait_s = 2") -> Path:
        """Write the config; ``extra`` goes into [sync], ``exchange`` into [exchange]."""
        users = "".join(blocks) or (user_block(ALICE_, time_zone="Europe/Berlin")
                                    + user_block(BOB_, time_zone="America/New_York"))
        self.config_path = write_config(self.sb, {}, self.tmp / "calsync.toml", self.tmp / "calsync.duckdb",
                                        env=self.env, users=users)
        text = self.config_path.read_text()
        text = text.replace("[sync]\n", "[sync]\n" + extra + "\n").replace("[exchange]\n", "[exchange]\n" + exchange + "\n")
        self.config_path.write_text(text)
        return self.config_path

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

    def account(self, mailbox: str):
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


@pytest.fixture
def world(tmp_path: Path):
    with Sandbox(tmp_path / "sandbox") as sb:
        spec = {
            "org": {"shared_activities": True},
            "users": [{"email": "alice@example.com", "name": "Alice Adams", "time_zone": "Europe/Berlin"},
                      {"email": "bob@example.com", "name": "Bob Brown", "time_zone": "America/New_York"}],
            "contacts": [{"email": "carol@customer.example", "last_name": "Customer", "owner": "alice@example.com"}],
            "leads": [{"email": "frank@prospect.example", "last_name": "Prospect", "owner": "alice@example.com"}],
        }
        ids = sb.seed(spec, TODAY)
        yield World(sb, tmp_path, ids)
