"""``calsync check --config FILE``: can a sync run with this config? Signs in to Salesforce and to every
mailbox service, reads one calendar per mailbox kind (through the mailbox contract), describes Event
(required custom fields, Shared Activities), checks that each enabled user exists on both sides, and
looks at the store and the Prefect API. Writes nothing anywhere (not even the store). One PASS/FAIL line
per check; the exit code is 1 when any check failed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from connectors.errors import CalsyncError

# A read over a window this short still signs in and opens the calendar, and returns next to nothing.
_PROBE = timedelta(minutes=1)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {' '.join(self.detail.split())}"


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, CalsyncError) else (
        f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")


def run_checks(config: Path, verbose: bool = False, out=None) -> int:
    """Print one line per check to ``out`` (stdout); 0 when every check passed, else 1."""
    from flows import logs
    from flows.config import load_config

    out = out or sys.stdout
    cfg = load_config(config)  # a ConfigError is exit 2, like every command
    logs.configure(cfg, verbose=verbose)
    results: list[Check] = []

    def report(check: Check) -> Check:
        results.append(check)
        print(check.line(), file=out, flush=True)
        return check

    users = cfg.enabled_users
    kinds = sorted({u.mailbox_kind for u in users})
    report(Check("config", True, f"{config}: {len(users)} enabled users ({', '.join(kinds) or 'none'})"))
    _salesforce_checks(cfg, report)
    _mailbox_checks(cfg, report)
    report(_store_check(cfg))
    report(_prefect_check())
    if cfg.notify is not None:
        report(Check("notify", True, f"notifications go through {cfg.notify.describe()} (none sent by check)"))
    failed = sum(not c.ok for c in results)
    print(f"check: {len(results) - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0


def _attempt(report: Callable[[Check], Check], name: str, fn: Callable[[], str]) -> bool:
    try:
        detail = fn()
    except Exception as exc:  # each check reports its own failure and the others go on
        report(Check(name, False, _error_text(exc)))
        return False
    report(Check(name, True, detail))
    return True


def _salesforce_checks(cfg, report) -> None:
    from flows import pipeline

    state: dict = {}

    def sign_in() -> str:
        sf, calls = pipeline._salesforce(cfg)
        state["sf"] = sf
        org = sf.org_info()  # the first call of a session-id connection: it signs in here
        state["org"] = org
        where = cfg.salesforce.instance_url or cfg.salesforce.domain
        return f"signed in ({cfg.salesforce.auth}, {where}, API {cfg.salesforce.api_version}; {calls[0]} calls)"

    if not _attempt(report, "salesforce sign-in", sign_in):
        report(Check("salesforce Event", False, "not checked: no Salesforce connection"))
        for u in cfg.enabled_users:
            report(Check(f"user {u.email}: Salesforce", False, "not checked: no Salesforce connection"))
        return
    org = state["org"]
    shared = "Shared Activities on" if org.shared_activities else "Shared Activities off (one Contact or Lead per event)"
    if org.required_fields:
        many = len(org.required_fields) > 1
        report(Check("salesforce Event", False,
                     f"Event requires custom field{'s' if many else ''} {', '.join(org.required_fields)}: calsync"
                     f" cannot fill {'them' if many else 'it'}, so no event can be created in Salesforce (R16); make"
                     f" {'them' if many else 'it'} optional or give {'them' if many else 'it'} a default; {shared}"))
    else:
        report(Check("salesforce Event", True, f"no required custom fields; {shared}"))
    try:
        ids = state["sf"].user_ids([u.email for u in cfg.enabled_users])
    except Exception as exc:
        for u in cfg.enabled_users:
            report(Check(f"user {u.email}: Salesforce", False, _error_text(exc)))
        return
    for u in cfg.enabled_users:
        if u.email in ids:
            report(Check(f"user {u.email}: Salesforce", True, f"active User {ids[u.email]}"))
        else:
            report(Check(f"user {u.email}: Salesforce", False,
                         f"no active Salesforce User has the email {u.email}: fix the address in [[users]] or"
                         " activate the User"))


def _mailbox_checks(cfg, report) -> None:
    from connectors.mailbox import Mailboxes
    from flows import pipeline

    users = cfg.enabled_users
    connectors, broken = {}, {}
    for kind in sorted({u.mailbox_kind for u in users}):
        try:
            connectors.update(pipeline.mailbox_connectors(cfg, {kind}))
        except Exception as exc:  # that kind's sign-in fails; the others are still checked
            broken[kind] = exc
    mail = Mailboxes(connectors, {u.mailbox: u.mailbox_kind for u in users if u.mailbox_kind in connectors})
    now = datetime.now(timezone.utc)
    try:
        signed_in: dict[str, bool] = {}
        for kind, exc in broken.items():
            report(Check(f"{kind} sign-in", False, _error_text(exc)))
            signed_in[kind] = False
        for u in users:
            def read(u=u) -> str:
                got = mail.read(u.email, u.mailbox, now, now + _PROBE)
                return (f"read the calendar of {u.mailbox} ({u.mailbox_kind}, {got.events.height} events in the next"
                        " minute)")

            if u.mailbox_kind not in signed_in:
                # The first user of each kind is the sign-in check of that service: one calendar read per kind.
                name = {"ews": "ews sign-in", "graph": "graph sign-in"}.get(u.mailbox_kind, u.mailbox_kind)
                signed_in[u.mailbox_kind] = _attempt(report, name, read)
                report(Check(f"user {u.email}: mailbox", signed_in[u.mailbox_kind],
                             f"{u.mailbox}: see {name}" if signed_in[u.mailbox_kind]
                             else f"{u.mailbox}: not readable (see {name})"))
                continue
            if not signed_in[u.mailbox_kind]:
                report(Check(f"user {u.email}: mailbox", False, f"{u.mailbox}: not checked ({u.mailbox_kind} sign-in failed)"))
                continue
            _attempt(report, f"user {u.email}: mailbox", read)
    finally:
        mail.close()


def _store_check(cfg) -> Check:
    import duckdb

    from connectors.store import SCHEMA_VERSION

    path = cfg.store_path
    if not path.exists():
        parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
        import os

        if parent is None or not os.access(parent, os.W_OK):
            return Check("store", False, f"{path} does not exist and {parent} is not writable: the first sync"
                                          " cannot create it; fix [store] path or the folder's permissions")
        return Check("store", True, f"{path} does not exist yet: the first sync creates it")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        return Check("store", False, f"cannot open {path} ({type(exc).__name__}: {exc}); is a sync running?")
    try:
        version = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
        runs = con.execute("SELECT count(*) FROM runs").fetchall()[0][0]
    except duckdb.Error:
        con.close()
        return Check("store", False, f"{path} is not a calsync store (no schema_version or runs table)")
    con.close()
    if version > SCHEMA_VERSION:
        return Check("store", False, f"{path} has schema version {version}, newer than this calsync"
                                      f" ({SCHEMA_VERSION}): upgrade calsync")
    later = "" if version == SCHEMA_VERSION else f"; the next sync upgrades it to {SCHEMA_VERSION}"
    return Check("store", True, f"{path} (schema version {version}, {runs} runs){later}")


def _prefect_check() -> Check:
    """Which Prefect API a sync would report to; starts nothing."""
    import os

    from flows import deploy

    url = os.environ.get("PREFECT_API_URL") or deploy._configured_api_url()
    if url:
        if deploy.healthy(url, timeout=5.0):
            return Check("prefect", True, f"the Prefect server at {url} (PREFECT_API_URL) answers")
        return Check("prefect", False, f"the Prefect server at {url} (PREFECT_API_URL) does not answer: start it,"
                                       " or unset PREFECT_API_URL, or sync with --no-prefect")
    state = deploy.read_state()
    if state and state.get("api_url") and deploy.healthy(state["api_url"]):
        return Check("prefect", True, f"runs report to the server `calsync deploy` started ({state['api_url']})")
    return Check("prefect", True, "no Prefect server running: each `calsync sync` starts a temporary one (about"
                                  " 10 s); set PREFECT_API_URL or keep `calsync deploy` running to reuse one")
