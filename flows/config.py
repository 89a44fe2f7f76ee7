"""calsync's configuration: a TOML file, validated once at the start of a run.

Secrets never live in the file: it names an environment variable (``*_env``) or a Prefect Secret
block (``*_block``) that holds each one. Errors name the key and say what is expected.

    [store]
    path = "data/calsync.duckdb"
    retention_days = 90                 # snapshots older than this are thinned (`calsync prune`); 0 keeps all

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
    max_parallel_mailboxes = 16         # mailboxes in flight at once through the service account (1-64)

    [graph]                             # Exchange Online / Microsoft 365 (Microsoft Graph); omit if none
    tenant_id = "acme.onmicrosoft.com"  # the directory (tenant) id or a verified domain
    client_id = "11111111-2222-3333-4444-555555555555"   # the app registration
    certificate_file = "/etc/calsync/graph.pem"   # PEM, private key + certificate (or _env / _block)
    # client_secret_env = "CALSYNC_GRAPH_SECRET"  # instead of a certificate
    internal_domains = ["acme.com"]     # optional: the tenant's domains (default: the users' domains)
    max_parallel_mailboxes = 16         # mailboxes in flight at once (one Graph request each; 1-64)

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

    [notify]                            # optional: a failed run, a refused user, an unreadable mailbox
    webhook_url_env = "CALSYNC_WEBHOOK_URL"   # a JSON POST webhook (or block = "slack-webhook/NAME")

    [log]
    file = "calsync.log"                # default: calsync.log beside the store; tracebacks go here
    level = "INFO"                      # DEBUG | INFO | WARNING | ERROR

    [scale]                             # optional: where the mailbox work runs (docs/scale.md)
    task_runner = "thread"              # thread (this process) | dask (shards on a Dask cluster)
    dask_address = "tcp://scheduler:8786"   # dask: the scheduler; empty or absent: a local cluster
    shard_size = 200                    # dask: mailboxes per shard task
    max_parallel_shards = 4             # dask: shard tasks at once (they share max_parallel_mailboxes)

Every section refuses keys it does not know, and every error of the file is reported at once. Relative
paths (store, ``ca_file``, ``*_file``, the log file) are relative to the config file's folder (see
calsync.example.toml for a commented example).

Hand-written rather than pydantic models: the messages are the operators' contract (docs/config.md quotes
them) and pydantic's ("Input should be 'jwt', 'client_credentials' or 'session'", locations as tuples) would
need a custom message per check to stay as good, and the secret sources (environment, Prefect blocks, files)
are lookups, not types. A collector (``_Errors``) gives what pydantic would have: every error at once.
"""

from __future__ import annotations

import dataclasses
import difflib
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
    "internal_domains", "max_parallel_mailboxes",
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    """The configuration is invalid; each message (``errors``) names the key and what is expected."""

    def __init__(self, *messages: str) -> None:
        self.errors = [m for m in messages if m]
        text = self.errors[0] if len(self.errors) == 1 else (
            f"{len(self.errors)} errors: " + "; ".join(self.errors))
        super().__init__(text)


class _Errors:
    """Collects the ConfigErrors of many checks, so a file's every error is reported at once."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, or None (its errors kept) when it raises ConfigError."""
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            self.messages.extend(exc.errors)
            return None

    def add(self, message: str) -> None:
        self.messages.append(message)

    def raise_if_any(self) -> None:
        if self.messages:
            raise ConfigError(*self.messages)


