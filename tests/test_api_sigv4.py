"""SigV4 verification against botocore's own signers, and the local key store.

Requests are signed by botocore (``SigV4Auth``/``SigV4QueryAuth`` over ``AWSRequest``) and by
real boto3 clients talking HTTP to a small ASGI app served by uvicorn; then tampered with, and
each refusal is checked for AWS's exact error code and message.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.utils import percent_encode

from shipyard.api import sigv4
from shipyard.api.credentials import (
    CREDENTIALS_FILE,
    REFRESH_SECONDS,
    KeyStore,
    client_env,
    load_or_create,
)
from shipyard.errors import (
    AuthError,
    IncompleteSignature,
    InvalidSignature,
    MissingAuthentication,
    ResourceNotFound,
    StorageError,
    UnrecognizedClient,
    ValidationError,
)
from tests.support.asgi import read_body, serve_in_thread

AKID = "SYAKTESTTESTTEST0001"
SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-0001"
SECRETS = {AKID: SECRET}
HOST = "127.0.0.1:8080"
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


# --- requests signed by botocore ----------------------------------------------------------


@dataclass(frozen=True)
class Wire:
    """A request as the server receives it."""

    method: str
    path: str
    query: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def verify(self, secrets: Mapping[str, str] = SECRETS, **kwargs: Any) -> str:
        return sigv4.verify(self.method, self.path, self.query, self.headers, self.body,
                            secrets, **kwargs)

    def with_header(self, name: str, value: str | None) -> Wire:
        headers = dict(self.headers)
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
        return replace(self, headers=headers)

    @property
    def epoch(self) -> float:
        return calendar.timegm(time.strptime(self.headers["x-amz-date"], "%Y%m%dT%H%M%SZ"))


def _to_wire(request: AWSRequest) -> Wire:
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    # The HTTP client adds Host from the URL, as botocore assumed when signing.
    headers["host"] = parts.netloc
    body = prepared.body or b""
    return Wire(prepared.method, parts.path, parts.query, headers,
                body.encode() if isinstance(body, str) else body)


def _sign(method: str, url: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None,
          service: str = "sagemaker", region: str = "us-west-2", akid: str = AKID,
          secret: str = SECRET, unsigned_payload: bool = False) -> Wire:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    if unsigned_payload:
        request.context["payload_signing_enabled"] = False
    SigV4Auth(Credentials(akid, secret), service, region).add_auth(request)
    return _to_wire(request)


def _sagemaker(target: str = "SageMaker.DescribeTrainingJob",
               body: bytes = b'{"TrainingJobName": "my-job"}') -> Wire:
    return _sign("POST", f"http://{HOST}/", body=body, headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})


ODD_ENDPOINT = "my ep/ü+~%=&?"


def _runtime() -> Wire:
    # As botocore's rest-json serializer renders /endpoints/{EndpointName}/invocations.
    path = f"/endpoints/{percent_encode(ODD_ENDPOINT)}/invocations"
    return _sign("POST", f"http://{HOST}{path}", body=bytes(range(256)), headers={
        "Content-Type": "application/octet-stream", "Accept": "application/json",
        "X-Amzn-SageMaker-Custom-Attributes": "  a   b\tc  "})


CASES: dict[str, Callable[[], Wire]] = {
    "sagemaker-json": _sagemaker,
    "logs-json": lambda: _sign("POST", f"http://{HOST}/", service="logs", region="eu-central-1",
                               body=b'{"logGroupName": "/aws/sagemaker/TrainingJobs"}', headers={
                                   "X-Amz-Target": "Logs_20140328.DescribeLogStreams",
                                   "Content-Type": "application/x-amz-json-1.1"}),
    "sts-form": lambda: _sign("POST", f"http://{HOST}/", service="sts", region="us-east-1",
                              body=b"Action=GetCallerIdentity&Version=2011-06-15", headers={
                                  "Content-Type": "application/x-www-form-urlencoded; "
                                                  "charset=utf-8"}),
    "runtime-binary": _runtime,
    "query-string": lambda: _sign(
        "GET", f"http://{HOST}/a/./b/../c//d?b=2&a=x%20y&a=1&c=&%C3%BC=%2F%2B"),
    "date-header": lambda: _sign("POST", f"http://{HOST}/", body=b"{}",
                                 headers={"Date": "placeholder", "X-Amz-Target": "SageMaker.X"}),
    "unsigned-payload": lambda: _sign("POST", f"http://{HOST}/", body=b"{}",
                                      unsigned_payload=True),
    "declared-sha256": lambda: _sign("POST", f"http://{HOST}/", body=b'{"a": 1}', headers={
        "X-Amz-Content-SHA256": hashlib.sha256(b'{"a": 1}').hexdigest()}),
}


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_botocore_signatures_verify(make: Callable[[], Wire]) -> None:
    assert make().verify() == AKID


def test_runtime_path_reaches_the_wire_percent_encoded() -> None:
    wire = _runtime()
    assert wire.path == "/endpoints/my%20ep%2F%C3%BC%2B~%25%3D%26%3F/invocations"
    # SigV4 for non-S3 services encodes the already-encoded path once more.
    assert sigv4.canonical_path(wire.path) == (
        "/endpoints/my%2520ep%252F%25C3%25BC%252B~%2525%253D%2526%253F/invocations")


def test_unsigned_payload_leaves_the_body_unsigned() -> None:
    wire = CASES["unsigned-payload"]()
    assert wire.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert replace(wire, body=b'{"other": true}').verify() == AKID


def test_date_header_signs_the_request_time() -> None:
    wire = CASES["date-header"]()
    assert "x-amz-date" not in wire.headers
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} .+", wire.headers["date"])
    # A Date header more than 15 minutes off is refused like X-Amz-Date.
    with pytest.raises(InvalidSignature, match="^Signature expired: "):
        wire.verify(now=time.time() + 3600)


# --- tampering -----------------------------------------------------------------------------


TAMPERED: dict[str, Callable[[Wire], Wire]] = {
    "body": lambda w: replace(w, body=w.body + b" "),
    "signed-header": lambda w: w.with_header("x-amz-target", "SageMaker.DeleteTrainingJob"),
    "path": lambda w: replace(w, path="/other"),
    "query": lambda w: replace(w, query="x=1"),
    "method": lambda w: replace(w, method="PUT"),
    "host": lambda w: w.with_header("host", "127.0.0.1:8081"),
    "signature": lambda w: w.with_header(
        "authorization", re.sub(r"Signature=\w{4}", "Signature=0000", w.headers["authorization"])),
    "region-in-scope": lambda w: w.with_header(
        "authorization", w.headers["authorization"].replace("/us-west-2/", "/us-east-1/")),
    "service-in-scope": lambda w: w.with_header(
        "authorization", w.headers["authorization"].replace("/sagemaker/", "/logs/")),
    "signed-header-removed": lambda w: w.with_header("content-type", None),
}


@pytest.mark.parametrize("tamper", TAMPERED.values(), ids=TAMPERED.keys())
def test_tampered_requests_do_not_match(tamper: Callable[[Wire], Wire]) -> None:
    with pytest.raises(InvalidSignature) as caught:
        tamper(_sagemaker()).verify()
    assert caught.value.message == MISMATCH
    assert caught.value.code == "InvalidSignatureException"
    assert caught.value.http_status == 403


def test_tampered_runtime_body_does_not_match() -> None:
    wire = _runtime()
    with pytest.raises(InvalidSignature, match="^The request signature we calculated"):
        replace(wire, body=wire.body[::-1]).verify()


def test_wrong_secret() -> None:
    with pytest.raises(InvalidSignature) as caught:
        _sagemaker().verify({AKID: SECRET + "x"})
    assert caught.value.message == MISMATCH


def test_unknown_access_key() -> None:
    with pytest.raises(UnrecognizedClient) as caught:
        _sagemaker().verify({"SYAKSOMEONEELSE00000": SECRET})
    assert caught.value.code == "UnrecognizedClientException"
    assert caught.value.message == "The security token included in the request is invalid."


def test_missing_authorization() -> None:
    with pytest.raises(MissingAuthentication) as caught:
        _sagemaker().with_header("authorization", None).verify()
    assert caught.value.code == "MissingAuthenticationTokenException"
    assert caught.value.message == "Missing Authentication Token"


def test_header_with_a_stray_space_is_incomplete() -> None:
    wire = _sagemaker()
    broken = wire.headers["authorization"].replace(f"Credential={AKID}/",
                                                   f"Credential={AKID} /")
    with pytest.raises(IncompleteSignature) as caught:
        wire.with_header("authorization", broken).verify()
    scope = broken.split(" /", 1)[1].split(",")[0]
    assert caught.value.message == (
        f"'/{scope}' not a valid key=value pair (missing equal-sign) in Authorization header: "
        f"'{broken}'.")
    assert caught.value.code == "IncompleteSignatureException"
    assert caught.value.http_status == 400


def test_header_missing_parameters_is_incomplete() -> None:
    wire = _sagemaker()
    without_signature = wire.headers["authorization"].rsplit(", Signature=", 1)[0]
    with pytest.raises(IncompleteSignature) as caught:
        wire.with_header("authorization", without_signature).verify()
    assert caught.value.message == (
        f"Authorization header requires 'Signature' parameter. Authorization={without_signature}")


def test_foreign_scheme_without_date_lists_everything_missing() -> None:
    wire = _sagemaker().with_header("authorization", "Bearer abc.def").with_header(
        "x-amz-date", None)
    with pytest.raises(IncompleteSignature) as caught:
        wire.verify()
    assert caught.value.message == (
        "Authorization header requires 'Credential' parameter. "
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        "Authorization=Bearer abc.def")


def test_malformed_date_is_incomplete() -> None:
    with pytest.raises(IncompleteSignature) as caught:
        _sagemaker().with_header("x-amz-date", "2024-01-01T00:00:00Z").verify()
    assert caught.value.message == (
        "Date must be in ISO-8601 'basic format'. Got '2024-01-01T00:00:00Z'. "
        "See http://en.wikipedia.org/wiki/ISO_8601")


def test_host_must_be_signed() -> None:
    wire = _sagemaker()
    header = re.sub(r"SignedHeaders=[^,]+", "SignedHeaders=x-amz-date",
                    wire.headers["authorization"])
    with pytest.raises(InvalidSignature) as caught:
        wire.with_header("authorization", header).verify()
    assert caught.value.message == (
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")


def _basic(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def test_expired_request() -> None:
    wire = _sagemaker()
    now = wire.epoch + 901
    with pytest.raises(InvalidSignature) as caught:
        wire.verify(now=now)
    assert caught.value.message == (
        f"Signature expired: {wire.headers['x-amz-date']} is now earlier than "
        f"{_basic(now - 900)} ({_basic(now)} - 15 min.)")
    assert wire.verify(now=wire.epoch + 899) == AKID


def test_request_from_the_future() -> None:
    wire = _sagemaker()
    now = wire.epoch - 901
    with pytest.raises(InvalidSignature) as caught:
        wire.verify(now=now)
    assert caught.value.message == (
        f"Signature not yet current: {wire.headers['x-amz-date']} is still later than "
        f"{_basic(now + 900)} ({_basic(now)} + 15 min.)")


def test_skew_window_is_configurable() -> None:
    wire = _sagemaker()
    with pytest.raises(InvalidSignature, match=r"\(\d{8}T\d{6}Z - 5 min\.\)$"):
        wire.verify(now=wire.epoch + 301, max_skew_seconds=300)


def test_scope_date_must_match_the_request_date() -> None:
    wire = _sagemaker()
    next_day = wire.epoch + 86400
    moved = wire.with_header("x-amz-date", _basic(next_day))
    with pytest.raises(InvalidSignature) as caught:
        moved.verify(now=next_day)
    assert caught.value.message == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        f"HTTP: '{_basic(wire.epoch)[:8]}' != '{_basic(next_day)[:8]}', "
        f"from '{_basic(next_day)}'.")


def test_scope_terminator_and_shape() -> None:
    wire = _sagemaker()
    header = wire.headers["authorization"]
    with pytest.raises(InvalidSignature) as caught:
        wire.with_header("authorization", header.replace("aws4_request", "aws5_request")).verify()
    assert caught.value.message == (
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'.")
    short = header.replace("/us-west-2/sagemaker/", "/us-west-2/")
    credential = short.split("Credential=")[1].split(",")[0]
    with pytest.raises(IncompleteSignature) as caught_short:
        wire.with_header("authorization", short).verify()
    assert caught_short.value.message == (
        "Credential must have exactly 5 slash-delimited elements, "
        f"e.g. keyid/date/region/service/term, got '{credential}'")


def test_declared_payload_hash_must_match_the_body() -> None:
    wire = CASES["declared-sha256"]()
    message = "The provided 'x-amz-content-sha256' header does not match what was computed."
    with pytest.raises(InvalidSignature) as caught:
        replace(wire, body=b'{"a": 2}').verify()
    assert caught.value.message == message
    # Not signed, the header cannot vouch for a swapped body either.
    plain = _sagemaker()
    swapped = replace(plain, body=b'{"TrainingJobName": "evil"}').with_header(
        "x-amz-content-sha256", hashlib.sha256(plain.body).hexdigest())
    with pytest.raises(InvalidSignature, match=re.escape(message)):
        swapped.verify()


def test_every_auth_error_is_an_auth_error() -> None:
    for exc in (MissingAuthentication, IncompleteSignature, InvalidSignature, UnrecognizedClient):
        assert issubclass(exc, AuthError)


# --- presigned URLs ------------------------------------------------------------------------


def _presign(expires: int = 60, url: str = f"http://{HOST}/?Action=GetCallerIdentity"
             "&Version=2011-06-15") -> Wire:
    request = AWSRequest(method="GET", url=url)
    SigV4QueryAuth(Credentials(AKID, SECRET), "sts", "us-east-1", expires=expires).add_auth(
        request)
    wire = _to_wire(request)
    return wire


def _presigned_epoch(wire: Wire) -> float:
    stamp = parse_qs(wire.query)["X-Amz-Date"][0]
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))


def test_presigned_url_verifies() -> None:
    wire = _presign()
    assert "authorization" not in wire.headers
    assert wire.verify() == AKID


def test_presigned_url_expires() -> None:
    wire = _presign(expires=60)
    signed = _presigned_epoch(wire)
    assert wire.verify(now=signed + 59) == AKID
    now = signed + 61
    with pytest.raises(InvalidSignature) as caught:
        wire.verify(now=now)
    assert caught.value.message == (
        f"Signature expired: {_basic(signed)} is now earlier than {_basic(now - 60)} "
        f"({_basic(now)} - 1 min.)")


def test_presigned_url_tampered_or_incomplete() -> None:
    wire = _presign()
    with pytest.raises(InvalidSignature, match="^The request signature we calculated"):
        replace(wire, query=wire.query.replace("GetCallerIdentity", "GetSessionToken")).verify()
    without_signature = "&".join(p for p in wire.query.split("&")
                                 if not p.startswith("X-Amz-Signature="))
    with pytest.raises(IncompleteSignature) as caught:
        replace(wire, query=without_signature).verify()
    assert caught.value.message == (
        "AWS query-string parameters must include 'X-Amz-Signature'. "
        "Re-examine the query-string parameters.")
    too_long = re.sub(r"X-Amz-Expires=\d+", "X-Amz-Expires=604801", wire.query)
    with pytest.raises(IncompleteSignature, match="must be less than a week"):
        replace(wire, query=too_long).verify()
    with pytest.raises(InvalidSignature) as both:
        wire.with_header("authorization", _sagemaker().headers["authorization"]).verify()
    assert both.value.message == MISMATCH


def test_foreign_query_algorithm_is_no_token() -> None:
    wire = _presign()
    other = wire.query.replace("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS2")
    with pytest.raises(MissingAuthentication, match="^Missing Authentication Token$"):
        replace(wire, query=other).verify()


def test_boto3_generated_presigned_url_verifies() -> None:
    sts = boto3.client("sts", endpoint_url=f"http://{HOST}", region_name="eu-west-1",
                       aws_access_key_id=AKID, aws_secret_access_key=SECRET)
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=120)
    parts = urlsplit(url)
    # botocore presigns with the operation's own method: POST for the query protocol.
    wire = Wire("POST", parts.path, parts.query, {"host": parts.netloc})
    assert wire.verify() == AKID


# --- speed ---------------------------------------------------------------------------------


def test_verification_is_fast() -> None:
    # The server must answer >= 1,000 DescribeTrainingJob/s; authentication is one slice of it.
    wire = _sagemaker()
    wire.verify()
    started = time.perf_counter()
    for _ in range(2000):
        wire.verify()
    assert time.perf_counter() - started < 1.0


# --- real boto3 clients over HTTP ----------------------------------------------------------


class _App:
    """A test-only ASGI app: authenticate with ``sigv4.verify``, answer with canned shapes."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self.secrets = secrets
        self.seen: list[tuple[str, str, str]] = []  # (operation, access key, amz-sdk-request)
        self.failed_once: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        try:
            akid = sigv4.verify(scope["method"], scope["raw_path"].decode("latin-1"),
                                scope["query_string"].decode("latin-1"), headers, body,
                                self.secrets)
        except AuthError as exc:
            payload = json.dumps({"__type": exc.code, "message": exc.message}).encode()
            await _send(send, exc.http_status, "application/x-amz-json-1.1", payload)
            return
        status, content_type, payload, operation = self._answer(scope, headers, body, akid)
        self.seen.append((operation, akid, headers.get("amz-sdk-request", "")))
        await _send(send, status, content_type, payload)

    def _answer(self, scope: dict[str, Any], headers: dict[str, str], body: bytes,
                akid: str) -> tuple[int, str, bytes, str]:
        json_type = "application/x-amz-json-1.1"
        target = headers.get("x-amz-target", "")
        if target == "SageMaker.DescribeTrainingJob":
            name = json.loads(body)["TrainingJobName"]
            if name.startswith("flaky") and name not in self.failed_once:
                self.failed_once.add(name)
                return 500, json_type, b'{"__type": "InternalFailure", "message": "x"}', name
            return 200, json_type, json.dumps({"TrainingJobName": name}).encode(), target
        if target.startswith("SageMaker."):
            return 200, json_type, b'{"TrainingJobSummaries": []}', target
        if target.startswith("Logs_20140328."):
            return 200, json_type, b'{"logStreams": []}', target
        if scope["path"].startswith("/endpoints/"):
            return 200, "application/octet-stream", akid.encode(), scope["path"]
        form = parse_qs(body.decode())
        assert form["Action"] == ["GetCallerIdentity"]
        xml = (
            '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<GetCallerIdentityResult><Arn>arn:aws:iam::000000000000:user/{akid}</Arn>"
            f"<UserId>{akid}</UserId><Account>000000000000</Account></GetCallerIdentityResult>"
            "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>"
        )
        return 200, "text/xml", xml.encode(), "sts.GetCallerIdentity"


