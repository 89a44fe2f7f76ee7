"""calsync's configuration: a TOML file, validated once at the start of a run.

Secrets never live in the file: it names an environment variable (``*_env``) or a Prefect Secret
block (``*_block``) that holds each one. Errors name the key and say what is expected.

    [store]
    path = "data/calsync.duckdb"

    [salesforce]
    auth = "jwt"                        # jwt | client_credentials | session
    domain = "acme.my"                  # jwt, client_credentials: <mydomain>.my (or login, test)
    username = "integration@acme.com"   # jwt
    consumer_key_env = "CALSYNC_SF_CONSUMER_KEY"
    private_key_file = "/etc/calsync/sf.key"   # jwt (or private_key_env / private_key_block)
    consumer_secret_env = "..."         # client_credentials
    instance_url = "https://..."        # session
    session_id_env = "CALSYNC_SF_SESSION_ID"   # session
    ca_file = "..."                     # optional: a CA bundle to trust (the sandbox's own certificate)

    [exchange]                          # Exchange Server on premises (EWS); omit if no mailbox is there
    endpoint = "https://mail.acme.com/EWS/Exchange.asmx"
    username = "svc-calsync@acme.com"   # a service account with ApplicationImpersonation
    password_env = "CALSYNC_EWS_PASSWORD"
    auth_type = "ntlm"                  # ntlm | basic

    [graph]                             # Exchange Online / Microsoft 365 (Microsoft Graph); omit if none
    tenant_id = "acme.onmicrosoft.com"  # the directory (tenant) id or a verified domain
    client_id = "11111111-2222-3333-4444-555555555555"   # the app registration
    certificate_file = "/etc/calsync/graph.pem"   # PEM, private key + certificate (or _env / _block)
    # client_secret_env = "CALSYNC_GRAPH_SECRET"  # instead of a certificate
    internal_domains = ["acme.com"]     # optional: the tenant's domains (default: the users' domains)

    [sync]
    mass_delete_share = 0.5
    mass_delete_min = 4
    mailbox_kind = "graph"              # ews | graph: the default for users who do not say

    [[users]]
    email = "alice@acme.com"
    direction = "both"                  # both | salesforce_to_email | email_to_salesforce
    filter = "all"                      # updates_only | all | with_invitee | with_contact_or_lead
    start_date = 2026-01-01
    mailbox = "alice@acme.com"          # defaults to email
    enabled = true
    send_external_invites = false
    time_zone = "Europe/Berlin"         # the mailbox's zone (all-day events are dates there)
    mailbox_kind = "graph"              # ews | graph (default: [sync] mailbox_kind, or the one configured)
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DIRECTIONS = ("both", "salesforce_to_email", "email_to_salesforce")
FILTERS = ("updates_only", "all", "with_invitee", "with_contact_or_lead")
SF_AUTHS = ("jwt", "client_credentials", "session")
EWS_AUTHS = ("ntlm", "basic")
MAILBOX_KINDS = ("ews", "graph")
GRAPH_KEYS = {
    "tenant_id", "client_id", "certificate_env", "certificate_block", "certificate_file", "client_secret_env",
    "client_secret_block", "client_secret_file", "authority_host", "graph_url", "ca_file", "max_retry_wait_s",
    "internal_domains",
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is expected."""


