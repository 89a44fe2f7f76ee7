"""Sessions, OAuth (JWT bearer, client credentials), API-call counting, fault injection, control API."""

from __future__ import annotations

import datetime as dt
import time

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
)

from .conftest_salesforce import T0, hours, people, sb, sf, sf_server  # noqa: F401

CONSUMER_KEY = "3MVG9calsyncSandboxConsumerKey"


def _keypair() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "calsync connected app")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def keys():
    return _keypair(), _keypair()


def jwt_client(sb, privatekey: str, username: str = "ann@example.com", consumer_key: str = CONSUMER_KEY,
               domain: str = "login") -> Salesforce:
    session = sb.route_login(sb.client_session(), domain)
    return Salesforce(username=username, consumer_key=consumer_key, privatekey=privatekey, domain=domain,
                      session=session, version="59.0")


def test_wrong_or_expired_session_is_401(sb, people):
    bad = Salesforce(instance_url=sb.instance_url, session_id="00Dnope!bad", session=sb.client_session(),
                     version="59.0")
    with pytest.raises(SalesforceExpiredSession) as exc:
        bad.query("SELECT Id FROM Event")
    assert exc.value.status == 401
    assert exc.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    token = sb.org.new_session(people.ann)
    mine = Salesforce(instance_url=sb.instance_url, session_id=token, session=sb.client_session(), version="59.0")
    assert mine.query("SELECT Id FROM Event")["totalSize"] == 0
    sb.org.expire_session(token)
    with pytest.raises(SalesforceExpiredSession):
        mine.query("SELECT Id FROM Event")
    assert sb.org.api_calls() == 1  # refused calls are not counted


def test_client_session_ignores_requests_ca_bundle(sb, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/ca.pem")
    s = Salesforce(instance_url=sb.instance_url, session_id=sb.session_id, session=sb.client_session(),
                   version="59.0")
    assert s.query("SELECT Id FROM Event")["done"] is True


def test_jwt_bearer_login(sb, people, keys):
    (pem, cert), _other = keys
    sb.org.configure_jwt(CONSUMER_KEY, cert, "ann@example.com")
    client = jwt_client(sb, pem)
    assert client.sf_instance == sb.instance_url.removeprefix("https://")
    assert client.session_id != sb.session_id
    eid = client.Event.create({"Subject": "via JWT", "StartDateTime": "2026-11-24T09:00:00Z",
                               "DurationInMinutes": 15})["id"]
    assert client.Event.get(eid)["OwnerId"] == people.ann  # the token's user owns what it creates


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("consumer", "invalid_client_id", "client identifier invalid"),
        ("signature", "invalid_grant", "invalid assertion"),
        ("username", "invalid_grant", "user hasn't approved this consumer"),
        ("audience", "invalid_grant", "audience is invalid"),
    ],
)
def test_jwt_bearer_refusals(sb, people, keys, case, code, message):
    (pem, cert), (other_pem, _other_cert) = keys
    sb.org.configure_jwt(CONSUMER_KEY, cert, "ann@example.com")
    kwargs = {"privatekey": pem}
    if case == "consumer":
        kwargs["consumer_key"] = "3MVG9someoneElse"
    elif case == "signature":
        kwargs["privatekey"] = other_pem
    elif case == "username":
        kwargs["username"] = "bob@example.com"
    elif case == "audience":
        kwargs["domain"] = "example"  # aud becomes https://example.salesforce.com
    with pytest.warns(UserWarning) if case == "username" else _nothing():
        with pytest.raises(SalesforceAuthenticationFailed) as exc:
            jwt_client(sb, **kwargs)
    assert (exc.value.code, exc.value.auth_message) == (code, message)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_jwt_expired_assertion(sb, people, keys):
    (pem, cert), _ = keys
    sb.org.configure_jwt(CONSUMER_KEY, cert, "ann@example.com")
    assertion = jwt.encode({"iss": CONSUMER_KEY, "sub": "ann@example.com", "aud": "https://login.salesforce.com",
                            "exp": int(time.time()) - 60}, pem, algorithm="RS256")
    r = sb.client_session().post(f"{sb.instance_url}/services/oauth2/token",
                                 data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                       "assertion": assertion})
    assert r.status_code == 400 and r.json() == {"error": "invalid_grant", "error_description": "invalid assertion"}


def test_client_credentials_login(sb, people):
    sb.org.configure_client_credentials("3MVG9cc", "s3cret", "bob@example.com")
    session = sb.route_login(sb.client_session(), "calsync-dev.my")
    client = Salesforce(consumer_key="3MVG9cc", consumer_secret="s3cret", domain="calsync-dev.my",
                        session=session, version="59.0")
    eid = client.Event.create({"Subject": "cc", "StartDateTime": "2026-11-24T09:00:00Z", "DurationInMinutes": 15})["id"]
    assert client.Event.get(eid)["OwnerId"] == people.bob
    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(consumer_key="3MVG9cc", consumer_secret="wrong", domain="calsync-dev.my",
                   session=sb.route_login(sb.client_session(), "calsync-dev.my"))
    assert exc.value.code == "invalid_client"


