"""How calsync reads exchangelib's SOAP replies: in 64 KiB chunks, and with the characters XML cannot carry kept.

Chunks: exchangelib parses every reply through ``response.iter_content()``, whose default chunk size in requests
is one byte; the parser then pulls the body byte by byte. A calendar view plus GetItem of 2,000 items took 4.6 s
against the sandbox this way and 2.0 s with 64 KiB chunks (``benchmarks/sandbox_exchange.py``).

Characters XML 1.0 cannot carry: EWS writes a control character of a subject or body (NUL, vertical tab, ...) into
its reply as a numeric character reference (``&#x1A;``, see ``sandbox/exchange/service.py``), which no XML parser
may accept. exchangelib parses with libxml2 in recover mode, and after the first such error libxml2 (2.14, as
pinned through lxml here) drops every predefined entity for the rest of the reply: one item holding a vertical
tab turned "R&D review" into "RD review" in every later item of the same GetItem batch, and calsync copied that
to Salesforce as an email-side edit. So before parsing, each such character (as a reference or raw) is rewritten
as a reference to a stand-in in Supplementary Private Use Area-A (U+F0000 + the code point for C0 controls,
U+F00FE/U+F00FF for U+FFFE/U+FFFF), which XML accepts, and ``restore_text`` turns the stand-ins back into the
characters the mailbox holds (``connectors.exchange.item_to_row`` does, for subjects and bodies). Nothing else in
the reply changes. Only replies to calsync's own sessions are rewritten (``mark_own``, a response hook the
connector's sessions carry): any other exchangelib user in the process sees exchangelib's own behaviour.
"""

from __future__ import annotations

import re
from typing import Iterator

from exchangelib.services.common import EWSService

CHUNK = 1 << 16

# a reference to, or a raw byte of, a character XML 1.0 cannot carry
_NOT_XML = re.compile(
    rb"&#(?:[xX]0*([0-8bcefBCEF]|1[0-9a-fA-F]|[fF]{3}[eEfF])|0*([0-8]|1[1-2]|1[4-9]|2[0-9]|3[01]|6553[45]));"
    rb"|[\x00-\x08\x0b\x0c\x0e-\x1f]"
)
# The bytes of C0 controls XML cannot carry: a chunk without them and without "&#" needs no rewriting. Checked with
# bytes.translate (C speed); a regular expression's character class scanned every reply at a third of the cost of
# parsing it.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])


def _may_need(data: bytes) -> bool:
    return b"&#" in data or len(data.translate(None, _CONTROL_BYTES)) != len(data)
_STAND_IN = 0xF0000
_STAND_INS = re.compile("[\U000F0000-\U000F001F\U000F00FE\U000F00FF]")
_LONGEST_REF = 16  # "&#x0000000001F;" and the like: a reference split across two chunks is held back


def _stand_in(match: re.Match) -> bytes:
    hex_digits, decimal = match.group(1), match.group(2)
    if hex_digits is not None:
        code = int(hex_digits, 16)
    elif decimal is not None:
        code = int(decimal)
    else:
        code = match.group(0)[0]
    return b"&#x%X;" % (_STAND_IN + (code if code < 0x20 else code - 0xFF00))


def keep_unparseable(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The reply's bytes with every character XML cannot carry rewritten as a reference to its stand-in."""
    tail = b""
    for chunk in chunks:
        data = tail + chunk if tail else chunk
        tail = b""
        amp = data.rfind(b"&", max(0, len(data) - _LONGEST_REF))
        if amp != -1 and b";" not in data[amp:]:
            data, tail = data[:amp], data[amp:]
        yield _NOT_XML.sub(_stand_in, data) if _may_need(data) else data
    if tail:
        yield _NOT_XML.sub(_stand_in, tail)


def restore_text(text: str | None) -> str | None:
    """``text`` with the stand-ins of ``keep_unparseable`` turned back into the characters the mailbox holds."""
    if not text or _STAND_INS.search(text) is None:
        return text
    return _STAND_INS.sub(lambda m: chr(ord(m.group()) - _STAND_IN + (0 if ord(m.group()) < _STAND_IN + 0x20 else 0xFF00)), text)


_OWN = "_calsync_keep_unparseable"


def mark_own(response, *args, **kwargs) -> None:  # a requests response hook
    """Mark a reply to one of calsync's sessions: its unparseable characters are kept (``keep_unparseable``)."""
    setattr(response, _OWN, True)


class _ChunkedResponse:
    """A response whose ``iter_content`` yields large chunks (XML-safe for calsync's own sessions); everything else
    passes through."""

    def __init__(self, response) -> None:  # a requests.Response
        self._response = response

    def iter_content(self, chunk_size: int | None = None):
        chunks = self._response.iter_content(chunk_size=CHUNK)
        return keep_unparseable(chunks) if getattr(self._response, _OWN, False) else chunks

    def __getattr__(self, name: str):
        return getattr(self._response, name)


def install() -> None:
    """Patch ``EWSService._get_soap_parts`` once (idempotent)."""
    if getattr(EWSService._get_soap_parts, "_calsync_chunked", False):
        return
    original = EWSService._get_soap_parts.__func__

    def _get_soap_parts(cls, response):
        return original(cls, _ChunkedResponse(response))

    _get_soap_parts._calsync_chunked = True  # type: ignore[attr-defined]
    EWSService._get_soap_parts = classmethod(_get_soap_parts)
