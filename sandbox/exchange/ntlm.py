"""The server side of NTLM (NTLMv2 only) over HTTP, as IIS does it in front of on-premises EWS.

Standard library only. OpenSSL 3 drops MD4 from ``hashlib``, so MD4 (RFC 1320) and RC4 are written out
here; HMAC-MD5 comes from ``hmac``.

The handshake ([MS-NLMP] 1.3.1.1, connection-oriented; HTTP carries the messages base64-encoded in
``Authorization: NTLM ...`` / ``WWW-Authenticate: NTLM ...``):
https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/1fbf5c3b-04c1-4591-a4be-9dc232c4744b

1. client -> NEGOTIATE_MESSAGE (type 1)
2. server -> 401 with CHALLENGE_MESSAGE (type 2): negotiated flags, an 8-byte nonce, target info AV pairs
   https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/801a4681-8809-4be9-ab0d-61dcfe762786
   https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/81d15e3e-3ac3-41f0-920d-846149f3a814
3. client -> AUTHENTICATE_MESSAGE (type 3) with the NTLMv2 response; the server checks it
   https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/033d32cc-88f9-4483-9bf2-b273055038ce

The connection then stays authenticated (HTTP keep-alive); a new connection starts over.

NTLMv2 ([MS-NLMP] 3.3.2,
https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/5e550938-91d4-459f-b67d-75d70009e3f3):

    ResponseKeyNT  = NTOWFv2 = HMAC_MD5(MD4(UNICODE(Passwd)), UNICODE(Uppercase(User) + UserDom))
    NTProofStr     = HMAC_MD5(ResponseKeyNT, ServerChallenge + temp)      # temp: the client's blob
    NtChallengeResponse = NTProofStr + temp                               # NTLMv2_RESPONSE, 2.2.2.8
    SessionBaseKey = HMAC_MD5(ResponseKeyNT, NTProofStr)  (= KeyExchangeKey for NTLMv2)
    ExportedSessionKey = RC4K(KeyExchangeKey, EncryptedRandomSessionKey) if KEY_EXCH else KeyExchangeKey
    MIC = HMAC_MD5(ExportedSessionKey, NEGOTIATE + CHALLENGE + AUTHENTICATE with MIC zeroed)   (3.1.5.1.2)

NTLMv2_RESPONSE: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-nlmp/d43e2224-6fc3-449d-9f37-b90b55a29c80
"""

from __future__ import annotations

import hmac
import secrets
import struct
import time
from dataclasses import dataclass

SIGNATURE = b"NTLMSSP\x00"

# NegotiateFlags ([MS-NLMP] 2.2.2.5)
NEGOTIATE_UNICODE = 0x00000001
NEGOTIATE_OEM = 0x00000002
REQUEST_TARGET = 0x00000004
NEGOTIATE_SIGN = 0x00000010
NEGOTIATE_SEAL = 0x00000020
NEGOTIATE_LM_KEY = 0x00000080
NEGOTIATE_NTLM = 0x00000200
NEGOTIATE_ANONYMOUS = 0x00000800
NEGOTIATE_ALWAYS_SIGN = 0x00008000
TARGET_TYPE_DOMAIN = 0x00010000
NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
NEGOTIATE_TARGET_INFO = 0x00800000
NEGOTIATE_VERSION = 0x02000000
NEGOTIATE_128 = 0x20000000
NEGOTIATE_KEY_EXCH = 0x40000000
NEGOTIATE_56 = 0x80000000

# AV pair ids ([MS-NLMP] 2.2.2.1)
AV_EOL, AV_NB_COMPUTER, AV_NB_DOMAIN, AV_DNS_COMPUTER, AV_DNS_DOMAIN, AV_DNS_TREE = 0, 1, 2, 3, 4, 5
AV_FLAGS, AV_TIMESTAMP = 6, 7
AV_FLAG_MIC_PRESENT = 0x00000002

# Windows Server 2016 (10.0 build 14393), NTLM revision 15: what an Exchange 2016 host answers with.
SERVER_VERSION = struct.pack("<BBHxxxB", 10, 0, 14393, 15)
# FILETIME epoch (1601-01-01) to Unix epoch, in 100 ns ticks.
_FILETIME_UNIX = 116444736000000000


class NtlmError(Exception):
    """A malformed or failed NTLM message (the server answers 401)."""


# ====================================================================== primitives
def _rol(x: int, n: int) -> int:
    x &= 0xFFFFFFFF
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


