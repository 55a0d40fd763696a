"""Where Shipyard's own measurements go: ``metrics.db``, as points in ``AWS/`` namespaces
and the jobs' namespaces, written straight to the store (no PutMetricData round trip).

Each process that measures (the control plane, the data plane) opens its own
:class:`PublishedStore` on the file; SQLite's WAL lets them write side by side.
"""

from __future__ import annotations

from shipyard.control.metrics.ingest import Point
from shipyard.control.metrics.model import MetricKey
from shipyard.control.metrics.published import PublishedStore
from shipyard.settings import Settings

__all__ = ["DATABASE", "open_store", "point"]

#: The published metrics' database, in the data directory (``service.DATABASE``).
DATABASE = "metrics.db"
_DAY = 86400.0


def open_store(settings: Settings) -> PublishedStore:
    """The data directory's published metrics, with its retention settings."""
    return PublishedStore(settings.data_dir / DATABASE,
                          retention_seconds=settings.metrics_retention_days * _DAY,
                          raw_retention_seconds=settings.metrics_raw_retention_days * _DAY)


def point(key: MetricKey, timestamp_ms: int, unit: str, value: float, count: float = 1.0
          ) -> Point:
    """``value`` published ``count`` times, high resolution (the time kept to the ms)."""
    return Point(key, timestamp_ms, unit, count, value * count, value, value, True)
