"""NTLM over HTTP (what production uses on premises: a service account + ApplicationImpersonation), driven
through unmodified exchangelib (requests_ntlm / pyspnego on the client side)."""

from __future__ import annotations

import base64
import struct
from datetime import datetime

import pytest
import requests
import spnego
from exchangelib import EWSDateTime, EWSTimeZone
from exchangelib.errors import ErrorAccessDenied, UnauthorizedError
from exchangelib.items import CalendarItem
from exchangelib.protocol import close_connections

from sandbox.exchange import ntlm

from .conftest_exchange import (  # noqa: F401
    ANN,
    ANN_PASSWORD,
    BASIC,
    BOB,
    DELEGATE,
    NTLM,
    UTC,
    _ex_server,
    connect,
    control,
    ex,
)

TZ = EWSTimeZone("UTC")
GET_FOLDER = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" '
    'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">'
    '<soap:Header><t:RequestServerVersion Version="Exchange2016"/></soap:Header><soap:Body>'
    '<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>'
    '<m:FolderIds><t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder>'
    "</soap:Body></soap:Envelope>"
).encode()


def ntlm_logons(ex, ok=True):
    return [log for log in ex.org.logons if log["scheme"] == "ntlm" and log["ok"] is ok]


# ---------------------------------------------------------------------------------------------- primitives
def test_md4_and_ntowfv2_match_the_published_vectors():
    # RFC 1320 appendix A.5
    assert ntlm.md4(b"").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"
    assert ntlm.md4(b"abc").hex() == "a448017aaf21d8525fc10ae87aa6729d"
    assert ntlm.md4(b"1234567890" * 8).hex() == "e33b4ddc9c38f2199c3e7b164fcc0536"
    # [MS-NLMP] 4.2.2.1.2 (NTOWFv1) and 4.2.4.1.1 (NTOWFv2) for User / Domain / Password:
    # https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/125f7a94-933e-4023-a146-a449e49bf774
    assert ntlm.nt_hash("Password").hex() == "a4f49c406510bdcab6824ee7c30fd852"
    assert ntlm.ntowf_v2("Password", "User", "Domain").hex() == "0c868a403bfd7a93a3001ef22ef02e3f"


# ---------------------------------------------------------------------------------------------- exchangelib
@pytest.mark.parametrize("username", ["svc-calsync@example.com", "EXAMPLE\\svc-calsync", "example.com\\svc-calsync"])
def test_service_account_over_ntlm_impersonates_reads_and_creates(ex, connect, username):
    ex.org.add_item(ANN, "seeded", datetime(2026, 12, 1, 9, tzinfo=UTC), datetime(2026, 12, 1, 10, tzinfo=UTC))
    account = connect(ANN, credentials=(username, ex.service_account[1]), auth_type=NTLM)
    view = list(account.calendar.view(EWSDateTime(2026, 12, 1, tzinfo=TZ), EWSDateTime(2026, 12, 2, tzinfo=TZ)))
    assert [i.subject for i in view] == ["seeded"]
    item = CalendarItem(account=account, folder=account.calendar, subject="created over NTLM",
                        start=EWSDateTime(2026, 12, 2, 9, tzinfo=TZ), end=EWSDateTime(2026, 12, 2, 10, tzinfo=TZ))
    item.save(send_meeting_invitations="SendToNone")
    assert [i["subject"] for i in ex.org.items(ANN)] == ["seeded", "created over NTLM"]
    # One handshake for the whole conversation: the connection stayed authenticated (keep-alive), and no
    # request fell back to Basic. The 401 legs of the handshake are not EWS calls.
    [logon] = ntlm_logons(ex)
    assert logon["account"] == "svc-calsync@example.com"
    assert [log for log in ex.org.logons if log["scheme"] == "basic"] == []
    assert ex.org.calls_by_operation["CreateItem"] == 1


def test_wrong_password_over_ntlm_is_unauthorized(ex, connect):
    account = connect(ANN, credentials=(ex.service_account[0], "not-the-password"), auth_type=NTLM)
    with pytest.raises(UnauthorizedError):
        account.calendar  # noqa: B018
    assert ntlm_logons(ex) == []
    assert [log["detail"] for log in ntlm_logons(ex, ok=False)] == ["wrong password"]
    assert ex.org.calls() == 0  # IIS turned it away before EWS


@pytest.mark.parametrize("username", ["OTHERDOMAIN\\svc-calsync", "nobody@example.com"])
def test_unknown_account_or_domain_over_ntlm_is_unauthorized(ex, connect, username):
    with pytest.raises(UnauthorizedError):
        connect(ANN, credentials=(username, ex.service_account[1]), auth_type=NTLM).calendar  # noqa: B018


