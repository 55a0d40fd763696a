"""PutMetricData: a request's metric data as points, with CloudWatch's limits and errors.

The rules (PutMetricData reference, "Publishing metrics" in the CloudWatch user guide):

- at most 1,000 ``MetricDatum`` per request (``MetricData`` and each ``EntityMetricData``'s
  together); namespaces beginning with ``AWS/`` are AWS's own and refused;
- each datum has exactly one of ``Value``, ``Values`` (at most 150, with ``Counts`` of the same
  size when given: each value published that many times) and ``StatisticValues`` (SampleCount,
  Sum, Minimum, Maximum, all four);
- values are finite and within -2^360 to 2^360;
- ``Timestamp`` (default: when the request arrives) at most two weeks in the past and two
  hours in the future;
- ``StorageResolution`` 1 (high resolution: the point keeps its time to the millisecond) or 60
  (the default: the point is stored at the start of its minute, as CloudWatch keeps
  standard-resolution data at one-minute granularity);
- ``Unit`` one of CloudWatch's units (the model checks it), ``None`` when absent;
- up to 30 dimensions, each name once.

An ``EntityMetricData`` item's metric data is published like ``MetricData``'s; the entity
itself is not kept (Shipyard has no entity views).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shipyard.control.metrics.errors import (
    InvalidParameterCombination,
    InvalidParameterValue,
    MissingParameter,
)
from shipyard.control.metrics.model import MetricKey, epoch

__all__ = [
    "FUTURE_LIMIT_SECONDS",
    "MAX_DATUMS",
    "MAX_MAGNITUDE",
    "MAX_VALUES",
    "PAST_LIMIT_SECONDS",
    "RESERVED_PREFIX",
    "Point",
    "points",
]

MAX_DATUMS = 1000
MAX_VALUES = 150
MAX_MAGNITUDE = 2.0 ** 360
PAST_LIMIT_SECONDS = 14 * 86400
FUTURE_LIMIT_SECONDS = 2 * 3600
#: Namespaces a client may not publish into; Shipyard's own measurements may.
RESERVED_PREFIX = "AWS/"
_VALUE_MEMBERS = ("Value", "Values", "StatisticValues")


@dataclass(frozen=True, slots=True)
class Point:
    """One published point: a value (``count`` times) or a statistic set."""

    key: MetricKey
    timestamp_ms: int
    unit: str
    count: float
    total: float
    minimum: float
    maximum: float
    high_resolution: bool


def points(request: dict[str, Any], now: float, *, reserved: bool = False) -> list[Point]:
    """The points of a PutMetricData request checked against the model (``requests``);
    ``reserved``: the caller may publish into ``AWS/`` namespaces (Shipyard itself)."""
    namespace = str(request["Namespace"])
    if namespace.startswith(RESERVED_PREFIX) and not reserved:
        raise InvalidParameterValue(f"The value {namespace} for parameter Namespace is "
                                    f"invalid: namespaces beginning with {RESERVED_PREFIX} "
                                    "are reserved for AWS's own metrics.")
    data = list(_datums(request))
    if not data:
        raise MissingParameter("The parameter MetricData is required.")
    if len(data) > MAX_DATUMS:
        raise InvalidParameterValue(f"The collection MetricData must not have a size greater "
                                    f"than {MAX_DATUMS}.")
    found: list[Point] = []
    for path, datum in data:
        found.extend(_datum(namespace, datum, path, now))
    return found


def _datums(request: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for index, datum in enumerate(request.get("MetricData") or [], 1):
        yield f"MetricData.member.{index}", datum
    for outer, entity in enumerate(request.get("EntityMetricData") or [], 1):
        for index, datum in enumerate(entity.get("MetricData") or [], 1):
            yield f"EntityMetricData.member.{outer}.MetricData.member.{index}", datum


def _datum(namespace: str, datum: dict[str, Any], path: str, now: float) -> list[Point]:
    given = [m for m in _VALUE_MEMBERS if datum.get(m) not in (None, [])]
    if len(given) > 1:
        raise InvalidParameterCombination(
            f"The parameters {path}.{given[0]} and {path}.{given[1]} are mutually exclusive "
            "and you have specified both.")
    if not given:
        raise MissingParameter(f"One of the parameters {path}.Value, {path}.Values or "
                               f"{path}.StatisticValues must be specified.")
    if datum.get("Counts") and given != ["Values"]:
        raise InvalidParameterCombination(f"The parameter {path}.Counts may only be "
                                          f"specified with {path}.Values.")
    key = MetricKey(namespace, str(datum["MetricName"]), _dimensions(datum, path))
    stamp = now if datum.get("Timestamp") is None else epoch(datum["Timestamp"],
                                                              f"{path}.Timestamp")
    if stamp < now - PAST_LIMIT_SECONDS:
        raise InvalidParameterValue(f"The parameter {path}.Timestamp must specify a time no "
                                    "more than two weeks in the past.")
    if stamp > now + FUTURE_LIMIT_SECONDS:
        raise InvalidParameterValue(f"The parameter {path}.Timestamp must specify a time no "
                                    "more than two hours in the future.")
    resolution = datum.get("StorageResolution", 60)
    if resolution not in (1, 60) or isinstance(resolution, bool):
        raise InvalidParameterValue(f"The value {resolution} for parameter "
                                    f"{path}.StorageResolution is invalid: it must be 1 "
                                    "(high resolution) or 60 (standard).")
    high = resolution == 1
    millis = math.floor(stamp * 1000) if high else math.floor(stamp / 60) * 60_000
    unit = str(datum.get("Unit") or "None")

    def point(count: float, total: float, minimum: float, maximum: float) -> Point:
        return Point(key, millis, unit, count, total, minimum, maximum, high)

    if given == ["Value"]:
        value = _number(datum["Value"], f"{path}.Value")
        return [point(1.0, value, value, value)]
    if given == ["Values"]:
        values = datum["Values"]
        if len(values) > MAX_VALUES:
            raise InvalidParameterValue(f"The collection {path}.Values must not have a size "
                                        f"greater than {MAX_VALUES}.")
        counts = datum.get("Counts") or [1.0] * len(values)
        if len(counts) != len(values):
            raise InvalidParameterValue(f"The parameters {path}.Values and {path}.Counts must "
                                        "be of the same size.")
        found = []
        for index, (raw, raw_count) in enumerate(zip(values, counts, strict=True), 1):
            value = _number(raw, f"{path}.Values.member.{index}")
            count = _number(raw_count, f"{path}.Counts.member.{index}")
            if count < 0:
                raise InvalidParameterValue(f"The value {raw_count} for parameter "
                                            f"{path}.Counts.member.{index} is invalid: a "
                                            "count cannot be negative.")
            if count:
                found.append(point(count, value * count, value, value))
        return found
    stats = datum["StatisticValues"]
    where = f"{path}.StatisticValues"
    count = _number(stats["SampleCount"], f"{where}.SampleCount")
    total = _number(stats["Sum"], f"{where}.Sum")
    minimum = _number(stats["Minimum"], f"{where}.Minimum")
    maximum = _number(stats["Maximum"], f"{where}.Maximum")
    if count <= 0:
        raise InvalidParameterValue(f"The value {stats['SampleCount']} for parameter "
                                    f"{where}.SampleCount is invalid: it must be more than 0.")
    if minimum > maximum:
        raise InvalidParameterValue(f"The parameter {where}.Minimum must not be greater than "
                                    f"{where}.Maximum.")
    return [point(count, total, minimum, maximum)]


def _dimensions(datum: dict[str, Any], path: str) -> tuple[tuple[str, str], ...]:
    pairs: dict[str, str] = {}
    for index, dimension in enumerate(datum.get("Dimensions") or [], 1):
        name = str(dimension["Name"])
        if name in pairs:
            raise InvalidParameterValue(f"The value {name} for parameter "
                                        f"{path}.Dimensions.member.{index}.Name is a "
                                        "duplicate: each dimension may be named once.")
        pairs[name] = str(dimension["Value"])
    return tuple(sorted(pairs.items()))


def _number(value: Any, where: str) -> float:
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and abs(value) <= MAX_MAGNITUDE):
        return float(value)
    raise InvalidParameterValue(f"The value {value} for parameter {where} is invalid.")
