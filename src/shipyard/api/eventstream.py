"""AWS event-stream messages, the body of InvokeEndpointWithResponseStream (encode side only).

The binary format (AWS "Event stream encoding", the one botocore's ``eventstream.py`` parses)::

    total length   uint32 BE   the whole message, these 4 bytes and the final CRC included
    headers length uint32 BE
    prelude CRC    uint32 BE   CRC32 of the 8 bytes above
    headers        name length uint8, name (UTF-8), value type uint8, value
    payload        raw bytes
    message CRC    uint32 BE   CRC32 of everything before it, prelude CRC included

Shipyard only writes string headers (type 7: length uint16 BE, then UTF-8). sagemaker-runtime's
``ResponseStream`` union has one event, ``PayloadPart`` (its ``Bytes`` member is the payload,
``eventpayload``), and two exceptions that end the stream: ``ModelStreamError`` (``Message``,
``ErrorCode``: ``ModelInvocationTimeExceeded`` or ``StreamBroken``) and
``InternalStreamFailure`` (``Message``); an exception's payload is its members as JSON.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Sequence

__all__ = [
    "CONTENT_TYPE",
    "INTERNAL_STREAM_FAILURE",
    "MAX_PAYLOAD_BYTES",
    "MODEL_INVOCATION_TIME_EXCEEDED",
    "MODEL_STREAM_ERROR",
    "PAYLOAD_PART",
    "STREAM_BROKEN",
    "encode_headers",
    "encode_message",
    "exception",
    "payload_parts",
]

#: The HTTP Content-Type of an event-stream body.
CONTENT_TYPE = "application/vnd.amazon.eventstream"
PAYLOAD_PART = "PayloadPart"
MODEL_STREAM_ERROR = "ModelStreamError"
INTERNAL_STREAM_FAILURE = "InternalStreamFailure"
#: ``ModelStreamError.ErrorCode`` values (sagemaker-runtime's API reference).
MODEL_INVOCATION_TIME_EXCEEDED = "ModelInvocationTimeExceeded"
STREAM_BROKEN = "StreamBroken"
#: Larger chunks are split: botocore's parser refuses payloads over 24 MiB in one message.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
#: total length = prelude (8) + prelude CRC (4) + headers + payload + message CRC (4)
_OVERHEAD = _PRELUDE.size + 2 * _CRC.size


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
    if len(raw_name) > 0xFF:
        raise ValueError(f"event-stream header name over 255 bytes: {name[:40]!r}")
    if len(raw_value) > 0xFFFF:
        raise ValueError(f"event-stream header {name!r} has a value over 65535 bytes")
    return (bytes((len(raw_name),)) + raw_name + bytes((_STRING,))
            + struct.pack(">H", len(raw_value)) + raw_value)


def encode_headers(headers: Sequence[tuple[str, str]]) -> bytes:
    """The headers section: string headers in the order given."""
    return b"".join(_header(name, value) for name, value in headers)


def encode_message(headers: bytes, payload: bytes) -> bytes:
    """One whole message from an encoded headers section and a payload."""
    total = _OVERHEAD + len(headers) + len(payload)
    prelude = _PRELUDE.pack(total, len(headers))
    prelude += _CRC.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(headers, zlib.crc32(prelude)))
    return b"".join((prelude, headers, payload, _CRC.pack(crc)))


# The same three headers precede every chunk: encoded once.
_PAYLOAD_PART_HEADERS = encode_headers((
    (":event-type", PAYLOAD_PART),
    (":content-type", "application/octet-stream"),
    (":message-type", "event"),
))


def payload_parts(chunk: bytes) -> Iterator[bytes]:
    """``PayloadPart`` event messages carrying ``chunk`` (one, unless it is over the limit)."""
    if len(chunk) <= MAX_PAYLOAD_BYTES:
        yield encode_message(_PAYLOAD_PART_HEADERS, chunk)
        return
    view = memoryview(chunk)
    for start in range(0, len(chunk), MAX_PAYLOAD_BYTES):
        yield encode_message(_PAYLOAD_PART_HEADERS, bytes(view[start:start + MAX_PAYLOAD_BYTES]))


def exception(exception_type: str, message: str, error_code: str | None = None) -> bytes:
    """An exception message that ends the stream (``ModelStreamError``, ``InternalStreamFailure``).

    botocore raises it as ``EventStreamError`` with ``Code`` = ``exception_type``, reading
    ``Message`` (and ``ErrorCode``) from the JSON payload.
    """
    members = {"Message": message}
    if error_code is not None:
        members["ErrorCode"] = error_code
    headers = encode_headers((
        (":exception-type", exception_type),
        (":content-type", "application/json"),
        (":message-type", "exception"),
    ))
    return encode_message(headers, json.dumps(members).encode("utf-8"))
