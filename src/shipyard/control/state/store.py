"""Job state in SQLite: one file under the data directory, safe across threads and processes.

Each job row holds the DescribeX document SageMaker returns (``record``, JSON) plus a few
indexed columns for listing, and Shipyard's private runner state (``runner``: where the
containers are, which phase the supervisor reached). Every change is a read-modify-write in
an immediate transaction (:meth:`Store.mutate`), so the supervisor and a concurrent
StopTrainingJob never lose each other's update. sqlite3 errors become ``StorageError`` here.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.control.state.sqlite import SqliteFile
from shipyard.errors import (
    ResourceInUse,
    ResourceLimitExceeded,
    ResourceNotFound,
    ShipyardError,
    StorageError,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    arn TEXT NOT NULL,
    status TEXT NOT NULL,
    creation_time REAL NOT NULL,
    last_modified_time REAL NOT NULL,
    record TEXT NOT NULL,
    runner TEXT NOT NULL DEFAULT '{}',
    stop_requested INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, name)
);
-- Each index covers one ORDER BY of list_jobs whole (ties broken by name), so a page is read
-- in index order instead of sorting every row first.
DROP INDEX IF EXISTS jobs_by_time;
DROP INDEX IF EXISTS jobs_by_status;
CREATE INDEX IF NOT EXISTS jobs_by_time_name ON jobs (kind, creation_time, name);
CREATE INDEX IF NOT EXISTS jobs_by_status_name ON jobs (kind, status, name);
CREATE INDEX IF NOT EXISTS jobs_by_modified ON jobs (kind, last_modified_time);
CREATE TABLE IF NOT EXISTS metrics (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    metric TEXT NOT NULL,
    timestamp REAL NOT NULL,
    value REAL NOT NULL,
    host TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_job ON metrics (kind, name, metric, timestamp);
CREATE INDEX IF NOT EXISTS jobs_by_arn ON jobs (arn);
CREATE TABLE IF NOT EXISTS tags (
    arn TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (arn, key)
);
"""


@dataclass(frozen=True)
class JobRow:
    kind: str
    name: str
    arn: str
    status: str
    record: dict[str, Any]
    runner: dict[str, Any]
    stop_requested: bool


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except ShipyardError:
        raise
    except sqlite3.IntegrityError as exc:
        raise ResourceInUse(f"{what}: already exists") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"{what}: state database error: {exc}") from exc


