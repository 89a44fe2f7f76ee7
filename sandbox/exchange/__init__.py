"""Local Exchange Web Services server (SOAP over HTTP, Exchange2016 schema) for tests and the demo.

    from sandbox.exchange import ExchangeSandbox
    with ExchangeSandbox(clock, faults) as ex:
        ex.org.add_mailbox("ann@example.com", time_zone="Europe/Berlin")
        ...  # point exchangelib at ex.url with ex.service_account, auth_type=NTLM (or BASIC), IMPERSONATION

Standard library + lxml only (MD4 and RC4 for NTLM are in ``ntlm.py``); it shares nothing with the
connectors it stands in for.
"""

from .server import DEFAULT_PASSWORD, ExchangeSandbox
from .store import Org

__all__ = ["ExchangeSandbox", "Org", "DEFAULT_PASSWORD"]
