"""The HTTP side: EWS endpoint (NTLM and Basic auth, SOAP dispatch, faults) and the /_sandbox/ control API.

Authentication happens before EWS sees the request, as IIS does it: a request that does not authenticate
gets a 401 offering ``NTLM`` and ``Basic``, is not counted as an EWS call and consumes no injected fault.
NTLM authenticates the TCP connection (the handler runs HTTP/1.1 keep-alive, one handler per connection):
see ``ntlm.py``.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler

from lxml import etree

from .. import httpbase
from . import ntlm, soap
from . import tz as tzmod
from .service import OPERATIONS, Context, _child, _local
from .store import EwsError, Org, SoapFault

EWS_PATH = "/ews/exchange.asmx"
DEFAULT_PASSWORD = "Sandbox-Passw0rd!"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=True)


class ExchangeSandbox(httpbase.Latency):
    """A local EWS server (Exchange2016 schema) over plain HTTP on a free loopback port.

    ``org`` holds the state (mailboxes, items, invitations); ``clock`` and ``faults`` are shared with the
    other sandbox servers. ``latency_ms`` (settings key ``latency_ms``) is slept once per HTTP request to the EWS
    endpoint (the 401s of an NTLM handshake too: they are round trips as well), before the org's lock is taken.
    """

    def __init__(
        self,
        clock,
        faults,
        *,
        domain: str = "example.com",
        service_account: tuple[str, str] = ("svc-calsync@example.com", DEFAULT_PASSWORD),
        port: int = 0,
        auth_methods: tuple[str, ...] = ("ntlm", "basic"),
        org: Org | None = None,
        latency_ms: float = 0,
    ) -> None:
        self.latency_ms = latency_ms
        self.clock = clock
        # Which schemes IIS offers and accepts: "ntlm", "basic" (set to ("ntlm",) for a server with Basic off).
        self.auth_methods = tuple(auth_methods)
        self.faults = faults
        # A hybrid organisation shares one Org with the Graph sandbox (``org=``); mailboxes of kind "graph"
        # are not hosted here and are refused like a mailbox that does not exist.
        self.org = org if org is not None else Org(clock, domain=domain, service_account=service_account)
        self._port = port
        self._server: httpbase.LoopbackServer | None = None

    # lifecycle ---------------------------------------------------------------
    def start(self) -> "ExchangeSandbox":
        if self._server is None:
            self._server = httpbase.LoopbackServer(_Handler, self, port=self._port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "ExchangeSandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Exchange sandbox is not started")
        return self._server.url

    @property
    def url(self) -> str:
        return f"{self.base_url}/EWS/Exchange.asmx"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_sandbox"

    @property
    def service_account(self) -> tuple[str, str]:
        return self.org.service_account

    def describe(self) -> dict:
        return {"ews_url": self.url, "control_url": self.control_url, "username": self.service_account[0],
                "password": self.service_account[1], "auth_types": list(self.auth_methods),
                "ntlm_domain": self.netbios_domain, "version": "Exchange2016"}

    # authentication ------------------------------------------------------------
    @property
    def netbios_domain(self) -> str:
        """The NetBIOS name of the Windows domain (EXAMPLE for example.com): users log on as EXAMPLE\\user."""
        return self.org.domain.split(".", 1)[0].upper()

    def account_for(self, user: str, domain: str = "") -> str | None:
        """The account (lower-case UPN) a logon name names: user@domain, or DOMAIN\\user / user with the
        NetBIOS or DNS domain given separately (NTLM carries the domain in its own field)."""
        user, domain = user.strip().lower(), domain.strip().lower()
        if "\\" in user:
            domain, user = user.split("\\", 1)
        if "@" not in user:
            if domain and domain not in (self.netbios_domain.lower(), self.org.domain):
                return None
            user = f"{user}@{self.org.domain}"
        return user

    def password_of(self, account: str | None) -> str | None:
        if account is None:
            return None
        with self.org.lock:
            return self.org.passwords.get(account)

    def ntlm_challenge(self, negotiate: bytes) -> ntlm.Challenge:
        nb = self.netbios_domain
        return ntlm.build_challenge(negotiate, nb_domain=nb, nb_computer="EXCH01",
                                    dns_domain=self.org.domain, dns_computer=f"exch01.{self.org.domain}")

    def ntlm_authenticate(self, token: bytes, challenge: ntlm.Challenge) -> str | None:
        """The account an AUTHENTICATE_MESSAGE proves against ``challenge``, or None."""
        try:
            logon = ntlm.verify_authenticate(token, challenge,
                                             lambda user, domain: self.password_of(self.account_for(user, domain)))
        except ntlm.NtlmError as e:
            self.org.record_logon("ntlm", None, False, str(e))
            return None
        account = self.account_for(logon.user, logon.domain)
        self.org.record_logon("ntlm", account, True, f"{logon.domain}\\{logon.user} from {logon.workstation}")
        return account

    def authenticate(self, header: str | None) -> str | None:
        """The account a Basic Authorization header proves, or None. Accepts user@domain and DOMAIN\\user."""
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
        except Exception:
            return None
        account = self.account_for(user)
        expected = self.password_of(account)
        ok = expected is not None and expected == password
        self.org.record_logon("basic", account if ok else None, ok, "" if ok else "wrong user name or password")
        return account if ok else None


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive: one handler instance serves every request of a TCP connection, so the NTLM
    # handshake (three requests) and the authenticated state below live as long as the connection.
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out in two writes; with Nagle the body waits for the client's
    # delayed ACK of the headers, a hidden ~40 ms on every reply (the Salesforce handler sets it too).
    disable_nagle_algorithm = True
    _ntlm_pending: ntlm.Challenge | None = None  # challenge sent on this connection, awaiting type 3
    _ntlm_user: str | None = None  # account this connection authenticated as with NTLM
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    @property
    def app(self) -> ExchangeSandbox:
        return self.server.app  # type: ignore[attr-defined]

    # plumbing ---------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str = "text/xml; charset=utf-8",
              extra: dict | list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-FEServer", "SANDBOX")
        for k, v in (extra.items() if isinstance(extra, dict) else extra or []):
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload) -> None:
        self._send(status, json.dumps(payload, default=str).encode(), "application/json")

    def _drop(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass

    # routes ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.lower() == EWS_PATH:
            self.app.pause()
            # IIS answers a browser GET with the service description page; clients only POST.
            self._send(200, b"<html><body>Exchange Web Services (sandbox)</body></html>", "text/html")
            return
        org = self.app.org
        if path == "/_sandbox/state":
            state = org.dump()
            state["clock"] = self.app.clock.now().isoformat()
            state["faults"] = self.app.faults.to_json()
            state["ews_url"] = self.app.url
            self._json(200, state)
        elif path == "/_sandbox/invitations":
            self._json(200, org.invitations())
        elif path == "/_sandbox/clock":
            self._json(200, {"now": self.app.clock.now().isoformat()})
        elif path == "/_sandbox/settings":
            self._json(200, self._settings())
        elif path == "/_sandbox/calls":
            with org.lock:
                self._json(200, {"calls": org.calls(), "calls_by_operation": dict(org.calls_by_operation)})
        else:
            self._json(404, {"error": f"no route GET {path}"})

    def do_DELETE(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        self._read_body()
        if path == "/_sandbox/faults":
            self.app.faults.clear()
            self._json(200, {"faults": []})
        else:
            self._json(404, {"error": f"no route DELETE {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = self._read_body()
        if path.lower() == EWS_PATH:
            self.app.pause()  # the round trip's fixed latency, before any lock is taken
            self._ews(body)
        elif path.startswith("/_sandbox/"):
            try:
                payload = json.loads(body or b"{}")
                self._control(path, payload)
            except (ValueError, KeyError, TypeError) as e:
                self._json(400, {"error": str(e)})
        else:
            self._json(404, {"error": f"no route POST {path}"})

    def _control(self, path: str, p: dict) -> None:
        app, org = self.app, self.app.org
        if path == "/_sandbox/reset":
            org.reset()
            app.faults.clear()
            self._json(200, {"ok": True})
        elif path == "/_sandbox/clock":
            if p.get("reset"):
                app.clock.reset()
            elif "set" in p:
                app.clock.set(datetime.fromisoformat(str(p["set"]).replace("Z", "+00:00")))
            elif "advance_seconds" in p:
                app.clock.advance(timedelta(seconds=float(p["advance_seconds"])))
            else:
                raise ValueError("expected set, advance_seconds or reset")
            self._json(200, {"now": app.clock.now().isoformat()})
        elif path == "/_sandbox/faults":
            fault = app.faults.add(p["kind"], int(p.get("count", 1)), p.get("route"),
                                   int(p.get("backoff_ms", 500)), float(p.get("delay_s", 2.0)),
                                   int(p.get("after", 0)))
            self._json(200, fault.to_json())
        elif path == "/_sandbox/mailboxes":
            mbx = org.add_mailbox(p["email"], p.get("time_zone", "UTC"), p.get("password"), kind=p.get("kind", "ews"))
            self._json(200, {"email": mbx.email, "time_zone": mbx.time_zone, "kind": mbx.kind})
        elif path == "/_sandbox/impersonation":
            (org.grant_impersonation if p.get("grant", True) else org.revoke_impersonation)(p["username"])
            self._json(200, {"impersonators": sorted(org.impersonators)})
        elif path == "/_sandbox/items":
            kwargs = dict(p)
            mailbox, subject = kwargs.pop("mailbox"), kwargs.pop("subject")
            start, end = _parse_when(kwargs.pop("start")), _parse_when(kwargs.pop("end"))
            if kwargs.get("last_modified"):
                kwargs["last_modified"] = _parse_when(kwargs["last_modified"])
            item_id = org.add_item(mailbox, subject, start, end, **kwargs)
            self._json(200, {"id": item_id})
        elif path == "/_sandbox/items/edit":
            changekey = org.edit_item(p["item"], subject=p.get("subject"), body=p.get("body"),
                                      location=p.get("location"))
            self._json(200, {"id": p["item"], "changekey": changekey})
        elif path == "/_sandbox/settings":
            latency = httpbase.check_latency_ms(p["latency_ms"]) if "latency_ms" in p else None  # before any change
            if "auth_methods" in p:
                methods = tuple(str(m).lower() for m in p["auth_methods"])
                if not methods or set(methods) - {"ntlm", "basic"}:
                    raise ValueError("auth_methods: a non-empty list of 'ntlm' and 'basic'")
                app.auth_methods = methods
            if "immutable_ids" in p:
                org.immutable_ids = bool(p["immutable_ids"])
            if latency is not None:
                app.latency_ms = latency
            self._json(200, self._settings())
        elif path == "/_sandbox/responses":
            org.set_response(p["mailbox"], p["item"], p["attendee"], p["response"])
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": f"no route POST {path}"})

    def _settings(self) -> dict:
        app = self.app
        return {"auth_methods": list(app.auth_methods), "immutable_ids": app.org.immutable_ids,
                "latency_ms": app.latency_ms}

    # EWS --------------------------------------------------------------------------------
    def _unauthorized(self, ntlm_challenge: bytes | None = None) -> None:
        """401 as IIS sends it: the NTLM challenge mid-handshake, else every scheme it accepts."""
        if ntlm_challenge is not None:
            offers = [("WWW-Authenticate", "NTLM " + base64.b64encode(ntlm_challenge).decode("ascii"))]
        else:
            offers = [("WWW-Authenticate", "NTLM" if m == "ntlm" else f'Basic realm="{self.headers.get("Host", "127.0.0.1")}"')
                      for m in self.app.auth_methods]
        self._send(401, b"<html><body>401 - Unauthorized: Access is denied due to invalid credentials.</body></html>",
                   "text/html", offers)

    def _authenticate(self) -> str | None:
        """The account this request acts as, or None after answering 401 (NTLM steps included)."""
        app = self.app
        header = (self.headers.get("Authorization") or "").strip()
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "ntlm" and "ntlm" in app.auth_methods:
            try:
                token = base64.b64decode(value.strip(), validate=True)
                kind = ntlm.message_type(token)
            except (ValueError, ntlm.NtlmError):
                kind, token = 0, b""
            if kind == 1:  # NEGOTIATE: (re)start the handshake on this connection
                self._ntlm_user = None
                try:
                    self._ntlm_pending = app.ntlm_challenge(token)
                except ntlm.NtlmError:
                    self._ntlm_pending = None
                    self._unauthorized()
                    return None
                self._unauthorized(self._ntlm_pending.message)
                return None
            pending, self._ntlm_pending = self._ntlm_pending, None  # a challenge is good for one answer
            principal = app.ntlm_authenticate(token, pending) if kind == 3 and pending is not None else None
            if principal is None:
                self._unauthorized()
                return None
            self._ntlm_user = principal
            return principal
        if scheme == "basic" and "basic" in app.auth_methods:
            principal = app.authenticate(header)
        elif not header:
            principal = self._ntlm_user  # a connection NTLM already authenticated
        else:
            principal = None
        if principal is None:
            self._unauthorized()
        return principal

    def _ews(self, raw: bytes) -> None:
        app, org = self.app, self.app.org
        # IIS authenticates before EWS runs: 401s are not EWS calls and consume no injected fault.
        principal = self._authenticate()
        if principal is None:
            return
        try:
            root = etree.fromstring(raw, _PARSER)
        except etree.XMLSyntaxError as e:
            org.count_call("(malformed)")
            self._send(500, soap.client_fault(f"The request failed schema validation: {e}"))
            return
        header = _child(root, "Header")
        body = _child(root, "Body")
        request = body[0] if body is not None and len(body) else None
        operation = _local(request.tag) if request is not None else "(empty)"
        org.count_call(operation)

        fault = app.faults.take(operation)
        if fault is not None:
            if fault.kind == "http_503":
                self._send(503, b"<html><body>Service Unavailable</body></html>", "text/html")
                return
            if fault.kind == "timeout":
                time.sleep(fault.delay_s)
                self._drop()
                return
            if fault.kind == "throttle":
                self._send(500, soap.server_busy(fault.backoff_ms))
                return
            if fault.kind == "html_page":
                self._send(200, b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><form>"
                                b"<input name='username'></form></body></html>", "text/html; charset=utf-8")
                return
            if fault.kind == "http_500_empty":
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return

        status, payload = self._dispatch(principal, operation, header, request)
        if fault is not None and fault.kind == "drop_after_write":
            self._drop()
            return
        if fault is not None and fault.kind == "truncated_xml":
            payload = payload[: len(payload) // 2]
        self._send(status, payload)

    def _dispatch(self, principal: str, operation: str, header, request) -> tuple[int, bytes]:
        org = self.app.org
        handler = OPERATIONS.get(operation)
        if handler is None:
            return 500, soap.fault("ErrorInvalidRequest", f"The operation {operation} is not supported by this sandbox.")
        with org.lock:
            try:
                ctx = self._context(principal, header)
                messages = handler(ctx, request)
            except SoapFault as f:
                return 500, soap.fault(f.code, f.text, f.message_xml)
            except EwsError as e:
                return 500, soap.fault(e.code, e.text, e.message_xml)
        return 200, soap.response(operation, messages)

    def _context(self, principal: str, header) -> Context:
        """Who acts: the impersonated user (needs the ApplicationImpersonation role) or the caller itself.
        https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/exchangeimpersonation"""
        org = self.app.org
        tz_context = None
        target = None
        if header is not None:
            tzc = _child(header, "TimeZoneContext")
            if tzc is not None and len(tzc):
                tz_context = tzc[0].get("Id")
                if tz_context and not tzmod.is_known(tz_context):
                    tz_context = None
            imp = _child(header, "ExchangeImpersonation")
            if imp is not None:
                sid = _child(imp, "ConnectingSID")
                if sid is None or not len(sid):
                    raise SoapFault("ErrorInvalidExchangeImpersonationHeaderData",
                                    "ExchangeImpersonation SOAP header must be present for this type of request.")
                kind, value = _local(sid[0].tag), (sid[0].text or "").strip().lower()
                if kind not in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
                    raise SoapFault("ErrorInvalidExchangeImpersonationHeaderData",
                                    f"ConnectingSID {kind} is not supported by this sandbox.")
                target = value
        if target is not None:
            if principal not in org.impersonators:
                raise SoapFault("ErrorImpersonateUserDenied", soap.text_for("ErrorImpersonateUserDenied"))
            if not org.hosts(target, "ews"):  # unknown, or hosted in Exchange Online (Graph)
                raise SoapFault("ErrorNonExistentMailbox", soap.text_for("ErrorNonExistentMailbox"),
                                f'<t:Value Name="SmtpAddress">{target}</t:Value>')
            return Context(org, principal, target, tz_context, True)
        acting = principal if org.hosts(principal, "ews") else None
        return Context(org, principal, acting, tz_context, False)


def _parse_when(value):
    if isinstance(value, str):
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value
