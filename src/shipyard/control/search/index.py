"""The records Search reads, kept by column and brought up to date before each search.

Decoding every record of 10,000 training jobs costs ~0.4 s of ``json.loads``; reading one
member of each with SQLite's ``json_extract`` ~50 ms. So the index keeps, per kind, only the
members searches have named (one column each, a value per record, :mod:`table`) and reads
again only the records that changed:

* ``PRAGMA data_version`` on the index's own connection (which never writes) says whether
  anything was committed since the last look; nothing was: the columns are current;
* else a summary of the kind's rows (how many, their rowids, LastModifiedTimes and statuses:
  aggregates over covering indexes, ~2 ms for 10,000 rows) says whether any row came, went,
  or changed status or LastModifiedTime; if none did, only the rows whose status is not
  final are read again (a running job's record changes without its LastModifiedTime);
* else each row's ``(rowid, name, status, last_modified_time)`` (~13 ms for 10,000 rows)
  says which rows are new, gone or changed; only those (and the active ones) are read again.

A search then runs the compiled query over the columns, sorts what matched, and reads the
page's records whole. Results of a query are kept until its table changes, so further pages
cost only their records. The index reads the store's tables (``jobs``, ``tags``) directly:
with :mod:`dashboard`, the one place outside ``control/state/store.py`` that knows them.

Members a record does not hold itself (``Tags``, from the tag table; a model's ``Endpoints``
and ``LastBatchTransformJob``, :mod:`dashboard`) are columns read whole again after any
commit, when a search names them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shipyard import kinds
from shipyard.control.search import dashboard, fields
from shipyard.control.search.expression import Query, ordered
from shipyard.control.search.table import Table, TableSource
from shipyard.errors import StorageError

__all__ = ["SearchIndex"]

#: Statuses of records that may still change without their LastModifiedTime.
_ACTIVE = ("InProgress", "Stopping", "Creating", "Updating", "Deleting", "SystemUpdating",
           "RollingBack", "Pending")
_CHUNK = 500
#: Seconds a LastModifiedTime may lag the moment its row was committed.
_CLOCK_SLACK = 5.0
_KEPT_RESULTS = 32


class SearchIndex:
    """Column-wise caches of the state database's records, one per searchable kind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._version = -1
        self._stale: set[str] = set()
        self._tables: dict[str, Table] = {}
        self._results: OrderedDict[tuple[str, str], tuple[int, list[int]]] = OrderedDict()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def search(self, kind: str, query: Query, offset: int, limit: int
               ) -> tuple[list[dict[str, Any]], int]:
        """One page of ``kind``'s records matching ``query`` (records whole, with ``Tags``)
        and how many match in all."""
        with self._lock, self._reading() as conn:
            table = self._current(conn, kind, query.resource, query.members)
            key = (kind, query.fingerprint)
            kept = self._results.get(key)
            if kept is not None and kept[0] == table.generation:
                self._results.move_to_end(key)
                matched = kept[1]
            else:
                source = TableSource(table)
                rows = (set(range(source.size)) if query.predicate is None
                        else query.predicate(source))
                matched = ordered(query, source, rows)
                self._results[key] = (table.generation, matched)
                while len(self._results) > _KEPT_RESULTS:
                    self._results.popitem(last=False)
            page = [table.names[row] for row in matched[offset:offset + limit]]
            return self._records(conn, table, page), len(matched)

    def first(self, kind: str, resource: str, name: str, test: Callable[[Any], bool]
              ) -> str | None:
        """The key of ``kind``'s first record (by name) whose property ``name`` has a value
        passing ``test``; None if none."""
        field = fields.resolve(resource, name)
        with self._lock, self._reading() as conn:
            table = self._current(conn, kind, resource, frozenset({field.member}))
            for row, values in enumerate(TableSource(table).values(field, _as_is)):
                if any(test(v) for v in values):
                    return table.names[row]
        return None

    # -- keeping current -------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction on the index's own connection: one snapshot throughout."""
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                             check_same_thread=False)
                self._conn.execute("PRAGMA query_only = 1")
            conn = self._conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"searching: state database error: {exc}") from exc

    def _current(self, conn: sqlite3.Connection, kind: str, resource: str,
                 members: frozenset[str]) -> Table:
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            # Something was committed: every kind's table looks again when next used.
            self._version = version
            self._stale = set(self._tables)
        table = self._tables.get(kind)
        if table is None:
            table = self._tables[kind] = Table(kind, resource)
            table.encoded = _json_members(resource)
            table.external = frozenset({"Tags", *dashboard.JOINED.get(resource, {})})
            self._stale.add(kind)
        if kind in self._stale:
            self._refresh(conn, table)
            self._stale.discard(kind)
        missing = [m for m in members if m not in table.columns and m not in table.external]
        if missing:
            for member in missing:
                table.columns[member] = [None] * len(table.rowids)
            self._read_rows(conn, table, missing, None)
        if "Tags" in members and table.tags_version != self._version:
            self._load_tags(conn, table)
        for member in sorted((members & table.external) - {"Tags"}):
            if table.joined_versions.get(member) != self._version:
                self._load_joined(conn, table, member)
        return table

    def _refresh(self, conn: sqlite3.Connection, table: Table) -> None:
        kind = table.kind
        summary = _summary_of(conn, kind)
        marks = ",".join("?" * len(_ACTIVE))
        active = [rowid for (rowid,) in conn.execute(
            f"SELECT rowid FROM jobs WHERE kind = ? AND status IN ({marks})", (kind, *_ACTIVE))]
        if summary == table.summary:
            # No row came, went or changed status or time: only active ones may have moved.
            position = table.position()
            self._reread(conn, table, [position[r] for r in active if r in position])
            return
        old = table.signature
        # A row a change touched has a LastModifiedTime from then on: the rows past the last
        # look (less a few seconds for clocks and commits in flight) are read, and if the
        # summary then adds up, they are all that changed; else every row's is read.
        delta: dict[int, tuple[str, str, float]] | None = None
        since = min(table.latest, table.looked_at - _CLOCK_SLACK)
        table.looked_at = time.time()
        if old and table.summary is not None:
            found = {rowid: (name, status, float(modified))
                     for rowid, status, name, modified in conn.execute(
                         "SELECT rowid, status, name, last_modified_time FROM jobs "
                         "WHERE kind = ? AND last_modified_time >= ?", (kind, since))}
            if _adjusted(table.summary, old, found) == summary:
                delta = found
        if delta is None:
            statuses = conn.execute("SELECT rowid, status, name FROM jobs WHERE kind = ?",
                                    (kind,)).fetchall()
            modified_at = dict(conn.execute(
                "SELECT rowid, last_modified_time FROM jobs WHERE kind = ?", (kind,)).fetchall())
            signature = {rowid: (name, status, float(modified_at.get(rowid) or 0.0))
                         for rowid, status, name in statuses}
            stale = {rowid for rowid, sig in signature.items() if old.get(rowid) != sig}
            same_rows = signature.keys() == old.keys()
        else:
            stale = {rowid for rowid, sig in delta.items() if old.get(rowid) != sig}
            same_rows = all(rowid in old for rowid in delta)
            signature = old if same_rows else dict(old)
            signature.update(delta)
        table.latest = max((sig[2] for sig in (delta or signature).values()),
                           default=table.latest)
        table.summary = summary
        stale.update(r for r in active if r in signature)
        table.signature = signature
        if same_rows:
            position = table.position()
            self._reread(conn, table, sorted(position[r] for r in stale))
            return
        # Rows came or went: renumber (by name), carry what is known, read the rest.
        previous_position = table.position()
        order = sorted(signature, key=lambda rowid: signature[rowid][0])
        previous = [None if rowid in stale else previous_position.get(rowid)
                    for rowid in order]
        table.rowids = order
        table.names = [signature[rowid][0] for rowid in order]
        fresh = [index for index, at in enumerate(previous) if at is None]
        for member, values in list(table.columns.items()):
            table.columns[member] = [None if at is None else values[at] for at in previous]
        table.tags_version = -1
        table.joined_versions.clear()
        members = [m for m in table.columns if m not in table.external]
        if members and fresh:
            self._read_rows(conn, table, members, [table.rowids[i] for i in fresh])
        for derived in table.derived.values():
            derived.remap(previous, table.columns[derived.field.member], fresh)
        table.generation += 1

    def _reread(self, conn: sqlite3.Connection, table: Table, rows: list[int]) -> None:
        """Read ``rows`` (positions) again; what changed moves the table's generation."""
        members = [m for m in table.columns if m not in table.external]
        if not rows or not members:
            return
        before = {m: [table.columns[m][i] for i in rows] for m in members}
        self._read_rows(conn, table, members, [table.rowids[i] for i in rows])
        changed = False
        for member in members:
            after = [table.columns[member][i] for i in rows]
            if after != before[member]:
                changed = True
                table.changed(member, rows)
        if changed:
            table.generation += 1

    def _read_rows(self, conn: sqlite3.Connection, table: Table, members: list[str],
                   rowids: list[int] | None) -> None:
        """Fill ``members`` of the rows ``rowids`` (every row when None) from the store."""
        decoders = [_decoder(table.resource, member) for member in members]
        extracts = ", ".join("json_extract(record, ?)" for _ in members)
        paths = [f'$."{member}"' for member in members]
        position = table.position()
        targets = [table.columns[member] for member in members]
        if rowids is None:
            batches: list[tuple[str, list[Any]]] = [("kind = ?", [table.kind])]
        else:
            batches = [(f"rowid IN ({','.join('?' * len(chunk))})", list(chunk))
                       for chunk in (rowids[i:i + _CHUNK]
                                     for i in range(0, len(rowids), _CHUNK))]
        for where, args in batches:
            try:
                found_rows = conn.execute(f"SELECT rowid, {extracts} FROM jobs WHERE {where}",
                                          [*paths, *args]).fetchall()
            except sqlite3.OperationalError:
                # A record that is not JSON (torn by a fault; start-up sets such rows aside):
                # read around it rather than fail every search.
                found_rows = conn.execute(
                    f"SELECT rowid, {extracts} FROM jobs WHERE {where} AND json_valid(record)",
                    [*paths, *args]).fetchall()
            for found in found_rows:
                index = position.get(found[0])
                if index is None:
                    continue
                for target, decode, raw in zip(targets, decoders, found[1:], strict=True):
                    target[index] = decode(raw)

    def _load_tags(self, conn: sqlite3.Connection, table: Table) -> None:
        arn_member = table.arn_member
        if arn_member not in table.columns:
            table.columns[arn_member] = [None] * len(table.rowids)
            self._read_rows(conn, table, [arn_member], None)
        tags: dict[str, dict[str, str]] = {}
        for arn, key, value in conn.execute("SELECT arn, key, value FROM tags"):
            tags.setdefault(arn, {})[key] = value
        table.columns["Tags"] = [tags.get(arn) if isinstance(arn, str) else None
                                 for arn in table.columns[arn_member]]
        table.replaced("Tags")
        table.tags_version = self._version
        table.generation += 1

    def _load_joined(self, conn: sqlite3.Connection, table: Table, member: str) -> None:
        """Read ``member`` (a model's ``Endpoints``...) of every row from other records."""
        name_member = kinds.get(table.kind).name_field
        if name_member not in table.columns:
            table.columns[name_member] = [None] * len(table.rowids)
            self._read_rows(conn, table, [name_member], None)
        names = table.columns[name_member]
        found = dashboard.joined(conn, table.resource, member, names)
        table.columns[member] = [found.get(name) if isinstance(name, str) else None
                                 for name in names]
        table.replaced(member)
        table.joined_versions[member] = self._version
        table.generation += 1

    def _records(self, conn: sqlite3.Connection, table: Table, names: list[str]
                 ) -> list[dict[str, Any]]:
        """The page's records whole, in ``names``' order, each with its ``Tags``; a model's
        as a ``ModelDashboardModel`` (:func:`_dashboard`)."""
        if not names:
            return []
        marks = ",".join("?" * len(names))
        found = {}
        for name, record in conn.execute(
                f"SELECT name, record FROM jobs WHERE kind = ? AND name IN ({marks})",
                [table.kind, *names]):
            with contextlib.suppress(ValueError):
                found[name] = json.loads(record)
        records = [found[name] for name in names if isinstance(found.get(name), dict)]
        arns = [record.get(table.arn_member) for record in records]
        wanted = [arn for arn in arns if isinstance(arn, str)]
        tags: dict[str, list[dict[str, str]]] = {}
        if wanted:
            for arn, key, value in conn.execute(
                    f"SELECT arn, key, value FROM tags WHERE arn IN "
                    f"({','.join('?' * len(wanted))}) ORDER BY key", wanted):
                tags.setdefault(arn, []).append({"Key": key, "Value": value})
        for record, arn in zip(records, arns, strict=True):
            record["Tags"] = tags.get(arn, []) if isinstance(arn, str) else []
        if table.resource in fields.STORED_UNDER:
            return _dashboard(conn, table, records)
        return records


