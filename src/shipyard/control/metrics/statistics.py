"""CloudWatch's statistics over one period: SampleCount, Average, Sum, Minimum, Maximum, and
percentiles (``p99``, ``p99.9``, ``p50``...).

The five basic statistics come from a period's :class:`Aggregate` (exact, from raw points or
from rollups alike). A percentile needs the period's raw values (:class:`Samples`); it is
the *nearest rank* over them, weighted by each value's count: the smallest value at or below
which at least p% of the samples lie, so it is always a value that was published (AWS computes
percentiles from sketches and may differ slightly). A period whose raw values are gone
(older than the raw retention) or unusable (CloudWatch's rules: statistic sets, negative
values) has no percentile.

Other extended statistics (trimmed means ``tm``, ``wm``, ``tc``, ``ts``, ``PR``, ``IQM``) are
refused by name rather than answered wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shipyard.control.metrics.errors import MetricsValidationError
from shipyard.control.metrics.model import Aggregate, Samples
from shipyard.errors import ValidationError

__all__ = ["BASIC", "Statistic", "parse", "percentile", "value"]

BASIC = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
_PERCENTILE = re.compile(r"[pP](\d{1,3}(?:\.\d{1,10})?)")
#: CloudWatch's other extended statistics: known, not implemented.
_OTHER = re.compile(r"(?i)(?:(?:tm|wm|tc|ts)[\d(].*|pr\(.*|iqm)")


@dataclass(frozen=True)
class Statistic:
    #: As the request named it (the key of ``ExtendedStatistics`` in the answer).
    name: str
    #: 0-100 for a percentile, None for a basic statistic.
    percentile: float | None = None


def parse(text: object, where: str,
          error: type[ValidationError] = MetricsValidationError) -> Statistic:
    """A statistic's name as a request gives it; ``error`` is raised for one that is not."""
    if isinstance(text, str):
        if text in BASIC:
            return Statistic(text)
        match = _PERCENTILE.fullmatch(text)
        if match is not None and float(match.group(1)) <= 100:
            return Statistic(text, float(match.group(1)))
        if _OTHER.fullmatch(text):
            raise error(f"The statistic {text} ({where}) is not supported by Shipyard: use "
                        "SampleCount, Average, Sum, Minimum, Maximum or a percentile (p99).")
    raise error(f"The value {text!r} for parameter {where} is not a valid statistic: use "
                "SampleCount, Average, Sum, Minimum, Maximum or a percentile (p0 to p100).")


def value(statistic: Statistic, aggregate: Aggregate, samples: Samples | None) -> float | None:
    """The statistic over one period; None where it cannot be known (a percentile without
    usable raw values)."""
    if statistic.percentile is not None:
        if samples is None or not samples.usable or not samples.values:
            return None
        return percentile(samples.values, statistic.percentile)
    name = statistic.name
    if name == "SampleCount":
        return aggregate.count
    if name == "Sum":
        return aggregate.total
    if name == "Minimum":
        return aggregate.minimum
    if name == "Maximum":
        return aggregate.maximum
    return aggregate.total / aggregate.count


def percentile(values: Iterable[tuple[float, float]], rank: float) -> float:
    """The weighted nearest-rank ``rank``-th percentile of ``(value, count)`` pairs."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    target = rank / 100 * sum(weight for _, weight in ordered)
    running = 0.0
    for number, weight in ordered:
        running += weight
        # A relative slack: 0.1 + 0.2 must reach 0.3.
        if running >= target * (1 - 1e-12):
            return number
    return ordered[-1][0]
