"""The stages of one sync run as plain functions: extract, snapshot, reconcile, load, finish.

``flows/sync.py`` wraps each in a Prefect task; tests and the replay call them directly too.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Callable

import polars as pl
import requests

from connectors.errors import CalsyncError, FatalError, connection_problem
from connectors.exchange import ExchangeConnector
from connectors.mailbox import MailboxConnector, Mailboxes
from connectors.salesforce import OrgInfo, SalesforceConnector
from connectors.store import Store
from flows.config import Config
from transforms.normalise import normalise, translate_legacy_hashes
from transforms.reconcile import ReconcileResult, Settings, apply_outcomes, reconcile
from transforms.schema import (
    DERIVED_SCHEMA,
    DIRECTORY_SCHEMA,
    EVENT_SCHEMA,
    NOTE_SCHEMA,
    OUTCOME_SCHEMA,
    USER_SCHEMA,
    conform,
    empty,
)
from transforms.window import window_bounds

Progress = Callable[[str, int, int], None]
# extracted rows: the canonical frame, plus the digests of private rows reused from a snapshot
ROW_SCHEMA = EVENT_SCHEMA | DERIVED_SCHEMA
log = logging.getLogger("calsync")

# Incremental reads (docs/scale.md): the version of how connectors shape a mailbox row. Bump it whenever a
# connector changes what it puts in a row (a field added, a value shaped differently): rows a run kept in an
# older format are not reused, so every mailbox's next read is a full one. The polars version is part of it:
# reused private rows bring their stored digests, whose values change with it.
ROW_FORMAT = 1


def row_format() -> str:
    return f"{ROW_FORMAT}/polars {pl.__version__}"
# The safety net: each mailbox is read in full at least this often, whatever its change keys say.
FULL_READ_EVERY = timedelta(hours=24)
# Rows kept from the last reads are fetched from the store this many at a time (see merge_reads).
REUSED_PER_QUERY = 25_000


@dataclass
class Connections:
    salesforce: SalesforceConnector
    mail: Mailboxes  # every user's mailbox, through the connector of its kind
    sf_calls: list[int] = field(default_factory=lambda: [0])  # Salesforce HTTP calls this run
    # mailboxes in flight at once per kind (flows.parallel; empty: its default for each)
    parallel: dict[str, int] = field(default_factory=dict)
    # mailbox calls made elsewhere for this run (shard tasks on a Dask cluster), per kind
    remote_calls: dict[str, int] = field(default_factory=dict)

    def api_calls(self) -> dict[str, int | None]:
        """The calls made so far, as ``Store.finish_run`` takes them (None: that service was not used)."""
        by_kind = self.mail.api_calls_by_kind()
        for kind, n in self.remote_calls.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        return {"sf_api_calls": self.sf_calls[0], "ews_api_calls": by_kind.get("ews"),
                "graph_api_calls": by_kind.get("graph")}

    def close(self) -> None:
        self.mail.close()


def _salesforce(cfg: Config) -> tuple[SalesforceConnector, list[int]]:
    s = cfg.salesforce
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE must not override the CA we were told to trust
    session.verify = str(s.ca_file) if s.ca_file else True
    calls = [0]

    def count(response, *args, **kwargs):  # requests hook signature
        calls[0] += 1

    session.hooks["response"].append(count)
    if s.auth == "session":
        sf = SalesforceConnector.from_session(
            s.instance_url, s.session_id.get(), session=session, version=s.api_version
        )
    elif s.auth == "jwt":
        sf = SalesforceConnector.from_jwt(
            s.username, s.consumer_key.get(), s.private_key.get(), s.domain,
            session=session, version=s.api_version,
        )
    else:
        sf = SalesforceConnector.from_client_credentials(
            s.consumer_key.get(), s.consumer_secret.get(), s.domain,
            session=session, version=s.api_version,
        )
    sf.batch_size = cfg.sync.batch_size
    return sf, calls


def mailbox_connectors(cfg: Config, kinds: set[str] | None = None) -> dict[str, MailboxConnector]:
    """One connector per mailbox kind the enabled users need (or of ``kinds``). A connector that cannot even be
    made (Graph signs in to Microsoft Entra ID at once) raises calsync's error naming the service."""
    kinds = {u.mailbox_kind for u in cfg.enabled_users} if kinds is None else kinds
    zones = {u.mailbox: u.time_zone for u in cfg.users}
    out: dict[str, MailboxConnector] = {}
    try:
        if "ews" in kinds:
            e = cfg.exchange
            out["ews"] = ExchangeConnector(e.endpoint, e.username, e.password.get(), auth_type=e.auth_type,
                                           time_zones=zones, batch_size=min(cfg.sync.batch_size, 100),
                                           max_wait_s=e.max_retry_wait_s, **_ews_pool(e.max_parallel_mailboxes))
        if "graph" in kinds:
            out["graph"] = _graph_connector(cfg, zones)
    except Exception:
        for c in out.values():
            c.close()
        raise
    return out


