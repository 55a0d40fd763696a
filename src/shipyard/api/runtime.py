"""sagemaker-runtime (rest-json) on the control plane's listener: InvokeEndpoint and
InvokeEndpointWithResponseStream.

Routes (botocore's ``sagemaker-runtime`` model, platform-api.md 3.9 and 4.2)::

    POST /endpoints/{EndpointName}/invocations                  InvokeEndpoint
    POST /endpoints/{EndpointName}/invocations-response-stream  InvokeEndpointWithResponseStream

The body is the raw payload; parameters travel in headers. This is the hot path (the benchmark
holds it to 1.5x a direct request to the container), so nothing here goes through botocore's
model: the header rules below are the model's, written out (``test_api_runtime`` checks them
against botocore), the body is read with the payload limit checked before it is read whole,
and the answer leaves as one ``http.response.start`` plus one body message, which the server's
coalescing transport writes to the socket at once. The plain form of InvokeEndpoint does not
reach the ASGI code here at all: the listener's protocol (``api.fastpath``) answers it with the
same ``authorize``, ``result_headers`` and ``error_response``.

Errors leave in rest-json's envelope: the code in ``x-amzn-ErrorType``, the text in
``{"message"}``; ``ModelError`` adds ``OriginalStatusCode``, ``OriginalMessage`` and
``LogStreamArn`` to the body, where botocore reads modelled error members.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote

from shipyard.api import eventstream, sigv4
from shipyard.api.asgi import Receive, Scope, Send
from shipyard.control.endpoints.invocation import (
    CUSTOM_ATTRIBUTES_HEADER,
    INVOKED_VARIANT_HEADER,
    InvokeDone,
    InvokeRequest,
    InvokeResult,
    InvokeStream,
)
from shipyard.errors import (
    InvokeValidationError,
    ModelError,
    ShipyardError,
    UnknownOperation,
)
from shipyard.settings import Settings

__all__ = ["PATH_PREFIX", "RuntimeApi", "error_response", "header_rules", "result_headers", "route"]

log = logging.getLogger(__name__)


PATH_PREFIX = "/endpoints/"
INVOKE = "InvokeEndpoint"
INVOKE_STREAM = "InvokeEndpointWithResponseStream"
#: The last path segment of each operation (InvokeEndpointAsync is not served).
OPERATIONS = {"invocations": INVOKE, "invocations-response-stream": INVOKE_STREAM}
STREAM_CONTENT_TYPE_HEADER = "X-Amzn-SageMaker-Content-Type"
STREAM_ACCEPT_HEADER = "X-Amzn-SageMaker-Accept"

ERROR_CONTENT_TYPE = b"application/json"


class Rule(NamedTuple):
    """One request member's constraints, as sagemaker-runtime's model states them."""

    member: str  # the camelCase name AWS's messages use
    low: int | None
    high: int | None
    pattern: str  # as the model writes it (shown in messages)
    sensitive: bool = False


# Patterns of the model, in Python. ``\p{ASCII}``: 0-127; ``\p{Print}`` (Java, ASCII-only by
# default): 0x20-0x7E; ``\S`` is Java's ASCII whitespace complement.
_ASCII = r"\p{ASCII}*"
_PRINTABLE = r"\A\S[\p{Print}]*\z"
_NAME = "^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
_COMPONENT = r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$"
_COMPILED = {
    _ASCII: re.compile(r"[\x00-\x7f]*"),
    _PRINTABLE: re.compile(r"[\x21-\x7e][\x20-\x7e]*"),
    _NAME: re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*"),
    _COMPONENT: re.compile(r"[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?"),
    ".*": re.compile(r"[^\n\r\u0085\u2028\u2029]*"),
}
_SESSION = {
    INVOKE: "^(NEW_SESSION)$|^[a-zA-Z0-9](-*[a-zA-Z0-9])*$",
    INVOKE_STREAM: "^[a-zA-Z0-9](-*[a-zA-Z0-9])*$",
}
_COMPILED[_SESSION[INVOKE]] = re.compile(r"NEW_SESSION|[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_COMPILED[_SESSION[INVOKE_STREAM]] = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")

ENDPOINT_NAME_RULE = Rule("endpointName", None, 63, _NAME)


def header_rules(operation: str) -> dict[str, Rule]:
    """Lower-cased request header -> its rule, for ``operation`` (botocore 1.44's model)."""
    rules = {
        "content-type": Rule("contentType", None, 1024, _ASCII),
        "x-amzn-sagemaker-custom-attributes": Rule("customAttributes", None, 1024, _ASCII,
                                                   sensitive=True),
        "x-amzn-sagemaker-target-variant": Rule("targetVariant", None, 63, _NAME),
        "x-amzn-sagemaker-target-container-hostname": Rule("targetContainerHostname", None,
                                                           63, _NAME),
        "x-amzn-sagemaker-inference-id": Rule("inferenceId", 1, 64, _PRINTABLE),
        "x-amzn-sagemaker-inference-component": Rule("inferenceComponentName", None, 63,
                                                     _COMPONENT),
        "x-amzn-sagemaker-session-id": Rule("sessionId", None, 256, _SESSION[operation]),
        "x-amzn-sagemaker-prefix-aware-id": Rule("prefixAwareId", 1, 64, _PRINTABLE),
    }
    if operation == INVOKE:
        rules["accept"] = Rule("accept", None, 1024, _ASCII)
        rules["x-amzn-sagemaker-target-model"] = Rule("targetModel", 1, 1024, _PRINTABLE)
        rules["x-amzn-sagemaker-enable-explanations"] = Rule("enableExplanations", 1, 64, ".*")
    else:
        rules["x-amzn-sagemaker-accept"] = Rule("accept", None, 1024, _ASCII)
    return rules


_RULES = {operation: tuple(header_rules(operation).items()) for operation in OPERATIONS.values()}
_CUSTOM_ATTRIBUTES = CUSTOM_ATTRIBUTES_HEADER.lower()
_CUSTOM_ATTRIBUTES_BYTES = _CUSTOM_ATTRIBUTES.encode()
_INVOKED_VARIANT_BYTES = INVOKED_VARIANT_HEADER.lower().encode()
_STREAM_CONTENT_TYPE_BYTES = STREAM_CONTENT_TYPE_HEADER.lower().encode()
_EVENT_STREAM_CONTENT_TYPE = eventstream.CONTENT_TYPE.encode()


class _Disconnected(Exception):
    """The client went away before its request body was read: nobody to answer."""


class Invoker(Protocol):
    """What the runtime API needs of whoever routes invocations: the control plane, or the
    data-plane process (``api.dataplane``)."""

    @property
    def settings(self) -> Settings: ...

    def invoke_soon(self, request: InvokeRequest, done: InvokeDone) -> None: ...

    async def invoke(self, request: InvokeRequest) -> InvokeResult: ...

    async def invoke_stream(self, request: InvokeRequest) -> InvokeStream: ...


class RuntimeApi:
    """The rest-json runtime routes; ``ShipyardApi`` hands it requests under ``/endpoints/``."""

    def __init__(self, plane: Invoker, secrets: Mapping[str, str]) -> None:
        self.plane = plane
        self.secrets = secrets

    async def __call__(self, scope: Scope, receive: Receive, send: Send,
                       headers: Mapping[str, str], request_id: str) -> None:
        try:
            raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
            raw = raw_path.decode("latin-1").split("?", 1)[0]
            operation, endpoint = route(scope["method"], raw)
            limit = self.plane.settings.invoke_max_payload_bytes
            body = await _read_body(receive, headers, limit)
            request = self.authorize(operation, endpoint, scope["method"], raw,
                                     scope.get("query_string", b"").decode("latin-1"),
                                     headers, body)
            if operation == INVOKE:
                result = await self.plane.invoke(request)
                await send({"type": "http.response.start", "status": 200,
                            "headers": result_headers(result, request_id)})
                await send({"type": "http.response.body", "body": result.body})
            else:
                await self._invoke_stream(receive, send, request, request_id)
        except _Disconnected:
            return
        except Exception as exc:
            status, head, payload = error_response(exc, request_id)
            await send({"type": "http.response.start", "status": status, "headers": head})
            await send({"type": "http.response.body", "body": payload})

    def authorize(self, operation: str, endpoint: str, method: str, raw_path: str, query: str,
                  headers: Mapping[str, str], body: bytes) -> InvokeRequest:
        """The request, once its signature and its headers pass (a ShipyardError if not)."""
        sigv4.verify(method, raw_path, query, headers, body, self.secrets)
        return _request(operation, endpoint, headers, body)

    async def _invoke_stream(self, receive: Receive, send: Send, request: InvokeRequest,
                             request_id: str) -> None:
        # Errors until the container's answer starts (no such endpoint, a ModelError status)
        # are plain HTTP errors; after that they travel inside the event stream.
        stream = await self.plane.invoke_stream(request)
        try:
            await self._send_stream(receive, send, stream, request_id)
        finally:
            # Whatever happened, the iterator is finished: its cleanup frees the instance.
            await _close(stream, request_id)

    async def _send_stream(self, receive: Receive, send: Send, stream: InvokeStream,
                           request_id: str) -> None:
        headers = [
            (b"content-type", _EVENT_STREAM_CONTENT_TYPE),
            (b"x-amzn-requestid", request_id.encode()),
            (_INVOKED_VARIANT_BYTES, stream.variant.encode("latin-1")),
            (_STREAM_CONTENT_TYPE_BYTES, stream.content_type.encode("latin-1")),
        ]
        if stream.custom_attributes:
            headers.append((_CUSTOM_ATTRIBUTES_BYTES, stream.custom_attributes.encode("latin-1")))
        for name, value in stream.extra.items():
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # A client that hangs up should stop the container's work, not just our writes.
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        pump = asyncio.ensure_future(_pump(send, stream, request_id))
        try:
            await asyncio.wait((pump, gone), return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
                return
            tail = pump.result()
        finally:
            gone.cancel()
        await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _close(stream: InvokeStream, request_id: str) -> None:
    """Finish the chunk iterator (its cleanup releases the instance); the answer has started,
    so a failure here can only be logged."""
    close = getattr(stream.chunks, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        log.error("stream %s did not close cleanly:\n%s", request_id, traceback.format_exc())


async def _pump(send: Send, stream: InvokeStream, request_id: str) -> bytes:
    """Send each chunk as PayloadPart events; returns what ends the stream (b"" or an error)."""
    try:
        async for chunk in stream.chunks:
            if chunk:
                for message in eventstream.payload_parts(chunk):
                    await send({"type": "http.response.body", "body": message,
                                "more_body": True})
    except (TimeoutError, asyncio.TimeoutError):
        return eventstream.exception(
            eventstream.MODEL_STREAM_ERROR, "The model did not finish its response in time.",
            eventstream.MODEL_INVOCATION_TIME_EXCEEDED)
    except ShipyardError as exc:
        return eventstream.exception(eventstream.MODEL_STREAM_ERROR, exc.message,
                                     eventstream.STREAM_BROKEN)
    except Exception as exc:
        log.error("stream %s failed:\n%s", request_id, traceback.format_exc())
        return eventstream.exception(
            eventstream.INTERNAL_STREAM_FAILURE,
            f"Internal error ({type(exc).__name__}); request id {request_id}")
    return b""


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def route(method: str, raw_path: str) -> tuple[str, str]:
    """``(operation, endpoint name)`` of ``/endpoints/{EndpointName}/<operation>``."""
    parts = raw_path.split("/")
    operation = OPERATIONS.get(parts[-1]) if len(parts) == 4 else None
    if operation is None or method != "POST":
        raise UnknownOperation(f"Shipyard does not implement sagemaker-runtime {method} "
                               f"{raw_path[:200]} (docs/api.md lists what it implements)")
    # The name is a URI label: percent-encoded on the wire (botocore quotes it).
    return operation, unquote(parts[2])


async def _read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole body, refused as soon as it is known to be over ``limit``."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> InvokeValidationError:
    # Body is a sensitive blob in the model: AWS's message does not echo it.
    return InvokeValidationError(
        "1 validation error detected: Value at 'body' failed to satisfy constraint: "
        f"Member must have length less than or equal to {limit}")


def _request(operation: str, endpoint: str, headers: Mapping[str, str],
             body: bytes) -> InvokeRequest:
    errors = list(_broken(endpoint, ENDPOINT_NAME_RULE))
    for name, rule in _RULES[operation]:
        value = headers.get(name)
        if value is not None:
            errors.extend(_broken(value, rule))
    if errors:
        count = len(errors)
        raise InvokeValidationError(f"{count} validation error{'' if count == 1 else 's'} "
                                    "detected: " + "; ".join(errors))
    stream = operation == INVOKE_STREAM
    return InvokeRequest(
        endpoint=endpoint,
        body=body,
        content_type=headers.get("content-type"),
        accept=headers.get("x-amzn-sagemaker-accept" if stream else "accept"),
        custom_attributes=headers.get(_CUSTOM_ATTRIBUTES),
        target_model=None if stream else headers.get("x-amzn-sagemaker-target-model"),
        target_variant=headers.get("x-amzn-sagemaker-target-variant"),
        inference_id=headers.get("x-amzn-sagemaker-inference-id"),
    )


def _broken(value: str, rule: Rule) -> tuple[str, ...]:
    """AWS's messages for each rule ``value`` breaks (length rules first, as Coral orders them).

    Short values are checked once: clients send the same few content types and accept lists
    over and over, and the patterns are a good part of InvokeEndpoint's own cost."""
    if len(value) <= _CACHED_VALUE_CHARS:
        return _broken_cached(value, rule)
    return _check(value, rule)


_CACHED_VALUE_CHARS = 256


def _check(value: str, rule: Rule) -> tuple[str, ...]:
    rules = []
    if rule.high is not None and len(value) > rule.high:
        rules.append(f"Member must have length less than or equal to {rule.high}")
    if rule.low is not None and len(value) < rule.low:
        rules.append(f"Member must have length greater than or equal to {rule.low}")
    # Past four times its length limit a value is not matched (some patterns backtrack, and
    # the length rule already refuses it), as api.validation does.
    if (len(value) <= 4 * (rule.high or 1024)
            and _COMPILED[rule.pattern].fullmatch(value) is None):
        rules.append(f"Member must satisfy regular expression pattern: {rule.pattern}")
    shown = "" if rule.sensitive else f" '{value}'"
    return tuple(f"Value{shown} at '{rule.member}' failed to satisfy constraint: {text}"
                 for text in rules)


_broken_cached = lru_cache(maxsize=512)(_check)


def result_headers(result: InvokeResult, request_id: str) -> list[tuple[bytes, bytes]]:
    """InvokeEndpoint's response headers for ``result`` (its body is the answer as is)."""
    headers = [
        (b"content-length", str(len(result.body)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
        (_INVOKED_VARIANT_BYTES, result.variant.encode("latin-1")),
    ]
    if result.content_type:
        headers.append((b"content-type", result.content_type.encode("latin-1")))
    if result.custom_attributes:
        headers.append((_CUSTOM_ATTRIBUTES_BYTES, result.custom_attributes.encode("latin-1")))
    return headers


def error_response(exc: BaseException, request_id: str
                   ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of rest-json's error envelope for ``exc``; anything but a
    ShipyardError is logged with its traceback and answered as an internal error."""
    if not isinstance(exc, ShipyardError):
        log.error("request %s failed:\n%s", request_id, "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)))
        exc = ShipyardError(f"Internal error ({type(exc).__name__}); request id {request_id}")
    document: dict[str, Any] = {"message": exc.message}
    if isinstance(exc, ModelError):
        document["OriginalStatusCode"] = exc.original_status_code
        document["OriginalMessage"] = exc.original_message
        if exc.log_stream_arn:
            document["LogStreamArn"] = exc.log_stream_arn
    payload = json.dumps(document).encode()
    return exc.http_status, [
        (b"content-type", ERROR_CONTENT_TYPE),
        (b"content-length", str(len(payload)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-errortype", exc.code.encode()),
    ], payload
