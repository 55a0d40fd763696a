"""Published metrics in SQLite: raw points, rollups, retention.

Its own file, ``<data_dir>/metrics.db``, beside the state database: publishing (a client's
PutMetricData, and in time Shipyard's own measurements, perhaps from another process) never
waits on the lock job state is written under, nor holds it.

- ``series``: one row per metric (namespace, name, dimension set), with when a point was
  last published (ListMetrics' ``RecentlyActive``) and the newest point's time (retention).
- ``raw``: every point as published: a value with its count, or a statistic set, with its
  unit; timestamps in milliseconds (standard-resolution points at their minute). Periods under
  a minute and percentiles are computed from these.
- ``rollups``: per series, resolution (60 and 300 s), period start and unit: count, sum,
  minimum and maximum, updated in the same transaction as the raw points. A query whose
  period and origin are multiples of a rollup's resolution reads the rollup: exact, and
  available after the raw points are gone.

Retention (settings ``metrics_retention_days``, ``metrics_raw_retention_days``): raw points
are kept for the raw retention (never longer than the other), rollups and series for the
retention; what is older is deleted at most once a minute, after a publication.
sqlite3 errors become ``StorageError`` here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shipyard.control.metrics.ingest import Point
from shipyard.control.metrics.model import (
    Aggregate,
    Listed,
    MetricKey,
    Samples,
    Window,
    dimensions_from_json,
    dimensions_json,
)
from shipyard.control.state.sqlite import SqliteFile, sqlite_errors

__all__ = ["PRUNE_EVERY_SECONDS", "ROLLUPS", "PublishedStore"]

#: Rollup resolutions, in seconds: each a multiple of the one before.
ROLLUPS = (60, 300)
PRUNE_EVERY_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    dimensions TEXT NOT NULL,
    last_put REAL NOT NULL,
    last_point INTEGER NOT NULL,
    UNIQUE (namespace, name, dimensions)
);
CREATE TABLE IF NOT EXISTS raw (
    series INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    unit TEXT NOT NULL,
    n REAL NOT NULL,
    total REAL NOT NULL,
    lo REAL NOT NULL,
    hi REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_by_series ON raw (series, ts);
CREATE TABLE IF NOT EXISTS rollups (
    series INTEGER NOT NULL,
    resolution INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    unit TEXT NOT NULL,
    n REAL NOT NULL,
    total REAL NOT NULL,
    lo REAL NOT NULL,
    hi REAL NOT NULL,
    PRIMARY KEY (series, resolution, bucket, unit)
) WITHOUT ROWID;
"""

_UPSERT_ROLLUP = (
    "INSERT INTO rollups (series, resolution, bucket, unit, n, total, lo, hi)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (series, resolution, bucket, unit) DO UPDATE SET"
    " n = n + excluded.n, total = total + excluded.total,"
    " lo = min(lo, excluded.lo), hi = max(hi, excluded.hi)")


_translate = sqlite_errors("metrics database")


