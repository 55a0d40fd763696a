"""The check behind tests/support/offline.py, standalone so that a child interpreter's
``sitecustomize`` can load it without the test package on its path."""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_local(host: object) -> bool:
    """``host`` (a name or an address) is this machine's loopback."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str) or not host:
        return True  # a port-only lookup, or a family that names no host
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def refused(event: str, args: tuple[object, ...]) -> str | None:
    """What an audit event would reach off this machine, or None when it stays local."""
    if event == "socket.connect":
        address = args[1]
        if not isinstance(address, tuple):
            return None  # a Unix socket (the Docker engine's, for one)
        target = address[0]
    elif event == "socket.getaddrinfo":
        target = args[0]
    else:
        return None
    return None if is_local(target) else repr(target)


def hook(record: Callable[[str], None], active: Callable[[], bool] = lambda: True
         ) -> Callable[[str, tuple[object, ...]], None]:
    """An audit hook that records and refuses what ``refused`` names while ``active()``."""
    def check(event: str, args: tuple[object, ...]) -> None:
        if not active():
            return
        target = refused(event, args)
        if target is None:
            return
        record(f"{event} {target}")
        raise OSError(errno.ENETUNREACH, f"network blocked except loopback ({target})")
    return check
