"""How each side stores the text calsync writes (R7, C7, C19): what a target reads back after a write.

A pair remembers the content hash of what its target holds after a write, so a value that does not come back
as it was written must be projected to its stored form before it is hashed; otherwise the next run reads the
stored form as a person's edit on that side and copies it back over the original (R7).

A mailbox (Exchange, through EWS or Microsoft Graph alike: it is a property of the store, not of the protocol)

- cannot store the characters XML 1.0 cannot carry (NUL, the C0 controls but tab, line feed and carriage
  return, U+FFFE, U+FFFF) nor the C1 controls and the U+FDD0..U+FDDF non-characters: the EWS client sends each as "?"
  (exchangelib's ``safe_xml_value``), and calsync writes the same "?" through any mailbox kind, so a meeting
  reads the same in every mailbox;
- keeps a description as a body converted to and from its stored format (plain text, HTML or RTF), which does
  not preserve whitespace ("Message stores that support Rich Text Format (RTF) ignore any changes to white space
  in the message text", https://learn.microsoft.com/en-us/office/client-developer/outlook/mapi/pidtagbody-canonical-property):
  line breaks come back as ``\\n`` and trailing whitespace is gone.

Salesforce stores text as written (values are not trimmed), within its length limits (C19, ``SUBJECT_MAX``,
``DESCRIPTION_MAX``).

``target_text`` is the one place that decides what a write puts on a target: the target's current value when
it already stands for the source's (a stored form of the same text, or the full text of a cut one), else the
source's value in the target's stored form, with flags for the notes (C19: cut; "?" put in).
"""

from __future__ import annotations

import polars as pl

# what a mailbox cannot store (Rust regex syntax, as polars takes it)
UNSTORABLE = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x84\x86-\x9F\x{FDD0}-\x{FDDF}\x{FFFE}\x{FFFF}]"


def mailbox_subject(expr: pl.Expr) -> pl.Expr:
    """A subject as a mailbox stores it: characters it cannot store become "?"."""
    return expr.str.replace_all(UNSTORABLE, "?")


def mailbox_description(expr: pl.Expr) -> pl.Expr:
    """A description as a mailbox stores it: characters it cannot store become "?", line breaks ``\\n``, no
    trailing whitespace (the order of a write: the client replaces, the store drops the whitespace)."""
    return expr.str.replace_all(UNSTORABLE, "?").str.replace_all(r"\r\n?", "\n").str.strip_chars_end()


def target_text(b: pl.Expr, t: pl.Expr, *, limit: int, to_salesforce: bool, description: bool) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(value, cut, altered) that a write of source text ``b`` over target text ``t`` (null for a create) puts
    on the target.

    The target keeps ``t`` when it already stands for ``b``: both have the same stored form in a mailbox (a
    Salesforce original and the copy a mailbox made of it), or, towards email, ``t`` is the full text that
    Salesforce holds cut to ``limit`` (C19). Otherwise the target gets ``b`` in its stored form: cut to ``limit``
    for Salesforce (``cut``), with "?" for what a mailbox cannot store (``altered``)."""
    stored = mailbox_description if description else mailbox_subject
    same = stored(t) == stored(b)
    if to_salesforce:
        keep = t.is_not_null() & (same & (t.str.len_chars() <= limit)).fill_null(False)
        value = pl.when(keep).then(t).otherwise(b.str.slice(0, limit))
        return value, (~keep & (b.str.len_chars() > limit)).fill_null(False), pl.lit(False)
    full = (t.str.len_chars() > limit) & (stored(t.str.slice(0, limit)) == stored(b))
    keep = t.is_not_null() & (same | full).fill_null(False)
    value = pl.when(keep).then(t).otherwise(stored(b))
    return value, pl.lit(False), (~keep & b.str.contains(UNSTORABLE)).fill_null(False)
