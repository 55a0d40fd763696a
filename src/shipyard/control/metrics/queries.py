"""GetMetricStatistics and ListMetrics over every source, and what GetMetricData shares.

A query asks each source (``model.Source``) for a metric's periods and merges what they
answer. GetMetricStatistics (reference: API_GetMetricStatistics):

- ``Statistics`` or ``ExtendedStatistics`` (percentiles), one of them, not both
  (``InvalidParameterCombination``); a period (``model.check_period``) and ``StartTime`` before
  ``EndTime`` (``InvalidParameterValue``);
- at most 1,440 periods per call, refused with AWS's ``InvalidParameterCombination`` message;
- one datapoint per period that has data, and per unit when no ``Unit`` narrows the query
  (CloudWatch keeps each unit's data apart); a percentile that cannot be known (no usable raw
  values) is left out of the datapoint's ``ExtendedStatistics``;
- ``Label`` is the metric's name; datapoints in time order (AWS promises no order).

ListMetrics (reference: API_ListMetrics): every metric with data, filtered by namespace, name
and dimension filters (a filter with no value matches any value of that dimension; a metric
may have more dimensions than the filters name), ``RecentlyActive=PT3H``: published in the
past three hours; 500 per page, sorted by namespace, name and dimensions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shipyard.control.metrics import tokens
from shipyard.control.metrics.errors import (
    InvalidParameterCombination,
    InvalidParameterValue,
)
from shipyard.control.metrics.model import (
    Aggregate,
    Dimensions,
    Listed,
    MetricKey,
    Samples,
    Source,
    Window,
    check_period,
    epoch,
    window,
)
from shipyard.control.metrics.statistics import Statistic, parse, value

__all__ = ["LIST_PAGE_SIZE", "MAX_DATAPOINTS", "RECENTLY_ACTIVE_SECONDS", "Period",
           "dimensions", "get_metric_statistics", "list_metrics", "periods"]

MAX_DATAPOINTS = 1440
LIST_PAGE_SIZE = 500
RECENTLY_ACTIVE_SECONDS = 3 * 3600


@dataclass(slots=True)
class Period:
    aggregate: Aggregate
    samples: Samples | None = None


def periods(sources: Sequence[Source], key: MetricKey, span: Window, unit: str | None, *,
            by_unit: bool, raw: bool) -> dict[tuple[int, str], Period]:
    """Each period with data, per (period index, unit) or per index alone (unit ``""``),
    merged from every source; with the raw values for percentiles when ``raw``."""
    found: dict[tuple[int, str], Period] = {}
    for source in sources:
        for (index, found_unit), aggregate in source.aggregates(key, span, unit).items():
            slot = (index, found_unit if by_unit else "")
            found.setdefault(slot, Period(Aggregate())).aggregate.merge(aggregate)
    if raw:
        for source in sources:
            for (index, found_unit), samples in source.samples(key, span, unit).items():
                period = found.get((index, found_unit if by_unit else ""))
                if period is None:
                    continue
                if period.samples is None:
                    period.samples = Samples()
                period.samples.merge(samples)
    return found


def dimensions(given: object, where: str) -> Dimensions:
    """A request's ``Dimensions`` as a metric's dimension set."""
    pairs: dict[str, str] = {}
    for index, item in enumerate(given if isinstance(given, list) else [], 1):
        name = str(item["Name"])
        if name in pairs:
            raise InvalidParameterValue(f"The value {name} for parameter "
                                        f"{where}.member.{index}.Name is a duplicate: each "
                                        "dimension may be named once.")
        pairs[name] = str(item["Value"])
    return tuple(sorted(pairs.items()))


def get_metric_statistics(sources: Sequence[Source], request: dict[str, Any]
                          ) -> dict[str, Any]:
    key = MetricKey(str(request["Namespace"]), str(request["MetricName"]),
                    dimensions(request.get("Dimensions"), "Dimensions"))
    basic = list(request.get("Statistics") or [])
    extended = list(request.get("ExtendedStatistics") or [])
    if not basic and not extended:
        raise InvalidParameterCombination("Must specify either Statistics or "
                                          "ExtendedStatistics.")
    if basic and extended:
        raise InvalidParameterCombination("Must specify either Statistics or "
                                          "ExtendedStatistics, but not both.")
    wanted: list[Statistic] = [parse(name, "Statistics", InvalidParameterValue)
                               for name in basic]
    for name in extended:
        statistic = parse(name, "ExtendedStatistics", InvalidParameterValue)
        if statistic.percentile is None:
            raise InvalidParameterValue(f"The value {name} for parameter ExtendedStatistics "
                                        "is not supported: name a percentile (p99).")
        wanted.append(statistic)
    period = check_period(request["Period"])
    span = window(epoch(request["StartTime"], "StartTime"),
                  epoch(request["EndTime"], "EndTime"), period)
    if span.count > MAX_DATAPOINTS:
        raise InvalidParameterCombination(
            f"You have requested up to {span.count} datapoints, which exceeds the limit of "
            f"{MAX_DATAPOINTS}. You may reduce the datapoints requested by increasing Period, "
            "or decreasing the time range.")
    unit = request.get("Unit")
    found = periods(sources, key, span, unit, by_unit=True, raw=bool(extended))
    datapoints = []
    for (index, found_unit), data in sorted(found.items()):
        point: dict[str, Any] = {"Timestamp": float(span.start_of(index))}
        percentiles: dict[str, float] = {}
        for statistic in wanted:
            result = value(statistic, data.aggregate, data.samples)
            if result is None:
                continue
            if statistic.percentile is None:
                point[statistic.name] = result
            else:
                percentiles[statistic.name] = result
        if percentiles:
            point["ExtendedStatistics"] = percentiles
        point["Unit"] = found_unit
        datapoints.append(point)
    return {"Label": key.name, "Datapoints": datapoints}


def list_metrics(sources: Sequence[Source], request: dict[str, Any], *, account_id: str,
                 now: float | None = None) -> dict[str, Any]:
    namespace, name = request.get("Namespace"), request.get("MetricName")
    filters = [(str(f["Name"]), None if f.get("Value") is None else str(f["Value"]))
               for f in request.get("Dimensions") or []]
    exact = {n: v for n, v in filters if v is not None}
    since = None
    if request.get("RecentlyActive") is not None:
        since = (time.time() if now is None else now) - RECENTLY_ACTIVE_SECONDS
    newest: dict[MetricKey, float] = {}
    for source in sources:
        for listed in source.listing(namespace, name, exact):
            newest[listed.key] = max(newest.get(listed.key, listed.last_active),
                                     listed.last_active)
    matching = sorted((key for key, last in newest.items()
                       if _matches(Listed(key, last), namespace, name, filters, since)),
                      key=lambda k: (k.namespace, k.name, k.dimensions))
    scope = {"op": "ListMetrics", "namespace": namespace, "name": name, "filters": filters,
             "recent": since is not None}
    start = 0
    if request.get("NextToken") is not None:
        (start,) = tokens.decode(request["NextToken"], scope, InvalidParameterValue, 1)
    page = matching[start:start + LIST_PAGE_SIZE]
    result: dict[str, Any] = {"Metrics": [key.described() for key in page]}
    if request.get("IncludeLinkedAccounts"):
        result["OwningAccounts"] = [account_id] * len(page)
    if start + LIST_PAGE_SIZE < len(matching):
        result["NextToken"] = tokens.encode([start + LIST_PAGE_SIZE], scope)
    return result


def _matches(listed: Listed, namespace: object, name: object,
             filters: list[tuple[str, str | None]], since: float | None) -> bool:
    key = listed.key
    if namespace is not None and key.namespace != namespace:
        return False
    if name is not None and key.name != name:
        return False
    present = dict(key.dimensions)
    for dimension, wanted in filters:
        if dimension not in present or (wanted is not None and present[dimension] != wanted):
            return False
    return since is None or listed.last_active >= since