def _ews_pool(limit: int) -> dict:
    """exchangelib's session pool as large as the mailboxes in flight (its default is one session, which would
    make parallel reads wait on each other), where the connector takes the setting."""
    import inspect

    return {"max_connections": limit} if "max_connections" in inspect.signature(ExchangeConnector).parameters else {}


def _graph_connector(cfg: Config, zones: dict[str, str]) -> MailboxConnector:
    from connectors.graph import GraphConnector  # msal only where Graph is used

    g = cfg.graph
    domains = g.internal_domains or tuple(sorted(
        {u.mailbox.split("@", 1)[1] for u in cfg.users if u.mailbox_kind == "graph"}))
    try:
        return GraphConnector(
            g.tenant_id, g.client_id,
            certificate_pem=g.certificate.get() if g.certificate else None,
            client_secret=g.client_secret.get() if g.client_secret else None,
            authority_host=g.authority_host, graph_url=g.graph_url,
            ca_file=str(g.ca_file) if g.ca_file else None, time_zones=zones,
            internal_domains=domains, max_wait_s=g.max_retry_wait_s, batch_size=min(cfg.sync.batch_size, 20),
        )
    except CalsyncError:
        raise
    except Exception as exc:  # msal reaches the authority when it is made: tell a connection failure apart
        problem = connection_problem(exc, "Microsoft Entra ID", f"{g.authority_host}/{g.tenant_id}",
                                     "[graph] authority_host")
        if problem is not None:
            raise problem from exc
        raise FatalError(f"cannot set up the Microsoft Graph connector for tenant {g.tenant_id}"
                         f" ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}): check [graph]") from exc


def connect(cfg: Config) -> Connections:
    """Open the Salesforce connector and one mailbox connector per kind from a validated config."""
    sf, calls = _salesforce(cfg)
    connectors = mailbox_connectors(cfg)
    try:
        mail = Mailboxes(connectors, {u.mailbox: u.mailbox_kind for u in cfg.enabled_users})
    except Exception:
        for c in connectors.values():
            c.close()
        raise
    return Connections(sf, mail, calls, parallel=cfg.parallel_limits())


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


@dataclass
class Extracted:
    events: pl.DataFrame
    pairs: pl.DataFrame
    users: pl.DataFrame
    directory: pl.DataFrame
    org: OrgInfo
    notes: pl.DataFrame = field(default_factory=lambda: empty(NOTE_SCHEMA))
    # mailbox -> (kind, read in full?) of every mailbox this run read (recorded with its snapshot)
    reads: dict[str, tuple[str, bool]] = field(default_factory=dict)


def _note(user_key: str, kind: str, reason: str, detail: str, side: str | None = None,
          native_id: str | None = None) -> dict:
    return {"user_key": user_key, "kind": kind, "side": side, "native_id": native_id,
            "reason": reason, "detail": detail}


