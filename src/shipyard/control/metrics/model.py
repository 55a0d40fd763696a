"""What a metric is, what a period holds, and how a request's time range becomes periods.

A metric is CloudWatch's triple: a namespace, a name and a set of dimensions (name/value
pairs; the set is the identity, so ``{A=1}`` and ``{A=1, B=2}`` are two metrics). Its data are
points, each a value (or a statistic set) with a unit, at a time.

Periods (CloudWatch's GetMetricStatistics and GetMetricData reference, "Period" and
"StartTime"): a period is 1, 5, 10, 20 or 30 seconds, or a multiple of 60. The start time is
rounded down to a multiple of the period when the period is under a minute, else to the whole
minute, and so is the end time (which excludes: the SageMaker SDK adds a minute to a job's end
for that reason); the periods are ``[origin + k * period, origin + (k + 1) * period)`` from the
rounded start while they begin before the rounded end, each aggregated whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from typing import Protocol

from shipyard.control.metrics.errors import InvalidParameterValue

__all__ = ["SUB_MINUTE_PERIODS", "UNITS", "Aggregate", "Dimensions", "Listed", "MetricKey",
           "Samples", "Source", "Window", "check_period", "dimensions_from_json",
           "dimensions_json", "epoch", "window"]

#: CloudWatch's ``StandardUnit`` values; ``None`` is the unit of a point that names none.
UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None"})
#: The periods under a minute a query may ask for (high-resolution data).
SUB_MINUTE_PERIODS = (1, 5, 10, 20, 30)

#: A metric's dimensions: (name, value) pairs sorted by name, each name once.
Dimensions = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricKey:
    namespace: str
    name: str
    dimensions: Dimensions = ()

    def described(self) -> dict[str, object]:
        """The ``Metric`` structure of CloudWatch's answers."""
        return {"Namespace": self.namespace, "MetricName": self.name,
                "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions]}


@dataclass(slots=True)
class Aggregate:
    """SampleCount, Sum, Minimum and Maximum of the points of one period (and unit)."""

    count: float = 0.0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, count: float, total: float, minimum: float, maximum: float) -> None:
        self.count += count
        self.total += total
        self.minimum = min(self.minimum, minimum)
        self.maximum = max(self.maximum, maximum)

    def merge(self, other: Aggregate) -> None:
        self.add(other.count, other.total, other.minimum, other.maximum)


@dataclass(slots=True)
class Samples:
    """The raw values of one period, for percentiles: ``(value, how many times)`` pairs.

    ``usable`` is False once a point of the period cannot feed a percentile (CloudWatch: a
    statistic set whose SampleCount is over 1 and whose Minimum and Maximum differ, or a
    negative value): the period then has no percentiles, as on AWS."""

    values: list[tuple[float, float]] = field(default_factory=list)
    usable: bool = True

    def add(self, count: float, total: float, minimum: float, maximum: float) -> None:
        if minimum < 0:
            self.usable = False
        elif minimum == maximum:
            self.values.append((minimum, count))
        elif count == 1:
            self.values.append((total, 1.0))
        else:
            self.usable = False

    def merge(self, other: Samples) -> None:
        self.values.extend(other.values)
        self.usable = self.usable and other.usable


@dataclass(frozen=True)
class Window:
    """The periods a query covers: ``count`` periods of ``period`` seconds from ``origin``."""

    origin: int
    period: int
    count: int

    @property
    def end(self) -> int:
        return self.origin + self.period * self.count

    def start_of(self, index: int) -> int:
        return self.origin + index * self.period


@dataclass(frozen=True)
class Listed:
    """A metric that has data, and when it last had a point (epoch seconds)."""

    key: MetricKey
    last_active: float


class Source(Protocol):
    """Where metric data come from: what clients published (``published``), the series
    jobs' MetricDefinitions extract (``jobs``). A query asks every source and merges what
    they answer, so a metric may have points in several."""

    def aggregates(self, key: MetricKey, window: Window, unit: str | None
                   ) -> dict[tuple[int, str], Aggregate]:
        """Per (period index, unit): the period's aggregate; only ``unit``'s when given."""
        ...

    def samples(self, key: MetricKey, window: Window, unit: str | None
                ) -> dict[tuple[int, str], Samples]:
        """Per (period index, unit): the period's raw values, for percentiles; periods
        whose raw values are no longer kept are absent."""
        ...

    def listing(self, namespace: str | None, name: str | None,
                dimensions: dict[str, str]) -> list[Listed]:
        """The metrics with data; the filters narrow the search (callers filter again)."""
        ...


def check_period(value: object, where: str = "Period") -> int:
    """``value`` as a period CloudWatch takes: 1, 5, 10, 20, 30 or a multiple of 60."""
    if isinstance(value, int) and not isinstance(value, bool) and (
            value in SUB_MINUTE_PERIODS or (value >= 60 and value % 60 == 0)):
        return value
    raise InvalidParameterValue(f"The parameter {where} must be 1, 5, 10, 20, 30 or a "
                                f"multiple of 60, not {value!r}.")


def window(start: float, end: float, period: int) -> Window:
    """The periods of ``[start, end)``, both rounded as CloudWatch rounds them."""
    if start >= end:
        raise InvalidParameterValue("The parameter StartTime must be less than the parameter "
                                    "EndTime.")
    align = period if period < 60 else 60
    origin = math.floor(start / align) * align
    last = math.floor(end / align) * align
    return Window(origin, period, max(0, math.ceil((last - origin) / period)))


def epoch(value: object, where: str) -> float:
    """A timestamp as epoch seconds: a number (awsJson), an ISO 8601 text (the query
    protocol) or a ``datetime`` (a Python caller; naive means UTC)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, _dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        return aware.timestamp()
    elif isinstance(value, str):
        text = value.strip()
        text = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return epoch(parsed, where)
    raise InvalidParameterValue(f"The value {value!r} for parameter {where} is not a valid "
                                "timestamp.")


def dimensions_json(dimensions: Dimensions) -> str:
    """The stored form of a dimension set: one text per set, whatever order it came in."""
    return json.dumps([list(pair) for pair in dimensions], separators=(",", ":"),
                      ensure_ascii=False)


def dimensions_from_json(text: str) -> Dimensions:
    return tuple((str(n), str(v)) for n, v in json.loads(text))
