"""Shipyard's own operations (``X-Amz-Target: Shipyard.<Op>``), for what SageMaker's API has no
call for. Same envelope and authentication as the SageMaker operations; validated here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipyard import kinds
from shipyard.control import ControlPlane
from shipyard.errors import ValidationError

Handler = Callable[[ControlPlane, dict[str, Any]], dict[str, Any]]


def get_metric_series(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    """Every point of a training job's metrics, oldest first (``shipyard jobs metrics``)."""
    name = params.get("TrainingJobName")
    metric = params.get("MetricName")
    if not isinstance(name, str) or not name:
        raise ValidationError("TrainingJobName is required")
    if metric is not None and not isinstance(metric, str):
        raise ValidationError("MetricName must be a string")
    plane.describe(kinds.TRAINING.key, name)
    return {"Points": plane.metric_series(kinds.TRAINING.key, name, metric)}


HANDLERS: dict[str, Handler] = {"GetMetricSeries": get_metric_series}
