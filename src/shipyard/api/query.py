"""AWS's query protocol, as STS and IAM speak it: a form body in, an XML document out.

A request is a form-encoded POST (``Action=GetRole&Version=2010-05-08&RoleName=x``; list
members flattened as ``ActionNames.member.1=...``). An answer is
``<{Action}Response xmlns="{namespace}"><{Action}Result>...</{Action}Result>
<ResponseMetadata><RequestId>...</RequestId></ResponseMetadata></{Action}Response>``; an error
is ``ErrorResponse/Error/{Type,Code,Message}`` + ``RequestId``, the shape botocore's query
parser reads (``Type`` is ``Sender`` for 4xx, else ``Receiver``). Each service has its own
namespace: ``https://sts.amazonaws.com/doc/2011-06-15/``, ``https://iam.amazonaws.com/doc/2010-05-08/``.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

__all__ = ["AUTH_CODES", "error_document", "members", "parse_body", "response_document"]

#: The authentication failures of the JSON protocols as query services name them (what
#: STS and IAM answer a wrong secret, an unknown key, an unsigned or half-signed request).
AUTH_CODES = {
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "UnrecognizedClientException": "InvalidClientTokenId",
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
    "IncompleteSignatureException": "IncompleteSignature",
    "AccessDeniedException": "AccessDenied",
}


def parse_body(body: bytes) -> dict[str, str]:
    """A form-encoded body as a flat map (the last value of a repeated key)."""
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def members(params: dict[str, str], name: str) -> list[str]:
    """The list parameter ``name``: ``name.member.1``, ``name.member.2``... in order, up to
    the first gap."""
    found: list[str] = []
    while (value := params.get(f"{name}.member.{len(found) + 1}")) is not None:
        found.append(value)
    return found


def response_document(namespace: str, action: str, result: str,
                      request_id: str | None = None) -> bytes:
    """``{action}Response`` around ``result`` (XML already escaped) and the request id."""
    rid = request_id or str(uuid.uuid4())
    return (
        f'<{action}Response xmlns="{namespace}">\n'
        f"  <{action}Result>\n{result}  </{action}Result>\n"
        "  <ResponseMetadata>\n"
        f"    <RequestId>{escape(rid)}</RequestId>\n"
        "  </ResponseMetadata>\n"
        f"</{action}Response>\n"
    ).encode()


def error_document(namespace: str, code: str, message: str, status: int,
                   request_id: str | None = None) -> bytes:
    """The error document of a service whose XML lives in ``namespace``."""
    kind = "Sender" if status < 500 else "Receiver"
    rid = request_id or str(uuid.uuid4())
    return (
        f'<ErrorResponse xmlns="{namespace}">\n'
        "  <Error>\n"
        f"    <Type>{kind}</Type>\n"
        f"    <Code>{escape(code)}</Code>\n"
        f"    <Message>{escape(message)}</Message>\n"
        "  </Error>\n"
        f"  <RequestId>{escape(rid)}</RequestId>\n"
        "</ErrorResponse>\n"
    ).encode()
