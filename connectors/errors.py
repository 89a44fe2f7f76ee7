"""Errors grouped by what happens next (the caller decides by the class, never by parsing a message).

- ``RetriableError``: throttling, 5xx, timeouts, a dropped connection. Prefect retries the task;
  a run that still fails can be replayed.
- ``FatalError``: bad credentials, a missing permission, a broken config. The run stops with the
  message; retrying will not help until a person acts.
- Per-event data errors are not exceptions: the loader records them on the delta's outcome and goes on.

Messages name the thing and what to do, and never carry a secret.
"""

from __future__ import annotations


class CalsyncError(Exception):
    """Base of calsync's own errors."""


class RetriableError(CalsyncError):
    """A passing fault: throttling, a 5xx, a timeout. ``back_off`` is seconds to wait, if the server said."""

    def __init__(self, message: str, back_off: float | None = None) -> None:
        super().__init__(message)
        self.back_off = back_off


class FatalError(CalsyncError):
    """The run cannot go on until a person acts (credentials, permissions, configuration)."""


class ApiLimitExceeded(FatalError):
    """Salesforce's daily API allocation is used up: stop cleanly, replay once calls are available."""


class MassDeletionRefused(CalsyncError):
    """A user's run would delete too large a share of their paired events (C9)."""


# --------------------------------------------------------------------------- connection failures

def _chain(exc: BaseException | None):
    """``exc`` and every exception it was raised from or during (``raise ... from None`` included)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _url_of(exc: BaseException, fallback: str | None) -> str | None:
    """The URL a requests/urllib3 error was about (without its query), else ``fallback``."""
    for e in _chain(exc):
        request = getattr(e, "request", None)
        url = getattr(request, "url", None)
        if isinstance(url, str) and url:
            return url.split("?", 1)[0]
    return fallback


def connection_problem(exc: BaseException, service: str, url: str | None = None,
                       setting: str = "the URL in the config") -> CalsyncError | None:
    """What went wrong reaching ``service``, told apart, with the URL and what to check; None when ``exc`` is
    no connection failure. A certificate that fails verification is fatal (a person must act); a refused
    connection, an unreachable or unresolvable host and a dropped connection are retriable. Never carries a
    secret: only the exception types and the host are read."""
    import errno
    import socket
    import ssl

    chain = list(_chain(exc))
    url = _url_of(exc, url)
    where = f"{service} at {url}" if url else service
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e):
            reason = getattr(e, "verify_message", None) or "certificate verify failed"
            err = FatalError(
                f"the TLS certificate of {where} failed verification ({reason}): check that {setting} names the"
                " host the certificate is for, and that the CA which issued it is trusted (the system's store, or"
                " the section's ca_file where it has one)")
            err.kind = "certificate"  # type: ignore[attr-defined]
            return err
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            err = RetriableError(
                f"{where} refused the connection (nothing listens there): check that the server is running and"
                f" that {setting} has the right host and port")
            err.kind = "refused"  # type: ignore[attr-defined]
            return err
    for e in chain:
        name = type(e).__name__
        if isinstance(e, socket.gaierror) or name == "NameResolutionError":
            err = RetriableError(
                f"{where} is unreachable: its host name does not resolve (DNS): check the host in {setting}"
                " and this machine's DNS")
            err.kind = "unreachable"  # type: ignore[attr-defined]
            return err
        if name in ("ConnectTimeout", "ConnectTimeoutError") or getattr(e, "errno", None) in (
                errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT):
            err = RetriableError(
                f"{where} is unreachable (no route, or connecting timed out): check the network, any firewall or"
                f" proxy on the way, and the host in {setting}")
            err.kind = "unreachable"  # type: ignore[attr-defined]
            return err
    for e in chain:
        if type(e).__name__ in ("ReadTimeout", "ReadTimeoutError"):
            err = RetriableError(f"{where} did not answer in time (the connection was open, the reply never came)")
            err.kind = "timeout"  # type: ignore[attr-defined]
            return err
        if isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) or type(e).__name__ in (
                "RemoteDisconnected", "ProtocolError", "ChunkedEncodingError"):
            err = RetriableError(f"the connection to {where} dropped before the reply came back ({type(e).__name__})")
            err.kind = "dropped"  # type: ignore[attr-defined]
            return err
    return None
