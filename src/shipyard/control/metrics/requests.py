"""CloudWatch requests checked against botocore's model of ``monitoring``, in CloudWatch's
words: a required member that is absent is ``MissingParameter`` (``The parameter
MetricData.member.1.MetricName is required.``, named as the query protocol names it); a
number that is not finite (NaN, infinities: botocore sends them, JSON cannot hold them) is
``InvalidParameterValue`` (``The value NaN for parameter MetricData.member.1.Value is
invalid.``); any other broken rule of the model (lengths, enums, ranges, patterns) is
``ValidationError`` with the ``N validation error(s) detected`` message ``control.shapes``
writes. What the model
cannot say (AWS's limits, mutually exclusive members) is each operation's own check.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from shipyard.control import shapes
from shipyard.control.metrics.errors import (
    InvalidParameterValue,
    MetricsValidationError,
    MissingParameter,
)
from shipyard.errors import ValidationError

if TYPE_CHECKING:
    from botocore.model import Shape

__all__ = ["SERVICE", "check"]

#: botocore's name of the service (its endpoint prefix and signing name are ``monitoring``).
SERVICE = "cloudwatch"


def check(operation: str, request: Any) -> dict[str, Any]:
    """``request`` checked against the model of ``operation``; returned as given."""
    if not isinstance(request, dict):
        raise MetricsValidationError(f"{operation} request must be an object, not "
                                     f"{type(request).__name__}")
    shape = shapes.operation_model(SERVICE, operation).input_shape
    if shape is not None:
        missing = _missing(shape, request, "")
        if missing is not None:
            raise MissingParameter(f"The parameter {missing} is required.")
        odd = _not_finite(shape, request, "")
        if odd is not None:
            raise InvalidParameterValue(f"The value {odd[1]} for parameter {odd[0]} is "
                                        "invalid.")
    try:
        shapes.validate(SERVICE, operation, request)
    except ValidationError as exc:
        raise MetricsValidationError(exc.message) from None
    return request


def _missing(shape: Shape, value: Any, path: str) -> str | None:
    """The first required member absent from ``value``, by its query-protocol path."""
    if shape.type_name == "structure" and isinstance(value, dict):
        for name in shape.required_members:
            if value.get(name) is None:
                return f"{path}{name}"
        for name, member in shape.members.items():
            if value.get(name) is not None:
                found = _missing(member, value[name], f"{path}{name}.")
                if found is not None:
                    return found
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value, 1):
            found = _missing(shape.member, item, f"{path}member.{index}.")
            if found is not None:
                return found
    return None


def _not_finite(shape: Shape, value: Any, path: str) -> tuple[str, str] | None:
    """The first number that is NaN or infinite: its query-protocol path and its name."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if value.get(name) is not None:
                found = _not_finite(member, value[name], f"{path}.{name}" if path else name)
                if found is not None:
                    return found
    elif kind == "list" and isinstance(value, list):
        for index, item in enumerate(value, 1):
            found = _not_finite(shape.member, item, f"{path}.member.{index}")
            if found is not None:
                return found
    elif kind in ("double", "float") and isinstance(value, float) and not math.isfinite(value):
        return path, "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return None
