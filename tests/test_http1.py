"""``shipyard.http1``: the HTTP/1.1 bytes the container server, the fast path and the upstream
client share. Pure functions, tested on bytes; the servers around them have their own tests
(test_toolkit_serve, test_api_runtime, test_upstream)."""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys

import pytest

from shipyard import http1
from shipyard.http1 import (
    BodyTooLarge,
    ProtocolError,
    chunk_size,
    content_length,
    encode_chunk,
    keeps_alive,
    parse_request_head,
    parse_response_head,
    read_chunked,
    request_bytes,
    response_head,
    status_line,
)

BODY = b"hello, " * 10 + b"world"


def chunked(*parts: bytes, trailers: bytes = b"") -> bytes:
    return b"".join(encode_chunk(p) for p in parts) + b"0\r\n" + trailers + b"\r\n"


# -- request heads ---------------------------------------------------------------------------

def test_request_head_lenient() -> None:
    head = (b"POST /invocations?x=1 HTTP/1.1\r\nHost: a\r\n Content-Type :  text/csv \r\n"
            b"X-Empty:\r\nx-dup: 1\r\nX-Dup: 2")
    method, target, version, headers = parse_request_head(head)
    assert (method, target, version) == ("POST", "/invocations?x=1", "HTTP/1.1")
    assert headers == {"host": "a", "content-type": "text/csv", "x-empty": "", "x-dup": "2"}


@pytest.mark.parametrize(("head", "message"), [
    (b"NONSENSE", "malformed request line"),
    (b"GET  / HTTP/1.1", "malformed request line"),
    (b"GET / HTTP/1.1\r\nno-colon-here", "malformed header line"),
], ids=["one-word", "two-spaces", "no-colon"])
def test_request_head_malformed(head: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_request_head(head)
    with pytest.raises(ProtocolError):
        parse_request_head(head, strict=True)


def test_request_head_strict_accepts_what_lenient_reads_the_same() -> None:
    head = b"POST /e/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-A: \tb c\t"
    strict = parse_request_head(head, strict=True)
    assert strict == ("POST", "/e/invocations", "HTTP/1.1",
                      {"host": "a", "content-length": "5", "x-a": "b c"})
    assert parse_request_head(head) == strict


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\nX-A: b\x00c",  # a control character
    b"GET / HTTP/1.1\r\nX-A: b\x7f",  # DEL
    b"GET / HTTP/1.1\r\nX-A: b\rc",  # a bare CR
    b"GET / HTTP/1.1\r\nX-A: b\nc",  # a bare LF
    b"GET / HTTP/1.1\r\nX A: b",  # a name that is not a token
    b"GET / HTTP/1.1\r\nX-A : b",  # whitespace before the colon
    b"GET / HTTP/1.1\r\n\tX-A: b",  # obsolete line folding
    b"GET / HTTP/1.1\r\n: b",  # an empty name
    b"GET / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1",  # two lengths
], ids=["nul", "del", "bare-cr", "bare-lf", "space-in-name", "space-before-colon", "folding",
        "empty-name", "two-lengths"])
def test_request_head_strict_refuses_what_lenient_takes(head: bytes) -> None:
    parse_request_head(head)
    with pytest.raises(ProtocolError):
        parse_request_head(head, strict=True)


def test_strict_keeps_non_ascii_spaces_in_values() -> None:
    # Optional whitespace is spaces and tabs only: a latin-1 NBSP is part of the value.
    head = b"GET / HTTP/1.1\r\nX-A: \xa0b\xa0"
    assert parse_request_head(head, strict=True)[3] == {"x-a": "\xa0b\xa0"}
    assert parse_request_head(head)[3] == {"x-a": "b"}


