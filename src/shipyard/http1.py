"""HTTP/1.1 on the wire (RFC 9112), as Shipyard's three hand-written endpoints speak it.

The in-container server (:mod:`shipyard.toolkit.serving.protocol`), the API's InvokeEndpoint
fast path (:mod:`shipyard.api.fastpath`) and the platform's client to containers
(:mod:`shipyard.control.endpoints.upstream`) each keep their own connection handling, tuned
for its side and benchmarked; the bytes they share are here: parsing a head, decoding a
chunked body from a buffer, writing a head or a request, status lines and the limits. Pure
functions on bytes, with no objects made per request beyond their results: they sit on
benchmarked paths.

Standard library only: the toolkit ships this module into every image.

Two kinds of failure, each caller mapping them to its own answer (400 or 413 in the container,
a hand-over to uvicorn in the fast path, ``UpstreamError`` on the platform):

- :class:`ProtocolError` (a ``ValueError``): bytes that are not HTTP/1.1 as framed here;
- :class:`BodyTooLarge`: a body past the reader's limit, known before all of it arrived.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = [
    "CONTINUE",
    "LAST_CHUNK",
    "MAX_CHUNK_LINE_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_TRAILER_BYTES",
    "REASONS",
    "STATUS_LINES",
    "BodyTooLarge",
    "ProtocolError",
    "chunk_size",
    "content_length",
    "encode_chunk",
    "keeps_alive",
    "parse_request_head",
    "parse_response_head",
    "read_chunked",
    "request_bytes",
    "response_head",
    "status_line",
]

#: The longest head (start line, header lines, blank line) read: past it, the container
#: server answers 431 while it waits for the head's end, the platform drops a container's answer.
MAX_HEAD_BYTES = 64 * 1024
#: A chunk-size line (size and extensions) longer than this is refused.
MAX_CHUNK_LINE_BYTES = 64 * 1024
#: Trailer fields after the last chunk longer than this are refused.
MAX_TRAILER_BYTES = 64 * 1024

#: Reason phrases by status code.
REASONS = {s.value: s.phrase for s in HTTPStatus}
#: ``HTTP/1.1 <status> <reason>\r\n`` by status code, encoded once.
STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
#: The interim answer to ``Expect: 100-continue``.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: The end of a chunked body: the zero-size chunk and an empty trailer section.
LAST_CHUNK = b"0\r\n\r\n"

#: RFC 9110's token characters, those of a header name: no whitespace, so no obsolete line
#: folding either. Checked with ``bytes.translate`` (a regex cost more than the whole parse).
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Control characters a strict head may not hold (tab, CR and LF aside).
_CONTROL = bytes([*range(0x09), *range(0x0B, 0x0D), *range(0x0E, 0x20), 0x7F])
_HEXDIG = b"0123456789abcdefABCDEF"


class ProtocolError(ValueError):
    """Bytes that break HTTP/1.1's syntax or framing: the connection cannot be read further."""


class BodyTooLarge(Exception):
    """A body over the reader's limit; the message says what is known of its size."""


# -- heads -----------------------------------------------------------------------------------

def parse_request_head(head: bytes, *, strict: bool = False
                       ) -> tuple[str, str, str, dict[str, str]]:
    """``(method, target, version, headers)`` of a request head, without its blank line.

    Header names are lowercased; a repeated name keeps its last value. The default reading is
    lenient, as a server that answers what it can (gunicorn, the SageMaker toolkits): names and
    values are stripped of whitespace, anything with a colon is a header line. ``strict`` is
    for a reader that hands anything unusual to a stricter parser: no control characters, CR
    and LF only as CRLF, names are tokens, one Content-Length, values stripped of spaces and
    tabs only (RFC 9112 5, 6.3).
    """
    if strict:
        crlf = head.count(b"\r\n")
        if (len(head.translate(None, _CONTROL)) != len(head) or head.count(b"\r") != crlf
                or head.count(b"\n") != crlf):
            raise ProtocolError("a control character, or a CR or LF outside a CRLF")
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3:
        raise ProtocolError("malformed request line")
    method, target, version = request_line
    if strict:
        return method, target, version, _strict_fields(lines)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


