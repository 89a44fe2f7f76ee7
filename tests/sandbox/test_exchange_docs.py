"""The sandbox's SOAP responses held against response bodies published by Microsoft.

The bodies below are quoted verbatim from Microsoft's EWS reference. A response "matches" when every
element of the documented body appears at the same path, in the same namespace, with the same attributes
(values of ids, change keys and server build numbers naturally differ), and the status values agree.
"""

from __future__ import annotations

from lxml import etree

from .conftest_exchange import ANN, ANN_PASSWORD, _ex_server, connect, ex, raw_soap  # noqa: F401

# https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/createitem-operation-calendar-item
# ("CreateItem (Calendar Item) Request Example", body only)
DOC_CREATEITEM_REQUEST_BODY = """
    <CreateItem xmlns="http://schemas.microsoft.com/exchange/services/2006/messages"
                xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
                SendMeetingInvitations="SendToAllAndSaveCopy" >
      <SavedItemFolderId>
        <t:DistinguishedFolderId Id="calendar"/>
      </SavedItemFolderId>
      <Items>
        <t:CalendarItem xmlns="http://schemas.microsoft.com/exchange/services/2006/types">
          <Subject>Planning Meeting</Subject>
          <Body BodyType="Text">Plan the agenda for next week's meeting.</Body>
          <ReminderIsSet>true</ReminderIsSet>
          <ReminderMinutesBeforeStart>60</ReminderMinutesBeforeStart>
          <Start>2006-11-02T14:00:00</Start>
          <End>2006-11-02T15:00:00</End>
          <IsAllDayEvent>false</IsAllDayEvent>
          <LegacyFreeBusyStatus>Busy</LegacyFreeBusyStatus>
          <Location>Conference Room 721</Location>
          <RequiredAttendees>
            <Attendee>
              <Mailbox>
                <EmailAddress>User1@example.com</EmailAddress>
              </Mailbox>
            </Attendee>
            <Attendee>
              <Mailbox>
                <EmailAddress>User2@example.com</EmailAddress>
              </Mailbox>
            </Attendee>
          </RequiredAttendees>
        </t:CalendarItem>
      </Items>
    </CreateItem>"""

# Same page, "Successful CreateItem (Calendar Item) Response".
DOC_CREATEITEM_RESPONSE = """<?xml version="1.0" encoding="utf-8" ?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
               xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
               xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <soap:Header>
    <t:ServerVersionInfo MajorVersion="8" MinorVersion="0" MajorBuildNumber="685" MinorBuildNumber="8"
                         xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" />
  </soap:Header>
  <soap:Body>
    <CreateItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
                        xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
                        xmlns="http://schemas.microsoft.com/exchange/services/2006/messages">
      <m:ResponseMessages>
        <m:CreateItemResponseMessage ResponseClass="Success">
          <m:ResponseCode>NoError</m:ResponseCode>
          <m:Items>
            <t:CalendarItem>
              <t:ItemId Id="AAAlAFV" ChangeKey="DwAAABYA" />
            </t:CalendarItem>
          </m:Items>
        </m:CreateItemResponseMessage>
      </m:ResponseMessages>
    </CreateItemResponse>
  </soap:Body>
</soap:Envelope>"""

# https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/deleteitem-operation
# ("Successful DeleteItem Response" and "DeleteItem Error Response")
DOC_DELETEITEM_SUCCESS = """<?xml version="1.0" encoding="utf-8" ?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
               xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
               xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <soap:Header>
    <t:ServerVersionInfo MajorVersion="8" MinorVersion="0" MajorBuildNumber="595" MinorBuildNumber="0"
                         xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" />
  </soap:Header>
  <soap:Body>
    <DeleteItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
                        xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
                        xmlns="http://schemas.microsoft.com/exchange/services/2006/messages">
      <m:ResponseMessages>
        <m:DeleteItemResponseMessage ResponseClass="Success">
          <m:ResponseCode>NoError</m:ResponseCode>
        </m:DeleteItemResponseMessage>
      </m:ResponseMessages>
    </DeleteItemResponse>
  </soap:Body>
</soap:Envelope>"""

DOC_DELETEITEM_ERROR = """<?xml version="1.0" encoding="utf-8" ?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
               xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
               xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <soap:Header>
    <t:ServerVersionInfo MajorVersion="8" MinorVersion="0" MajorBuildNumber="595" MinorBuildNumber="0"
                         xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" />
  </soap:Header>
  <soap:Body>
    <DeleteItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
                        xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
                        xmlns="http://schemas.microsoft.com/exchange/services/2006/messages">
      <m:ResponseMessages>
        <m:DeleteItemResponseMessage ResponseClass="Error">
          <m:MessageText>The specified object was not found in the store.</m:MessageText>
          <m:ResponseCode>ErrorItemNotFound</m:ResponseCode>
          <m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>
        </m:DeleteItemResponseMessage>
      </m:ResponseMessages>
    </DeleteItemResponse>
  </soap:Body>
</soap:Envelope>"""