@pytest.mark.parametrize(("version", "connection", "expected"), [
    ("HTTP/1.1", "", True), ("HTTP/1.1", "Close", False), ("HTTP/1.1", "keep-alive", True),
    ("HTTP/1.0", "", False), ("HTTP/1.0", "Keep-Alive", True), ("HTTP/1.0", "close", False),
])
def test_keeps_alive(version: str, connection: str, expected: bool) -> None:
    assert keeps_alive(version, connection) is expected


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("12", 12), ("007", 7)])
def test_content_length(value: str, expected: int) -> None:
    assert content_length(value) == expected


@pytest.mark.parametrize("value", ["", "-5", "+5", "1_0", " 5", "5 5", "0x10", "\xb2", "\u0665"],
                         ids=["empty", "negative", "plus", "underscore", "space", "two",
                              "hex", "superscript", "arabic-indic"])
def test_content_length_is_ascii_digits_only(value: str) -> None:
    with pytest.raises(ProtocolError):
        content_length(value)


# -- response heads --------------------------------------------------------------------------

def test_response_head_parses_with_or_without_the_blank_line() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A:  b \r\nnot a header\r\n\r\n"
    assert parse_response_head(raw) == (200, {"content-length": "2", "x-a": "b"})
    assert parse_response_head(bytearray(raw[:-4])) == parse_response_head(raw)
    assert parse_response_head(b"HTTP/1.1 204\r\n\r\n") == (204, {})


def test_response_head_http10_closes_unless_keep_alive() -> None:
    assert parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n")[1] == {"connection": "close"}
    kept = parse_response_head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n")[1]
    assert kept == {"connection": "Keep-Alive"}
    assert parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n")[1] == {}


@pytest.mark.parametrize("raw", [b"HTTP/2 200 OK\r\n\r\n", b"HTTP/1.1 OK\r\n\r\n",
                                 b"HTTP/1.1\r\n\r\n", b"\r\n\r\n"])
