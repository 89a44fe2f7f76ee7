"""Benchmark: normalise + reconcile for 5,000 users x 200 events a side (issue 3). Not a test.

    .venv/bin/python benchmarks/reconcile.py [--users 5000] [--events 200] [--seed 7] [--repeat 3]
                                             [--scenario steady|heavy|both]

A seeded generator (polars expressions over hashes, so the same seed gives the same frames) builds a run of
one of two scenarios (``SCENARIOS``), both with private, all-day and invitee-carrying events, duplicates, key
pairs, Exchange LastModified bumps and a handful of users whose email side came back empty (mass-deletion
guard):

- steady (the 1 s / 1 GiB target): the scheduled run two hours after the last. 98% of each calendar is paired,
  two new events a side per user, about 1% of the pairs edited on each side and 0.1-0.2% deleted.
- heavy (a stress figure): a catch-up run. 85% paired, 15 new events a side per user, about 10% of the pairs
  edited and 1% deleted: 90,000 creates and 68,000 updates to shape.

Prints the generator's peak RSS; then, in a fresh process that loads the generated frames (so neither the
generator's peak nor the memory its allocator keeps is counted), normalise+reconcile's peak RSS increase over
the loaded inputs (VmHWM, reset after loading; tracemalloc does not see polars' Rust allocations; the previous
repetition's result is dropped first, as a run holds one), and ratios of median times measured in that same
process, with the load average: against (a) the bare composite-key join of the pairs to both sides' events and
(b) a straightforward per-user planner in plain Python (``python_planner``); and CPU seconds per 1,000 users.
Absolute wall times swing with the machine's load; ratios taken in one process hold.

Refactoring the planner: ``--save-output DIR`` keeps each scenario's whole ReconcileResult (the output oracle),
``--check-output DIR`` compares a later version with it (frame by frame, row order included), and ``--ab OLD.py``
times a copy of an earlier ``transforms/reconcile.py`` against the current one in the same process (interleaved
rounds, medians) and checks that both plan the same.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transforms.normalise import normalise
from transforms.reconcile import Settings, reconcile
from transforms.schema import DIRECTORY_SCHEMA, EVENT_SCHEMA, INVITEE, PAIR_SCHEMA, USER_SCHEMA, conform
from transforms.window import window_bounds

TODAY = date(2025, 6, 15)
N_CONTACTS = 50_000


@dataclass(frozen=True)
class Scenario:
    """What changed since the previous run, per user (of 200 events a side). Events j < paired are paired;
    paired..sf_only-1 are new on Salesforce, sf_only.. new in the mailbox; key_twins of the Salesforce ones have
    an email twin with the same key (they pair); one email event is duplicated. ``change`` scales the per-mille
    shares of paired events edited on Salesforce (4%), in the mailbox (4%), on both (1%), deleted on each side
    (0.5%). In every scenario 10% of mailbox items had LastModified bumped by a read (no change) and ten users'
    mailboxes come back empty (the mass-deletion guard refuses them)."""

    paired: int
    sf_only: int
    key_twins: int
    change: float
    text: str


SCENARIOS = {
    # a scheduled run two hours after the last: a couple of new events a side, 1% edited
    "steady": Scenario(paired=196, sf_only=198, key_twins=1, change=0.25,
                       text="2-hourly run: 2 new events a side, ~1% of the pairs edited a side, 0.1-0.2% deleted"),
    # a run after a long pause (or a burst): 15% of each calendar new, 10% of the pairs edited, 1% deleted
    "heavy": Scenario(paired=170, sf_only=185, key_twins=5, change=1.0,
                      text="catch-up run: 15 new events a side, ~10% of pairs edited, 1% deleted"),
}


def _rnd(seed: int, modulo: int) -> pl.Expr:
    return (pl.struct("u", "j").hash(seed) % modulo).cast(pl.Int64)


def generate(n_users: int, n_events: int, seed: int, scenario: Scenario = SCENARIOS["heavy"]
             ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """events, pairs, users, directory."""
    # the scenario's shares, for n_events a side instead of 200
    PAIRED, SF_ONLY, KEY_TWINS = (round(v * n_events / 200) for v in (scenario.paired, scenario.sf_only, scenario.key_twins))
    t0 = datetime.combine(TODAY - timedelta(days=25), datetime.min.time(), tzinfo=timezone.utc)
    grid = pl.DataFrame({"u": pl.int_range(0, n_users, eager=True)}).join(
        pl.DataFrame({"j": pl.int_range(0, n_events, eager=True)}), how="cross"
    )
    user_key = pl.format("user{}@corp.example", pl.col("u"))
    all_day = _rnd(seed + 1, 100) < 5
    start = pl.lit(t0) + pl.duration(hours=_rnd(seed + 2, 80 * 24))
    day = start.dt.truncate("1d")

    def invitee(slot: int) -> pl.Expr:
        k = _rnd(seed + 10 + slot, N_CONTACTS)
        lead = k % 5 == 0
        return pl.struct(
            pl.format("c{}@client.example", k).alias("email"),
            pl.when(_rnd(seed + 20 + slot, 3) == 0).then(pl.lit("accepted")).otherwise(pl.lit("none")).alias("response"),
            pl.when(lead).then(pl.format("00Q{}", k)).otherwise(pl.format("003{}", k)).alias("record_id"),
            pl.when(lead).then(pl.lit("lead")).otherwise(pl.lit("contact")).alias("record_type"),
        )

    n_inv = _rnd(seed + 3, 4)
    base = grid.with_columns(
        user_key.alias("user_key"),
        pl.format("Meeting {} about topic {}", _rnd(seed + 4, 100_000), pl.col("j")).alias("subject"),
        pl.when(all_day).then(day).otherwise(start).alias("start"),
        pl.when(all_day).then(day + pl.duration(days=1)).otherwise(start + pl.duration(minutes=30 * (1 + _rnd(seed + 5, 4)))).alias("end"),
        all_day.alias("is_all_day"),
        pl.format("Agenda for item {}: discuss the plan, the numbers and next steps.", pl.col("j")).alias("description"),
        (_rnd(seed + 6, 100) < 3).alias("is_private"),
        pl.concat_list([invitee(s) for s in range(3)]).list.head(n_inv).cast(pl.List(INVITEE)).alias("invitees"),
        pl.lit(datetime(2025, 6, 1, tzinfo=timezone.utc)).alias("last_modified"),
        pl.lit(False).alias("is_child"),
        pl.lit(None, dtype=pl.String).alias("meeting_uid"),
        pl.lit("v1").alias("version"),
    ).with_columns(pl.col("user_key").alias("organizer_email"))

    def side(frame: pl.DataFrame, name: str, prefix: str) -> pl.DataFrame:
        return frame.with_columns(
            pl.lit(name).alias("side"),
            pl.format("{}{}_{}", pl.lit(prefix), pl.col("u"), pl.col("j")).alias("native_id"),
            (pl.col("user_key") if name == "email" else pl.lit(None, dtype=pl.String)).alias("mailbox"),
        )

    sf0 = side(base.filter(pl.col("j") < SF_ONLY), "salesforce", "S")
    # email copies of paired events are identical; email-only events get their own subjects, except a few
    # "key twins" of Salesforce-only events (pair by key) and one duplicated key per user
    em_base = base.with_columns(
        pl.when(pl.col("j") >= SF_ONLY).then(pl.format("Call {} #{}", _rnd(seed + 7, 100_000), pl.col("j"))).otherwise(pl.col("subject")).alias("subject")
    )
    em_paired = em_base.filter(pl.col("j") < PAIRED)
    twins = base.filter((pl.col("j") >= PAIRED) & (pl.col("j") < PAIRED + KEY_TWINS)).with_columns(pl.col("j") + 1000)
    dups = em_base.filter(pl.col("j") == SF_ONLY).with_columns(pl.col("j") + 2000)
    em0 = side(pl.concat([em_paired, twins, dups, em_base.filter(pl.col("j") >= SF_ONLY)]), "email", "E")

    stored = normalise(conform(pl.concat([sf0, em0], how="diagonal_relaxed"), EVENT_SCHEMA))
    h = stored.select("side", "native_id", "content_hash")
    pairs = (
        sf0.filter(pl.col("j") < PAIRED)
        .select("u", "j", "user_key", pl.col("native_id").alias("sf_id"), pl.format("E{}_{}", pl.col("u"), pl.col("j")).alias("email_id"))
        .join(h.filter(pl.col("side") == "salesforce").select(pl.col("native_id").alias("sf_id"), pl.col("content_hash").alias("sf_hash")), on="sf_id")
        .join(h.filter(pl.col("side") == "email").select(pl.col("native_id").alias("email_id"), pl.col("content_hash").alias("email_hash")), on="email_id")
        .with_columns(
            pl.format("P{}_{}", pl.col("u"), pl.col("j")).alias("pair_id"),
            pl.col("user_key").alias("mailbox"),
            pl.lit(False).alias("linked"),
            pl.lit("r0").alias("created_run"),
            pl.lit("r0").alias("last_run"),
        )
    )
    pairs = conform(pairs, PAIR_SCHEMA)

    # this run's edits on paired events
    r = _rnd(seed + 8, 1000)
    later = pl.lit(datetime(2025, 6, 14, tzinfo=timezone.utc))
    a, b, c, d, e = (int(v * scenario.change) for v in (40, 80, 90, 95, 100))
    sf_edit = (r < a) | ((r >= b) & (r < c))
    em_edit = ((r >= a) & (r < c))
    paired = pl.col("j") < PAIRED
    sf_now = sf0.filter(~(paired & (r >= c) & (r < d))).with_columns(
        pl.when(paired & sf_edit).then(pl.col("subject") + " (moved)").otherwise(pl.col("subject")).alias("subject"),
        pl.when(paired & sf_edit).then(later).otherwise(pl.col("last_modified")).alias("last_modified"),
    )
    em_now = em0.filter(~(paired & (r >= d) & (r < e))).with_columns(
        pl.when(paired & em_edit).then(pl.col("start") + pl.duration(hours=1)).otherwise(pl.col("start")).alias("start"),
        pl.when(paired & em_edit).then(pl.col("end") + pl.duration(hours=1)).otherwise(pl.col("end")).alias("end"),
        pl.when(paired & em_edit).then(later + pl.duration(hours=1))
        # Exchange bumps LastModified on reads: not a change
        .when(paired & (r >= 100) & (r < 200)).then(later)
        .otherwise(pl.col("last_modified")).alias("last_modified"),
    ).filter(pl.col("u") >= 10)  # ten users' mailboxes come back empty: refused by the guard
    events = conform(pl.concat([sf_now, em_now], how="diagonal_relaxed"), EVENT_SCHEMA)

    users = pl.DataFrame({"u": pl.int_range(0, n_users, eager=True)}).select(
        user_key.alias("user_key"),
        pl.when(pl.col("u") % 10 == 1).then(pl.lit("salesforce_to_email")).when(pl.col("u") % 10 == 2).then(pl.lit("email_to_salesforce")).otherwise(pl.lit("both")).alias("direction"),
        pl.when(pl.col("u") % 7 == 3).then(pl.lit("with_contact_or_lead")).when(pl.col("u") % 7 == 4).then(pl.lit("updates_only")).otherwise(pl.lit("all")).alias("filter_mode"),
        pl.lit(None, dtype=pl.Date).alias("start_date"),
        user_key.alias("mailbox"),
        pl.format("005{}", pl.col("u")).alias("sf_user_id"),
        pl.lit(False).alias("send_external_invites"),
        pl.lit(False).alias("allow_mass_delete"),
    )
    k = pl.int_range(0, N_CONTACTS, eager=True)
    directory = pl.DataFrame({"k": k}).select(
        pl.when(pl.col("k") % 5 == 0).then(pl.format("00Q{}", pl.col("k"))).otherwise(pl.format("003{}", pl.col("k"))).alias("record_id"),
        pl.when(pl.col("k") % 5 == 0).then(pl.lit("lead")).otherwise(pl.lit("contact")).alias("record_type"),
        pl.format("c{}@client.example", pl.col("k")).alias("email"),
        pl.format("005{}", pl.col("k") % n_users).alias("owner_id"),
    )
    # a few addresses held by both a Contact and a Lead (C12)
    directory = pl.concat([directory, directory.filter(pl.col("record_type") == "contact").head(500).with_columns(
        pl.col("record_id").str.replace("003", "00Qx"), pl.lit("lead").alias("record_type"))])
    return events, pairs, conform(users, USER_SCHEMA), conform(directory, DIRECTORY_SCHEMA)


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (VmHWM; ru_maxrss where /proc is missing)."""
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: writing 5 to /proc/self/clear_refs), so that the next peak
    belongs to what runs next and not to the generator. False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _median_time(fn, repeat: int) -> tuple[float, object, float]:
    """Median wall time of ``repeat`` calls of ``fn``, its last result, and the median CPU time of this process
    (all threads) per call. The previous call's result is dropped first, as a run holds one."""
    times, cpu, out = [], [], None
    for _ in range(repeat):
        out = None
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), out, statistics.median(cpu)