def users_frame(cfg: Config, conns: Connections) -> tuple[pl.DataFrame, list[dict]]:
    """The enabled users with their Salesforce User ids; a user without one is refused with a note."""
    sf_ids = conns.salesforce.user_ids([u.email for u in cfg.enabled_users])
    rows, notes = [], []
    for u in cfg.enabled_users:
        if u.email not in sf_ids:
            notes.append(_note(u.email, "refused", "no_salesforce_user",
                               f"no active Salesforce User has the email {u.email}; this user is not "
                               "synced until one does (check the address in the config)"))
            continue
        rows.append({
            "user_key": u.email, "direction": u.direction, "filter_mode": u.filter,
            "start_date": u.start_date, "mailbox": u.mailbox, "sf_user_id": sf_ids[u.email],
            "send_external_invites": u.send_external_invites,
            "allow_mass_delete": u.allow_mass_delete,
        })
    users = conform(pl.DataFrame(rows, schema=USER_SCHEMA), USER_SCHEMA) if rows else empty(USER_SCHEMA)
    return users, notes


def directory_for(conns: Connections, events: pl.DataFrame, users: pl.DataFrame) -> pl.DataFrame:
    """The Contacts, Leads and Users whose addresses appear among the invitees, or are synced users."""
    emails = (
        events.select(pl.col("invitees").explode().struct.field("email")).drop_nulls().unique().to_series().to_list()
        if events.height else []
    )
    found = conns.salesforce.directory(sorted(set(emails) | set(users["user_key"].to_list())))
    return conform(found, DIRECTORY_SCHEMA)


def extract(cfg: Config, conns: Connections, store: Store, today: date,
            progress: Progress | None = None, full_read: bool = False, now: datetime | None = None,
            shards=None) -> Extracted:
    """Read both calendars of every enabled user (one query for all on Salesforce), plus every
    paired event that left the window (by id, so a missing one is a confirmed deletion).

    Mailboxes are read incrementally where the store's record of their last read can be trusted (same kind,
    same row format, a full read within FULL_READ_EVERY of ``now``): only new and changed items are fetched,
    the others' rows come from that read's snapshot, so this run's snapshot is as complete as a full read's.
    ``full_read`` reads every mailbox in full. ``shards`` (``flows.shards.DaskShards``): the mailboxes are read
    in shards on a Dask cluster instead of this process's threads; the result is the same."""
    notes: list[dict] = []
    org = conns.salesforce.org_info()
    users, user_notes = users_frame(cfg, conns)
    notes.extend(user_notes)
    keys = users["user_key"].to_list()
    pairs = live_pairs(store, conns)
    # R15/C17: pairs with another mailbox are never read from (the reconcile drops them).
    mine = pairs.join(users.select("user_key", "mailbox"), on=["user_key", "mailbox"], how="semi")

    bounds = [window_bounds(today, u["start_date"]) for u in users.iter_rows(named=True)]
    if not bounds:
        return Extracted(empty(EVENT_SCHEMA), pairs, users, empty(DIRECTORY_SCHEMA), org,
                         pl.DataFrame(notes, schema=NOTE_SCHEMA) if notes else empty(NOTE_SCHEMA))
    w_start = min(b[0] for b in bounds)
    w_end = max(b[1] for b in bounds)

    sf_events = conns.salesforce.extract(
        dict(zip(keys, users["sf_user_id"].to_list())), w_start, w_end,
        confirm_ids=mine["sf_id"].drop_nulls().to_list(),
    )
    kinds = {m: k for m in users["mailbox"].to_list() if (k := conns.mail.kind_of(m))}
    known, runs = (None, {}) if full_read else store.known_versions(
        kinds, row_format(), (now or datetime.now(timezone.utc)) - FULL_READ_EVERY)
    if known is not None:  # rows of the same user's mailbox only (a mailbox given to another user starts afresh)
        known = known.join(users.select("user_key", "mailbox"), on=["user_key", "mailbox"], how="semi")
    trusted = set(runs)
    if shards is not None:
        reads = shards.read(users, mine, w_start, w_end, known, trusted, conns.parallel, progress)
    else:
        reads = read_mailboxes(conns.mail, users, mine, w_start, w_end, progress, known, trusted, conns.parallel)
    del known  # what the reads needed of the last reads' rows; the rows they kept are fetched once, below
    email_events, email_notes, failed_users, unreadable = merge_reads(users, reads, store, runs)
    del reads
    notes.extend(email_notes)
    # (the digests reused private rows brought along; null elsewhere: normalise computes them)
    events = pl.concat([conform(sf_events, ROW_SCHEMA), conform(email_events, ROW_SCHEMA)], rechunk=False)
    del sf_events, email_events
    # A user whose mailbox could not be read is left out whole this run (both sides), and a pair
    # whose email item could not be read is held: neither counts as a deletion.
    held = mine.filter(pl.col("email_id").is_in(list(unreadable)) | pl.col("user_key").is_in(list(failed_users)))
    if held.height or failed_users:
        events = events.filter(
            ~pl.col("user_key").is_in(list(failed_users))
            & ~pl.col("native_id").is_in(held["sf_id"].drop_nulls().implode())
            & ~pl.col("native_id").is_in(held["email_id"].drop_nulls().implode())
        )
        users = users.filter(~pl.col("user_key").is_in(list(failed_users)))
        pairs = pairs.join(held.select("pair_id"), on="pair_id", how="anti")

    directory = directory_for(conns, events, users)
    reads = {m: (kinds[m], m not in trusted) for m in users["mailbox"].to_list() if m in kinds}
    return Extracted(events, pairs, users, directory, org,
                     pl.DataFrame(notes, schema=NOTE_SCHEMA) if notes else empty(NOTE_SCHEMA), reads)


