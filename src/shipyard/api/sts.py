"""STS ``GetCallerIdentity`` over the query protocol: what SDK v2's telemetry asks of any endpoint.

SDK v2 calls ``sts:GetCallerIdentity`` through the normal endpoint chain, so with
``AWS_ENDPOINT_URL`` set it reaches Shipyard (platform-api.md 5.10). The request is a form
body ``Action=GetCallerIdentity&Version=2011-06-15``; the answer is the XML document of the
STS API reference (API_GetCallerIdentity, "Example 1 - Called by an IAM user"):

    <GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
      <GetCallerIdentityResult>
        <Arn>arn:aws:iam::123456789012:user/Alice</Arn>
        <UserId>...</UserId>
        <Account>123456789012</Account>
      </GetCallerIdentityResult>
      <ResponseMetadata><RequestId>...</RequestId></ResponseMetadata>
    </GetCallerIdentityResponse>

Every Shipyard key belongs to one IAM-user-like identity, ``arn:aws:iam::<account>:user/shipyard``
(a user, not ``:root``: tools that refuse to run as root then work). ``UserId`` has the shape
of an IAM user's unique id (``AIDA`` + 17 characters), derived from the access key so each key
answers the same id every time. Errors use the query protocol's envelope
(``ErrorResponse/Error/{Type,Code,Message}`` + ``RequestId``), as botocore's query parser reads.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

__all__ = ["NAMESPACE", "USER_NAME", "caller_arn", "get_caller_identity", "parse_query_body",
           "query_error", "user_id"]

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
USER_NAME = "shipyard"


def caller_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:user/{USER_NAME}"


def user_id(access_key_id: str) -> str:
    """``AIDA`` + 17 base32 characters, stable for a given access key."""
    digest = hashlib.sha256(access_key_id.encode()).digest()
    return "AIDA" + base64.b32encode(digest).decode()[:17]


def get_caller_identity(account_id: str, access_key_id: str,
                        request_id: str | None = None) -> bytes:
    """The ``GetCallerIdentityResponse`` XML for a caller signed with ``access_key_id``."""
    rid = request_id or str(uuid.uuid4())
    return (
        f'<GetCallerIdentityResponse xmlns="{NAMESPACE}">\n'
        "  <GetCallerIdentityResult>\n"
        f"    <Arn>{escape(caller_arn(account_id))}</Arn>\n"
        f"    <UserId>{escape(user_id(access_key_id))}</UserId>\n"
        f"    <Account>{escape(account_id)}</Account>\n"
        "  </GetCallerIdentityResult>\n"
        "  <ResponseMetadata>\n"
        f"    <RequestId>{escape(rid)}</RequestId>\n"
        "  </ResponseMetadata>\n"
        "</GetCallerIdentityResponse>\n"
    ).encode()


def parse_query_body(body: bytes) -> dict[str, str]:
    """A form-encoded query-protocol body as a flat map (the last value of a repeated key)."""
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def query_error(code: str, message: str, status: int, request_id: str | None = None) -> bytes:
    """The query protocol's error document; ``Type`` is ``Sender`` for 4xx, else ``Receiver``."""
    kind = "Sender" if status < 500 else "Receiver"
    rid = request_id or str(uuid.uuid4())
    return (
        f'<ErrorResponse xmlns="{NAMESPACE}">\n'
        "  <Error>\n"
        f"    <Type>{kind}</Type>\n"
        f"    <Code>{escape(code)}</Code>\n"
        f"    <Message>{escape(message)}</Message>\n"
        "  </Error>\n"
        f"  <RequestId>{escape(rid)}</RequestId>\n"
        "</ErrorResponse>\n"
    ).encode()
