"""Running the API server: in the foreground (``shipyard server``) or in the background.

The server is one process hosting the control plane (job supervisors run as its threads) and
one HTTP listener. While it runs, ``<data_dir>/server.json`` says where it listens and its
pid; CLI commands read it, check ``/shipyard/health``, and start a server in the background
(its own session, so it outlives the command) when none answers.

SDK waiters and paginators poll (DescribeTrainingJob every few seconds per job, ListTrainingJobs
100 summaries a page), so the request path is kept cheap: uvloop and the httptools parser when
installed, and each response leaves in one write (``benchmarks/api_throughput.py``).
InvokeEndpoint's plain form does not go through ASGI at all (``api.fastpath``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from shipyard.api import dataplane, handoff, sdk_defaults
from shipyard.api.credentials import load_or_create
from shipyard.api.fastpath import fast_path_protocol
from shipyard.api.processes import process_start, run_loop, still_runs, terminate, write_json
from shipyard.api.s3store import KmsEndpoint, ObjectStore, SeaweedStore
from shipyard.control import ControlPlane
from shipyard.errors import ObjectStoreUnavailable, RuntimeUnavailable
from shipyard.settings import Settings

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 30.0
T = TypeVar("T")
#: How long a graceful stop lets deletions and job cleanups under way finish.
FINISH_SECONDS = 20.0


@dataclass(frozen=True)
class ServerInfo:
    url: str
    pid: int
    #: The process's start time in clock ticks since boot (``/proc/<pid>/stat``): with the
    #: pid it names the process, whatever command line started it, and a reused pid never
    #: matches.
    process_start: int | None = None
    #: The S3 store the server runs (None: it runs none, or it could not start).
    s3_url: str | None = None
    #: Why the server's S3 store is not running, when it should be.
    s3_error: str | None = None


@dataclass(frozen=True)
class StopReport:
    """What a server that stopped gracefully left unfinished (the next start finishes it)."""

    graceful: bool
    left: list[str]


def info_path(settings: Settings) -> Path:
    return settings.data_dir / "server.json"


def stopped_path(settings: Settings) -> Path:
    return settings.data_dir / "server-stopped.json"


def read_info(settings: Settings) -> ServerInfo | None:
    try:
        data = json.loads(info_path(settings).read_text(encoding="utf-8"))
        start = data.get("process_start")
        s3_url, s3_error = data.get("s3_url"), data.get("s3_error")
        return ServerInfo(url=str(data["url"]), pid=int(data["pid"]),
                          process_start=None if start is None else int(start),
                          s3_url=None if s3_url is None else str(s3_url),
                          s3_error=None if s3_error is None else str(s3_error))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/shipyard/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ApiServer:
    """uvicorn serving the app over a control plane; runs in the foreground or a thread."""

    def __init__(self, settings: Settings, plane: ControlPlane | None = None, *,
                 host: str | None = None, port: int | None = None,
                 data_plane: bool = False, embedded_s3: bool = False) -> None:
        """``data_plane``: the API's port belongs to a data-plane process of its own
        (``api.dataplane``, started if none runs for the data directory), which hands this
        server every connection that is not a plain InvokeEndpoint.

        ``embedded_s3``: run an S3 store for the data directory (``s3store``) unless the
        settings name one; the control plane built here reaches it with the API's key pair."""
        import uvicorn

        from shipyard.api.app import create_app

        self.keys = load_or_create(settings.data_dir)
        self.s3_store: ObjectStore | None = None
        self.s3_error: str | None = None
        if embedded_s3 and not settings.s3_endpoint_url:
            keys = self.keys
            self.s3_store = SeaweedStore(
                settings.data_dir / "s3", port=settings.s3_port, host=settings.s3_host,
                keys=lambda: [
                    (k.access_key_id, k.secret_access_key) for k in keys.keys],
                # The store starts once the API listens: its URL is known by then.
                kms=lambda: KmsEndpoint(self.url, settings.region, keys.default)
                if self.url else None)
            akid, secret = keys.default
            settings = replace(settings, s3_endpoint_url=self.s3_store.url,
                               s3_access_key_id=akid, s3_secret_access_key=secret)
        self.settings = settings
        self.plane = plane or ControlPlane(settings, launch="thread")
        self._owns_plane = plane is None
        # proxy_headers off: the app reads neither the client address nor the scheme that
        # X-Forwarded-* would rewrite, so the middleware would be pure per-request cost.
        self.app = app = create_app(self.plane, self.keys.secrets)
        self.config = uvicorn.Config(
            app, host=host or settings.api_host,
            port=settings.api_port if port is None else port, log_level="warning",
            access_log=False, lifespan="off", timeout_graceful_shutdown=5,
            http=fast_path_protocol(app, _http_protocol()), proxy_headers=False)
        self.server = uvicorn.Server(self.config)
        self.url = ""
        self._thread: threading.Thread | None = None
        self._data_plane = data_plane
        #: Set when the server stops for good (not a restart): the data plane stops too.
        self.stop_data_plane = False

    async def run(self, ready: Callable[[str], None] | None = None) -> None:
        # uvicorn.Server.serve() minus its signal handling, so this also runs in a thread.
        if not self.config.loaded:
            self.config.load()
        self.server.lifespan = self.config.lifespan_class(self.config)
        receiver = None
        if self._data_plane:
            receiver = await self._start_behind_data_plane()
        else:
            await self.server.startup()
            if self.server.should_exit:
                raise RuntimeUnavailable(
                    f"cannot listen on {self.config.host}:{self.config.port}")
            bound = self.server.servers[0].sockets[0].getsockname()
            self.url = f"http://{bound[0]}:{bound[1]}"
        store = self.s3_store
        await asyncio.get_running_loop().run_in_executor(None, self._prepare_s3, store)
        write_json(info_path(self.settings), {
            "url": self.url, "pid": os.getpid(), "started": time.time(),
            "process_start": process_start(os.getpid()),
            "s3_url": store.url if store is not None and self.s3_error is None else None,
            "s3_error": self.s3_error})
        if ready is not None:
            ready(self.url)
        try:
            await self.server.main_loop()
        finally:
            if receiver is not None:
                receiver.close()
            if self.server.started:
                await self.server.shutdown()
            self.app.close()
            left: list[str] = []
            if self._owns_plane:
                left = self.plane.close(FINISH_SECONDS)
            if store is not None:
                # After the plane: the job cleanups it waited for may still upload.
                store.stop()
            info = read_info(self.settings)
            if info is not None and info.pid == os.getpid():
                write_json(stopped_path(self.settings), {
                    "pid": os.getpid(), "at": time.time(), "left": left})
                info_path(self.settings).unlink(missing_ok=True)
            if self._data_plane and self.stop_data_plane:
                stop_data_plane(self.settings)

    async def _start_behind_data_plane(self) -> handoff.Receiver:
        """Serve the connections the data plane hands over; start the data plane if none
        runs for the data directory, else attach to the one that does (a restart)."""
        data_dir = self.settings.data_dir
        # Nothing listens here but uvicorn wants a socket; connections come by hand-off.
        # Binding it also tells whether another server runs for this data directory.
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            idle.bind(handoff.socket_name(data_dir, "api"))
        except OSError as exc:
            idle.close()
            raise RuntimeUnavailable(f"another Shipyard server already runs for {data_dir} "
                                     f"({exc.strerror}); stop it first") from exc
        idle.listen(1)
        await self.server.startup(sockets=[idle])
        loop = asyncio.get_running_loop()
        config, server = self.config, self.server

        def protocol(initial: bytes) -> asyncio.Protocol:
            inner = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=server.server_state,
                app_state=server.lifespan.state)
            return _Prefixed(inner, initial)

        adopting: set[asyncio.Task[None]] = set()  # the loop keeps tasks only weakly

        def adopt(sock: socket.socket, initial: bytes) -> None:
            task = loop.create_task(_serve_handed(loop, sock, lambda: protocol(initial)))
            adopting.add(task)
            task.add_done_callback(adopting.discard)

        def handed(sock: socket.socket, initial: bytes) -> None:
            loop.call_soon_threadsafe(adopt, sock, initial)

        receiver = handoff.Receiver(handoff.socket_name(data_dir, "control"), handed)
        receiver.start()
        self.plane.add_drain(
            lambda containers, timeout: dataplane.drain(data_dir, containers, timeout))
        self.url = await loop.run_in_executor(
            None, ensure_data_plane, self.settings, self.config.host, self.config.port)
        return receiver

    def _prepare_s3(self, store: ObjectStore | None) -> None:
        """Start the store, if the server runs one, and write the SDK's defaults file
        (``sdk_defaults``), with the default bucket where there is a store to hold it."""
        if store is not None:
            # The API serves without its store: SageMaker calls that name no s3:// location
            # work, and the error says which setting to change.
            try:
                store.start()
            except ObjectStoreUnavailable as exc:
                self.s3_error = str(exc)
                log.error("%s", exc)
            else:
                sdk_defaults.ensure_bucket(self.settings, store.url, self.keys.default)
        has_store = self.s3_error is None and self.settings.s3_endpoint_url is not None
        # The KMS key is this server's: only its own store asks it for data keys.
        sdk_defaults.write(self.settings, with_bucket=has_store,
                           with_kms=has_store and store is not None)

    def start_in_thread(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> str:
        """Serve from a background thread (tests, embedding); returns the URL once it listens."""
        started = threading.Event()
        self._thread = threading.Thread(
            target=lambda: run_loop(self.run(lambda url: started.set())),
            name="shipyard-api", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeUnavailable("the API server did not start")
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None,
          ready: Callable[[str], None] | None = None) -> None:
    """Run the server in the foreground until SIGINT or SIGTERM.

    SIGTERM (an upgrade, a service manager's restart) stops the control plane only: the data
    plane goes on answering InvokeEndpoint and the next server attaches to it. SIGINT (Ctrl-C
    at a terminal) stops both.
    """
    api = ApiServer(settings, host=host, port=port, data_plane=settings.separate_data_plane,
                    embedded_s3=settings.embedded_s3)

    def on_signal(signum: int, frame: object) -> None:
        api.server.should_exit = True
        if signum == signal.SIGINT:
            api.stop_data_plane = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    _settle_heap(api)
    run_loop(api.run(ready))


def _settle_heap(api: ApiServer) -> None:
    """Load the botocore models requests are validated against, then freeze the heap.

    The models are the bulk of a server's long-lived objects. Left to the collector, every
    full (generation-2) collection walks them again: ~20 ms, a pause that lands on whichever
    request triggered it, every few hundred ListTrainingJobs pages. ``gc.freeze()`` puts what
    is alive now out of the collector's reach. It is process-wide, so only the foreground
    server, which owns its process, does it; loading first also spares the first request
    the ~0.2 s load.
    """
    from shipyard.api import validation
    from shipyard.api.app import MODELLED
    from shipyard.errors import ShipyardError

    app = api.config.app
    for service in MODELLED:
        for operation in getattr(app, "handlers", {}).get(service, {}):
            try:
                validation.operation_model(service, operation)
            except ShipyardError:
                continue  # not in botocore's model: validated on first use, as before
    gc.collect()
    gc.freeze()


def _http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools' C parser if installed, else h11), writing each
    response in one ``send``.

    uvicorn writes the status line and headers, then the body, as two writes; with
    TCP_NODELAY each becomes its own segment and wakes the client twice. Buffering the writes
    of one loop iteration and flushing them together saves a syscall and a wake-up per request.
    """
    base: type[asyncio.Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class CoalescingProtocol(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # uvloop's transports are not asyncio.Transport subclasses, only alike.
            super().connection_made(_CoalescingTransport(cast(asyncio.Transport, transport)))

    return CoalescingProtocol


class _CoalescingTransport:
    """A transport whose writes within one event-loop iteration reach the socket as one."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._chunks:
            # A response head alone: wait for its body until the end of this iteration.
            self._loop.call_soon(self._flush)
            self._chunks.append(bytes(data))
            return
        # The head's body (uvicorn writes the two in a row): one write now, not an
        # iteration later; the scheduled flush then finds nothing to do.
        self._chunks.append(bytes(data))
        self._flush()

    def _flush(self) -> None:
        if not self._chunks:
            return
        data = b"".join(self._chunks)
        self._chunks.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        # Whatever was written before close() still goes out, as with a plain transport.
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Prefixed(asyncio.Protocol):
    """A handed-over connection: ``inner`` gets the bytes the data plane read of it first."""

    def __init__(self, inner: asyncio.Protocol, initial: bytes) -> None:
        self._inner = inner
        self._initial = initial

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)
        if self._initial:
            self._inner.data_received(self._initial)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


