"""One object's GET or PUT sent outside botocore: the hot path of staging many small objects.

botocore spends ~1 ms of CPU on each small GET or PUT (signing through its request objects,
event hooks, endpoint rules, parsing ~40 modelled headers), which on a small machine is the
whole cost of staging 10,000 objects of 100 KiB and holds the GIL while it runs
(BENCHMARKS.md, "S3 staging vs s5cmd"). Here a request is signed (SigV4, header form, the
payload unsigned) with a signing key kept per day, written in one ``send`` on an idle
keep-alive connection (kept across calls and threads), and its body streamed between the
socket and the file (``sendfile`` for PUTs).

Only the common answer is handled: a GET answered ``200`` with a ``Content-Length`` no larger
than the caller allows, a PUT answered ``200``. Anything else (an error status, a redirect,
a broken connection, a body too large) is :class:`NotDirect`, and the caller sends the same
request through botocore, which gives it its retries, its errors and, for large objects,
its parallel parts. A store that refuses the signature (``403``) turns the direct path off
for that client.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import socket
import ssl
import threading
import urllib.parse
from pathlib import Path

from shipyard import http1
from shipyard.http1 import MAX_HEAD_BYTES, ProtocolError

__all__ = ["DirectS3", "NotDirect"]

_UNSIGNED = "UNSIGNED-PAYLOAD"
_SAFE = "-_.~/"
_RECV_BYTES = 256 * 1024
_TIMEOUT_SECONDS = 60.0


class NotDirect(Exception):
    """The direct request did not get the answer it handles; send it through botocore."""


class DirectS3:
    """Signed GETs and PUTs of whole objects at ``endpoint_url`` (path-style addressing)."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        parts = urllib.parse.urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint_url!r}")
        self._tls = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if self._tls else 80))
        self._host = parts.netloc
        self._base = parts.path.rstrip("/")
        self._region = region
        self._lock = threading.Lock()
        #: Connections between requests, each used by one request at a time.
        self._idle: list[socket.socket] = []
        self._keys: tuple[str, bytes] | None = None
        self._context = ssl.create_default_context() if self._tls else None
        #: Off once the store refused our signature: every request then goes via botocore.
        self.enabled = True

    # -- requests ------------------------------------------------------------------------
    def get(self, bucket: str, key: str, dest: Path, credentials: tuple[str, str, str | None],
            max_bytes: int) -> None:
        """The object's body into ``dest`` (made or truncated). Raises :class:`NotDirect`."""
        head = self._head("GET", bucket, key, credentials, 0)
        with open(dest, "wb") as out:
            self._exchange(head, None, 0, out, max_bytes)

    def put(self, bucket: str, key: str, source: Path,
            credentials: tuple[str, str, str | None], max_bytes: int) -> None:
        """``source`` as the object's body, when it is at most ``max_bytes``. Raises
        :class:`NotDirect`."""
        with open(source, "rb") as body:
            size = os.fstat(body.fileno()).st_size
            if size > max_bytes:
                raise NotDirect(f"{size} bytes: more than one request takes")
            head = self._head("PUT", bucket, key, credentials, size)
            self._exchange(head, body, size, None, 0)

    # -- the wire ------------------------------------------------------------------------
    def _head(self, method: str, bucket: str, key: str,
              credentials: tuple[str, str, str | None], length: int) -> bytes:
        key_id, secret, token = credentials
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        path = f"{self._base}/{bucket}/{key}"
        canonical_path = urllib.parse.quote(path, safe=_SAFE)
        headers = [("host", self._host), ("x-amz-content-sha256", _UNSIGNED),
                   ("x-amz-date", stamp)]
        if token:
            headers.append(("x-amz-security-token", token))
        signed = ";".join(name for name, _ in headers)
        canonical = "\n".join([
            method, canonical_path, "", *(f"{n}:{v}" for n, v in headers), "", signed,
            _UNSIGNED])
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._signing_key(secret, day), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        lines = [f"{method} {canonical_path} HTTP/1.1",
                 *(f"{n}: {v}" for n, v in headers),
                 f"Authorization: AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
                 f"SignedHeaders={signed}, Signature={signature}",
                 f"Content-Length: {length}", "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def _signing_key(self, secret: str, day: str) -> bytes:
        kept = self._keys
        if kept is not None and kept[0] == f"{day}/{secret}":
            return kept[1]
        key = f"AWS4{secret}".encode()
        for part in (day, self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._keys = (f"{day}/{secret}", key)
        return key

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=_TIMEOUT_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._context is not None:
            return self._context.wrap_socket(sock, server_hostname=self._address[0])
        return sock

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            _close(sock)

    def _exchange(self, head: bytes, body: object, length: int, out: object,
                  max_bytes: int) -> None:
        """Send ``head`` (and ``length`` bytes of the file ``body``), read the answer;
        a 200's body goes to the file ``out`` (when given)."""
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        try:
            if sock is None:
                sock = self._connect()
                status, headers, rest = self._request(sock, head, body, length)
            else:
                try:
                    status, headers, rest = self._request(sock, head, body, length)
                except (OSError, ProtocolError):
                    # A kept connection the store had closed meanwhile: once more, afresh.
                    _close(sock)
                    if body is not None:
                        body.seek(0)  # type: ignore[attr-defined]
                    sock = self._connect()
                    status, headers, rest = self._request(sock, head, body, length)
            size = http1.content_length(headers.get("content-length", ""))
            if status != 200 or (out is not None and size > max_bytes):
                if status == 403:
                    self.enabled = False
                raise NotDirect(f"HTTP {status}")
            self._read_body(sock, rest, size, out)
        except (OSError, ProtocolError, NotDirect) as exc:
            if sock is not None:
                _close(sock)  # chunked, unframed, unread or broken: not reused
            if isinstance(exc, NotDirect):
                raise
            raise NotDirect(str(exc)) from exc
        if headers.get("connection", "").lower() == "close":
            _close(sock)
            return
        with self._lock:
            self._idle.append(sock)

    def _request(self, sock: socket.socket, head: bytes, body: object, length: int
                 ) -> tuple[int, dict[str, str], bytes]:
        self._send(sock, head, body, length)
        return self._read_head(sock)

    def _send(self, sock: socket.socket, head: bytes, body: object, length: int) -> None:
        if body is None or not length:
            sock.sendall(head)
            return
        sock.sendall(head)
        if self._context is None:
            sent = sock.sendfile(body, 0, length)  # type: ignore[arg-type]
        else:
            sent = 0
            while chunk := body.read(_RECV_BYTES):  # type: ignore[attr-defined]
                sock.sendall(chunk)
                sent += len(chunk)
        if sent != length:
            raise OSError(f"sent {sent} of {length} bytes")

    @staticmethod
    def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
        buf = bytearray()
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                status, headers = http1.parse_response_head(bytes(buf[:end]))
                return status, headers, bytes(buf[end + 4:])
            if len(buf) > MAX_HEAD_BYTES:
                raise ProtocolError("response head too long")
            data = sock.recv(_RECV_BYTES)
            if not data:
                raise OSError("the store closed the connection")
            buf += data

    @staticmethod
    def _read_body(sock: socket.socket, rest: bytes, size: int, out: object) -> None:
        if len(rest) > size:
            raise OSError("more bytes than the Content-Length")
        if out is not None:
            out.write(rest)  # type: ignore[attr-defined]
        left = size - len(rest)
        buf = bytearray(min(_RECV_BYTES, max(left, 1)))
        view = memoryview(buf)
        while left > 0:
            n = sock.recv_into(view, min(left, len(buf)))
            if not n:
                raise OSError(f"the store closed the connection {left} bytes short")
            if out is not None:
                out.write(view[:n])  # type: ignore[attr-defined]
            left -= n


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
