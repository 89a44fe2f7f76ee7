"""A fixed latency on every sandbox API request (Salesforce REST, EWS, Graph and its login server): a request takes
at least the latency, concurrent requests overlap (no lock is held while sleeping), a $batch sleeps once, the control
API is not delayed, and the setting is the same on the three servers (``Sandbox(latency_ms=)``, ``set_latency``, the
``latency_ms`` key of every ``/_sandbox/settings``, ``python -m sandbox --latency-ms``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msal
import pytest
import requests

from sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
ANN, CAROL, ALICE = "ann@example.com", "carol@example.com", "alice@example.com"  # Graph, EWS, Salesforce user
SCOPE = ["https://graph.microsoft.com/.default"]
VIEW = {"startDateTime": "2026-11-01T00:00:00Z", "endDateTime": "2027-01-01T00:00:00Z"}

GET_FOLDER = """<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
               xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
               xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
  <soap:Header>
    <t:RequestServerVersion Version="Exchange2016"/>
    <t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>carol@example.com</t:PrimarySmtpAddress>
    </t:ConnectingSID></t:ExchangeImpersonation>
  </soap:Header>
  <soap:Body>
    <m:GetFolder>
      <m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>
      <m:FolderIds><t:DistinguishedFolderId Id="calendar"/></m:FolderIds>
    </m:GetFolder>
  </soap:Body>
