"""flows.memory: the allocator settings a calsync process starts with (docs/scale.md, "Memory")."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = (
    "import os, sys, flows, flows.memory as m, polars\n"
    "print(os.environ.get('_RJEM_MALLOC_CONF'))\n"
    "print(sorted(m.SETTINGS))\n"
)


def _probe(env_extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", "MALLOC_ARENA_MAX")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**env, **env_extra},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Invalid conf" not in out.stderr  # jemalloc names a setting it does not know on stderr
    return out.stdout.splitlines()


def test_a_fresh_process_gets_the_allocator_settings_before_polars_starts():
    conf, settings = _probe({})
    # polars puts its own defaults first and appends what it finds; in jemalloc the later setting wins
    assert conf.endswith(",background_thread:true,muzzy_decay_ms:0")
    assert settings == "['glibc arenas', 'jemalloc']"


def test_an_operators_own_settings_are_left_alone():
    conf, settings = _probe({"_RJEM_MALLOC_CONF": "dirty_decay_ms:5000", "MALLOC_ARENA_MAX": "8"})
    assert conf.endswith(",dirty_decay_ms:5000") and "background_thread" not in conf
    assert settings == "[]"


def test_jemalloc_reads_the_setting_when_polars_loads():
    # stats_print makes jemalloc print its statistics at exit: proof the variable reaches polars' allocator
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    out = subprocess.run([sys.executable, "-c", "import flows, polars; polars.DataFrame({'a': [1]})"], cwd=ROOT,
                         env={**env, "_RJEM_MALLOC_CONF": "stats_print:true"}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "jemalloc statistics" in out.stderr