async def _serve_handed(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                        factory: Callable[[], asyncio.Protocol]) -> None:
    try:
        await loop.connect_accepted_socket(factory, sock=sock)
    except OSError:
        sock.close()  # the client left meanwhile


def ensure_data_plane(settings: Settings, host: str, port: int) -> str:
    """The URL of the data plane of this data directory, started if none runs."""
    info = dataplane.read_info(settings.data_dir)
    if info is not None and still_runs(info.pid, info.process_start):
        if port and not info.url.endswith(f":{port}"):
            log.warning("the data plane of %s already serves at %s; port %s is not used "
                        "(shipyard server stop, then start, to move it)", settings.data_dir,
                        info.url, port)
        return info.url

    def started(pid: int) -> str | None:
        info = dataplane.read_info(settings.data_dir)
        return info.url if info is not None and info.pid == pid else None

    return _spawn(settings, "shipyard.api.dataplane", ["--host", host, "--port", str(port)],
                  "dataplane.log", "data plane", started)


def stop_data_plane(settings: Settings) -> bool:
    """Stop the data plane of this data directory; False when none ran."""
    info = dataplane.read_info(settings.data_dir)
    if info is None or not still_runs(info.pid, info.process_start):
        return False
    terminate(info.pid, info.process_start, dataplane.STOP_GRACE_SECONDS + 5)
    return True


