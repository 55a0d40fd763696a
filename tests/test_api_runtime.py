"""sagemaker-runtime through boto3's own client, against a real server on an ephemeral port and
a real endpoint behind it: the process runtime runs a stdlib ``serve`` program (no engine
needed; ``ECHO_SERVE`` in tests/support/workloads.py), which echoes what it received, fails,
or streams chunks as the body asks."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EventStreamError

from shipyard.api import runtime
from shipyard.api.fastpath import FastPathProtocol
from shipyard.api.server import ApiServer
from shipyard.control import ControlPlane
from shipyard.runtimes import ProcessRuntime
from shipyard.settings import Settings
from tests.support.api import Api, delete_endpoints, deploy, serving, session
from tests.support.jobs import ACCOUNT
from tests.support.workloads import serve_project

ENDPOINT = "rt-ep"
#: Small, so the over-the-limit tests send little.
PAYLOAD_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("runtime")
    settings = Settings.load({"data_dir": str(data / "state"), "api_port": 0,
                              "runtime": "process", "stop_grace_seconds": 2,
                              "invoke_max_payload_bytes": PAYLOAD_LIMIT,
                              "invoke_timeout_seconds": 10}, environ={})
    plane = ControlPlane(settings)
    assert isinstance(plane.ctx.runtime, ProcessRuntime)
    with serving(settings, plane) as client:
        try:
            record = deploy(client, ENDPOINT, serve_project(data / "project"))
            assert record["EndpointStatus"] == "InService", record.get("FailureReason")
            yield client
        finally:
            delete_endpoints(client, plane)


def error_of(exc: ClientError) -> tuple[int, str, str]:
    response = exc.response
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"],
            response["Error"]["Message"])


# -- InvokeEndpoint --------------------------------------------------------------------------


def test_invoke_round_trip_with_every_header(api: Api) -> None:
    response = api.rt.invoke_endpoint(
        EndpointName=ENDPOINT, Body=b"1,2,3", ContentType="text/csv",
        Accept="application/json", CustomAttributes="c=1", InferenceId="inf-7",
        TargetVariant="AllTraffic")
    reply = json.loads(response["Body"].read())
    assert reply == {"body": "1,2,3", "size": 5, "sha256": hashlib.sha256(b"1,2,3").hexdigest(),
                     "headers": {
        "Content-Type": "text/csv", "Accept": "application/json",
        "X-Amzn-SageMaker-Custom-Attributes": "c=1", "X-Amzn-SageMaker-Target-Model": None,
        "X-Amzn-SageMaker-Inference-Id": "inf-7"}}
    assert response["ContentType"] == "application/x-echo"  # the container's, as it said it
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["CustomAttributes"] == "seen=1"
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_invoke_binary_body_arrives_byte_for_byte(api: Api) -> None:
    body = bytes(range(256)) * 100
    response = api.rt.invoke_endpoint(EndpointName=ENDPOINT, Body=body,
                                      ContentType="application/octet-stream")
    assert json.loads(response["Body"].read())["sha256"] == hashlib.sha256(body).hexdigest()


def test_invoke_missing_endpoint_is_validation_error(api: Api) -> None:
    with pytest.raises(ClientError) as err:
        api.rt.invoke_endpoint(EndpointName="nope", Body=b"x")
    assert error_of(err.value) == (400, "ValidationError",
                                   f"Endpoint nope of account {ACCOUNT} not found.")


def test_container_error_is_model_error_with_its_members(api: Api) -> None:
    with pytest.raises(ClientError) as err:
        api.rt.invoke_endpoint(EndpointName=ENDPOINT, Body=b"fail")
    status, code, message = error_of(err.value)
    assert (status, code) == (424, "ModelError")
    assert message.startswith('Received client error (400) from primary with message '
                              '"bad input: fail"')
    assert type(err.value).__name__ == "ModelError"  # botocore's modelled exception class
    assert err.value.response["OriginalStatusCode"] == 400
    assert err.value.response["OriginalMessage"] == "bad input: fail"
    assert err.value.response["LogStreamArn"].startswith(
        f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{ENDPOINT}")


def test_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    with pytest.raises(ClientError) as err:
        api.rt.invoke_endpoint(EndpointName=ENDPOINT, Body=b"x" * (PAYLOAD_LIMIT + 1))
    assert error_of(err.value) == (
        400, "ValidationError", "1 validation error detected: Value at 'body' failed to "
        f"satisfy constraint: Member must have length less than or equal to {PAYLOAD_LIMIT}")
    # Exactly at the limit passes.
    response = api.rt.invoke_endpoint(EndpointName=ENDPOINT, Body=b"y" * PAYLOAD_LIMIT)
    assert json.loads(response["Body"].read())["size"] == PAYLOAD_LIMIT


def test_chunked_body_over_the_limit_is_refused_while_reading(api: Api) -> None:
    status, headers, body = api.raw(f"/endpoints/{ENDPOINT}/invocations",
                                    b"z" * (PAYLOAD_LIMIT * 3), chunked=True)
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationError"
    assert "less than or equal to" in json.loads(body)["message"]
    status, _, body = api.raw(f"/endpoints/{ENDPOINT}/invocations", b"small", chunked=True)
    assert status == 200 and json.loads(body)["body"] == "small"


def test_header_constraints_from_the_model(api: Api) -> None:
    with pytest.raises(ClientError) as err:
        api.rt.invoke_endpoint(EndpointName=ENDPOINT, Body=b"x",
                               CustomAttributes="a" * 1025, TargetVariant="no_underscores")
    status, code, message = error_of(err.value)
    assert (status, code) == (400, "ValidationError")
    # Custom attributes are sensitive in the model: their value is not echoed.
    assert message == (
        "2 validation errors detected: Value at 'customAttributes' failed to satisfy "
        "constraint: Member must have length less than or equal to 1024; Value "
        "'no_underscores' at 'targetVariant' failed to satisfy constraint: Member must "
        "satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*")


def test_bad_endpoint_name_in_the_path(api: Api) -> None:
    status, headers, body = api.raw("/endpoints/bad_name/invocations", b"x")
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationError"
    assert json.loads(body) == {"message": (
        "1 validation error detected: Value 'bad_name' at 'endpointName' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        "^[a-zA-Z0-9](-*[a-zA-Z0-9])*")}


def test_endpoint_name_is_url_decoded(api: Api) -> None:
    status, _, body = api.raw("/endpoints/rt%2Dep/invocations", b"decoded")
    assert status == 200, body
    assert json.loads(body)["body"] == "decoded"


def test_bad_signature_is_refused_in_rest_json_form(api: Api) -> None:
    status, headers, body = api.raw(f"/endpoints/{ENDPOINT}/invocations", b"x",
                                    secret="not-the-secret")
    assert status == 403
    assert headers["x-amzn-errortype"] == "InvalidSignatureException"
    assert headers["content-type"] == "application/json"
    assert "signature we calculated does not match" in json.loads(body)["message"]
    bad = session(api.akid, "wrong").client(
        "sagemaker-runtime", endpoint_url=api.url, config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as err:
        bad.invoke_endpoint(EndpointName=ENDPOINT, Body=b"x")
    assert error_of(err.value)[:2] == (403, "InvalidSignatureException")


def test_unsigned_request_is_refused(api: Api) -> None:
    address = urlsplit(api.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        conn.request("POST", f"/endpoints/{ENDPOINT}/invocations", body=b"x")
        response = conn.getresponse()
        assert response.status == 403
        assert response.getheader("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
        response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(("method", "path"), [
    ("POST", f"/endpoints/{ENDPOINT}/async-invocations"),
    ("GET", f"/endpoints/{ENDPOINT}/invocations"),
    ("POST", f"/endpoints/{ENDPOINT}/invocations/extra"),
    ("POST", "/endpoints/"),
], ids=["async", "get", "deeper", "no-name"])
def test_unknown_runtime_routes(api: Api, method: str, path: str) -> None:
    status, headers, _ = api.raw(path, b"", method=method)
    assert status == 400
    assert headers["x-amzn-errortype"] == "UnknownOperationException"


def test_header_rules_match_botocores_model() -> None:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    for operation in (runtime.INVOKE, runtime.INVOKE_STREAM):
        rules = runtime.header_rules(operation)
        shape = model.operation_model(operation).input_shape
        headers = {m.serialization["name"].lower(): m for m in shape.members.values()
                   if m.serialization.get("location") == "header"}
        assert set(rules) == set(headers), operation
        for name, member in headers.items():
            rule = rules[name]
            meta = member.metadata
            assert (rule.low, rule.high, rule.pattern, rule.sensitive) == (
                meta.get("min"), meta.get("max"), meta.get("pattern"),
                bool(meta.get("sensitive"))), (operation, name)
        name_shape = shape.members["EndpointName"]
        assert runtime.ENDPOINT_NAME_RULE.high == name_shape.metadata["max"]
        assert runtime.ENDPOINT_NAME_RULE.pattern == name_shape.metadata["pattern"]
        body = shape.members["Body"].metadata
        assert body["max"] == 6291456 and body["sensitive"]


# -- InvokeEndpointWithResponseStream --------------------------------------------------------


def test_stream_arrives_as_payload_parts(api: Api) -> None:
    response = api.rt.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=b"stream:5", ContentType="text/plain", Accept="text/x-tokens")
    assert response["ContentType"] == "text/x-tokens"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    assert b"".join(parts) == b"".join(f"token {i};".encode() for i in range(5))


def test_stream_accept_travels_as_its_own_header(api: Api) -> None:
    response = api.rt.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=b"echo", ContentType="text/plain",
        Accept="application/jsonlines", CustomAttributes="k=v")
    data = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"])
    reply = json.loads(data)
    assert reply["headers"]["Accept"] == "application/jsonlines"
    assert reply["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "k=v"
    assert response["CustomAttributes"] == "seen=1"


def test_stream_broken_midway_ends_with_model_stream_error(api: Api) -> None:
    response = api.rt.invoke_endpoint_with_response_stream(EndpointName=ENDPOINT,
                                                           Body=b"stream:3:break")
    parts = []
    with pytest.raises(EventStreamError) as err:
        for event in response["Body"]:
            parts.append(event["PayloadPart"]["Bytes"])
    assert err.value.response["Error"]["Code"] == "ModelStreamError"
    assert b"".join(parts).startswith(b"token 0;token 1;token 2;")


def test_stream_errors_before_it_starts_are_plain_errors(api: Api) -> None:
    with pytest.raises(ClientError) as err:
        api.rt.invoke_endpoint_with_response_stream(EndpointName=ENDPOINT, Body=b"fail")
    assert error_of(err.value)[:2] == (424, "ModelError")
    with pytest.raises(ClientError) as err:
        api.rt.invoke_endpoint_with_response_stream(EndpointName="nope", Body=b"x")
    assert error_of(err.value) == (400, "ValidationError",
                                   f"Endpoint nope of account {ACCOUNT} not found.")


def test_client_that_hangs_up_mid_stream_leaves_the_endpoint_serving(api: Api) -> None:
    path = f"/endpoints/{ENDPOINT}/invocations-response-stream"
    request = AWSRequest(method="POST", url=f"{api.url}{path}", data=b"stream:200")
    SigV4Auth(Credentials(api.akid, api.secret), "sagemaker", "us-east-1").add_auth(request)
    address = urlsplit(api.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    conn.request("POST", path, body=b"stream:200", headers=dict(request.headers.items()))
    response = conn.getresponse()
    assert response.status == 200
    assert response.read(20)  # the first event has arrived
    conn.close()
    response = api.rt.invoke_endpoint(EndpointName=ENDPOINT, Body=b"after")
    assert json.loads(response["Body"].read())["body"] == "after"


# -- the listener's fast path (api.fastpath) -------------------------------------------------
# Plain InvokeEndpoint requests are answered by the listener's own protocol; anything else on
# a connection goes to uvicorn's, for good. These talk raw HTTP/1.1 over one socket.


def signed(api: Api, path: str, body: bytes, *, extra: dict[str, str] | None = None,
           secret: str | None = None, chunked: bool = False) -> bytes:
    """The bytes of a SigV4-signed request, as a client puts them on the wire."""
    headers = {"Content-Type": "text/plain", **(extra or {})}
    request = AWSRequest(method="POST", url=f"{api.url}{path}", data=body, headers=headers)
    SigV4Auth(Credentials(api.akid, secret or api.secret), "sagemaker",
              "us-east-1").add_auth(request)
    lines = [f"POST {path} HTTP/1.1", f"Host: {urlsplit(api.url).netloc}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def invocation(api: Api, body: bytes, **kwargs: Any) -> bytes:
    return signed(api, f"/endpoints/{ENDPOINT}/invocations", body, **kwargs)


class Wire:
    """One client connection; reads whole Content-Length responses, in order."""

    def __init__(self, api: Api) -> None:
        address = urlsplit(api.url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed; unread: {self.buf!r}")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire(api: Api) -> Iterator[Wire]:
    conn = Wire(api)
    yield conn
    conn.close()


def echoed(response: tuple[int, dict[str, str], bytes]) -> str:
    status, _, body = response
    assert status == 200, body
    return str(json.loads(body)["body"])


def handled_by(api: Api, wire: Wire) -> str:
    """Which protocol serves ``wire`` in the server: "fast" (api.fastpath) or "asgi"."""
    state = api.server.server.server_state
    for _ in range(100):
        try:
            connections = list(state.connections)
            break
        except RuntimeError:  # changed while copied (the server's thread adds and removes)
            continue
    ours = [c for c in connections
            if c.transport.get_extra_info("peername") == wire.sock.getsockname()]
    assert len(ours) == 1
    return "fast" if isinstance(ours[0], FastPathProtocol) else "asgi"


def test_pipelined_invocations_are_answered_in_order(api: Api, wire: Wire) -> None:
    # Two errors the fast path answers at once, between requests it forwards.
    wire.send(invocation(api, b"one") + invocation(api, b"x", secret="wrong")
              + signed(api, "/endpoints/nope/invocations", b"x") + invocation(api, b"sleep:0.2")
              + invocation(api, b"three"))
    assert echoed(wire.response()) == "one"
    status, headers, _ = wire.response()
    assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    status, headers, body = wire.response()
    assert (status, json.loads(body)["message"]) == (
        400, f"Endpoint nope of account {ACCOUNT} not found.")
    assert echoed(wire.response()) == "sleep:0.2"
    assert echoed(wire.response()) == "three"
    assert handled_by(api, wire) == "fast"


def test_a_long_pipeline_of_refusals_is_answered_whole(api: Api, wire: Wire) -> None:
    request = signed(api, "/endpoints/nope/invocations", b"")
    wire.send(request * 2000)
    statuses = {wire.response()[0] for _ in range(2000)}
    assert statuses == {400}


def test_a_connection_moves_to_asgi_for_anything_else(api: Api, wire: Wire) -> None:
    wire.send(invocation(api, b"fast"))
    assert echoed(wire.response()) == "fast"
    assert handled_by(api, wire) == "fast"
    wire.send(invocation(api, b"chunked", chunked=True))
    assert echoed(wire.response()) == "chunked"
    assert handled_by(api, wire) == "asgi"
    wire.send(invocation(api, b"after"))  # plain again, now answered through ASGI
    assert echoed(wire.response()) == "after"
    assert handled_by(api, wire) == "asgi"
    # A control-plane call on the same connection.
    body = b"{}"
    request = AWSRequest(method="POST", url=f"{api.url}/", data=body, headers={
        "X-Amz-Target": "SageMaker.ListEndpoints",
        "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(api.akid, api.secret), "sagemaker", "us-east-1").add_auth(request)
    head = ["POST / HTTP/1.1", f"Host: {urlsplit(api.url).netloc}",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in request.headers.items())]
    wire.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    status, _, answer = wire.response()
    assert status == 200
    assert ENDPOINT in [e["EndpointName"] for e in json.loads(answer)["Endpoints"]]


def test_both_paths_answer_errors_alike(api: Api) -> None:
    cases = [({"secret": "wrong"}, b"x"), ({}, b"fail"),
             ({"extra": {"X-Amzn-SageMaker-Target-Variant": "no_such_variant"}}, b"x"),
             ({"extra": {"X-Amzn-SageMaker-Custom-Attributes": "a" * 1025}}, b"x")]
    for kwargs, body in cases:
        answers = []
        for chunked in (False, True):
            conn = Wire(api)
            try:
                conn.send(invocation(api, body, chunked=chunked, **kwargs))
                status, headers, payload = conn.response()
            finally:
                conn.close()
            document = json.loads(payload)
            answers.append((status, headers["x-amzn-errortype"], headers["content-type"],
                            document))
            assert headers["x-amzn-requestid"]
        assert answers[0] == answers[1], kwargs


@pytest.mark.parametrize("line", [b"no colon here", b"Bad Name: x", b" folded: line",
                                  b"X-Nul: a\x00b", b"X-Escape: \x1b[0m"],
                         ids=["no-colon", "space-in-name", "folded", "nul", "escape"])
def test_a_malformed_head_gets_400(api: Api, wire: Wire, line: bytes) -> None:
    wire.send(f"POST /endpoints/{ENDPOINT}/invocations HTTP/1.1\r\nHost: x\r\n".encode()
              + line + b"\r\nContent-Length: 1\r\n\r\nx")
    status, _, _ = wire.response()
    assert status == 400


def test_a_declared_body_over_the_limit_is_refused_unread(api: Api, wire: Wire) -> None:
    head = invocation(api, b"").replace(b"Content-Length: 0",
                                        f"Content-Length: {PAYLOAD_LIMIT + 1}".encode())
    wire.send(head)  # and none of the body
    status, headers, body = wire.response()
    assert (status, headers["x-amzn-errortype"]) == (400, "ValidationError")
    assert "less than or equal to" in json.loads(body)["message"]


def test_expect_continue_is_answered(api: Api, wire: Wire) -> None:
    request = invocation(api, b"continued", extra={"Expect": "100-continue"})
    head, _, body = request.partition(b"\r\n\r\n")
    wire.send(head + b"\r\n\r\n")
    while b"\r\n\r\n" not in wire.buf:
        wire._fill()
    assert wire.buf.startswith(b"HTTP/1.1 100 ")
    wire.buf = wire.buf.partition(b"\r\n\r\n")[2]
    wire.send(body)
    assert echoed(wire.response()) == "continued"


def test_connection_close_is_honoured(api: Api, wire: Wire) -> None:
    wire.send(invocation(api, b"last", extra={"Connection": "close"}))
    response = wire.response()
    assert echoed(response) == "last"
    assert response[1]["connection"] == "close"
    assert response[1]["date"]  # the server's default headers, as on the ASGI path
    assert wire.closed_by_server()


def test_a_client_gone_mid_invocation_leaves_the_endpoint_serving(api: Api) -> None:
    gone = Wire(api)
    gone.send(invocation(api, b"sleep:0.3"))
    gone.close()
    conn = Wire(api)
    try:
        conn.send(invocation(api, b"still here"))
        assert echoed(conn.response()) == "still here"
    finally:
        conn.close()


def test_idle_connections_close_after_the_keep_alive_period(api: Api) -> None:
    config = api.server.config
    saved = config.timeout_keep_alive
    config.timeout_keep_alive = 1  # read when the server accepts a connection
    conn = Wire(api)
    try:
        conn.send(invocation(api, b"keep"))
        assert echoed(conn.response()) == "keep"  # accepted by now
        config.timeout_keep_alive = saved
        conn.sock.settimeout(5)
        started = time.monotonic()
        assert conn.closed_by_server()
        assert 0.5 < time.monotonic() - started < 4
    finally:
        config.timeout_keep_alive = saved
        conn.close()


def test_stopping_the_server_closes_idle_fast_path_connections(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "api_port": 0,
                              "runtime": "process"}, environ={})
    plane = ControlPlane(settings)
    server = ApiServer(settings, plane)
    client = Api(server, server.start_in_thread())
    conn = Wire(client)
    try:
        conn.send(signed(client, "/endpoints/nope/invocations", b"x"))
        assert conn.response()[0] == 400  # answered by the fast path; now idle
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3
        conn.sock.settimeout(5)
        assert conn.closed_by_server()
    finally:
        conn.close()
        plane.close()
