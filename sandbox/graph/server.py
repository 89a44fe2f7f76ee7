"""The HTTP side of the Graph sandbox: the login (identity platform) server, the Graph v1.0 server with its
JSON $batch, throttling and fault injection, and the /_sandbox/ control API.

- JSON batching (at most 20 requests; per-request status; the batch itself 200; dependsOn; 424 for the
  dependants of a failed request): https://learn.microsoft.com/en-us/graph/json-batching
- Throttling (429 + Retry-After in seconds; "Requests in a batch are evaluated individually against the
  applicable throttling limits"): https://learn.microsoft.com/en-us/graph/throttling
- Outlook limits (10,000 API requests per 10 minutes and 4 concurrent requests, per app per mailbox):
  https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits ; the 429's code and text
  ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."):
  https://learn.microsoft.com/en-us/answers/questions/734143/mailboxconcurrency-limit-throttling-exception
- 401 for a missing/invalid/expired token (InvalidAuthenticationToken): https://learn.microsoft.com/en-us/graph/resolve-auth-errors
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, unquote

from .events import GraphError, store_id
from .identity import TokenError
from .service import JSON_TYPE, Request, Response, error_body

MAX_BATCH = 20


class _JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: headers and body are two writes; with Nagle the body waits for the client's delayed ACK of
    # the headers, a hidden ~40 ms on every reply (the Salesforce handler sets it too).
    disable_nagle_algorithm = True
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    @property
    def app(self):
        return self.server.app  # type: ignore[attr-defined]

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes | None, headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        payload = body or b""
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _json(self, status: int, payload, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload, default=str).encode(),
                   {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass


# ====================================================================== login.microsoftonline.com
class LoginHandler(_JsonHandler):
    """GET /{tenant}/v2.0/.well-known/openid-configuration, GET /{tenant}/discovery/v2.0/keys,
    POST /{tenant}/oauth2/v2.0/token."""

    def do_GET(self) -> None:
        app, ident = self.app, self.app.identity
        self._read_body()
        app.pause()
        segs = [unquote(s) for s in self.path.split("?", 1)[0].strip("/").split("/")]
        base = app.login_url
        if len(segs) == 4 and segs[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            if not ident.knows_tenant(segs[0]):
                err = ident.unknown_tenant(segs[0])
                self._json(400, ident.error_body(err, base, self.headers.get("client-request-id")))
                return
            self._json(200, ident.openid_configuration(base, segs[0]))
        elif len(segs) == 4 and segs[1:] == ["discovery", "v2.0", "keys"] and ident.knows_tenant(segs[0]):
            self._json(200, ident.jwks())
        else:
            self._json(404, {"error": "not_found", "error_description": f"No route GET {self.path} (sandbox)."})

    def do_POST(self) -> None:
        app, ident = self.app, self.app.identity
        raw = self._read_body()
        app.pause()
        segs = [unquote(s) for s in self.path.split("?", 1)[0].strip("/").split("/")]
        if not (len(segs) == 4 and segs[1:] == ["oauth2", "v2.0", "token"]):
            self._json(404, {"error": "not_found", "error_description": f"No route POST {self.path} (sandbox)."})
            return
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        basic = None
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
                basic = (unquote(user), unquote(pw))
            except Exception:
                basic = None
        # The assertion's audience is the token endpoint the discovery document names (tenant id), or the one the
        # client posted to (a tenant named by its domain).
        audiences = {f"{app.login_url}/{ident.tenant_id}/oauth2/v2.0/token", f"{app.login_url}/{segs[0]}/oauth2/v2.0/token"}
        try:
            result = ident.token(segs[0], form, basic, audiences)
        except TokenError as e:
            self._json(e.status, ident.error_body(e, app.login_url, self.headers.get("client-request-id")),
                       {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})
            return
        self._json(200, result, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


# ====================================================================== graph.microsoft.com
class GraphHandler(_JsonHandler):
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def _handle(self, method: str) -> None:
        raw = self._read_body()
        path, _, qs = self.path.partition("?")
        if path.startswith("/_sandbox"):
            try:
                self._control(method, path.rstrip("/"), json.loads(raw or b"{}") if method == "POST" else {})
            except (ValueError, KeyError, TypeError) as e:
                self._json(400, {"error": str(e)})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        prefer = self.headers.get_all("Prefer") or []
        status, out_headers, body, action = self.app.gateway.handle(method, path, qs, headers, prefer, raw)
        if action is not None:
            kind, delay = action
            if kind == "timeout":
                time.sleep(delay)
            self._drop()
            return
        self._send(status, body, out_headers)

    # ------------------------------------------------------------------ control API
    def _control(self, method: str, path: str, p: dict) -> None:
        app, org = self.app, self.app.org
        if method == "GET":
            if path == "/_sandbox/state":
                state = org.dump()
                state["clock"] = app.clock.now().isoformat()
                state["faults"] = app.faults.to_json()
                state["graph"] = app.state()
                self._json(200, state)
            elif path == "/_sandbox/invitations":
                self._json(200, org.invitations())
            elif path == "/_sandbox/clock":
                self._json(200, {"now": app.clock.now().isoformat()})
            elif path == "/_sandbox/calls":
                self._json(200, app.counts())
            elif path == "/_sandbox/settings":
                self._json(200, app.settings())
            elif path == "/_sandbox/token-requests":
                self._json(200, list(app.identity.token_requests))
            else:
                self._json(404, {"error": f"no route GET {path}"})
            return
        if method == "DELETE":
            if path == "/_sandbox/faults":
                app.faults.clear()
                self._json(200, {"faults": []})
            else:
                self._json(404, {"error": f"no route DELETE {path}"})
            return
        if method != "POST":
            self._json(404, {"error": f"no route {method} {path}"})
            return
        if path == "/_sandbox/reset":
            org.reset()
            app.reset_counts()
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
                                   int(p.get("backoff_ms", 500)), float(p.get("delay_s", 2.0)), int(p.get("after", 0)))
            self._json(200, fault.to_json())
        elif path == "/_sandbox/settings":
            app.apply_settings(p)
            self._json(200, app.settings())
        elif path == "/_sandbox/mailboxes":
            mbx = org.add_mailbox(p["email"], p.get("time_zone", "UTC"), name=p.get("name"),
                                  kind=p.get("kind", "graph"))
            self._json(200, {"email": mbx.email, "time_zone": mbx.time_zone, "kind": mbx.kind,
                             "id": app.user_id(mbx.email)})
        elif path == "/_sandbox/responses":
            org.set_response(p["mailbox"], p["item"], p["attendee"], p["response"])
            self._json(200, {"ok": True})
        elif path == "/_sandbox/items/edit":  # the item's Graph id
            changekey = org.edit_item(store_id(p["item"]), subject=p.get("subject"), body=p.get("body"),
                                      location=p.get("location"))
            self._json(200, {"id": p["item"], "changeKey": changekey})
        else:
            self._json(404, {"error": f"no route POST {path}"})


# ====================================================================== the gateway: auth, faults, throttling, $batch
class Gateway:
    """Everything between the socket and the operations."""

    def __init__(self, app) -> None:
        self.app = app

    def _error(self, status: int, code: str, message: str, req_id: str, crid: str | None,
               headers: dict | None = None) -> tuple[int, dict, dict]:
        body = error_body(code, message, req_id, crid, self.app.clock.now())
        return status, {"Content-Type": JSON_TYPE, **(headers or {})}, body

    def _base_headers(self, req_id: str, crid: str | None) -> dict:
        return {"request-id": req_id, "client-request-id": crid or req_id,
                "x-ms-ags-diagnostic": json.dumps({"ServerInfo": {"DataCenter": "Sandbox", "Slice": "E", "Ring": "5",
                                                                  "ScaleUnit": "000", "RoleInstance": "SANDBOX"}}),
                "Strict-Transport-Security": "max-age=31536000", "Cache-Control": "no-cache"}

    def handle(self, method: str, path: str, qs: str, headers: dict, prefer: list[str], raw: bytes):
        """(status, headers, body bytes, action) for one HTTP request; action = ("drop"|"timeout", delay) or None.

        Every request takes the server's latency once (``latency_ms``): a single request sleeps it while it holds
        its mailbox's concurrency slot (it is in flight for its whole round trip), anything else here (a $batch
        once, not per sub-request; a refusal before a slot was taken). No lock is held while sleeping."""
        slept: list[bool] = []
        out = self._handle(method, path, qs, headers, prefer, raw, slept)
        if not slept:
            self.app.pause()
        return out

    def _handle(self, method: str, path: str, qs: str, headers: dict, prefer: list[str], raw: bytes,
                slept: list[bool]):
        app = self.app
        req_id = str(uuid.uuid4())
        crid = headers.get("client-request-id")
        base = self._base_headers(req_id, crid)
        if not (path == "/v1.0" or path.lower().startswith("/v1.0/")):
            status, h, body = self._error(400, "BadRequest", "Invalid version.", req_id, crid)  # sandbox: /beta etc.
            return status, {**base, **h}, json.dumps(body).encode(), None
        problem = app.identity.check_bearer(headers.get("authorization"))
        if problem is not None:
            app.count_call("(unauthenticated)")
            status, h, body = self._error(401, "InvalidAuthenticationToken", problem, req_id, crid, {
                "WWW-Authenticate": f'Bearer realm="", authorization_uri="{app.login_url}/common/oauth2/authorize", '
                                    'client_id="00000003-0000-0000-c000-000000000000"'})
            return status, {**base, **h}, json.dumps(body).encode(), None
        below = path[len("/v1.0"):] or "/"
        if below.lower() == "/$batch":
            if method != "POST":
                status, h, body = self._error(405, "Request_BadRequest",
                                              "Specified HTTP method is not allowed for the request target.",
                                              req_id, crid)
                app.count_call("$batch")
                return status, {**base, **h}, json.dumps(body).encode(), None
            status, h, body, action = self._batch(raw, req_id, crid)
            if action is None:
                app.count_call("$batch")
            else:
                app.count_dropped()
            return status, {**base, **h}, json.dumps(body).encode(), action
        try:
            body_json = json.loads(raw) if raw.strip() else None
        except ValueError:
            status, h, body = self._error(400, "BadRequest", "Unable to read JSON request payload. Please ensure "
                                                             "Content-Type header is set and payload is of valid JSON "
                                                             "format.", req_id, crid)  # believed wording
            app.count_call("(malformed)")
            return status, {**base, **h}, json.dumps(body).encode(), None
        req = Request(method, below, dict(parse_qsl(qs, keep_blank_values=True)), headers, body_json, prefer)
        resp, action = self.run_one(req, req_id, crid, slept=slept)
        if action is not None and action[0] == "timeout":
            app.count_dropped()
            return 0, {}, b"", action
        if action is not None:  # drop_after_write: applied, then the connection drops
            app.count_dropped(resp.operation)
            return 0, {}, b"", action
        app.count_call(resp.operation)
        payload = b"" if resp.body is None else json.dumps(resp.body).encode()
        return resp.status, {**base, **resp.headers}, payload, None

    def run_one(self, req: Request, req_id: str, crid: str | None, in_batch: bool = False,
                slept: list[bool] | None = None):
        """(Response, action) for one request (top level or inside a batch). A top-level request (``slept`` given)
        sleeps the latency once it holds its mailbox's slot and says so in ``slept``; every request, sub-requests
        too, holds its slot for ``service_time_s``."""
        app = self.app
        service = app.service
        op = "(unknown)"

        def fail(e: GraphError) -> Response:
            status, h, body = self._error(e.status, e.code, e.message, req_id, crid, e.headers)
            return Response(status, body, h, op)

        try:
            op, user, event_id = service.route(req)
        except GraphError as e:
            return fail(e), None
        fault = app.faults.take(f"{req.method} /v1.0{req.path}")
        action = None
        if fault is not None:
            if fault.kind == "http_503":
                return fail(GraphError(503, "serviceNotAvailable",  # https://learn.microsoft.com/en-us/graph/errors
                                       "The service is temporarily unavailable. Try the request again after a "
                                       "delay.")), None
            if fault.kind == "throttle":
                return fail(GraphError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                                       {"Retry-After": str(max(1, math.ceil(fault.backoff_ms / 1000)))})), None
            if fault.kind == "timeout":
                return Response(0, None, {}, op), ("timeout", fault.delay_s)
            if fault.kind == "drop_after_write":
                action = ("drop", 0.0)
        slot = None
        try:
            mailbox = service.resolve_user(user, op)
            if op != "getUser":
                slot = app.throttle.admit(mailbox)
            if slept is not None and app.latency_s:
                app.pause()
                slept.append(True)
            if app.service_time_s:
                time.sleep(app.service_time_s)
            resp = service.execute(req, op, user, event_id)
            resp.operation = op
            return resp, action
        except GraphError as e:
            return fail(e), action
        finally:
            if slot is not None:
                app.throttle.release(slot)

    # ------------------------------------------------------------------ $batch
    def _batch(self, raw: bytes, req_id: str, crid: str | None):
        app = self.app

        def bad(message: str):
            status, h, body = self._error(400, "BadRequest", message, req_id, crid)
            return status, h, body, None

        try:
            payload = json.loads(raw or b"")
        except ValueError:
            return bad("Invalid batch payload format.")  # believed wording
        requests_ = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(requests_, list) or not requests_:
            return bad("Invalid batch payload format.")
        if len(requests_) > MAX_BATCH:
            # "JSON batch requests are currently limited to 20 individual requests" (json-batching page);
            # believed wording of the refusal.
            return bad(f"The number of requests in the batch ({len(requests_)}) exceeds the limit of {MAX_BATCH}.")
        seen: set[str] = set()
        subs = []
        for r in requests_:
            if not isinstance(r, dict) or not r.get("id") or not r.get("method") or not r.get("url"):
                return bad("Invalid batch payload format.")
            rid = str(r["id"])
            if rid.lower() in seen:  # "Must be unique in the batch, otherwise, the batch request fails with a 400"
                return bad(f"Batch request id '{rid}' is not unique.")  # believed wording
            seen.add(rid.lower())
            url = str(r["url"])
            if url.lower().startswith(("http://", "https://")):
                return bad(f"Invalid request URL for request id : {rid}. The url must be relative.")  # believed
            url = "/" + url.lstrip("/")
            if url.lower().startswith("/v1.0/"):
                url = url[5:]
            headers = {str(k).lower(): str(v) for k, v in (r.get("headers") or {}).items()}
            if "body" in r and r["body"] is not None and "content-type" not in headers:
                # believed wording (the service refuses a write without Content-Type)
                return bad(f"Write request id : {rid} does not contain Content-Type header or body.")
            depends = r.get("dependsOn") or []
            if not isinstance(depends, list) or any(str(d).lower() not in seen - {rid.lower()} for d in depends):
                return bad(f"Request id : {rid} depends on a request that does not come before it.")  # sandbox
            path, _, qs = url.partition("?")
            body = r.get("body")
            if isinstance(body, str):  # a base64 body (e.g. an image): not meaningful for events
                try:
                    body = json.loads(base64.b64decode(body))
                except Exception:
                    body = None
            subs.append((rid, [str(d) for d in depends],
                         Request(str(r["method"]).upper(), path, dict(parse_qsl(qs, keep_blank_values=True)),
                                 headers, body, [headers["prefer"]] if "prefer" in headers else [])))
        results: dict[str, tuple[Response, tuple | None]] = {}

        def run(rid: str, req: Request):
            sub_id = str(uuid.uuid4())
            return self.run_one(req, sub_id, crid, in_batch=True)

        if any(d for _, d, _ in subs):
            # dependsOn: executed in order; a request whose dependency failed answers 424 (json-batching page).
            for rid, depends, req in subs:
                failed = [d for d in depends if results.get(d, (Response(500),))[0].status >= 400]
                if failed:
                    status, h, body = self._error(424, "FailedDependency",  # believed code
                                                  f"The request depends on request {failed[0]}, which failed.",
                                                  str(uuid.uuid4()), crid)
                    results[rid] = (Response(424, body, h, "(failed dependency)"), None)
                else:
                    results[rid] = run(rid, req)
        else:
            # Graph dispatches up to four requests of a batch at once (Microsoft Q&A, see the module docstring);
            # each counts against the mailbox's concurrency like any request.
            with ThreadPoolExecutor(max_workers=4) as pool:
                futures = {rid: pool.submit(run, rid, req) for rid, _, req in subs}
                for rid, fut in futures.items():
                    results[rid] = fut.result()
        action = None
        responses = []
        for rid, _, _ in subs:
            resp, sub_action = results[rid]
            app.count_sub(resp.operation)
            if sub_action is not None and (action is None or sub_action[0] == "timeout"):
                action = sub_action
            item = {"id": rid, "status": resp.status, "headers": resp.headers}
            if resp.body is not None:
                item["body"] = resp.body
            responses.append(item)
        return 200, {"Content-Type": JSON_TYPE, "OData-Version": "4.0"}, {"responses": responses}, action
