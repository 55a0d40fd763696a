"""A small HTTP/1.1 server on ``asyncio.Protocol``: ``/ping``, ``/invocations``, and
``/execution-parameters``.

Why not a framework: the platform contract (reference 4.1) needs three routes, keep-alive and
chunked responses; a hand-written protocol avoids ASGI's per-request layers (uvicorn +
Starlette: ~10k req/s on 2 cores) and keeps the toolkit stdlib-only. uvloop is used if present.
The bytes (heads, chunked bodies, limits) are read and written by :mod:`shipyard.http1`.

One request runs at a time per worker process, in the event loop (like a gunicorn sync worker
or an MMS worker), so a CPU-bound handler costs no thread hand-off; workers give concurrency.
The per-request timeout (``SAGEMAKER_MODEL_SERVER_TIMEOUT``) is a ``SIGALRM`` interval timer
that raises inside the handler; the client gets 504. A handler stuck in C code that never
returns to the interpreter is caught by the supervisor's watchdog instead (it kills the worker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from shipyard.http1 import (
    CONTINUE,
    LAST_CHUNK,
    MAX_HEAD_BYTES,
    REASONS,
    BodyTooLarge,
    ProtocolError,
    content_length,
    encode_chunk,
    keeps_alive,
    parse_request_head,
    read_chunked,
    response_head,
)
from shipyard.toolkit.serving.errors import status_of
from shipyard.toolkit.serving.handler import Handler, is_stream
from shipyard.toolkit.serving.settings import ServeSettings

logger = logging.getLogger("shipyard.toolkit.serve")


class HandlerTimeout(BaseException):
    """Raised by the SIGALRM handler inside a request that ran past its timeout.

    A ``BaseException`` so that a handler's own ``except Exception`` cannot swallow it.
    """


def _on_alarm(signum: int, frame: object) -> None:
    raise HandlerTimeout


class Worker:
    """Per-process server state: the handler, readiness, open connections, drain."""

    def __init__(self, settings: ServeSettings, handler: Handler | None,
                 healthy: Callable[[], bool], busy: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self._busy = busy
        self.handler = handler  # None until this process has loaded the model
        self.load_error: str | None = None
        self.healthy = healthy
        self.connections: set[HttpProtocol] = set()
        self.draining = False
        self.drained: asyncio.Future[None] | None = None
        self.exec_params = json.dumps(settings.execution_parameters()).encode()

    def arm(self) -> None:
        """Start a request's clocks: SIGALRM in this process, busy-since for the supervisor."""
        signal.setitimer(signal.ITIMER_REAL, self.settings.timeout_s)
        if self._busy is not None:
            self._busy(time.monotonic())

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if self._busy is not None:
            self._busy(0.0)

    def check_drained(self) -> None:
        if self.draining and not self.connections and self.drained and not self.drained.done():
            self.drained.set_result(None)


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses pipelined requests and answers them in order."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False  # a streamed response is still being written
        self.closing = False
        self.continued = False  # 100 Continue already sent for the request being read

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.worker.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.worker.connections.discard(self)
        self.worker.check_drained()

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self._process()

    # -- parsing -------------------------------------------------------------------------------

    def _process(self) -> None:
        while self.buf and not self.busy and not self.closing:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(431, "request headers too large")
                return
            try:
                method, target, version, headers = parse_request_head(buf[:end])
            except ProtocolError as exc:
                self._fail(400, str(exc))
                return
            limit = self.worker.settings.max_payload_bytes
            start = end + 4
            if headers.get("transfer-encoding", "").lower() == "chunked":
                try:
                    parsed = read_chunked(buf, start, limit)
                except BodyTooLarge:
                    self._fail(413, f"request body exceeds {limit} bytes")
                    return
                except ProtocolError:
                    self._fail(400, "malformed chunked body")
                    return
                if parsed is None:
                    self._continue(headers)
                    return
                body, consumed = parsed
            else:
                try:
                    length = content_length(headers.get("content-length", "0"))
                except ProtocolError:
                    self._fail(400, "bad Content-Length")
                    return
                if length > limit:
                    self._fail(413, f"request body of {length} bytes exceeds "
                               f"SAGEMAKER_MAX_PAYLOAD_IN_MB ({limit} bytes)")
                    return
                consumed = start + length
                if len(buf) < consumed:
                    self._continue(headers)
                    return
                body = buf[start:consumed]
            self.buf = buf[consumed:]
            self.continued = False
            self._dispatch(method, target, headers, body,
                           keeps_alive(version, headers.get("connection", ""))
                           and not self.worker.draining)

    def _continue(self, headers: dict[str, str]) -> None:
        # curl sends `Expect: 100-continue` for large bodies and waits for this line
        if (not self.continued and self.transport is not None
                and headers.get("expect", "").lower() == "100-continue"):
            self.continued = True
            self.transport.write(CONTINUE)

    # -- responses -----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, keep_alive: bool) -> None:
        if self.transport is None or self.closing:
            return
        self.transport.write(response_head(status, content_type, len(body), keep_alive) + body)
        if not keep_alive:
            self.closing = True
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        """Answer an unparseable or refused request and close: the stream cannot be resynced."""
        body = json.dumps({"code": status, "type": REASONS.get(status, "Error"),
                           "message": message}).encode()
        self.buf = b""
        self._send(status, body, "application/json", keep_alive=False)

    def _error(self, exc: BaseException, keep_alive: bool) -> None:
        status = status_of(exc)
        if isinstance(exc, HandlerTimeout):
            status, message = 504, (f"request ran past SAGEMAKER_MODEL_SERVER_TIMEOUT "
                                    f"({self.worker.settings.timeout_s:g} s)")
        else:
            message = str(exc) or type(exc).__name__
        payload: dict[str, Any] = {"code": status, "type": type(exc).__name__, "message": message}
        if status >= 500:
            logger.error("request failed with %d", status, exc_info=exc)
            if self.worker.settings.debug_errors:
                payload["traceback"] = "".join(traceback.format_exception(exc))
        self._send(status, json.dumps(payload).encode(), "application/json", keep_alive)

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes,
                  keep_alive: bool) -> None:
        path = target.split("?", 1)[0]
        worker = self.worker
        if path == "/invocations":
            if method != "POST":
                self._fail(405, "use POST /invocations")
                return
            self._invoke(worker.handler, headers, body, keep_alive)
        elif path == "/ping":
            ok = worker.handler is not None and worker.healthy() and not worker.draining
            self._send(200 if ok else 503, b"" if ok else b'{"status": "Unhealthy"}',
                       "application/json", keep_alive)
        elif path == "/execution-parameters":
            self._send(200, worker.exec_params, "application/json", keep_alive)
        else:
            self._send(404, b"{}", "application/json", keep_alive)

    def _invoke(self, handler: Handler | None, headers: dict[str, str], body: bytes,
                keep_alive: bool) -> None:
        if handler is None:
            message = self.worker.load_error or "model is loading"
            self._send(503, json.dumps({"code": 503, "type": "ServiceUnavailable",
                                        "message": message}).encode(), "application/json",
                       keep_alive)
            return
        try:
            self.worker.arm()
            try:
                context = handler.context_for(headers)
                result, content_type = handler.transform(
                    body, headers.get("content-type"), headers.get("accept"), context)
            finally:
                self.worker.disarm()
        except (Exception, HandlerTimeout) as exc:  # the handler's failure: a 4xx/5xx answer
            self._error(exc, keep_alive)
            return
        if isinstance(result, str):
            result = result.encode()
        elif isinstance(result, (bytearray, memoryview)):
            result = bytes(result)
        if isinstance(result, bytes):
            self._send(200, result, content_type, keep_alive)
        elif is_stream(result):
            self.busy = True
            asyncio.get_running_loop().create_task(
                self._stream(result, content_type, keep_alive))
        else:
            self._send(200, json.dumps(result, default=str).encode(), content_type, keep_alive)

    async def _stream(self, chunks: Iterator[Any], content_type: str, keep_alive: bool) -> None:
        """Chunked transfer encoding: each item the iterator yields is sent as it comes."""
        transport = self.transport
        assert transport is not None
        transport.write(response_head(200, content_type, None, keep_alive))
        try:
            while not self.closing:
                self.worker.arm()
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                finally:
                    self.worker.disarm()
                data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                if data:
                    transport.write(encode_chunk(data))
                await asyncio.sleep(0)  # let the loop flush and serve /ping between chunks
        except (Exception, HandlerTimeout) as exc:
            # headers are gone: the only honest signal left is an unterminated stream
            logger.error("streamed response failed", exc_info=exc)
            self.closing = True
            transport.close()
            return
        finally:
            self.busy = False
        if self.closing:
            return
        transport.write(LAST_CHUNK)
        if not keep_alive:
            self.closing = True
            transport.close()
            return
        self._process()


def install_alarm() -> None:
    """The SIGALRM handler that turns an expired request timer into :class:`HandlerTimeout`."""
    signal.signal(signal.SIGALRM, _on_alarm)
