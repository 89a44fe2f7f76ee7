"""Benchmark: whole sync runs of a generated org against the sandbox, calls next to the ideal (issue 12). Not a test.

    .venv/bin/python benchmarks/end_to_end.py [--users 30] [--events 200] [--graph-share 0] [--latency-ms 0]
                                              [--max-parallel N]
                                              [--runs first,quiet[,steady]] [--steady-share 0.1]
    .venv/bin/python benchmarks/end_to_end.py --matrix [--matrix-users 30,100,400] [--matrix-shares 0,0.5]
                                              [--matrix-latency 0,100] [--latency-max-users N]

One measurement: ``python -m sandbox --generate NxM --graph-share S --latency-ms L`` serves a generated org (N users,
M events each, ``sandbox.seed.generate``) in a process of its own, so its CPU is not the client's. This process
writes a config for it (``flows.demo.write_config``: the sandbox's secrets go into this process's environment,
never into the file or onto the screen) and runs ``flows.sync.run_sync`` directly (no Prefect flow or task: the
plain stage calls, as ``--no-prefect`` would), one run after another on one store:

- ``first``: the first sync (every event is new to the store; both sides get written);
- ``quiet``: nothing changed since ``first``: ideally only reads of what changed (nothing);
- ``steady`` (optional): after a few edits made through the sandbox (``--steady-share`` of the users get a new
  Salesforce event, an edited one, a new mailbox item and an edited one of another pair), with the latency off
  while editing.

Per run it prints wall time, client CPU (``time.process_time`` of this process) and CPU per user, the client's
peak RSS (``ru_maxrss``) and its RSS after the run (growth across runs in one process), the sandbox process's CPU,
the time per stage, and the calls per side: what the client counted (``runs.sf_api_calls``, ``ews_api_calls``,
``graph_api_calls``), what the sandbox answered by operation (``GET /_sandbox/calls`` before and after the run), and
the IDEAL count for that run:

- Salesforce: per sObject read, the SOQL pages its rows need (ceil(rows / 2000), at least 1), plus per sObject and
  write kind (create, update, delete) ceil(records / 200) sObject Collections calls. Rows and records are the
  sandbox's own counts.
- EWS, per mailbox: one FindItem page per 500 items in the view (at least 1), GetItem batches of the CHANGED items
  only (ceil(changed / 100)), and per write kind ceil(writes / 100).
- Graph: per mailbox one calendarView page per 1000 events (at least 1), then ceil(changed / 20) $batches of GETs
  and ceil(writes / 20) write $batches over all Graph mailboxes (a $batch may mix mailboxes).

An item is CHANGED in a run when the previous run did not read it at that version: its (id, change key) is not in
the previous run's snapshot. In a first run every item is changed. The items calsync itself wrote in the previous
run are changed in this sense (no read has seen them; EWS's CreateItem reply carries only the new id and change
key, so calsync reads each of them once, see docs/scale.md): the output counts them apart ("of which N calsync
wrote in the run before"), and a second quiet run (``--runs first,quiet,quiet``) shows the ideal with nothing
of the kind. The view's items are the run's snapshot rows of the
mailbox; writes are the run's email deltas (create, update, delete). Nothing is hard-coded: every figure is
measured in this run. Output: a table, then one JSON line, with the load average at the start and the end.

``--matrix`` runs each combination of users x graph shares x latencies in a fresh client process with a fresh
sandbox process, prints each one's output, then a summary table and one JSON line with every result and the
latency ratios (the same org with and without latency, same invocation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOQL_PAGE = 2000  # rows per SOQL page (query / queryMore)
COLLECTION = 200  # records per sObject Collections call
EWS_VIEW_PAGE = 500  # items per FindItem (CalendarView) page
EWS_BATCH = 100  # items per GetItem / CreateItem / UpdateItem / DeleteItem
GRAPH_VIEW_PAGE = 1000  # events per calendarView page (the largest odata.maxpagesize)
GRAPH_BATCH = 20  # requests per $batch
WRITE_OPS = ("create", "update", "delete")


# ---------------------------------------------------------------------------------------------- the sandbox process
class SandboxProcess:
    """``python -m sandbox --generate`` in a child process; ``info`` is its JSON line (secrets: never printed)."""

    def __init__(self, users: int, events: int, graph_share: float, latency_ms: float, today: date,
                 workdir: Path, timeout_s: float = 1800) -> None:
        self.stderr_path = workdir / "sandbox.stderr"
        self._stderr = self.stderr_path.open("w")
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--generate", f"{users}x{events}", "--graph-share", str(graph_share),
             "--latency-ms", str(latency_ms), "--today", today.isoformat(), "--workdir", str(workdir / "sandbox")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"the sandbox did not start within {timeout_s:.0f} s") from None
        if not line.strip():
            self.stop()
            tail = self.stderr_path.read_text()[-2000:]
            raise RuntimeError(f"the sandbox exited before serving:\n{tail}")
        self.info = json.loads(line)
        self.seed_s = time.perf_counter() - t

    def connection_info(self) -> dict:  # what flows.demo.write_config asks a Sandbox for
        return self.info

    def cpu_s(self) -> float:
        """User + system CPU of the sandbox process so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


