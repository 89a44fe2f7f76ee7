"""Stored forms of text (transforms.text) and round trips through the reconcile (R7, C7, C19)."""

import polars as pl
import pytest

from tests.transforms.builders import World, em, events, notes, ops, sf, utc
from transforms.text import mailbox_description, mailbox_subject, target_text


def _one(expr: pl.Expr, **cols) -> object:
    return pl.DataFrame({k: [v] for k, v in cols.items()}, schema={k: pl.String for k in cols}).select(expr).item()


@pytest.mark.parametrize("text,subject,description", [
    ("plain", "plain", "plain"),
    ("notes  \n\n", "notes  \n\n", "notes"),
    ("a\r\nb\rc\t ", "a\r\nb\rc\t ", "a\nb\nc"),
    ("nul\x00vt\x0bff\x0cesc\x1bdel\x7fc1\x84\x85\x9f", "nul?vt?ff?esc?del?c1?\x85?", "nul?vt?ff?esc?del?c1?\x85?"),
    ("ends in a control\x1f", "ends in a control?", "ends in a control?"),
    ("keep \t tabs\tand\nbreaks", "keep \t tabs\tand\nbreaks", "keep \t tabs\tand\nbreaks"),
    ("<b>&amp;</b> \U0001F600 \ufdd0\ufffe\uffff", "<b>&amp;</b> \U0001F600 ???", "<b>&amp;</b> \U0001F600 ???"),
])
def test_what_a_mailbox_stores(text, subject, description):
    assert _one(mailbox_subject(pl.col("t")), t=text) == subject
    assert _one(mailbox_description(pl.col("t")), t=text) == description


def _target(b, t, *, to_sf, description=True, limit=10):
    value, cut, altered = target_text(pl.col("b"), pl.col("t"), limit=limit, to_salesforce=to_sf, description=description)
    return pl.DataFrame({"b": [b], "t": [t]}, schema={"b": pl.String, "t": pl.String}).select(
        value.alias("v"), cut.alias("c"), altered.alias("a")).row(0)


def test_towards_email_the_source_goes_in_its_stored_form_and_a_stored_copy_is_kept():
    assert _target("notes  \n", None, to_sf=False) == ("notes", False, False)  # a create
    assert _target("notes  \n", "notes", to_sf=False) == ("notes", False, False)  # the copy stands for it
    assert _target("a\x00b", "a?b", to_sf=False, description=False) == ("a?b", False, False)
    assert _target("a\x0bb", "a\x0bb", to_sf=False, description=False) == ("a\x0bb", False, False)  # Outlook's own
    assert _target("new\x0b", "old", to_sf=False, description=False) == ("new?", False, True)
    assert _target("0123456789", "0123456789 and more", to_sf=False) == ("0123456789 and more", False, False)  # C19


def test_towards_salesforce_the_original_is_kept_when_the_copy_is_its_stored_form():
    assert _target("notes", "notes  \n", to_sf=True) == ("notes  \n", False, False)
    assert _target("a?b", "a\x00b", to_sf=True, description=False) == ("a\x00b", False, False)
    assert _target("edited", "notes  \n", to_sf=True) == ("edited", False, False)
    assert _target("0123456789 and more", None, to_sf=True) == ("0123456789", True, False)  # C19 cut
    assert _target("a\x0bb", None, to_sf=True, description=False) == ("a\x0bb", False, False)  # Salesforce keeps it


def test_r7_a_round_trip_through_a_mailbox_never_rewrites_the_salesforce_original():
    long_text = "x" * 31_990 + " " * 10
    w = World(events(
        sf("S1", "Nul\x00and\x0bvt", description="line one\nline two  \n"),
        sf("S2", "Long", description=long_text, start=utc(2025, 6, 21, 10)),
    ))
    first = w.sync()
    assert ops(first) == [("create", "email", None), ("create", "email", None)]
    assert notes(first, "altered") == [("altered", "subject_altered", "S1")]
    copy = next(r for r in w.on("email") if r["subject"].startswith("Nul"))
    assert (copy["subject"], copy["description"]) == ("Nul?and?vt", "line one\nline two")
    assert w.sync().deltas.is_empty()
    # an Outlook edit of the time flows back; the Salesforce texts stay as their owner wrote them
    for r in w.on("email"):
        w.edit("email", r["native_id"], start=r["start"] + (r["end"] - r["start"]), end=r["end"] + (r["end"] - r["start"]),
               last_modified=utc(2025, 6, 15, 13))
    back = w.sync()
    assert ops(back) == [("update", "salesforce", "S1"), ("update", "salesforce", "S2")]
    assert (w.get("salesforce", "S1")["subject"], w.get("salesforce", "S1")["description"]) == ("Nul\x00and\x0bvt", "line one\nline two  \n")
    assert w.get("salesforce", "S2")["description"] == long_text
    assert w.sync().deltas.is_empty()


def test_c19_control_characters_from_outlook_reach_salesforce_and_stay_in_the_mailbox():
    w = World(events(em("E1", "Outlook\x0bsubject", description="body\x01text")))
    w.sync()
    copy = w.on("salesforce")[0]
    assert (copy["subject"], copy["description"]) == ("Outlook\x0bsubject", "body\x01text")
    w.edit("salesforce", copy["native_id"], start=utc(2025, 6, 20, 12), end=utc(2025, 6, 20, 13), last_modified=utc(2025, 6, 15, 13))
    res = w.sync()
    assert ops(res) == [("update", "email", "E1")]
    assert w.get("email", "E1")["subject"] == "Outlook\x0bsubject"  # never turned into "?" by a write
    assert not notes(res, "altered") and w.sync().deltas.is_empty()
