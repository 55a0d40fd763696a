"""``ParameterRanges`` of CreateHyperParameterTuningJob, checked into typed ranges, and the
hyperparameter strings a trial gets.

AWS's rules (API reference ``ParameterRanges``, ``IntegerParameterRange``,
``ContinuousParameterRange``, ``CategoricalParameterRange``; developer guide "Define
Hyperparameter Ranges"), each refused here with ``ValidationError``:

- ``MinValue`` and ``MaxValue`` are strings holding numbers (integers for integer ranges), and
  ``MinValue`` is not greater than ``MaxValue``;
- ``Logarithmic`` "works only for ranges that have only values greater than 0";
- ``ReverseLogarithmic`` "works only for ranges that are entirely within the range
  0<=x<1.0", and only for continuous ranges;
- at most 30 ranges of each kind, and "the sum of the number of hyperparameters for all the
  ranges can't exceed" 30 (the current wording; older guides said 20, counting every
  categorical value: Shipyard follows the current API reference);
- a categorical range has 1 to 30 values; a name is tuned once, and is not also a static
  hyperparameter;
- Grid: "Only categorical parameters are supported when using the grid search strategy."

Where AWS is vague, Shipyard decides (and says so here):

- ``Auto`` scaling ("SageMaker hyperparameter tuning chooses the best scale") is
  ``Logarithmic`` when ``MinValue > 0`` and ``MaxValue / MinValue >= 100`` (the range spans
  two orders of magnitude or more), else ``Linear``; never ``ReverseLogarithmic``;
- numbers are written plainly (``5``, ``-3``, ``0.01``, ``1e-5``): no ``NaN``, ``Infinity``,
  hex, underscores or surrounding blanks; an integer range refuses ``5.0``;
- duplicate categorical values are refused (AWS's model cannot say it; a value twice would
  weigh it twice and count a grid point twice);
- ``AutoParameters`` (Autotune) are refused: Shipyard has no Autotune.

Standard library only: the request checks import this module, and Optuna stays with
:mod:`~shipyard.control.tuning.search`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shipyard.errors import ValidationError

__all__ = [
    "AUTO_LOG_RATIO",
    "GRID_ONLY_CATEGORICAL",
    "MAX_RANGES",
    "MAX_VALUES",
    "CategoricalRange",
    "ContinuousRange",
    "IntegerRange",
    "Range",
    "Scaling",
    "Value",
    "check_enough_combinations",
    "combinations",
    "decode",
    "encode",
    "grid_size",
    "parse_ranges",
    "sample_value",
]

#: Ranges of one kind, and of all kinds together (API reference, ``ParameterRanges``).
MAX_RANGES = 30
#: Values of one categorical range (``ParameterValues``: 1 to 30).
MAX_VALUES = 30
#: ``Auto`` scaling is logarithmic from this ``MaxValue / MinValue`` up (Shipyard's choice).
AUTO_LOG_RATIO = 100.0
GRID_ONLY_CATEGORICAL = ("Only categorical parameters are supported when using the grid "
                         "search strategy.")

_MAX_INTEGER = 2**53
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


#: A range's scale, resolved: ``Auto`` is never left.
Scaling = Literal["Linear", "Logarithmic", "ReverseLogarithmic"]


@dataclass(frozen=True)
class IntegerRange:
    """An ``IntegerParameterRange``; ``scaling`` is resolved (never ``Auto``)."""

    name: str
    min_value: int
    max_value: int
    scaling: Literal["Linear", "Logarithmic"] = "Linear"


@dataclass(frozen=True)
class ContinuousRange:
    """A ``ContinuousParameterRange``; ``scaling`` is resolved (never ``Auto``)."""

    name: str
    min_value: float
    max_value: float
    scaling: Scaling = "Linear"


@dataclass(frozen=True)
class CategoricalRange:
    """A ``CategoricalParameterRange``: its values exactly as given."""

    name: str
    values: tuple[str, ...]


Range = IntegerRange | ContinuousRange | CategoricalRange
#: A value of a range: ``int`` (integer), ``float`` (continuous) or ``str`` (categorical).
Value = int | float | str

_KINDS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")


def parse_ranges(parameter_ranges: Mapping[str, Any] | None, *, strategy: str = "Bayesian",
                 static_names: Iterable[str] = ()) -> list[Range]:
    """The ranges of ``parameter_ranges`` (a ``ParameterRanges`` object), checked.

    Integer ranges come first, then continuous, then categorical, each in the order given:
    the order is part of what makes a seeded search repeat itself. ``static_names`` are the
    definition's ``StaticHyperParameters``, which no range may also name. An empty or absent
    ``ParameterRanges`` gives ``[]`` (whether a tuning job may tune nothing is the caller's
    rule). Raises ``ValidationError`` in AWS's terms.
    """
    if parameter_ranges is None:
        return []
    if parameter_ranges.get("AutoParameters"):
        raise ValidationError("AutoParameters (Autotune) are not supported by Shipyard: give "
                              "IntegerParameterRanges, ContinuousParameterRanges or "
                              "CategoricalParameterRanges.")
    found: list[Range] = []
    for kind in _KINDS:
        items = parameter_ranges.get(kind) or []
        if len(items) > MAX_RANGES:
            raise ValidationError(f"{kind} can hold at most {MAX_RANGES} hyperparameter "
                                  f"ranges; it holds {len(items)}.")
        for item in items:
            found.append(_parse_one(kind, item))
    if len(found) > MAX_RANGES:
        raise ValidationError(
            f"The total number of hyperparameter ranges ({len(found)}) exceeds the maximum of "
            f"{MAX_RANGES} for a hyperparameter tuning job: the sum of the number of "
            "hyperparameters for all the ranges can't exceed it.")
    seen: set[str] = set()
    static = set(static_names)
    for r in found:
        if r.name in seen:
            raise ValidationError(f"The hyperparameter [{r.name}] is specified in more than "
                                  "one hyperparameter range; each may be tuned only once.")
        seen.add(r.name)
        if r.name in static:
            raise ValidationError(f"The hyperparameter [{r.name}] is both a static "
                                  "hyperparameter and a tunable hyperparameter range; remove "
                                  "it from one of them.")
    if strategy == "Grid" and any(not isinstance(r, CategoricalRange) for r in found):
        raise ValidationError(GRID_ONLY_CATEGORICAL)
    return found


def _parse_one(kind: str, item: Any) -> Range:
    if not isinstance(item, Mapping):
        raise ValidationError(f"Each member of {kind} must be an object.")
    name = item.get("Name")
    if not isinstance(name, str) or not name:
        raise ValidationError(f"Each member of {kind} needs a Name.")
    if kind == "CategoricalParameterRanges":
        return _categorical(name, item.get("Values"))
    integer = kind == "IntegerParameterRanges"
    low = _bound(name, "MinValue", item.get("MinValue"), integer)
    high = _bound(name, "MaxValue", item.get("MaxValue"), integer)
    if low > high:
        raise ValidationError(f"The MinValue [{item['MinValue']}] of the hyperparameter "
                              f"[{name}] is greater than its MaxValue [{item['MaxValue']}].")
    if not math.isfinite(high - low):
        raise ValidationError(f"The range of the hyperparameter [{name}] is too wide to search "
                              f"([{item['MinValue']}, {item['MaxValue']}]).")
    scaling = _scaling(name, item.get("ScalingType"), low, high)
    if scaling == "Logarithmic" and low <= 0:
        raise ValidationError(
            f"The hyperparameter [{name}] has the range [{item['MinValue']}, "
            f"{item['MaxValue']}]: Logarithmic scaling works only for ranges that have only "
            "values greater than 0.")
    if integer:
        if scaling == "ReverseLogarithmic":
            raise ValidationError(
                f"The hyperparameter [{name}] is an integer range: ReverseLogarithmic scaling "
                "is supported only for continuous hyperparameter ranges.")
        return IntegerRange(name, int(low), int(high), scaling)
    if scaling == "ReverseLogarithmic" and not (low >= 0 and high < 1):
        raise ValidationError(
            f"The hyperparameter [{name}] has the range [{item['MinValue']}, "
            f"{item['MaxValue']}]: ReverseLogarithmic scaling works only for ranges that are "
            "entirely within the range 0<=x<1.0.")
    return ContinuousRange(name, float(low), float(high), scaling)


def _scaling(name: str, raw: Any, low: float, high: float) -> Scaling:
    if raw is None or raw == "Auto":
        return "Logarithmic" if low > 0 and high / low >= AUTO_LOG_RATIO else "Linear"
    if raw == "Linear":
        return "Linear"
    if raw == "Logarithmic":
        return "Logarithmic"
    if raw == "ReverseLogarithmic":
        return "ReverseLogarithmic"
    raise ValidationError(f"The ScalingType of the hyperparameter [{name}] must be one of "
                          f"Auto, Linear, Logarithmic, ReverseLogarithmic, not [{raw}].")


def _bound(name: str, member: str, raw: Any, integer: bool) -> int | float:
    what = "an integer" if integer else "a number"
    if not isinstance(raw, str) or not (_INTEGER if integer else _NUMBER).fullmatch(raw):
        raise ValidationError(f"The {member} [{raw}] of the hyperparameter [{name}] is not "
                              f"{what}.")
    if integer:
        number = int(raw)
        # Beyond 2**53 an integer has no exact float, which samplers work in.
        if abs(number) > _MAX_INTEGER:
            raise ValidationError(f"The {member} [{raw}] of the hyperparameter [{name}] is "
                                  f"outside the integers a tuning job searches (|x| <= 2**53).")
        return number
    value = float(raw)
    if not math.isfinite(value):
        raise ValidationError(f"The {member} [{raw}] of the hyperparameter [{name}] is not "
                              "a finite number.")
    return value


def _categorical(name: str, values: Any) -> CategoricalRange:
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise ValidationError(f"The categorical hyperparameter [{name}] needs 1 to "
                              f"{MAX_VALUES} Values.")
    if len(values) > MAX_VALUES:
        raise ValidationError(f"The categorical hyperparameter [{name}] has {len(values)} "
                              f"values; at most {MAX_VALUES} are allowed.")
    if not all(isinstance(v, str) for v in values):
        raise ValidationError(f"The Values of the categorical hyperparameter [{name}] must "
                              "be strings.")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValidationError(f"The categorical hyperparameter [{name}] lists the value "
                              f"[{repeated[0]}] more than once.")
    return CategoricalRange(name, tuple(values))


# ------------------------------------------------------------------------- values


def encode(r: Range, value: Value) -> str:
    """The hyperparameter string a trial gets for ``value`` of ``r``.

    Integers as ``"5"``; floats as ``repr`` writes them (the shortest string that reads back
    as the same float: ``"0.1"``, ``"1e-05"``); categorical values exactly as given (the SDK
    has already JSON-quoted them for framework estimators). Raises ``ValueError`` for a value
    outside ``r``.
    """
    if isinstance(r, CategoricalRange):
        if not isinstance(value, str) or value not in r.values:
            raise ValueError(f"{value!r} is not one of the values of {r.name}")
        return value
    if isinstance(value, str) or not r.min_value <= value <= r.max_value:
        raise ValueError(f"{value!r} is outside the range of {r.name}")
    if isinstance(r, IntegerRange):
        if int(value) != value:
            raise ValueError(f"{value!r} is not an integer ({r.name})")
        return str(int(value))
    return repr(float(value))


def decode(r: Range, text: str) -> Value:
    """The value of ``r`` that ``text`` (from :func:`encode`) stands for; raises
    ``ValueError`` when ``text`` is not a value of ``r``."""
    value: Value
    if isinstance(r, CategoricalRange):
        value = text
    elif isinstance(r, IntegerRange):
        if not _INTEGER.fullmatch(text):
            raise ValueError(f"{text!r} is not an integer ({r.name})")
        value = int(text)
    else:
        value = float(text)
    encode(r, value)
    return value


def sample_value(r: Range) -> Value:
    """A value of ``r`` (its minimum, or its first category): what a request check puts in
    to see that a trial's training job would be accepted."""
    if isinstance(r, CategoricalRange):
        return r.values[0]
    return r.min_value