class Control:
    """The sandbox's control API (never counted as API calls, never delayed), one session per server."""

    def __init__(self, info: dict) -> None:
        import requests

        self.urls = {"salesforce": info["salesforce"]["control"], "ews": info["exchange"]["control"],
                     "graph": info["graph"]["control"]}
        self.sessions = {}
        for side, ca in (("salesforce", info["salesforce"]["ca_file"]), ("ews", None),
                         ("graph", info["graph"]["ca_file"])):
            s = requests.Session()
            s.trust_env = False  # REQUESTS_CA_BUNDLE must not win
            if ca:
                s.verify = ca
            self.sessions[side] = s

    def get(self, side: str, route: str) -> dict:
        r = self.sessions[side].get(self.urls[side] + route, timeout=120)
        r.raise_for_status()
        return r.json()

    def post(self, side: str, route: str, body: dict) -> dict:
        r = self.sessions[side].post(self.urls[side] + route, json=body, timeout=120)
        r.raise_for_status()
        return r.json()

    def counts(self) -> dict:
        return {side: self.get(side, "calls") for side in self.urls}

    def set_latency(self, ms: float) -> None:
        for side in self.urls:
            self.post(side, "settings", {"latency_ms": ms})


def _diff(after: dict, before: dict) -> dict:
    """after - before for nested dicts of counts (zeros dropped)."""
    out = {}
    for k, v in after.items():
        if isinstance(v, dict):
            d = _diff(v, before.get(k, {}))
            if d:
                out[k] = d
        elif isinstance(v, (int, float)):
            d = v - before.get(k, 0)
            if d:
                out[k] = d
    return out


# ---------------------------------------------------------------------------------------------- measuring a run
def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    """The peak RSS since the last ``_reset_peak`` (VmHWM; the process's lifetime peak where it cannot be reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak() -> None:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class StageClock:
    """``run_sync``'s ``stage`` hook and ``progress`` callback: wall and CPU per stage, and of the mailbox reads."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self._phase: dict[str, tuple[float, float]] = {}
        self.run_peak = 0.0  # the highest peak RSS any stage of the run reached (MiB)

    def stage(self, name, fn, *args):
        w, c = time.perf_counter(), time.process_time()
        self.run_peak = max(self.run_peak, _peak_rss_mib())
        _reset_peak()
        try:
            return fn(*args)
        finally:
            peak = _peak_rss_mib()
            self.run_peak = max(self.run_peak, peak)
            self.stages[name] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
                                 "peak_rss_mib": peak}

    def progress(self, name: str, done: int, total: int) -> None:
        if name != "read mailboxes":
            return
        now = (time.perf_counter(), time.process_time())
        if done == 0:
            self._phase[name] = now
        if done >= total and name in self._phase:
            w, c = self._phase.pop(name)
            self.stages["extract: mailboxes"] = {"wall_s": now[0] - w, "cpu_s": now[1] - c}


def timed_run(cfg, today: date) -> dict:
    """One ``run_sync`` with its wall, client CPU, peak RSS (of this run alone) and time per stage."""
    from flows.sync import run_sync

    clock = StageClock()
    _reset_peak()
    w0, c0 = time.perf_counter(), time.process_time()
    summary = run_sync(cfg, today=today, stage=clock.stage, progress=clock.progress)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    ex = clock.stages.get("extract")
    mb = clock.stages.get("extract: mailboxes")
    if ex and mb:
        clock.stages["extract: salesforce"] = {k: ex[k] - mb[k] for k in ("wall_s", "cpu_s")}
    return {"run_id": summary["run_id"], "status": summary["status"], "wall_s": wall, "cpu_s": cpu,
            "peak_rss_mib": max(clock.run_peak, _peak_rss_mib()), "rss_mib": _rss_mib(),
            "stages": clock.stages, "totals": summary["totals"]}


