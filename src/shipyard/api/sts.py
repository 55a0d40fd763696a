"""STS ``GetCallerIdentity`` over the query protocol: who the SDKs find they are.

SDK v2's telemetry and SDK v3's role resolution call ``sts:GetCallerIdentity`` through the
normal endpoint chain, so with ``AWS_ENDPOINT_URL`` set it reaches Shipyard (platform-api.md
5.10). The request is a form body ``Action=GetCallerIdentity&Version=2011-06-15``; the answer
is the XML document of the STS API reference (API_GetCallerIdentity, "Example 2 - Called by
a user with assumed role credentials"):

    <GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
      <GetCallerIdentityResult>
        <Arn>arn:aws:sts::123456789012:assumed-role/my-role-name/my-role-session-name</Arn>
        <UserId>AROAJL3EXAMPLE:my-role-session-name</UserId>
        <Account>123456789012</Account>
      </GetCallerIdentityResult>
      <ResponseMetadata><RequestId>...</RequestId></ResponseMetadata>
    </GetCallerIdentityResponse>

Every Shipyard key acts as the execution role ``iam.DEFAULT_ROLE_NAME``, in a session named
after the access key: ``arn:aws:sts::<account>:assumed-role/ShipyardExecutionRole/<key id>``.
An assumed role, not a user, because the SDKs turn the caller's identity into the execution
role when code names none (SDK v3's ``ModelBuilder`` without ``role_arn``, v2's
``get_execution_role``): they take the role name from the ARN and ask IAM's ``GetRole``
(``api.iam``) for its ARN. ``UserId`` is the role's id and the session name, as AWS answers.
Errors use the query protocol's envelope (``api.query``).
"""

from __future__ import annotations

import uuid
from xml.sax.saxutils import escape

from shipyard.api import iam, query

__all__ = ["NAMESPACE", "caller_arn", "get_caller_identity", "parse_query_body",
           "query_error", "user_id"]

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"


def caller_arn(account_id: str, access_key_id: str) -> str:
    """The assumed-role ARN of a caller signed with ``access_key_id``."""
    return f"arn:aws:sts::{account_id}:assumed-role/{iam.DEFAULT_ROLE_NAME}/{access_key_id}"


def user_id(account_id: str, access_key_id: str) -> str:
    """``<role id>:<session name>``, as AWS answers for assumed-role credentials."""
    return f"{iam.role_id(account_id, iam.DEFAULT_ROLE_NAME)}:{access_key_id}"


def get_caller_identity(account_id: str, access_key_id: str,
                        request_id: str | None = None) -> bytes:
    """The ``GetCallerIdentityResponse`` XML for a caller signed with ``access_key_id``."""
    rid = request_id or str(uuid.uuid4())
    return (
        f'<GetCallerIdentityResponse xmlns="{NAMESPACE}">\n'
        "  <GetCallerIdentityResult>\n"
        f"    <Arn>{escape(caller_arn(account_id, access_key_id))}</Arn>\n"
        f"    <UserId>{escape(user_id(account_id, access_key_id))}</UserId>\n"
        f"    <Account>{escape(account_id)}</Account>\n"
        "  </GetCallerIdentityResult>\n"
        "  <ResponseMetadata>\n"
        f"    <RequestId>{escape(rid)}</RequestId>\n"
        "  </ResponseMetadata>\n"
        "</GetCallerIdentityResponse>\n"
    ).encode()


def parse_query_body(body: bytes) -> dict[str, str]:
    """A form-encoded query-protocol body as a flat map (the last value of a repeated key)."""
    return query.parse_body(body)


def query_error(code: str, message: str, status: int, request_id: str | None = None) -> bytes:
    """STS's error document; ``Type`` is ``Sender`` for 4xx, else ``Receiver``."""
    return query.error_document(NAMESPACE, code, message, status, request_id)