def read_mailbox(mail: MailboxConnector, user_key: str, mailbox: str, w_start: datetime, w_end: datetime,
                 confirm: list[str], known: pl.DataFrame | None = None,
                 ) -> tuple[pl.DataFrame, list[dict], set[str], list[str]]:
    """One mailbox's view over the window, plus the paired ``confirm`` ids the view did not return, looked up
    by id (found: still there, outside the window; not found: gone). Returns (events read, notes, unreadable
    ids, reused ids).

    ``known``: what its last trusted read kept of this mailbox's rows (native_id, version, start, end: see
    ``Store.known_versions``; incremental read). The items the view shows at the version of their known row are
    not fetched; their known rows are to be reused (``reused ids``, fetched from the store by the caller) when
    they overlap the window (C1) or are among ``confirm`` (still in the calendar, outside the window)."""
    versions = dict(zip(known["native_id"].to_list(), known["version"].to_list())) if known is not None else None
    got = mail.read(user_key, mailbox, w_start, w_end, known=versions)
    events = conform(got.events, ROW_SCHEMA)
    reused: list[str] = []
    if got.unchanged:
        reused = known.filter(pl.col("native_id").is_in(got.unchanged)
                              & (((pl.col("start") < w_end) & (pl.col("end") > w_start))
                                 | pl.col("native_id").is_in(list(confirm))))["native_id"].to_list()
    seen = set(events["native_id"].to_list()) | set(reused)
    more = mail.confirm(user_key, mailbox, [i for i in dict.fromkeys(confirm) if i not in seen])
    notes, unreadable = [], set()
    for problem_user, native_id, reason in got.problems + more.problems:
        if native_id:
            unreadable.add(native_id)
        notes.append(_note(problem_user, "skipped", str(reason).split(":")[0], str(reason), "email", native_id))
    return pl.concat([events, conform(more.events, ROW_SCHEMA)]), notes, unreadable, reused


