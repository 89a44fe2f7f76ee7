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

    [exchange]
    endpoint = "https://mail.acme.com/EWS/Exchange.asmx"
    username = "svc-calsync@acme.com"   # a service account with ApplicationImpersonation
    password_env = "CALSYNC_EWS_PASSWORD"
    auth_type = "ntlm"                  # ntlm | basic

    [sync]
    mass_delete_share = 0.5
    mass_delete_min = 4

    [[users]]
    email = "alice@acme.com"
    direction = "both"                  # both | salesforce_to_email | email_to_salesforce
    filter = "all"                      # updates_only | all | with_invitee | with_contact_or_lead
    start_date = 2026-01-01
    mailbox = "alice@acme.com"          # defaults to email
    enabled = true
    send_external_invites = false
    time_zone = "Europe/Berlin"         # the mailbox's zone (all-day events are dates there)
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class SyncSettings:
    mass_delete_share: float = 0.5
    mass_delete_min: int = 4
    batch_size: int = 200


@dataclass(frozen=True)
class Config:
    store_path: Path
    salesforce: SalesforceSettings
    exchange: ExchangeSettings
    sync: SyncSettings
    users: tuple[UserSettings, ...] = field(default_factory=tuple)
    source: Path | None = None

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


def _salesforce(raw: Any, env: dict[str, str], base: Path) -> SalesforceSettings:
    if not isinstance(raw, dict):
        raise ConfigError("[salesforce]: missing section; it says how to reach the Salesforce org")
    where = "salesforce"
    auth = _choice(raw, "auth", where, SF_AUTHS, "jwt")
    ca = raw.get("ca_file")
    ca_path = None
    if ca is not None:
        ca_path = (base / ca).resolve() if not Path(ca).is_absolute() else Path(ca)
        if not ca_path.is_file():
            raise ConfigError(f"[salesforce] ca_file: no file at {ca_path}")
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
    wait = raw.get("max_retry_wait_s", 60)
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 3600:
        raise ConfigError(f"[exchange] max_retry_wait_s: expected seconds from 0 to 3600, got {wait!r}")
    return ExchangeSettings(
        endpoint=endpoint,
        username=username,
        password=_secret(raw, "password", where, env, True),
        auth_type=_choice(raw, "auth_type", where, EWS_AUTHS, "ntlm"),
        max_retry_wait_s=float(wait),
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
    return SyncSettings(float(share), minimum, batch)


def _users(raw: Any) -> tuple[UserSettings, ...]:
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
            "send_external_invites", "allow_mass_delete", "time_zone",
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
            )
        )
    return tuple(users)


def parse_config(raw: dict, env: dict[str, str] | None = None, base: Path | None = None) -> Config:
    """Validate a parsed TOML document. ``env`` defaults to the process environment."""
    env = dict(os.environ) if env is None else env
    base = base or Path.cwd()
    known = {"store", "salesforce", "exchange", "sync", "users"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"[{sorted(unknown)[0]}]: unknown section; expected {', '.join(sorted(known))}")
    store = raw.get("store", {}) or {}
    path = Path(store.get("path", "data/calsync.duckdb"))
    if not path.is_absolute():
        path = base / path
    return Config(
        store_path=path,
        salesforce=_salesforce(raw.get("salesforce"), env, base),
        exchange=_exchange(raw.get("exchange"), env),
        sync=_sync(raw.get("sync")),
        users=_users(raw.get("users")),
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
    return Config(cfg.store_path, cfg.salesforce, cfg.exchange, cfg.sync, cfg.users, path)
