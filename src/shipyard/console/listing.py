"""Training, processing, transform and tuning jobs as one list: filtered, sorted, paged on the
server, read through the control plane's own list call (``ControlPlane.list_resources``).

Each kind is its own sorted stream in the state database (an index per sort order). A page is
a merge of the streams: the cursor holds each kind's offset, so a page reads at most one
page of rows per kind, however deep it is (SQLite skips an offset along the index without
reading the records; Python decodes only the rows it shows). The page before is the same merge
run backwards over the rows just before each offset.

The store has no COUNT: how many rows match is found by probing offsets (is there a row at
offset ``n``?), ~2 log2(n) one-row reads per kind, the last few rows read at once, kept for
a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from shipyard import kinds

__all__ = ["JOB_KINDS", "SORTS", "STATUSES", "JobPage", "JobQuery", "JobRow", "Lister"]

JOB_KINDS: tuple[kinds.Kind, ...] = (kinds.TRAINING, kinds.PROCESSING, kinds.TRANSFORM,
                                     kinds.TUNING)
#: The console's sort names and the store's.
SORTS = {"created": "CreationTime", "name": "Name", "status": "Status"}
STATUSES = ("InProgress", "Stopping", "Completed", "Failed", "Stopped")
MAX_PAGE = 200
_COUNT_TTL = 1.0
#: A count's last rows are read in one call once this few are left to tell apart.
_LAST_READ = 128


class Plane(Protocol):
    def list_resources(self, kind: str, **filters: Any) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class JobQuery:
    kinds: tuple[str, ...] = tuple(k.key for k in JOB_KINDS)
    statuses: tuple[str, ...] = ()
    name: str = ""
    created_after: float | None = None
    created_before: float | None = None
    sort: str = "created"
    descending: bool = True
    size: int = 50

    @classmethod
    def from_params(cls, params: dict[str, str]) -> JobQuery:
        """From a page's query string; anything unknown falls back to the default."""
        known = {k.key for k in JOB_KINDS}
        wanted = tuple(k for k in params.get("kind", "").split(",") if k in known)
        statuses = tuple(s for s in params.get("status", "").split(",") if s in STATUSES)
        sort = params.get("sort", "created")
        size = params.get("size", "")
        return cls(kinds=wanted or cls.kinds, statuses=statuses,
                   name=params.get("name", "").strip()[:63],
                   created_after=_epoch(params.get("after", "")),
                   created_before=_epoch(params.get("before", "")),
                   sort=sort if sort in SORTS else "created",
                   descending=params.get("order", "desc") != "asc",
                   size=max(1, min(MAX_PAGE, int(size))) if size.isdigit() else 50)

    def filters(self) -> dict[str, Any]:
        """``list_resources``'s filters for this query (no sort, no page)."""
        found: dict[str, Any] = {}
        if self.statuses:
            found["statuses"] = self.statuses
        if self.name:
            found["name_contains"] = self.name
        if self.created_after is not None:
            found["created_after"] = self.created_after
        if self.created_before is not None:
            found["created_before"] = self.created_before
        return found


@dataclass(frozen=True)
class JobRow:
    kind: str
    name: str
    status: str
    created: float
    ended: float | None
    secondary: str
    failure: str
    record: dict[str, Any] = field(repr=False)

    def key(self, sort: str) -> tuple[Any, ...]:
        """The order the store sorts by (ties by name), then the kind (same name, two kinds)."""
        first: Any = {"created": self.created, "name": self.name, "status": self.status}[sort]
        return (first, self.name, _KIND_ORDER[self.kind])


@dataclass(frozen=True)
class JobPage:
    rows: list[JobRow]
    #: Each kind's offset at this page's first row (the cursor that shows this page).
    cursor: dict[str, int]
    next_cursor: dict[str, int] | None
    prev_cursor: dict[str, int] | None
    #: Position of the first row in the whole list (0-based) and how many match.
    start: int
    total: int


_KIND_ORDER = {k.key: i for i, k in enumerate(JOB_KINDS)}


def encode_cursor(cursor: dict[str, int]) -> str:
    return ",".join(f"{k}:{v}" for k, v in cursor.items() if v)


def decode_cursor(text: str) -> dict[str, int]:
    cursor: dict[str, int] = {}
    for part in text.split(","):
        key, _, value = part.partition(":")
        if key in _KIND_ORDER and value.isdigit():
            cursor[key] = int(value)
    return cursor


