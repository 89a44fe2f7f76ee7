"""``calsync demo``: a real two-way sync against the local sandbox servers, run twice.

Starts the sandboxes, seeds a small org (``data/demo-seed.toml``: a hybrid org, mailboxes on Exchange Server
and in Exchange Online), writes a config pointing at them (``data/demo.toml``; the sandbox's secrets go into environment variables of this
process, never into the file), runs the sync flow, runs it again (which must write nothing to either side;
it may link meeting copies the first run delivered, C15), and prints the summaries and where the DuckDB
file is.
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

[graph]
tenant_id = "{tenant_id}"
client_id = "{client_id}"
certificate_env = "CALSYNC_GRAPH_CERTIFICATE"
authority_host = "{login_url}"
graph_url = "{graph_url}"
ca_file = "{graph_ca_file}"

[sync]
mass_delete_share = 0.5
mass_delete_min = 4
mailbox_kind = "{default_kind}"
{users}"""

USER_BLOCK = """
[[users]]
email = "{email}"
direction = "both"
filter = "all"
mailbox = "{email}"
time_zone = "{time_zone}"
mailbox_kind = "{kind}"
"""


def write_config(sandbox: Sandbox, spec: dict, path: Path, store: Path, env=None, users: str | None = None,
                 default_kind: str = "ews") -> Path:
    """A config for ``sandbox`` (its EWS and Graph servers both configured; each seeded user on the kind the
    seed gives, ``default_kind`` for the others); puts the sandbox's secrets into ``env`` (default: this
    process's environment), never into the file. ``users`` replaces the generated [[users]] blocks."""
    env = os.environ if env is None else env
    info = sandbox.connection_info()
    graph = info["graph"]
    env["CALSYNC_SF_SESSION_ID"] = info["salesforce"]["session_id"]
    env["CALSYNC_EWS_PASSWORD"] = info["exchange"]["password"]
    env["CALSYNC_GRAPH_CERTIFICATE"] = Path(graph["certificate_file"]).read_text()
    if users is None:
        users = "".join(USER_BLOCK.format(email=u["email"].lower(), time_zone=u.get("time_zone", "UTC"),
                                          kind=u.get("mailbox_kind", default_kind))
                        for u in spec.get("users", []))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEMO_CONFIG.format(
        store=store, instance_url=info["salesforce"]["instance_url"],
        ca_file=info["salesforce"]["ca_file"], endpoint=info["exchange"]["endpoint"],
        username=info["exchange"]["username"], tenant_id=graph["tenant_id"], client_id=graph["client_id"],
        login_url=graph["authority"].rsplit("/", 1)[0], graph_url=graph["graph_url"],
        graph_ca_file=graph["ca_file"], default_kind=default_kind, users=users,
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
        print(f"sandbox: Salesforce {sandbox.salesforce.instance_url}, Exchange (EWS) {sandbox.exchange.url},"
              f" Exchange Online (Graph) {sandbox.graph.graph_url}")
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
    t = second["totals"]
    writes = t["created"] + t["updated"] + t["deleted"] + t["failed"]
    if writes or t["deltas"] != t["applied"]:
        print(f"\nFAIL: the second run wrote {writes} changes ({t['deltas']} deltas); expected none")
        return 1
    links = t["deltas"]  # only pair bookkeeping is left: nothing was written to either side
    copies = "1 meeting copy" if links == 1 else f"{links} meeting copies"
    detail = f" (it linked {copies} the first run delivered to their Salesforce child events)" if links else ""
    print(f"\nOK: the second run wrote nothing{detail}: both calendars are in step.")
    return 0