class PublishedStore(SqliteFile):
    """Thread-safe access to ``metrics.db`` (one connection per thread)."""

    _errors = staticmethod(_translate)

    def __init__(self, path: Path, *, retention_seconds: float, raw_retention_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.retention = retention_seconds
        self.raw_retention = min(raw_retention_seconds, retention_seconds)
        self._clock = clock
        self._pruned = -math.inf
        self._prune_lock = threading.Lock()
        super().__init__(path, _SCHEMA, "opening metrics")

    def _read(self, what: str, sql: str, args: Iterable[Any]) -> list[tuple[Any, ...]]:
        with _translate(what):
            return self._conn().execute(sql, tuple(args)).fetchall()

    # -- writing ----------------------------------------------------------------------------
    def put(self, points: list[Point]) -> None:
        """Store ``points`` and their rollups in one transaction; prune if it is time."""
        if not points:
            return
        now = self._clock()
        with self._tx("publishing metrics") as conn:
            ids: dict[MetricKey, int] = {}
            newest: dict[MetricKey, int] = {}
            for point in points:
                newest[point.key] = max(newest.get(point.key, point.timestamp_ms),
                                        point.timestamp_ms)
            for key, last in newest.items():
                dims = dimensions_json(key.dimensions)
                conn.execute(
                    "INSERT INTO series (namespace, name, dimensions, last_put, last_point)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, name, dimensions)"
                    " DO UPDATE SET last_put = excluded.last_put,"
                    " last_point = max(last_point, excluded.last_point)",
                    (key.namespace, key.name, dims, now, last))
                ids[key] = conn.execute(
                    "SELECT id FROM series WHERE namespace = ? AND name = ? AND dimensions = ?",
                    (key.namespace, key.name, dims)).fetchone()[0]
            conn.executemany(
                "INSERT INTO raw (series, ts, unit, n, total, lo, hi)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(ids[p.key], p.timestamp_ms, p.unit, p.count, p.total, p.minimum, p.maximum)
                 for p in points])
            rolled: dict[tuple[int, int, int, str], Aggregate] = {}
            for p in points:
                for resolution in ROLLUPS:
                    bucket = p.timestamp_ms // 1000 // resolution * resolution
                    slot = (ids[p.key], resolution, bucket, p.unit)
                    rolled.setdefault(slot, Aggregate()).add(p.count, p.total, p.minimum,
                                                              p.maximum)
            conn.executemany(_UPSERT_ROLLUP, [
                (*slot, a.count, a.total, a.minimum, a.maximum) for slot, a in rolled.items()])
        if now - self._pruned >= PRUNE_EVERY_SECONDS:
            self.prune()

    def prune(self) -> None:
        """Delete what is older than the retention settings allow."""
        with self._prune_lock:
            now = self._clock()
            self._pruned = now
            raw_cut = math.floor((now - self.raw_retention) * 1000)
            cut = now - self.retention
            with self._tx("pruning metrics") as conn:
                for (series,) in conn.execute("SELECT id FROM series").fetchall():
                    conn.execute("DELETE FROM raw WHERE series = ? AND ts < ?",
                                 (series, raw_cut))
                    for resolution in ROLLUPS:
                        conn.execute("DELETE FROM rollups WHERE series = ? AND resolution = ?"
                                     " AND bucket < ?", (series, resolution, cut))
                conn.execute("DELETE FROM series WHERE last_point < ?",
                             (math.floor(cut * 1000),))

    # -- reading ----------------------------------------------------------------------------
    def _series(self, key: MetricKey) -> int | None:
        rows = self._read("reading metrics", "SELECT id FROM series WHERE namespace = ? AND"
                          " name = ? AND dimensions = ?",
                          (key.namespace, key.name, dimensions_json(key.dimensions)))
        return int(rows[0][0]) if rows else None

    def aggregates(self, key: MetricKey, window: Window, unit: str | None
                   ) -> dict[tuple[int, str], Aggregate]:
        series = self._series(key)
        if series is None or window.count == 0:
            return {}
        unit_clause, unit_args = ("AND unit = ?", [unit]) if unit is not None else ("", [])
        rollup = max((r for r in ROLLUPS
                      if window.period % r == 0 and window.origin % r == 0), default=None)
        if rollup is not None:
            sql = ("SELECT (bucket - ?) / ?, unit, SUM(n), SUM(total), MIN(lo), MAX(hi)"
                   " FROM rollups WHERE series = ? AND resolution = ? AND bucket >= ?"
                   f" AND bucket < ? {unit_clause} GROUP BY 1, 2")
            args: list[Any] = [window.origin, window.period, series, rollup, window.origin,
                               window.end, *unit_args]
        else:
            sql = ("SELECT (ts - ?) / ?, unit, SUM(n), SUM(total), MIN(lo), MAX(hi)"
                   f" FROM raw WHERE series = ? AND ts >= ? AND ts < ? {unit_clause}"
                   " GROUP BY 1, 2")
            args = [window.origin * 1000, window.period * 1000, series, window.origin * 1000,
                    window.end * 1000, *unit_args]
        return {(int(index), str(found)): Aggregate(count, total, lo, hi)
                for index, found, count, total, lo, hi in self._read("reading metrics", sql,
                                                                      args)}

    def samples(self, key: MetricKey, window: Window, unit: str | None
                ) -> dict[tuple[int, str], Samples]:
        series = self._series(key)
        if series is None or window.count == 0:
            return {}
        # A period that began before the raw retention may have lost some of its points.
        kept_from = self._clock() - self.raw_retention
        first = max(0, math.ceil((kept_from - window.origin) / window.period))
        if first >= window.count:
            return {}
        unit_clause, unit_args = ("AND unit = ?", [unit]) if unit is not None else ("", [])
        rows = self._read(
            "reading metrics",
            f"SELECT ts, unit, n, total, lo, hi FROM raw WHERE series = ? AND ts >= ? AND "
            f"ts < ? {unit_clause}",
            [series, window.start_of(first) * 1000, window.end * 1000, *unit_args])
        found: dict[tuple[int, str], Samples] = {}
        step = window.period * 1000
        origin = window.origin * 1000
        for ts, unit_found, count, total, lo, hi in rows:
            slot = ((ts - origin) // step, str(unit_found))
            found.setdefault(slot, Samples()).add(count, total, lo, hi)
        return found

    def listing(self, namespace: str | None, name: str | None,
                dimensions: dict[str, str]) -> list[Listed]:
        where, args = [], []
        for column, value in (("namespace", namespace), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT namespace, name, dimensions, last_put FROM series"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [Listed(MetricKey(ns, metric, dimensions_from_json(dims)), float(last))
                for ns, metric, dims, last in self._read("listing metrics", sql, args)]
