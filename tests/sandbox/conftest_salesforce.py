"""Fixtures for the Salesforce sandbox tests (imported by tests/sandbox/test_salesforce_*.py).

One server for the whole test session; every test gets it reset (org data, switches, faults, clock).
Tests drive it only through unmodified simple-salesforce, plus raw HTTP for the control API.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from simple_salesforce import Salesforce

from sandbox.clock import Clock
from sandbox.faults import Faults
from sandbox.salesforce import SalesforceSandbox

UTC = timezone.utc
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # a Tuesday
NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def sf_server(tmp_path_factory):
    with SalesforceSandbox(Clock(), Faults(), tmp_path_factory.mktemp("sfsandbox")) as server:
        yield server


@pytest.fixture
def sb(sf_server):
    """The running sandbox with an empty org, no faults and the clock frozen at NOW."""
    sf_server.org.reset()
    sf_server.faults.clear()
    sf_server.clock.set(NOW)
    yield sf_server
    sf_server.faults.clear()
    sf_server.clock.reset()


def client(sb, version: str = "59.0") -> Salesforce:
    return Salesforce(instance_url=sb.instance_url, session_id=sb.session_id, session=sb.client_session(),
                      version=version)


@pytest.fixture
def sf(sb) -> Salesforce:
    return client(sb)


class People:
    """A small org: two synced users, contacts, a lead."""

    def __init__(self, sb) -> None:
        org = sb.org
        self.ann = org.add_user("ann@example.com", "Ann Archer")
        self.bob = org.add_user("bob@example.com", "Bob Baker")
        self.carla = org.add_contact("carla@customer.com", "Cruz", "Carla", owner_id=self.ann)
        self.dan = org.add_contact("dan@customer.com", "Diaz", "Dan")
        self.lee = org.add_lead("lee@prospect.com", "Lee", company="Prospect Inc")


@pytest.fixture
def people(sb) -> People:
    return People(sb)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def hours(n: float) -> timedelta:
    return timedelta(hours=n)
