"""The Microsoft identity platform as an app-only Graph client meets it: one tenant, one app registration,
the OpenID Connect discovery document and the OAuth 2.0 client credentials grant.

What msal's ``ConfidentialClientApplication(..., authority=f"{login_url}/{tenant_id}", instance_discovery=False)``
does against it: GET ``/{tenant}/v2.0/.well-known/openid-configuration``, then POST
``/{tenant}/oauth2/v2.0/token`` with ``grant_type=client_credentials``, ``scope=https://graph.microsoft.com/.default``
and either ``client_secret`` or a certificate assertion (``client_assertion_type=urn:ietf:params:oauth:
client-assertion-type:jwt-bearer`` + ``client_assertion``).

- Client credentials grant (request and response shapes, the ``/.default`` scope):
  https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
- Certificate credentials (the assertion's header ``x5t`` / ``x5t#S256`` and claims aud, iss, sub, jti, nbf, exp;
  aud is the token endpoint, iss = sub = the client id):
  https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials
- Discovery document fields: https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc
- Error shape (error, error_description with "AADSTSnnnn: ... Trace ID / Correlation ID / Timestamp",
  error_codes, timestamp, trace_id, correlation_id, error_uri) and the codes:
  https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes
  (texts as the service writes them, e.g. AADSTS7000215 in
  https://github.com/OfficeDev/microsoft-365-agents-toolkit/issues/8621 and AADSTS700027 in
  https://github.com/Azure/azure-sdk-for-net/issues/29007).

msal re-sends one assertion for several minutes (``create_regenerative_assertion``), so a repeated ``jti`` is
accepted. The assertion's time window is judged on real time (the client's clock), the access token's lifetime
on the sandbox's shared clock (so a test that advances the clock expires the token).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph's well-known application id
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_TOKEN_LIFETIME = 3599  # what the service answers in expires_in (client-creds page's example: 3599)
ASSERTION_SKEW = 300  # seconds of clock skew allowed on the assertion's nbf/exp (sandbox choice)


@dataclass
class TokenError(Exception):
    status: int
    error: str
    code: int
    message: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Identity:
    """The tenant, its one app registration (secret + certificate) and the tokens it issues."""

    def __init__(self, clock, workdir: Path, *, domain: str = "example.com", tenant_id: str | None = None,
                 client_id: str | None = None, client_secret: str | None = None) -> None:
        self.clock = clock
        self.domain = domain.lower()
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.client_id = client_id or str(uuid.uuid4())
        # The sandbox's own throw-away secret (Entra secrets look like "abc8Q~....").
        self.client_secret = client_secret or f"sbx8Q~{secrets.token_urlsafe(30)}"
        self.token_lifetime = DEFAULT_TOKEN_LIFETIME
        self._lock = threading.Lock()
        self.tokens_issued = 0
        self.token_requests: list[dict] = []  # every token request's verdict (grant, credential kind, ok, code)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        # The app's certificate credential: what the customer's app holds (private key + certificate, one PEM).
        self._app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "calsync graph app (sandbox)")])
        now = dt.datetime.now(dt.timezone.utc)
        self.certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self._app_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
            .sign(self._app_key, hashes.SHA256())
        )
        self.certificate_pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode()
        self.private_key_pem = self._app_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        self.certificate_file = workdir / "app-certificate.pem"
        self.certificate_file.write_text(self.private_key_pem + self.certificate_pem)
        # Thumbprints as the portal shows them (hex) and as assertions carry them (x5t / x5t#S256, base64url).
        self.certificate_thumbprint = self.certificate.fingerprint(hashes.SHA1()).hex().upper()
        self.certificate_thumbprint_sha256 = self.certificate.fingerprint(hashes.SHA256()).hex().upper()
        # The key the "service" signs access tokens with (published at jwks_uri).
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = _b64url(hashlib.sha1(self._signing_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest())

    # ------------------------------------------------------------------ discovery
    def knows_tenant(self, tenant: str) -> bool:
        """A tenant is named by its id or a verified domain (https://learn.microsoft.com/en-us/entra/identity-platform/msal-client-application-configuration#authority)."""
        return tenant.lower() in (self.tenant_id, self.domain)

    def openid_configuration(self, base: str, tenant: str) -> dict:
        t = self.tenant_id
        return {
            "token_endpoint": f"{base}/{t}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/{t}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{t}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/{t}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/{t}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/{t}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
                                 "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
                                 "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": f"{base}/{t}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def jwks(self) -> dict:
        numbers = self._signing_key.public_key().public_numbers()
        n = _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
        e = _b64url(numbers.e.to_bytes(3, "big"))
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self._kid, "x5t": self._kid, "n": n, "e": e}]}

    # ------------------------------------------------------------------ errors
    def error_body(self, err: TokenError, base: str, correlation_id: str | None) -> dict:
        """The AADSTS error JSON (https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes)."""
        stamp = self.clock.now().strftime("%Y-%m-%d %H:%M:%SZ")
        trace, corr = str(uuid.uuid4()), correlation_id or str(uuid.uuid4())
        return {
            "error": err.error,
            "error_description": f"AADSTS{err.code}: {err.message}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}"
                                 f"\r\nTimestamp: {stamp}",
            "error_codes": [err.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"{base}/error?code={err.code}",
        }

    def unknown_tenant(self, tenant: str) -> TokenError:
        # AADSTS90002 (invalid_tenant on discovery, invalid_request on the token endpoint).
        return TokenError(400, "invalid_tenant", 90002,
                          f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                          "signing into the correct cloud. Check with your subscription administrator, this may "
                          "happen if there are no active subscriptions for the tenant.")

    # ------------------------------------------------------------------ the token endpoint
    def token(self, tenant: str, form: dict[str, str], basic: tuple[str, str] | None, token_endpoints: set[str]) -> dict:
        """Answer a token request (the form fields) or raise TokenError."""
        verdict = {"grant_type": form.get("grant_type"), "client_id": form.get("client_id"), "credential": None,
                   "ok": False, "code": None, "at": self.clock.now().isoformat()}
        try:
            result = self._token(tenant, form, basic, token_endpoints, verdict)
            verdict["ok"] = True
            return result
        except TokenError as e:
            verdict["code"] = f"AADSTS{e.code}"
            raise
        finally:
            with self._lock:
                self.token_requests.append(verdict)

    def _token(self, tenant, form, basic, token_endpoints, verdict) -> dict:
        if not self.knows_tenant(tenant):
            err = self.unknown_tenant(tenant)
            raise TokenError(400, "invalid_request", err.code, err.message)
        grant = form.get("grant_type")
        if not grant:
            raise TokenError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            # Only app-only access is modelled (sandbox wording for the rest).
            raise TokenError(400, "unsupported_grant_type", 70003,
                             f"The app requested an unsupported grant type '{grant}'. This sandbox issues "
                             "client_credentials tokens only.")
        client_id = form.get("client_id") or (basic[0] if basic else None)
        if not client_id:
            raise TokenError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_id'.")
        if client_id.lower() != self.client_id:
            raise TokenError(400, "unauthorized_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the directory "
                             f"'{self.domain}'. This can happen if the application has not been installed by the "
                             "administrator of the tenant or consented to by any user in the tenant. You may have "
                             "sent your authentication request to the wrong tenant.")
        scope = form.get("scope")
        if not scope:
            raise TokenError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'scope'.")
        scopes = scope.split()
        defaults = [s for s in scopes if s.endswith("/.default")]
        if not defaults or len(defaults) != len([s for s in scopes if s not in ("openid", "profile", "offline_access")]):
            bad = next((s for s in scopes if not s.endswith("/.default")), scope)
            raise TokenError(400, "invalid_scope", 1002012,
                             f"The provided value for scope {bad} is not valid. Client credential flows must have a "
                             "scope value with /.default suffixed to the resource identifier (application ID URI).")
        resource = defaults[0][: -len("/.default")].rstrip("/")
        if resource.lower() not in (GRAPH_RESOURCE, GRAPH_APP_ID):
            # The client-credentials page's error example (an unknown resource's /.default).
            raise TokenError(400, "invalid_scope", 70011,
                             f"The provided value for the input parameter 'scope' is not valid. The scope "
                             f"{defaults[0]} is not valid.")
        secret = form.get("client_secret") or (basic[1] if basic else None)
        if secret is not None:
            verdict["credential"] = "secret"
            if not secrets.compare_digest(secret, self.client_secret):
                raise TokenError(401, "invalid_client", 7000215,
                                 "Invalid client secret provided. Ensure the secret being sent in the request is the "
                                 f"client secret value, not the client secret ID, for a secret added to app "
                                 f"'{self.client_id}'.")
        elif form.get("client_assertion") or form.get("client_assertion_type"):
            verdict["credential"] = "certificate"
            if form.get("client_assertion_type") != JWT_BEARER:
                raise TokenError(401, "invalid_client", 700027,  # sandbox wording
                                 f"Client assertion type must be '{JWT_BEARER}'.")
            self._check_assertion(form.get("client_assertion") or "", token_endpoints)
        else:
            raise TokenError(401, "invalid_client", 7000218,
                             "The request body must contain the following parameter: 'client_assertion' or "
                             "'client_secret'.")
        return self._issue()

    def _check_assertion(self, assertion: str, token_endpoints: set[str]) -> None:
        def bad(reason: str, code: int = 700027) -> TokenError:
            return TokenError(401, "invalid_client", code, reason)

        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise bad("Client assertion failed signature validation. [Reason - The assertion is not a well-formed "
                      "JWT.]")  # sandbox wording
        x5t, x5t_s256 = header.get("x5t"), header.get("x5t#S256")
        if not x5t and not x5t_s256:
            raise bad("Client assertion contains an invalid signature. [Reason - No certificate thumbprint specified "
                      "in token header.]")
        def raw(value: str) -> bytes:  # base64url, padded or not (msal pads)
            try:
                return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
            except Exception:
                return b""

        if (x5t and raw(x5t).hex().upper() != self.certificate_thumbprint) or (
                x5t_s256 and raw(x5t_s256).hex().upper() != self.certificate_thumbprint_sha256):
            used = raw(x5t or x5t_s256).hex().upper()
            raise bad("The certificate with identifier used to sign the client assertion is not registered on "
                      f"application. [Reason - The key was not found., Thumbprint of key used by client: '{used}', "
                      "Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys "
                      f"for app Id '{self.client_id}'.]")
        if header.get("alg") not in ("RS256", "PS256"):
            raise bad(f"Client assertion is signed with an unsupported algorithm '{header.get('alg')}'.")  # sandbox
        try:
            claims = jwt.decode(assertion, self._app_key.public_key(), algorithms=["RS256", "PS256"],
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                         "verify_aud": False})
        except jwt.PyJWTError:
            raise bad("Client assertion failed signature validation. [Reason - The provided signature value did not "
                      f"match the expected signature value., Thumbprint of key used by client: "
                      f"'{self.certificate_thumbprint}']")
        if claims.get("aud") not in token_endpoints:
            raise bad(f"Client assertion audience claim does not match Realm issuer. Review the documentation at "
                      f"https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials . "
                      f"[Expected audience: '{sorted(token_endpoints)[0]}', found '{claims.get('aud')}']")  # believed wording
        if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            raise TokenError(401, "invalid_client", 700021,
                             "Client assertion application identifier doesn't match 'client_id' parameter. Review "
                             "the documentation at https://learn.microsoft.com/en-us/entra/identity-platform/"
                             "certificate-credentials .")
        if not claims.get("jti"):
            raise bad("Client assertion is missing the 'jti' claim.")  # sandbox wording
        now = time.time()  # the client's (real) clock; see the module docstring
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, (int, float)) or exp + ASSERTION_SKEW < now or (
                isinstance(nbf, (int, float)) and nbf - ASSERTION_SKEW > now):
            raise TokenError(401, "invalid_client", 700024,
                             f"Client assertion is not within its valid time range. Current time: "
                             f"{dt.datetime.fromtimestamp(now, dt.timezone.utc):%Y-%m-%dT%H:%M:%S.%f}Z, "
                             f"expiry time of assertion {exp}.")

    def _issue(self) -> dict:
        now = self.clock.now()
        lifetime = int(self.token_lifetime)
        claims = {
            "aud": GRAPH_RESOURCE,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(now.timestamp()) + lifetime,
            "app_displayname": "calsync",
            "appid": self.client_id,
            "appidacr": "1",
            "idp": f"https://sts.windows.net/{self.tenant_id}/",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{self.client_id}")),
            "roles": ["Calendars.ReadWrite", "User.Read.All"],
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{self.client_id}")),
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        token = jwt.encode(claims, self._signing_key, algorithm="RS256",
                           headers={"typ": "JWT", "x5t": self._kid, "kid": self._kid})
        with self._lock:
            self.tokens_issued += 1
        # https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#successful-response-1
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}

    # ------------------------------------------------------------------ checking a bearer token (the Graph side)
    def check_bearer(self, header: str | None) -> str | None:
        """None if the Authorization header carries a valid token now (sandbox clock), else Graph's message."""
        if not header or not header.strip():
            return "Access token is empty."  # believed
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "Access token is empty."
        token = token.strip()
        try:
            claims = jwt.decode(token, self._signing_key.public_key(), algorithms=["RS256"], audience=GRAPH_RESOURCE,
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
        except jwt.DecodeError:
            # https://github.com/merrycodes/Office-E5/issues/6
            return "CompactToken parsing failed with error code: 80049217"
        except jwt.PyJWTError:
            return "Access token validation failure. Invalid audience."  # signature or audience (believed wording)
        if claims.get("tid") != self.tenant_id or claims.get("appid") != self.client_id:
            return "Access token validation failure."
        now = self.clock.now().timestamp()
        if not (claims.get("nbf", 0) <= now < claims.get("exp", 0)):
            # https://github.com/besscroft/diyfile/issues/1
            return "Access token has expired or is not yet valid."
        return None
