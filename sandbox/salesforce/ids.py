"""Salesforce record ids: 15-character case-sensitive ids and their 18-character form.

The 18-character form appends a 3-character checksum that encodes which of the 15 characters
are upper case, five characters per suffix letter, read right to left inside each chunk
(https://help.salesforce.com/s/articleView?id=000385008&type=1 "What are Salesforce IDs" and
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/field_types.htm#i1435616 "ID Field Type").
Key prefixes: 00U Event, 0RE EventRelation, 003 Contact, 00Q Lead, 005 User, 00D Organization.
"""

from __future__ import annotations

import itertools
import threading

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ALNUM = set(_B62)
_POD = "5g0"  # instance/pod characters between the key prefix and the counter


def checksum(id15: str) -> str:
    out = []
    for i in range(3):
        chunk = id15[i * 5 : i * 5 + 5]
        bits = 0
        for j, ch in enumerate(chunk):
            if "A" <= ch <= "Z":
                bits |= 1 << j
        out.append(_SUFFIX[bits])
    return "".join(out)


def to18(value: object) -> str | None:
    """The 18-character id for a 15- or 18-character id, or None when ``value`` is not an id."""
    if not isinstance(value, str) or len(value) not in (15, 18) or not set(value) <= _ALNUM:
        return None
    base = value[:15]
    full = base + checksum(base)
    if len(value) == 18 and value[15:].upper() != full[15:]:
        return None
    return full


def _base62(n: int, width: int) -> str:
    chars = []
    while n:
        n, r = divmod(n, 62)
        chars.append(_B62[r])
    return "".join(reversed(chars)).rjust(width, "0")


class IdFactory:
    """Hands out fresh ids per key prefix (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, itertools.count] = {}

    def new(self, prefix: str) -> str:
        with self._lock:
            counter = self._counters.setdefault(prefix, itertools.count(1))
            n = next(counter)
        # mix the counter so consecutive ids differ in several places, like real ones
        body = _base62((n * 7919 + 104729) % (62**9), 9)
        id15 = prefix + _POD + body
        return id15 + checksum(id15)
