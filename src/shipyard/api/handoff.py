"""Client connections passed from the data plane to the control plane, whole.

The data plane owns the API's listening socket (``api.dataplane``). It answers InvokeEndpoint
itself and passes every other connection, with the bytes it has read of it, to the control
plane: the connection's file descriptor travels over a Unix socket (``SCM_RIGHTS``), and the
control plane serves it as if it had accepted it. So a control-plane call costs one hand-off
per connection, not a proxy hop per request, and neither process reads the other's traffic.

Both processes listen on abstract Unix sockets (Linux: no file, so no path-length limit and
nothing left behind), named after the data directory. Abstract sockets have no file
permissions: each side accepts only peers running as its own user (``SO_PEERCRED``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["Receiver", "reachable", "send", "socket_name"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
#: The most bytes of a connection handed over with it (the data plane reads at most a request
#: head and some of a body before it decides).
MAX_INITIAL_BYTES = 1 << 20


def socket_name(data_dir: Path, role: str) -> str:
    """The abstract socket of ``role`` (``control`` or ``dataplane``) for ``data_dir``."""
    digest = hashlib.sha256(os.path.realpath(data_dir).encode()).hexdigest()[:20]
    return f"\0shipyard-{digest}-{role}"


def peer_is_us(sock: socket.socket) -> bool:
    """The peer of a Unix socket runs as this process's user."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


def send(name: str, fd: int, initial: bytes, timeout: float = 2.0) -> None:
    """Pass the connection ``fd`` and the bytes read of it to the listener ``name``.

    Raises ``OSError`` when nobody listens there (the control plane is restarting).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(name)
        header = _HEADER.pack(len(initial))
        sent = socket.send_fds(sock, [header + initial], [fd])
        if sent < len(header) + len(initial):
            sock.sendall((header + initial)[sent:])
        # The receiver closes once it holds the descriptor: the hand-off is complete then.
        sock.recv(1)


def reachable(name: str, timeout: float = 1.0) -> bool:
    """Somebody listens on ``name`` (a connection without a descriptor is a ping)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(name)
            sock.sendall(_HEADER.pack(0))
            sock.recv(1)
        return True
    except OSError:
        return False


class Receiver:
    """Accepts handed-over connections on ``name`` and gives each to ``adopt`` (called on
    this receiver's thread: hop to an event loop with ``call_soon_threadsafe``)."""

    def __init__(self, name: str, adopt: Callable[[socket.socket, bytes], None]) -> None:
        self._adopt = adopt
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(name)
        self._listener.listen(64)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="handoff-receiver",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _run(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            with conn:
                try:
                    self._receive(conn)
                except (OSError, ValueError) as exc:
                    log.warning("a connection hand-off failed: %s", exc)

    def _receive(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        if not peer_is_us(conn):
            raise ValueError("refused a hand-off from another user")
        data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 1)
        client = None
        try:
            while len(data) < _HEADER.size:
                more = conn.recv(65536)
                if not more:
                    raise ValueError("the hand-off ended early")
                data += more
            (length,) = _HEADER.unpack_from(data)
            if length > MAX_INITIAL_BYTES:
                raise ValueError(f"a hand-off of {length} bytes")
            while len(data) < _HEADER.size + length:
                more = conn.recv(65536)
                if not more:
                    raise ValueError("the hand-off ended early")
                data += more
            if fds:
                client = socket.socket(fileno=fds.pop(0))
            conn.sendall(b"k")
        finally:
            for fd in fds:
                os.close(fd)
        if client is not None:
            client.setblocking(False)
            self._adopt(client, bytes(data[_HEADER.size:_HEADER.size + length]))

