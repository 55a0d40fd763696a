"""The event-stream encoder, read back by botocore's own parsers: the generic message buffer
and the sagemaker-runtime response parser that boto3 applies to each event."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import botocore.session
import pytest
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.parsers import EventStreamJSONParser
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.api import eventstream


def decode_all(data: bytes) -> list[Any]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def response_stream_shape() -> Any:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    output = model.operation_model("InvokeEndpointWithResponseStream").output_shape
    return output.members["Body"]


class RawBody:
    """The slice of urllib3's response that botocore's ``EventStream`` reads: ``stream()``."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def stream(self) -> Any:
        for start in range(0, len(self.data), self.step):
            yield self.data[start:start + self.step]


def events(data: bytes, step: int = 1 << 16) -> list[dict[str, Any]]:
    """What iterating boto3's ``response["Body"]`` yields for this body."""
    return list(EventStream(RawBody(data, step), response_stream_shape(),
                            EventStreamJSONParser(), "InvokeEndpointWithResponseStream"))


def test_payload_part_layout_by_hand() -> None:
    message = next(eventstream.payload_parts(b"hello"))
    total, headers_length, prelude_crc = struct.unpack(">III", message[:12])
    assert total == len(message)
    assert prelude_crc == zlib.crc32(message[:8])
    assert struct.unpack(">I", message[-4:])[0] == zlib.crc32(message[:-4])
    assert message[12 + headers_length:-4] == b"hello"
    # first header: name length, ":event-type", type 7 (string), uint16 length, value
    assert message[12:13] == bytes((11,)) and message[13:24] == b":event-type"
    assert message[24] == 7 and message[25:27] == struct.pack(">H", 11)
    assert message[27:38] == b"PayloadPart"


def test_payload_part_parses_as_sagemaker_runtime_event() -> None:
    data = next(eventstream.payload_parts(b'{"token": "a"}'))
    [message] = decode_all(data)
    assert message.headers == {":event-type": "PayloadPart",
                               ":content-type": "application/octet-stream",
                               ":message-type": "event"}
    assert events(data) == [{"PayloadPart": {"Bytes": b'{"token": "a"}'}}]


def test_model_stream_error_parses_as_boto3_raises_it() -> None:
    data = eventstream.exception(eventstream.MODEL_STREAM_ERROR, "container went away",
                                 eventstream.STREAM_BROKEN)
    [message] = decode_all(data)
    assert message.headers[":message-type"] == "exception"
    assert json.loads(message.payload) == {"Message": "container went away",
                                           "ErrorCode": "StreamBroken"}
    with pytest.raises(EventStreamError) as err:
        events(data)
    assert err.value.response["Error"] == {"Code": "ModelStreamError",
                                           "Message": "container went away"}


def test_internal_stream_failure_has_no_error_code() -> None:
    data = eventstream.exception(eventstream.INTERNAL_STREAM_FAILURE, "oops")
    [message] = decode_all(data)
    assert json.loads(message.payload) == {"Message": "oops"}
    with pytest.raises(EventStreamError) as err:
        events(data)
    assert err.value.response["Error"]["Code"] == "InternalStreamFailure"


def test_oversized_chunk_is_split_into_parts_the_parser_accepts() -> None:
    chunk = bytes(range(256)) * ((eventstream.MAX_PAYLOAD_BYTES + 1000) // 256)
    parts = list(eventstream.payload_parts(chunk))
    assert len(parts) == 2
    messages = decode_all(b"".join(parts))
    assert b"".join(m.payload for m in messages) == chunk


def test_corrupted_message_is_refused_by_the_parser() -> None:
    data = bytearray(next(eventstream.payload_parts(b"payload")))
    data[-6] ^= 0xFF  # a payload byte: the message CRC no longer matches
    with pytest.raises(ChecksumMismatch):
        decode_all(bytes(data))


def test_header_limits() -> None:
    with pytest.raises(ValueError, match="255"):
        eventstream.encode_headers([("n" * 256, "v")])
    with pytest.raises(ValueError, match="65535"):
        eventstream.encode_headers([("n", "v" * 65536)])


header_names = st.text(min_size=1, max_size=40).filter(
    lambda s: len(s.encode()) <= 255)
header_values = st.text(max_size=200)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(headers=st.dictionaries(header_names, header_values, max_size=6),
       payload=st.binary(max_size=4096))
def test_any_message_round_trips_through_botocore(headers: dict[str, str],
                                                 payload: bytes) -> None:
    data = eventstream.encode_message(eventstream.encode_headers(list(headers.items())),
                                      payload)
    [message] = decode_all(data)
    assert message.headers == headers
    assert message.payload == payload


@settings(max_examples=100, deadline=None, derandomize=True)
@given(chunks=st.lists(st.binary(max_size=512), max_size=12))
def test_a_stream_of_chunks_reads_back_in_order(chunks: list[bytes]) -> None:
    data = b"".join(part for chunk in chunks for part in eventstream.payload_parts(chunk))
    # The client reads the body in arbitrary slices; the buffer reassembles messages.
    got = [event["PayloadPart"]["Bytes"] for event in events(data, step=7)]
    assert got == chunks