def measure_run(name: str, cfg, today: date, control: Control, sandbox: SandboxProcess, n_users: int,
                rss_prev: float, fresh: tuple[Path, int] | None = None) -> dict:
    """``fresh`` (config file, --max-parallel): the run is made in a child process of its own, as ``calsync sync``
    and a Prefect-served deployment (one ``python -m prefect.engine`` process per flow run) make each run."""
    before = control.counts()
    sb_cpu0 = sandbox.cpu_s()
    if fresh is None:
        run = timed_run(cfg, today)
        rss_start = rss_prev
    else:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child-run", str(fresh[0]), "--today", today.isoformat(),
             "--max-parallel", str(fresh[1])], cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"the {name} run's process failed:\n{out.stderr[-3000:]}")
        run = json.loads(out.stdout.strip().splitlines()[-1])
        rss_start = run.pop("rss_start_mib")
    sb_cpu = sandbox.cpu_s() - sb_cpu0
    after = control.counts()
    return {"name": name, **run, "cpu_per_user_s": run["cpu_s"] / max(n_users, 1),
            "rss_growth_mib": run["rss_mib"] - rss_start, "fresh_process": fresh is not None,
            "sandbox_cpu_s": sb_cpu, "_counts": _diff(after, before)}


def child_run(args) -> None:
    """``--child-run CONFIG``: one run in this fresh process; prints its ``timed_run`` as one JSON line."""
    from flows.config import load_config

    cfg = _with_parallel(load_config(Path(args.child_run)), args.max_parallel)
    import flows.sync  # noqa: F401 - imported before the clock starts, as in the parent

    rss_start = _rss_mib()
    run = timed_run(cfg, date.fromisoformat(args.today))
    print(json.dumps({**run, "rss_start_mib": rss_start}, default=str), flush=True)


def _with_parallel(cfg, n: int):
    """[exchange] / [graph] max_parallel_mailboxes = n (0: the config's own)."""
    if not n:
        return cfg
    import dataclasses

    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), max_parallel_mailboxes=n)
                                       for k in ("exchange", "graph") if getattr(cfg, k) is not None})


# ---------------------------------------------------------------------------------------------- the ideal counts
def _pages(n: int, size: int) -> int:
    return max(1, math.ceil(n / size))


def _batches(n: int, size: int) -> int:
    return math.ceil(n / size)


def store_facts(store_path: Path, run_ids: list[str]) -> dict[str, dict]:
    """Per run: the email items each mailbox's view returned (id, change key) and the run's email writes, from the
    store (read-only, after the runs)."""
    import duckdb

    con = duckdb.connect(str(store_path), read_only=True)
    try:
        facts = {}
        for run_id in run_ids:
            items = con.execute(
                "SELECT lower(coalesce(mailbox, user_key)), native_id, version FROM event_snapshots"
                " WHERE run_id = ? AND side = 'email'", [run_id]).fetchall()
            writes = con.execute(
                "SELECT lower(d.mailbox), CAST(d.op AS VARCHAR), o.status, o.new_id, o.new_version"
                " FROM deltas d LEFT JOIN delta_outcomes o ON o.run_id = d.run_id AND o.delta_id = d.delta_id"
                " WHERE d.run_id = ? AND d.target_side = 'email' AND CAST(d.op AS VARCHAR) IN ('create', 'update', 'delete')",
                [run_id]).fetchall()
            row = con.execute("SELECT sf_api_calls, ews_api_calls, graph_api_calls FROM runs WHERE run_id = ?",
                              [run_id]).fetchone()
            facts[run_id] = {"items": items, "writes": writes,
                             "client_calls": dict(zip(("salesforce", "ews", "graph"), row or (None,) * 3))}
        return facts
    finally:
        con.close()


