"""Jobs' MetricDefinitions series as CloudWatch metrics, read where the jobs keep them.

The supervisor extracts a training job's metrics from each host's log as it is written and
stores every point in the state database's ``metrics`` table (``Store.add_metrics``: job,
metric, host, the log line's timestamp, value). That table stays the one source of truth:
this module reads it in place, never copies it, so a point is visible to GetMetricStatistics
as soon as the job's own ``FinalMetricDataList`` and ``shipyard jobs metrics`` see it, and
lives as long as the job's record.

Each series appears as CloudWatch metrics in the job kind's namespace, as SageMaker
publishes them (SageMaker developer guide, "Monitor Amazon SageMaker with Amazon CloudWatch"):

- ``/aws/sagemaker/TrainingJobs``, dimension ``TrainingJobName``: every host's points;
- the same namespace, dimension ``Host`` = ``<job>/algo-<N>``: one host's points (AWS's form
  of the value, which names the job, as its instance metrics carry it);
- ``/aws/sagemaker/ProcessingJobs`` with ``ProcessingJobName`` and ``Host`` likewise.

Points have no unit (``None``) and keep the log line's time to the microsecond (high
resolution); every point is a raw value, so percentiles are always available.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from shipyard import kinds
from shipyard.control.metrics.model import Aggregate, Listed, MetricKey, Samples, Window
from shipyard.control.state.sqlite import sqlite_errors

__all__ = ["HOST_DIMENSION", "JOB_KINDS", "UNIT", "JobSeries"]

#: The job kinds whose series are metrics: namespace -> kind.
JOB_KINDS = {k.log_group: k for k in (kinds.TRAINING, kinds.PROCESSING) if k.log_group}
HOST_DIMENSION = "Host"
UNIT = "None"


_translate = sqlite_errors("state database")


class JobSeries:
    """A :class:`~shipyard.control.metrics.model.Source` over the state database's
    ``metrics`` table (read only; one connection per thread)."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path
        self._local = threading.local()

    def _read(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        with _translate("reading job metrics"):
            conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA query_only = 1")
                self._local.conn = conn
            return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _where(self, key: MetricKey) -> tuple[str, list[Any]] | None:
        """The rows of ``key``'s series: a job's, or one of its hosts'."""
        kind = JOB_KINDS.get(key.namespace)
        if kind is None or len(key.dimensions) != 1:
            return None
        ((dimension, value),) = key.dimensions
        if dimension == kind.name_field:
            return ("kind = ? AND name = ? AND metric = ?", [kind.key, value, key.name])
        if dimension == HOST_DIMENSION:
            job, slash, host = value.rpartition("/")
            if slash and job and host:
                return ("kind = ? AND name = ? AND metric = ? AND host = ?",
                        [kind.key, job, key.name, host])
        return None

    def aggregates(self, key: MetricKey, window: Window, unit: str | None
                   ) -> dict[tuple[int, str], Aggregate]:
        where = self._where(key)
        if where is None or window.count == 0 or unit not in (None, UNIT):
            return {}
        clause, args = where
        rows = self._read(
            "SELECT CAST((timestamp - ?) / ? AS INTEGER), COUNT(*), SUM(value), MIN(value),"
            f" MAX(value) FROM metrics WHERE {clause} AND timestamp >= ? AND timestamp < ?"
            " GROUP BY 1",
            [window.origin, window.period, *args, window.origin, window.end])
        return {(int(index), UNIT): Aggregate(float(count), total, lo, hi)
                for index, count, total, lo, hi in rows}

    def samples(self, key: MetricKey, window: Window, unit: str | None
                ) -> dict[tuple[int, str], Samples]:
        where = self._where(key)
        if where is None or window.count == 0 or unit not in (None, UNIT):
            return {}
        clause, args = where
        rows = self._read(f"SELECT timestamp, value FROM metrics WHERE {clause}"
                          " AND timestamp >= ? AND timestamp < ?",
                          [*args, window.origin, window.end])
        found: dict[tuple[int, str], Samples] = {}
        for timestamp, value in rows:
            slot = (int((timestamp - window.origin) // window.period), UNIT)
            found.setdefault(slot, Samples()).add(1.0, value, value, value)
        return found

    def listing(self, namespace: str | None, name: str | None,
                dimensions: dict[str, str]) -> list[Listed]:
        listed: list[Listed] = []
        for ns, kind in JOB_KINDS.items():
            if namespace is not None and namespace != ns:
                continue
            where, args = ["kind = ?"], [kind.key]
            if name is not None:
                where.append("metric = ?")
                args.append(name)
            job = dimensions.get(kind.name_field)
            host = dimensions.get(HOST_DIMENSION, "").rpartition("/")[0]
            if job is not None or host:
                where.append("name = ?")
                args.append(job if job is not None else host)
            rows = self._read("SELECT name, metric, host, MAX(timestamp) FROM metrics WHERE "
                              + " AND ".join(where) + " GROUP BY name, metric, host", args)
            newest: dict[tuple[str, str], float] = {}
            for job_name, metric, host_name, last in rows:
                listed.append(Listed(MetricKey(ns, metric, (
                    (HOST_DIMENSION, f"{job_name}/{host_name}"),)), float(last)))
                newest[(job_name, metric)] = max(newest.get((job_name, metric), last), last)
            listed += [Listed(MetricKey(ns, metric, ((kind.name_field, job_name),)), last)
                       for (job_name, metric), last in newest.items()]
        return listed