def _strict_fields(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    names = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError("malformed header line")
        names.append(name)
        key = name.lower()
        if key == "content-length" and key in headers:
            raise ProtocolError("more than one Content-Length")
        headers[key] = value.strip(" \t")
    # Every name checked at once: one translate beats a check per line.
    if not all(names) or "".join(names).encode("latin-1").translate(None, _TOKEN):
        raise ProtocolError("a header name that is not a token")
    return headers


def parse_response_head(head: bytes | bytearray) -> tuple[int, dict[str, str]]:
    """``(status, headers)`` of a response head, with or without its blank line.

    Lenient, as clients are: lines without a colon are skipped. An HTTP/1.0 answer without
    ``Connection: keep-alive`` gets ``connection: close`` added, so that one header says
    whether the connection may be reused.
    """
    status_text, _, rest = head.decode("latin-1").partition("\r\n")
    parts = status_text.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"malformed status line {status_text!r}")
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if parts[0] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(parts[1]), headers


def keeps_alive(version: str, connection: str) -> bool:
    """Whether the connection stays open after this message (RFC 9112 9.3): HTTP/1.1 unless
    ``Connection: close``, HTTP/1.0 only with ``Connection: keep-alive``."""
    connection = connection.lower()
    return connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"


def content_length(value: str) -> int:
    """A Content-Length value: ASCII digits only (RFC 9110 8.6). ``int()`` alone would take
    ``+1``, ``1_0`` and digits other than ASCII, which another reader of the same bytes may
    count differently."""
    if not (value.isascii() and value.isdigit()):
        raise ProtocolError(f"Content-Length {value!r}")
    return int(value)


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; ``Unknown`` for a code without a phrase."""
    return STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()


def response_head(status: int, content_type: str, length: int | None, keep_alive: bool,
                  extra: str = "") -> bytes:
    """A response head with its blank line: Content-Length, or chunked when ``length`` is
    None; ``Connection: close`` unless ``keep_alive``; ``extra`` is more header lines, each
    ending in CRLF."""
    framing = ("Transfer-Encoding: chunked\r\n" if length is None
               else f"Content-Length: {length}\r\n")
    conn = "" if keep_alive else "Connection: close\r\n"
    return (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\n{framing}{conn}{extra}\r\n").encode("latin-1")


def request_bytes(method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                  host: str = "localhost") -> bytes:
    """A whole request, head and body, in one buffer (to go out in one write)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- chunked bodies --------------------------------------------------------------------------

def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``data`` not empty: an empty chunk ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunk_size(line: bytes | bytearray) -> int:
    """The size on a chunk-size line (without its CRLF); extensions are ignored (RFC 9112 7.1).

    Hex digits only: ``int(x, 16)`` alone would take a sign, and a negative size sends a
    decoder back over what it already read.
    """
    size = line.split(b";", 1)[0].strip(b" \t")
    if not size or size.strip(_HEXDIG):
        raise ProtocolError(f"bad chunk size {bytes(line[:32])!r}")
    return int(size, 16)


def read_chunked(buf: bytes | bytearray, start: int, limit: int
                 ) -> tuple[bytes, int] | None:
    """A whole chunked body from ``buf[start:]``: ``(body, offset just past it)``, or None
    while more bytes are needed; call again on the same buffer, grown (each call starts over
    from ``start``).

    Raises :class:`BodyTooLarge` as soon as the chunk sizes read add up past ``limit`` (before
    the data arrives), :class:`ProtocolError` on bad framing. Trailer fields are skipped.
    """
    parts: list[bytes | bytearray] = []
    pos, total = start, 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > MAX_CHUNK_LINE_BYTES:
                raise ProtocolError("chunk-size line too long")
            return None
        size = chunk_size(buf[pos:eol])
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # trailers, then the blank line
            if end < 0:
                if len(buf) - eol > MAX_TRAILER_BYTES:
                    raise ProtocolError("chunked trailers too large")
                return None
            return b"".join(parts), end + 4
        total += size
        if total > limit:
            raise BodyTooLarge(f"over {limit} bytes")
        data = eol + 2
        pos = data + size + 2
        if len(buf) < pos:
            return None
        if not buf.startswith(b"\r\n", pos - 2):
            raise ProtocolError("chunk data not followed by CRLF")
        parts.append(buf[data:pos - 2])
