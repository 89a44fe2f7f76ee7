"""Benchmark: client CPU of reading EWS mailboxes, exchangelib's object model (the old path) against the lxml path
(connectors/ews_soap.py), A/B interleaved in one process (issue 12). Not a test.

    .venv/bin/python benchmarks/ews_client.py [--users 30] [--events 200] [--rounds 5] [--threads 1]

A generated org (``python -m sandbox --generate NxM``) is served by a process of its own, so its CPU is not the
client's. Per round, in alternating order (A B, then B A, ...), each path reads every mailbox over a two-year window:

- ``first``: a full read (calendar view + GetItem of every item);
- ``quiet``: an incremental read with ``known`` = the first read's ids and change keys (nothing changed: the view
  only, no GetItem).

It prints the median client CPU per mailbox (``time.process_time`` of this process) of each path and run kind, the
ratio old / new, the EWS calls per mailbox each made (by operation, from the sandbox's ``GET /_sandbox/calls``), that
both paths gave the same rows, and the load average at the start and the end. With ``--threads N`` the new path
reads N mailboxes at once (``max_connections`` N); CPU is still this process's total.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.end_to_end import Control, SandboxProcess  # noqa: E402


def _calls(control: Control) -> dict[str, int]:
    return dict(control.get("ews", "calls")["calls_by_operation"])


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from connectors import ews_reference
    from connectors.exchange import ExchangeConnector

    load_start = os.getloadavg()
    today = date.today()
    with tempfile.TemporaryDirectory(prefix="calsync-ews-bench-") as tmp:
        sandbox = SandboxProcess(args.users, args.events, 0.0, 0, today, Path(tmp))
        try:
            control = Control(sandbox.info)
            ex = sandbox.info["exchange"]
            mailboxes = [f"user{i:04d}@example.com" for i in range(args.users)]
            conn = ExchangeConnector(ex["endpoint"], ex["username"], ex["password"], auth_type="ntlm",
                                     max_connections=max(1, args.threads))
            start = datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc) - timedelta(days=360)
            end = start + timedelta(days=720)

            def new_read(m, known=None):
                return conn.read(m, m, start, end, known=known)

            def old_read(m, known=None):
                return ews_reference.read(conn, m, m, start, end, known=known)

            def run(reader, kind: str, known: dict) -> tuple[float, dict, dict]:
                before = _calls(control)
                cpu = time.process_time()
                if reader is new_read and args.threads > 1:
                    with ThreadPoolExecutor(args.threads) as pool:
                        got = dict(zip(mailboxes, pool.map(
                            lambda m: reader(m, known.get(m) if kind == "quiet" else None), mailboxes)))
                else:
                    got = {m: reader(m, known.get(m) if kind == "quiet" else None) for m in mailboxes}
                cpu = time.process_time() - cpu
                return cpu / len(mailboxes), _diff(_calls(control), before), got

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                first = {m: new_read(m) for m in mailboxes}  # warm both paths up, and learn the versions
                old_path_reads = {m: old_read(m) for m in mailboxes}
            same = all(first[m].events.sort("native_id").equals(old_path_reads[m].events.sort("native_id"))
                       for m in mailboxes)
            known = {m: dict(zip(r.events["native_id"], r.events["version"])) for m, r in first.items()}
            items = sum(r.events.height for r in first.values())
            cpu: dict[tuple[str, str], list[float]] = {}
            calls: dict[tuple[str, str], dict] = {}
            for rnd in range(args.rounds):
                order = [("old", old_read), ("new", new_read)]
                if rnd % 2:
                    order.reverse()
                for kind in ("first", "quiet"):
                    for name, reader in order:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            per_user, used, _ = run(reader, kind, known)
                        cpu.setdefault((name, kind), []).append(per_user)
                        calls[(name, kind)] = {k: round(v / len(mailboxes), 2) for k, v in used.items()}
            conn.close()
        finally:
            sandbox.stop()
    load_end = os.getloadavg()
    med = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"EWS client CPU per mailbox, {args.users} mailboxes x ~{items // max(1, args.users)} items in view, "
          f"{args.rounds} rounds A/B interleaved, threads={args.threads}")
    print(f"{'run':<6} {'old (exchangelib objects)':>26} {'new (lxml)':>12} {'old/new':>8}   calls per mailbox old | new")
    for kind in ("first", "quiet"):
        old, new = med[("old", kind)], med[("new", kind)]
        print(f"{kind:<6} {old * 1000:>23.1f} ms {new * 1000:>9.1f} ms {old / new:>8.1f}   "
              f"{calls[('old', kind)]} | {calls[('new', kind)]}")
    print(f"same rows both ways: {same}; load average start {load_start[0]:.2f}, end {load_end[0]:.2f}")
    print(json.dumps({"ews_client_ab": {
        "users": args.users, "events": args.events, "items_in_view": items, "rounds": args.rounds,
        "threads": args.threads, "cpu_per_mailbox_s": {f"{n}_{k}": round(v, 5) for (n, k), v in med.items()},
        "ratio_old_over_new": {k: round(med[("old", k)] / med[("new", k)], 2) for k in ("first", "quiet")},
        "calls_per_mailbox": {f"{n}_{k}": v for (n, k), v in calls.items()}, "same_rows": same,
        "load_average": {"start": load_start, "end": load_end}}}))


if __name__ == "__main__":
    main()