def test_response_head_malformed_status_line(raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed status line"):
        parse_response_head(raw)


# -- writing ---------------------------------------------------------------------------------

def test_status_lines() -> None:
    assert status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert status_line(424) == b"HTTP/1.1 424 Failed Dependency\r\n"
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"
    assert http1.REASONS[413] == "Request Entity Too Large"


def _read_response(raw: bytes) -> http.client.HTTPResponse:
    class Sock:
        def makefile(self, mode: str) -> io.BytesIO:
            return io.BytesIO(raw)

    response = http.client.HTTPResponse(Sock())  # type: ignore[arg-type]
    response.begin()
    return response


def test_response_head_is_read_by_a_standard_client() -> None:
    whole = _read_response(response_head(200, "application/json", 2, True) + b"{}")
    assert (whole.status, whole.reason, whole.read()) == (200, "OK", b"{}")
    assert whole.getheader("Content-Type") == "application/json" and not whole.will_close
    streamed = _read_response(response_head(200, "text/plain", None, False, "X-A: b\r\n")
                              + encode_chunk(b"ab") + encode_chunk(b"c") + http1.LAST_CHUNK)
    assert streamed.read() == b"abc" and streamed.will_close
    assert streamed.getheader("X-A") == "b"
    assert _read_response(response_head(599, "text/plain", 0, True)).reason == "Unknown"


def test_request_bytes_are_read_back() -> None:
    data = request_bytes("POST", "/invocations", [("Content-Type", "text/csv")], b"1,2")
    head, _, body = data.partition(b"\r\n\r\n")
    assert parse_request_head(head, strict=True) == (
        "POST", "/invocations", "HTTP/1.1",
        {"host": "localhost", "content-length": "3", "content-type": "text/csv"})
    assert body == b"1,2"


# -- chunked bodies --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_chunked_read_whole_with_an_offset_and_what_follows(kind: type[bytes]) -> None:
    data = kind(b"HEAD" + chunked(b"hello, ", b"world") + b"NEXT")
    assert read_chunked(data, 4, 100) == (b"hello, world", len(data) - 4)
    body, _ = read_chunked(data, 4, 100) or (b"", 0)
    assert type(body) is bytes


def test_chunked_in_pieces_is_none_until_whole() -> None:
    data = chunked(BODY[:10], BODY[10:11], BODY[11:], trailers=b"X-Sum: 1\r\nX-B: 2\r\n")
    # Every cut: every byte of every size line, chunk, CRLF and trailer.
    for cut in range(len(data)):
        assert read_chunked(data[:cut], 0, 1000) is None, cut
    assert read_chunked(data, 0, 1000) == (BODY, len(data))


def test_chunked_extensions_and_trailers_are_skipped() -> None:
    data = b"5;name=value\r\nhello\r\n6 ; a\r\n world\r\n0;last\r\nX-T: 1\r\n\r\n"
    assert read_chunked(data, 0, 100) == (b"hello world", len(data))


def test_chunked_empty_body() -> None:
    assert read_chunked(b"0\r\n\r\n", 0, 0) == (b"", 5)


def test_chunked_limit_is_checked_before_the_data_arrives() -> None:
    assert read_chunked(chunked(b"x" * 10), 0, 10) == (b"x" * 10, 20)
    with pytest.raises(BodyTooLarge, match="over 10 bytes"):
        read_chunked(b"5\r\nhello\r\n6\r\n", 0, 10)
    with pytest.raises(BodyTooLarge):
        read_chunked(b"ffffffffffffffffffffffff\r\n", 0, 1 << 30)


@pytest.mark.parametrize("data", [
    b"zz\r\n",  # not hex
    b"\r\n\r\n",  # no size at all
    b"-6\r\nhello\r\n0\r\n\r\n",  # a sign: int() takes it, and walks the decoder backwards
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"1_0\r\n",
    b"5\r\nhelloXX0\r\n\r\n",  # chunk data not followed by CRLF
], ids=["not-hex", "empty", "minus", "plus", "0x", "underscore", "no-crlf-after-data"])
def test_chunked_bad_framing(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        read_chunked(data, 0, 1000)


def test_chunked_unbounded_lines_are_refused() -> None:
    size_line = b"1" + b";" * http1.MAX_CHUNK_LINE_BYTES
    assert read_chunked(size_line[:-1], 0, 10) is None
    with pytest.raises(ProtocolError, match="chunk-size line"):
        read_chunked(size_line, 0, 10)
    trailers = b"0\r\nX: " + b"a" * http1.MAX_TRAILER_BYTES
    with pytest.raises(ProtocolError, match="trailers"):
        read_chunked(trailers, 0, 10)


def test_chunk_size() -> None:
    assert chunk_size(b"1a") == 26
    assert chunk_size(bytearray(b"FF ; ext=1")) == 255
    assert chunk_size(b"\t0") == 0
    with pytest.raises(ProtocolError, match="bad chunk size"):
        chunk_size(b"1 2")


def test_encode_chunk_roundtrip() -> None:
    data = encode_chunk(b"x" * 300) + http1.LAST_CHUNK
    assert data.startswith(b"12c\r\n")
    assert read_chunked(data, 0, 300) == (b"x" * 300, len(data))


# -- the module itself -----------------------------------------------------------------------

def test_public_surface() -> None:
    public = {n for n, o in vars(http1).items()
              if not n.startswith("_") and getattr(o, "__module__", "shipyard.http1")
              == "shipyard.http1" and not isinstance(o, type(http1))}
    assert sorted(http1.__all__) == sorted(public)


def test_import_needs_only_the_standard_library() -> None:
    # The toolkit ships this module into images, where only the standard library exists.
    probe = ("import json, sys; before = set(sys.modules); import shipyard.http1; "
             "print(json.dumps(sorted(set(sys.modules) - before)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    new = {m.split(".")[0] for m in json.loads(result.stdout)}
    assert new - set(sys.stdlib_module_names) - {"shipyard"} == set()
