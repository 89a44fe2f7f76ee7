"""calsync's flows. ``flows.memory`` comes first: it sets how the allocators hand memory back, which they read
when they start (before polars is loaded)."""

from flows import memory as _memory  # noqa: F401
