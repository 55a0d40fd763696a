"""The supervisor: one listening socket, forked workers, shared readiness, SIGTERM drain.

Rules (reference 4.1, 4.7 and the complaints in section 5):

- every worker loads its own model copy after the fork (MMS's default, safe for any
  framework). ``SHIPYARD_SERVE_PRELOAD=true`` loads once in the supervisor and forks after:
  memory is shared copy-on-write and start is faster, but it is only safe for models that
  start no threads and hold no GPU context during ``model_fn`` (PyTorch with OpenMP threads,
  CUDA, TensorFlow are not fork-safe);
- ``/ping`` answers 200 only when every worker has loaded and warmed its model, and stops
  doing so when a worker dies (MMS answers 200 regardless: MMS #1027, toolkit #138); a dead
  worker is replaced and ``/ping`` returns to 200 once the replacement is warm;
- SIGTERM (SageMaker's scale-in; SIGKILL follows 30 s later): workers stop accepting, finish
  the requests in flight, close idle connections and exit; the supervisor waits
  ``SHIPYARD_SERVE_DRAIN_SECONDS`` (25) for them, then kills what is left and exits 0.

Readiness is a shared anonymous ``mmap``: one byte per worker slot, written by the worker
(loaded) and by the supervisor (dead), read by every worker's ``/ping``.

Multi-model mode (``SAGEMAKER_MULTI_MODEL=true``): the supervisor also creates the shared
:class:`.registry.Registry` before forking; workers are ready as soon as they run and serve
:mod:`.models_api`'s routes, loading models as requests ask (:mod:`.multimodel`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import mmap
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from shipyard.toolkit.entry_point import EntryPointType, install
from shipyard.toolkit.serving.handler import Handler, load_user_module
from shipyard.toolkit.serving.protocol import HttpProtocol, Worker, install_alarm
from shipyard.toolkit.serving.settings import ServeSettings

if TYPE_CHECKING:
    from shipyard.toolkit.serving.registry import Registry

logger = logging.getLogger("shipyard.toolkit.serve")

STARTING, READY, FAILED, DEAD = 0, 1, 2, 3
_SUPERVISOR_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
#: a worker that dies sooner than this after its start is replaced only after a pause
_CRASH_WINDOW_S = 1.0
#: per-slot "busy since" (CLOCK_MONOTONIC is system-wide, so comparable across processes)
_CLOCK = struct.Struct("d")
#: the watchdog kills a worker this long after its request's SIGALRM failed to stop it
_WATCHDOG_GRACE_S = 5.0


def bind(settings: ServeSettings) -> socket.socket:
    """The listening socket every worker accepts on (so port 0 resolves once, for all)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def prepare_code(settings: ServeSettings) -> None:
    """Install ``<code dir>/requirements.txt`` once, before any worker imports user code."""
    if (settings.code_dir / "requirements.txt").is_file():
        install(EntryPointType.PYTHON_PROGRAM, settings.code_dir, settings.program,
                dict(os.environ))


def build_handler(settings: ServeSettings) -> Handler:
    """Import the user module (or nothing: all defaults) and wrap it."""
    module = load_user_module(Path(settings.code_dir), settings.program)
    if module is None:
        logger.warning("no %s in %s: using the default handler functions",
                       settings.program, settings.code_dir)
    return Handler(module, settings.model_dir, settings.default_accept)


def _event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop when installed (the optional ``serve`` extra) unless told otherwise."""
    if choice == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_worker(settings: ServeSettings, sock: socket.socket, states: mmap.mmap,
               clocks: mmap.mmap, slot: int, preloaded: Handler | None,
               registry: Registry | None = None) -> None:
    """A worker process's life: serve at once (``/ping`` 503), load the model, drain on SIGTERM."""
    loop = _event_loop(settings.loop)
    asyncio.set_event_loop(loop)
    install_alarm()
    all_ready = bytes([READY]) * len(states)
    offset = slot * _CLOCK.size

    def busy(since: float) -> None:
        _CLOCK.pack_into(clocks, offset, since)

    worker = Worker(settings, None, lambda: states[:] == all_ready, busy)
    servers: list[asyncio.AbstractServer] = []
    protocol: Callable[[], asyncio.Protocol] = functools.partial(HttpProtocol, worker)
    if registry is not None:
        from shipyard.toolkit.serving.models_api import ModelsProtocol
        from shipyard.toolkit.serving.multimodel import ModelHost

        host = ModelHost(settings, registry, slot)
        protocol = functools.partial(ModelsProtocol, worker, host)

    def loaded(handler: Handler) -> None:
        worker.handler = handler
        states[slot] = READY
        logger.info("worker %d (pid %d) ready", slot, os.getpid())

    async def load() -> None:
        if registry is not None:  # multi-model: no model to load before serving
            host.start(loop)
            states[slot] = READY
            logger.info("worker %d (pid %d) ready", slot, os.getpid())
            return
        if preloaded is not None:
            loaded(preloaded)
            return
        def build_and_load() -> Handler:
            handler = build_handler(settings)
            handler.load()
            return handler
        try:
            # in a thread, so /ping keeps answering 503 while a large model loads
            loaded(await loop.run_in_executor(None, build_and_load))
        except Exception as exc:
            worker.load_error = f"model failed to load: {exc}"
            states[slot] = FAILED
            logger.error("worker %d: model failed to load", slot, exc_info=exc)

    def drain() -> None:
        if worker.draining:
            return
        worker.draining = True
        for server in servers:
            server.close()
        for conn in list(worker.connections):
            if not conn.busy and not conn.buf and conn.transport is not None:
                conn.closing = True
                conn.transport.close()
        worker.check_drained()

    async def main() -> None:
        worker.drained = loop.create_future()
        servers.append(
            await loop.create_server(protocol, sock=sock, backlog=2048))
        loop.add_signal_handler(signal.SIGTERM, drain)
        loop.add_signal_handler(signal.SIGINT, drain)
        loop.create_task(load())
        await worker.drained

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


