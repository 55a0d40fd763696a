"""What endpoint and transform-job instances publish besides invocations.

As SageMaker does (developer guide, "SageMaker AI job and endpoint instance metrics" and
"SageMaker AI endpoint invocation metrics"):

- ``AWS/SageMaker`` ``ModelSetupTime``, dimensions ``EndpointName``, ``VariantName``, unit
  Microseconds: for each instance started, the time from the start of its variant's setup
  (model data prepared, container started) to its first healthy ``/ping``; replacements of
  failed instances count too;
- ``/aws/sagemaker/Endpoints``: ``CPUUtilization``, ``MemoryUtilization``,
  ``DiskUtilization`` (``GPUUtilization``, ``GPUMemoryUtilization`` where a GPU is reported),
  dimensions ``EndpointName``, ``VariantName``: one point per instance per sample, so a
  variant's Average is over its instances and Maximum its busiest;
- ``/aws/sagemaker/TransformJobs``: the same utilization, dimension ``Host`` =
  ``<job>/algo-<N>``, as training and processing jobs (``utilization``).

Sampling is ``utilization``'s :class:`UtilizationSampler`, every 2 s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from shipyard.control.metrics.invocations import NAMESPACE
from shipyard.control.metrics.model import MetricKey
from shipyard.control.metrics.platform import open_store, point
from shipyard.control.metrics.utilization import UtilizationSampler
from shipyard.errors import ShipyardError
from shipyard.runtimes.base import Runtime
from shipyard.settings import Settings

__all__ = ["ENDPOINTS_NAMESPACE", "TRANSFORM_NAMESPACE", "endpoint_sampler",
           "record_model_setup", "transform_sampler"]

log = logging.getLogger(__name__)

ENDPOINTS_NAMESPACE = "/aws/sagemaker/Endpoints"
TRANSFORM_NAMESPACE = "/aws/sagemaker/TransformJobs"


def record_model_setup(settings: Settings, endpoint: str, variant: str,
                       seconds: list[float]) -> None:
    """``ModelSetupTime`` of instances of ``variant`` that became healthy now, each after
    the seconds given; a failure to write is logged, never raised (the deployment goes on)."""
    if not seconds:
        return
    key = MetricKey(NAMESPACE, "ModelSetupTime",
                    (("EndpointName", endpoint), ("VariantName", variant)))
    ms = int(time.time() * 1000)
    try:
        store = open_store(settings)
        try:
            store.put([point(key, ms, "Microseconds", max(0.0, s) * 1e6) for s in seconds])
        finally:
            store.close()
    except ShipyardError as exc:
        log.warning("ModelSetupTime of %s/%s not recorded: %s", endpoint, variant, exc)


def endpoint_sampler(runtime: Runtime, settings: Settings,
                     instances: Callable[[], dict[str, tuple[str, str]]]) -> UtilizationSampler:
    """A sampler (not started) of every endpoint instance ``instances()`` names at each
    round (container -> (endpoint, variant)); it runs until stopped."""
    dims: dict[str, tuple[tuple[str, str], ...]] = {}

    def hosts() -> dict[str, str]:
        current = instances()
        dims.clear()
        dims.update({container: (("EndpointName", endpoint), ("VariantName", variant))
                     for container, (endpoint, variant) in current.items()})
        return {container: container for container in current}

    return UtilizationSampler(runtime, lambda: open_store(settings), ENDPOINTS_NAMESPACE,
                              "endpoints", hosts, settings.data_dir,
                              dimensions=lambda container: dims[container], keep_running=True)


def transform_sampler(runtime: Runtime, settings: Settings, job: str, hosts: dict[str, str],
                      disk: Path) -> UtilizationSampler:
    """A sampler (not started) of transform job ``job``'s hosts (host -> container)."""
    return UtilizationSampler(runtime, lambda: open_store(settings), TRANSFORM_NAMESPACE, job,
                              hosts, disk)
