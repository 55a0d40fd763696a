"""HTTP/1.1 to serving containers from the API's event loop, over pooled keep-alive connections.

InvokeEndpoint's latency target (p50 within 1.5x of a direct request) leaves no room for a new
TCP connection or a general-purpose client per call: requests go out in one write on an idle
connection kept from an earlier call, and the response is parsed with nothing more than the
contract needs (Content-Length or chunked bodies, or a body up to connection close).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

#: Idle connections kept per container.
_MAX_IDLE = 64
_HEAD_LIMIT = 64 * 1024


class UpstreamError(Exception):
    """The container closed, reset or never accepted the connection; ``sent`` says whether it
    may have received the request (only then is trying another instance unsafe)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class BodyTooLarge(Exception):
    pass


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def close(self) -> None:
        self.writer.close()


class Upstream:
    """Connection pools to containers, keyed by host port; one per event loop."""

    def __init__(self) -> None:
        self._idle: dict[int, list[_Conn]] = {}

    async def _connect(self, port: int) -> _Conn:
        idle = self._idle.get(port)
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the container: {exc}", sent=False) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(reader, writer)

    def _release(self, port: int, conn: _Conn) -> None:
        idle = self._idle.setdefault(port, [])
        if len(idle) < _MAX_IDLE:
            idle.append(conn)
        else:
            conn.close()

    def forget(self, port: int) -> None:
        """Close idle connections to a container that is going away."""
        for conn in self._idle.pop(port, []):
            conn.close()

    async def request(self, port: int, method: str, path: str,
                      headers: list[tuple[str, str]], body: bytes, *,
                      max_body: int) -> Response:
        """One exchange; a stale pooled connection is retried once on a fresh one."""
        for attempt in (0, 1):
            conn = await self._connect(port)
            try:
                status, head, reader = await self._exchange(conn, method, path, headers, body)
                data = b"".join([chunk async for chunk in reader])
                if len(data) > max_body:
                    raise BodyTooLarge(f"{len(data)} bytes")
            except UpstreamError as exc:
                conn.close()
                if conn.reused and attempt == 0 and not exc.sent:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if head.get("connection", "").lower() == "close":
                conn.close()
            else:
                self._release(port, conn)
            return Response(status, head, data)
        raise AssertionError("unreachable")

    async def stream(self, port: int, method: str, path: str,
                     headers: list[tuple[str, str]], body: bytes
                     ) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
        """Status and headers at once; the body's chunks as the container sends them."""
        conn = await self._connect(port)
        try:
            status, head, reader = await self._exchange(conn, method, path, headers, body)
        except BaseException:
            conn.close()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            done = False
            try:
                async for chunk in reader:
                    yield chunk
                done = True
            finally:
                if done and head.get("connection", "").lower() != "close":
                    self._release(port, conn)
                else:
                    conn.close()

        return status, head, chunks()

    async def _exchange(self, conn: _Conn, method: str, path: str,
                        headers: list[tuple[str, str]], body: bytes
                        ) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost",
                 f"Content-Length: {len(body)}"]
        lines.extend(f"{k}: {v}" for k, v in headers)
        try:
            conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await conn.writer.drain()
        except OSError as exc:
            raise UpstreamError(f"the container closed the connection: {exc}",
                                sent=not conn.reused) from exc
        try:
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise UpstreamError("the container sent an oversized response head",
                                sent=True) from exc
        except (asyncio.IncompleteReadError, OSError) as exc:
            # Nothing came back: on a reused connection the container most likely closed it
            # while idle, before our request arrived, so one retry is safe.
            raise UpstreamError("the container closed the connection without answering",
                                sent=not conn.reused) from exc
        if len(raw) > _HEAD_LIMIT:
            raise UpstreamError("the container sent an oversized response head", sent=True)
        status, head = _parse_head(raw)
        return status, head, _body(conn.reader, head, method)


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    text = raw.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise UpstreamError(f"the container sent a malformed status line {status_line!r}",
                            sent=True)
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    if parts[0] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, head: dict[str, str], method: str
                ) -> AsyncIterator[bytes]:
    try:
        if method == "HEAD":
            return
        if "chunked" in head.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return
                chunk = await reader.readexactly(size)
                await reader.readexactly(2)
                yield chunk
        elif "content-length" in head:
            remaining = int(head["content-length"])
            while remaining > 0:
                chunk = await reader.read(min(remaining, 1 << 20))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", remaining)
                remaining -= len(chunk)
                yield chunk
        else:
            head["connection"] = "close"
            while chunk := await reader.read(1 << 20):
                yield chunk
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
        raise UpstreamError(f"the container broke off its response: {exc}", sent=True) from exc
