"""InvokeEndpoint answered on the connection itself, outside ASGI: the API listener's protocol.

InvokeEndpoint is held to 1.5x the latency of a request straight to the container. Through
uvicorn, the ASGI cycle around it (a scope, a request-response cycle object and a Task per
request, message dicts in and out, the coroutines of the app) cost the API server about as much
CPU as everything the request needs itself: reading it, checking its SigV4 signature and
headers, picking an instance, forwarding, answering (``benchmarks/endpoints.py``). So the
listener's protocol answers the plain form of InvokeEndpoint by itself, callbacks end to end:
the request is parsed in ``data_received``, handed to ``ControlPlane.invoke_soon``, and the
answer written from the upstream connection's ``data_received``.

The plain form is ``POST /endpoints/<name>/invocations HTTP/1.1`` with a Content-Length body
within the payload limit and no Transfer-Encoding, Expect, Upgrade or X-Amz-Target, its head
well formed (read by :mod:`shipyard.http1` strictly: header names are tokens, no control
characters, CRLF line ends). Anything else (other operations, response streams, chunked or
oversized uploads, malformed requests) goes to the delegate, uvicorn's own protocol running
the ASGI app, which answers it as before: the connection is handed over whole, between two
requests, with the bytes read so far, and stays with the delegate from then on. What a request
is told (signature, validation, routing, errors) is the same on both paths: they share
``RuntimeApi.authorize``, ``result_headers`` and ``error_response``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from shipyard.api import runtime
from shipyard.control.endpoints.invocation import InvokeResult
from shipyard.http1 import ProtocolError, content_length, parse_request_head, status_line

__all__ = ["FastPath", "FastPathProtocol", "fast_path_protocol"]

#: A request head longer than this is not the plain form (the delegate answers it).
MAX_HEAD_BYTES = 16 * 1024
#: Bytes read ahead of the request being answered (pipelining) before reading pauses.
READ_AHEAD_BYTES = 64 * 1024
#: Bodies up to this size leave in the same write as their head.
JOIN_BELOW_BYTES = 64 * 1024

_PREFIX = runtime.PATH_PREFIX
_SUFFIX = "/invocations"
#: Headers that take a request off the plain form (X-Amz-Target routes a request to the
#: awsJson protocols whatever its path).
_NOT_PLAIN = frozenset({"transfer-encoding", "expect", "upgrade", "x-amz-target"})


class FastPath(Protocol):
    """What the protocol needs of the app: the runtime API (whose plane holds the payload
    limit) and request ids."""

    runtime: runtime.RuntimeApi

    def new_request_id(self) -> str: ...


class _ServerState(Protocol):
    """The part of uvicorn's ServerState the protocol takes part in."""

    connections: set[Any]
    default_headers: list[tuple[bytes, bytes]]


def fast_path_protocol(api: FastPath, delegate: type[asyncio.Protocol]
                       ) -> type[asyncio.Protocol]:
    """A protocol class for uvicorn's ``http=`` setting: InvokeEndpoint's plain form answered
    by :class:`FastPathProtocol`, everything else by ``delegate`` (uvicorn's protocol)."""

    class BoundFastPathProtocol(FastPathProtocol):
        def __init__(self, config: Any, server_state: Any, app_state: Any,
                     _loop: asyncio.AbstractEventLoop | None = None) -> None:
            def make_delegate() -> asyncio.Protocol:
                return delegate(config=config, server_state=server_state,  # type: ignore[call-arg]
                                app_state=app_state, _loop=_loop)

            super().__init__(api, make_delegate, server_state,
                             float(getattr(config, "timeout_keep_alive", 5)))

    return BoundFastPathProtocol


