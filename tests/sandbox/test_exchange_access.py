"""Authentication, impersonation and mailbox access, driven through exchangelib."""

from __future__ import annotations

from datetime import datetime

import pytest
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorImpersonateUserDenied,
    ErrorNonExistentMailbox,
    UnauthorizedError,
)

from .conftest_exchange import ANN, ANN_PASSWORD, BOB, DELEGATE, UTC, _ex_server, connect, ex, raw_soap  # noqa: F401


def test_service_account_impersonates_and_reads_calendar_folder(ex, connect):
    account = connect(ANN)
    folder = account.calendar
    assert folder.name == "Calendar"
    assert folder.folder_class == "IPF.Appointment"
    assert ex.org.calls_by_operation["GetFolder"] >= 1


def test_wrong_password_is_http_401(ex, connect):
    account = connect(ANN, credentials=(ex.service_account[0], "wrong"))
    with pytest.raises(UnauthorizedError):
        account.calendar  # noqa: B018
    r = raw_soap(ex, '<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>'
                     '<m:FolderIds><t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder>',
                 credentials=("svc-calsync@example.com", "nope"))
    assert r.status_code == 401
    # IIS offers every scheme it accepts, one WWW-Authenticate header each (requests joins them with ", ").
    assert r.headers["WWW-Authenticate"].split(", ")[0] == "NTLM"
    assert r.headers["WWW-Authenticate"].split(", ")[1].startswith("Basic realm=")


def test_impersonation_without_the_role_is_denied(ex, connect):
    ex.org.revoke_impersonation(ex.service_account[0])
    with pytest.raises(ErrorImpersonateUserDenied):
        connect(ANN).calendar  # noqa: B018
    ex.org.grant_impersonation(ex.service_account[0])


def test_unknown_mailbox_is_error_non_existent_mailbox(ex, connect):
    with pytest.raises(ErrorNonExistentMailbox):
        connect("nobody@example.com").calendar  # noqa: B018


def test_mailbox_owner_logs_in_as_themself_with_delegate_access(ex, connect):
    ex.org.add_item(ANN, "own", datetime(2026, 12, 1, 9, tzinfo=UTC), datetime(2026, 12, 1, 10, tzinfo=UTC))
    own = connect(ANN, credentials=(ANN, ANN_PASSWORD), access_type=DELEGATE)
    assert [i.subject for i in own.calendar.all()] == ["own"]
    # ...but may not open another user's calendar, and has no impersonation right.
    with pytest.raises(ErrorAccessDenied):
        connect(BOB, credentials=(ANN, ANN_PASSWORD), access_type=DELEGATE).calendar  # noqa: B018
    with pytest.raises(ErrorImpersonateUserDenied):
        connect(BOB, credentials=(ANN, ANN_PASSWORD)).calendar  # noqa: B018


def test_granting_impersonation_to_another_account(ex, connect):
    ex.org.grant_impersonation(ANN)
    assert connect(BOB, credentials=(ANN, ANN_PASSWORD)).calendar.name == "Calendar"