def ensure_server(settings: Settings) -> ServerInfo:
    """The running server for this data directory, started in the background if needed."""
    info = read_info(settings)
    if info is not None and healthy(info.url):
        return info

    def started(pid: int) -> ServerInfo | None:
        info = read_info(settings)
        return info if info is not None and info.pid == pid and healthy(info.url) else None

    return _spawn(settings, "shipyard.api.server", [], "server.log", "server", started)


def _spawn(settings: Settings, module: str, args: list[str], log_name: str, what: str,
           started: Callable[[int], T | None]) -> T:
    """Run ``python -m module --data-dir DIR ARGS`` in a session of its own (it outlives
    this process), with this command's settings; ``started(pid)`` says when it is up."""
    log_path = settings.data_dir / log_name
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", module, "--data-dir", str(settings.data_dir), *args]
    env = {**os.environ, **_settings_env(settings)}
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(  # our own module
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            close_fds=True, env=env)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        up = started(proc.pid)
        if up is not None:
            return up
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    tail = log_path.read_text(errors="replace").splitlines()[-10:]
    raise RuntimeUnavailable(f"the Shipyard {what} did not start; its log ends with:\n"
                             + "\n".join(tail))


def _settings_env(settings: Settings) -> dict[str, str]:
    """Pass this command's settings to the background server through its environment."""
    env = {}
    for name, entry in settings.explain().items():
        if entry["source"] != "default" and entry["value"] != "None":
            env[f"SHIPYARD_{name.upper()}"] = entry["value"]
    return env