def _unknown_keys(section: dict, where: str, known: set[str], errors: _Errors) -> None:
    """An error for each key ``known`` does not list (a typo would silently fall back to the default)."""
    for key in sorted(set(section) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        errors.add(f"[{where}] {key}: unknown key{hint}; expected one of {', '.join(sorted(known))}")


def _secret_keys(*names: str) -> set[str]:
    """The keys that may name where a secret lives, plus the literal names (refused with their own message)."""
    return {f"{n}{suffix}" for n in names for suffix in ("", "_env", "_block", "_file")}


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
    max_parallel_mailboxes: int = 16  # mailboxes read or written at once through the service account


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
    max_parallel_mailboxes: int = 16  # mailboxes read or written at once through the app


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
class ScaleSettings:
    """Where the mailbox work runs (docs/scale.md): threads of this process, or shards on a Dask cluster."""

    task_runner: str = "thread"  # thread | dask
    dask_address: str = ""  # the scheduler, "tcp://host:8786"; empty: a local cluster for the run
    shard_size: int = 200  # mailboxes per shard task
    max_parallel_shards: int = 4  # shard tasks in flight at once (the mailbox limits are shared among them)


@dataclass(frozen=True)
class NotifySettings:
    """Where notifications go: a JSON webhook URL (a secret), or a saved Prefect notification block."""

    webhook_url: Secret | None = None
    block: str | None = None  # "<block-type-slug>/<name>", e.g. "slack-webhook/calsync-alerts"

    def describe(self) -> str:
        return f"Prefect block {self.block}" if self.block else f"the webhook from {self.webhook_url.source}"


@dataclass(frozen=True)
class LogSettings:
    file: Path | None = None  # None: calsync.log beside the store
    level: str = "INFO"


@dataclass(frozen=True)
class Config:
    store_path: Path
    salesforce: SalesforceSettings
    exchange: ExchangeSettings | None
    sync: SyncSettings
    users: tuple[UserSettings, ...] = field(default_factory=tuple)
    source: Path | None = None
    graph: GraphSettings | None = None
    retention_days: int = 90  # snapshots of runs older than this are thinned; 0 keeps every snapshot
    notify: NotifySettings | None = None
    log: LogSettings = field(default_factory=LogSettings)
    scale: ScaleSettings = field(default_factory=ScaleSettings)

    def parallel_limits(self) -> dict[str, int]:
        """Mailboxes in flight at once per mailbox kind (``[exchange]`` / ``[graph]`` max_parallel_mailboxes)."""
        out = {}
        if self.exchange is not None:
            out["ews"] = self.exchange.max_parallel_mailboxes
        if self.graph is not None:
            out["graph"] = self.graph.max_parallel_mailboxes
        return out

    @property
    def log_file(self) -> Path:
        return self.log.file or self.store_path.parent / "calsync.log"

    @property
    def enabled_users(self) -> tuple[UserSettings, ...]:
        return tuple(u for u in self.users if u.enabled)


def _secret(section: dict, name: str, where: str, env: dict[str, str], required: bool,
            base: Path | None = None) -> Secret | None:
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
        except Exception as exc:  # any failure to load is a config problem
            raise ConfigError(
                f"[{where}] {name}_block: cannot load the Prefect Secret block {block!r}"
                f" ({type(exc).__name__}); create it with `prefect block create secret` or fix the name"
            ) from None
        return Secret(str(value), f"Prefect Secret block {block}")
    if f"{name}_file" in section:
        value = section[f"{name}_file"]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"[{where}] {name}_file: expected the path of a file, got {value!r}")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = ((base or Path.cwd()) / path).resolve()  # like every relative path: the config's folder
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


def _whole(section: dict, key: str, where: str, default: int, low: int, high: int, what: str) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"[{where}] {key}: expected a whole number from {low} to {high} ({what}), got {value!r}")
    return value


def _parallel(section: dict, where: str, default: int) -> int:
    return _whole(section, "max_parallel_mailboxes", where, default, 1, MAX_PARALLEL,
                  "mailboxes read or written at once; 1 reads one at a time")


def _seconds(section: dict, key: str, where: str, default: float) -> float:
    wait = section.get(key, default)
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 3600:
        raise ConfigError(f"[{where}] {key}: expected seconds from 0 to 3600, got {wait!r}")
    return float(wait)


SALESFORCE_KEYS = {"auth", "domain", "username", "instance_url", "ca_file", "api_version"} | _secret_keys(
    "consumer_key", "consumer_secret", "private_key", "session_id")
EXCHANGE_KEYS = {"endpoint", "username", "auth_type", "max_retry_wait_s", "max_parallel_mailboxes"} | _secret_keys(
    "password")
SYNC_KEYS = {"mass_delete_share", "mass_delete_min", "batch_size", "mailbox_kind"}
USER_KEYS = {"email", "direction", "filter", "start_date", "mailbox", "enabled", "send_external_invites",
             "allow_mass_delete", "time_zone", "mailbox_kind"}