async def _send(send: Any, status: int, content_type: str, payload: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"x-amzn-requestid", b"test-request")]})
    await send({"type": "http.response.body", "body": payload})


@dataclass
class Served:
    url: str
    app: _App
    store: KeyStore


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = load_or_create(tmp_path_factory.mktemp("keys"))
    app = _App(store.secrets)
    with serve_in_thread(app, access_log=False, lifespan="off", ws="none", http="h11") as url:
        yield Served(url, app, store)


def _client(served: Served, service: str, *, akid: str | None = None,
            secret: str | None = None, attempts: int = 1) -> Any:
    default_akid, default_secret = served.store.default
    return boto3.client(
        service, endpoint_url=served.url, region_name="eu-west-1",
        aws_access_key_id=akid or default_akid,
        aws_secret_access_key=secret or default_secret,
        config=Config(retries={"mode": "standard", "max_attempts": attempts}),
    )


def test_real_clients_authenticate(served: Served) -> None:
    akid, _ = served.store.default
    sm = _client(served, "sagemaker")
    assert sm.list_training_jobs(MaxResults=5)["TrainingJobSummaries"] == []
    assert sm.describe_training_job(TrainingJobName="job-1")["TrainingJobName"] == "job-1"
    logs = _client(served, "logs")
    assert logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                     logStreamNamePrefix="job-1/")["logStreams"] == []
    assert _client(served, "sts").get_caller_identity()["UserId"] == akid
    runtime = _client(served, "sagemaker-runtime")
    answer = runtime.invoke_endpoint(EndpointName=ODD_ENDPOINT, Body=bytes(range(256)),
                                     ContentType="application/octet-stream",
                                     CustomAttributes="a  b")
    assert answer["Body"].read() == akid.encode()
    operations = [op for op, key, _ in served.app.seen if key == akid]
    assert {"SageMaker.ListTrainingJobs", "SageMaker.DescribeTrainingJob",
            "Logs_20140328.DescribeLogStreams", "sts.GetCallerIdentity"} <= set(operations)
    assert f"/endpoints/{ODD_ENDPOINT}/invocations" in operations


