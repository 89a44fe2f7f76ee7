"""Graph sandbox: the identity platform (msal with a secret or a certificate), token checks on Graph, the admin's
mailbox scope and the hybrid split (on-premises mailboxes refused by Graph, Exchange Online ones by EWS)."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from exchangelib.errors import ErrorNonExistentMailbox

from .conftest_graph import ANN, BOB, CAROL, SCOPE, Graph, _sb, control, error_of, ews_account, graph, msal_app, new_session, sb  # noqa: F401


def _other_certificate() -> tuple[str, str, str]:
    """A key + certificate the app registration does not know: (key pem, cert pem, sha1 hex)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")])
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode(), cert.fingerprint(hashes.SHA1()).hex()


def test_secret_token_is_a_bearer_jwt_graph_accepts(sb):
    result = msal_app(sb).acquire_token_for_client(SCOPE)
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3599
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "https://graph.microsoft.com" and claims["appid"] == sb.graph.client_id
    assert claims["tid"] == sb.graph.tenant_id and claims["exp"] - claims["iat"] == 3599
    r = Graph(sb, result["access_token"])("GET", f"/users/{ANN}")
    assert r.status_code == 200 and r.json()["mail"] == ANN


@pytest.mark.parametrize("style", ["thumbprint", "public_certificate"])
def test_certificate_token_by_sha1_thumbprint_or_public_certificate(sb, style):
    pem = sb.graph.certificate_file.read_text()  # what the customer's app holds: private key + certificate
    cred = {"private_key": pem}
    if style == "thumbprint":
        cred["thumbprint"] = sb.graph.certificate_thumbprint  # RS256 assertion with x5t
    else:
        cred["public_certificate"] = sb.graph.certificate_pem  # msal 1.39: PS256 with x5t#S256 (and x5c)
    result = msal_app(sb, cred).acquire_token_for_client(SCOPE)
    assert "access_token" in result, result
    assert sb.graph.identity.token_requests[-1]["credential"] == "certificate"
    assert Graph(sb, result["access_token"]).view(ANN).status_code == 200


def test_repeated_assertion_jti_is_accepted(sb):
    """msal re-sends one assertion for minutes: the service must not refuse a repeated jti."""
    key = serialization.load_pem_private_key(sb.graph.private_key_pem.encode(), None)
    endpoint = f"{sb.graph.authority}/oauth2/v2.0/token"
    import time
    now = int(time.time())
    thumb = __import__("base64").urlsafe_b64encode(bytes.fromhex(sb.graph.certificate_thumbprint)).decode()
    assertion = jwt.encode({"aud": endpoint, "iss": sb.graph.client_id, "sub": sb.graph.client_id, "jti": "same",
                            "nbf": now, "exp": now + 600}, key, algorithm="RS256", headers={"x5t": thumb})
    form = {"grant_type": "client_credentials", "client_id": sb.graph.client_id, "scope": SCOPE[0],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}
    s = new_session(sb)
    assert [s.post(endpoint, data=form, timeout=10).status_code for _ in range(2)] == [200, 200]


def test_bad_secret_is_aadsts7000215_with_the_aadsts_shape(sb):
    result = msal_app(sb, "not-the-secret").acquire_token_for_client(SCOPE)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert "Trace ID: " in result["error_description"] and "Correlation ID: " in result["error_description"]
    for key in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert result[key]


def test_unknown_client_and_wrong_thumbprint_are_refused(sb):
    import msal
    app = msal.ConfidentialClientApplication("11111111-2222-3333-4444-555555555555", authority=sb.graph.authority,
                                             client_credential=sb.graph.client_secret, http_client=new_session(sb),
                                             instance_discovery=False)
    result = app.acquire_token_for_client(SCOPE)
    assert result["error"] == "unauthorized_client" and result["error_codes"] == [700016]
    key_pem, cert_pem, sha1 = _other_certificate()
    result = msal_app(sb, {"private_key": key_pem, "thumbprint": sha1}).acquire_token_for_client(SCOPE)
    assert result["error"] == "invalid_client" and result["error_codes"] == [700027]
    assert sha1.upper() in result["error_description"]
    # The registered thumbprint with a key that is not the certificate's: the signature fails.
    result = msal_app(sb, {"private_key": key_pem, "thumbprint": sb.graph.certificate_thumbprint}
                      ).acquire_token_for_client(SCOPE)
    assert result["error_codes"] == [700027] and "signature" in result["error_description"]