def md4(data: bytes) -> bytes:
    """MD4 (RFC 1320), pure python."""
    msg = bytearray(data)
    bit_len = (len(data) * 8) & 0xFFFFFFFFFFFFFFFF
    msg.append(0x80)
    while len(msg) % 64 != 56:
        msg.append(0)
    msg += struct.pack("<Q", bit_len)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        aa, bb, cc, dd = a, b, c, d
        # round 1: F(x,y,z) = (x & y) | (~x & z)
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            f = (b & c) | (~b & d)
            a, b, c, d = d, _rol(a + f + x[k], s), b, c
        # round 2: G(x,y,z) = (x & y) | (x & z) | (y & z), constant 0x5A827999
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            g = (b & c) | (b & d) | (c & d)
            a, b, c, d = d, _rol(a + g + x[k] + 0x5A827999, s), b, c
        # round 3: H(x,y,z) = x ^ y ^ z, constant 0x6ED9EBA1
        order = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)
        for i in range(16):
            k, s = order[i], (3, 9, 11, 15)[i % 4]
            h = b ^ c ^ d
            a, b, c, d = d, _rol(a + h + x[k] + 0x6ED9EBA1, s), b, c
        a = (a + aa) & 0xFFFFFFFF
        b = (b + bb) & 0xFFFFFFFF
        c = (c + cc) & 0xFFFFFFFF
        d = (d + dd) & 0xFFFFFFFF
    return struct.pack("<4I", a, b, c, d)


def rc4(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) & 0xFF])
    return bytes(out)


def hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, "md5").digest()


def nt_hash(password: str) -> bytes:
    """NTOWFv1: MD4(UNICODE(Passwd))."""
    return md4(password.encode("utf-16-le"))


def ntowf_v2(password: str, user: str, domain: str) -> bytes:
    """NTOWFv2 ([MS-NLMP] 3.3.2): HMAC_MD5(MD4(UNICODE(Passwd)), UNICODE(Uppercase(User) + UserDom))."""
    return hmac_md5(nt_hash(password), (user.upper() + domain).encode("utf-16-le"))


# ====================================================================== messages
def message_type(token: bytes) -> int:
    if len(token) < 12 or token[:8] != SIGNATURE:
        raise NtlmError("not an NTLMSSP message")
    return struct.unpack_from("<I", token, 8)[0]


def _field(token: bytes, offset: int) -> bytes:
    """A (Len, MaxLen, BufferOffset) field's bytes from the payload."""
    if offset + 8 > len(token):
        raise NtlmError("truncated message")
    length, _max, buf = struct.unpack_from("<HHI", token, offset)
    if length == 0:
        return b""
    if buf + length > len(token):
        raise NtlmError("field points outside the message")
    return token[buf:buf + length]