def _dashboard(conn: sqlite3.Connection, table: Table, records: list[dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """Each stored record as the member of its search record it fills (a model's DescribeModel
    document is ``Model``), beside the members read from other records: a model's
    ``Endpoints`` and its ``LastBatchTransformJob`` (when it has one)."""
    under = fields.STORED_UNDER[table.resource]
    name_member = kinds.get(table.kind).name_field
    names = [record.get(name_member) for record in records]
    extra = {member: dashboard.joined(conn, table.resource, member,
                                      [n for n in names if isinstance(n, str)])
             for member in dashboard.JOINED.get(table.resource, {})}
    shaped: list[dict[str, Any]] = []
    for record, name in zip(records, names, strict=True):
        result: dict[str, Any] = {under: record}
        for member, found in extra.items():
            value = found.get(name) if isinstance(name, str) else None
            if value is not None:
                result[member] = value
        shaped.append(result)
    return shaped


def _summary_of(conn: sqlite3.Connection, kind: str) -> tuple[Any, ...]:
    """How many rows ``kind`` has, and exact sums of their rowids and LastModifiedTimes (in
    ms), with the count of each status: aggregates over covering indexes, ~2 ms."""
    count, rowids, times = conn.execute(
        "SELECT count(*), coalesce(sum(rowid), 0), "
        "coalesce(sum(CAST(last_modified_time * 1000 AS INTEGER)), 0) FROM jobs "
        "WHERE kind = ?", (kind,)).fetchone()
    statuses = tuple(conn.execute("SELECT status, count(*) FROM jobs WHERE kind = ? GROUP BY "
                                  "status ORDER BY status", (kind,)).fetchall())
    return (count, rowids, times, statuses)


def _adjusted(summary: tuple[Any, ...], known: dict[int, tuple[str, str, float]],
              changed: dict[int, tuple[str, str, float]]) -> tuple[Any, ...]:
    """``summary`` (of the rows ``known``) once the rows ``changed`` replace or join them."""
    count, rowids, times, counted = summary
    statuses = dict(counted)
    for rowid, (_, status, modified) in changed.items():
        before = known.get(rowid)
        if before is not None:
            count, rowids, times = count - 1, rowids - rowid, times - int(before[2] * 1000)
            statuses[before[1]] -= 1
        count, rowids, times = count + 1, rowids + rowid, times + int(modified * 1000)
        statuses[status] = statuses.get(status, 0) + 1
    return (count, rowids, times, tuple(sorted((k, v) for k, v in statuses.items() if v)))


def _decoder(resource: str, member: str) -> Callable[[Any], Any]:
    """How ``json_extract``'s answer for a record member is kept: objects and arrays as the
    JSON text it answers (decoded when a property is derived from them: text is no work for
    the garbage collector, 10,000 decoded lists are), booleans (0 or 1) as booleans."""
    if member in _json_members(resource):
        return _as_is
    shape = fields.stored_shape(resource)
    if shape is not None and member in shape.members and (
            shape.members[member].type_name == "boolean"):
        return lambda raw: None if raw is None else bool(raw)
    return _as_is


def _json_members(resource: str) -> frozenset[str]:
    shape = fields.stored_shape(resource)
    if shape is None:
        return frozenset()
    return frozenset(name for name, member in shape.members.items()
                     if member.type_name in ("structure", "list", "map"))


def _as_is(value: Any) -> Any:
    return value
