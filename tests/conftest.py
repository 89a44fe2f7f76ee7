"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep Prefect's state for the test session out of the user's home.
os.environ.setdefault("PREFECT_HOME", str(Path(__file__).resolve().parent.parent / "data" / "prefect-test"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def pytest_configure(config):
    config.addinivalue_line("markers", "prefect: runs a real Prefect flow (one temporary API per test session)")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (starting one costs 13-16 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield
