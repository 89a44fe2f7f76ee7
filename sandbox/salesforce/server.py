"""The HTTP side of the Salesforce sandbox: REST API routes, OAuth token endpoint, control API.

Wire shapes copied from the REST API Developer Guide:
- Errors: a JSON list ``[{"message": ..., "errorCode": ..., "fields": [...]}]`` ("Status Codes and Error
  Responses", https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm);
  401 ``INVALID_SESSION_ID`` "Session expired or invalid".
- Query: ``{"totalSize", "done", "nextRecordsUrl"?, "records": [{"attributes": {"type", "url"}, ...}]}``,
  "up to 2,000 records can be returned at a time" (Query,
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm; Query More
  Results, https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api/resources_query_more_results.htm).
- Create: 201 ``{"id", "success": true, "errors": []}``; update/delete: 204.
- sObject Collections: up to 200 records, per-record ``{"id"?, "success", "errors": [{"statusCode",
  "message", "fields"}]}``, allOrNone rollback ``ALL_OR_NONE_OPERATION_ROLLED_BACK`` "Record rolled back
  because not all records were valid and the request was using AllOrNone header"
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm,
  .../resources_composite_sobjects_collections_update.htm, .../resources_composite_sobjects_collections_delete.htm).
- API usage: header ``Sforce-Limit-Info: api-usage=N/M``; past the allocation 403 ``REQUEST_LIMIT_EXCEEDED``
  "TotalRequests Limit exceeded." (API Usage header,
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm).
- OAuth 2.0 JWT bearer flow and client credentials flow on ``/services/oauth2/token``: reply
  ``{"access_token", "scope", "instance_url", "id", "token_type": "Bearer"}``; errors
  ``{"error", "error_description"}`` (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm,
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm).
"""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import ids
from .org import SfError, not_found, parse_datetime

if TYPE_CHECKING:  # pragma: no cover
    from . import SalesforceSandbox

MIN_VERSION = 59.0
MAX_VERSION = 66.0
BATCH = 2000
COLLECTION_MAX = 200
MAX_LOCATORS = 200
MAX_URI_AND_HEADERS = 16_384  # bytes: URI and headers of one REST request together
ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}
_VERSION_RE = re.compile(r"^/services/data/v(\d+\.\d)(?:/(.*))?$")


