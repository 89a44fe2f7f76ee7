"""Manual sync of one event (R18, C21): ``calsync push``.

Reads the one event by id (and what could be its counterpart: the user's other side around the event's
time, plus the Salesforce group it may belong to), records a run with mode ``push`` in the store like a
sync run (snapshot, plan, load, finish), and returns the same summary as a sync.

Wiring (flows/cli.py, in ``build_parser``)::

    from flows.push import add_commands as add_push_commands
    add_push_commands(sub)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from connectors.errors import CalsyncError
from flows import pipeline
from flows.config import Config
from flows.runs import recorded_run
from flows.summary import render_table
from transforms.manual import push_one
from transforms.normalise import normalise
from transforms.schema import EVENT_SCHEMA, NOTE_SCHEMA, conform, empty

SIDES = ("salesforce", "email")
# A window no event overlaps: the extracts then return only the events confirmed by id.
_NOWHERE = (datetime(1971, 1, 1, tzinfo=timezone.utc), datetime(1971, 1, 1, 0, 0, 1, tzinfo=timezone.utc))
_SLACK = timedelta(days=1)


class EventNotFound(CalsyncError):
    """The event to push is not there (or not one calsync syncs); the message names the id."""


def _extract(conns: pipeline.Connections, users: pl.DataFrame, side: str, native_id: str,
             user: str | None) -> tuple[pl.DataFrame, list[dict]]:
    """The pushed event, its possible counterparts, and (Salesforce) its group. Returns (events, notes)."""
    owners = dict(zip(users["user_key"].to_list(), users["sf_user_id"].to_list()))
    mailboxes = dict(zip(users["user_key"].to_list(), users["mailbox"].to_list()))
    notes: list[dict] = []
    if side == "salesforce":
        pushed = conform(conns.salesforce.extract(owners, *_NOWHERE, confirm_ids=[native_id]), EVENT_SCHEMA)
        if pushed.is_empty():
            raise EventNotFound(
                f"no Salesforce Event {native_id} owned by an enabled user of the config: it does not exist, was"
                " deleted, or its owner is not in [[users]]; check the id (the Event Id in the record's URL)")
        row = pushed.row(0, named=True)
        user_key = row["user_key"]
        lo, hi = row["start"] - _SLACK, row["end"] + _SLACK
        # every synced user's Salesforce events around it: the group (C15) and nothing more
        sf = conform(conns.salesforce.extract(owners, lo, hi), EVENT_SCHEMA)
        em = conform(conns.mail.read(user_key, mailboxes[user_key], row["start"], row["end"]).events, EVENT_SCHEMA)
    else:
        user_key = (user or "").strip().lower()
        if user_key not in mailboxes:
            raise ValueError(f"--user {user!r} is not a synced user of this config")
        got = conns.mail.confirm(user_key, mailboxes[user_key], [native_id])
        em_one = conform(got.events, EVENT_SCHEMA)
        for problem_user, nid, reason in got.problems:
            notes.append({"user_key": problem_user, "kind": "skipped", "side": "email", "native_id": nid,
                          "reason": str(reason).split(":")[0], "detail": str(reason)})
        if em_one.is_empty():
            if got.problems:
                raise EventNotFound(f"item {native_id} of mailbox {mailboxes[user_key]} could not be read"
                                    f" ({got.problems[0][2]}); it is not pushed")
            raise EventNotFound(
                f"no item {native_id} in the calendar of {mailboxes[user_key]} ({user_key}): it does not exist or"
                " was deleted; check the id and --user")
        row = em_one.row(0, named=True)
        em = em_one
        sf = conform(conns.salesforce.extract({user_key: owners[user_key]}, row["start"], row["end"]), EVENT_SCHEMA)
    events = pl.concat([sf, em]).unique(subset=["side", "native_id"], keep="first", maintain_order=True)
    return events, notes


def push(cfg: Config, side: str, native_id: str, today: date | None = None, user: str | None = None,
         run_id: str | None = None) -> dict:
    """Sync one event by hand (R18/C21). ``side``: salesforce (``native_id`` an Event Id) or email
    (``native_id`` a mailbox item id of ``user``). Returns the run summary with ``run_id`` and ``status``."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    today = today or datetime.now(timezone.utc).date()
    run_id = run_id or pipeline.new_run_id()
    with recorded_run(cfg, "push", today, run_id) as run:
        store, conns = run.store, run.conns
        run.stage = "extract"
        org = conns.salesforce.org_info()
        users, _ = pipeline.users_frame(cfg, conns)
        events, extra = _extract(conns, users, side, native_id, user)
        directory = pipeline.directory_for(conns, events, users)
        run.stage = "snapshot"
        normalised = normalise(events)
        pairs = pipeline.with_translated_hashes(store, normalised, pipeline.live_pairs(store, conns))
        store.write_snapshot(run_id, normalised, pairs, users, directory)
        run.stage = "reconcile"
        settings = pipeline.settings_for(cfg, org)
        store.set_run_settings(run_id, dataclasses.asdict(settings))
        result = push_one(side, native_id, events, pairs, users, directory, today, settings)
        notes = pl.concat([pl.DataFrame(extra, schema=NOTE_SCHEMA) if extra else empty(NOTE_SCHEMA),
                           conform(result.notes, NOTE_SCHEMA)])
        store.write_plan(run_id, result.deltas, notes)
        run.stage = "load"
        outcomes, _pairs = pipeline.load(store, run_id, conns, org, result.deltas, pairs, users)
        pipeline.record_mailbox_kinds(store, conns, users, run_id)
        return run.finish(result.deltas, outcomes, side=side, native_id=native_id)


def _cmd_push(args: argparse.Namespace) -> int:
    from flows import logs
    from flows.config import load_config
    from flows.summary import headline, verdict

    cfg = load_config(args.config)
    logs.configure(cfg, verbose=args.verbose)
    if args.salesforce_id:
        summary = push(cfg, "salesforce", args.salesforce_id, args.today)
    else:
        if not args.user:
            raise SystemExit("calsync push: --email-id needs --user EMAIL (whose mailbox holds the item)")
        summary = push(cfg, "email", args.email_id, args.today, user=args.user)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"push {headline(summary)}")
        print(render_table(summary))
    return verdict(summary).exit_code


def add_commands(subparsers) -> None:
    """Add ``calsync push --config FILE (--salesforce-id ID | --email-id ID --user EMAIL)``."""
    p = subparsers.add_parser("push", help="sync one event by hand (creates the pair that 'updates only' keeps up to date)")
    p.add_argument("--config", type=Path, required=True, help="the TOML config file")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--salesforce-id", help="the Salesforce Event Id to push to the owner's mailbox")
    which.add_argument("--email-id", help="the mailbox item id to push to Salesforce (with --user)")
    p.add_argument("--user", help="the synced user whose mailbox holds --email-id")
    p.add_argument("--today", type=date.fromisoformat, help="the run's date (YYYY-MM-DD); default today (UTC)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--verbose", "-v", action="store_true", help="show every log line with its traceback")
    p.set_defaults(func=_cmd_push)
