"""GetMetricData: many ``MetricStat`` queries at once, paged by datapoints.

What CloudWatch does (reference: API_GetMetricData, API_MetricDataQuery), and Shipyard too:

- up to 500 queries, each with an ``Id`` unique in the request that starts with a lowercase
  letter (letters, digits, ``_``), a ``MetricStat`` (metric, period, statistic, optional
  unit), an optional ``Label`` (default: the metric's name) and ``ReturnData`` (default true;
  false: computed, not returned);
- one value per period with data; ``ScanBy`` ``TimestampDescending`` (the default) or
  ``TimestampAscending``; units are evaluated together unless ``Unit`` narrows the query;
- ``MaxDatapoints`` (default 100,800) bounds the datapoints of one answer: the queries fill a
  page in order and ``NextToken`` resumes where it stopped; a query cut short says
  ``PartialData``, a whole one ``Complete``; the SDK's paginator joins the pages.

A query with an ``Expression`` (metric math, Metrics Insights ``SELECT``) is refused with a
``ValidationError`` that says so: Shipyard does not evaluate expressions, and an empty or
made-up answer would be read as data. Statistics other than the five basic ones and
percentiles (``tm99``, ``IQM``...) are refused the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from shipyard.control.metrics import tokens
from shipyard.control.metrics.errors import (
    InvalidNextToken,
    MetricsValidationError,
    MissingParameter,
)
from shipyard.control.metrics.model import MetricKey, Source, check_period, epoch, window
from shipyard.control.metrics.queries import dimensions, periods
from shipyard.control.metrics.statistics import parse, value

__all__ = ["DEFAULT_MAX_DATAPOINTS", "MAX_QUERIES", "get_metric_data"]

MAX_QUERIES = 500
DEFAULT_MAX_DATAPOINTS = 100_800
_ID = re.compile(r"[a-z][a-zA-Z0-9_]*")

_Series = tuple[str, str, list[tuple[float, float]]]


def get_metric_data(sources: Sequence[Source], request: dict[str, Any]) -> dict[str, Any]:
    queries = list(request["MetricDataQueries"])
    if not queries:
        raise MissingParameter("The parameter MetricDataQueries is required.")
    if len(queries) > MAX_QUERIES:
        raise MetricsValidationError(f"The collection MetricDataQueries must not have a size "
                                     f"greater than {MAX_QUERIES}.")
    start, end = epoch(request["StartTime"], "StartTime"), epoch(request["EndTime"], "EndTime")
    if start >= end:
        raise MetricsValidationError("The parameter EndTime must be greater than StartTime.")
    descending = (request.get("ScanBy") or "TimestampDescending") == "TimestampDescending"
    limit = request.get("MaxDatapoints")
    limit = DEFAULT_MAX_DATAPOINTS if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise MetricsValidationError(f"The value {limit!r} for parameter MaxDatapoints is "
                                     "invalid: it must be at least 1.")
    results: list[_Series] = []
    seen: set[str] = set()
    for index, query in enumerate(queries, 1):
        series = _run(sources, query, f"MetricDataQueries.member.{index}", seen, start, end,
                      descending)
        if query.get("ReturnData", True):
            results.append(series)
    scope = {"op": "GetMetricData", "queries": queries, "start": start, "end": end,
             "descending": descending}
    position, offset = 0, 0
    if request.get("NextToken") is not None:
        position, offset = tokens.decode(request["NextToken"], scope, InvalidNextToken, 2)
        if position > len(results):
            raise InvalidNextToken("The NextToken is invalid or was made for another request.")
    page: list[dict[str, Any]] = []
    room = limit
    resume: list[int] | None = None
    for at in range(position, len(results)):
        ident, label, points = results[at]
        first = offset if at == position else 0
        taken = points[first:first + room]
        room -= len(taken)
        more = first + len(taken) < len(points)
        page.append({"Id": ident, "Label": label,
                     "Timestamps": [t for t, _ in taken], "Values": [v for _, v in taken],
                     "StatusCode": "PartialData" if more else "Complete", "Messages": []})
        if more:
            resume = [at, first + len(taken)]
            break
        if room == 0 and at + 1 < len(results):
            resume = [at + 1, 0]
            break
    answer: dict[str, Any] = {"MetricDataResults": page, "Messages": []}
    if resume is not None:
        answer["NextToken"] = tokens.encode(resume, scope)
    return answer


def _run(sources: Sequence[Source], query: dict[str, Any], path: str, seen: set[str],
         start: float, end: float, descending: bool) -> _Series:
    ident = str(query["Id"])
    if not _ID.fullmatch(ident):
        raise MetricsValidationError(f"The value {ident} for parameter {path}.Id is invalid: "
                                     "it must start with a lowercase letter and contain only "
                                     "letters, numbers and underscores.")
    if ident in seen:
        raise MetricsValidationError(f"The value {ident} for parameter {path}.Id is a "
                                     "duplicate: each query's Id must be unique.")
    seen.add(ident)
    if query.get("Expression") is not None:
        raise MetricsValidationError(
            f"{path}.Expression is not supported: Shipyard does not evaluate metric math or "
            f"Metrics Insights expressions ({str(query['Expression'])[:80]!r}). Ask for each "
            "metric with a MetricStat query and compute the expression from their values.")
    stat = query.get("MetricStat")
    if stat is None:
        raise MetricsValidationError(f"The parameter {path}.MetricStat is required.")
    metric = stat["Metric"]
    for member in ("Namespace", "MetricName"):
        if metric.get(member) is None:
            raise MissingParameter(f"The parameter {path}.MetricStat.Metric.{member} is "
                                   "required.")
    key = MetricKey(str(metric["Namespace"]), str(metric["MetricName"]),
                    dimensions(metric.get("Dimensions"), f"{path}.MetricStat.Metric.Dimensions"))
    period = check_period(stat["Period"], f"{path}.MetricStat.Period")
    statistic = parse(stat["Stat"], f"{path}.MetricStat.Stat")
    span = window(start, end, period)
    found = periods(sources, key, span, stat.get("Unit"), by_unit=False,
                    raw=statistic.percentile is not None)
    points = []
    for (index, _), period_data in sorted(found.items(), reverse=descending):
        result = value(statistic, period_data.aggregate, period_data.samples)
        if result is not None:
            points.append((float(span.start_of(index)), result))
    return ident, str(query.get("Label") or key.name), points
