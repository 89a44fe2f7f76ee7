"""The linter is part of the suite: `./run.sh test` (and so CI, which runs exactly that) fails on any ruff finding.

The rule set and why each part of it is there: pyproject.toml, [tool.ruff.lint].
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *args],
                          cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=120)


def test_ruff_finds_nothing_in_the_tree():
    out = _ruff(".")
    assert out.returncode == 0, f"ruff check found something (fix it, or `ruff check --fix`):\n{out.stdout}{out.stderr}"


def test_the_rule_set_catches_an_unused_import_and_a_dead_noqa():
    # the project's own config, on a file that breaks it: the check above is not vacuous
    bad = "import os\nx = 1  # noqa: E731\n"
    out = _ruff("--stdin-filename", "transforms/example.py", "-", stdin=bad)
    assert out.returncode == 1
    assert "F401" in out.stdout and "RUF100" in out.stdout, out.stdout