STORE_KEYS = {"path", "retention_days"}
NOTIFY_KEYS = {"block"} | _secret_keys("webhook_url")
LOG_KEYS = {"file", "level"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SCALE_KEYS = {"task_runner", "dask_address", "shard_size", "max_parallel_shards"}
TASK_RUNNERS = ("thread", "dask")
MAX_PARALLEL = 64  # mailboxes in flight per service, at most (EWS's default EWSMaxConcurrency is 27)
SECTIONS = ("store", "salesforce", "exchange", "graph", "sync", "users", "notify", "log", "scale")


def _table(raw: Any, where: str, errors: _Errors, missing: str | None = None) -> dict | None:
    """``raw`` if it is a table; else an error (``missing`` when absent) and None."""
    if isinstance(raw, dict):
        return raw
    if raw is None and missing is None:
        return {}
    errors.add(missing if raw is None else f"[{where}]: expected a table")
    return None


def _salesforce(raw: Any, env: dict[str, str], base: Path) -> SalesforceSettings:
    e = _Errors()
    raw = _table(raw, "salesforce", e, "[salesforce]: missing section; it says how to reach the Salesforce org")
    if raw is None:
        e.raise_if_any()
    where = "salesforce"
    _unknown_keys(raw, where, SALESFORCE_KEYS, e)
    auth = e.run(_choice, raw, "auth", where, SF_AUTHS, "jwt")
    ca_path = e.run(_ca_file, raw, where, base)
    version = str(raw.get("api_version", "59.0"))
    if not re.fullmatch(r"\d{2}\.0", version) or float(version) < 59:
        e.add(f"[salesforce] api_version: expected 59.0 or later, got {version!r}")
    common = {"ca_file": ca_path, "api_version": version}
    secret = lambda name: e.run(_secret, raw, name, where, env, True, base)  # noqa: E731
    if auth == "session":
        url = e.run(_str, raw, "instance_url", where)
        if url is not None and not url.startswith("https://"):
            e.add(f"[salesforce] instance_url: expected an https:// URL, got {url!r}")
        fields = dict(auth=auth, instance_url=(url or "").rstrip("/"), session_id=secret("session_id"))
    elif auth == "jwt":
        fields = dict(auth=auth, domain=e.run(_str, raw, "domain", where), username=e.run(_str, raw, "username", where),
                      consumer_key=secret("consumer_key"), private_key=secret("private_key"),
                      instance_url=raw.get("instance_url"))
    elif auth == "client_credentials":
        fields = dict(auth=auth, domain=e.run(_str, raw, "domain", where), consumer_key=secret("consumer_key"),
                      consumer_secret=secret("consumer_secret"), instance_url=raw.get("instance_url"))
    else:
        fields = {}
    for name in ("consumer_key", "consumer_secret", "private_key", "session_id"):
        if name in raw and f"{name}" not in fields:  # a literal secret the auth mode does not read: still refused
            e.run(_secret, raw, name, where, env, False, base)
    e.raise_if_any()
    return SalesforceSettings(**fields, **common)


def _exchange(raw: Any, env: dict[str, str], base: Path | None = None) -> ExchangeSettings:
    e = _Errors()
    raw = _table(raw, "exchange", e, "[exchange]: missing section; it says how to reach the Exchange server")
    if raw is None:
        e.raise_if_any()
    where = "exchange"
    _unknown_keys(raw, where, EXCHANGE_KEYS, e)
    endpoint = e.run(_str, raw, "endpoint", where)
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        e.add(f"[exchange] endpoint: expected an http(s):// URL of EWS, got {endpoint!r}")
    settings = dict(
        endpoint=endpoint,
        username=e.run(_str, raw, "username", where),
        password=e.run(_secret, raw, "password", where, env, True, base),
        auth_type=e.run(_choice, raw, "auth_type", where, EWS_AUTHS, "ntlm"),
        max_retry_wait_s=e.run(_seconds, raw, "max_retry_wait_s", where, 60),
        max_parallel_mailboxes=e.run(_parallel, raw, where, 16),
    )
    e.raise_if_any()
    return ExchangeSettings(**settings)


def _https_url(section: dict, key: str, where: str, default: str) -> str:
    url = _str(section, key, where, default=default)
    if not url.startswith("https://"):
        raise ConfigError(f"[{where}] {key}: expected an https:// URL, got {url!r}")
    return url.rstrip("/")


def _graph(raw: Any, env: dict[str, str], base: Path) -> GraphSettings:
    where = "graph"
    e = _Errors()
    if not isinstance(raw, dict):
        raise ConfigError("[graph]: expected a table (tenant_id, client_id, a certificate or client secret)")
    unknown = sorted(set(raw) - GRAPH_KEYS - {"certificate", "client_secret"})  # literal secrets: see _secret
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(GRAPH_KEYS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        e.add(f"[graph] {key}: unknown key{hint}; expected one of {', '.join(sorted(GRAPH_KEYS))}")
    certificate = e.run(_secret, raw, "certificate", where, env, False, base)
    secret = e.run(_secret, raw, "client_secret", where, env, False, base)
    if certificate is None and secret is None and not ({"certificate", "client_secret"} & set(raw)) and not any(
            k.startswith(("certificate_", "client_secret_")) for k in raw):
        e.add("[graph] certificate: missing; set certificate_file (a PEM with the app's private key and"
              " certificate; or certificate_env / certificate_block), or client_secret_env for a client secret")
    if certificate is not None and secret is not None:
        e.add("[graph] certificate: give a certificate or a client secret, not both")
    if certificate is not None and ("PRIVATE KEY-----" not in certificate.get()
                                    or "CERTIFICATE-----" not in certificate.get()):
        e.add(f"[graph] certificate: {certificate.source} must hold a PEM private key and the PEM certificate"
              " registered with the app (concatenate the two)")
    domains = raw.get("internal_domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) and "." in d for d in domains):
        e.add(f"[graph] internal_domains: expected a list of domains like [\"acme.com\"], got {domains!r}")
        domains = []
    settings = dict(
        tenant_id=e.run(_str, raw, "tenant_id", where),
        client_id=e.run(_str, raw, "client_id", where),
        certificate=certificate,
        client_secret=secret,
        authority_host=e.run(_https_url, raw, "authority_host", where, "https://login.microsoftonline.com"),
        graph_url=e.run(_https_url, raw, "graph_url", where, "https://graph.microsoft.com/v1.0"),
        ca_file=e.run(_ca_file, raw, where, base),
        max_retry_wait_s=e.run(_seconds, raw, "max_retry_wait_s", where, 60),
        internal_domains=tuple(d.strip().lower().lstrip("@") for d in domains),
        max_parallel_mailboxes=e.run(_parallel, raw, where, 16),
    )
    e.raise_if_any()
    return GraphSettings(**settings)


def _sync(raw: Any) -> SyncSettings:
    e = _Errors()
    raw = _table(raw, "sync", e)
    if raw is None:
        e.raise_if_any()
    _unknown_keys(raw, "sync", SYNC_KEYS, e)
    share = raw.get("mass_delete_share", 0.5)
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1:
        e.add(f"[sync] mass_delete_share: expected a number in (0, 1], got {share!r}")
    minimum = raw.get("mass_delete_min", 4)
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        e.add(f"[sync] mass_delete_min: expected a whole number >= 0, got {minimum!r}")
    batch = raw.get("batch_size", 200)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 200:
        e.add(f"[sync] batch_size: expected a whole number from 1 to 200, got {batch!r}")
    kind = raw.get("mailbox_kind")
    if kind is not None and kind not in MAILBOX_KINDS:
        e.add(f"[sync] mailbox_kind: expected one of {', '.join(MAILBOX_KINDS)}, got {kind!r}")
    e.raise_if_any()
    return SyncSettings(float(share), minimum, batch, kind)


def _user(entry: Any, where: str, seen: set[str], default_kind: str | None,
          configured: tuple[str, ...]) -> UserSettings:
    if not isinstance(entry, dict):
        raise ConfigError(f"[{where}]: expected a table")
    e = _Errors()
    _unknown_keys(entry, where, USER_KEYS, e)
    email = e.run(_str, entry, "email", where)
    if email is not None:
        email = email.lower()
        if not _EMAIL.match(email):
            e.add(f"[{where}] email: expected an email address, got {email!r}")
        elif email in seen:
            e.add(f"[{where}] email: {email} is listed twice; one entry per user")
        seen.add(email)
    mailbox = e.run(_str, entry, "mailbox", where, required=False)
    mailbox = (mailbox or email or "").lower()
    if "mailbox" in entry and mailbox and not _EMAIL.match(mailbox):
        e.add(f"[{where}] mailbox: expected an email address, got {mailbox!r}")
    zone = entry.get("time_zone", "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        e.add(f"[{where}] time_zone: expected an IANA time zone like Europe/Berlin (the mailbox's own"
              f" zone, used to write all-day events), got {zone!r}")
    kind = entry.get("mailbox_kind", default_kind)
    if kind is None:
        e.add(f"[{where}] mailbox_kind: missing; with both [exchange] and [graph] configured, say for each"
              " user (or once in [sync] mailbox_kind) whether the mailbox is on ews or graph")
    elif kind not in MAILBOX_KINDS:
        e.add(f"[{where}] mailbox_kind: expected one of {', '.join(MAILBOX_KINDS)}, got {kind!r}")
    elif kind not in configured:
        section = "exchange" if kind == "ews" else "graph"
        e.add(f"[{where}] mailbox_kind: {kind} needs a [{section}] section saying how to reach those mailboxes")
    start = entry.get("start_date")
    if start is not None and not isinstance(start, date):
        e.add(f"[{where}] start_date: expected a TOML date like 2026-01-01, got {start!r}")
    fields = dict(
        direction=e.run(_choice, entry, "direction", where, DIRECTIONS, "both"),
        filter=e.run(_choice, entry, "filter", where, FILTERS, "all"),
        enabled=e.run(_bool, entry, "enabled", where, True),
        send_external_invites=e.run(_bool, entry, "send_external_invites", where, False),
        allow_mass_delete=e.run(_bool, entry, "allow_mass_delete", where, False),
    )
    e.raise_if_any()
    return UserSettings(email=email, start_date=start, mailbox=mailbox, time_zone=zone, mailbox_kind=kind, **fields)


def _users(raw: Any, default_kind: str | None, configured: tuple[str, ...]) -> tuple[UserSettings, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("[[users]]: expected at least one synced user")
    e = _Errors()
    seen: set[str] = set()
    users = [e.run(_user, entry, f"users #{i}", seen, default_kind, configured) for i, entry in enumerate(raw, 1)]
    e.raise_if_any()
    return tuple(users)


def _store(raw: Any, base: Path) -> tuple[Path, int]:
    e = _Errors()
    raw = _table(raw, "store", e)
    if raw is None:
        e.raise_if_any()
    _unknown_keys(raw, "store", STORE_KEYS, e)
    value = raw.get("path", "data/calsync.duckdb")
    path = None
    if not isinstance(value, str) or not value.strip():
        e.add(f"[store] path: expected the path of the DuckDB file, got {value!r}")
    else:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
    days = raw.get("retention_days", 90)
    if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 36500:
        e.add(f"[store] retention_days: expected a whole number of days (0 keeps every snapshot), got {days!r}")
    e.raise_if_any()
    return path, days


def _notify(raw: Any, env: dict[str, str], base: Path) -> NotifySettings | None:
    if raw is None:
        return None
    e = _Errors()
    raw = _table(raw, "notify", e)
    if raw is None:
        e.raise_if_any()
    _unknown_keys(raw, "notify", NOTIFY_KEYS, e)
    url = e.run(_secret, raw, "webhook_url", "notify", env, False, base)
    block = raw.get("block")
    if block is not None and (not isinstance(block, str) or block.count("/") != 1):
        e.add(f"[notify] block: expected a saved Prefect notification block as \"<block-type-slug>/<name>\""
              f" (e.g. \"slack-webhook/calsync-alerts\"; `prefect block ls` lists them), got {block!r}")
    if url is None and block is None and not e.messages:
        e.add("[notify]: give webhook_url_env (a URL that gets a JSON POST) or block (a Prefect notification"
              " block), or leave the section out")
    if url is not None and block is not None:
        e.add("[notify] block: give a webhook_url or a block, not both")
    if url is not None and not url.get().startswith(("http://", "https://")):
        e.add(f"[notify] webhook_url: {url.source} must hold an http(s):// URL")
    e.raise_if_any()
    return NotifySettings(webhook_url=url, block=block)


def _log(raw: Any, base: Path) -> LogSettings:
    e = _Errors()
    raw = _table(raw, "log", e)
    if raw is None:
        e.raise_if_any()
    _unknown_keys(raw, "log", LOG_KEYS, e)
    level = str(raw.get("level", "INFO")).upper()
    if level not in LOG_LEVELS:
        e.add(f"[log] level: expected one of {', '.join(LOG_LEVELS)}, got {raw.get('level')!r}")
    file = raw.get("file")
    path = None
    if file is not None:
        if not isinstance(file, str) or not file.strip():
            e.add(f"[log] file: expected the path of the log file, got {file!r}")
        else:
            path = Path(file).expanduser()
            path = path if path.is_absolute() else base / path
    e.raise_if_any()
    return LogSettings(file=path, level=level)


def _scale(raw: Any) -> ScaleSettings:
    e = _Errors()
    raw = _table(raw, "scale", e)
    if raw is None:
        e.raise_if_any()
    _unknown_keys(raw, "scale", SCALE_KEYS, e)
    runner = e.run(_choice, raw, "task_runner", "scale", TASK_RUNNERS, "thread")
    address = raw.get("dask_address", "")
    if not isinstance(address, str) or (address.strip() and "://" not in address):
        e.add(f"[scale] dask_address: expected the Dask scheduler's address like \"tcp://scheduler:8786\" (empty:"
              f" a local cluster for the run), got {address!r}")
        address = ""
    if "dask_address" in raw and runner != "dask":
        e.add("[scale] dask_address: only used with task_runner = \"dask\"; set that too, or remove the address")
    settings = dict(
        task_runner=runner, dask_address=address.strip(),
        shard_size=e.run(_whole, raw, "shard_size", "scale", 200, 1, 100_000, "mailboxes per shard task"),
        max_parallel_shards=e.run(_whole, raw, "max_parallel_shards", "scale", 4, 1, MAX_PARALLEL,
                                  "shard tasks running at once"),
    )
    e.raise_if_any()
    return ScaleSettings(**settings)


def parse_config(raw: dict, env: dict[str, str] | None = None, base: Path | None = None) -> Config:
    """Validate a parsed TOML document; ``ConfigError`` lists every error it has. ``env`` defaults to the
    process environment; relative paths are relative to ``base`` (the config file's folder)."""
    env = dict(os.environ) if env is None else env
    base = base or Path.cwd()
    e = _Errors()
    for section in sorted(set(raw) - set(SECTIONS)):
        e.add(f"[{section}]: unknown section; expected {', '.join(sorted(SECTIONS))}")
    store = e.run(_store, raw.get("store"), base) or (None, 90)
    salesforce = e.run(_salesforce, raw.get("salesforce"), env, base)
    if "exchange" not in raw and "graph" not in raw:
        e.add("[exchange] / [graph]: missing; calsync needs at least one mailbox service: [exchange] for Exchange"
              " Server on premises (EWS), [graph] for Exchange Online / Microsoft 365 (Microsoft Graph)")
    exchange = e.run(_exchange, raw["exchange"], env, base) if "exchange" in raw else None
    graph = e.run(_graph, raw["graph"], env, base) if "graph" in raw else None
    sync = e.run(_sync, raw.get("sync")) or SyncSettings(mailbox_kind=(raw.get("sync") or {}).get("mailbox_kind")
                                                          if isinstance(raw.get("sync"), dict) else None)
    # A section with errors still counts as configured: its users are not told it is missing.
    configured = tuple(k for k, name in (("ews", "exchange"), ("graph", "graph")) if name in raw)
    default_kind = sync.mailbox_kind if sync.mailbox_kind in MAILBOX_KINDS else None
    default_kind = default_kind or (configured[0] if len(configured) == 1 else None)
    users = e.run(_users, raw.get("users"), default_kind, configured)
    notify = e.run(_notify, raw.get("notify"), env, base)
    log_settings = e.run(_log, raw.get("log"), base)
    scale = e.run(_scale, raw.get("scale"))
    e.raise_if_any()
    return Config(
        store_path=store[0],
        salesforce=salesforce,
        exchange=exchange,
        sync=sync,
        users=users,
        graph=graph,
        retention_days=store[1],
        notify=notify,
        log=log_settings,
        scale=scale,
    )


def load_store_settings(path: str | Path) -> tuple[Path, int]:
    """(store path, retention_days) of the config at ``path``, validating only ``[store]``: commands that only
    read the store (history, prune) need no secrets."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}; pass --config FILE (see docs/config.md)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _store(raw.get("store"), path.parent.resolve())


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
