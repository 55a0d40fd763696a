"""IAM, read side, over the query protocol: the calls the SageMaker SDKs make to check a role.

SDK v3 (``sagemaker.core.helper.iam_role_resolver``) checks every execution role, a full ARN
included, before a job or a model: ``GetRole`` (the role's ARN, and its trust policy must let
``sagemaker.amazonaws.com`` assume it) and ``SimulatePrincipalPolicy`` (every action it needs
must come back ``allowed``); it accepts only ``AccessDenied`` and ``NoSuchEntity`` as "cannot
tell", so any other answer, or none, stops the user. SDK v2 and v3 turn the caller's
``assumed-role`` ARN into a role ARN through ``GetRole``, and ``Session.expand_role`` turns a
bare role name into one. Shipyard keeps no IAM: every role exists, trusts the SageMaker
services, and may do everything. Signed for ``iam`` (``AWS_ENDPOINT_URL_IAM`` names the server),
IAM requests reach the same listener as STS's; the signing scope tells them apart.

Answers follow the IAM API reference's XML (API_GetRole, API_SimulatePrincipalPolicy,
namespace ``https://iam.amazonaws.com/doc/2010-05-08/``); ``AssumeRolePolicyDocument`` is
URL-encoded JSON, as IAM sends it and botocore decodes it. Bad input is IAM's
``ValidationError``; an action Shipyard lacks is ``InvalidAction`` (``error``).

The identity every Shipyard key answers as is the role ``DEFAULT_ROLE_NAME``
(``api.sts``): the one execution role a user's code and the SDK's defaults can name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from urllib.parse import quote
from xml.sax.saxutils import escape

from shipyard.api import query
from shipyard.errors import ValidationError

__all__ = ["CREATE_DATE", "DEFAULT_ROLE_NAME", "NAMESPACE", "OPERATIONS", "TRUSTED_SERVICES",
           "VERSION", "answer", "error", "role_arn", "role_id", "trust_policy"]

NAMESPACE = "https://iam.amazonaws.com/doc/2010-05-08/"
VERSION = "2010-05-08"
#: The execution role Shipyard's keys act as, and that its SDK defaults name.
DEFAULT_ROLE_NAME = "ShipyardExecutionRole"
#: What every role's trust policy lets assume it: the principals SDK v3 checks for
#: (training, serving, pipelines: SageMaker and EventBridge Scheduler; model evaluation: Bedrock).
TRUSTED_SERVICES = ("sagemaker.amazonaws.com", "scheduler.amazonaws.com",
                    "bedrock.amazonaws.com")
#: Every role's creation time: fixed, so the same role is described the same way every time.
CREATE_DATE = "2024-01-01T00:00:00Z"
#: IAM's own code for bad input (SageMaker's is ``ValidationException``).
VALIDATION_CODE = "ValidationError"

_ROLE_NAME = re.compile(r"[\w+=,.@-]+")
_MAX_ROLE_NAME = 64
_DEFAULT_MAX_ITEMS = 100
_MAX_ITEMS = 1000


def role_arn(account_id: str, name: str = DEFAULT_ROLE_NAME) -> str:
    return f"arn:aws:iam::{account_id}:role/{name}"


def role_id(account_id: str, name: str) -> str:
    """``AROA`` + 17 base32 characters (the shape of an IAM role's id), stable per role."""
    digest = hashlib.sha256(f"{account_id}:{name}".encode()).digest()
    return "AROA" + base64.b32encode(digest).decode()[:17]


def trust_policy() -> dict[str, object]:
    """Every role's trust policy: the services in ``TRUSTED_SERVICES`` may assume it."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": list(TRUSTED_SERVICES)},
        "Action": "sts:AssumeRole"}]}


def get_role(account_id: str, params: dict[str, str]) -> str:
    """Any well-formed role name is a role at path ``/``."""
    name = params.get("RoleName")
    _check_role_name(name)
    assert name is not None  # for mypy: a missing name was refused above
    document = quote(json.dumps(trust_policy(), separators=(",", ":")), safe="")
    return (
        "    <Role>\n"
        "      <Path>/</Path>\n"
        f"      <RoleName>{escape(name)}</RoleName>\n"
        f"      <RoleId>{role_id(account_id, name)}</RoleId>\n"
        f"      <Arn>{escape(role_arn(account_id, name))}</Arn>\n"
        f"      <CreateDate>{CREATE_DATE}</CreateDate>\n"
        f"      <AssumeRolePolicyDocument>{document}</AssumeRolePolicyDocument>\n"
        "      <MaxSessionDuration>3600</MaxSessionDuration>\n"
        "    </Role>\n"
    )


def simulate_principal_policy(account_id: str, params: dict[str, str]) -> str:
    """Every action on every resource asked about is ``allowed``; paged by ``MaxItems`` and
    ``Marker`` as IAM pages (SDK v3 reads every page before it decides)."""
    if not params.get("PolicySourceArn"):
        raise ValidationError(_null("policySourceArn"))
    actions = query.members(params, "ActionNames")
    if not actions:
        raise ValidationError(_null("actionNames"))
    resources = query.members(params, "ResourceArns") or ["*"]
    limit = _int_param(params, "MaxItems", _DEFAULT_MAX_ITEMS, 1, _MAX_ITEMS)
    results = [(action, resource) for action in actions for resource in resources]
    start = _int_param(params, "Marker", 0, 0, len(results))
    page = results[start:start + limit]
    members = "".join(
        "        <member>\n"
        f"          <EvalActionName>{escape(action)}</EvalActionName>\n"
        f"          <EvalResourceName>{escape(resource)}</EvalResourceName>\n"
        "          <EvalDecision>allowed</EvalDecision>\n"
        "          <MatchedStatements/>\n"
        "          <MissingContextValues/>\n"
        "        </member>\n"
        for action, resource in page)
    end = start + len(page)
    more = end < len(results)
    marker = f"    <Marker>{end}</Marker>\n" if more else ""
    return (f"    <EvaluationResults>\n{members}    </EvaluationResults>\n"
            f"    <IsTruncated>{'true' if more else 'false'}</IsTruncated>\n{marker}")


#: Action -> handler giving the ``<Action>Result`` body; docs/api.md lists these.
OPERATIONS: dict[str, Callable[[str, dict[str, str]], str]] = {
    "GetRole": get_role,
    "SimulatePrincipalPolicy": simulate_principal_policy,
}


def answer(account_id: str, params: dict[str, str],
           request_id: str | None = None) -> tuple[int, bytes]:
    """Status and XML for the query request ``params``, whose ``Action`` is in ``OPERATIONS``."""
    action = params["Action"]
    try:
        result = OPERATIONS[action](account_id, params)
    except ValidationError as exc:
        return 400, error(VALIDATION_CODE, exc.message, 400, request_id)
    return 200, query.response_document(NAMESPACE, action, result, request_id)


def error(code: str, message: str, status: int, request_id: str | None = None) -> bytes:
    """IAM's error document."""
    return query.error_document(NAMESPACE, code, message, status, request_id)


def _check_role_name(name: str | None) -> None:
    if name is None:
        raise ValidationError(_null("roleName"))
    if not 1 <= len(name) <= _MAX_ROLE_NAME:
        raise ValidationError(
            f"1 validation error detected: Value '{name}' at 'roleName' failed to satisfy "
            f"constraint: Member must have length between 1 and {_MAX_ROLE_NAME}")
    if not _ROLE_NAME.fullmatch(name):
        raise ValidationError(
            f"1 validation error detected: Value '{name}' at 'roleName' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {_ROLE_NAME.pattern}")


def _int_param(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ValidationError(f"Invalid {name}: '{text}'")
    return int(text)


def _null(member: str) -> str:
    return (f"1 validation error detected: Value null at '{member}' failed to satisfy "
            "constraint: Member must not be null")
