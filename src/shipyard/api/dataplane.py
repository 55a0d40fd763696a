"""The data plane: a process of its own that owns the API's port and answers InvokeEndpoint,
so invocations go on while the control plane restarts (an upgrade, a crash, kill -9).

SageMaker's data plane does not depend on its control plane; neither does Shipyard's:

- This process listens on the API's address. On each connection, the listener's protocol
  (``api.fastpath``) answers the plain form of InvokeEndpoint itself, routing by what the
  control plane recorded in the state database (``Router.adopt_routes``, reloaded
  within 50 ms of any change, noticed through SQLite's ``data_version``).
- Any other request passes its whole connection, with the bytes read of it, to the control
  plane (``api.handoff``), which serves it as if it had accepted it. While no control plane
  runs, such a request is answered 503 ServiceUnavailable, which the AWS SDKs retry.
- A fleet the control plane retires (blue/green, delete) is stopped only once this process
  routes nothing to it (``drain`` on this process's own socket).
- It outlives the control plane: SIGTERM or kill -9 of the server leaves it serving, and the
  next server attaches to it. ``shipyard server stop`` stops both; a data plane left with no
  control plane for ``dataplane_orphan_seconds`` stops by itself.

``<data_dir>/dataplane.json`` says where it listens and which process it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any, cast

from shipyard.api import handoff
from shipyard.api.app import RequestIds
from shipyard.api.credentials import load_or_create
from shipyard.api.fastpath import FastPathProtocol
from shipyard.api.processes import process_start, run_loop, write_json
from shipyard.api.runtime import RuntimeApi
from shipyard.control.endpoints.invocation import (
    InvokeDone,
    InvokeRequest,
    InvokeResult,
    InvokeStream,
)
from shipyard.control.endpoints.router import Router
from shipyard.settings import Settings

__all__ = ["DataPlane", "DataPlaneInfo", "drain", "info_path", "main", "read_info"]

log = logging.getLogger(__name__)

#: How often the routes are checked for a change.
ROUTES_POLL_SECONDS = 0.05
#: How often the control plane is looked for (to stop when it has been gone too long).
ORPHAN_CHECK_SECONDS = 5.0
#: How long a stopping data plane lets requests in flight finish.
STOP_GRACE_SECONDS = 10.0
_UNAVAILABLE = json.dumps({
    "__type": "ServiceUnavailable",
    "message": "Shipyard's control plane is not running (restarting?); retry in a moment. "
               "InvokeEndpoint is answered meanwhile."}).encode()


def info_path(data_dir: Path) -> Path:
    return data_dir / "dataplane.json"


class DataPlaneInfo:
    def __init__(self, url: str, pid: int, process_start: int | None) -> None:
        self.url, self.pid, self.process_start = url, pid, process_start


def read_info(data_dir: Path) -> DataPlaneInfo | None:
    try:
        data = json.loads(info_path(data_dir).read_text(encoding="utf-8"))
        return DataPlaneInfo(str(data["url"]), int(data["pid"]),
                             None if data.get("process_start") is None
                             else int(data["process_start"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def drain(data_dir: Path, containers: list[str], timeout: float) -> None:
    """Block until the data plane of ``data_dir`` routes nothing to ``containers`` and has no
    request in flight on them (or ``timeout``); at once when no data plane runs."""
    name = handoff.socket_name(data_dir, "dataplane")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout + 5)
        try:
            sock.connect(name)
        except OSError:
            return  # none runs: nothing routes there
        request = {"op": "drain", "containers": containers, "timeout": timeout}
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = _read_line(sock)
    if not json.loads(answer or b"{}").get("drained"):
        raise TimeoutError(f"the data plane still routes to {', '.join(containers)}")


def _read_line(sock: socket.socket) -> bytes:
    """One JSON line of the admin protocol; what came before the peer closed otherwise."""
    data = b""
    while not data.endswith(b"\n"):
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


class _ServerState:
    """The part of uvicorn's server state the listener's protocol uses."""

    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self.default_headers: list[tuple[bytes, bytes]] = []

    def refresh(self) -> None:
        # As uvicorn does once a second: a new list, so protocols see the change.
        self.default_headers = [(b"date", formatdate(usegmt=True).encode()),
                                (b"server", b"uvicorn")]


class DataPlane:
    """Routes and answers InvokeEndpoint; hands every other connection to the control plane."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Routes only: deploying and healing belong to the control plane.
        self.endpoints = Router.standalone(settings)
        self.runtime = RuntimeApi(self, load_or_create(settings.data_dir).secrets)
        self.state = _ServerState()
        self._ids = RequestIds()
        self._control = handoff.socket_name(settings.data_dir, "control")
        self._stop = threading.Event()
        self._routes_changed = threading.Event()
        #: The read of the routes under way for invocations that found no route, and the one
        #: those that came meanwhile wait for.
        self._reload: asyncio.Future[None] | None = None
        self._next_reload: asyncio.Future[None] | None = None

    # -- what the runtime API and the listener's protocol need ------------------------------
    def new_request_id(self) -> str:
        return self._ids()

    def invoke_soon(self, request: InvokeRequest, done: InvokeDone) -> None:
        if self.endpoints.routes(request.endpoint):
            self.endpoints.invoke_soon(request, done)
            return
        # No route: the endpoint may have gone InService since the last look (a client that
        # saw DescribeEndpoint say so invokes at once). Answer after a read of the routes
        # that starts after this request came; one read at a time, however many wait.
        waiting = self._next_reload
        if waiting is None:
            waiting = self._next_reload = asyncio.get_running_loop().create_future()
            if self._reload is None or self._reload.done():
                self._start_reload()
        waiting.add_done_callback(lambda _: self.endpoints.invoke_soon(request, done))

    def _start_reload(self) -> None:
        waiting, self._next_reload = self._next_reload, None
        self._reload = asyncio.get_running_loop().run_in_executor(
            None, self.endpoints.adopt_routes)

        def finished(_: asyncio.Future[None]) -> None:
            if waiting is not None:
                waiting.set_result(None)
            if self._next_reload is not None:
                self._start_reload()

        self._reload.add_done_callback(finished)

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        return await self.endpoints.invoke(request)

    async def invoke_stream(self, request: InvokeRequest) -> InvokeStream:
        return await self.endpoints.invoke_stream(request)

    # -- running ---------------------------------------------------------------------------
    async def run(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.endpoints.adopt_routes()
        self.state.refresh()
        server = await loop.create_server(self._protocol, host=host, port=port)
        bound = server.sockets[0].getsockname()
        admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        admin.bind(handoff.socket_name(self.settings.data_dir, "dataplane"))
        admin.listen(16)
        threads = [threading.Thread(target=target, name=name, daemon=True) for target, name in (
            (self._follow_routes, "dataplane-routes"), (lambda: self._serve_admin(admin),
                                                        "dataplane-admin"),
            (self._watch_control, "dataplane-orphan"))]
        for thread in threads:
            thread.start()
        write_json(info_path(self.settings.data_dir), {
            "url": f"http://{bound[0]}:{bound[1]}", "pid": os.getpid(),
            "process_start": process_start(os.getpid())})
        log.warning("data plane listening on http://%s:%s", bound[0], bound[1])
        try:
            while not self._stop.is_set():
                await asyncio.sleep(1.0)
                self.state.refresh()
        finally:
            server.close()
            for connection in list(self.state.connections):
                with contextlib.suppress(Exception):
                    connection.shutdown()
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while self.state.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            info = read_info(self.settings.data_dir)
            if info is not None and info.pid == os.getpid():
                info_path(self.settings.data_dir).unlink(missing_ok=True)
            admin.close()

    def stop(self) -> None:
        self._stop.set()

    def _protocol(self) -> asyncio.Protocol:
        return FastPathProtocol(self, lambda: _HandOff(self), self.state, 5.0)

    # -- threads ---------------------------------------------------------------------------
    def _follow_routes(self) -> None:
        version = self.endpoints.state_version()
        while not self._stop.is_set():
            changed = self._routes_changed.wait(ROUTES_POLL_SECONDS)
            self._routes_changed.clear()
            try:
                now = self.endpoints.state_version()
                if changed or now != version:
                    version = now
                    self.endpoints.adopt_routes()
            except Exception as exc:  # a locked or briefly unreadable store: try again
                log.warning("reading the routes: %s", exc)

    def _serve_admin(self, admin: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = admin.accept()
            except OSError:
                return
            threading.Thread(target=self._answer_admin, args=(conn,), daemon=True).start()

    def _answer_admin(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not handoff.peer_is_us(conn):
                    return
                conn.settimeout(5.0)
                raw = _read_line(conn)
                if not raw:
                    return
                request = json.loads(raw)
                drained = True
                if request.get("op") == "drain":
                    containers = [str(c) for c in request.get("containers") or []]
                    deadline = time.monotonic() + float(request.get("timeout") or 0)
                    # Read the routes now rather than at the next poll.
                    self.endpoints.adopt_routes()
                    while self.endpoints.routes_to(containers):
                        if time.monotonic() >= deadline:
                            drained = False
                            break
                        self._routes_changed.set()
                        time.sleep(0.02)
                conn.settimeout(None)
                conn.sendall(json.dumps({"drained": drained}).encode() + b"\n")
            except (OSError, ValueError) as exc:
                log.warning("data plane admin request: %s", exc)

    def _watch_control(self) -> None:
        seen = time.monotonic()
        limit = self.settings.dataplane_orphan_seconds
        while not self._stop.wait(min(ORPHAN_CHECK_SECONDS, limit / 2)):
            if handoff.reachable(self._control):
                seen = time.monotonic()
            elif time.monotonic() - seen > limit:
                log.warning("no control plane for %.0f s: the data plane stops", limit)
                self.stop()

    # -- hand-off --------------------------------------------------------------------------
    def hand_off(self, fd: int, initial: bytes) -> None:
        """Pass a connection to the control plane (on an executor thread: it blocks)."""
        try:
            handoff.send(self._control, fd, initial)
        finally:
            os.close(fd)


class _HandOff(asyncio.Protocol):
    """The listener's delegate for what is not plain InvokeEndpoint: the connection goes to
    the control plane whole, or gets 503 when none runs."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane
        self._transport: asyncio.Transport | None = None
        self._initial = bytearray()
        self._scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._initial += data
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._go)

    def eof_received(self) -> bool:
        return True  # keep the socket open for the control plane

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def shutdown(self) -> None:
        pass  # handed over or answered already: nothing in flight here

    def _go(self) -> None:
        transport = self._transport
        if transport is None:
            return
        # Nothing more is read here once the bytes to hand over are taken.
        transport.pause_reading()
        sock = transport.get_extra_info("socket")
        try:
            fd = os.dup(sock.fileno())
        except OSError:
            transport.abort()
            return
        initial = bytes(self._initial)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._plane.hand_off, fd, initial)
        future.add_done_callback(self._sent)

    def _sent(self, future: asyncio.Future[None]) -> None:
        transport = self._transport
        if transport is None:
            return
        if future.exception() is None:
            # The control plane holds the connection now: closing our descriptor of it
            # sends nothing to the client.
            transport.abort()
            return
        head = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/x-amz-json-1.1"
                b"\r\nx-amzn-errortype: ServiceUnavailable\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % len(_UNAVAILABLE))
        transport.write(head + _UNAVAILABLE)
        transport.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m shipyard.api.dataplane")
    parser.add_argument("--data-dir")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings.load({"data_dir": args.data_dir})
    plane = DataPlane(settings)

    def on_signal(signum: int, frame: object) -> None:
        plane.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    run_loop(plane.run(args.host or settings.api_host,
                   settings.api_port if args.port is None else args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
