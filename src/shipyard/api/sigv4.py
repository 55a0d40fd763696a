"""Server-side verification of AWS Signature Version 4, as boto3 and every AWS SDK sign.

The rules (AWS IAM user guide, "Create a signed AWS API request" and "Authentication
methods", https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html):

* ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/region/service/aws4_request,
  SignedHeaders=h1;h2, Signature=<hex>`` or, for a presigned URL, the query parameters
  ``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``,
  ``X-Amz-SignedHeaders``, ``X-Amz-Signature``.
* Canonical request = method, canonical URI, canonical query string, canonical headers,
  signed header names, payload hash, joined by newlines. Services other than S3 encode the
  path twice: the URI as sent (already percent-encoded) is encoded again, after removing dot
  segments and repeated slashes (botocore ``SigV4Auth._normalize_url_path``). Query pairs are
  sorted by their URI-encoded names, then values. Header names are lowercase; values are
  trimmed with inner runs of whitespace collapsed to one space.
* Payload hash = ``x-amz-content-sha256`` when sent (``UNSIGNED-PAYLOAD`` included), else the
  hex SHA-256 of the body.
* String to sign = ``AWS4-HMAC-SHA256``, the request time (``x-amz-date``, else ``date``),
  the credential scope, and the hex SHA-256 of the canonical request.
* Signing key = HMAC chain ``"AWS4"+secret`` -> date -> region -> service -> ``aws4_request``.
* The scope's date must be the request time's date; the request time must lie within 15
  minutes of the server's clock (a presigned URL: until ``X-Amz-Date + X-Amz-Expires``).

Errors carry the codes and messages AWS's JSON services answer with, checked in AWS's order:
missing token, incomplete header, host not signed, date format, clock skew, credential form,
scope, unknown key, signature. Shipyard serves every region and SigV4 service name
(``sagemaker``, ``logs``, ``sts``...) on one listener, so any region and service in the scope
is accepted. ``X-Amz-Security-Token`` is ignored: Shipyard issues no session tokens, and a
stale one left in a user's environment should not lock them out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_tz
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from shipyard.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthentication,
    UnrecognizedClient,
)

__all__ = [
    "ALGORITHM",
    "DEFAULT_MAX_SKEW_SECONDS",
    "MAX_PRESIGN_EXPIRES_SECONDS",
    "UNSIGNED_PAYLOAD",
    "canonical_path",
    "canonical_query_string",
    "signed_service",
    "signing_key",
    "verify",
]

log = logging.getLogger(__name__)

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: AWS accepts requests dated up to 15 minutes either side of its clock.
DEFAULT_MAX_SKEW_SECONDS = 900
#: A presigned URL lives at most seven days (the signing key's own lifetime).
MAX_PRESIGN_EXPIRES_SECONDS = 604800

_TERMINATOR = "aws4_request"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_BASIC_FORMAT = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")

MISSING_TOKEN = "Missing Authentication Token"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."
HOST_NOT_SIGNED = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
_REQUIRES = {
    "Credential": "Authorization header requires 'Credential' parameter.",
    "Signature": "Authorization header requires 'Signature' parameter.",
    "SignedHeaders": "Authorization header requires 'SignedHeaders' parameter.",
}
_REQUIRES_DATE = (
    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
)
_QUERY_REQUIRES = {
    "X-Amz-Credential": "AWS query-string parameters must include 'X-Amz-Credential'.",
    "X-Amz-Signature": "AWS query-string parameters must include 'X-Amz-Signature'.",
    "X-Amz-SignedHeaders": "AWS query-string parameters must include 'X-Amz-SignedHeaders'.",
    "X-Amz-Date": "AWS query-string parameters must include 'X-Amz-Date'.",
}
_REEXAMINE = "Re-examine the query-string parameters."
_CONTENT_SHA256_MISMATCH = (
    "The provided 'x-amz-content-sha256' header does not match what was computed."
)


class _Auth(NamedTuple):
    """What a request claims: from its Authorization header or its presigned query."""

    credential: str
    signed_headers: list[str]
    signature: str
    timestamp: str  # as written: X-Amz-Date's basic format, or the Date header's HTTP date
    canonical_query: str
    expires: int | None  # presigned URLs only


def verify(
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    *,
    now: float | None = None,
    max_skew_seconds: int = DEFAULT_MAX_SKEW_SECONDS,
) -> str:
    """Check a request's SigV4 signature; return the access key id that signed it.

    ``path`` and ``query_string`` are as sent on the wire, still percent-encoded (ASGI's
    ``raw_path`` and ``query_string`` decoded as latin-1), ``headers`` has lowercase names
    with repeated headers joined by ``","``. ``secrets`` maps access key ids to secret keys.
    Raises ``MissingAuthentication``, ``IncompleteSignature``, ``InvalidSignature`` or
    ``UnrecognizedClient`` with AWS's messages.
    """
    clock = time.time() if now is None else now
    pairs = _parse_query(query_string) if query_string else []
    query_algorithm = next((v for k, v in pairs if k == b"X-Amz-Algorithm"), None)
    authorization = headers.get("authorization")
    if authorization is None:
        if query_algorithm is None or query_algorithm.decode("utf-8", "replace") != ALGORITHM:
            raise MissingAuthentication(MISSING_TOKEN)
        auth = _from_query(pairs)
    elif query_algorithm is not None:
        # Both ways at once is ambiguous; AWS refuses it as a mismatch.
        raise InvalidSignature(SIGNATURE_MISMATCH)
    else:
        auth = _from_header(authorization, headers, pairs)

    if "host" not in auth.signed_headers and ":authority" not in auth.signed_headers:
        raise InvalidSignature(HOST_NOT_SIGNED)
    stamp, epoch = _request_time(auth.timestamp)
    _check_clock(stamp, epoch, clock, max_skew_seconds, auth.expires)

    parts = auth.credential.split("/")
    if len(parts) != 5:
        raise IncompleteSignature(
            "Credential must have exactly 5 slash-delimited elements, "
            f"e.g. keyid/date/region/service/term, got '{auth.credential}'"
        )
    access_key, scope_date, region, service, terminator = parts
    problems: list[str] = []
    if terminator != _TERMINATOR:
        problems.append(
            "Credential should be scoped with a valid terminator: "
            f"'{_TERMINATOR}', not '{terminator}'."
        )
    if scope_date != stamp[:8]:
        problems.append(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{scope_date}' != '{stamp[:8]}', from '{stamp}'."
        )
    if problems:
        raise InvalidSignature(" ".join(problems))

    secret = secrets.get(access_key)
    if secret is None:
        raise UnrecognizedClient(INVALID_TOKEN)

    payload_hashes = _payload_hashes(headers, body, presigned=auth.expires is not None)
    key = signing_key(secret, scope_date, region, service)
    scope = f"{scope_date}/{region}/{service}/{_TERMINATOR}"
    head = "\n".join((
        method.upper(),
        canonical_path(path),
        auth.canonical_query,
        _canonical_headers(auth.signed_headers, headers),
        ";".join(auth.signed_headers),
    ))
    provided = auth.signature.encode("utf-8", "replace")
    for payload_hash in payload_hashes:
        canonical_request = f"{head}\n{payload_hash}"
        digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
        string_to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{digest}"
        expected = hmac.digest(key, string_to_sign.encode("utf-8"), "sha256").hex()
        if hmac.compare_digest(expected.encode("ascii"), provided):
            return access_key
        if log.isEnabledFor(logging.DEBUG):
            log.debug("SigV4 mismatch for %s; canonical request:\n%s\nstring to sign:\n%s",
                      access_key, canonical_request, string_to_sign)
    raise InvalidSignature(SIGNATURE_MISMATCH)


def signed_service(headers: Mapping[str, str], query_string: str) -> str:
    """The service a request's credential scope names (``sts``, ``iam``...), "" if none.

    Query-protocol services share one wire shape (a form body, ``Action=<Operation>``), and
    AWS tells them apart by host; on Shipyard's one listener the scope a client signed for
    says which service it meant. Reads the scope only: ``verify`` checks it.
    """
    credential = ""
    authorization = headers.get("authorization")
    if authorization is not None:
        for token in authorization.replace(",", " ").split():
            if token.startswith("Credential="):
                credential = token[len("Credential="):]
                break
    elif query_string:
        credential = next((v.decode("utf-8", "replace") for k, v in _parse_query(query_string)
                           if k == b"X-Amz-Credential"), "")
    parts = credential.split("/")
    return parts[3] if len(parts) == 5 else ""


@lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The derived key (kSigning); cached, as it only changes daily per key, region, service."""
    key = hmac.digest(f"AWS4{secret}".encode(), date.encode("utf-8"), "sha256")
    for part in (region, service, _TERMINATOR):
        key = hmac.digest(key, part.encode("utf-8"), "sha256")
    return key


