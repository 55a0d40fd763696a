"""CloudWatch metrics: storage with rollups and retention, queries and statistics.

``Metrics`` (``service``) is what the control plane holds and its door methods call
(``ControlPlane.put_metric_data``, ``get_metric_statistics``, ``get_metric_data``,
``list_metrics``); docs/metrics.md says what is emitted, under which names, and how it
differs from AWS. Modules: ``model`` (metrics, periods, sources), ``statistics``,
``requests`` (the model checks), ``ingest`` (PutMetricData's points), ``published``
(``metrics.db``), ``jobs`` (jobs' MetricDefinitions series, read in place), ``queries``
(GetMetricStatistics, ListMetrics), ``metric_data`` (GetMetricData), ``tokens``, ``errors``;
Shipyard's own measurements: ``invocations`` (endpoints' ``AWS/SageMaker`` metrics, which
the router records), ``utilization`` (jobs' hosts, which the supervisor samples),
``instances`` (endpoints' ModelSetupTime and instance utilization, transform jobs' hosts),
``platform`` (how they are written); ``mlflow`` forwards ended jobs to an MLflow tracking
server (setting ``mlflow_tracking_uri``).
"""

from __future__ import annotations

from shipyard.control.metrics.errors import (
    InvalidNextToken,
    InvalidParameterCombination,
    InvalidParameterValue,
    MetricsValidationError,
    MissingParameter,
)
from shipyard.control.metrics.service import Metrics

__all__ = ["InvalidNextToken", "InvalidParameterCombination", "InvalidParameterValue",
           "Metrics", "MetricsValidationError", "MissingParameter"]
