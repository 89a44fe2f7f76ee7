"""Runs never overlap: a second run while one holds the store is skipped, and says so."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from flows.lock import RunInProgress, run_lock
from tests.flows.conftest import at


def test_second_run_is_skipped_while_one_holds_the_store(world):
    world.configure()
    world.sb.salesforce.org.add_event(world.ids["alice@example.com"], "Overlap", at(1, 9), at(1, 10))
    with run_lock(world.tmp / "calsync.duckdb", "run-A"):
        with pytest.raises(RunInProgress, match="run run-A .* is still syncing"):
            world.sync()
    assert world.mail_items("alice@example.com") == []  # the skipped run wrote nothing
    assert world.sync()["status"] == "succeeded"
    assert len(world.mail_items("alice@example.com")) == 1


def test_lock_held_by_another_process_is_named_and_freed_when_it_exits(tmp_path):
    store = tmp_path / "s.duckdb"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).resolve().parents[2])!r})
        from flows.lock import run_lock
        with run_lock(__import__('pathlib').Path({str(store)!r}), "run-B"):
            print("held", flush=True)
            time.sleep(30)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInProgress, match=f"run run-B \\(pid {holder.pid}"):
            with run_lock(store, "run-C"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(store, "run-D"):  # a killed holder leaves no stale lock
        pass