# The throttling reply. Microsoft documents the rule (HTTP 500, ErrorServerBusy, BackOffMilliseconds hint):
# https://learn.microsoft.com/en-us/exchange/client-developer/exchange-web-services/ews-throttling-in-exchange
# (Table 4) but prints no body; this one is a real server's reply as quoted in exchangelib's own test suite.
REAL_SERVER_BUSY = """<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
  <s:Body>
    <s:Fault>
      <faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorServerBusy</faultcode>
      <faultstring xml:lang="en-US">The server cannot service this request right now. Try again later.</faultstring>
      <detail>
        <e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">ErrorServerBusy</e:ResponseCode>
        <e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">The server cannot service this request right now. Try again later.</e:Message>
        <t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
          <t:Value Name="BackOffMilliseconds">297749</t:Value>
        </t:MessageXml>
      </detail>
    </s:Fault>
  </s:Body>
</s:Envelope>"""

SOAP_BODY = "{http://schemas.xmlsoap.org/soap/envelope/}Body"
STATUS_TAGS = {"ResponseCode", "faultcode", "faultstring", "Message", "MessageText", "DescriptiveLinkKey"}


def skeleton(xml: bytes | str) -> set[tuple]:
    """(path of qualified tags under soap:Body, attribute names) for every element; plus the status values."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    body = root.find(SOAP_BODY)
    out = set()

    def walk(elem, path):
        if not isinstance(elem.tag, str):
            return
        here = path + (elem.tag,)
        out.add((here, tuple(sorted(a for a in elem.attrib if a not in ("Id", "ChangeKey")) + [
            a for a in elem.attrib if a in ("Id", "ChangeKey")])))
        if elem.get("ResponseClass"):
            out.add((here, "ResponseClass", elem.get("ResponseClass")))
        if etree.QName(elem).localname in STATUS_TAGS:
            out.add((here, "text", (elem.text or "").strip()))
        for child in elem:
            walk(child, here)

    walk(body, ())
    return out


def impersonate(mailbox: str) -> str:
    return (f"<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{mailbox}</t:PrimarySmtpAddress>"
            "</t:ConnectingSID></t:ExchangeImpersonation>")


def test_create_item_calendar_response_matches_the_documented_body(ex):
    r = raw_soap(ex, DOC_CREATEITEM_REQUEST_BODY, credentials=(ANN, ANN_PASSWORD))
    assert r.status_code == 200
    assert skeleton(DOC_CREATEITEM_RESPONSE) <= skeleton(r.content)
    # The documented request (no time zone on a naive time: UTC) made a meeting and sent two requests.
    [item] = ex.org.items(ANN)
    assert (item["subject"], item["start"], item["location"]) == ("Planning Meeting", "2006-11-02T14:00:00Z", "Conference Room 721")
    assert {i["recipient"] for i in ex.org.invitations()} == {"user1@example.com", "user2@example.com"}
    header = etree.fromstring(r.content).find("{http://schemas.xmlsoap.org/soap/envelope/}Header")
    info = header.find("{http://schemas.microsoft.com/exchange/services/2006/types}ServerVersionInfo")
    assert info.get("MajorVersion") == "15" and info.get("MinorVersion") == "1"


def test_delete_item_responses_match_the_documented_bodies(ex):
    r = raw_soap(ex, DOC_CREATEITEM_REQUEST_BODY, credentials=(ANN, ANN_PASSWORD))
    item_id = etree.fromstring(r.content).find(".//{*}ItemId").get("Id")
    # The documented request, plus SendMeetingCancellations (required for calendar items).
    delete = ('<DeleteItem DeleteType="HardDelete" SendMeetingCancellations="SendToNone" '
              'xmlns="http://schemas.microsoft.com/exchange/services/2006/messages">'
              f'<ItemIds><t:ItemId Id="{item_id}"/></ItemIds></DeleteItem>')
    first = raw_soap(ex, delete, headers=impersonate(ANN))
    assert skeleton(DOC_DELETEITEM_SUCCESS) <= skeleton(first.content)
    again = raw_soap(ex, delete, headers=impersonate(ANN))
    assert skeleton(DOC_DELETEITEM_ERROR) <= skeleton(again.content)


def test_server_busy_fault_matches_a_real_exchange_reply(ex):
    ex.faults.add("throttle", route="GetFolder", backoff_ms=297749)
    r = raw_soap(ex, '<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>'
                     '<m:FolderIds><t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder>')
    assert r.status_code == 500
    ours = skeleton(r.content)
    theirs = skeleton(REAL_SERVER_BUSY)
    assert theirs <= ours, theirs - ours
    assert etree.fromstring(r.content).find(".//{*}Value").text == "297749"
