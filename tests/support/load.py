"""Load for the duration of a ``with`` block: threads that run one call after another until
the block ends, for tests that change something under traffic (a pod deleted, a fleet
replaced, a server restarted)."""

from __future__ import annotations

import threading
from typing import TypeVar

L = TypeVar("L", bound="ThreadedLoad")


class ThreadedLoad:
    """``threads`` threads each running :meth:`call` without pause while the block runs;
    a subclass counts what the calls got."""

    def __init__(self, threads: int) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(threads)]

    def call(self) -> None:
        raise NotImplementedError

    def setup(self) -> None:
        """Run once in each thread before its first call (a client of its own)."""

    def teardown(self) -> None:
        """Run once in each thread after its last call."""

    def _loop(self) -> None:
        self.setup()
        try:
            while not self._stop.is_set():
                self.call()
        finally:
            self.teardown()

    def __enter__(self: L) -> L:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
