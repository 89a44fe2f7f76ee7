"""``calsync demo``: a real two-way sync against the local sandbox servers, run twice.

Starts both sandboxes, seeds a small org (``data/demo-seed.toml``), writes a config pointing at them
(``data/demo.toml``; the sandbox's session id and password go into environment variables of this
process, never into the file), runs the sync flow, runs it again (which must write nothing), and prints
the summaries and where the DuckDB file is.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timezone
from pathlib import Path

from sandbox import Sandbox
from sandbox.seed import load_seed

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

DEMO_CONFIG = """\
# Written by `calsync demo`: the local sandbox servers. Secrets come from the environment.
[store]
path = "{store}"

[salesforce]
auth = "session"
instance_url = "{instance_url}"
session_id_env = "CALSYNC_SF_SESSION_ID"
ca_file = "{ca_file}"

[exchange]
endpoint = "{endpoint}"
username = "{username}"
password_env = "CALSYNC_EWS_PASSWORD"
auth_type = "ntlm"

[sync]
mass_delete_share = 0.5
mass_delete_min = 4
{users}"""

USER_BLOCK = """
[[users]]
email = "{email}"
direction = "both"
filter = "all"
mailbox = "{email}"
time_zone = "{time_zone}"
"""


def write_config(sandbox: Sandbox, spec: dict, path: Path, store: Path, env=None, users: str | None = None) -> Path:
    """A config for ``sandbox``; puts the sandbox's secrets into ``env`` (default: this process's
    environment), never into the file. ``users`` replaces the generated [[users]] blocks."""
    env = os.environ if env is None else env
    info = sandbox.connection_info()
    env["CALSYNC_SF_SESSION_ID"] = info["salesforce"]["session_id"]
    env["CALSYNC_EWS_PASSWORD"] = info["exchange"]["password"]
    if users is None:
        users = "".join(USER_BLOCK.format(email=u["email"].lower(), time_zone=u.get("time_zone", "UTC"))
                        for u in spec.get("users", []))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEMO_CONFIG.format(
        store=store, instance_url=info["salesforce"]["instance_url"],
        ca_file=info["salesforce"]["ca_file"], endpoint=info["exchange"]["endpoint"],
        username=info["exchange"]["username"], users=users,
    ))
    return path


def run_demo(seed: Path | None = None, store: Path | None = None, today: date | None = None,
             no_prefect: bool = False) -> int:
    if not no_prefect:
        from flows import prefect_api

        prefect_api.begin()  # a temporary Prefect server (if one is needed) boots while the sandbox starts
    from flows.config import load_config
    from flows.summary import render_table
    from flows.sync import run_flow, run_sync

    seed = seed or DATA / "demo-seed.toml"
    store = store or DATA / "calsync.duckdb"
    today = today or datetime.now(timezone.utc).date()
    spec = load_seed(seed)
    # The sandbox starts empty every time, so the demo's store starts empty too: pairs from an earlier
    # demo would point at events that no longer exist.
    for stale in (store, store.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    with Sandbox(DATA / "run" / "sandbox") as sandbox:
        sandbox.seed(spec, today)
        config = write_config(sandbox, spec, DATA / "demo.toml", store)
        print(f"sandbox: Salesforce {sandbox.salesforce.instance_url}, Exchange {sandbox.exchange.url}")
        print(f"config:  {config}\n")
        def sync() -> dict:
            return run_sync(load_config(config), today) if no_prefect else run_flow(config, today)

        first = sync()
        print("\n== first run", first["run_id"], first["status"])
        print(render_table(first))
        second = sync()
        print("\n== second run", second["run_id"], second["status"])
        print(render_table(second))
    print(f"\nDuckDB store: {store}")
    print(f"  see the runs: ./run.sh calsync history --store {store}")
    if second["totals"]["deltas"] != 0:
        print(f"\nFAIL: the second run planned {second['totals']['deltas']} deltas; expected none")
        return 1
    print("\nOK: the second run planned no deltas: both calendars are in step.")
    return 0