class FastPathProtocol(asyncio.Protocol):
    """One client connection; requests are answered one at a time, in order."""

    def __init__(self, api: FastPath, make_delegate: Callable[[], asyncio.Protocol],
                 server_state: _ServerState, keep_alive_s: float) -> None:
        self._api = api
        self._runtime = api.runtime
        self._make_delegate = make_delegate
        self._state = server_state
        self._keep_alive_s = keep_alive_s
        self._delegate: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._busy = False  # a request is being answered
        self._serving = False  # inside _serve's loop
        self._closing = False  # close once the request being answered is
        self._reading_paused = False
        self._writing_paused = False
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        # The server's default headers (date, server), and their bytes.
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._defaults_head = b""

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._state.connections.add(self)
        self._last_active = time.monotonic()
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._delegate is not None:
            self._delegate.connection_lost(exc)
            return
        self._state.connections.discard(self)
        self._closing = True
        self._cancel_idle_timer()

    def eof_received(self) -> bool | None:
        if self._delegate is not None:
            return self._delegate.eof_received()
        # The client is done sending: answer what it asked, then close.
        self._closing = True
        if not self._busy:
            self._close()
        return True

    def pause_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.pause_writing()
        else:
            self._writing_paused = True

    def resume_writing(self) -> None:
        if self._delegate is not None:
            self._delegate.resume_writing()
            return
        self._writing_paused = False
        if not self._busy:
            self._serve()

    def data_received(self, data: bytes) -> None:
        if self._delegate is not None:
            self._delegate.data_received(data)
            return
        self._buf += data
        self._last_active = time.monotonic()
        if not self._busy and not self._writing_paused:
            self._serve()
        elif len(self._buf) > READ_AHEAD_BYTES and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True

    # -- uvicorn's connection interface --------------------------------------------------
    def shutdown(self) -> None:
        """The server is stopping: finish the request being answered, then close."""
        if self._delegate is not None:
            self._delegate.shutdown()  # type: ignore[attr-defined]
            return
        self._closing = True
        if not self._busy:
            self._close()

    # -- requests --------------------------------------------------------------------------
    def _serve(self) -> None:
        """Answer the buffered requests that are whole, in order, one at a time; hand over
        the first that is not plain. A loop, not recursion, across requests answered at once
        (errors found before forwarding), so a long pipeline cannot exhaust the stack."""
        if self._serving:
            return  # the loop below picks up what is buffered
        self._serving = True
        try:
            while not self._busy and not self._closing and not self._writing_paused:
                if not self._next():
                    return
        finally:
            self._serving = False

    def _next(self) -> bool:
        """Start on the next request; False when there is none (yet) or it was handed over."""
        buf = self._buf
        if not buf or self._delegate is not None:
            return False
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES or not _may_be_plain(buf):
                self._hand_over()
            return False
        parsed = _parse_head(bytes(buf[:end]))
        if parsed is None:
            self._hand_over()
            return False
        target, headers, length, close = parsed
        if length > self._runtime.plane.settings.invoke_max_payload_bytes:
            self._hand_over()  # refused there, without reading the body
            return False
        total = end + 4 + length
        if len(buf) < total:
            return False
        body = bytes(buf[end + 4:total])
        del buf[:total]
        self._busy = True
        self._closing = close
        self._last_active = time.monotonic()
        self._resume_reading()
        self._invoke(target, headers, body)
        return True

    def _invoke(self, target: str, headers: dict[str, str], body: bytes) -> None:
        request_id = self._api.new_request_id()
        path, _, query = target.partition("?")
        try:
            operation, endpoint = runtime.route("POST", path)
            request = self._runtime.authorize(operation, endpoint, "POST", path, query,
                                              headers, body)
        except Exception as exc:
            self._answer_error(exc, request_id)
            return

        def done(result: InvokeResult | None, exc: BaseException | None) -> None:
            # Called from the upstream connection's data_received: nothing may escape here.
            if result is not None:
                try:
                    head = runtime.result_headers(result, request_id)
                except Exception as failure:
                    exc = failure
                else:
                    self._answer(200, head, result.body)
                    return
            self._answer_error(exc or AssertionError("no result"), request_id)

        try:
            self._runtime.plane.invoke_soon(request, done)
        except Exception as exc:
            self._answer_error(exc, request_id)

    def _answer_error(self, exc: BaseException, request_id: str) -> None:
        status, head, payload = runtime.error_response(exc, request_id)
        self._answer(status, head, payload)

    def _answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        transport = self.transport
        self._busy = False
        self._last_active = time.monotonic()
        if transport is None or transport.is_closing():
            return  # the client left: nobody to answer
        defaults = self._state.default_headers
        if defaults is not self._defaults:  # uvicorn puts a new list in place each second
            self._defaults = defaults
            self._defaults_head = b"".join(b"%s: %s\r\n" % pair for pair in defaults)
        lines = [status_line(status), self._defaults_head]
        lines.extend(b"%s: %s\r\n" % pair for pair in headers)
        if self._closing:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        if len(body) < JOIN_BELOW_BYTES:
            lines.append(body)
            transport.write(b"".join(lines))
        else:
            transport.writelines([b"".join(lines), body])
        if self._closing:
            self._close()
        elif self._buf:
            self._serve()

    # -- the connection --------------------------------------------------------------------
    def _hand_over(self) -> None:
        """From now on the delegate owns this connection, starting with the bytes read."""
        assert self.transport is not None
        self._cancel_idle_timer()
        self._state.connections.discard(self)
        delegate = self._delegate = self._make_delegate()
        delegate.connection_made(self.transport)
        if self._writing_paused:
            delegate.pause_writing()
        data, self._buf = bytes(self._buf), bytearray()
        self._resume_reading()
        delegate.data_received(data)

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _close(self) -> None:
        self._cancel_idle_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_idle_timer(self) -> None:
        # One timer per keep-alive period, not one per request: on expiry it closes the
        # connection if it has been idle that long, else waits for the rest of the period.
        delay = self._last_active + self._keep_alive_s - time.monotonic()
        self._idle_timer = asyncio.get_running_loop().call_later(
            max(0.0, delay), self._on_idle_timer)

    def _on_idle_timer(self) -> None:
        self._idle_timer = None
        if self._delegate is not None or self._closing:
            return
        if self._busy:
            # The container is still working on it: idleness counts from the answer.
            self._last_active = time.monotonic()
        elif time.monotonic() - self._last_active >= self._keep_alive_s:
            # Nothing asked, or a request that stopped arriving halfway, for a whole period.
            self._close()
            return
        self._arm_idle_timer()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


def _may_be_plain(partial: bytearray) -> bool:
    """An incomplete head that may still become the plain form (else: hand it over now)."""
    start = b"POST " + _PREFIX.encode()
    n = min(len(partial), len(start))
    return bytes(partial[:n]) == start[:n]


def _parse_head(head: bytes) -> tuple[str, dict[str, str], int, bool] | None:
    """``(target, headers, content length, close after)`` of a plain InvokeEndpoint head, or
    None when it is anything else. Read strictly: a malformed head goes to the delegate, whose
    parser answers 400."""
    try:
        method, target, version, headers = parse_request_head(head, strict=True)
    except ProtocolError:
        return None
    if method != "POST" or version != "HTTP/1.1" or not target.startswith(_PREFIX):
        return None
    if not target.partition("?")[0].endswith(_SUFFIX):
        return None
    if not _NOT_PLAIN.isdisjoint(headers):
        return None
    length = headers.get("content-length", "")
    if len(length) > 12:
        return None
    try:
        size = content_length(length)
    except ProtocolError:
        return None
    close = headers.get("connection", "").lower() == "close"
    return target, headers, size, close