def test_mailbox_owner_over_ntlm_with_delegate_access(ex, connect):
    own = connect(ANN, credentials=("EXAMPLE\\ann", ANN_PASSWORD), access_type=DELEGATE, auth_type=NTLM)
    assert own.calendar.name == "Calendar"
    with pytest.raises(ErrorAccessDenied):
        connect(BOB, credentials=("EXAMPLE\\ann", ANN_PASSWORD), access_type=DELEGATE, auth_type=NTLM).calendar  # noqa: B018


def test_authentication_is_per_connection(ex, connect):
    account = connect(ANN, auth_type=NTLM)
    for _ in range(3):
        list(account.calendar.all())
    assert len(ntlm_logons(ex)) == 1
    # Another TCP connection without credentials is not authenticated by the first one's handshake.
    s = requests.Session()
    s.trust_env = False
    r = s.post(ex.url, data=GET_FOLDER, headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=10)
    assert r.status_code == 401
    # Closing exchangelib's connections means a new handshake on the next call.
    close_connections()
    list(account.calendar.all())
    assert len(ntlm_logons(ex)) == 2


def test_basic_can_be_switched_off_leaving_ntlm(ex, connect):
    # Through the control API, as a test in another process would.
    assert control(ex, "POST", "settings", {"auth_methods": ["ntlm"]})["auth_methods"] == ["ntlm"]
    with pytest.raises(UnauthorizedError):
        connect(ANN, auth_type=BASIC).calendar  # noqa: B018
    close_connections()  # exchangelib caches the protocol (auth type included) per endpoint and credentials
    assert connect(ANN, auth_type=NTLM).calendar.name == "Calendar"
    s = requests.Session()
    s.trust_env = False
    r = s.post(ex.url, data=GET_FOLDER, auth=ex.service_account, headers={"Content-Type": "text/xml"}, timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "NTLM"


# ---------------------------------------------------------------------------------------------- raw handshake
def _leg(session, url, token: bytes | None):
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    if token is not None:
        headers["Authorization"] = "NTLM " + base64.b64encode(token).decode()
    return session.post(url, data=GET_FOLDER, headers=headers, timeout=10)


def _session():
    s = requests.Session()
    s.trust_env = False
    return s


def test_challenge_is_bound_to_its_connection_and_used_once(ex):
    user, password = ex.service_account
    # The CHALLENGE_MESSAGE: type 2, the nonce, target info with the domain names ([MS-NLMP] 2.2.1.2).
    client = spnego.client(user, password, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    first = _session()
    r1 = _leg(first, ex.url, client.step())
    assert r1.status_code == 401
    challenge = base64.b64decode(r1.headers["WWW-Authenticate"].split(" ", 1)[1])
    assert ntlm.message_type(challenge) == 2
    (flags,) = struct.unpack_from("<I", challenge, 20)
    assert flags & ntlm.NEGOTIATE_TARGET_INFO and flags & ntlm.NEGOTIATE_NTLM
    authenticate = client.step(challenge)
    # The answer sent on another connection does not count: that connection never got this challenge.
    assert _leg(_session(), ex.url, authenticate).status_code == 401
    # On its own connection it does; the connection then stays authenticated without a header...
    assert _leg(first, ex.url, authenticate).status_code == 200
    assert _leg(first, ex.url, None).status_code == 200
    # ...and replaying the same answer is refused: a challenge is good for one answer.
    assert _leg(first, ex.url, authenticate).status_code == 401


def test_mic_binds_the_three_messages():
    # pyspnego sends a MIC (MsvAvFlags 0x2) with key exchange; a changed byte anywhere in it fails.
    client = spnego.client("svc-calsync@example.com", "pw", protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    challenge = ntlm.build_challenge(client.step(), "EXAMPLE", "EXCH01", "example.com", "exch01.example.com")
    token = client.step(challenge.message)
    flags, _ = ntlm.parse_authenticate(token)
    assert flags & ntlm.NEGOTIATE_KEY_EXCH
    assert ntlm.verify_authenticate(token, challenge, lambda user, domain: "pw").user == "svc-calsync@example.com"
    tampered = bytearray(token)
    tampered[75] ^= 0x01  # inside the MIC
    with pytest.raises(ntlm.NtlmError, match="MIC"):
        ntlm.verify_authenticate(bytes(tampered), challenge, lambda user, domain: "pw")
    with pytest.raises(ntlm.NtlmError, match="wrong password"):
        ntlm.verify_authenticate(token, challenge, lambda user, domain: "other")
