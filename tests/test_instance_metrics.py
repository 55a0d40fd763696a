"""What endpoint and transform instances publish besides invocations: ``ModelSetupTime``
(``AWS/SageMaker``), endpoint instance utilization (``/aws/sagemaker/Endpoints``) and transform
hosts' utilization (``/aws/sagemaker/TransformJobs``), read back through the plane's
CloudWatch door. Everything runs on the process runtime (tests/support/workloads.py's
``serve``), so no container engine is needed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.control import ControlPlane
from shipyard.settings import Settings
from tests.support.jobs import ROLE
from tests.support.planes import deploy, remove_endpoints
from tests.support.polling import until
from tests.support.workloads import serve_project

DIMS = [{"Name": "EndpointName", "Value": "util-ep"},
        {"Name": "VariantName", "Value": "AllTraffic"}]


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "runtime": "process",
                              "stop_grace_seconds": 2,
                              "endpoint_startup_timeout_seconds": 20}, environ={})
    made = ControlPlane(settings)
    made.create("model", {"ModelName": "util-model", "ExecutionRoleArn": ROLE,
                          "PrimaryContainer": {"Image": str(serve_project(tmp_path / "p"))}})
    try:
        yield made
    finally:
        remove_endpoints(made)
        made.close()


def _stats(plane: ControlPlane, namespace: str, name: str, dims: list[dict[str, str]],
           since: float) -> dict[str, Any]:
    points = plane.get_metric_statistics({
        "Namespace": namespace, "MetricName": name, "Dimensions": dims,
        "StartTime": since - 60, "EndTime": time.time() + 60, "Period": 3600,
        "Statistics": ["SampleCount", "Average", "Minimum", "Maximum"]})["Datapoints"]
    return dict(points[0]) if points else {}


def test_an_endpoint_publishes_setup_time_and_utilization(plane: ControlPlane,
                                                          tmp_path: Path) -> None:
    since = time.time()
    started = time.monotonic()
    deploy(plane, "util-ep", str(tmp_path / "p"), None, count=2)
    took = time.monotonic() - started
    setup = until("ModelSetupTime", lambda: _stats(
        plane, "AWS/SageMaker", "ModelSetupTime", DIMS, since), timeout=10)
    assert setup["SampleCount"] == 2  # one per instance
    assert setup["Unit"] == "Microseconds"
    assert 0 < setup["Maximum"] <= took * 1e6
    memory = until("MemoryUtilization", lambda: _stats(
        plane, "/aws/sagemaker/Endpoints", "MemoryUtilization", DIMS, since), timeout=20)
    assert memory["Unit"] == "Percent" and 0 < memory["Maximum"] <= 100

    def cpu_samples() -> dict[str, Any] | None:
        found = _stats(plane, "/aws/sagemaker/Endpoints", "CPUUtilization", DIMS, since)
        return found if found.get("SampleCount", 0) >= 2 else None

    cpu = until("a CPU sample of each instance", cpu_samples, timeout=20)
    assert cpu["Minimum"] >= 0
    listed = plane.list_metrics({"Namespace": "/aws/sagemaker/Endpoints"})["Metrics"]
    assert {m["MetricName"] for m in listed} >= {"CPUUtilization", "MemoryUtilization",
                                                "DiskUtilization"}
    assert all(sorted(d["Name"] for d in m["Dimensions"]) == ["EndpointName", "VariantName"]
               for m in listed)


def test_a_transform_job_publishes_its_hosts_utilization(plane: ControlPlane,
                                                         tmp_path: Path) -> None:
    since = time.time()
    data = tmp_path / "batch"
    data.mkdir()
    (data / "slow.txt").write_text("sleep:2.5")
    plane.create("transform", {
        "TransformJobName": "util-tj", "ModelName": "util-model",
        "TransformInput": {"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": data.as_uri()}}, "ContentType": "text/plain"},
        "TransformOutput": {"S3OutputPath": (tmp_path / "out").as_uri()},
        "TransformResources": {"InstanceType": "local", "InstanceCount": 1}})
    record = plane.wait("transform", "util-tj", timeout=60)
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    host = [{"Name": "Host", "Value": "util-tj/algo-1"}]
    memory = _stats(plane, "/aws/sagemaker/TransformJobs", "MemoryUtilization", host, since)
    assert memory and memory["Unit"] == "Percent"
    assert _stats(plane, "/aws/sagemaker/TransformJobs", "CPUUtilization", host, since)
