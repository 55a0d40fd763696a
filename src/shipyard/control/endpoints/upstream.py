"""HTTP/1.1 to serving containers from the API's event loop, over pooled keep-alive connections.

InvokeEndpoint's latency target (p50 within 1.5x of a direct request) leaves no room for a new
TCP connection or a general-purpose client per call: requests go out in one write on an idle
connection kept from an earlier call, and the response is parsed with nothing more than the
contract needs (Content-Length or chunked bodies, or a body up to connection close), by
:mod:`shipyard.http1`.

Whole answers (``submit``) are read by a plain ``asyncio.Protocol`` and handed to a callback
from its ``data_received``: no future, no Task, no extra loop iteration between the
container's answer and the client's. The timeout is a timer on the loop. StreamReader and
StreamWriter, an async generator over the body and ``asyncio.wait_for`` (a Task per call) cost
~75 us of the API server's CPU per InvokeEndpoint (``benchmarks/endpoints.py``). Streamed
answers (``stream``) keep the stream-based connection.

Whether a failed request may have reached the container (``UpstreamError.sent``) is read from
the kernel, not guessed from whether the connection was pooled: a request is "not sent" only
when the container's TCP stack acknowledged none of its bytes (see ``_unacked``). A container
killed while our connection to it sat idle closes it (FIN), and a request written before that
FIN reached us gets no acknowledgement (the dead socket answers it with a reset), so it is safe
to send elsewhere. A container that read the request and then closed or crashed acknowledged
it, so it is never sent twice, even on a reused connection: InvokeEndpoint is a POST and the
model may have acted on it. Where the kernel cannot say (no SIOCOUTQ), every request that was
written counts as sent.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

from shipyard import http1
from shipyard.http1 import (
    MAX_HEAD_BYTES,
    ProtocolError,
    chunk_size,
    content_length,
    parse_response_head,
    read_chunked,
    request_bytes,
)

#: Where a container listens: (host, port).
Address = tuple[str, int]
#: The answer is over the caller's ``max_body`` (raised by http1's chunked decoder too).
BodyTooLarge = http1.BodyTooLarge
#: Idle connections kept per container.
_MAX_IDLE = 64

try:
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ  # SIOCOUTQ on a socket
except (ImportError, AttributeError):
    _OUTQ = None


def _unacked(fd: int) -> int | None:
    """Bytes written to socket ``fd`` that its peer's TCP stack has not acknowledged (still
    counted after a reset), or None where the kernel cannot say (not Linux, fd closed)."""
    if _OUTQ is None or fd < 0:
        return None
    try:
        raw = fcntl.ioctl(fd, _OUTQ, b"\0\0\0\0")
    except OSError:
        return None
    value: int = struct.unpack("i", raw)[0]
    return value


def _delivered(fd: int, size: int) -> bool:
    """Whether any of the last ``size`` bytes written to ``fd`` may have reached the peer (the
    bytes of earlier exchanges were all acknowledged: their answers came back)."""
    unacked = _unacked(fd)
    return unacked is None or unacked < size


class UpstreamError(Exception):
    """The container closed, reset or never accepted the connection; ``sent`` says whether it
    may have received the request (only then is trying another instance unsafe)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


#: Called once per exchange: (response, None) or (None, the error).
Done = Callable[["Response | None", "BaseException | None"], None]


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """A stream connection that notes, as it drops, how much of what was written its peer
    never acknowledged: the socket is closed right after ``connection_lost``, before the
    reader's waiter learns of the loss."""

    fd = -1
    unacked_at_loss: int | None = None
    lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.unacked_at_loss = _unacked(self.fd)
        super().connection_lost(exc)


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: _StreamProtocol
    reused: bool = False

    def close(self) -> None:
        self.writer.close()

    def delivered(self, size: int) -> bool:
        """See ``_delivered``."""
        if not self.protocol.lost:
            return _delivered(self.protocol.fd, size)
        unacked = self.protocol.unacked_at_loss
        return unacked is None or unacked < size