def read_mailboxes(mail: MailboxConnector, users: pl.DataFrame, pairs: pl.DataFrame, w_start: datetime,
                   w_end: datetime, progress: Progress | None = None, known: pl.DataFrame | None = None,
                   trusted: set[str] = frozenset(), limits: dict[str, int] | None = None,
                   ) -> list[tuple[pl.DataFrame, list[dict], set[str], list[str]] | FatalError]:
    """Per user (in order): ``read_mailbox``'s (events, notes, unreadable ids, reused ids), or the ``FatalError``
    that kept the mailbox from being read. A ``RetriableError`` still unresolved after the pool's retry is raised."""
    from flows.parallel import Job, run_pool

    # split once (not a filter of the whole table per user)
    confirm_of = dict(pairs.select("user_key", "email_id").drop_nulls().group_by("user_key").agg("email_id")
                      .iter_rows()) if pairs.height else {}
    known_of = _slices_by_mailbox(known)
    kind_of = getattr(mail, "kind_of", None)

    def job(user_key: str, mailbox: str) -> Callable[[], object]:
        base = (known_of.get(mailbox, known.head(0)) if known is not None else None) if mailbox in trusted else None

        def read() -> tuple[pl.DataFrame, list[dict], set[str], list[str]] | FatalError:
            try:
                return read_mailbox(mail, user_key, mailbox, w_start, w_end, confirm_of.get(user_key, []), base)
            except FatalError as exc:
                return exc
        return read

    rows = users.select("user_key", "mailbox").rows()
    jobs = [Job((kind_of(m) if kind_of else None) or getattr(mail, "kind", "ews"), job(u, m)) for u, m in rows]
    done = [0]

    def counted(_i: int, _result: object) -> None:
        done[0] += 1

    def tick() -> None:
        if progress:
            progress("read mailboxes", done[0], len(jobs))

    tick()
    results = run_pool(jobs, limits or {}, retries=1, on_result=counted, tick=tick)
    tick()
    return results


def _slices_by_mailbox(known: pl.DataFrame | None) -> dict[str, pl.DataFrame]:
    """mailbox -> its rows of ``known`` (sorted by mailbox, as ``Store.known_versions`` gives it): zero-copy slices,
    not a copy of every row as ``partition_by`` makes."""
    if known is None or not known.height:
        return {}
    known = known.sort("mailbox") if not known["mailbox"].is_sorted() else known
    runs = known.select(pl.col("mailbox").rle()).unnest("mailbox")  # len, value
    out, at = {}, 0
    for n, mailbox in runs.iter_rows():
        out[mailbox] = known.slice(at, n)
        at += n
    return out


def merge_reads(users: pl.DataFrame, results: list, store: Store,
                runs: dict[str, str]) -> tuple[pl.DataFrame, list[dict], set[str], set[str]]:
    """The per-user results of ``read_mailboxes`` as (events, notes, failed users, unreadable ids); a mailbox
    that could not be read is noted and its user left out. The rows the reads reused come from ``store``: the
    snapshot of the mailbox's last read (``runs``: mailbox -> its run), REUSED_PER_QUERY at a time. Raises the first
    error when nobody could be read (the credentials or the server, not one mailbox)."""
    frames, notes, failed, unreadable = [], [], set(), set()
    reused: dict[str, list] = {"mailbox": [], "native_id": []}
    first_error: FatalError | None = None
    for (user_key, mailbox), result in zip(users.select("user_key", "mailbox").rows(), results):
        if isinstance(result, FatalError):
            first_error = first_error or result
            failed.add(user_key)
            notes.append(_note(user_key, "refused", "mailbox_unreadable",
                               f"could not read mailbox {mailbox}: {result}; this user is not synced this run"))
            continue
        events, user_notes, user_unreadable, user_reused = result
        frames.append(events)
        notes.extend(user_notes)
        unreadable |= user_unreadable
        reused["mailbox"].extend([mailbox] * len(user_reused))
        reused["native_id"].extend(user_reused)
    if first_error is not None and len(failed) == users.height:
        raise first_error  # nobody could be read: the credentials or the server, not one mailbox
    if reused["native_id"]:
        wanted = pl.DataFrame(reused, schema={"mailbox": pl.String, "native_id": pl.String}).with_columns(
            pl.col("mailbox").replace_strict(runs, return_dtype=pl.String).alias("run_id"))
        del reused
        # in parts: DuckDB's memory for one query grows with its result, a few times the frame it makes
        kept = pl.concat([store.reused_rows(wanted.slice(at, REUSED_PER_QUERY))
                          for at in range(0, wanted.height, REUSED_PER_QUERY)], rechunk=False)
        # a private row keeps no details (R9): only its stored digests describe it; others are hashed afresh
        private = pl.col("is_private").fill_null(False)
        frames.append(conform(kept, ROW_SCHEMA).with_columns(
            pl.when(private).then(pl.col(c)).otherwise(None).alias(c) for c in DERIVED_SCHEMA))
    events = pl.concat(frames, rechunk=False) if frames else empty(ROW_SCHEMA)
    return events, notes, failed, unreadable