class Lister:
    """Pages of the merged job list over a plane."""

    def __init__(self, plane: Plane) -> None:
        self._plane = plane
        self._counts: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop the counts kept (the next page probes again)."""
        with self._lock:
            self._counts.clear()

    def page(self, query: JobQuery, cursor: dict[str, int] | None = None) -> JobPage:
        at = {k: (cursor or {}).get(k, 0) for k in query.kinds}
        rows: list[JobRow] = []
        for kind in query.kinds:
            rows += self._read(kind, query, at[kind], query.size)
        rows.sort(key=lambda r: r.key(query.sort), reverse=query.descending)
        shown = rows[:query.size]
        after = dict(at)
        for row in shown:
            after[row.kind] += 1
        counts = {kind: self.count(kind, query) for kind in query.kinds}
        more = any(after[k] < counts[k] for k in query.kinds)
        start = sum(at.values())
        return JobPage(shown, at, after if more else None,
                       self._before(query, at) if start else None, start, sum(counts.values()))

    def _before(self, query: JobQuery, at: dict[str, int]) -> dict[str, int]:
        """The cursor of the page that ends where ``at`` starts."""
        rows: list[JobRow] = []
        for kind in query.kinds:
            take = min(query.size, at[kind])
            if take:
                rows += self._read(kind, query, at[kind] - take, take)
        rows.sort(key=lambda r: r.key(query.sort), reverse=query.descending)
        before = dict(at)
        for row in rows[-query.size:]:
            before[row.kind] -= 1
        return before

    def _read(self, kind: str, query: JobQuery, offset: int, limit: int) -> list[JobRow]:
        records = self._plane.list_resources(
            kind, **query.filters(), sort_by=SORTS[query.sort], descending=query.descending,
            offset=offset, limit=limit)
        return [_row(kind, r) for r in records]

    def count(self, kind: str, query: JobQuery) -> int:
        """How many ``kind`` rows match ``query``'s filters (probed, kept a second)."""
        filters = query.filters()
        key = (kind, tuple(sorted(filters.items())))
        now = time.monotonic()
        with self._lock:
            kept = self._counts.get(key)
        if kept is not None and now - kept[0] < _COUNT_TTL:
            return kept[1]
        # Walk the index the filter uses, so a probe never sorts: by creation time when a
        # time range is asked for, else by status when statuses are.
        timed = query.created_after is not None or query.created_before is not None
        sort_by = "Status" if query.statuses and not timed else "CreationTime"

        def rows(offset: int, limit: int) -> int:
            return len(self._plane.list_resources(kind, **filters, sort_by=sort_by,
                                                  offset=offset, limit=limit))

        total = _probe_count(rows)
        with self._lock:
            if len(self._counts) > 256:
                self._counts.clear()
            self._counts[key] = (now, total)
        return total

    def status_counts(self) -> dict[str, dict[str, int]]:
        """For each job kind, how many jobs are in each status."""
        return {kind.key: {status: self.count(kind.key, JobQuery(statuses=(status,)))
                           for status in STATUSES} for kind in JOB_KINDS}

    def recent(self, statuses: tuple[str, ...], size: int) -> list[JobRow]:
        """The newest ``size`` jobs of any kind in ``statuses``."""
        return self.page(replace(JobQuery(), statuses=statuses, size=size)).rows


def _probe_count(rows: Callable[[int, int], int]) -> int:
    """How many rows there are, given ``rows(offset, limit)``: how many of the ``limit``
    rows from ``offset`` exist. Each probe walks the index up to its offset, so the search
    doubles, then halves, then reads the last few rows at once (a probe that must look at
    each row, a status checked along the time index, costs more than reading them)."""
    if not rows(0, 1):
        return 0
    low, high = 1, 1  # a row at offset low - 1 exists
    while rows(high, 1):
        low, high = high + 1, high * 2
    # rows exist up to offset low - 1, and none at offset high: the count is in [low, high]
    while high - low > _LAST_READ:
        middle = (low + high) // 2
        if rows(middle, 1):
            low = middle + 1
        else:
            high = middle
    return low + rows(low, high - low) if high > low else low


def _row(kind: str, record: dict[str, Any]) -> JobRow:
    spec = kinds.get(kind)
    end_field = spec.summary_fields[3] if spec is not kinds.TUNING else \
        "HyperParameterTuningEndTime"
    ended = record.get(end_field)
    return JobRow(kind=kind, name=str(record.get(spec.name_field, "")),
                  status=str(record.get(spec.status_field, "")),
                  created=float(record.get("CreationTime") or 0.0),
                  ended=float(ended) if isinstance(ended, (int, float)) else None,
                  secondary=str(record.get("SecondaryStatus", "")),
                  failure=str(record.get("FailureReason", "")), record=record)


def _epoch(text: str) -> float | None:
    """``2026-01-31``, ``2026-01-31T12:00`` (UTC) or epoch seconds; else None."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime, timezone
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
