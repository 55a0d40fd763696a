"""One SQLite file shared by threads and processes: a connection per thread (WAL, a 30 s
busy wait), ``BEGIN IMMEDIATE`` transactions, and the files readable by the owner only.

What differs between the files Shipyard keeps (the state, the metrics) is how a database
error is put to the user: each subclass names its ``_errors`` translation.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from shipyard.errors import ShipyardError, StorageError

__all__ = ["SqliteFile", "sqlite_errors"]


def sqlite_errors(database: str) -> Callable[[str], AbstractContextManager[None]]:
    """The translation of a file whose every database error is a ``StorageError`` saying
    what was being done and which database (``"metrics database"``) failed."""
    @contextlib.contextmanager
    def translate(what: str) -> Iterator[None]:
        try:
            yield
        except ShipyardError:
            raise
        except sqlite3.Error as exc:
            raise StorageError(f"{what}: {database} error: {exc}") from exc
    return translate


class SqliteFile:
    """Thread-safe access to one SQLite file (one connection per thread)."""

    #: ``_errors(what)``: a context that turns ``sqlite3.Error`` into a ShipyardError.
    _errors: Callable[[str], AbstractContextManager[None]]

    def __init__(self, path: Path, schema: str, what: str) -> None:
        self.path = path
        self._local = threading.local()
        with self._errors(what):
            self._conn().executescript(schema)
        # They hold environment values and metrics: the owner's only (WAL files included).
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                path.with_name(path.name + suffix).chmod(0o600)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # timeout=30: a writer waits up to 30 s for another's transaction to end.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (each thread's own goes with the thread)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._errors(what):
            # Inside the translation: a thread's first call opens its connection here.
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
