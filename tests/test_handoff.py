"""Connections passed whole between processes' sockets (api.handoff), with real sockets."""

from __future__ import annotations

import queue
import socket
import uuid
from pathlib import Path

from shipyard.api import handoff


def test_a_connection_and_its_first_bytes_arrive_whole(tmp_path: Path) -> None:
    name = handoff.socket_name(tmp_path / uuid.uuid4().hex, "control")
    adopted: queue.Queue[tuple[socket.socket, bytes]] = queue.Queue()
    receiver = handoff.Receiver(name, lambda sock, initial: adopted.put((sock, initial)))
    receiver.start()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    try:
        accepted, _ = listener.accept()
        client.sendall(b"GET /first HTTP/1.1\r\n\r\n")
        first = accepted.recv(1024)
        big = first + b"x" * 200_000  # more than one socket buffer's worth
        handoff.send(name, accepted.fileno(), big)
        accepted.close()  # the sender's copy: the connection lives on in the receiver
        sock, initial = adopted.get(timeout=5)
        assert initial == big
        sock.setblocking(True)
        sock.sendall(b"answered by the receiver")
        client.settimeout(5)
        assert client.recv(1024) == b"answered by the receiver"
        client.sendall(b"second request")
        assert sock.recv(1024) == b"second request"
        sock.close()
    finally:
        client.close()
        listener.close()
        receiver.close()


def test_reachable_tells_whether_anyone_listens(tmp_path: Path) -> None:
    name = handoff.socket_name(tmp_path, "control")
    assert not handoff.reachable(name)
    receiver = handoff.Receiver(name, lambda sock, initial: None)
    receiver.start()
    try:
        assert handoff.reachable(name)
    finally:
        receiver.close()
    assert not handoff.reachable(name)


def test_socket_names_differ_by_data_directory_and_role(tmp_path: Path) -> None:
    names = {handoff.socket_name(tmp_path / d, role)
             for d in ("a", "b") for role in ("control", "dataplane")}
    assert len(names) == 4
    assert all(n.startswith("\0shipyard-") for n in names)
