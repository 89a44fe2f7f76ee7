"""SOAP envelopes, response messages and faults in the shapes Exchange sends.

Response envelope (ServerVersionInfo header, m:/t: namespaces, one ResponseMessage per request item):
https://learn.microsoft.com/en-us/exchange/client-developer/web-service-reference/createitem-operation-calendar-item
https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxwscore/d7018e5e-a75a-4a2c-888f-c1c1ea779bf3
ErrorServerBusy as an HTTP 500 SOAP fault with BackOffMilliseconds in MessageXml:
https://learn.microsoft.com/en-us/exchange/client-developer/exchange-web-services/ews-throttling-in-exchange
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
M_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
T_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
E_NS = "http://schemas.microsoft.com/exchange/services/2006/errors"

# Exchange 2016 CU: what an on-premises 2016 server reports (15.1, schema V2017_07_11).
SERVER_VERSION = (
    '<h:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" '
    'MinorBuildNumber="6" Version="V2017_07_11" '
    'xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" '
    'xmlns="http://schemas.microsoft.com/exchange/services/2006/types" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>'
)

MESSAGE_TEXTS = {
    "ErrorItemNotFound": "The specified object was not found in the store.",
    "ErrorIrresolvableConflict": "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorNonExistentMailbox": "The SMTP address has no mailbox associated with it.",
    "ErrorImpersonateUserDenied": "The account does not have permission to impersonate the requested user.",
    "ErrorServerBusy": "The server cannot service this request right now. Try again later.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
    "ErrorCalendarEndDateIsEarlierThanStartDate": "EndDate is earlier than StartDate",
    "ErrorInvalidOperation": "The operation is not valid.",
}


def text_for(code: str) -> str:
    return MESSAGE_TEXTS.get(code, code)


def envelope(body_xml: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP_NS}">'
        f"<s:Header>{SERVER_VERSION}</s:Header>"
        f'<s:Body xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f"{body_xml}</s:Body></s:Envelope>"
    ).encode("utf-8")


def response(operation: str, messages: list[str]) -> bytes:
    return envelope(
        f'<m:{operation}Response xmlns:m="{M_NS}" xmlns:t="{T_NS}">'
        f"<m:ResponseMessages>{''.join(messages)}</m:ResponseMessages></m:{operation}Response>"
    )


def success(operation: str, inner: str = "") -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Success">'
        f"<m:ResponseCode>NoError</m:ResponseCode>{inner}</m:{operation}ResponseMessage>"
    )


def error(operation: str, code: str, text: str | None = None, message_xml: str | None = None, inner: str = "") -> str:
    xml = f"<m:MessageXml>{message_xml}</m:MessageXml>" if message_xml else ""
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(text or text_for(code))}</m:MessageText>"
        f"<m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
        f"{xml}{inner}</m:{operation}ResponseMessage>"
    )


def fault(code: str, text: str | None = None, message_xml: str | None = None, faultcode: str | None = None) -> bytes:
    """A SOAP 1.1 fault as EWS sends it (HTTP 500): faultcode in the types namespace, detail with
    e:ResponseCode, e:Message and t:MessageXml."""
    text = text or text_for(code)
    fc = faultcode or f"a:{code}"
    xml = f'<t:MessageXml xmlns:t="{T_NS}">{message_xml}</t:MessageXml>' if message_xml else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{T_NS}">{escape(fc)}</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(text)}</faultstring>'
        f"<detail>"
        f'<e:ResponseCode xmlns:e="{E_NS}">{code}</e:ResponseCode>'
        f'<e:Message xmlns:e="{E_NS}">{escape(text)}</e:Message>'
        f"{xml}</detail></s:Fault></s:Body></s:Envelope>"
    ).encode("utf-8")


def server_busy(backoff_ms: int) -> bytes:
    return fault("ErrorServerBusy", message_xml=f'<t:Value Name="BackOffMilliseconds">{int(backoff_ms)}</t:Value>')


def client_fault(text: str) -> bytes:
    """Malformed request: a plain soap:Client fault (what the EWS schema validator answers)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{T_NS}">a:ErrorSchemaValidation</faultcode>'
        f'<faultstring xml:lang="en-US">{escape(text)}</faultstring>'
        f'<detail><e:ResponseCode xmlns:e="{E_NS}">ErrorSchemaValidation</e:ResponseCode>'
        f'<e:Message xmlns:e="{E_NS}">{escape(text)}</e:Message></detail>'
        f"</s:Fault></s:Body></s:Envelope>"
    ).encode("utf-8")


def attr(value: str) -> str:
    return quoteattr(value)
