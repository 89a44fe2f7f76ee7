"""How calsync's process hands memory back (docs/scale.md, "Memory"). Imported first by ``flows`` (its
``__init__``), before polars is loaded: the settings below are read when the allocators start.

A run reads a whole org into frames, plans, writes, and lets them go; a long-lived deployment then idles for two
hours. Two allocators keep freed memory by default, and each makes the peak of one run, and the memory an idle
deployment holds, larger than what is in use:

- polars allocates with jemalloc, which polars itself tells to keep freed pages 0.5 s ("dirty") and then 1 s
  more ("muzzy"), and which purges them only while it is allocating: a process that goes quiet keeps them.
  calsync adds a background thread that purges, and drops muzzy pages at once (polars appends these to its own
  ``_RJEM_MALLOC_CONF``; later settings win). One the operator set is left as it is.
- glibc's malloc (exchangelib, lxml, requests, DuckDB's own allocations) makes one arena per thread that
  allocates, up to 8 per core, and a freed chunk stays in its arena: with 16 mailboxes read at once, 16 arenas
  of fragments. calsync caps them at 4 (``mallopt(M_ARENA_MAX)``), unless ``MALLOC_ARENA_MAX`` is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

JEMALLOC_CONF = "background_thread:true,muzzy_decay_ms:0"
ARENA_MAX = 4
_M_ARENA_MAX = -8  # glibc's malloc.h


def configure() -> dict[str, str]:
    """Apply the settings (once per process; harmless if polars is already loaded: then jemalloc keeps its own).
    Returns what was set, for the log."""
    done: dict[str, str] = {}
    if "_RJEM_MALLOC_CONF" not in os.environ and "polars" not in sys.modules:
        os.environ["_RJEM_MALLOC_CONF"] = JEMALLOC_CONF
        done["jemalloc"] = JEMALLOC_CONF
    if sys.platform.startswith("linux") and "MALLOC_ARENA_MAX" not in os.environ:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            if libc.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1:
                done["glibc arenas"] = str(ARENA_MAX)
        except (OSError, AttributeError):  # not glibc (musl has no arenas to cap)
            pass
    return done


SETTINGS = configure()
