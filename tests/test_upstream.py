"""Connections to serving containers, against a real socket server: whether a failed request
may have reached the container (``UpstreamError.sent``), which decides if it may go elsewhere."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from shipyard.control.endpoints.upstream import Response, Upstream, UpstreamError
from tests.support.net import unused_port


class Server:
    """HTTP/1.1 keep-alive on a raw socket: answers ``ok``, hangs up on ``hangup`` after
    reading it, and records every request body it read."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.bodies: list[bytes] = []
        self.threads: list[threading.Thread] = []
        self.hang_up = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _read(self, conn: socket.socket) -> bytes:
        # Polls, so that a hang-up closes the socket for real: a close() from another thread
        # while this one sits in recv() would leave it open.
        while True:
            if self.hang_up.is_set():
                raise ConnectionAbortedError
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionAbortedError
            return chunk

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.005)
        data = b""
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        data += self._read(conn)
                    head, _, data = data.partition(b"\r\n\r\n")
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    while len(data) < length:
                        data += self._read(conn)
                    body, data = data[:length], data[length:]
                    self.bodies.append(body)
                    if body == b"hangup":
                        return
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except OSError:
                return

    def hang_up_idle(self) -> None:
        """Close every connection, as a container does when it dies or its keep-alive ends."""
        self.hang_up.set()
        for thread in self.threads:
            thread.join()
        self.threads = []
        self.hang_up.clear()

    def close(self) -> None:
        self.listener.close()
        self.hang_up_idle()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    # The API server runs on uvloop where it is installed; its transports differ.
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    yield loop
    loop.close()


async def submit(upstream: Upstream, address: tuple[str, int], body: bytes) -> Response:
    future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

    def done(response: Response | None, exc: BaseException | None) -> None:
        if response is None:
            future.set_exception(exc or AssertionError("no response"))
        else:
            future.set_result(response)

    upstream.submit(address, "POST", "/invocations", [], body, max_body=1 << 20, timeout=5,
                    done=done)
    return await future


async def streamed(upstream: Upstream, address: tuple[str, int], body: bytes) -> bytes:
    status, _, chunks = await upstream.stream(address, "POST", "/invocations", [], body)
    assert status == 200
    return b"".join([chunk async for chunk in chunks])


def unseen_hang_up(server: Server) -> None:
    """The container closes our pooled connection; its FIN reaches our kernel while the event
    loop is busy (blocked here), so the loop still thinks the connection reusable."""
    server.hang_up_idle()
    time.sleep(0.05)


def test_request_on_a_connection_the_container_had_closed_is_sent_again(
        server: Server, loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> None:
        upstream = Upstream()
        assert (await submit(upstream, server.address, b"one")).body == b"ok"
        unseen_hang_up(server)
        assert (await submit(upstream, server.address, b"two")).body == b"ok"
        assert await streamed(upstream, server.address, b"three") == b"ok"
        unseen_hang_up(server)
        assert await streamed(upstream, server.address, b"four") == b"ok"

    loop.run_until_complete(scenario())
    # "two" and "four" were written into dead connections first: the container never took
    # them there, and took each exactly once on a fresh connection.
    assert server.bodies == [b"one", b"two", b"three", b"four"]


def test_request_the_container_read_is_sent_once_even_on_a_pooled_connection(
        server: Server, loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> None:
        upstream = Upstream()
        assert (await submit(upstream, server.address, b"one")).body == b"ok"
        with pytest.raises(UpstreamError) as err:
            await submit(upstream, server.address, b"hangup")
        assert err.value.sent
        assert await streamed(upstream, server.address, b"two") == b"ok"
        with pytest.raises(UpstreamError) as err:
            await streamed(upstream, server.address, b"hangup")
        assert err.value.sent

    loop.run_until_complete(scenario())
    assert server.bodies == [b"one", b"hangup", b"two", b"hangup"]


def test_refused_connection_is_not_sent(loop: asyncio.AbstractEventLoop) -> None:
    address = ("127.0.0.1", unused_port())  # nothing listens there

    async def scenario() -> None:
        upstream = Upstream()
        with pytest.raises(UpstreamError) as err:
            await submit(upstream, address, b"x")
        assert not err.value.sent
        with pytest.raises(UpstreamError) as err:
            await streamed(upstream, address, b"x")
        assert not err.value.sent

    loop.run_until_complete(scenario())
