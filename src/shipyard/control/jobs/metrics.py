"""MetricDefinitions: regexes applied to the log stream as it is written.

SageMaker rule: each definition's ``Regex`` runs over every log line; the first capture group
(or the whole match when there is none) is the value. Every match is a point of the metric's
time series; ``FinalMetricDataList`` holds the last value of each metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from shipyard.errors import ValidationError
from shipyard.runtimes.base import LogLine


class MetricExtractor:
    def __init__(self, definitions: Sequence[dict[str, Any]]) -> None:
        self.definitions: list[tuple[str, re.Pattern[str]]] = []
        for d in definitions:
            # Validates Name too, before it is read: a missing one is a ValidationError.
            regex = compile_metric_regex(d)
            self.definitions.append((str(d["Name"]), regex))

    def extract(self, lines: Iterable[LogLine]) -> list[tuple[str, float, float]]:
        """``(metric, epoch seconds, value)`` for every match in ``lines``."""
        if not self.definitions:
            return []
        points = []
        for line in lines:
            for name, regex in self.definitions:
                match = regex.search(line.text)
                if match is None:
                    continue
                raw = match.group(1) if regex.groups else match.group(0)
                try:
                    value = float(raw)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    points.append((name, line.timestamp_ns / 1e9, value))
        return points


def compile_metric_regex(definition: dict[str, Any]) -> re.Pattern[str]:
    if not isinstance(definition, dict):
        raise ValidationError("MetricDefinitions: each definition must be an object")
    name, regex = definition.get("Name"), definition.get("Regex")
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise ValidationError("MetricDefinitions: each Name must be a string of 1-255 characters")
    if not isinstance(regex, str) or not 1 <= len(regex) <= 500:
        raise ValidationError(
            f"MetricDefinitions {name}: Regex must be a string of 1-500 characters")
    try:
        return re.compile(regex)
    except re.error as exc:
        raise ValidationError(f"MetricDefinitions {name}: invalid Regex {regex!r}: {exc}") from exc


def final_metric_data(series: Iterable[tuple[str, float, float, str]]) -> list[dict[str, Any]]:
    last: dict[str, tuple[float, float]] = {}
    for metric, ts, value, _host in series:
        last[metric] = (ts, value)
    return [
        {"MetricName": metric, "Value": value, "Timestamp": ts}
        for metric, (ts, value) in sorted(last.items())
    ]
