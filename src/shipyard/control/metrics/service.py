"""The metrics the control plane answers CloudWatch's calls with: one object, opened on the
data directory, that checks each request once and runs it over every source.

Sources: :class:`PublishedStore` (``metrics.db``: what clients publish with PutMetricData)
and :class:`JobSeries` (the state database's series of jobs' MetricDefinitions, read in
place). Requests are CloudWatch's, as botocore's model shapes them, whichever wire protocol
they came over (``api.cloudwatch`` turns both into the same dictionaries); timestamps may be
epoch seconds, ISO 8601 text or ``datetime`` objects. Answers are CloudWatch's output
structures with timestamps as epoch seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shipyard.control.metrics import ingest, metric_data, queries, requests
from shipyard.control.metrics.jobs import JobSeries
from shipyard.control.metrics.model import Source
from shipyard.control.metrics.published import PublishedStore
from shipyard.settings import Settings

__all__ = ["DATABASE", "Metrics"]

#: The published metrics' database, in the data directory.
DATABASE = "metrics.db"
_DAY = 86400.0


class Metrics:
    def __init__(self, published: PublishedStore, jobs: JobSeries, *, account_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.published = published
        self.jobs = jobs
        self.sources: tuple[Source, ...] = (published, jobs)
        self.account_id = account_id
        self._clock = clock

    @classmethod
    def open(cls, settings: Settings, state_path: Path) -> Metrics:
        """The metrics of ``settings.data_dir``, over the state database at ``state_path``."""
        published = PublishedStore(
            settings.data_dir / DATABASE,
            retention_seconds=settings.metrics_retention_days * _DAY,
            raw_retention_seconds=settings.metrics_raw_retention_days * _DAY)
        return cls(published, JobSeries(state_path), account_id=settings.account_id)

    def close(self) -> None:
        self.published.close()
        self.jobs.close()

    def put_metric_data(self, request: Any, *, reserved: bool = False) -> None:
        """PutMetricData; ``reserved``: Shipyard's own measurements, which may use ``AWS/``
        namespaces."""
        checked = requests.check("PutMetricData", request)
        self.published.put(ingest.points(checked, self._clock(), reserved=reserved))

    def get_metric_statistics(self, request: Any) -> dict[str, Any]:
        checked = requests.check("GetMetricStatistics", request)
        return queries.get_metric_statistics(self.sources, checked)

    def get_metric_data(self, request: Any) -> dict[str, Any]:
        checked = requests.check("GetMetricData", request)
        return metric_data.get_metric_data(self.sources, checked)

    def list_metrics(self, request: Any) -> dict[str, Any]:
        checked = requests.check("ListMetrics", request)
        return queries.list_metrics(self.sources, checked, account_id=self.account_id,
                                    now=self._clock())