def bare_join(events: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """Baseline (a): the stored pairs left-joined to both sides' events on the composite key (user, native id)."""
    sf = events.filter(pl.col("side") == "salesforce")
    em = events.filter(pl.col("side") == "email")
    return pairs.join(sf, left_on=["user_key", "sf_id"], right_on=["user_key", "native_id"], how="left").join(
        em, left_on=["user_key", "email_id"], right_on=["user_key", "native_id"], how="left", suffix="_em"
    )


def python_planner(events: pl.DataFrame, pairs: pl.DataFrame, users: pl.DataFrame) -> dict[str, int]:
    """Baseline (b): a straightforward per-user planner in plain Python of the core pairing, after the same
    normalise (the key and content hash are polars digests either way). Per user: the stored pairs looked up by id
    on both sides (R3), changed when a hash differs (R7), a side gone -> delete (R8); then the user's unpaired
    in-window events by key: a key held twice on a side is blocked (R4), a key on both sides pairs (R3), the rest
    is created. No direction, filter, privacy, group, invitee or payload rules: a floor for the real thing."""
    ev = normalise(events)
    lo, hi = (int(v.timestamp() * 1_000_000) for v in window_bounds(TODAY))
    cols = ev.select("user_key", "side", "native_id", "key", "content_hash",
                     pl.col("start").dt.epoch("us"), pl.col("end").dt.epoch("us")).get_columns()
    by_user: dict[str, tuple[dict, dict]] = {u: ({}, {}) for u in users["user_key"].to_list()}
    for user, side, nid, key, chash, start, end in zip(*(c.to_list() for c in cols)):
        sides = by_user.get(user)
        if sides is not None:
            sides[side != "salesforce"][nid] = (key, chash, start < hi and end > lo)
    pairs_by_user: dict[str, list[tuple]] = {}
    for row in zip(*(pairs[c].to_list() for c in ("user_key", "sf_id", "email_id", "sf_hash", "email_hash"))):
        pairs_by_user.setdefault(row[0], []).append(row[1:])
    counts = dict.fromkeys(("keep", "update", "delete", "unpair", "pair", "create", "duplicate"), 0)
    for user, (sf, em) in by_user.items():
        bound: set[str] = set()
        for sf_id, em_id, sf_hash, em_hash in pairs_by_user.get(user, ()):
            s, e = sf.get(sf_id), em.get(em_id)
            bound.update((sf_id, em_id))
            if s and e:
                counts["update" if (s[1] != sf_hash or e[1] != em_hash) and (s[2] or e[2]) else "keep"] += 1
            elif s or e:
                counts["delete" if (s or e)[2] else "keep"] += 1
            else:
                counts["unpair"] += 1
        pool: list[dict[int, list[str]]] = [{}, {}]
        for i, side in enumerate((sf, em)):
            for nid, (key, _, inside) in side.items():
                if inside and nid not in bound:
                    pool[i].setdefault(key, []).append(nid)
        for key in pool[0].keys() | pool[1].keys():
            a, b = pool[0].get(key, []), pool[1].get(key, [])
            if len(a) > 1 or len(b) > 1:
                counts["duplicate"] += len(a) + len(b)
            elif a and b:
                counts["pair"] += 1
            else:
                counts["create"] += 1
    return counts


def _load_module(path: Path):
    """The reconcile module at ``path`` (a copy of an earlier version), imported under a name of its own."""
    spec = importlib.util.spec_from_file_location("reconcile_ab", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reconcile_ab"] = module
    spec.loader.exec_module(module)
    return module


RESULT_PARTS = ("deltas", "notes", "pair_refresh", "events")


def save_result(result, folder: Path) -> None:
    """The output oracle: every frame of a ReconcileResult, as produced (in its order), to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in RESULT_PARTS:
        getattr(result, name).write_parquet(folder / f"{name}.parquet")


def same_result(result, other, label: str) -> bool:
    """Print and return whether two ReconcileResults are identical, frame by frame, row order included; on a
    difference also whether they agree once sorted."""
    ok = True
    for name in RESULT_PARTS:
        a, b = getattr(result, name), getattr(other, name)
        if a.schema == b.schema and a.height == b.height and a.equals(b, null_equal=True):
            continue
        ok = False
        sortable = [c for c, t in a.schema.items() if not isinstance(t, (pl.List, pl.Struct))]
        sorted_eq = a.schema == b.schema and a.sort(sortable, nulls_last=True).equals(b.sort(sortable, nulls_last=True), null_equal=True)
        print(f"  {label}: {name} DIFFERS ({a.height:,} vs {b.height:,} rows; equal once sorted: {sorted_eq})")
    print(f"  {label}: {'identical' if ok else 'NOT identical'} (deltas, notes, pair_refresh, events)")
    return ok


class _Saved:
    def __init__(self, folder: Path) -> None:
        for name in RESULT_PARTS:
            setattr(self, name, pl.read_parquet(folder / f"{name}.parquet"))


def measure(folder: Path, args: argparse.Namespace, name: str) -> None:
    """Load the generated frames from ``folder`` and time normalise+reconcile; run in a process of its own so
    that neither the generator's peak nor the memory its allocator keeps counts against reconcile. The
    baselines run in this same process, right after, so their ratios hold whatever the machine's load."""
    repeat = args.repeat
    frames = {n: pl.read_parquet(folder / f"{n}.parquet") for n in ("events", "pairs", "users", "directory")}
    events, pairs, users, directory = frames["events"], frames["pairs"], frames["users"], frames["directory"]
    exact = reset_peak_rss()
    rss_inputs = _status_mib("VmRSS") or peak_rss_mib()
    print(f"inputs loaded in a fresh process: {rss_inputs:.0f} MiB resident; load average {_load()}; running ...", flush=True)

    def plan(module=None):
        return (module.reconcile if module else reconcile)(events, pairs, users, directory, today=TODAY, settings=Settings())

    best, result, cpu_s = _median_time(plan, repeat)
    rec_peak = peak_rss_mib()
    join_s, _, _ = _median_time(lambda: bare_join(events, pairs), repeat)
    py_s, py_counts, _ = _median_time(lambda: python_planner(events, pairs, users), max(1, min(repeat, 3)))

    d = result.deltas
    counts = dict(d.group_by("op").len().sort("op").iter_rows())
    kinds = dict(result.notes.group_by("kind").len().sort("kind").iter_rows())
    print(f"deltas: {d.height:,} {counts}")
    print(f"notes:  {result.notes.height:,} {kinds}; pair_refresh: {result.pair_refresh.height:,}")
    print(f"python baseline's plan: {py_counts}")
    print(f"normalise+reconcile: median of {repeat}; peak RSS increase {rec_peak - rss_inputs:.0f} MiB over the inputs' "
          f"{rss_inputs:.0f} MiB" + ("" if exact else " [peak could not be reset]"))
    print(f"ratios in this process (load average {_load()}): reconcile / bare composite-key join {best / join_s:.1f}x; "
          f"per-user Python planner / reconcile {py_s / best:.1f}x; "
          f"{cpu_s / users.height * 1000:.2f} CPU s per 1,000 users")
    if args.save_output:
        save_result(result, args.save_output / name)
        print(f"  output saved to {args.save_output / name}")
    if args.check_output:
        same_result(result, _Saved(args.check_output / name), f"against {args.check_output / name}")
    if args.ab:
        ab(plan, _load_module(args.ab), result, repeat)


def ab(plan, old, new_result, repeat: int) -> None:
    """A/B in this process: the reconcile at --ab (old) and transforms.reconcile (new), in ``repeat`` rounds of one
    run each (the order alternates each round, so neither always runs second); the medians of each, and the
    median of the rounds' new/old ratios (a load swing hits both runs of a round alike); and whether their outputs
    are identical."""
    old_result = plan(old)
    same_result(new_result, old_result, "new vs old")
    del old_result
    times: dict[str, list[float]] = {"old": [], "new": []}
    for i in range(repeat):
        for label in (("old", "new") if i % 2 == 0 else ("new", "old")):
            t = time.perf_counter()
            plan(old if label == "old" else None)
            times[label].append(time.perf_counter() - t)
    old_s, new_s = statistics.median(times["old"]), statistics.median(times["new"])
    paired = statistics.median(n / o for n, o in zip(times["new"], times["old"]))
    print(f"A/B, {repeat} alternating rounds: new / old = {new_s / old_s:.3f}x (medians), {paired:.3f}x (median of "
          f"the rounds' ratios; load average {_load()})")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenario", choices=[*SCENARIOS, "both"], default="both",
                    help="what changed since the last run (default: both; the 1 s target is for steady)")
    ap.add_argument("--save-output", type=Path, metavar="DIR",
                    help="the output oracle: save each scenario's ReconcileResult under DIR/<scenario>/")
    ap.add_argument("--check-output", type=Path, metavar="DIR",
                    help="compare each scenario's ReconcileResult with the one saved under DIR/<scenario>/")
    ap.add_argument("--ab", type=Path, metavar="OLD.py",
                    help="A/B: also time a copy of an earlier transforms/reconcile.py (e.g. `git show "
                         "main:transforms/reconcile.py > /tmp/old.py`) in the same process, and compare outputs")
    ap.add_argument("--inputs", type=Path, metavar="DIR",
                    help="keep the generated inputs under DIR/<scenario>/ and reuse them on later calls (same arguments!)")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the measuring child process
    args = ap.parse_args()
    if args.measure is not None:
        measure(args.measure, args, args.scenario)
        return

    names = list(SCENARIOS) if args.scenario == "both" else [args.scenario]
    for name in names:
        print(f"== scenario {name}: {SCENARIOS[name].text}", flush=True)
        with tempfile.TemporaryDirectory(prefix="calsync-bench-") as tmp:
            folder = args.inputs / name if args.inputs else Path(tmp)
            if not (folder / "directory.parquet").exists():
                generate_to(folder, args, SCENARIOS[name])
            sys.stdout.flush()
            extra = [a for flag in ("save_output", "check_output", "ab") if getattr(args, flag)
                     for a in (f"--{flag.replace('_', '-')}", str(getattr(args, flag).resolve()))]
            subprocess.run([sys.executable, __file__, "--measure", str(folder), "--repeat", str(args.repeat),
                            "--scenario", name, *extra], check=True)


def generate_to(folder: Path, args: argparse.Namespace, scenario: Scenario) -> None:
    """Generate a scenario's input frames into ``folder`` (as parquet)."""
    t = time.perf_counter()
    events, pairs, users, directory = generate(args.users, args.events, args.seed, scenario)
    gen_s = time.perf_counter() - t
    print(f"generated {events.height:,} events, {pairs.height:,} pairs, {users.height:,} users, "
          f"{directory.height:,} directory rows in {gen_s:.1f} s (generator peak RSS {peak_rss_mib():.0f} MiB)")
    folder.mkdir(parents=True, exist_ok=True)
    for frame_name, frame in (("events", events), ("pairs", pairs), ("users", users), ("directory", directory)):
        frame.write_parquet(folder / f"{frame_name}.parquet")

if __name__ == "__main__":
    main()