def test_daily_allocation_rolling_day_and_usage_header(sb, sf):
    sb.org.set_daily_limit(3)
    for _ in range(3):
        sf.query("SELECT Id FROM Event")
    assert sf.api_usage["api-usage"].used == 3 and sf.api_usage["api-usage"].total == 3
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.query("SELECT Id FROM Event")
    assert exc.value.status == 403
    assert exc.value.content == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    sb.clock.advance(dt.timedelta(hours=23, minutes=59))
    with pytest.raises(SalesforceRefusedRequest):
        sf.query("SELECT Id FROM Event")
    sb.clock.advance(dt.timedelta(minutes=2))  # the first calls fall out of the rolling day
    sf.query("SELECT Id FROM Event")
    assert sb.org.api_calls() == 1


def test_faults_503_throttle_timeout_and_route_filter(sb, sf, people):
    sb.faults.add("http_503", count=2)
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError) as exc:
            sf.query("SELECT Id FROM Event")
        assert exc.value.status == 503
    assert sf.query("SELECT Id FROM Event")["totalSize"] == 0
    sb.faults.add("throttle", route="/composite/")
    assert sf.query("SELECT Id FROM Event")["done"]  # other routes are unaffected
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.restful("composite/sobjects", method="POST", json={"records": []})
    assert exc.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    sb.faults.add("timeout", delay_s=0.2)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.query("SELECT Id FROM Event")
    assert time.monotonic() - started >= 0.2


def test_drop_after_write_applies_the_write(sb, sf, people):
    sb.faults.add("drop_after_write", route="/sobjects/Event")
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.Event.create({"Subject": "written", "StartDateTime": "2026-11-24T09:00:00Z", "DurationInMinutes": 30})
    assert [e["Subject"] for e in sb.org.events()] == ["written"]


def test_control_api(sb, sf, people):
    http = sb.client_session()
    base = f"{sb.instance_url}/_sandbox"
    sb.org.add_event(people.ann, "seeded", T0, T0 + hours(1), invitee_ids=[people.carla])
    state = http.get(f"{base}/state").json()
    assert state["settings"] == {"shared_activities": True, "required_custom_field": None, "daily_api_limit": 100000}
    assert [e["Subject"] for e in state["objects"]["Event"]] == ["seeded"]
    assert state["objects"]["Event"][0]["StartDateTime"] == "2026-11-24T09:00:00.000+0000"
    assert len(state["objects"]["EventRelation"]) == 1
    assert http.post(f"{base}/clock", json={"set": "2026-12-01T10:00:00Z"}).json()["now"].startswith("2026-12-01T10:00")
    assert http.post(f"{base}/clock", json={"advance_seconds": 3600}).json()["now"].startswith("2026-12-01T11:00")
    eid = sf.Event.create({"Subject": "stamped", "StartDateTime": "2026-11-24T09:00:00Z", "DurationInMinutes": 30})["id"]
    assert sf.Event.get(eid)["CreatedDate"] == "2026-12-01T11:00:00.000+0000"
    assert http.post(f"{base}/settings", json={"shared_activities": False, "required_custom_field": "Region",
                                               "daily_api_limit": 50}).json() == {
        "shared_activities": False, "required_custom_field": "Region__c", "daily_api_limit": 50, "latency_ms": 0}
    assert sf.Event.describe()["fields"][-1]["name"] != "EventWhoIds"
    armed = http.post(f"{base}/faults", json={"kind": "http_503", "count": 1, "route": "/query"}).json()
    assert armed["faults"][0]["kind"] == "http_503"
    assert http.delete(f"{base}/faults").json() == {"faults": []}
    assert http.post(f"{base}/faults", json={"kind": "explode"}).status_code == 400
    calls = sb.org.api_calls()
    http.get(f"{base}/state")
    assert sb.org.api_calls() == calls  # control calls are free
    assert http.post(f"{base}/reset").json()["reset"] is True
    after = http.get(f"{base}/state").json()
    assert after["objects"]["Event"] == [] and after["api_calls"] == 0
    assert after["settings"]["shared_activities"] is True
    assert http.post(f"{base}/clock", json={"reset": True}).status_code == 200
    assert abs(sb.clock.now() - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(seconds=5)
    assert http.get(f"{base}/nothing").status_code == 404
    assert sf.query("SELECT Id FROM Event")["totalSize"] == 0  # the session survives a reset