def ideal_counts(runs: list[dict], facts: dict[str, dict], kinds: dict[str, str]) -> None:
    """Add ``calls`` (client, sandbox, by operation, ideal with its parts) per side to every run."""
    read: set[tuple[str, str]] = set()  # (id, version) of the items the run before read
    wrote: set[tuple[str, str]] = set()  # ... and of those it wrote (applied creates and updates)
    for run in runs:
        f = facts[run["run_id"]]
        counts = run.pop("_counts")
        view: dict[str, int] = {m: 0 for m in kinds}
        changed: dict[str, int] = {m: 0 for m in kinds}
        own: dict[str, int] = {m: 0 for m in kinds}
        for mailbox, native_id, version in f["items"]:
            view[mailbox] = view.get(mailbox, 0) + 1
            if (native_id, version) not in read:
                changed[mailbox] = changed.get(mailbox, 0) + 1
                own[mailbox] = own.get(mailbox, 0) + ((native_id, version) in wrote)
        writes: dict[tuple[str, str], int] = {}
        for mailbox, op, _status, _new_id, _new_version in f["writes"]:
            writes[(mailbox, op)] = writes.get((mailbox, op), 0) + 1
        read = {(i, v) for _m, i, v in f["items"]}
        wrote = {(new_id, new_version) for _m, op, status, new_id, new_version in f["writes"]
                 if status == "applied" and op != "delete" and new_id}

        ews = [m for m, k in kinds.items() if k == "ews"]
        graph = [m for m, k in kinds.items() if k == "graph"]
        ews_ideal = {
            "views": sum(_pages(view.get(m, 0), EWS_VIEW_PAGE) for m in ews),
            "getitem_batches": sum(_batches(changed.get(m, 0), EWS_BATCH) for m in ews),
            "write_batches": sum(_batches(n, EWS_BATCH) for (m, _op), n in writes.items() if kinds.get(m) == "ews"),
            "view_items": sum(view.get(m, 0) for m in ews), "changed_items": sum(changed.get(m, 0) for m in ews),
            "own_writes_read_back": sum(own.get(m, 0) for m in ews),
            "writes": sum(n for (m, _op), n in writes.items() if kinds.get(m) == "ews"),
        }
        g_changed = sum(changed.get(m, 0) for m in graph)
        g_writes = sum(n for (m, _op), n in writes.items() if kinds.get(m) == "graph")
        graph_ideal = {
            "views": sum(_pages(view.get(m, 0), GRAPH_VIEW_PAGE) for m in graph),
            "get_batches": _batches(g_changed, GRAPH_BATCH), "write_batches": _batches(g_writes, GRAPH_BATCH),
            "view_items": sum(view.get(m, 0) for m in graph), "changed_items": g_changed, "writes": g_writes,
            "own_writes_read_back": sum(own.get(m, 0) for m in graph),
        }
        sf = counts.get("salesforce", {})
        queries = sf.get("queries", {})
        written = sf.get("records_written", {})
        sf_ideal = {
            "query_pages": sum(_pages(q.get("rows", 0), SOQL_PAGE) for q in queries.values() if q.get("queries")),
            "write_batches": sum(_batches(n, COLLECTION) for n in written.values()),
            "rows": {o: q.get("rows", 0) for o, q in queries.items() if q.get("queries")},
            "records_written": written,
        }
        ews_c, graph_c = counts.get("ews", {}), counts.get("graph", {})
        run["calls"] = {
            "salesforce": {"client": f["client_calls"]["salesforce"], "sandbox": sf.get("calls", 0),
                           "ideal": sf_ideal["query_pages"] + sf_ideal["write_batches"],
                           "by_operation": sf.get("calls_by_operation", {}), "ideal_parts": sf_ideal},
            "ews": {"client": f["client_calls"]["ews"], "sandbox": ews_c.get("calls", 0),
                    "ideal": ews_ideal["views"] + ews_ideal["getitem_batches"] + ews_ideal["write_batches"] if ews else 0,
                    "by_operation": ews_c.get("calls_by_operation", {}), "ideal_parts": ews_ideal},
            "graph": {"client": f["client_calls"]["graph"], "sandbox": graph_c.get("calls", 0),
                      "ideal": graph_ideal["views"] + graph_ideal["get_batches"] + graph_ideal["write_batches"]
                      if graph else 0,
                      "by_operation": graph_c.get("calls_by_operation", {}),
                      "batch_operations": graph_c.get("batch_operations", {}), "ideal_parts": graph_ideal},
        }


