"""The network blocked except loopback, as for a user behind a firewall.

An audit hook (PEP 578) sees every ``socket.connect`` and name lookup the interpreter makes,
whichever library makes it; while ``blocked()`` is active, one for an address off this
machine fails with ``ENETUNREACH`` and is recorded, so a test can say what the code under
test tried to reach. Audit hooks cannot be removed: the hook is installed once and does
nothing outside ``blocked()``.

In a child interpreter: ``child_env(log)`` puts ``SITE_DIR`` on its ``PYTHONPATH``; its
``sitecustomize`` blocks the whole process and appends each attempt to ``log``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.offline_site.offline_guard import hook

__all__ = ["SITE_DIR", "Blocked", "blocked", "child_env"]

#: A folder whose ``sitecustomize.py`` blocks a child interpreter.
SITE_DIR = Path(__file__).with_name("offline_site")


class Blocked:
    """What was refused while active."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.active = False
        self._lock = threading.Lock()

    def record(self, line: str) -> None:
        with self._lock:
            self.attempts.append(line)


_STATE = Blocked()
_INSTALLED = False
_INSTALL_LOCK = threading.Lock()


@contextmanager
def blocked() -> Iterator[Blocked]:
    """Refuse every connection off this machine in this process while inside."""
    global _INSTALLED
    with _INSTALL_LOCK:
        if not _INSTALLED:
            sys.addaudithook(hook(_STATE.record, lambda: _STATE.active))
            _INSTALLED = True
    _STATE.attempts.clear()
    _STATE.active = True
    try:
        yield _STATE
    finally:
        _STATE.active = False


def child_env(log: Path) -> dict[str, str]:
    """Variables that block a child Python's network except loopback, recording to ``log``."""
    return {"PYTHONPATH": str(SITE_DIR), "OFFLINE_LOG": str(log)}
