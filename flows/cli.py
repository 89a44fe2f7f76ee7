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
    from flows.summary import render_table
    from flows.sync import run_sync, sync_flow

    cfg = load_config(args.config)  # validated before anything starts
    if args.no_prefect:
        from flows.lock import RunInProgress
        from flows.progress import TerminalProgress

        try:
            with TerminalProgress() as progress:
                summary = run_sync(cfg, args.today, args.allow_deletes, progress=progress)
        except RunInProgress as exc:
            summary = {"status": "skipped", "message": str(exc)}
    else:
        summary = sync_flow(str(args.config), args.today, args.allow_deletes)
    if summary["status"] == "skipped":
        print(f"calsync: skipped: {summary['message']}", file=sys.stderr)
        return 4
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"run {summary['run_id']}: {summary['status']}")
        print(render_table(summary))
        print(f"store: {summary['store']}")
    return 0 if summary["status"] == "succeeded" else 3


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    return run_demo(args.seed, args.store, args.today)


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
    from flows.config import load_config
    from flows.replay import replay
    from flows.summary import render_table

    summary = replay(load_config(args.config), args.run_id)
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
        from flows.config import load_config

        return load_config(args.config).store_path
    return Path("data/calsync.duckdb")


def _cmd_history(args: argparse.Namespace) -> int:
    from flows.history import show_history

    return show_history(_store_path(args), run_id=args.run, limit=args.limit, out=args.out, fmt=args.format)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calsync", description="Two-way sync of Exchange and Salesforce calendars.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sync", help="run one sync for every enabled user")
    p.add_argument("--config", type=Path, required=True, help="the TOML config file")
    p.add_argument("--today", type=date.fromisoformat, help="the day the window is computed from (YYYY-MM-DD)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--allow-deletes", action="store_true",
                   help="override the mass-deletion guard for this run")
    p.add_argument("--no-prefect", action="store_true", help="run the stages without Prefect")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("replay", help="apply what a failed run left undone, from its snapshots")
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
    p.set_defaults(func=_cmd_history)

    p = sub.add_parser("demo", help="sync a seeded sandbox org twice and show what happened")
    p.add_argument("--seed", type=Path, help="seed file (default data/demo-seed.toml)")
    p.add_argument("--store", type=Path, help="DuckDB file (default data/calsync.duckdb)")
    p.add_argument("--today", type=date.fromisoformat)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"calsync: config error: {exc}", file=sys.stderr)
        return 2
    except CalsyncError as exc:
        print(f"calsync: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