class Secret:
    """A secret value that never prints itself."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(from {self.source})"

    __str__ = __repr__


@dataclass(frozen=True)
class SalesforceSettings:
    auth: str
    domain: str | None = None
    username: str | None = None
    instance_url: str | None = None
    consumer_key: Secret | None = None
    consumer_secret: Secret | None = None
    private_key: Secret | None = None
    session_id: Secret | None = None
    ca_file: Path | None = None
    api_version: str = "59.0"


@dataclass(frozen=True)
class ExchangeSettings:
    endpoint: str
    username: str
    password: Secret
    auth_type: str = "ntlm"
    max_retry_wait_s: float = 60.0


@dataclass(frozen=True)
class GraphSettings:
    """An app registration in the tenant: client credentials by certificate (preferred) or secret."""

    tenant_id: str
    client_id: str
    certificate: Secret | None = None  # PEM holding the private key and the certificate
    client_secret: Secret | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    ca_file: Path | None = None
    max_retry_wait_s: float = 60.0
    internal_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserSettings:
    email: str
    direction: str = "both"
    filter: str = "all"
    start_date: date | None = None
    mailbox: str = ""
    enabled: bool = True
    send_external_invites: bool = False
    allow_mass_delete: bool = False
    time_zone: str = "UTC"
    mailbox_kind: str = "ews"


@dataclass(frozen=True)
class SyncSettings:
    mass_delete_share: float = 0.5
    mass_delete_min: int = 4
    batch_size: int = 200
    mailbox_kind: str | None = None  # the default for users who do not say


@dataclass(frozen=True)
class Config:
    store_path: Path
    salesforce: SalesforceSettings
    exchange: ExchangeSettings | None
    sync: SyncSettings
    users: tuple[UserSettings, ...] = field(default_factory=tuple)
    source: Path | None = None
    graph: GraphSettings | None = None

    @property
    def enabled_users(self) -> tuple[UserSettings, ...]:
        return tuple(u for u in self.users if u.enabled)


def _secret(section: dict, name: str, where: str, env: dict[str, str], required: bool) -> Secret | None:
    """Resolve ``name`` from ``name_env`` (an environment variable), ``name_block`` (a Prefect Secret
    block) or ``name_file`` (a file, for private keys). A literal ``name`` in the file is refused."""
    if name in section:
        raise ConfigError(
            f"[{where}] {name}: secrets are not read from the config file; set {name}_env to the name"
            f" of an environment variable (or {name}_block to a Prefect Secret block) instead"
        )
    if f"{name}_env" in section:
        var = section[f"{name}_env"]
        if not isinstance(var, str) or not var:
            raise ConfigError(f"[{where}] {name}_env: expected the name of an environment variable")
        if not env.get(var):
            raise ConfigError(
                f"[{where}] {name}_env: the environment variable {var} is not set (or empty); export it"
                " before running calsync"
            )
        return Secret(env[var], f"environment variable {var}")
    if f"{name}_block" in section:
        block = section[f"{name}_block"]
        try:
            from prefect.blocks.system import Secret as SecretBlock

            value = SecretBlock.load(block).get()
        except Exception as exc:  # noqa: BLE001 - any failure to load is a config problem
            raise ConfigError(
                f"[{where}] {name}_block: cannot load the Prefect Secret block {block!r}"
                f" ({type(exc).__name__}); create it with `prefect block create secret` or fix the name"
            ) from None
        return Secret(str(value), f"Prefect Secret block {block}")
    if f"{name}_file" in section:
        path = Path(section[f"{name}_file"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"[{where}] {name}_file: no file at {path}")
        return Secret(path.read_text(), f"file {path}")
    if required:
        raise ConfigError(
            f"[{where}] {name}: missing; set {name}_env (an environment variable) or {name}_block"
            " (a Prefect Secret block)"
        )
    return None


def _str(section: dict, key: str, where: str, required: bool = True, default: str | None = None) -> str | None:
    value = section.get(key, default)
    if value is None:
        if required:
            raise ConfigError(f"[{where}] {key}: missing; expected a string")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"[{where}] {key}: expected a non-empty string, got {value!r}")
    return value.strip()


def _choice(section: dict, key: str, where: str, choices: tuple[str, ...], default: str) -> str:
    value = section.get(key, default)
    if value not in choices:
        raise ConfigError(f"[{where}] {key}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _bool(section: dict, key: str, where: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"[{where}] {key}: expected true or false, got {value!r}")
    return value


def _ca_file(section: dict, where: str, base: Path) -> Path | None:
    """An optional CA bundle to trust (relative paths are relative to the config file's folder)."""
    ca = section.get("ca_file")
    if ca is None:
        return None
    if not isinstance(ca, str) or not ca:
        raise ConfigError(f"[{where}] ca_file: expected the path of a CA bundle, got {ca!r}")
    path = (base / ca).resolve() if not Path(ca).is_absolute() else Path(ca)
    if not path.is_file():
        raise ConfigError(f"[{where}] ca_file: no file at {path}")
    return path


def _seconds(section: dict, key: str, where: str, default: float) -> float:
    wait = section.get(key, default)
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 3600:
        raise ConfigError(f"[{where}] {key}: expected seconds from 0 to 3600, got {wait!r}")
    return float(wait)


def _salesforce(raw: Any, env: dict[str, str], base: Path) -> SalesforceSettings:
    if not isinstance(raw, dict):
        raise ConfigError("[salesforce]: missing section; it says how to reach the Salesforce org")
    where = "salesforce"
    auth = _choice(raw, "auth", where, SF_AUTHS, "jwt")
    ca_path = _ca_file(raw, where, base)
    version = str(raw.get("api_version", "59.0"))
    if not re.fullmatch(r"\d{2}\.0", version) or float(version) < 59:
        raise ConfigError(f"[salesforce] api_version: expected 59.0 or later, got {version!r}")
    common = {"ca_file": ca_path, "api_version": version}
    if auth == "session":
        url = _str(raw, "instance_url", where)
        if not url.startswith("https://"):
            raise ConfigError(f"[salesforce] instance_url: expected an https:// URL, got {url!r}")
        return SalesforceSettings(
            auth=auth,
            instance_url=url.rstrip("/"),
            session_id=_secret(raw, "session_id", where, env, True),
            **common,
        )
    domain = _str(raw, "domain", where)
    if auth == "jwt":
        username = _str(raw, "username", where)
        return SalesforceSettings(
            auth=auth,
            domain=domain,
            username=username,
            consumer_key=_secret(raw, "consumer_key", where, env, True),
            private_key=_secret(raw, "private_key", where, env, True),
            instance_url=raw.get("instance_url"),
            **common,
        )
    return SalesforceSettings(
        auth=auth,
        domain=domain,
        consumer_key=_secret(raw, "consumer_key", where, env, True),
        consumer_secret=_secret(raw, "consumer_secret", where, env, True),
        instance_url=raw.get("instance_url"),
        **common,
    )


def _exchange(raw: Any, env: dict[str, str]) -> ExchangeSettings:
    if not isinstance(raw, dict):
        raise ConfigError("[exchange]: missing section; it says how to reach the Exchange server")
    where = "exchange"
    endpoint = _str(raw, "endpoint", where)
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"[exchange] endpoint: expected an http(s):// URL of EWS, got {endpoint!r}")
    username = _str(raw, "username", where)
    return ExchangeSettings(
        endpoint=endpoint,
        username=username,
        password=_secret(raw, "password", where, env, True),
        auth_type=_choice(raw, "auth_type", where, EWS_AUTHS, "ntlm"),
        max_retry_wait_s=_seconds(raw, "max_retry_wait_s", where, 60),
    )