class Store(SqliteFile):
    """Thread-safe access to the state database (one connection per thread)."""

    _errors = staticmethod(_translate)

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"opening state: cannot create {path.parent}: {exc}") from exc
        super().__init__(path, _SCHEMA, "opening state")

    def data_version(self) -> int:
        """A number that changes whenever another connection commits (SQLite's
        ``data_version``): a cheap way to notice what another process wrote."""
        with _translate("reading state"):
            return int(self._conn().execute("PRAGMA data_version").fetchone()[0])

    # -- jobs -------------------------------------------------------------------------------
    def insert_job(self, kind: str, name: str, arn: str, status: str, record: dict[str, Any],
                   runner: dict[str, Any]) -> None:
        now = float(record.get("CreationTime") or time.time())
        with self._tx(f"{kind} job {name}") as conn:
            conn.execute(
                "INSERT INTO jobs (kind, name, arn, status, creation_time, last_modified_time,"
                " record, runner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, name, arn, status, now, now, json.dumps(record), json.dumps(runner)),
            )

    def get_job(self, kind: str, name: str) -> JobRow:
        with _translate(f"reading {kind} job {name}"):
            row = self._conn().execute(
                "SELECT kind, name, arn, status, record, runner, stop_requested FROM jobs"
                " WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        if row is None:
            raise ResourceNotFound(f"{kind} job {name} does not exist")
        return _row(row)

    def mutate(
        self,
        kind: str,
        name: str,
        change: Callable[[dict[str, Any], dict[str, Any]], str | None],
    ) -> JobRow:
        """Apply ``change(record, runner) -> new status or None`` atomically."""
        with self._tx(f"updating {kind} job {name}") as conn:
            row = conn.execute(
                "SELECT kind, name, arn, status, record, runner, stop_requested FROM jobs"
                " WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            if row is None:
                raise ResourceNotFound(f"{kind} job {name} does not exist")
            job = _row(row)
            returned = change(job.record, job.runner)
            if returned is not None and not isinstance(returned, str):
                # A lambda that returns what dict.pop gave once wrote a list as the status
                # and left a record no start could read: refuse it before anything is written.
                raise TypeError(f"a change of {kind} {name} returned {type(returned).__name__}"
                                ", not a status")
            status = returned or job.status
            modified = float(job.record.get("LastModifiedTime") or time.time())
            conn.execute(
                "UPDATE jobs SET status = ?, record = ?, runner = ?, last_modified_time = ?"
                " WHERE kind = ? AND name = ?",
                (status, json.dumps(job.record), json.dumps(job.runner), modified, kind, name),
            )
        return JobRow(kind, name, job.arn, status, job.record, job.runner, job.stop_requested)

    def unreadable_jobs(self) -> list[UnreadableRow]:
        """Rows whose record or runner state cannot be decoded (written by a bug, edited by
        hand, torn by a disk fault), so start-up can set them aside instead of failing."""
        with _translate("reading state"):
            rows = self._conn().execute(
                "SELECT kind, name, arn, status, creation_time, record, runner FROM jobs"
            ).fetchall()
        found = []
        for kind, name, arn, status, created, record, runner in rows:
            try:
                _row((kind, name, arn, status, record, runner, 0))
            except StorageError as exc:
                found.append(UnreadableRow(kind, name, arn, created, record, runner, str(exc)))
        return found

    def overwrite_job(self, kind: str, name: str, status: str, record: dict[str, Any],
                      runner: dict[str, Any]) -> None:
        """Replace a row's documents whatever they held (setting aside an unreadable one)."""
        with self._tx(f"rewriting {kind} {name}") as conn:
            conn.execute(
                "UPDATE jobs SET status = ?, record = ?, runner = ?, last_modified_time = ?"
                " WHERE kind = ? AND name = ?",
                (status, json.dumps(record), json.dumps(runner), time.time(), kind, name))

    def delete_job(self, kind: str, name: str) -> None:
        """Forget a resource (models, endpoints...) and its tags; idempotent."""
        with self._tx(f"deleting {kind} {name}") as conn:
            row = conn.execute("SELECT arn FROM jobs WHERE kind = ? AND name = ?",
                               (kind, name)).fetchone()
            if row is None:
                return
            conn.execute("DELETE FROM jobs WHERE kind = ? AND name = ?", (kind, name))
            conn.execute("DELETE FROM tags WHERE arn = ?", (row[0],))

    def request_stop(self, kind: str, name: str) -> None:
        with self._tx(f"stopping {kind} job {name}") as conn:
            conn.execute("UPDATE jobs SET stop_requested = 1 WHERE kind = ? AND name = ?",
                         (kind, name))

    def stop_requested(self, kind: str, name: str) -> bool:
        with _translate(f"reading {kind} job {name}"):
            row = self._conn().execute(
                "SELECT stop_requested FROM jobs WHERE kind = ? AND name = ?",
                (kind, name)).fetchone()
        return bool(row and row[0])

    def list_jobs(
        self,
        kind: str,
        *,
        statuses: tuple[str, ...] = (),
        name_contains: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        modified_after: float | None = None,
        modified_before: float | None = None,
        sort_by: str = "CreationTime",
        descending: bool = True,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[JobRow]:
        where = ["kind = ?"]
        args: list[Any] = [kind]
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if name_contains:
            where.append("instr(name, ?) > 0")
            args.append(name_contains)
        for column, op, value in (
            ("creation_time", ">", created_after), ("creation_time", "<", created_before),
            ("last_modified_time", ">", modified_after),
            ("last_modified_time", "<", modified_before),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        column = {"Name": "name", "Status": "status"}.get(sort_by, "creation_time")
        order = "DESC" if descending else "ASC"
        sql = (
            "SELECT kind, name, arn, status, record, runner, stop_requested FROM jobs WHERE "
            + " AND ".join(where) + f" ORDER BY {column} {order}, name {order}"
        )
        if limit is not None or offset:
            # SQLite takes OFFSET only after LIMIT; -1 means no limit.
            sql += " LIMIT ? OFFSET ?"
            args.extend([-1 if limit is None else limit, offset])
        with _translate(f"listing {kind} jobs"):
            rows = self._conn().execute(sql, args).fetchall()
        return [_row(r) for r in rows]

    def arn_exists(self, arn: str) -> bool:
        with _translate(f"looking up {arn}"):
            return self._conn().execute(
                "SELECT 1 FROM jobs WHERE arn = ? LIMIT 1", (arn,)).fetchone() is not None

    # -- tags -------------------------------------------------------------------------------
    def add_tags(self, arn: str, tags: dict[str, str], limit: int = 50) -> None:
        with self._tx(f"tagging {arn}") as conn:
            conn.executemany("INSERT OR REPLACE INTO tags (arn, key, value) VALUES (?, ?, ?)",
                             [(arn, k, v) for k, v in tags.items()])
            count = conn.execute("SELECT COUNT(*) FROM tags WHERE arn = ?", (arn,)).fetchone()[0]
            if count > limit:
                raise ResourceLimitExceeded(f"{arn} would have {count} tags; the limit is {limit}")

    def list_tags(self, arn: str) -> list[tuple[str, str]]:
        with _translate(f"tags of {arn}"):
            return [(k, v) for k, v in self._conn().execute(
                "SELECT key, value FROM tags WHERE arn = ? ORDER BY key", (arn,)).fetchall()]

    def delete_tags(self, arn: str, keys: list[str]) -> None:
        with self._tx(f"untagging {arn}") as conn:
            conn.executemany("DELETE FROM tags WHERE arn = ? AND key = ?",
                             [(arn, k) for k in keys])

    # -- metrics ----------------------------------------------------------------------------
    def add_metrics(self, kind: str, name: str, host: str,
                    points: list[tuple[str, float, float]]) -> None:
        if not points:
            return
        with self._tx(f"metrics of {kind} job {name}") as conn:
            conn.executemany(
                "INSERT INTO metrics (kind, name, metric, timestamp, value, host)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(kind, name, metric, ts, value, host) for metric, ts, value in points],
            )

    def metric_series(self, kind: str, name: str, metric: str | None = None
                      ) -> list[tuple[str, float, float, str]]:
        sql = "SELECT metric, timestamp, value, host FROM metrics WHERE kind = ? AND name = ?"
        args: list[Any] = [kind, name]
        if metric is not None:
            sql += " AND metric = ?"
            args.append(metric)
        with _translate(f"metrics of {kind} job {name}"):
            return [tuple(r) for r in self._conn().execute(sql + " ORDER BY timestamp, rowid",
                                                            args).fetchall()]


@dataclass(frozen=True)
class UnreadableRow:
    kind: str
    name: str
    arn: str
    creation_time: float
    raw_record: str
    raw_runner: str
    error: str


def _row(row: tuple[Any, ...]) -> JobRow:
    kind, name, arn, status, record, runner, stop = row
    try:
        decoded = json.loads(record), json.loads(runner)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"the stored record of {kind} {name} cannot be read: {exc}") from exc
    if not all(isinstance(d, dict) for d in decoded) or not isinstance(status, str):
        raise StorageError(f"the stored record of {kind} {name} is not a record (status "
                           f"{status!r}, record {type(decoded[0]).__name__}, runner "
                           f"{type(decoded[1]).__name__})")
    return JobRow(kind, name, arn, status, decoded[0], decoded[1], bool(stop))