def _is_our_server(info: ServerInfo) -> bool:
    """The server recorded in ``server.json`` still runs (pids are reused: the start time
    recorded with it must match; an older record is judged by its command line)."""
    if info.process_start is not None:
        return still_runs(info.pid, info.process_start)
    try:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"shipyard.api.server" in cmdline


def stop_server(settings: Settings, timeout: float = FINISH_SECONDS + 15.0
                ) -> StopReport | None:
    """Stop the server of this data directory, however it was started (``shipyard server``
    in a terminal, or in the background by a CLI command), and its data plane; None when
    neither was running."""
    info = read_info(settings)
    if info is None or not _is_our_server(info):
        return StopReport(graceful=True, left=[]) if stop_data_plane(settings) else None
    stopped_path(settings).unlink(missing_ok=True)
    graceful = terminate(info.pid, info.process_start, timeout)
    stop_data_plane(settings)
    if not graceful:
        return StopReport(graceful=False, left=[])
    try:
        report = json.loads(stopped_path(settings).read_text(encoding="utf-8"))
        return StopReport(graceful=True, left=[str(x) for x in report.get("left") or []])
    except (OSError, ValueError, AttributeError):
        return StopReport(graceful=True, left=[])


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m shipyard.api.server")
    parser.add_argument("--data-dir")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    settings = Settings.load({"data_dir": args.data_dir})
    serve(settings, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