def live_pairs(store: Store, conns: Connections) -> pl.DataFrame:
    """The stored pairs as this run must see them: a mailbox now reached through another kind than its
    pairs were made with (moved from Exchange Server to Exchange Online, say) has item ids of the other
    protocol, so its pairs are handed on as pairs of another mailbox, which the reconcile drops without
    touching it (C17, reason mailbox_changed); the events then pair again by key."""
    pairs = store.pairs()
    before = store.mailbox_kinds()
    moved = {m: k for m, k in before.items() if conns.mail.kind_of(m) not in (None, k)}
    if not moved or not pairs.height:
        return pairs
    old_kind = pl.col("mailbox").replace_strict(moved, default=None, return_dtype=pl.String)
    return pairs.with_columns(
        pl.when(old_kind.is_not_null()).then(pl.format("{} (through {})", pl.col("mailbox"), old_kind))
        .otherwise(pl.col("mailbox")).alias("mailbox"))


def record_mailbox_kinds(store: Store, conns: Connections, users: pl.DataFrame, run_id: str) -> None:
    """Remember the kind each synced mailbox was reached through (see ``live_pairs``)."""
    kinds = {m: conns.mail.kind_of(m) for m in users["mailbox"].to_list()}
    store.set_mailbox_kinds({m: k for m, k in kinds.items() if k}, run_id)


def snapshot(store: Store, run_id: str, ex: Extracted) -> pl.DataFrame:
    """Normalise (key, content hash) and keep what the run read. Returns the normalised events."""
    events = normalise(ex.events)
    ex.pairs = with_translated_hashes(store, events, ex.pairs)
    store.write_snapshot(run_id, events, ex.pairs, ex.users, ex.directory)
    if ex.reads:
        store.record_mailbox_reads(run_id, ex.reads, row_format())
    return events


