"""Reading EWS replies that hold characters XML 1.0 cannot carry (connectors.exchange_fastparse)."""

from __future__ import annotations

import pytest
from exchangelib.util import to_xml

from connectors.exchange_fastparse import keep_unparseable, restore_text


def _parse(chunks: list[bytes]) -> list[str]:
    root = to_xml(b"".join(keep_unparseable(iter(chunks)))).getroot()
    return [restore_text(child.text) for child in root]


def test_plain_libxml2_recovery_drops_every_later_entity():
    # the hazard this module exists for (lxml 6 / libxml2 2.14): one bad reference, then no &amp; for the rest
    root = to_xml(b"<r><a>x&#xB;y</a><b>R&amp;D</b></r>").getroot()
    assert [c.text for c in root] == ["x\x0by", "RD"]


@pytest.mark.parametrize("ref,char", [
    ("&#x0;", "\x00"), ("&#xB;", "\x0b"), ("&#x0b;", "\x0b"), ("&#x1F;", "\x1f"), ("&#11;", "\x0b"), ("&#31;", "\x1f"),
    ("&#x000C;", "\x0c"), ("&#xFFFE;", "\ufffe"), ("&#65535;", "\uffff"),
])
def test_references_to_unparseable_characters_come_back_as_the_characters(ref, char):
    assert _parse([f"<r><a>a{ref}b</a><b>R&amp;D &lt;x&gt;</b></r>".encode()]) == [f"a{char}b", "R&D <x>"]


def test_raw_control_bytes_and_references_split_across_chunks():
    data = "<r><a>one\x01two&#x1A;three</a><b>&#xD;&#10;&#9;&amp;&#x41;</b></r>".encode()
    for cut in range(1, len(data)):
        assert _parse([data[:cut], data[cut:]]) == ["one\x01two\x1athree", "\r\n\t&A"], cut


def test_legal_references_and_other_text_pass_unchanged():
    data = "<r><a>&#xD;&#x9;&#xA;&#13; caf\u00e9 \U0001F600</a></r>".encode()
    assert b"".join(keep_unparseable(iter([data]))) == data
    assert restore_text("caf\u00e9") == "caf\u00e9" and restore_text(None) is None