def grid_size(ranges: Sequence[Range]) -> int:
    """How many points the grid of ``ranges`` (categorical only) has: Grid's
    ``MaxNumberOfTrainingJobs``. Raises ``ValueError`` for a non-categorical range (which
    :func:`parse_ranges` refuses for Grid)."""
    size = 1
    for r in ranges:
        if not isinstance(r, CategoricalRange):
            raise ValueError(f"{r.name} is not categorical: a grid has only categorical ranges")
        size *= len(r.values)
    return size


def combinations(ranges: Sequence[Range]) -> float:
    """How many distinct points ``ranges`` hold: ``math.inf`` with a continuous range."""
    total = 1.0
    for r in ranges:
        if isinstance(r, ContinuousRange):
            return math.inf
        total *= len(r.values) if isinstance(r, CategoricalRange) else (
            r.max_value - r.min_value + 1)
    return total


def check_enough_combinations(ranges: Sequence[Range] | Sequence[Sequence[Range]],
                              max_jobs: int) -> None:
    """Refuse a Random, Bayesian or Hyperband job that asks for more training jobs than its
    ranges have distinct points, with AWS's message (reported in
    aws/amazon-sagemaker-operator-for-k8s#123). ``ranges``: one definition's, or each
    definition's (a job with several shares its budget among them)."""
    groups = ([ranges] if not ranges or not isinstance(ranges[0], Sequence)
              else list(ranges))
    total = 0.0
    for group in groups:
        total += combinations(group)  # type: ignore[arg-type]
    count: float = int(total) if math.isfinite(total) else total
    if count < max_jobs:
        raise ValidationError(
            "You don't have enough combinations of hyperparameter ranges. The total number of "
            f"hyperparameter combinations for the provided ranges [{count}] must be equal or "
            f"greater than the value of MaxNumberOfJobs, [{max_jobs}]. Provide additional "
            "ranges.")