def test_retried_requests_are_signed_anew(served: Served) -> None:
    sm = _client(served, "sagemaker", attempts=3)
    assert sm.describe_training_job(TrainingJobName="flaky-1")["TrainingJobName"] == "flaky-1"
    attempts = [header for op, _, header in served.app.seen if op in {
        "flaky-1", "SageMaker.DescribeTrainingJob"}][-2:]
    assert [re.findall(r"attempt=\d+", a) for a in attempts] == [["attempt=1"], ["attempt=2"]]


def test_real_clients_are_refused_with_aws_errors(served: Served) -> None:
    _, secret = served.store.default
    with pytest.raises(ClientError) as wrong:
        _client(served, "sagemaker", secret=secret[::-1]).list_training_jobs()
    assert wrong.value.response["Error"] == {"Code": "InvalidSignatureException",
                                             "Message": MISMATCH}
    assert wrong.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as unknown:
        _client(served, "sagemaker", akid="SYAKNOBODY0000000000").list_training_jobs()
    assert unknown.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert unknown.value.response["Error"]["Message"] == (
        "The security token included in the request is invalid.")


def test_keys_added_while_serving_are_accepted(served: Served) -> None:
    other = KeyStore.load_or_create(served.store.path.parent)
    akid, secret = other.add()
    try:
        sm = _client(served, "sagemaker", akid=akid, secret=secret)
        assert sm.list_training_jobs()["TrainingJobSummaries"] == []
        assert served.app.seen[-1][1] == akid
    finally:
        other.remove(akid)
    # A removed key stops working within REFRESH_SECONDS (no stat on every request).
    deadline = time.monotonic() + REFRESH_SECONDS + 2
    while True:
        try:
            _client(served, "sagemaker", akid=akid, secret=secret).list_training_jobs()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "UnrecognizedClientException"
            break
        assert time.monotonic() < deadline, "the removed key was still accepted"
        time.sleep(0.1)