@lru_cache(maxsize=1024)
def canonical_path(path: str) -> str:
    """The canonical URI of a non-S3 service: dot segments and ``//`` removed, encoded again."""
    raw = _wire_bytes(path)
    if not raw:
        return "/"
    segments: list[bytes] = []
    for segment in raw.split(b"/"):
        if segment == b".." and segments:
            segments.pop()
        elif segment and segment not in (b".", b".."):
            segments.append(segment)
    normalized = b"/".join(segments)
    if raw.startswith(b"/"):
        normalized = b"/" + normalized
    if raw.endswith(b"/") and segments:
        normalized += b"/"
    return quote(normalized, safe=b"/~")


def canonical_query_string(query_string: str) -> str:
    """Pairs decoded, re-encoded with AWS's unreserved set, sorted by encoded name then value."""
    return _canonical_query(_parse_query(query_string), exclude=None)


def _wire_bytes(text: str) -> bytes:
    # The wire bytes behind a string decoded as latin-1; a caller that decoded as UTF-8
    # (characters past U+00FF) gets its UTF-8 bytes back instead.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _parse_query(query_string: str) -> list[tuple[bytes, bytes]]:
    pairs = []
    for item in _wire_bytes(query_string).split(b"&"):
        if item:
            name, _, value = item.partition(b"=")
            # Percent-decoding only: "+" is not a space in SigV4's encoding.
            pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return pairs


