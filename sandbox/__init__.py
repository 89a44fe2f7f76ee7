"""Local stand-ins for Salesforce (REST over HTTPS), Exchange (EWS SOAP over HTTP) and Microsoft Graph
(REST over HTTPS, with its identity platform).

They speak the real wire protocols so calsync's connectors are exercised through the unmodified
client libraries. Nothing here imports calsync's own code (a stand-in that shared our code would share
our mistakes). ``Sandbox`` starts all three on free loopback ports with one clock and one fault injector;
the EWS and Graph servers share one Exchange organisation (a hybrid org: mailboxes of kind "ews" on
premises, of kind "graph" in Exchange Online):

    with Sandbox() as sb:
        sb.seed(load_seed("data/demo-seed.toml"), today)
        sb.salesforce.instance_url, sb.salesforce.session_id, sb.salesforce.ca_file
        sb.exchange.url, sb.exchange.service_account
        sb.graph.authority, sb.graph.client_id, sb.graph.client_secret, sb.graph.graph_url, sb.graph.ca_file
        assert sb.exchange.org is sb.graph.org

``Sandbox(latency_ms=100)`` or ``sb.set_latency(100)`` makes every API request to any of the three servers take
100 ms longer, as a real server's round trip does (each server's ``latency_ms``; settings key ``latency_ms``).
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import date
from pathlib import Path

from sandbox.clock import Clock
from sandbox.faults import Faults


class Sandbox:
    """The sandbox servers, sharing a clock and a fault injector; EWS and Graph share one Exchange Org."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        shared_activities: bool = True,
        required_custom_field: str | None = None,
        daily_api_limit: int = 100_000,
        domain: str = "example.com",
        service_account: tuple[str, str] | None = None,
        latency_ms: float = 0,
    ) -> None:
        from sandbox.exchange import DEFAULT_PASSWORD, ExchangeSandbox, Org
        from sandbox.graph import GraphSandbox
        from sandbox.salesforce import SalesforceSandbox

        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="calsync-sandbox-"))
        self.clock = Clock()
        self.faults = Faults()
        self.salesforce = SalesforceSandbox(
            self.clock,
            self.faults,
            self.workdir,
            shared_activities=shared_activities,
            required_custom_field=required_custom_field,
            daily_api_limit=daily_api_limit,
        )
        # One mail organisation, two protocols: on-premises mailboxes over EWS, Exchange Online ones over Graph.
        self.org = Org(self.clock, domain=domain,
                       service_account=service_account or ("svc-calsync@example.com", DEFAULT_PASSWORD))
        self.exchange = ExchangeSandbox(self.clock, self.faults, org=self.org)
        self.graph = GraphSandbox(self.clock, self.faults, self.workdir, org=self.org)
        self.set_latency(latency_ms)

    def set_latency(self, ms: float) -> None:
        """A fixed latency for every API request of the three servers (milliseconds, 0 = none); see
        ``sandbox.httpbase.Latency``."""
        from sandbox.httpbase import check_latency_ms

        ms = check_latency_ms(ms)
        for server in (self.salesforce, self.exchange, self.graph):
            server.latency_ms = ms

    def start(self) -> "Sandbox":
        self.salesforce.start()
        self.exchange.start()
        self.graph.start()
        return self

    def stop(self) -> None:
        self.graph.stop()
        self.exchange.stop()
        self.salesforce.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def seed(self, spec: dict, today: date) -> dict[str, str]:
        """Create a seed's users, contacts, leads and events (see ``sandbox.seed``)."""
        from sandbox.seed import apply_seed

        return apply_seed(self, spec, today)

    def reset(self) -> None:
        self.salesforce.org.reset()
        self.org.reset()
        self.graph.reset_counts()
        self.salesforce.reset_counts()
        self.faults.clear()
        self.clock.reset()

    def dump(self) -> dict:
        return {"salesforce": self.salesforce.org.dump(), "exchange": self.org.dump(), "graph": self.graph.state()}

    def connection_info(self) -> dict:
        """What a client needs, as printed by ``python -m sandbox`` (the sandbox's own test secrets)."""
        user, password = self.exchange.service_account
        return {
            "salesforce": {
                "instance_url": self.salesforce.instance_url,
                "session_id": self.salesforce.session_id,
                "ca_file": str(self.salesforce.ca_file),
                "control": self.salesforce.instance_url + "/_sandbox/",
            },
            "exchange": {
                "endpoint": self.exchange.url,
                "username": user,
                "password": password,
                "auth_types": ["ntlm", "basic"],
                "ntlm_domain": "EXAMPLE",
                "control": self.exchange.url.split("/EWS/")[0] + "/_sandbox/",
            },
            "graph": self.graph.info(),
        }