def test_client_env_configures_a_fresh_process(served: Served, tmp_path: Path) -> None:
    akid, secret = served.store.default
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **client_env(akid, secret, served.url, "ap-southeast-2"),
    }
    code = ("import boto3; sm = boto3.client('sagemaker'); "
            "print(sm.meta.region_name, sm.list_training_jobs()['TrainingJobSummaries'])")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ap-southeast-2 []"


# --- the key store -------------------------------------------------------------------------


def test_first_use_creates_one_private_key_pair(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = load_or_create(data_dir)
    path = data_dir / CREDENTIALS_FILE
    assert store.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    akid, secret = store.default
    assert re.fullmatch(r"SYAK[A-Z0-9]{16}", akid)
    assert re.fullmatch(r"[A-Za-z0-9_-]{40}", secret)
    assert dict(store.secrets) == {akid: secret}
    document = json.loads(path.read_text())
    assert document["keys"][0]["access_key_id"] == akid
    assert document["keys"][0]["secret_access_key"] == secret


def test_keys_persist_and_are_distinct(tmp_path: Path) -> None:
    first = load_or_create(tmp_path)
    again = load_or_create(tmp_path)
    assert again.default == first.default
    added = {first.add() for _ in range(3)}
    assert len(added) == 3
    reloaded = load_or_create(tmp_path)
    assert dict(reloaded.secrets) == dict([first.default, *added])
    assert reloaded.default == first.default
    assert stat.S_IMODE((tmp_path / CREDENTIALS_FILE).stat().st_mode) == 0o600


def test_remove(tmp_path: Path) -> None:
    store = load_or_create(tmp_path)
    original, _ = store.default
    akid, _ = store.add()
    store.remove(original)
    assert store.default[0] == akid
    assert list(load_or_create(tmp_path).secrets) == [akid]
    with pytest.raises(ResourceNotFound, match=f"Access key {original} does not exist"):
        store.remove(original)
    with pytest.raises(ValidationError, match="is the only one"):
        store.remove(akid)


def test_secrets_view_follows_other_writers(tmp_path: Path) -> None:
    server_side = load_or_create(tmp_path)
    view = server_side.secrets
    cli_side = load_or_create(tmp_path)
    akid, secret = cli_side.add()
    assert view.get(akid) == secret
    cli_side.remove(akid)
    # Known keys are re-checked at most every REFRESH_SECONDS.
    deadline = time.monotonic() + REFRESH_SECONDS + 2
    while view.get(akid) is not None:
        assert time.monotonic() < deadline, "the removed key is still served"
        time.sleep(0.05)
    assert secret not in repr(view)


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    path = tmp_path / CREDENTIALS_FILE
    path.chmod(0o644)
    load_or_create(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_corrupt_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / CREDENTIALS_FILE).write_text("{not json")
    with pytest.raises(StorageError, match="not a valid Shipyard credentials file"):
        load_or_create(tmp_path)


_READER = """
import json, os, sys
path, ready, stop = sys.argv[1:4]
reads = bad = 0
while not os.path.exists(stop):
    with open(path, "rb") as fh:
        raw = fh.read()
    reads += 1
    try:
        assert json.loads(raw)["keys"]
    except Exception:
        bad += 1
    if reads == 1:
        open(ready, "w").close()
print(reads, bad)
"""


def test_writes_are_atomic(tmp_path: Path) -> None:
    store = load_or_create(tmp_path)
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(store.path), str(ready), str(stop)],
        stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert reader.poll() is None and time.monotonic() < deadline, "reader did not start"
            time.sleep(0.01)
        for _ in range(60):
            akid, _ = store.add()
            store.remove(akid)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=30)
    reads, bad = (int(n) for n in out.split())
    assert reads > 0
    assert bad == 0
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == sorted([CREDENTIALS_FILE, CREDENTIALS_FILE + ".lock", "ready", "stop"])


_CREATOR = """
import sys
from shipyard.api.credentials import load_or_create
print(load_or_create(sys.argv[1]).default[0])
"""


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    procs = [subprocess.Popen([sys.executable, "-c", _CREATOR, str(data_dir)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    keys = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(keys) == 1
    assert list(load_or_create(data_dir).secrets) == list(keys)


def test_client_env() -> None:
    assert client_env("SYAKX", "sec", "http://127.0.0.1:8080", "us-east-1") == {
        "AWS_ACCESS_KEY_ID": "SYAKX",
        "AWS_SECRET_ACCESS_KEY": "sec",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:8080",
        "AWS_ENDPOINT_URL_IAM": "http://127.0.0.1:8080",
        "AWS_ENDPOINT_URL_CLOUDWATCH": "http://127.0.0.1:8080",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