def _canonical_query(pairs: list[tuple[bytes, bytes]], exclude: bytes | None) -> str:
    encoded = sorted(
        (quote(name, safe=b"-_.~"), quote(value, safe=b"-_.~"))
        for name, value in pairs
        if name != exclude
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _from_header(
    authorization: str, headers: Mapping[str, str], pairs: list[tuple[bytes, bytes]]
) -> _Auth:
    header = authorization.strip()
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    if scheme == ALGORITHM:
        # AWS splits on commas and on whitespace alike: a stray space inside a value shows
        # up as a token without "=".
        for token in rest.replace(",", " ").split():
            name, sep, value = token.partition("=")
            if not sep:
                raise IncompleteSignature(
                    f"'{token}' not a valid key=value pair (missing equal-sign) in "
                    f"Authorization header: '{header}'."
                )
            params[name] = value
    missing = [message for name, message in _REQUIRES.items() if name not in params]
    timestamp = headers.get("x-amz-date")
    if timestamp is None:
        timestamp = headers.get("date")
    if timestamp is None:
        missing.append(_REQUIRES_DATE)
    if missing:
        raise IncompleteSignature(f"{' '.join(missing)} Authorization={header}")
    assert timestamp is not None  # for mypy: a missing date was reported above
    return _Auth(
        credential=params["Credential"],
        signed_headers=params["SignedHeaders"].split(";"),
        signature=params["Signature"],
        timestamp=timestamp,
        canonical_query=_canonical_query(pairs, exclude=None) if pairs else "",
        expires=None,
    )


def _from_query(pairs: list[tuple[bytes, bytes]]) -> _Auth:
    values: dict[str, str] = {}
    for name, value in pairs:
        # The first occurrence wins, as in AWS's parser.
        values.setdefault(name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
    missing = [message for name, message in _QUERY_REQUIRES.items() if name not in values]
    if missing:
        raise IncompleteSignature(f"{' '.join(missing)} {_REEXAMINE}")
    expires = DEFAULT_MAX_SKEW_SECONDS
    if "X-Amz-Expires" in values:
        text = values["X-Amz-Expires"]
        if not text.isdigit():
            raise IncompleteSignature("X-Amz-Expires should be a number")
        expires = int(text)
        if expires > MAX_PRESIGN_EXPIRES_SECONDS:
            raise IncompleteSignature(
                "X-Amz-Expires must be less than a week (in seconds) that is 604800"
            )
    return _Auth(
        credential=values["X-Amz-Credential"],
        signed_headers=values["X-Amz-SignedHeaders"].split(";"),
        signature=values["X-Amz-Signature"],
        timestamp=values["X-Amz-Date"],
        canonical_query=_canonical_query(pairs, exclude=b"X-Amz-Signature"),
        expires=expires,
    )


@lru_cache(maxsize=256)
def _request_time(timestamp: str) -> tuple[str, float]:
    """The request time in SigV4's basic format, and as epoch seconds (cached: requests
    signed within the same second share their timestamp)."""
    match = _BASIC_FORMAT.fullmatch(timestamp)
    try:
        if match is not None:
            year, month, day, hour, minute, second = (int(g) for g in match.groups())
            moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
            return timestamp, moment.timestamp()
        # A Date header in HTTP's format (RFC 9110 IMF-fixdate), which SigV4 also accepts.
        parsed = parsedate_tz(timestamp)
        if parsed is not None:
            fields = parsed[:6]
            offset = parsed[9] or 0
            moment = datetime(*fields, tzinfo=timezone.utc)
            epoch = moment.timestamp() - offset
            return _basic(epoch), epoch
    except (ValueError, OverflowError):
        pass
    raise IncompleteSignature(
        f"Date must be in ISO-8601 'basic format'. Got '{timestamp}'. "
        "See http://en.wikipedia.org/wiki/ISO_8601"
    )


def _check_clock(
    stamp: str, epoch: float, clock: float, max_skew: int, expires: int | None
) -> None:
    if epoch > clock + max_skew:
        raise InvalidSignature(
            f"Signature not yet current: {stamp} is still later than {_basic(clock + max_skew)}"
            f" ({_basic(clock)} + {_duration(max_skew)}.)"
        )
    window = max_skew if expires is None else expires
    if epoch < clock - window:
        raise InvalidSignature(
            f"Signature expired: {stamp} is now earlier than {_basic(clock - window)}"
            f" ({_basic(clock)} - {_duration(window)}.)"
        )


def _basic(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _duration(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} sec"


def _canonical_headers(signed: list[str], headers: Mapping[str, str]) -> str:
    lines = []
    for name in signed:
        value = headers.get(name)
        # A signed header that did not arrive contributes nothing (as in AWS's verifier);
        # the signature then fails to match.
        if value is not None:
            lines.append(f"{name}:{' '.join(value.split())}\n")
    return "".join(lines)


def _payload_hashes(headers: Mapping[str, str], body: bytes, *, presigned: bool) -> list[str]:
    """The payload hash(es) to try, in order."""
    declared = headers.get("x-amz-content-sha256")
    if declared is not None:
        declared = declared.strip()
        if _HEX_SHA256.fullmatch(declared) and declared != _body_sha256(body):
            # Without this check an unsigned header could vouch for a swapped body.
            raise InvalidSignature(_CONTENT_SHA256_MISMATCH)
        return [declared]
    if presigned:
        # Presigned URLs are signed over the body's hash by most SDKs, over UNSIGNED-PAYLOAD
        # by S3-style signers.
        return [_body_sha256(body), UNSIGNED_PAYLOAD]
    return [_body_sha256(body)]


def _body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