# ---------------------------------------------------------------------------------------------- the steady edits
def steady_edits(control: Control, info: dict, store_path: Path, kinds: dict[str, str], share: float,
                 latency_ms: float, today: date) -> dict:
    """A few users change their calendars: a new and an edited Salesforce event (REST, as the Salesforce UI would),
    a new and an edited mailbox item (the sandbox's owner-edit routes, as Outlook would). Latency is off meanwhile."""
    import duckdb
    import requests

    con = duckdb.connect(str(store_path), read_only=True)
    try:
        last = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0]
        users = con.execute("SELECT user_key, mailbox, sf_user_id FROM user_snapshots WHERE run_id = ? ORDER BY user_key",
                            [last]).fetchall()
        pairs = con.execute("SELECT user_key, sf_id, email_id FROM pairs WHERE sf_id IS NOT NULL AND email_id IS NOT NULL"
                            " ORDER BY pair_id").fetchall()
    finally:
        con.close()
    paired: dict[str, list[tuple[str, str]]] = {}
    for user_key, sf_id, email_id in pairs:
        paired.setdefault(user_key, []).append((sf_id, email_id))
    chosen = []
    for kind in ("ews", "graph"):  # the share of each kind's users, spread evenly, at least one of each kind
        of_kind = [u for u in users if kinds.get(u[1].lower(), "ews") == kind]
        if of_kind:
            k = max(1, round(len(of_kind) * share))
            chosen += [of_kind[round(i * len(of_kind) / k)] for i in range(k)]
    sf = requests.Session()
    sf.trust_env, sf.verify = False, info["salesforce"]["ca_file"]
    base = info["salesforce"]["instance_url"] + "/services/data/v59.0"
    headers = {"Authorization": f"Bearer {info['salesforce']['session_id']}"}
    control.set_latency(0)
    made = {"salesforce_new": 0, "salesforce_edited": 0, "mailbox_new": 0, "mailbox_edited": 0}
    try:
        for i, (user_key, mailbox, sf_user_id) in enumerate(chosen):
            start = datetime.combine(today + timedelta(days=3), datetime.min.time(), tzinfo=timezone.utc) \
                + timedelta(hours=8, minutes=5 * i)
            r = sf.post(f"{base}/sobjects/Event", headers=headers, timeout=60, json={
                "OwnerId": sf_user_id, "Subject": f"Steady new SF {i}",
                "StartDateTime": start.strftime("%Y-%m-%dT%H:%M:%S.000+0000"), "DurationInMinutes": 30})
            r.raise_for_status()
            made["salesforce_new"] += 1
            control.post("ews", "items", {"mailbox": mailbox, "subject": f"Steady new mail {i}",
                                          "start": (start + timedelta(hours=4)).isoformat(),
                                          "end": (start + timedelta(hours=4, minutes=30)).isoformat()})
            made["mailbox_new"] += 1
            mine = paired.get(user_key, [])
            if len(mine) >= 2:  # one pair edited on each side (the same pair on both would be a conflict)
                sf_id, email_id = mine[0][0], mine[1][1]
                r = sf.patch(f"{base}/sobjects/Event/{sf_id}", headers=headers, timeout=60,
                             json={"Subject": f"Steady edited SF {i}"})
                r.raise_for_status()
                made["salesforce_edited"] += 1
                # the item id as the mailbox's protocol gave it (EWS, or Graph's REST form): that server's route
                control.post(kinds.get(mailbox.lower(), "ews"), "items/edit",
                             {"item": email_id, "subject": f"Steady edited mail {i}"})
                made["mailbox_edited"] += 1
    finally:
        control.set_latency(latency_ms)
    return {"users": len(chosen), **made}


