"""Long extracts and loads report progress; without a terminal, a line at each quarter."""

from __future__ import annotations

import io

from flows.progress import TerminalProgress
from tests.flows.conftest import at


def test_plain_progress_prints_quarters_and_the_end():
    out = io.StringIO()
    with TerminalProgress(out) as progress:
        for done in range(0, 401, 50):
            progress("write email", done, 400)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  write email: 0/400" and lines[-1] == "  write email: 400/400"
    assert len(lines) == 5  # 0, 100, 200, 300, 400


def test_a_sync_reports_mailbox_reads_and_writes(world):
    world.configure(extra="batch_size = 2")
    for n in range(5):
        world.sb.salesforce.org.add_event(world.ids["alice@example.com"], f"Progress {n}", at(n + 1, 9), at(n + 1, 10))
    out = io.StringIO()
    from flows.config import load_config
    from flows.sync import run_sync

    with TerminalProgress(out) as progress:
        run_sync(load_config(world.config_path, env=world.env), world.today, progress=progress)
    text = out.getvalue()
    assert "read mailboxes: 2/2" in text
    assert "write email: 5/5" in text
