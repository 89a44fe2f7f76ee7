"""The ``calsync`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from connectors.errors import CalsyncError
from flows.config import ConfigError


def _cmd_sync(args: argparse.Namespace) -> int:
    from flows.config import load_config

    cfg = load_config(args.config)  # validated before anything starts
    if not args.no_prefect:
        from flows import prefect_api

        prefect_api.begin()  # a temporary server boots while the rest is imported
    from flows import logs, notify
    from flows.summary import headline, render_table, verdict
    from flows.sync import run_flow, run_sync

    logs.configure(cfg, verbose=args.verbose)
    if args.no_prefect:
        from flows.lock import RunInProgress
        from flows.progress import TerminalProgress

        try:
            with TerminalProgress() as progress:
                summary = run_sync(cfg, args.today, args.allow_deletes, progress=progress, full_read=args.full_read)
        except RunInProgress as exc:
            summary = {"status": "skipped", "message": str(exc)}
        except CalsyncError as exc:
            notify.send(cfg.notify, *notify.for_error(exc))  # what the flow's state hook does under Prefect
            raise
        else:
            if (alert := notify.for_summary(summary)) is not None:
                notify.send(cfg.notify, *alert)
    else:
        summary = run_flow(args.config, args.today, args.allow_deletes, args.full_read)
    if summary["status"] == "skipped":
        print(f"calsync: skipped: {summary['message']}", file=sys.stderr)
        return 4
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(headline(summary))
        print(render_table(summary))
        print(f"store: {summary['store']}")
    return verdict(summary).exit_code


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    return run_demo(args.seed, args.store, args.today, no_prefect=args.no_prefect)


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox.__main__ import main as sandbox_main

    argv = []
    if args.seed:
        argv += ["--seed", str(args.seed)]
    if args.generate:
        argv += ["--generate", args.generate]
    if args.today:
        argv += ["--today", args.today.isoformat()]
    if args.graph_share:
        argv += ["--graph-share", str(args.graph_share)]
    return sandbox_main(argv)


def _cmd_replay(args: argparse.Namespace) -> int:
    from flows import logs
    from flows.config import load_config
    from flows.replay import replay
    from flows.summary import render_table

    cfg = load_config(args.config)
    logs.configure(cfg, verbose=args.verbose)
    summary = replay(cfg, args.run_id)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"replay {summary['run_id']} of {summary['replay_of']}: {summary['status']}"
              f" ({summary['pending_before']} deltas were pending, {summary['found_existing']} found already"
              f" written, {summary['left']} left)")
        print(render_table(summary))
    return 0 if summary["status"] == "succeeded" else 3


def _store_path(args: argparse.Namespace) -> Path:
    if args.store:
        return args.store
    if args.config:
        from flows.config import load_store_settings

        return load_store_settings(args.config)[0]
    return Path("data/calsync.duckdb")


def _cmd_history(args: argparse.Namespace) -> int:
    from flows.history import show_history

    if args.failed:
        from flows.history import show_failures

        return show_failures(_store_path(args), user=args.user, since=args.since, out=args.out, fmt=args.format)
    if args.user or args.since:
        raise SystemExit("calsync history: --user and --since go with --failed")
    return show_history(_store_path(args), run_id=args.run, limit=args.limit, out=args.out, fmt=args.format)


def _cmd_check(args: argparse.Namespace) -> int:
    from flows.check import run_checks

    return run_checks(args.config, verbose=args.verbose)


def _cmd_prune(args: argparse.Namespace) -> int:
    from flows.config import load_store_settings
    from flows.history import prune

    store_path, retention_days = load_store_settings(args.config)
    return prune(store_path, retention_days if args.days is None else args.days, dry_run=args.dry_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calsync", description="Two-way sync of Exchange and Salesforce calendars.")
    sub = parser.add_subparsers(dest="command", required=True)

    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("--verbose", "-v", action="store_true",
                         help="show every log line with its traceback (the log file has them anyway)")

    p = sub.add_parser("sync", parents=[verbose], help="run one sync for every enabled user")
    p.add_argument("--config", type=Path, required=True, help="the TOML config file")
    p.add_argument("--today", type=date.fromisoformat, help="the day the window is computed from (YYYY-MM-DD)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--allow-deletes", action="store_true",
                   help="override the mass-deletion guard for this run")
    p.add_argument("--full-read", action="store_true",
                   help="read every mailbox in full, not only what changed since the last run")
    p.add_argument("--no-prefect", action="store_true", help="run the stages without Prefect")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("replay", parents=[verbose], help="apply what a failed run left undone, from its snapshots")
    p.add_argument("run_id")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("history", help="recent runs, or one run in detail")
    p.add_argument("--config", type=Path, help="read the store path from this config")
    p.add_argument("--store", type=Path, help="the DuckDB file (default data/calsync.duckdb)")
    p.add_argument("--run", help="one run in detail: its deltas and outcomes, notes")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--out", type=Path, help="write the tables into this folder instead of printing")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--failed", action="store_true",
                   help="every failed write ever recorded, with what fixed it later (and the failed runs)")
    p.add_argument("--user", help="with --failed: only this user's")
    p.add_argument("--since", type=date.fromisoformat, help="with --failed: only since this day (YYYY-MM-DD)")
    p.set_defaults(func=_cmd_history)

    p = sub.add_parser("check", parents=[verbose],
                       help="sign in everywhere, read one calendar per mailbox kind, check every user; writes nothing")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("prune", help="thin old snapshots ([store] retention_days), keeping what replay and the views need")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--days", type=int, help="keep this many days instead of [store] retention_days")
    p.add_argument("--dry-run", action="store_true", help="say what would be dropped, drop nothing")
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("demo", help="sync a seeded sandbox org twice and show what happened")
    p.add_argument("--seed", type=Path, help="seed file (default data/demo-seed.toml)")
    p.add_argument("--store", type=Path, help="DuckDB file (default data/calsync.duckdb)")
    p.add_argument("--today", type=date.fromisoformat)
    p.add_argument("--no-prefect", action="store_true", help="run the syncs without Prefect")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("sandbox", help="serve the local Salesforce, Exchange (EWS) and Graph sandboxes until stopped")
    p.add_argument("--seed", type=Path)
    p.add_argument("--generate", metavar="USERSxEVENTS")
    p.add_argument("--graph-share", type=float, default=0.0, metavar="SHARE",
                   help="with --generate: the share of mailboxes hosted in Exchange Online (Graph)")
    p.add_argument("--today", type=date.fromisoformat)
    p.set_defaults(func=_cmd_sandbox)

    from flows.deploy import add_commands as add_schedule_commands
    from flows.push import add_commands as add_push_commands

    add_schedule_commands(sub)
    add_push_commands(sub)
    return parser


def _advice(exc: BaseException) -> str:
    """What to do after a run stopped, from the stage it stopped in."""
    run_id, stage = getattr(exc, "run_id", None), getattr(exc, "failed_stage", None)
    if run_id is None:
        return ""
    if getattr(exc, "replay_of", None):
        return f"; what is left stays replayable: `calsync replay {exc.replay_of} --config FILE` once fixed"
    if stage == "load":
        return f"; `calsync replay {run_id} --config FILE` finishes what it left undone"
    from flows.push import EventNotFound

    if isinstance(exc, EventNotFound):
        return "; nothing was written"
    return "; nothing was written: run a new sync once fixed (there is nothing to replay)"


def main(argv: list[str] | None = None) -> int:
    from flows.summary import EXIT_CONFIG, EXIT_FATAL

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for message in exc.errors:
            print(f"calsync: config error: {message}", file=sys.stderr)
        return EXIT_CONFIG
    except CalsyncError as exc:
        import logging

        # The traceback: into the log file, and onto the terminal with --verbose (the console shows INFO then).
        logging.getLogger("calsync").info("%s stopped: %s", args.command, type(exc).__name__, exc_info=exc)
        run_id, stage = getattr(exc, "run_id", None), getattr(exc, "failed_stage", None)
        where = f"run {run_id} failed in {stage}: " if run_id and stage else ""
        text = " ".join(str(exc).split())
        print(f"calsync: {where}{type(exc).__name__}: {text}{_advice(exc)}{_see_log()}", file=sys.stderr)
        return EXIT_FATAL
    except Exception as exc:  # a bug: one line here, the traceback in the log file
        if getattr(args, "verbose", False):
            raise
        import logging

        logging.getLogger("calsync").error("unexpected error", exc_info=True)
        text = " ".join(str(exc).split())
        print(f"calsync: unexpected {type(exc).__name__}: {text}{_see_log()} (--verbose shows the traceback)",
              file=sys.stderr)
        return EXIT_FATAL


def _see_log() -> str:
    from flows import logs

    path = logs.log_file()
    return f" (details: {path})" if path else ""


if __name__ == "__main__":
    sys.exit(main())