def test_wrong_tenant_fails_discovery_and_the_token_endpoint_with_aadsts90002(sb):
    with pytest.raises(ValueError, match="Unable to get authority configuration") as raised:
        msal_app(sb, tenant="00000000-0000-0000-0000-000000000000").acquire_token_for_client(SCOPE)
    assert "90002" in str(raised.value.__context__)  # msal wraps the discovery answer (HTTP 400, AADSTS90002)
    r = new_session(sb).post(f"{sb.graph.login_url}/nosuchtenant/oauth2/v2.0/token", timeout=10,
                             data={"grant_type": "client_credentials", "client_id": sb.graph.client_id,
                                   "client_secret": sb.graph.client_secret, "scope": SCOPE[0]})
    assert r.status_code == 400 and r.json()["error_codes"] == [90002]
    assert "Tenant 'nosuchtenant' not found" in r.json()["error_description"]


def test_discovery_names_the_endpoints_under_the_authority(sb):
    doc = new_session(sb).get(f"{sb.graph.authority}/v2.0/.well-known/openid-configuration", timeout=10).json()
    assert doc["token_endpoint"] == f"{sb.graph.authority}/oauth2/v2.0/token"
    assert doc["issuer"] == f"{sb.graph.authority}/v2.0"
    assert doc["authorization_endpoint"].startswith(sb.graph.authority)


def test_expired_token_gets_401_when_the_shared_clock_passes_expiry(sb):
    sb.graph.token_lifetime = 60
    g = Graph(sb, msal_app(sb).acquire_token_for_client(SCOPE)["access_token"])
    assert g.view(ANN).status_code == 200
    sb.clock.advance(timedelta(seconds=61))
    r = g.view(ANN)
    assert error_of(r) == (401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert set(r.json()["error"]["innerError"]) == {"date", "request-id", "client-request-id"}


def test_missing_and_garbage_tokens_are_401(sb):
    g = Graph(sb, "")
    r = g.session.get(f"{g.base}/users/{ANN}/calendarView", params={"startDateTime": "2026-11-01",
                                                                     "endDateTime": "2026-11-02"}, timeout=10)
    assert error_of(r)[:2] == (401, "InvalidAuthenticationToken")
    assert error_of(Graph(sb, "garbage")("GET", f"/users/{ANN}"))[:2] == (401, "InvalidAuthenticationToken")


def test_token_lifetime_is_settable_through_the_control_api(sb):
    assert control(sb, "POST", "settings", {"token_lifetime": 120})["token_lifetime"] == 120
    assert msal_app(sb).acquire_token_for_client(SCOPE)["expires_in"] == 120


def test_mailbox_scope_refuses_other_mailboxes_with_raop_403(sb, graph):
    control(sb, "POST", "settings", {"mailbox_scope": [ANN]})
    assert graph.view(ANN).status_code == 200
    assert error_of(graph.view(BOB)) == (
        403, "ErrorAccessDenied",
        "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.")
    sb.graph.set_mailbox_scope(None)
    assert graph.view(BOB).status_code == 200


def test_graph_refuses_an_on_premises_mailbox_and_an_unknown_user(sb, graph):
    assert error_of(graph.view(CAROL)) == (
        404, "MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
    assert graph("GET", f"/users/{CAROL}").status_code == 200  # the directory knows the user
    assert error_of(graph.view("nobody@example.com"))[:2] == (404, "ErrorInvalidUser")


def test_users_are_reached_by_object_id_too(sb, graph):
    user = graph("GET", f"/users/{ANN}").json()
    assert graph("GET", f"/users/{user['id']}/calendar/calendarView", params={
        "startDateTime": "2026-11-01T00:00:00Z", "endDateTime": "2026-11-02T00:00:00Z"}).status_code == 200


def test_ews_refuses_an_exchange_online_mailbox(sb):
    account = ews_account(sb, ANN)
    with pytest.raises(ErrorNonExistentMailbox):
        list(account.calendar.all()[:1])
    assert list(ews_account(sb, CAROL).calendar.all()) == []


def test_seeds_put_users_on_graph(sb):
    from datetime import date

    from sandbox.seed import generate

    sb.reset()
    sb.seed({"users": [{"email": "gina@example.com", "mailbox_kind": "graph"}, {"email": "hal@example.com"}]},
            date(2026, 11, 20))
    assert {e: m.kind for e, m in sb.org.mailboxes.items()} == {"gina@example.com": "graph", "hal@example.com": "ews"}
    spec = generate(6, 1, graph_share=0.5)
    assert [u["mailbox_kind"] for u in spec["users"]] == ["ews", "graph"] * 3
    assert {u["mailbox_kind"] for u in generate(3, 1, graph_share=1.0)["users"]} == {"graph"}
    assert {u["mailbox_kind"] for u in generate(3, 1)["users"]} == {"ews"}