def av_pairs(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 4 <= len(data):
        av_id, av_len = struct.unpack_from("<HH", data, pos)
        pos += 4
        if av_id == AV_EOL:
            return out
        out.append((av_id, data[pos:pos + av_len]))
        pos += av_len
    raise NtlmError("AV pair list without MsvAvEOL")


def _av(av_id: int, value: bytes) -> bytes:
    return struct.pack("<HH", av_id, len(value)) + value


def filetime_now() -> bytes:
    return struct.pack("<Q", int(time.time() * 10_000_000) + _FILETIME_UNIX)


@dataclass
class Challenge:
    """What the server remembers between its CHALLENGE_MESSAGE and the client's AUTHENTICATE_MESSAGE."""

    negotiate: bytes
    message: bytes
    server_challenge: bytes
    flags: int


def build_challenge(negotiate: bytes, nb_domain: str, nb_computer: str, dns_domain: str, dns_computer: str) -> Challenge:
    """Answer a NEGOTIATE_MESSAGE ([MS-NLMP] 3.2.5.1.1): mirror the client's flags we support, add a fresh
    nonce and the target info (names + MsvAvTimestamp, which makes NTLMv2 clients send a MIC)."""
    if message_type(negotiate) != 1 or len(negotiate) < 16:
        raise NtlmError("expected a NEGOTIATE_MESSAGE")
    client = struct.unpack_from("<I", negotiate, 12)[0]
    flags = REQUEST_TARGET | NEGOTIATE_NTLM | TARGET_TYPE_DOMAIN | NEGOTIATE_TARGET_INFO | NEGOTIATE_VERSION
    flags |= NEGOTIATE_UNICODE if client & NEGOTIATE_UNICODE else NEGOTIATE_OEM
    for bit in (NEGOTIATE_SIGN, NEGOTIATE_SEAL, NEGOTIATE_ALWAYS_SIGN, NEGOTIATE_EXTENDED_SESSIONSECURITY,
                NEGOTIATE_128, NEGOTIATE_56, NEGOTIATE_KEY_EXCH):
        flags |= client & bit
    if flags & NEGOTIATE_EXTENDED_SESSIONSECURITY:
        flags &= ~NEGOTIATE_LM_KEY
    enc = "utf-16-le" if flags & NEGOTIATE_UNICODE else "ascii"
    target_name = nb_domain.encode(enc)
    target_info = b"".join((
        _av(AV_NB_DOMAIN, nb_domain.encode("utf-16-le")),
        _av(AV_NB_COMPUTER, nb_computer.encode("utf-16-le")),
        _av(AV_DNS_DOMAIN, dns_domain.encode("utf-16-le")),
        _av(AV_DNS_COMPUTER, dns_computer.encode("utf-16-le")),
        _av(AV_DNS_TREE, dns_domain.encode("utf-16-le")),
        _av(AV_TIMESTAMP, filetime_now()),
        _av(AV_EOL, b""),
    ))
    server_challenge = secrets.token_bytes(8)
    header_len = 56
    message = (
        SIGNATURE + struct.pack("<I", 2)
        + struct.pack("<HHI", len(target_name), len(target_name), header_len)
        + struct.pack("<I", flags) + server_challenge + b"\x00" * 8
        + struct.pack("<HHI", len(target_info), len(target_info), header_len + len(target_name))
        + SERVER_VERSION + target_name + target_info
    )
    return Challenge(negotiate, message, server_challenge, flags)


@dataclass
class Authenticated:
    user: str  # as the client wrote it
    domain: str  # as the client wrote it (may be empty, e.g. for user@domain names)
    workstation: str


def parse_authenticate(token: bytes) -> tuple[int, dict]:
    if message_type(token) != 3 or len(token) < 64:
        raise NtlmError("expected an AUTHENTICATE_MESSAGE")
    flags = struct.unpack_from("<I", token, 60)[0]
    enc = "utf-16-le" if flags & NEGOTIATE_UNICODE else "ascii"
    try:
        fields = {
            "lm": _field(token, 12),
            "nt": _field(token, 20),
            "domain": _field(token, 28).decode(enc),
            "user": _field(token, 36).decode(enc),
            "workstation": _field(token, 44).decode(enc),
            "session_key": _field(token, 52),
        }
    except UnicodeDecodeError as e:
        raise NtlmError(f"bad string in AUTHENTICATE_MESSAGE: {e}") from None
    return flags, fields


def verify_authenticate(token: bytes, challenge: Challenge, password_for) -> Authenticated:
    """Check an AUTHENTICATE_MESSAGE against ``challenge`` ([MS-NLMP] 3.2.5.1.2, NTLMv2 only).

    ``password_for(user, domain)`` returns the account's password or None. Raises NtlmError on any failure.
    """
    flags, f = parse_authenticate(token)
    nt = f["nt"]
    if flags & NEGOTIATE_ANONYMOUS or not f["user"]:
        raise NtlmError("anonymous logons are refused")
    if len(nt) <= 24:
        # 24 bytes is an NTLMv1 response: refused, as with LmCompatibilityLevel 5 on the domain controllers.
        raise NtlmError("NTLMv1 responses are refused (NTLMv2 only)")
    password = password_for(f["user"], f["domain"])
    if password is None:
        raise NtlmError("unknown account")
    nt_proof, temp = nt[:16], nt[16:]
    if len(temp) < 28 or temp[0] != 1 or temp[1] != 1:
        raise NtlmError("malformed NTLMv2_CLIENT_CHALLENGE")
    key = ntowf_v2(password, f["user"], f["domain"])
    expected = hmac_md5(key, challenge.server_challenge + temp)
    if not hmac.compare_digest(expected, nt_proof):
        raise NtlmError("wrong password")
    # MIC ([MS-NLMP] 3.2.5.1.2): present when the client's AV pairs carry MsvAvFlags 0x2.
    client_avs = dict(av_pairs(temp[28:]))
    av_flags = struct.unpack("<I", client_avs[AV_FLAGS])[0] if len(client_avs.get(AV_FLAGS, b"")) == 4 else 0
    if av_flags & AV_FLAG_MIC_PRESENT:
        if len(token) < 88:
            raise NtlmError("MIC missing")
        base_key = hmac_md5(key, nt_proof)  # SessionBaseKey = KeyExchangeKey for NTLMv2
        exported = rc4(base_key, f["session_key"]) if flags & NEGOTIATE_KEY_EXCH and f["session_key"] else base_key
        zeroed = token[:72] + b"\x00" * 16 + token[88:]
        mic = hmac_md5(exported, challenge.negotiate + challenge.message + zeroed)
        if not hmac.compare_digest(mic, token[72:88]):
            raise NtlmError("MIC check failed")
    return Authenticated(f["user"], f["domain"], f["workstation"])
