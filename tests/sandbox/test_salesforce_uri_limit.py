"""Salesforce sandbox: a REST request's URI and headers together take at most 16,384 bytes, as in Salesforce
(414 URI Too Long, 431 Request Header Fields Too Large beyond), and such a refusal is not an API call."""

from __future__ import annotations

import pytest
from simple_salesforce.exceptions import SalesforceGeneralError

from .conftest_salesforce import sb, sf, sf_server  # noqa: F401


def _soql_of_length(n: int) -> str:
    head = "SELECT Id FROM Contact WHERE Email IN ('"
    return head + "a" * (n - len(head) - 2) + "')"


def test_a_uri_over_16384_bytes_is_414_and_a_long_uri_with_headers_over_it_is_431(sb, sf):
    base = len("/services/data/v59.0/query/?q=")
    calls = sb.calls()
    assert sf.query(_soql_of_length(12_000))["totalSize"] == 0  # well within: answered
    with pytest.raises(SalesforceGeneralError) as too_long:
        sf.query(_soql_of_length(16_385 - base))
    assert too_long.value.status == 414
    with pytest.raises(SalesforceGeneralError) as with_headers:
        sf.query(_soql_of_length(16_300 - base))  # the URI alone fits; with the headers it does not
    assert with_headers.value.status == 431
    assert sb.calls() == calls + 1