def _https_url(section: dict, key: str, where: str, default: str) -> str:
    url = _str(section, key, where, default=default)
    if not url.startswith("https://"):
        raise ConfigError(f"[{where}] {key}: expected an https:// URL, got {url!r}")
    return url.rstrip("/")


def _graph(raw: Any, env: dict[str, str], base: Path) -> GraphSettings:
    where = "graph"
    if not isinstance(raw, dict):
        raise ConfigError("[graph]: expected a table (tenant_id, client_id, a certificate or client secret)")
    unknown = sorted(set(raw) - GRAPH_KEYS - {"certificate", "client_secret"})  # literal secrets: see _secret
    if unknown:
        raise ConfigError(f"[graph] {unknown[0]}: unknown key; expected one of {', '.join(sorted(GRAPH_KEYS))}")
    certificate = _secret(raw, "certificate", where, env, False)
    secret = _secret(raw, "client_secret", where, env, False)
    if certificate is None and secret is None:
        raise ConfigError(
            "[graph] certificate: missing; set certificate_file (a PEM with the app's private key and"
            " certificate; or certificate_env / certificate_block), or client_secret_env for a client secret"
        )
    if certificate is not None and secret is not None:
        raise ConfigError("[graph] certificate: give a certificate or a client secret, not both")
    if certificate is not None and ("PRIVATE KEY-----" not in certificate.get()
                                    or "CERTIFICATE-----" not in certificate.get()):
        raise ConfigError(
            f"[graph] certificate: {certificate.source} must hold a PEM private key and the PEM certificate"
            " registered with the app (concatenate the two)"
        )
    domains = raw.get("internal_domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) and "." in d for d in domains):
        raise ConfigError(f"[graph] internal_domains: expected a list of domains like [\"acme.com\"], got {domains!r}")
    return GraphSettings(
        tenant_id=_str(raw, "tenant_id", where),
        client_id=_str(raw, "client_id", where),
        certificate=certificate,
        client_secret=secret,
        authority_host=_https_url(raw, "authority_host", where, "https://login.microsoftonline.com"),
        graph_url=_https_url(raw, "graph_url", where, "https://graph.microsoft.com/v1.0"),
        ca_file=_ca_file(raw, where, base),
        max_retry_wait_s=_seconds(raw, "max_retry_wait_s", where, 60),
        internal_domains=tuple(d.strip().lower().lstrip("@") for d in domains),
    )


def _sync(raw: Any) -> SyncSettings:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError("[sync]: expected a table")
    share = raw.get("mass_delete_share", 0.5)
    if not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ConfigError(f"[sync] mass_delete_share: expected a number in (0, 1], got {share!r}")
    minimum = raw.get("mass_delete_min", 4)
    if not isinstance(minimum, int) or minimum < 0:
        raise ConfigError(f"[sync] mass_delete_min: expected a whole number >= 0, got {minimum!r}")
    batch = raw.get("batch_size", 200)
    if not isinstance(batch, int) or not 1 <= batch <= 200:
        raise ConfigError(f"[sync] batch_size: expected a whole number from 1 to 200, got {batch!r}")
    kind = raw.get("mailbox_kind")
    if kind is not None and kind not in MAILBOX_KINDS:
        raise ConfigError(f"[sync] mailbox_kind: expected one of {', '.join(MAILBOX_KINDS)}, got {kind!r}")
    return SyncSettings(float(share), minimum, batch, kind)


def _users(raw: Any, default_kind: str | None, configured: tuple[str, ...]) -> tuple[UserSettings, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("[[users]]: expected at least one synced user")
    users: list[UserSettings] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw, 1):
        where = f"users #{i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"[{where}]: expected a table")
        unknown = set(entry) - {
            "email", "direction", "filter", "start_date", "mailbox", "enabled",
            "send_external_invites", "allow_mass_delete", "time_zone", "mailbox_kind",
        }
        if unknown:
            raise ConfigError(f"[{where}] {sorted(unknown)[0]}: unknown key")
        email = _str(entry, "email", where).lower()
        if not _EMAIL.match(email):
            raise ConfigError(f"[{where}] email: expected an email address, got {email!r}")
        if email in seen:
            raise ConfigError(f"[{where}] email: {email} is listed twice; one entry per user")
        seen.add(email)
        mailbox = (_str(entry, "mailbox", where, required=False) or email).lower()
        if not _EMAIL.match(mailbox):
            raise ConfigError(f"[{where}] mailbox: expected an email address, got {mailbox!r}")
        zone = entry.get("time_zone", "UTC")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(
                f"[{where}] time_zone: expected an IANA time zone like Europe/Berlin (the mailbox's own"
                f" zone, used to write all-day events), got {zone!r}"
            ) from None
        kind = entry.get("mailbox_kind", default_kind)
        if kind is None:
            raise ConfigError(
                f"[{where}] mailbox_kind: missing; with both [exchange] and [graph] configured, say for each"
                " user (or once in [sync] mailbox_kind) whether the mailbox is on ews or graph"
            )
        if kind not in MAILBOX_KINDS:
            raise ConfigError(f"[{where}] mailbox_kind: expected one of {', '.join(MAILBOX_KINDS)}, got {kind!r}")
        if kind not in configured:
            section = "exchange" if kind == "ews" else "graph"
            raise ConfigError(
                f"[{where}] mailbox_kind: {kind} needs a [{section}] section saying how to reach those mailboxes"
            )
        start = entry.get("start_date")
        if start is not None and not isinstance(start, date):
            raise ConfigError(f"[{where}] start_date: expected a TOML date like 2026-01-01, got {start!r}")
        users.append(
            UserSettings(
                email=email,
                direction=_choice(entry, "direction", where, DIRECTIONS, "both"),
                filter=_choice(entry, "filter", where, FILTERS, "all"),
                start_date=start,
                mailbox=mailbox,
                enabled=_bool(entry, "enabled", where, True),
                send_external_invites=_bool(entry, "send_external_invites", where, False),
                allow_mass_delete=_bool(entry, "allow_mass_delete", where, False),
                time_zone=zone,
                mailbox_kind=kind,
            )
        )
    return tuple(users)


def parse_config(raw: dict, env: dict[str, str] | None = None, base: Path | None = None) -> Config:
    """Validate a parsed TOML document. ``env`` defaults to the process environment."""
    env = dict(os.environ) if env is None else env
    base = base or Path.cwd()
    known = {"store", "salesforce", "exchange", "graph", "sync", "users"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"[{sorted(unknown)[0]}]: unknown section; expected {', '.join(sorted(known))}")
    store = raw.get("store", {}) or {}
    path = Path(store.get("path", "data/calsync.duckdb"))
    if not path.is_absolute():
        path = base / path
    salesforce = _salesforce(raw.get("salesforce"), env, base)
    if "exchange" not in raw and "graph" not in raw:
        raise ConfigError(
            "[exchange] / [graph]: missing; calsync needs at least one mailbox service: [exchange] for Exchange"
            " Server on premises (EWS), [graph] for Exchange Online / Microsoft 365 (Microsoft Graph)"
        )
    exchange = _exchange(raw["exchange"], env) if "exchange" in raw else None
    graph = _graph(raw["graph"], env, base) if "graph" in raw else None
    sync = _sync(raw.get("sync"))
    configured = tuple(k for k, s in (("ews", exchange), ("graph", graph)) if s is not None)
    default_kind = sync.mailbox_kind or (configured[0] if len(configured) == 1 else None)
    return Config(
        store_path=path,
        salesforce=salesforce,
        exchange=exchange,
        sync=sync,
        users=_users(raw.get("users"), default_kind, configured),
        graph=graph,
    )


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read and validate the TOML file at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}; pass --config FILE (see docs/config.md)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    cfg = parse_config(raw, env, base=path.parent.resolve())
    return dataclasses.replace(cfg, source=path)
