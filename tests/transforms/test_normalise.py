import polars as pl

from tests.transforms.builders import em, events, inv, sf, utc
from transforms.normalise import normalise


def test_c3_key_collapses_whitespace_keeps_case_and_separates_all_day():
    n = normalise(events(
        sf("a", "  Board \t  review "), em("b", "Board review"), em("c", "board review"),
        sf("d", "Day", start=utc(2025, 6, 20), hours=24, is_all_day=False),
        em("e", "Day", start=utc(2025, 6, 20), hours=24, is_all_day=True),
        sf("f", "   "),
    ))
    k = dict(zip(n["native_id"], n["key"]))
    assert k["a"] == k["b"] != k["c"]
    assert k["d"] != k["e"]
    assert k["f"] is None  # blank subject: no key, never pairs


def test_r1_content_hash_ignores_version_last_modified_and_invitee_order():
    a = sf("a", invitees=[inv("x@c.example", "accepted"), inv("y@c.example")])
    b = a | {"native_id": "b", "version": "v9", "last_modified": utc(2025, 6, 14),
             "invitees": [inv("y@c.example"), inv("x@c.example", "accepted"), inv(None, "accepted")]}
    c = a | {"native_id": "c", "invitees": [inv("x@c.example", "declined"), inv("y@c.example")]}
    d = a | {"native_id": "d", "description": "changed"}
    h = dict(zip(*normalise(events(a, b, c, d)).select("native_id", "content_hash").to_dict(as_series=False).values()))
    assert h["a"] == h["b"]
    assert h["a"] != h["c"] and h["a"] != h["d"]


def test_r9_normalise_keeps_stored_key_and_hash_of_snapshot_rows():
    snap = normalise(events(sf("a", "Secret", is_private=True)))
    stripped = snap.with_columns(pl.lit(None, dtype=pl.String).alias("subject"))
    again = normalise(stripped)
    assert again["key"].to_list() == snap["key"].to_list()
    assert again["content_hash"].to_list() == snap["content_hash"].to_list()


def test_c3_clean_subject_series_matches_the_regex_on_every_kind_of_whitespace():
    import random

    from transforms.normalise import clean_subject, clean_subject_series

    chars = [" ", "a", "\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2003", "\u200a", "\u200b",
             "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\x1c", "\ufeff"]
    rnd = random.Random(3)
    for clean_rows in (0, 50_000):  # most rows dirty (one pass over all), or few (only those rewritten)
        vals = ["".join(rnd.choice(chars) for _ in range(rnd.randint(0, 8))) for _ in range(5_000)]
        vals += [None, "", " lead", "trail ", "in  side", "ok"] + ["clean subject"] * clean_rows
        s = pl.Series("subject", vals)
        expected = s.to_frame().select(clean_subject(pl.col("subject"))).to_series()
        assert clean_subject_series(s).equals(expected)
