"""``python -m sandbox``: serve the sandboxes (Salesforce, EWS, Graph) until stopped, printing how to reach them
as one JSON line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import date, datetime, timezone
from pathlib import Path

from sandbox import Sandbox
from sandbox.seed import generate, load_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--seed", type=Path, help="a seed file (TOML or JSON), e.g. data/demo-seed.toml")
    parser.add_argument("--generate", metavar="USERSxEVENTS", help="generate an org, e.g. 50x200")
    parser.add_argument("--graph-share", type=float, default=0.0, metavar="SHARE",
                        help="with --generate: the share of mailboxes hosted in Exchange Online (Graph), e.g. 0.5")
    parser.add_argument("--today", type=date.fromisoformat, help="day the seed's relative days count from")
    parser.add_argument("--workdir", type=Path, help="where the certificate is written")
    parser.add_argument("--latency-ms", type=float, default=0.0, metavar="MS",
                        help="a fixed latency added to every API request of the three servers (default 0)")
    args = parser.parse_args(argv)
    today = args.today or datetime.now(timezone.utc).date()
    sandbox = Sandbox(args.workdir, latency_ms=args.latency_ms)
    sandbox.start()
    try:
        if args.seed:
            sandbox.seed(load_seed(args.seed), today)
        if args.generate:
            users, events = (int(x) for x in args.generate.lower().split("x"))
            sandbox.seed(generate(users, events, graph_share=args.graph_share), today)
        print(json.dumps(sandbox.connection_info()), flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