def with_translated_hashes(store: Store, events: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """``pairs`` (read from ``store``) with the hashes a version-1 store kept translated by the normalised
    ``events`` just read (``translate_legacy_hashes``); the store keeps the translation. Nothing to do (one
    cheap query) once every pair is translated."""
    legacy = store.legacy_pair_hashes()
    if not legacy.len():
        return pairs
    translated, done = translate_legacy_hashes(store.pairs(), events, legacy)
    store.translate_pair_hashes(translated, done)
    return pairs.drop("sf_hash", "email_hash").join(
        translated.select("pair_id", "sf_hash", "email_hash"), on="pair_id", how="left", maintain_order="left"
    ).select(pairs.columns)


def settings_for(cfg: Config, org: OrgInfo, allow_deletes: bool = False) -> Settings:
    return Settings(
        mass_delete_share=1.0 if allow_deletes else cfg.sync.mass_delete_share,
        mass_delete_min=10**9 if allow_deletes else cfg.sync.mass_delete_min,
        shared_activities=org.shared_activities,
        sf_create_blocked=org.required_fields[0] if org.required_fields else None,
    )


def plan(store: Store, run_id: str, events: pl.DataFrame, ex: Extracted, today: date,
         settings: Settings) -> ReconcileResult:
    result = reconcile(events, ex.pairs, ex.users, ex.directory, today=today, settings=settings)
    store.write_plan(run_id, result.deltas, pl.concat([ex.notes, conform(result.notes, NOTE_SCHEMA)]))
    return result


def _no_call_outcomes(deltas: pl.DataFrame) -> pl.DataFrame:
    return conform(
        deltas.select("delta_id", "target_id").with_columns(
            pl.lit("applied").alias("status"), pl.col("target_id").alias("new_id")
        ),
        OUTCOME_SCHEMA,
    )


def load(store: Store, run_id: str, conns: Connections, org: OrgInfo, deltas: pl.DataFrame,
         pairs: pl.DataFrame, users: pl.DataFrame, refresh: pl.DataFrame | None = None,
         progress: Progress | None = None, shards=None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply ``deltas`` side by side; after each side, record its outcomes and the pair state they
    justify in one transaction. Returns (all outcomes, new pairs). Email deltas are written mailboxes in
    parallel (``flows.parallel``), or in shards on a Dask cluster with ``shards``."""
    # Stored hashes of pairs whose sides changed with nothing to write (see reconcile's pair_refresh).
    current = apply_outcomes(pairs, deltas.head(0), empty(OUTCOME_SCHEMA), run_id, refresh=refresh)
    all_outcomes: list[pl.DataFrame] = []
    no_call = deltas.filter(pl.col("op").cast(pl.String).is_in(["pair", "unpair"]))
    writes = deltas.filter(~pl.col("op").cast(pl.String).is_in(["pair", "unpair"]))
    steps: list[tuple[str, pl.DataFrame, Callable[[pl.DataFrame], pl.DataFrame]]] = []
    if no_call.height or (refresh is not None and refresh.height):
        steps.append(("pairs", no_call, _no_call_outcomes))
    sf_deltas = writes.filter(pl.col("target_side").cast(pl.String) == "salesforce")
    em_deltas = writes.filter(pl.col("target_side").cast(pl.String) == "email")
    internal = set(users["mailbox"].to_list())
    opted_in = set(users.filter(pl.col("send_external_invites"))["mailbox"].to_list())

    def _sf(d: pl.DataFrame) -> pl.DataFrame:
        cb = (lambda done, total: progress("write salesforce", done, total)) if progress else None
        return conns.salesforce.apply(d, org, progress=cb)

    def _em(d: pl.DataFrame) -> pl.DataFrame:
        from flows.parallel import apply_in_parallel

        cb = (lambda done, total: progress("write email", done, total)) if progress else None
        if shards is not None:
            return shards.write(conns.mail, d, sorted(internal), sorted(opted_in), conns.parallel, progress=cb)
        return apply_in_parallel(conns.mail, d, internal=sorted(internal), send_external=sorted(opted_in),
                                 limits=conns.parallel, progress=cb)

    if sf_deltas.height:
        steps.append(("salesforce", sf_deltas, _sf))
    if em_deltas.height:
        steps.append(("email", em_deltas, _em))
    for _name, part, apply in steps:
        try:
            outcomes = conform(apply(part), OUTCOME_SCHEMA) if part.height else empty(OUTCOME_SCHEMA)
        except CalsyncError as exc:
            # Writes made before a fatal error (credentials revoked, API limit) are still recorded.
            partial = getattr(exc, "outcomes", None)
            if partial is not None and partial.height:
                partial = conform(partial, OUTCOME_SCHEMA)
                store.record_outcomes(run_id, partial, apply_outcomes(current, part, partial, run_id))
            raise
        current = apply_outcomes(current, part, outcomes, run_id)
        store.record_outcomes(run_id, outcomes, current)
        all_outcomes.append(outcomes)
    outcomes = pl.concat(all_outcomes) if all_outcomes else empty(OUTCOME_SCHEMA)
    return outcomes, current




def retention(cfg: Config, store: Store, now: datetime | None = None) -> dict | None:
    """Thin old snapshots ([store] retention_days) when due: at most once a day, after a sync has finished.
    Never fails the run: a failure is logged and the next run tries again."""
    if cfg.retention_days <= 0:
        return None
    now = now or datetime.now(timezone.utc)
    try:
        last = store.last_pruned()
        if last is not None and now - last < timedelta(days=1):
            return None
        before = now - timedelta(days=cfg.retention_days)
        if not store.prunable_runs(before):
            return None
        counts = store.prune(before)
        log.info("retention: thinned the snapshots of %d runs older than %d days (%s event rows dropped)",
                 counts["runs"], cfg.retention_days, counts["event_snapshots"])
        return counts
    except Exception as exc:  # housekeeping must not fail a sync
        log.warning("retention: could not prune old snapshots (%s: %s); `calsync prune` retries",
                    type(exc).__name__, exc)
        return None