# ---------------------------------------------------------------------------------------------- one measurement
def measure(args) -> dict:
    load_start = os.getloadavg()
    runs_wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    for r in runs_wanted:
        if r not in ("first", "quiet", "steady"):
            raise SystemExit(f"--runs: unknown run {r!r} (first, quiet, steady)")
    if runs_wanted[:1] != ["first"]:
        raise SystemExit("--runs must start with first")
    today = datetime.now(timezone.utc).date()
    with tempfile.TemporaryDirectory(prefix="calsync-e2e-") as tmp:
        work = Path(tmp)
        sandbox = SandboxProcess(args.users, args.events, args.graph_share,
                                 0.0 if args.latency_from else args.latency_ms, today, work)
        try:
            from flows.config import load_config
            from flows.demo import write_config
            from sandbox.seed import generate

            spec = generate(args.users, 0, graph_share=args.graph_share)  # the users and their kinds, no events
            kinds = {u["email"].lower(): u["mailbox_kind"] for u in spec["users"]}
            store = work / "calsync.duckdb"
            cfg_path = write_config(sandbox, spec, work / "calsync.toml", store)
            # [exchange] / [graph] max_parallel_mailboxes (1: one mailbox at a time)
            cfg = _with_parallel(load_config(cfg_path), args.max_parallel)
            control = Control(sandbox.info)
            import flows.sync  # noqa: F401 - imported before the first run's clock starts

            rss_start = _rss_mib()
            runs, rss_prev, edits = [], rss_start, None
            lat_now = 0.0 if args.latency_from else args.latency_ms
            for i, kind in enumerate(runs_wanted):
                # a run asked for again is named with its count: quiet, quiet2
                name = kind if kind not in runs_wanted[:i] else f"{kind}{runs_wanted[:i + 1].count(kind)}"
                if kind == "steady":
                    edits = steady_edits(control, sandbox.info, store, kinds, args.steady_share, lat_now,
                                         today)
                if args.latency_from and name == args.latency_from:
                    control.set_latency(args.latency_ms)
                    lat_now = args.latency_ms
                fresh = (cfg_path, args.max_parallel) if args.fresh_process and i else None
                run = measure_run(name, cfg, today, control, sandbox, args.users, rss_prev, fresh)
                rss_prev = run["rss_mib"]
                run["latency_ms"] = lat_now
                runs.append(run)
                print(f"  {name}: {run['status']} in {run['wall_s']:.1f} s", file=sys.stderr, flush=True)
            ideal_counts(runs, store_facts(store, [r["run_id"] for r in runs]), kinds)
        finally:
            sandbox.stop()
    result = {
        "benchmark": "end_to_end", "users": args.users, "events": args.events, "graph_share": args.graph_share,
        "latency_ms": args.latency_ms, "latency_from": args.latency_from, "mailboxes": {"ews": sum(k == "ews" for k in kinds.values()),
                                                    "graph": sum(k == "graph" for k in kinds.values())},
        "today": today.isoformat(), "sandbox_seed_s": sandbox.seed_s, "client_rss_start_mib": rss_start,
        "steady_edits": edits, "runs": runs,
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    result["ratios"] = ratios(result)
    return result


def ratios(result: dict) -> dict:
    """Ratios measured in this process: each run against the first, calls against the ideal, and the share of the
    wall time a sequential client spends waiting out the latency (calls x latency / wall)."""
    runs = {r["name"]: r for r in result["runs"]}
    out: dict = {}
    first = runs.get("first")
    for name, run in runs.items():
        r: dict = {}
        if first and name != "first":
            r["wall_vs_first"] = run["wall_s"] / first["wall_s"]
            r["cpu_vs_first"] = run["cpu_s"] / first["cpu_s"]
        for side, c in run["calls"].items():
            if c["ideal"]:
                r[f"{side}_calls_vs_ideal"] = c["sandbox"] / c["ideal"]
        lat = run.get("latency_ms", result["latency_ms"])
        if lat:
            calls = sum(c["sandbox"] for c in run["calls"].values())
            r["latency_share_of_wall"] = calls * lat / 1000 / run["wall_s"]
        r["client_cpu_vs_sandbox_cpu"] = run["cpu_s"] / run["sandbox_cpu_s"] if run["sandbox_cpu_s"] else None
        out[name] = r
    return out


# ---------------------------------------------------------------------------------------------- printing
def _ops(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def _calls(c: dict) -> str:
    client = "-" if c["client"] is None else str(c["client"])
    return f"{c['sandbox']}/{c['ideal']}" + ("" if c["client"] in (None, c["sandbox"]) else f" (client {client})")


def report(result: dict) -> None:
    la = result["loadavg_start"]
    print(f"end-to-end: {result['users']} users x {result['events']} events (generated), graph share "
          f"{result['graph_share']} ({result['mailboxes']['ews']} EWS, {result['mailboxes']['graph']} Graph mailboxes), "
          f"latency {result['latency_ms']:g} ms per call; load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} at start")
    print(f"sandbox: its own process, seeded in {result['sandbox_seed_s']:.1f} s; client RSS before the runs "
          f"{result['client_rss_start_mib']:.0f} MiB")
    if result.get("steady_edits"):
        print(f"steady edits before the steady run: {result['steady_edits']}")
    head = (f"{'run':<7} {'status':<9} {'wall s':>8} {'cpu s':>8} {'cpu/user':>9} {'peak MiB':>9} {'RSS MiB':>8} "
            f"{'growth':>7} {'sbx cpu':>8}  {'SF calls/ideal':<16} {'EWS calls/ideal':<16} {'Graph calls/ideal':<18} writes")
    print(head)
    for r in result["runs"]:
        t = r["totals"]
        c = r["calls"]
        print(f"{r['name']:<7} {r['status']:<9} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['cpu_per_user_s']:>9.3f} "
              f"{r['peak_rss_mib']:>9.0f} {r['rss_mib']:>8.0f} {r['rss_growth_mib']:>+7.0f} {r['sandbox_cpu_s']:>8.2f}  "
              f"{_calls(c['salesforce']):<16} {_calls(c['ews']):<16} {_calls(c['graph']):<18} "
              f"{t.get('created', 0)}c {t.get('updated', 0)}u {t.get('deleted', 0)}d {t.get('failed', 0)}f"
              + (" [own process]" if r.get("fresh_process") else "")
              + (f" [{r['latency_ms']:g} ms/call]" if result.get("latency_from") else ""))
    print("calls by operation (sandbox) and the ideal's parts:")
    for r in result["runs"]:
        c = r["calls"]
        print(f"  {r['name']:<6} salesforce: {_ops(c['salesforce']['by_operation'])}")
        sp = c["salesforce"]["ideal_parts"]
        print(f"  {'':<6}   ideal {c['salesforce']['ideal']} = {sp['query_pages']} SOQL pages (rows {sp['rows']}) + "
              f"{sp['write_batches']} collections (records {sp['records_written']})")
        if result["mailboxes"]["ews"]:
            ep = c["ews"]["ideal_parts"]
            print(f"  {'':<6} ews: {_ops(c['ews']['by_operation'])}")
            print(f"  {'':<6}   ideal {c['ews']['ideal']} = {ep['views']} views ({ep['view_items']} items) + "
                  f"{ep['getitem_batches']} GetItem ({ep['changed_items']} changed, of which {ep['own_writes_read_back']} calsync "
                  f"wrote in the run before) + {ep['write_batches']} write "
                  f"batches ({ep['writes']} writes)")
        if result["mailboxes"]["graph"]:
            gp = c["graph"]["ideal_parts"]
            print(f"  {'':<6} graph: {_ops(c['graph']['by_operation'])}; in $batches: "
                  f"{_ops(c['graph']['batch_operations'])}")
            print(f"  {'':<6}   ideal {c['graph']['ideal']} = {gp['views']} views ({gp['view_items']} events) + "
                  f"{gp['get_batches']} GET $batches ({gp['changed_items']} changed, of which {gp['own_writes_read_back']} "
                  f"calsync wrote in the run before) + {gp['write_batches']} write "
                  f"$batches ({gp['writes']} writes)")
    print("time per stage (wall s / client cpu s [/ peak RSS MiB within the stage]):")
    for r in result["runs"]:
        parts = [f"{k} {v['wall_s']:.2f}/{v['cpu_s']:.2f}" + (f"/{v['peak_rss_mib']:.0f}" if "peak_rss_mib" in v else "")
                 for k, v in r["stages"].items()]
        print(f"  {r['name']:<6} " + ", ".join(parts))
    print("ratios (same invocation): " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if v is not None)
        for name, r in result["ratios"].items()))
    la = result["loadavg_end"]
    print(f"load average at end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


# ---------------------------------------------------------------------------------------------- the matrix
def matrix(args) -> None:
    load_start = os.getloadavg()
    users = [int(x) for x in args.matrix_users.split(",") if x]
    shares = [float(x) for x in args.matrix_shares.split(",") if x]
    latencies = [float(x) for x in args.matrix_latency.split(",") if x]
    results, skipped = [], []
    for n in users:
        for share in shares:
            for lat in latencies:
                if lat and args.latency_max_users is not None and n > args.latency_max_users:
                    skipped.append({"users": n, "graph_share": share, "latency_ms": lat})
                    continue
                cmd = [sys.executable, str(Path(__file__).resolve()), "--users", str(n), "--events", str(args.events),
                       "--graph-share", str(share), "--latency-ms", str(lat), "--runs", args.runs,
                       "--steady-share", str(args.steady_share)]
                print(f"\n=== {n} users, graph share {share}, latency {lat:g} ms (fresh client and sandbox "
                      "processes)", flush=True)
                t = time.perf_counter()
                proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
                sys.stdout.write(proc.stdout)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"benchmark"')]
                if proc.returncode != 0 or not lines:
                    print(f"FAILED (exit {proc.returncode}) after {time.perf_counter() - t:.0f} s", flush=True)
                    results.append({"users": n, "graph_share": share, "latency_ms": lat, "failed": proc.returncode})
                    continue
                results.append(json.loads(lines[-1]))
    summary = {"benchmark": "end_to_end_matrix", "events": args.events, "results": results, "skipped": skipped,
               "latency_ratios": latency_ratios(results),
               "loadavg_start": [round(x, 2) for x in load_start],
               "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    print("\n=== summary (each row its own client and sandbox processes; load average = 1-minute at start / end)")
    print(f"{'users':>5} {'share':>5} {'lat ms':>6} {'run':<7} {'wall s':>8} {'cpu s':>8} {'cpu/user':>9} "
          f"{'peak MiB':>9} {'SF/ideal':>11} {'EWS/ideal':>12} {'Graph/ideal':>12} {'load':>11}")
    for res in results:
        if "runs" not in res:
            print(f"{res['users']:>5} {res['graph_share']:>5} {res['latency_ms']:>6g} FAILED")
            continue
        for r in res["runs"]:
            c = r["calls"]
            print(f"{res['users']:>5} {res['graph_share']:>5} {res['latency_ms']:>6g} {r['name']:<7} "
                  f"{r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['cpu_per_user_s']:>9.3f} {r['peak_rss_mib']:>9.0f} "
                  f"{c['salesforce']['sandbox']:>5}/{c['salesforce']['ideal']:<5} {c['ews']['sandbox']:>6}/{c['ews']['ideal']:<5} "
                  f"{c['graph']['sandbox']:>6}/{c['graph']['ideal']:<5} "
                  f"{res['loadavg_start'][0]:>5.2f}/{res['loadavg_end'][0]:<5.2f}")
    for key, r in summary["latency_ratios"].items():
        print(f"latency ratio {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))
    for s in skipped:
        print(f"skipped: {s['users']} users, share {s['graph_share']}, latency {s['latency_ms']:g} ms "
              f"(--latency-max-users {args.latency_max_users})")
    print(json.dumps(summary, separators=(",", ":")))


def latency_ratios(results: list[dict]) -> dict:
    """Wall time with latency / without, for the same org, per run (both measured in this matrix invocation)."""
    base = {(r["users"], r["graph_share"]): r for r in results if "runs" in r and not r["latency_ms"]}
    out = {}
    for r in results:
        if "runs" not in r or not r["latency_ms"] or (r["users"], r["graph_share"]) not in base:
            continue
        b = {x["name"]: x for x in base[(r["users"], r["graph_share"])]["runs"]}
        key = f"{r['users']} users share {r['graph_share']} at {r['latency_ms']:g} ms"
        out[key] = {f"{x['name']}_wall": x["wall_s"] / b[x["name"]]["wall_s"] for x in r["runs"] if x["name"] in b}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--events", type=int, default=200, help="events per user in the generated org")
    ap.add_argument("--graph-share", type=float, default=0.0, help="share of mailboxes in Exchange Online (Graph)")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="fixed latency per API call of every server")
    ap.add_argument("--runs", default="first,quiet", help="first,quiet[,quiet][,steady] (a repeated run: quiet2)")
    ap.add_argument("--max-parallel", type=int, default=0,
                    help="mailboxes in flight per service (max_parallel_mailboxes; default: the config's, 16)")
    ap.add_argument("--steady-share", type=float, default=0.1, help="share of users edited before the steady run")
    ap.add_argument("--matrix", action="store_true", help="the matrix of issue 12, each measurement in fresh processes")
    ap.add_argument("--matrix-users", default="30,100,400")
    ap.add_argument("--matrix-shares", default="0,0.5")
    ap.add_argument("--matrix-latency", default="0,100")
    ap.add_argument("--latency-max-users", type=int, default=None,
                    help="with --matrix: skip measurements with latency above this many users")
    ap.add_argument("--latency-from", default=None, metavar="RUN",
                    help="the latency applies from this run on (its name: quiet, quiet2, ...); before it, none")
    ap.add_argument("--fresh-process", action="store_true",
                    help="each run after the first in a process of its own (as calsync sync and a served deployment)")
    ap.add_argument("--child-run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--today", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_run:
        child_run(args)
        return
    if args.matrix:
        matrix(args)
        return
    result = measure(args)
    report(result)
    print(json.dumps(result, separators=(",", ":"), default=str), flush=True)


if __name__ == "__main__":
    main()
