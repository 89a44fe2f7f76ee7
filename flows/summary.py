"""The run summary: per user, what was written where, what was skipped and why; and its verdict (the exit
code, the Prefect state and the one-line headline an operator sees)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from transforms.schema import DELTA_SCHEMA, NOTE_SCHEMA, OUTCOME_SCHEMA, conform


def summarise(deltas: pl.DataFrame, outcomes: pl.DataFrame, notes: pl.DataFrame) -> dict:
    """A JSON-able summary: {"users": {user: {...}}, "totals": {...}, "notices": [...]}."""
    deltas = conform(deltas, DELTA_SCHEMA).with_columns(pl.col(pl.Enum).cast(pl.String))
    outcomes = conform(outcomes, OUTCOME_SCHEMA)
    notes = conform(notes, NOTE_SCHEMA).with_columns(pl.col(pl.Enum).cast(pl.String))
    joined = deltas.join(outcomes, on="delta_id", how="left")
    users: dict[str, dict] = {}

    def entry(user: str) -> dict:
        return users.setdefault(user, {
            "created": {"salesforce": [], "email": []},
            "updated": {"salesforce": [], "email": []},
            "deleted": {"salesforce": [], "email": []},
            "pairs_made": 0, "pairs_dropped": 0, "duplicates": 0,
            "conflicts": [], "skipped": [], "failed": [], "refused": None, "refused_reason": None,
        })

    for row in joined.iter_rows(named=True):
        e = entry(row["user_key"])
        op, side, status = row["op"], row["target_side"], row["status"]
        if status != "applied":
            e["failed"].append({
                "op": op, "side": side, "source_id": row["source_id"], "target_id": row["target_id"],
                "error": row["error"] or "no outcome recorded", "retriable": bool(row["retriable"]),
            })
            continue
        if op == "create":
            e["created"][side].append(row["new_id"])
            e["pairs_made"] += 1
        elif op == "update":
            e["updated"][side].append(row["target_id"])
        elif op == "delete":
            e["deleted"][side].append(row["target_id"])
            e["pairs_dropped"] += 1
        elif op == "pair":
            e["pairs_made"] += 1
        elif op == "unpair":
            e["pairs_dropped"] += 1
    notices = []
    for row in notes.iter_rows(named=True):
        if row["user_key"] in (None, "*"):
            notices.append(row["detail"])
            continue
        e = entry(row["user_key"])
        kind = row["kind"]
        if kind == "duplicate":
            e["duplicates"] += 1
        elif kind == "conflict":
            e["conflicts"].append({"reason": row["reason"], "detail": row["detail"]})
        elif kind in ("skipped", "truncated", "altered"):
            e["skipped"].append({"reason": row["reason"], "side": row["side"],
                                 "native_id": row["native_id"], "detail": row["detail"]})
        elif kind == "refused":
            e["refused"] = row["detail"]
            e["refused_reason"] = row["reason"]
        elif kind == "notice":
            notices.append(row["detail"])
    totals = {
        "deltas": deltas.height,
        "applied": int((outcomes["status"] == "applied").sum()),
        "failed": int((outcomes["status"] == "failed").sum()) + max(0, deltas.height - outcomes.height),
        "created": sum(len(u["created"]["salesforce"]) + len(u["created"]["email"]) for u in users.values()),
        "updated": sum(len(u["updated"]["salesforce"]) + len(u["updated"]["email"]) for u in users.values()),
        "deleted": sum(len(u["deleted"]["salesforce"]) + len(u["deleted"]["email"]) for u in users.values()),
        "conflicts": sum(len(u["conflicts"]) for u in users.values()),
        "duplicates": sum(u["duplicates"] for u in users.values()),
        "skipped": sum(len(u["skipped"]) for u in users.values()),
        "refused_users": sorted(k for k, u in users.items() if u["refused"]),
        "refusals": {k: u["refused_reason"] for k, u in sorted(users.items()) if u["refused"]},
    }
    return {"users": dict(sorted(users.items())), "totals": totals, "notices": notices}


def render_table(summary: dict) -> str:
    """The summary as a plain-text table (one line per user) plus problems underneath."""
    head = ["user", "SF+", "SF~", "SF-", "mail+", "mail~", "mail-", "paired", "unpaired",
            "dups", "conflicts", "skipped", "failed"]
    rows = [head]
    for user, u in summary["users"].items():
        rows.append([
            user,
            *(str(len(u[k][s])) for s in ("salesforce", "email") for k in ("created", "updated", "deleted")),
            str(u["pairs_made"]), str(u["pairs_dropped"]), str(u["duplicates"]),
            str(len(u["conflicts"])), str(len(u["skipped"])), str(len(u["failed"])),
        ])
    # column order above is per side: created, updated, deleted
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    t = summary["totals"]
    lines.append(f"total: {t['deltas']} deltas, {t['applied']} applied, {t['failed']} failed, "
                 f"{t['conflicts']} conflicts, {t['duplicates']} duplicates, {t['skipped']} skipped")
    for n in summary["notices"]:
        lines.append(f"notice: {n}")
    for user, u in summary["users"].items():
        if u["refused"]:
            lines.append(f"refused {user}: {u['refused_reason']}: {u['refused']}")
        for f in u["failed"]:
            lines.append(f"failed {user}: {f['op']} on {f['side']} ({f['source_id'] or f['target_id']}): {f['error']}")
        for c in u["conflicts"]:
            lines.append(f"conflict {user}: {c['detail']}")
        for s in u["skipped"]:
            lines.append(f"skipped {user}: {s['reason']} {s['side'] or ''} {s['native_id'] or ''} {s['detail'] or ''}".rstrip())
    return "\n".join(lines)


def render_markdown(summary: dict) -> str:
    """The summary as the Prefect artifact: counts by user and operation, then conflicts and errors."""
    lines = [f"# calsync run `{summary.get('run_id', '?')}`: {summary.get('status', '?')}", "",
             f"**{verdict(summary).headline}**", ""]
    lines += ["| user | SF created | SF updated | SF deleted | email created | email updated | email deleted"
              " | pairs made | pairs dropped | duplicates | conflicts | skipped | failed |",
              "|---" * 13 + "|"]
    for user, u in summary["users"].items():
        cells = [str(len(u[k][s])) for s in ("salesforce", "email") for k in ("created", "updated", "deleted")]
        cells += [str(u["pairs_made"]), str(u["pairs_dropped"]), str(u["duplicates"]),
                  str(len(u["conflicts"])), str(len(u["skipped"])), str(len(u["failed"]))]
        lines.append(f"| {user} | " + " | ".join(cells) + " |")
    t = summary["totals"]
    lines += ["", f"**{t['deltas']} deltas**: {t['applied']} applied, {t['failed']} failed; "
              f"{t['conflicts']} conflicts, {t['duplicates']} duplicates, {t['skipped']} skipped.", ""]
    conflicts = [(user, c) for user, u in summary["users"].items() for c in u["conflicts"]]
    if conflicts:
        lines += ["## Conflicts", ""] + [f"- {user}: {c['reason']}: {c['detail']}" for user, c in conflicts] + [""]
    refused = [(user, u) for user, u in summary["users"].items() if u["refused"]]
    if refused:
        lines += ["## Refused users (no change for them this run)", ""]
        lines += [f"- {user}: {u['refused_reason']}: {u['refused']}" for user, u in refused] + [""]
    errors = [(user, f) for user, u in summary["users"].items() for f in u["failed"]]
    if errors:
        lines += ["## Errors", ""]
        lines += [f"- {user}: {f['op']} on {f['side']}: {f['error']}" for user, f in errors]
        lines.append("")
    if summary.get("notices"):
        lines += ["## Notices", ""] + [f"- {n}" for n in summary["notices"]]
    return "\n".join(lines)


# Exit codes of `calsync sync` (README and docs/schedule.md list them).
EXIT_OK = 0  # every delta applied, every enabled user synced
EXIT_FATAL = 1  # the run stopped (the message says what to do)
EXIT_CONFIG = 2  # the config is invalid
EXIT_FAILED_DELTAS = 3  # some deltas failed: `calsync replay RUN_ID`
EXIT_SKIPPED = 4  # another run holds the store
EXIT_REFUSED = 5  # a user got no change: the mass-deletion guard refused their deletions
EXIT_NOT_SYNCED = 6  # a user was not synced: their mailbox could not be read, or no Salesforce User has the email


@dataclass(frozen=True)
class Verdict:
    """How a run ended for the operator: exit code, Prefect state (type and name), one-line headline."""

    exit_code: int
    state: str  # COMPLETED or FAILED
    state_name: str  # Completed, Failed, or Refused (a COMPLETED state an automation can match by name)
    headline: str


def verdict(summary: dict) -> Verdict:
    """The verdict of a finished run (sync, push or replay) from its summary. Failed deltas win over refused
    users, which win over users not synced: the exit code says the most urgent thing to do."""
    t = summary["totals"]
    run_id = summary.get("run_id", "?")
    refusals = t.get("refusals", {})
    guard = sorted(u for u, r in refusals.items() if r == "mass_deletion")
    others = sorted(u for u, r in refusals.items() if r != "mass_deletion")
    notes = []
    if guard:
        notes.append(f"{len(guard)} user{'s' if len(guard) > 1 else ''} refused by the mass-deletion guard"
                     f" ({', '.join(guard)}: see the summary; --allow-deletes or allow_mass_delete to proceed)")
    if others:
        notes.append(f"{len(others)} user{'s' if len(others) > 1 else ''} not synced ("
                     + ", ".join(f"{u}: {refusals[u]}" for u in others) + ")")
    if t["failed"]:
        head = (f"{t['failed']} of {t['deltas']} deltas failed; `calsync replay {run_id}` writes them (or the next"
                " sync re-plans them)")
        return Verdict(EXIT_FAILED_DELTAS, "FAILED", "Failed", "; ".join([head, *notes]))
    if guard:
        return Verdict(EXIT_REFUSED, "COMPLETED", "Refused", "; ".join(notes))
    if others:
        return Verdict(EXIT_NOT_SYNCED, "COMPLETED", "Refused", "; ".join(notes))
    return Verdict(EXIT_OK, "COMPLETED", "Completed", f"{t['applied']} of {t['deltas']} deltas applied")


def headline(summary: dict) -> str:
    """``run RUN_ID: STATUS: what happened`` in one line."""
    return f"run {summary.get('run_id', '?')}: {summary.get('status', '?')}: {verdict(summary).headline}"