class Supervisor:
    """Forks and watches the workers; see the module docstring."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.states = mmap.mmap(-1, settings.workers)
        self.clocks = mmap.mmap(-1, settings.workers * _CLOCK.size)
        self.pids: dict[int, int] = {}  # pid -> slot
        self.started: dict[int, float] = {}  # slot -> monotonic start
        self.preloaded: Handler | None = None
        self.registry: Registry | None = None
        self.stopping = False

    def _spawn(self, sock: socket.socket, slot: int) -> None:
        self.states[slot] = STARTING
        _CLOCK.pack_into(self.clocks, slot * _CLOCK.size, 0.0)
        if self.registry is not None:
            self.registry.worker_gone(slot)  # a fresh worker holds no models yet
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISOR_SIGNALS)
                for signum in _SUPERVISOR_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                run_worker(self.settings, sock, self.states, self.clocks, slot,
                           self.preloaded, self.registry)
            except BaseException:
                logger.exception("worker %d crashed", slot)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.pids[pid] = slot
        self.started[slot] = time.monotonic()

    def _reap(self) -> list[int]:
        """Collect exited workers; their slots, now marked DEAD."""
        slots = []
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            slot = self.pids.pop(pid, None)
            if slot is None:
                continue  # a pip child or similar, not a worker
            self.states[slot] = DEAD
            if self.registry is not None:
                self.registry.worker_gone(slot)  # its models died with it: never wait for it
            log = logger.info if self.stopping else logger.warning
            log("worker %d (pid %d) exited with status %d", slot, pid,
                           os.waitstatus_to_exitcode(status))
            slots.append(slot)
        return slots

    def run(self, sock: socket.socket) -> int:
        """Fork the workers and supervise until SIGTERM/SIGINT; returns the exit status."""
        settings = self.settings
        signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
        if settings.multi_model:
            from shipyard.toolkit.serving.registry import MIB, Registry

            self.registry = Registry.create(settings.workers, settings.models_memory_bytes)
            logger.info("multi-model mode: models under %s, memory budget %d MiB",
                        settings.models_root, settings.models_memory_bytes // MIB)
        elif settings.preload:
            handler = build_handler(settings)
            handler.load()
            self.preloaded = handler
        for slot in range(settings.workers):
            self._spawn(sock, slot)
        host, port = sock.getsockname()[:2]
        logger.info("listening on %s:%d with %d workers (pid %d)", host, port, settings.workers,
                    os.getpid())
        pending: dict[int, float] = {}  # slot -> when to respawn
        while True:
            timeout = 1.0 if not pending else max(0.01, min(pending.values()) - time.monotonic())
            info = signal.sigtimedwait(_SUPERVISOR_SIGNALS, timeout)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                return self._shutdown()
            for slot in self._reap():
                crashed_fast = time.monotonic() - self.started.get(slot, 0.0) < _CRASH_WINDOW_S
                pending[slot] = time.monotonic() + (_CRASH_WINDOW_S if crashed_fast else 0.0)
            self._watchdog()
            now = time.monotonic()
            for slot, when in list(pending.items()):
                if when <= now:
                    del pending[slot]
                    self._spawn(sock, slot)

    def _watchdog(self) -> None:
        """Kill workers stuck in one request well past the timeout (SIGALRM could not stop them:
        the handler is blocked in C code). They are replaced like any dead worker."""
        limit = self.settings.timeout_s + _WATCHDOG_GRACE_S
        now = time.monotonic()
        for pid, slot in self.pids.items():
            (since,) = _CLOCK.unpack_from(self.clocks, slot * _CLOCK.size)
            if since and now - since > limit:
                logger.error("worker %d (pid %d) stuck for %.0f s in one request: killing it",
                             slot, pid, now - since)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _shutdown(self) -> int:
        self.stopping = True
        logger.info("SIGTERM: draining %d workers (up to %g s)", len(self.pids),
                    self.settings.drain_s)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.settings.drain_s
        while self.pids and time.monotonic() < deadline:
            signal.sigtimedwait({signal.SIGCHLD}, 0.2)
            self._reap()
        for pid in self.pids:
            logger.warning("worker pid %d did not drain in time: killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in list(self.pids):
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        logger.info("stopped")
        sys.stdout.flush()
        return 0
