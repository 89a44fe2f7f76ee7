"""Smoke test of ``benchmarks/end_to_end.py`` (the benchmark itself is not part of the suite): 3 users x 5 events,
both mailbox kinds, a small latency, all three runs; its JSON line has every figure, the client's call counts agree
with the sandbox's, the ideal counts follow their definition, and no secret reaches the screen."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from sandbox.exchange import DEFAULT_PASSWORD

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("wall_s", "cpu_s", "cpu_per_user_s", "peak_rss_mib", "rss_mib", "rss_growth_mib", "sandbox_cpu_s")


def test_the_benchmark_prints_every_figure_as_one_json_line():
    proc = subprocess.run(
        [sys.executable, "benchmarks/end_to_end.py", "--users", "3", "--events", "5", "--graph-share", "0.5",
         "--latency-ms", "20", "--runs", "first,quiet,quiet,steady", "--steady-share", "0.5",
             "--fresh-process"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # the sandbox's throw-away secrets never reach the screen
    assert DEFAULT_PASSWORD not in out
    assert not re.search(r"00D\w{12}!", out), "a Salesforce session id was printed"
    assert "sbx8Q~" not in out and "PRIVATE KEY" not in out
    assert not re.search(r'"(session_id|password|client_secret)"', out)

    line = proc.stdout.strip().splitlines()[-1]
    result = json.loads(line)
    assert result["benchmark"] == "end_to_end"
    assert (result["users"], result["events"], result["latency_ms"]) == (3, 5, 20)
    assert result["mailboxes"] == {"ews": 2, "graph": 1}
    for key in ("loadavg_start", "loadavg_end"):
        assert len(result[key]) == 3 and all(x >= 0 for x in result[key])
    runs = {r["name"]: r for r in result["runs"]}
    assert list(runs) == ["first", "quiet", "quiet2", "steady"]
    # the runs after the first each in a process of their own
    assert [r["fresh_process"] for r in runs.values()] == [False, True, True, True]
    for name, run in runs.items():
        assert run["status"] == "succeeded", name
        for figure in FIGURES:
            assert isinstance(run[figure], (int, float)), (name, figure)
        assert run["wall_s"] > 0 and run["cpu_s"] > 0 and run["peak_rss_mib"] >= run["rss_mib"] > 0
        assert {"extract", "snapshot", "reconcile", "load", "extract: mailboxes"} <= set(run["stages"])
        for side in ("salesforce", "ews", "graph"):
            calls = run["calls"][side]
            assert {"client", "sandbox", "ideal", "by_operation", "ideal_parts"} <= set(calls)
            # what the client counted is what the server answered
            assert calls["client"] == calls["sandbox"] == sum(calls["by_operation"].values()), (name, side)
            assert calls["ideal"] >= 1
        # a sequential client waits out the latency on every call
        assert run["wall_s"] >= sum(c["sandbox"] for c in run["calls"].values()) * 0.020
    first, quiet, steady = runs["first"]["calls"], runs["quiet"]["calls"], runs["steady"]["calls"]
    quiet2 = runs["quiet2"]["calls"]
    for side in ("ews", "graph"):
        parts = first[side]["ideal_parts"]
        assert parts["changed_items"] == parts["view_items"] > 0  # a first run knows nothing yet
        # after the first run only what calsync wrote in it is new to a read, and it is read back once
        q = quiet[side]["ideal_parts"]
        assert q["changed_items"] == q["own_writes_read_back"], side
        assert q["writes"] == 0
        assert quiet2[side]["ideal_parts"]["changed_items"] == 0  # nothing changed at all
        assert quiet2[side]["ideal_parts"]["writes"] == 0
    assert steady["ews"]["ideal_parts"]["changed_items"] >= 2  # the new and the edited item
    assert steady["graph"]["ideal_parts"]["changed_items"] >= 2
    assert sum(quiet[side]["ideal_parts"]["own_writes_read_back"] for side in ("ews", "graph")) > 0
    ep = quiet2["ews"]["ideal_parts"]
    assert quiet2["ews"]["ideal"] == ep["views"] == 2  # one view per EWS mailbox, nothing else
    sp = first["salesforce"]["ideal_parts"]
    assert first["salesforce"]["ideal"] == sp["query_pages"] + sp["write_batches"]
    assert sp["records_written"].get("create Event", 0) > 0
    assert result["steady_edits"]["users"] == 2  # one of each kind
    assert runs["quiet"]["totals"]["created"] == runs["quiet"]["totals"]["updated"] == 0