class _Exchange(asyncio.Protocol):
    """One pooled connection to a container, answering one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._buf = bytearray()
        self._fd = -1
        #: Bytes of the request in flight (see ``_delivered``).
        self._size = 0
        self._done: Done | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._max_body = 0
        self._status = 0
        self._head: dict[str, str] | None = None
        #: Body bytes still expected; _CHUNKED, or _TO_CLOSE (read until the connection ends).
        self._length = 0

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._fd = sock.fileno()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is None:
            return
        if self._head is not None and self._length == _TO_CLOSE:
            self._finish(Response(self._status, self._head, bytes(self._buf)), None)
        elif self._head is None:
            # Nothing came back. The socket is still open here (the transport closes it after
            # this call), so the kernel can say whether the container took any of the request.
            self._finish(None, UpstreamError(
                "the container closed the connection without answering",
                sent=_delivered(self._fd, self._size)))
        else:
            self._finish(None, UpstreamError("the container broke off its response", sent=True))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._done is None:
            return  # nothing asked: the connection is not reused (see Upstream._send)
        try:
            if self._head is None and not self._parse_head():
                return
            if self._length >= 0:
                if len(buf) >= self._length:
                    body = bytes(buf[:self._length])
                    del buf[:self._length]
                    self._finish(Response(self._status, self._head or {}, body), None)
            elif self._length == _CHUNKED:
                try:
                    done = read_chunked(buf, 0, self._max_body)
                except ProtocolError as exc:
                    raise UpstreamError(f"the container broke off its response: {exc}",
                                        sent=True) from exc
                if done is not None:
                    body, end = done
                    del buf[:end]
                    self._finish(Response(self._status, self._head or {}, body), None)
            elif len(buf) > self._max_body:
                raise BodyTooLarge(f"over {self._max_body} bytes")
        except (UpstreamError, BodyTooLarge) as exc:
            self.fail(exc)

    # -- one exchange ----------------------------------------------------------------------
    def begin(self, done: Done, size: int, max_body: int, timeout: float | None) -> None:
        self._done, self._size, self._max_body = done, size, max_body
        self._head, self._status, self._length = None, 0, 0
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(
                timeout, self.fail, asyncio.TimeoutError())

    def _finish(self, response: Response | None, exc: BaseException | None) -> None:
        done, self._done = self._done, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if done is not None:
            done(response, exc)

    def idle(self) -> bool:
        """Reusable: open, and nothing unread left over from the last answer."""
        return not self.closed and not self._buf

    def fail(self, exc: BaseException) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._finish(None, exc)

    def _parse_head(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise UpstreamError("the container sent an oversized response head", sent=True)
            return False
        if end + 4 > MAX_HEAD_BYTES:
            raise UpstreamError("the container sent an oversized response head", sent=True)
        self._status, head = _parse_head(buf[:end + 4])
        del buf[:end + 4]
        if "chunked" in head.get("transfer-encoding", "").lower():
            self._length = _CHUNKED
        elif "content-length" in head:
            try:
                self._length = content_length(head["content-length"])
            except ProtocolError as exc:
                raise UpstreamError(f"the container sent {exc}", sent=True) from exc
            if self._length > self._max_body:
                raise BodyTooLarge(f"{self._length} bytes")
        else:
            self._length = _TO_CLOSE
            head["connection"] = "close"
        self._head = head
        return True


_CHUNKED = -1
_TO_CLOSE = -2


class Upstream:
    """Connection pools to containers, keyed by (host, port); one per event loop."""

    def __init__(self) -> None:
        self._idle: dict[Address, list[_Conn]] = {}
        self._exchanges: dict[Address, list[_Exchange]] = {}
        #: Exchanges waiting for their answer, so that a container known gone fails them now
        #: rather than at the invocation's timeout (a lost machine never closes them).
        self._busy: dict[Address, set[_Exchange]] = {}
        #: Connection attempts, held until they finish (the loop keeps tasks only weakly).
        self._connecting: dict[asyncio.Task[tuple[asyncio.BaseTransport, _Exchange]],
                               Address] = {}

    async def _connect(self, address: Address, *, pooled: bool = True) -> _Conn:
        idle = self._idle.get(address) if pooled else None
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = _StreamProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(lambda: protocol, *address)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the container: {exc}", sent=False) from exc
        return _Conn(reader, asyncio.StreamWriter(transport, protocol, reader, loop), protocol)

    def _release(self, address: Address, conn: _Conn) -> None:
        idle = self._idle.setdefault(address, [])
        if len(idle) < _MAX_IDLE:
            idle.append(conn)
        else:
            conn.close()

    def forget(self, address: Address, dead: bool = False) -> None:
        """Close idle connections to a container that is going away, and give up connecting to
        it: a dead container's address may take seconds to refuse (no route to host).
        ``dead``: fail the requests waiting on it too (a machine that is gone never answers
        nor closes them); otherwise they finish, as a retired fleet's do."""
        for task in [t for t, a in self._connecting.items() if a == address]:
            del self._connecting[task]
            task.cancel()
        for conn in self._idle.pop(address, []):
            conn.close()
        for exchange in self._exchanges.pop(address, []):
            if exchange.transport is not None:
                exchange.transport.close()
        if not dead:
            return
        for exchange in self._busy.pop(address, set()):
            if exchange.transport is not None:
                exchange.transport.abort()

    def _idle_exchange(self, address: Address) -> _Exchange | None:
        idle = self._exchanges.get(address)
        while idle:
            exchange = idle.pop()
            if exchange.idle():
                exchange.reused = True
                return exchange
            if exchange.transport is not None:
                exchange.transport.close()
        return None

    def submit(self, address: Address, method: str, path: str,
               headers: list[tuple[str, str]], body: bytes, *, max_body: int,
               timeout: float | None, done: Done) -> None:
        """Start one exchange; ``done`` gets the response, or the error, on the loop's thread.

        A stale pooled connection is retried once on a fresh one. Errors: UpstreamError,
        BodyTooLarge, or asyncio.TimeoutError after ``timeout`` seconds (the connection is then
        dropped: the container may still be working on the request).
        """
        self._submit(address, request_bytes(method, path, headers, body), max_body, timeout,
                     done, True)

    def _submit(self, address: Address, data: bytes, max_body: int, timeout: float | None,
                done: Done, may_retry: bool) -> None:
        exchange = self._idle_exchange(address)
        if exchange is not None:
            self._send(address, exchange, data, max_body, timeout, done, may_retry)
            return

        def connected(task: asyncio.Task[tuple[asyncio.BaseTransport, _Exchange]]) -> None:
            forgotten = self._connecting.pop(task, None) is None
            if task.cancelled():
                done(None, UpstreamError("the container went away", sent=False) if forgotten
                     else asyncio.CancelledError())
                return
            exc = task.exception()
            if exc is not None:
                done(None, UpstreamError(f"cannot connect to the container: {exc}", sent=False)
                     if isinstance(exc, OSError) else exc)
                return
            self._send(address, task.result()[1], data, max_body, timeout, done, False)

        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(_Exchange, *address))
        self._connecting[task] = address
        task.add_done_callback(connected)

    def _send(self, address: Address, exchange: _Exchange, data: bytes, max_body: int,
              timeout: float | None, done: Done, may_retry: bool) -> None:
        transport = exchange.transport
        assert transport is not None

        busy = self._busy.setdefault(address, set())
        busy.add(exchange)

        def answered(response: Response | None, exc: BaseException | None) -> None:
            busy.discard(exchange)
            if not busy and self._busy.get(address) is busy:
                del self._busy[address]
            if response is None:
                transport.abort()
                if (may_retry and exchange.reused and isinstance(exc, UpstreamError)
                        and not exc.sent):
                    self._submit(address, data, max_body, timeout, done, False)
                    return
                done(None, exc)
                return
            if response.headers.get("connection", "").lower() == "close" or not exchange.idle():
                transport.close()
            else:
                idle = self._exchanges.setdefault(address, [])
                if len(idle) < _MAX_IDLE:
                    idle.append(exchange)
                else:
                    transport.close()
            done(response, None)

        exchange.begin(answered, len(data), max_body, timeout)
        transport.write(data)

    async def stream(self, address: Address, method: str, path: str,
                     headers: list[tuple[str, str]], body: bytes
                     ) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
        """Status and headers at once; the body's chunks as the container sends them.

        A pooled connection the container had closed is retried once on a fresh one."""
        data = request_bytes(method, path, headers, body)
        conn = await self._connect(address)
        try:
            status, head, reader = await self._exchange(conn, method, data)
        except UpstreamError as exc:
            conn.close()
            if not conn.reused or exc.sent:
                raise
            conn = await self._connect(address, pooled=False)
            try:
                status, head, reader = await self._exchange(conn, method, data)
            except BaseException:
                conn.close()
                raise
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
                    self._release(address, conn)
                else:
                    conn.close()

        return status, head, chunks()

    async def _exchange(self, conn: _Conn, method: str, data: bytes
                        ) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
        try:
            conn.writer.write(data)
            await conn.writer.drain()
        except OSError as exc:
            raise UpstreamError(f"the container closed the connection: {exc}",
                                sent=conn.delivered(len(data))) from exc
        try:
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise UpstreamError("the container sent an oversized response head",
                                sent=True) from exc
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise UpstreamError("the container closed the connection without answering",
                                sent=conn.delivered(len(data))) from exc
        if len(raw) > MAX_HEAD_BYTES:
            raise UpstreamError("the container sent an oversized response head", sent=True)
        status, head = _parse_head(raw)
        return status, head, _body(conn.reader, head, method)


def _parse_head(raw: bytes | bytearray) -> tuple[int, dict[str, str]]:
    try:
        return parse_response_head(raw)
    except ProtocolError as exc:
        raise UpstreamError(f"the container sent a {exc}", sent=True) from exc


async def _body(reader: asyncio.StreamReader, head: dict[str, str], method: str
                ) -> AsyncIterator[bytes]:
    try:
        if method == "HEAD":
            return
        if "chunked" in head.get("transfer-encoding", "").lower():
            while True:
                size = chunk_size((await reader.readuntil(b"\r\n"))[:-2])
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass
                    return
                chunk = await reader.readexactly(size)
                if await reader.readexactly(2) != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                yield chunk
        elif "content-length" in head:
            remaining = content_length(head["content-length"])
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