class Reply:
    def __init__(self, status: int, body: Any = None, headers: dict | None = None, raw: bytes | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.raw = raw


class Drop(Exception):
    """Close the connection without answering."""


def errors(exc: SfError) -> Reply:
    return Reply(exc.status, [exc.rest()])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: no 40 ms Nagle/delayed-ACK stall per keep-alive reply
    server_version = "SFDC"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # keep the sandbox quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    # -------------------------------------------------------------------------------- plumbing
    @property
    def app(self) -> "SalesforceSandbox":
        return self.server.app  # type: ignore[attr-defined]

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            if path.startswith("/_sandbox/") or path == "/_sandbox":
                reply = Control(self.app).handle(method, path, query, raw)
            elif (too_long := self._too_long()) is not None:
                reply = too_long  # refused before the API: not an API call
            else:
                self.app.pause()  # the round trip's fixed latency (no lock held)
                reply = self._api(method, path, query, raw)
                self.app.count_call(operation_of(method, path, query))
        except Drop:
            self.close_connection = True
            return
        self._send(reply, head=method == "HEAD")

    def _too_long(self) -> Reply | None:
        """Salesforce takes at most 16,384 bytes of URI and headers together: a longer URI is 414 URI Too Long, a
        request whose URI and headers together are longer is 431 Request Header Fields Too Large
        (https://help.salesforce.com/s/articleView?id=000386264)."""
        uri = len(self.path.encode())
        headers = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in self.headers.items())
        if uri > MAX_URI_AND_HEADERS:
            status, text = 414, "URI Too Long"
        elif uri + headers > MAX_URI_AND_HEADERS:
            status, text = 431, "Request Header Fields Too Large"
        else:
            return None
        return Reply(status, None, {"Content-Type": "text/html"},
                     raw=f"<html><body><h1>{status} {text}</h1></body></html>".encode())

    def _send(self, reply: Reply, head: bool = False) -> None:
        data = b""
        if reply.raw is not None:
            data = reply.raw
        elif reply.status != 204 and reply.body is not None:
            data = json.dumps(reply.body, separators=(",", ":")).encode()
        self.send_response(reply.status)
        if data:
            self.send_header("Content-Type", reply.headers.pop("Content-Type", "application/json;charset=UTF-8"))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        # headers and body in one write
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if data and not head:
            self._headers_buffer.append(data)  # type: ignore[attr-defined]
        self.flush_headers()

    # -------------------------------------------------------------------------------- API entry
    def _api(self, method: str, path: str, query: dict, raw: bytes) -> Reply:
        app = self.app
        org = app.org
        drop_after = False
        fault = app.faults.take(path)
        if fault is not None:
            if fault.kind == "http_503":
                return Reply(503, [{"message": "Service Unavailable", "errorCode": "SERVER_UNAVAILABLE"}])
            if fault.kind == "timeout":
                time.sleep(fault.delay_s)
                raise Drop()
            if fault.kind == "throttle":
                # Throttling is the concurrent long-running request limit, not the daily allocation:
                # same code, its own message ("ConcurrentRequests (Concurrent API Requests) Limit exceeded",
                # https://help.salesforce.com/s/articleView?id=000389067). The daily limit is
                # "TotalRequests Limit exceeded." (served by the call counter itself).
                return Reply(403, [{"message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                                    "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                             {"Sforce-Limit-Info": org.limit_header()})
            drop_after = fault.kind == "drop_after_write"

        if path.rstrip("/") == "/services/oauth2/token":
            reply = OAuth(app).token(method, raw, self.headers.get("Authorization"))
        elif path.rstrip("/") == "/services/data":
            reply = Reply(200, [{"label": f"v{v:.1f}", "url": f"/services/data/v{v:.1f}", "version": f"{v:.1f}"}
                                for v in _versions()])
        else:
            reply = self._data_api(method, path, query, raw)
        if drop_after:
            raise Drop()
        return reply

    def _data_api(self, method: str, path: str, query: dict, raw: bytes) -> Reply:
        org = self.app.org
        m = _VERSION_RE.match(path)
        if not m:
            return errors(not_found())
        auth = self.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        user_id = org.session_user(token)
        if user_id is None:
            return Reply(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        allowed, _used = org.try_count_call()
        limit = {"Sforce-Limit-Info": org.limit_header()}
        if not allowed:
            return Reply(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                         limit)
        version = m.group(1)
        if not (MIN_VERSION <= float(version) <= MAX_VERSION):
            reply = errors(not_found())
        else:
            try:
                reply = Api(self.app, version, user_id, self.headers).route(method, (m.group(2) or "").strip("/"),
                                                                             query, raw)
            except SfError as exc:
                reply = errors(exc)
        reply.headers.update({"Sforce-Limit-Info": org.limit_header()})
        return reply


def operation_of(method: str, path: str, query: dict) -> str:
    """The name a call is counted under (``calls_by_operation``): query, queryMore, describe, create,
    collection create, ..."""
    if path.rstrip("/") == "/services/oauth2/token":
        return "oauth token"
    if path.rstrip("/") == "/services/data":
        return "versions"
    m = _VERSION_RE.match(path)
    if not m:
        return "(unknown)"
    parts = [p for p in (m.group(2) or "").strip("/").split("/") if p]
    if not parts:
        return "resources"
    head = parts[0]
    if head in ("query", "queryAll"):
        return head + ("More" if len(parts) > 1 else "")
    if head == "limits":
        return "limits"
    if head == "sobjects":
        if len(parts) == 1:
            return "describeGlobal"
        if len(parts) == 2:
            return {"GET": "sobject info", "POST": "create"}.get(method, "(unknown)")
        if parts[2] == "describe":
            return "describe"
        return {"GET": "retrieve", "PATCH": "update", "DELETE": "delete"}.get(method, "(unknown)")
    if head == "composite" and len(parts) >= 2 and parts[1] == "sobjects":
        return {"GET": "collection retrieve", "POST": "collection create", "PATCH": "collection update",
                "DELETE": "collection delete"}.get(method, "(unknown)")
    return "(unknown)"


def soql_object(text: str) -> str:
    """The sObject a SOQL query reads (its outer FROM; subqueries in the SELECT list are skipped)."""
    depth, outer = 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            outer.append(ch)
    m = re.search(r"\bFROM\s+(\w+)", "".join(outer), re.IGNORECASE)
    return m.group(1) if m else "(unknown)"


def _versions() -> list[float]:
    v, out = MIN_VERSION, []
    while v <= MAX_VERSION:
        out.append(v)
        v += 1.0
    return out


def _json(raw: bytes) -> Any:
    if not raw:
        raise SfError("JSON_PARSER_ERROR", "The request body is either invalid or incomplete.")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SfError("JSON_PARSER_ERROR", f"Unexpected character: {exc.msg} at [line:{exc.lineno}, column:{exc.colno}]")


def _method_not_allowed(method: str, allowed: str) -> SfError:
    return SfError("METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}", status=405)


class Api:
    """The authenticated /services/data/vXX.X/ resources."""

    def __init__(self, app: "SalesforceSandbox", version: str, user_id: str, headers: Any) -> None:
        self.app = app
        self.org = app.org
        self.version = version
        self.user_id = user_id
        self.headers = headers

    def route(self, method: str, rest: str, query: dict, raw: bytes) -> Reply:
        parts = rest.split("/") if rest else []
        if not parts:
            if method != "GET":
                raise _method_not_allowed(method, "GET,HEAD")
            base = f"/services/data/v{self.version}"
            return Reply(200, {k: f"{base}/{k}" for k in ("sobjects", "query", "queryAll", "composite", "limits")})
        head = parts[0]
        if head == "limits" and len(parts) == 1:
            used = self.org.api_calls()
            return Reply(200, {"DailyApiRequests": {"Max": self.org.daily_api_limit,
                                                    "Remaining": max(0, self.org.daily_api_limit - used)}})
        if head in ("query", "queryAll"):
            if method != "GET":
                raise _method_not_allowed(method, "GET,HEAD")
            return self.query(head == "queryAll", parts[1] if len(parts) > 1 else None, query)
        if head == "sobjects":
            return self.sobjects(method, parts[1:], query, raw)
        if head == "composite" and len(parts) >= 2 and parts[1] == "sobjects":
            return self.collections(method, parts[2:], query, raw)
        raise not_found()

    # ------------------------------------------------------------------------------ query
    def query(self, include_deleted: bool, locator: str | None, query: dict) -> Reply:
        org = self.org
        if locator:
            loc, _, pos = locator.rpartition("-")
            with org.lock:
                state = org.locators.get(loc)
                if state is None or not pos.isdigit() or state["include_deleted"] != include_deleted:
                    raise SfError("INVALID_QUERY_LOCATOR", "invalid query locator")
                return self._page(loc, state, int(pos))
        q = (query.get("q") or [""])[0]
        if not q.strip():
            raise SfError("MALFORMED_QUERY", "A query string has to be specified")
        batch = BATCH
        opts = self.headers.get("Sforce-Query-Options") or ""
        mb = re.search(r"batchSize\s*=\s*(\d+)", opts)
        if mb:
            batch = min(BATCH, max(200, int(mb.group(1))))
        total, records = org.query(q, self.version, include_deleted)
        typ = (records[0].get("attributes") or {}).get("type") if records else None
        obj = typ or soql_object(q)
        self.app.count_query(obj, total)
        with org.lock:
            loc = org._ids.new("01g")  # query locators look like 01gRO0000016PIAYA2
            state = {"records": records, "total": total, "batch": batch, "include_deleted": include_deleted,
                     "object": obj}
            if total > batch:
                org.locators[loc] = state
                while len(org.locators) > MAX_LOCATORS:
                    org.locators.pop(next(iter(org.locators)))
            return self._page(loc, state, 0)

    def _page(self, loc: str, state: dict, pos: int) -> Reply:
        records = state["records"]
        batch = state["batch"]
        page = records[pos : pos + batch]
        self.app.count_page(state.get("object", "(unknown)"))
        body: dict[str, Any] = {"totalSize": state["total"], "done": pos + batch >= len(records)}
        if not body["done"]:
            kind = "queryAll" if state["include_deleted"] else "query"
            body["nextRecordsUrl"] = f"/services/data/v{self.version}/{kind}/{loc}-{pos + batch}"
        body["records"] = page
        return Reply(200, body)

    # ------------------------------------------------------------------------------ sObjects
    def sobjects(self, method: str, parts: list[str], query: dict, raw: bytes) -> Reply:
        org = self.org
        if not parts:
            if method != "GET":
                raise _method_not_allowed(method, "GET,HEAD")
            with org.lock:
                objs = org.objects
                return Reply(200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [
                    {k: v for k, v in o.describe(self.version).items() if k not in ("fields", "childRelationships")}
                    for o in objs.values()]})
        with org.lock:
            obj = org._object(parts[0])
        if len(parts) == 1:
            if method == "GET":
                with org.lock:
                    d = obj.describe(self.version)
                return Reply(200, {"objectDescribe": {k: v for k, v in d.items()
                                                      if k not in ("fields", "childRelationships")},
                                   "recentItems": []})
            if method == "POST":
                body = _json(raw)
                if not isinstance(body, dict):
                    raise SfError("JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from START_ARRAY")
                self.app.count_written("create", obj.name)
                new_id = self._atomic(lambda: org.create(obj.name, body, self.user_id))
                return Reply(201, {"id": new_id, "success": True, "errors": []})
            raise _method_not_allowed(method, "GET,HEAD,POST")
        if len(parts) == 2 and parts[1] == "describe":
            if method != "GET":
                raise _method_not_allowed(method, "GET,HEAD")
            with org.lock:
                return Reply(200, obj.describe(self.version))
        if len(parts) == 2:
            rid = parts[1]
            if method == "GET":
                fields = None
                if query.get("fields"):
                    fields = [f.strip() for f in query["fields"][0].split(",") if f.strip()]
                return Reply(200, org.get(obj.name, rid, self.version, fields))
            if method == "PATCH":
                body = _json(raw)
                if not isinstance(body, dict):
                    raise SfError("JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from START_ARRAY")
                self.app.count_written("update", obj.name)
                self._atomic(lambda: org.update(obj.name, rid, body, self.user_id))
                return Reply(204)
            if method == "DELETE":
                self.app.count_written("delete", obj.name)
                self._atomic(lambda: org.delete(obj.name, rid, self.user_id))
                return Reply(204)
            raise _method_not_allowed(method, "GET,PATCH,DELETE,HEAD")
        if len(parts) == 3 and obj.name == "Event" and parts[2] == "fromThisEventOnwards":
            # Lightning Experience event series: this event and the later ones; from the first, the whole series
            # (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_event_series_delete.htm)
            if method != "DELETE":
                raise _method_not_allowed(method, "DELETE")
            self._atomic(lambda: org.delete_from_this_event_onwards(parts[1], self.user_id))
            return Reply(200, {"success": "We're deleting the selected events from the series. Wait for all events "
                                          "to be removed."})
        raise not_found()

    def _atomic(self, fn: Any) -> Any:
        org = self.org
        with org.lock, org.transaction() as journal:
            try:
                return fn()
            except SfError:
                org.rollback(journal)
                raise

    # ------------------------------------------------------------------------------ collections
    def collections(self, method: str, parts: list[str], query: dict, raw: bytes) -> Reply:
        org = self.org
        if parts:
            if method != "GET" or len(parts) != 1:
                raise not_found()
            return self._retrieve(parts[0], query)
        if method == "DELETE":
            id_list = [i for i in (query.get("ids") or [""])[0].split(",") if i]
            all_or_none = (query.get("allOrNone") or ["false"])[0].lower() == "true"
            if not id_list:
                raise SfError("MISSING_ARGUMENT", "ids parameter is required", ["ids"])
            if len(id_list) > COLLECTION_MAX:
                raise SfError("EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
            items = [(rid, None) for rid in id_list]
        elif method in ("POST", "PATCH"):
            body = _json(raw)
            if not isinstance(body, dict) or not isinstance(body.get("records"), list):
                raise SfError("JSON_PARSER_ERROR", "The request body must contain a records list")
            all_or_none = bool(body.get("allOrNone"))
            records = body["records"]
            if len(records) > COLLECTION_MAX:
                raise SfError("EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
            items = []
            for rec in records:
                typ = (rec.get("attributes") or {}).get("type") if isinstance(rec, dict) else None
                if not typ:
                    raise SfError("INVALID_TYPE", "Must send a concrete entity type.")
                rid = next((v for k, v in rec.items() if k.lower() == "id"), None)
                items.append((rid, rec))
        else:
            raise _method_not_allowed(method, "GET,POST,PATCH,DELETE")

        verb = {"POST": "create", "PATCH": "update", "DELETE": "delete"}[method]
        for rid, rec in items:
            if rec is not None:
                typ = (rec.get("attributes") or {}).get("type") or "(unknown)"
            else:
                with org.lock:
                    full = ids.to18(rid)
                    typ = (org.type_of(full) if full else None) or "(unknown)"
            self.app.count_written(verb, typ)
        results: list[dict] = []
        failed = False
        with org.lock, org.transaction() as journal:
            for rid, rec in items:
                out = self._one(method, rid, rec)
                failed = failed or not out["success"]
                results.append(out)
            if all_or_none and failed:
                org.rollback(journal)
                results = [r if not r["success"] else
                           {**({"id": r["id"]} if method != "POST" else {}), "success": False, "errors": [ROLLED_BACK]}
                           for r in results]
        return Reply(200, [{k: v for k, v in r.items() if k != "_id"} for r in results])

    def _one(self, method: str, rid: Any, rec: dict | None) -> dict:
        org = self.org
        with org.transaction() as journal:
            try:
                if method == "POST":
                    typ = rec["attributes"]["type"]  # type: ignore[index]
                    body = {k: v for k, v in rec.items() if k != "attributes"}  # type: ignore[union-attr]
                    new_id = org.create(typ, body, self.user_id)
                    return {"id": new_id, "success": True, "errors": []}
                if method == "PATCH":
                    if not rid:
                        return {"success": False, "errors": [{"statusCode": "MISSING_ARGUMENT",
                                                              "message": "Id not specified in an update call",
                                                              "fields": []}]}
                    typ = rec["attributes"]["type"]  # type: ignore[index]
                    body = {k: v for k, v in rec.items() if k != "attributes" and k.lower() != "id"}  # type: ignore[union-attr]
                    full = ids.to18(rid)
                    if full is None or org.type_of(full) != org._object(typ).name:
                        raise SfError("MALFORMED_ID", f"{typ} ID: id value of incorrect type: {rid}", ["Id"])
                    org.update(typ, full, body, self.user_id)
                    return {"id": full, "success": True, "errors": []}
                full = ids.to18(rid)
                typ = org.type_of(full)
                if full is None or typ is None:
                    raise SfError("MALFORMED_ID", f"malformed id {rid}")
                try:
                    org.delete(typ, full, self.user_id)
                except SfError as exc:
                    if exc.status == 404 and exc.code == "NOT_FOUND":
                        raise SfError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id") from None
                    raise
                return {"id": full, "success": True, "errors": []}
            except SfError as exc:
                org.rollback(journal)
                # failed records carry no id; only rolled-back ones keep theirs (collections doc examples)
                return {"success": False, "errors": [exc.collection()], "_id": ids.to18(rid) if rid else None}

    def _retrieve(self, typ: str, query: dict) -> Reply:
        id_list = [i for i in (query.get("ids") or [""])[0].split(",") if i]
        fields = [f for f in (query.get("fields") or [""])[0].split(",") if f]
        if not id_list or not fields:
            raise SfError("MISSING_ARGUMENT", "ids and fields parameters are required")
        out: list[Any] = []
        for rid in id_list:
            try:
                out.append(self.org.get(typ, rid, self.version, fields))
            except SfError as exc:
                if exc.status != 404:
                    raise
                out.append(None)
        return Reply(200, out)


class OAuth:
    """``/services/oauth2/token`` for the JWT bearer grant and the client credentials grant."""

    def __init__(self, app: "SalesforceSandbox") -> None:
        self.app = app
        self.org = app.org

    @staticmethod
    def fail(error: str, description: str, status: int = 400) -> Reply:
        return Reply(status, {"error": error, "error_description": description})

    def granted(self, user: dict) -> Reply:
        token = self.org.new_session(user["Id"])
        return Reply(200, {
            "access_token": token,
            "scope": "api",
            "instance_url": self.app.instance_url,
            "id": f"https://login.salesforce.com/id/{self.org.org_id}/{user['Id']}",
            "token_type": "Bearer",
            "issued_at": str(int(time.time() * 1000)),
        })

    def token(self, method: str, raw: bytes, authorization: str | None) -> Reply:
        if method != "POST":
            return self.fail("invalid_request", "must use HTTP POST", 400)
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self.jwt_bearer(form.get("assertion") or "")
        if grant == "client_credentials":
            key, secret = form.get("client_id"), form.get("client_secret")
            if authorization and authorization.lower().startswith("basic "):
                try:
                    key, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
                except ValueError:
                    return self.fail("invalid_client", "invalid client credentials")
            app = self.org.cc_apps.get(key or "")
            if app is None or app[0] != secret:
                return self.fail("invalid_client", "invalid client credentials")
            user = self.org.user_by_username(app[1])
            if user is None:
                return self.fail("invalid_grant", "no client credentials user enabled")
            return self.granted(user)
        if not grant:
            return self.fail("invalid_request", "grant type not supported")
        return self.fail("unsupported_grant_type", "grant type not supported")

    def jwt_bearer(self, assertion: str) -> Reply:
        import jwt
        from cryptography import x509

        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self.fail("invalid_grant", "invalid assertion")
        app = self.org.jwt_apps.get(str(claims.get("iss") or ""))
        if app is None:
            return self.fail("invalid_client_id", "client identifier invalid")
        cert_pem, username = app
        try:
            key = x509.load_pem_x509_certificate(cert_pem).public_key()
            jwt.decode(assertion, key, algorithms=["RS256"],  # type: ignore[arg-type]
                       options={"verify_exp": False, "verify_aud": False, "verify_iat": False, "verify_nbf": False})
        except (jwt.PyJWTError, ValueError):
            return self.fail("invalid_grant", "invalid assertion")
        aud = str(claims.get("aud") or "")
        auds = {"https://login.salesforce.com", "https://test.salesforce.com", self.app.instance_url}
        if aud not in auds and not re.fullmatch(r"https://[A-Za-z0-9-]+\.my\.salesforce\.com", aud):
            return self.fail("invalid_grant", "audience is invalid")
        try:
            exp = float(claims.get("exp"))  # simple-salesforce sends exp as a string
        except (TypeError, ValueError):
            return self.fail("invalid_grant", "invalid assertion")
        if exp < time.time():  # real time: the client signs with its own clock, not the sandbox clock
            return self.fail("invalid_grant", "invalid assertion")
        sub = str(claims.get("sub") or "")
        user = self.org.user_by_username(sub)
        if sub.lower() != username.lower() or user is None:
            return self.fail("invalid_grant", "user hasn't approved this consumer")
        return self.granted(user)


class Control:
    """``/_sandbox/...``: state, reset, clock, faults, settings. Not counted, no session needed."""

    def __init__(self, app: "SalesforceSandbox") -> None:
        self.app = app

    @staticmethod
    def bad(msg: str) -> Reply:
        return Reply(400, {"error": msg})

    def handle(self, method: str, path: str, query: dict, raw: bytes) -> Reply:
        app = self.app
        route = path.rstrip("/")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self.bad("body is not JSON")
        if not isinstance(body, dict):
            return self.bad("body must be a JSON object")
        if route == "/_sandbox/state" and method == "GET":
            state = app.org.dump()
            state["faults"] = app.faults.to_json()
            state["now"] = app.clock.now().isoformat()
            return Reply(200, state)
        if route == "/_sandbox/reset" and method == "POST":
            app.org.reset()
            app.reset_counts()
            return Reply(200, {"reset": True, "session_id": app.org.session_id})
        if route == "/_sandbox/clock" and method in ("POST", "GET"):
            if method == "POST":
                if "set" in body:
                    when = parse_datetime(str(body["set"])) if isinstance(body["set"], str) else None
                    if when is None:
                        try:
                            when = datetime.fromisoformat(str(body["set"]))
                        except ValueError:
                            return self.bad("set must be an ISO 8601 datetime")
                    app.clock.set(when)
                elif "advance_seconds" in body:
                    try:
                        app.clock.advance(timedelta(seconds=float(body["advance_seconds"])))
                    except (TypeError, ValueError):
                        return self.bad("advance_seconds must be a number")
                elif body.get("reset"):
                    app.clock.reset()
                else:
                    return self.bad('expected {"set": iso} | {"advance_seconds": n} | {"reset": true}')
            return Reply(200, {"now": app.clock.now().isoformat()})
        if route == "/_sandbox/faults":
            if method == "POST":
                try:
                    fault = app.faults.add(
                        str(body.get("kind")), int(body.get("count", 1)), body.get("route"),
                        int(body.get("backoff_ms", 500)), float(body.get("delay_s", 2.0)),
                        int(body.get("after", 0)),
                    )
                except (TypeError, ValueError) as exc:
                    return self.bad(str(exc))
                return Reply(200, {"armed": fault.to_json(), "faults": app.faults.to_json()})
            if method == "DELETE":
                app.faults.clear()
                return Reply(200, {"faults": []})
            if method == "GET":
                return Reply(200, {"faults": app.faults.to_json()})
        if route == "/_sandbox/settings":
            if method == "POST":
                org = app.org
                unknown = set(body) - {"shared_activities", "required_custom_field", "daily_api_limit", "latency_ms"}
                if unknown:
                    return self.bad(f"unknown settings: {', '.join(sorted(unknown))}")
                if "latency_ms" in body:
                    try:
                        app.latency_ms = body["latency_ms"]
                    except ValueError as exc:
                        return self.bad(str(exc))
                if "shared_activities" in body:
                    org.set_shared_activities(bool(body["shared_activities"]))
                if "required_custom_field" in body:
                    org.set_required_custom_field(body["required_custom_field"] or None)
                if "daily_api_limit" in body:
                    try:
                        org.set_daily_limit(int(body["daily_api_limit"]))
                    except (TypeError, ValueError):
                        return self.bad("daily_api_limit must be an integer")
            if method in ("POST", "GET"):
                return Reply(200, {**app.org.settings(), "latency_ms": app.latency_ms})
        if route == "/_sandbox/calls" and method == "GET":
            return Reply(200, app.counts())
        return Reply(404, {"error": f"no control route {method} {path}"})
