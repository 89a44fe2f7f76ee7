"""The HTTP side: EWS endpoint (Basic auth, SOAP dispatch, faults) and the /_sandbox/ control API."""

from __future__ import annotations

import base64
import json
import time
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler

from lxml import etree

from .. import httpbase
from . import soap
from . import tz as tzmod
from .service import OPERATIONS, Context, _child, _local
from .store import EwsError, Org, SoapFault

EWS_PATH = "/ews/exchange.asmx"
DEFAULT_PASSWORD = "Sandbox-Passw0rd!"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=True)


class ExchangeSandbox:
    """A local EWS server (Exchange2016 schema) over plain HTTP on a free loopback port.

    ``org`` holds the state (mailboxes, items, invitations); ``clock`` and ``faults`` are shared with the
    other sandbox servers.
    """

    def __init__(
        self,
        clock,
        faults,
        *,
        domain: str = "example.com",
        service_account: tuple[str, str] = ("svc-calsync@example.com", DEFAULT_PASSWORD),
        port: int = 0,
    ) -> None:
        self.clock = clock
        self.faults = faults
        self.org = Org(clock, domain=domain, service_account=service_account)
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
                "password": self.service_account[1], "auth_type": "basic", "version": "Exchange2016"}

    # authentication ------------------------------------------------------------
    def authenticate(self, header: str | None) -> str | None:
        """The account a Basic Authorization header proves, or None. Accepts user@domain and DOMAIN\\user."""
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
        except Exception:  # noqa: BLE001
            return None
        user = user.strip().lower()
        if "\\" in user:
            user = f"{user.split(chr(92), 1)[1]}@{self.org.domain}"
        with self.org.lock:
            expected = self.org.passwords.get(user)
        if expected is None or expected != password:
            return None
        return user


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass

    @property
    def app(self) -> ExchangeSandbox:
        return self.server.app  # type: ignore[attr-defined]

    # plumbing ---------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str = "text/xml; charset=utf-8", extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-FEServer", "SANDBOX")
        for k, v in (extra or {}).items():
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
    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.lower() == EWS_PATH:
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
        else:
            self._json(404, {"error": f"no route GET {path}"})

    def do_DELETE(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        self._read_body()
        if path == "/_sandbox/faults":
            self.app.faults.clear()
            self._json(200, {"faults": []})
        else:
            self._json(404, {"error": f"no route DELETE {path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        body = self._read_body()
        if path.lower() == EWS_PATH:
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
            mbx = org.add_mailbox(p["email"], p.get("time_zone", "UTC"), p.get("password"))
            self._json(200, {"email": mbx.email, "time_zone": mbx.time_zone})
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
        elif path == "/_sandbox/responses":
            org.set_response(p["mailbox"], p["item"], p["attendee"], p["response"])
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": f"no route POST {path}"})

    # EWS --------------------------------------------------------------------------------
    def _ews(self, raw: bytes) -> None:
        app, org = self.app, self.app.org
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

        principal = app.authenticate(self.headers.get("Authorization"))
        if principal is None:
            # IIS rejects the credentials before EWS runs.
            self._send(401, b"<html><body>401 - Unauthorized: Access is denied due to invalid credentials.</body></html>",
                       "text/html", {"WWW-Authenticate": f'Basic realm="{self.headers.get("Host", "127.0.0.1")}"'})
            return

        status, payload = self._dispatch(principal, operation, header, request)
        if fault is not None and fault.kind == "drop_after_write":
            self._drop()
            return
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
            if target not in org.mailboxes:
                raise SoapFault("ErrorNonExistentMailbox", soap.text_for("ErrorNonExistentMailbox"),
                                f'<t:Value Name="SmtpAddress">{target}</t:Value>')
            return Context(org, principal, target, tz_context, True)
        acting = principal if principal in org.mailboxes else None
        return Context(org, principal, acting, tz_context, False)


def _parse_when(value):
    if isinstance(value, str):
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value