</soap:Envelope>"""


@pytest.fixture(scope="module")
def _sb(tmp_path_factory):
    with Sandbox(tmp_path_factory.mktemp("latency-sandbox")) as sb:
        sb.salesforce.org.add_user(ALICE, name="Alice Adams")
        sb.org.add_mailbox(ANN, kind="graph")
        sb.org.add_mailbox(CAROL)
        yield sb


@pytest.fixture
def sb(_sb):
    _sb.set_latency(0)
    _sb.graph.max_concurrency = None  # these tests are about time, not Graph's concurrency limit
    yield _sb
    _sb.set_latency(0)
    _sb.graph.reset_settings()


def _session(ca_file=None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE must not win
    if ca_file is not None:
        s.verify = str(ca_file)
    return s


def _token(sb) -> str:
    app = msal.ConfidentialClientApplication(sb.graph.client_id, authority=sb.graph.authority,
                                             client_credential=sb.graph.client_secret,
                                             http_client=_session(sb.graph.ca_file), instance_discovery=False)
    return app.acquire_token_for_client(SCOPE)["access_token"]


def _caller(sb, server: str):
    """A function making one API request to ``server`` on a session of its own (kept alive), checking the answer."""
    if server == "salesforce":
        s = _session(sb.salesforce.ca_file)
        url = f"{sb.salesforce.instance_url}/services/data/v59.0/query"
        headers = {"Authorization": f"Bearer {sb.salesforce.session_id}"}

        def call():
            r = s.get(url, params={"q": "SELECT Id FROM User"}, headers=headers, timeout=30)
            assert r.status_code == 200 and r.json()["totalSize"] >= 1
    elif server == "exchange":
        s = _session()
        s.auth = sb.exchange.service_account  # Basic: one request per call, no handshake

        def call():
            r = s.post(sb.exchange.url, data=GET_FOLDER.encode(), timeout=30,
                       headers={"Content-Type": "text/xml; charset=utf-8"})
            assert r.status_code == 200 and b"NoError" in r.content
    elif server == "graph":
        s = _session(sb.graph.ca_file)
        headers = {"Authorization": f"Bearer {_token(sb)}"}

        def call():
            r = s.get(f"{sb.graph.graph_url}/users/{ANN}/calendarView", params=VIEW, headers=headers, timeout=30)
            assert r.status_code == 200 and r.json()["value"] == []
    else:  # the Graph login server: a client-credentials token request
        s = _session(sb.graph.ca_file)
        url = f"{sb.graph.authority}/oauth2/v2.0/token"

        def call():
            r = s.post(url, timeout=30, data={"grant_type": "client_credentials", "scope": SCOPE[0],
                                              "client_id": sb.graph.client_id,
                                              "client_secret": sb.graph.client_secret})
            assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    return call


def _control_url(sb, server: str) -> tuple[str, object]:
    return {"salesforce": (sb.salesforce.instance_url + "/_sandbox/", sb.salesforce.ca_file),
            "exchange": (sb.exchange.control_url + "/", None),
            "graph": (sb.graph.control_url + "/", sb.graph.ca_file)}[server]


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


SERVERS = ["salesforce", "exchange", "graph", "graph-login"]


@pytest.mark.parametrize("server", SERVERS)
def test_a_request_takes_at_least_the_latency(sb, server):
    call = _caller(sb, server)
    call()  # connect (TLS, token) without latency
    sb.set_latency(400)
    assert _timed(call) >= 0.4
    sb.set_latency(0)
    quick = min(_timed(call) for _ in range(3))
    sb.set_latency(400)
    slow = min(_timed(call) for _ in range(2))
    assert slow - quick >= 0.38  # the latency is added to the server's own time, not hidden in it


@pytest.mark.parametrize("server", SERVERS)
def test_without_latency_there_is_no_hidden_delay_per_request(sb, server):
    """Latency 0 means none: no Nagle / delayed-ACK stall (~40 ms a reply) on a kept-alive connection."""
    call = _caller(sb, server)
    call()
    n = 25
    took = _timed(lambda: [call() for _ in range(n)])
    assert took / n < 0.025, f"{took / n * 1000:.0f} ms a request without latency"


@pytest.mark.parametrize("server", SERVERS)
def test_concurrent_requests_overlap_their_latency(sb, server):
    n, latency = 6, 0.6
    calls = [_caller(sb, server) for _ in range(n)]
    for call in calls:
        call()  # open every connection before the clock starts
    sb.set_latency(latency * 1000)
    barrier, took, errors = threading.Barrier(n + 1), [], []

    def run(call):
        barrier.wait()
        try:
            took.append(_timed(call))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert not errors, errors
    assert len(took) == n and min(took) >= latency
    # one latency (plus the server's own work), not n: sequential requests would take n * 0.6 = 3.6 s
    assert elapsed < n * latency / 2, f"{n} concurrent requests took {elapsed:.2f} s"


def test_a_graph_batch_takes_the_latency_once_not_per_sub_request(sb):
    token = _token(sb)
    s = _session(sb.graph.ca_file)
    body = {"requests": [{"id": str(i), "method": "GET",
                          "url": f"/users/{ANN}/calendarView?startDateTime={VIEW['startDateTime']}"
                                 f"&endDateTime={VIEW['endDateTime']}"} for i in range(10)]}

    def batch():
        r = s.post(f"{sb.graph.graph_url}/$batch", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200 and [x["status"] for x in r.json()["responses"]] == [200] * 10

    batch()
    sb.set_latency(600)
    before = sb.graph.counts()
    elapsed = _timed(batch)
    # once per HTTP request: per sub-request (four at a time) it would be 3 x 0.6 s, one after another 6 s
    assert 0.6 <= elapsed < 1.2
    after = sb.graph.counts()
    assert after["calls"] - before["calls"] == 1 and after["sub_requests"] - before["sub_requests"] == 10


@pytest.mark.parametrize("server", ["salesforce", "exchange", "graph"])
def test_the_control_api_sets_and_reads_latency_ms_and_is_not_delayed(sb, server):
    url, ca = _control_url(sb, server)
    s = _session(ca)
    r = s.post(url + "settings", json={"latency_ms": 1500}, timeout=10)
    assert r.status_code == 200 and r.json()["latency_ms"] == 1500
    t = time.perf_counter()
    got = s.get(url + "settings", timeout=10)
    assert time.perf_counter() - t < 1.5  # control routes are not API calls: no latency
    assert got.json()["latency_ms"] == 1500
    for bad in (-1, "soon", None, True):
        r = s.post(url + "settings", json={"latency_ms": bad}, timeout=10)
        assert r.status_code == 400, bad
    assert s.get(url + "settings", timeout=10).json()["latency_ms"] == 1500  # a refused value changes nothing
    server_obj = {"salesforce": sb.salesforce, "exchange": sb.exchange, "graph": sb.graph}[server]
    assert server_obj.latency_ms == 1500 and server_obj.latency_s == 1.5


def test_set_latency_and_the_constructor_set_all_three_servers(sb, tmp_path):
    sb.set_latency(125)
    assert (sb.salesforce.latency_ms, sb.exchange.latency_ms, sb.graph.latency_ms) == (125, 125, 125)
    with pytest.raises(ValueError):
        sb.set_latency(-3)
    assert sb.graph.settings()["latency_ms"] == 125
    with Sandbox(tmp_path / "own", latency_ms=40) as other:
        assert (other.salesforce.latency_ms, other.exchange.latency_ms, other.graph.latency_ms) == (40, 40, 40)


def test_python_m_sandbox_latency_ms_option(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--latency-ms", "250", "--workdir", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        for name in ("salesforce", "exchange", "graph"):
            s = _session(info[name].get("ca_file"))
            assert s.get(info[name]["control"] + "settings", timeout=10).json()["latency_ms"] == 250, name
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_exchange_calls_route_counts_ews_requests_by_operation(sb):
    """The benchmark reads each server's counts over ``GET /_sandbox/calls`` (EWS: SOAP requests by operation)."""
    url, _ = _control_url(sb, "exchange")
    before = requests.get(url + "calls", timeout=10).json()
    call = _caller(sb, "exchange")
    call()
    call()
    after = requests.get(url + "calls", timeout=10).json()
    assert after["calls"] - before["calls"] == 2
    assert after["calls_by_operation"]["GetFolder"] - before["calls_by_operation"].get("GetFolder", 0) == 2
