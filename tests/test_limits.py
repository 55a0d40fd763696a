"""Instance types fitted to the machine (``control.limits``): the pure rule, then jobs,
endpoints and transform jobs on an in-memory runtime that pretends to be a small machine.
The same on a real engine: ``test_control_docker.py::test_aws_instance_type_runs_capped``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.contract.instances import GIB
from shipyard.control import ControlPlane
from shipyard.control.limits import Limits, fit
from shipyard.errors import ValidationError
from shipyard.runtimes import Capacity, FakeRuntime
from tests.support.jobs import FAKE_IMAGE, ROLE, training_request
from tests.support.planes import fake_plane

SMALL = Capacity(cpus=2.0, memory_bytes=4 * GIB, gpus=0)
TRAINING_MESSAGE = "Training image download completed. Training in progress."


@pytest.mark.parametrize(
    ("instance_type", "capacity", "cpus", "memory", "notice", "gpus"),
    [
        ("ml.t3.medium", SMALL, 2.0, 4 * GIB, "", 0),
        ("ml.m5.large", None, 2.0, 8 * GIB, "", 0),
        ("ml.m5.4xlarge", None, 16.0, 64 * GIB, "", 0),
        ("ml.m5.4xlarge", Capacity(2.0, int(7.75 * GIB)), 2.0, int(7.75 * GIB),
         "ml.m5.4xlarge has 16 vCPUs and 64 GiB; each container is capped at this "
         "machine's 2 vCPUs and 7.8 GiB.", 0),
        ("ml.m5.4xlarge", Capacity(32.0, 128 * GIB), 16.0, 64 * GIB, "", 0),
        ("ml.m5.4xlarge", Capacity(8.0, 128 * GIB), 8.0, 64 * GIB,
         "ml.m5.4xlarge has 16 vCPUs; each container is capped at this machine's 8 vCPUs.", 0),
        ("ml.m5.4xlarge", Capacity(0.0, 0), 16.0, 64 * GIB, "", 0),
        ("local", SMALL, None, None, "", 0),
        ("ml.future.9xlarge", SMALL, None, None, "", 0),
        ("ml.p3.2xlarge", Capacity(16.0, 128 * GIB, 0), 8.0, 61 * GIB,
         "ml.p3.2xlarge has 1 GPU and no GPU is available to containers here: it runs on CPU.", 0),
        ("ml.p3.8xlarge", Capacity(64.0, 512 * GIB, 1), 32.0, 244 * GIB,
         "ml.p3.8xlarge has 4 GPUs; 1 available here.", 1),
        ("ml.g5.xlarge", Capacity(8.0, 32 * GIB, 1), 4.0, 16 * GIB, "", 1),
    ],
    ids=["fits", "unknown-capacity", "unknown-capacity-big", "capped-both", "big-machine",
         "capped-cpus", "capacity-figures-unknown", "local-unlimited", "unknown-type",
         "gpu-missing", "fewer-gpus", "gpu-present"],
)
def test_fit(instance_type: str, capacity: Capacity | None, cpus: float | None,
             memory: int | None, notice: str, gpus: int) -> None:
    assert fit(instance_type, capacity) == Limits(cpus, memory, notice, gpus)


def test_fit_refuses_a_gpu_type_only_when_none_is_available() -> None:
    with pytest.raises(ValidationError, match=r"ml\.g4dn\.xlarge has 1 GPU.*refuse_missing_gpu"):
        fit("ml.g4dn.xlarge", SMALL, refuse_missing_gpu=True)
    with pytest.raises(ValidationError, match="local_gpu"):
        fit("local_gpu", SMALL, refuse_missing_gpu=True)
    assert fit("ml.g4dn.xlarge", None, refuse_missing_gpu=True).notice == ""
    assert fit("ml.t3.medium", SMALL, refuse_missing_gpu=True).notice == ""


# -- through the plane, on a small machine ----------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[ControlPlane, FakeRuntime]]:
    made = fake_plane(tmp_path, capacity=SMALL)
    yield made
    made[0].close()


def _training_message(record: dict[str, Any]) -> str:
    [training] = [t for t in record["SecondaryStatusTransitions"] if t["Status"] == "Training"]
    return str(training["StatusMessage"])


def test_aws_type_runs_capped_and_says_so(tmp_path: Path, small: Any,
                                          caplog: pytest.LogCaptureFixture) -> None:
    plane, runtime = small
    with caplog.at_level(logging.WARNING, logger="shipyard.control.limits"):
        plane.create("training", training_request("big", tmp_path,
                                                  instance_type="ml.m5.4xlarge"))
        record = plane.wait("training", "big", timeout=10)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    spec = runtime.started[0]
    assert (spec.cpus, spec.memory_bytes) == (2.0, 4 * GIB)
    notice = ("ml.m5.4xlarge has 16 vCPUs and 64 GiB; each container is capped at this "
              "machine's 2 vCPUs and 4 GiB.")
    assert _training_message(record) == f"{TRAINING_MESSAGE} {notice}"
    # The type as asked, in Describe as in the request.
    described = plane.describe("training", "big")
    assert described["ResourceConfig"]["InstanceType"] == "ml.m5.4xlarge"
    assert f"training job big: {notice}" in caplog.messages


def test_a_type_that_fits_keeps_its_limits_and_message(tmp_path: Path, small: Any) -> None:
    plane, runtime = small
    plane.create("training", training_request("fits", tmp_path, instance_type="ml.t3.medium"))
    record = plane.wait("training", "fits", timeout=10)
    assert (runtime.started[0].cpus, runtime.started[0].memory_bytes) == (2.0, 4 * GIB)
    assert _training_message(record) == TRAINING_MESSAGE


def test_every_host_of_a_processing_job_is_capped(tmp_path: Path, small: Any) -> None:
    plane, runtime = small
    (tmp_path / "in").mkdir()
    plane.create("processing", {
        "ProcessingJobName": "proc", "RoleArn": ROLE,
        "AppSpecification": {"ImageUri": FAKE_IMAGE},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.c5.9xlarge",
                                                  "InstanceCount": 2, "VolumeSizeInGB": 5}},
        "ProcessingInputs": [{"InputName": "a", "S3Input": {
            "S3Uri": (tmp_path / "in").as_uri(), "LocalPath": "/opt/ml/processing/input",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
    })
    record = plane.wait("processing", "proc", timeout=10)
    assert record["ProcessingJobStatus"] == "Completed", record.get("FailureReason")
    assert [(s.cpus, s.memory_bytes) for s in runtime.started] == [(2.0, 4 * GIB)] * 2
    assert record["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.c5.9xlarge"


def test_gpu_type_without_a_gpu_runs_on_cpu(tmp_path: Path, small: Any) -> None:
    plane, runtime = small
    plane.create("training", training_request("gpu", tmp_path, instance_type="ml.p3.2xlarge"))
    record = plane.wait("training", "gpu", timeout=10)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert (runtime.started[0].cpus, runtime.started[0].memory_bytes) == (2.0, 4 * GIB)
    message = _training_message(record)
    assert message.startswith(TRAINING_MESSAGE)
    assert "ml.p3.2xlarge has 1 GPU and no GPU is available to containers here: it runs on " \
           "CPU." in message


def test_gpu_type_refused_when_the_setting_says_so(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, capacity=SMALL, refuse_missing_gpu=True)
    try:
        with pytest.raises(ValidationError, match="refuse_missing_gpu"):
            plane.create("training", training_request("gpu", tmp_path,
                                                      instance_type="ml.g5.xlarge"))
        assert plane.lookup("training", "gpu") is None
        assert runtime.started == []
        # Endpoints and transform jobs are refused at their door too.
        plane.create("model", {"ModelName": "m", "ExecutionRoleArn": ROLE,
                               "PrimaryContainer": {"Image": FAKE_IMAGE}})
        plane.create("endpoint-config", {"EndpointConfigName": "c", "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1,
            "InstanceType": "ml.g4dn.xlarge"}]})
        with pytest.raises(ValidationError, match=r"ml\.g4dn\.xlarge has 1 GPU"):
            plane.create("endpoint", {"EndpointName": "e", "EndpointConfigName": "c"})
        (tmp_path / "in").mkdir()
        with pytest.raises(ValidationError, match=r"ml\.p3\.2xlarge has 1 GPU"):
            plane.create("transform", {
                "TransformJobName": "t", "ModelName": "m",
                "TransformInput": {"DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix", "S3Uri": (tmp_path / "in").as_uri()}}},
                "TransformOutput": {"S3OutputPath": (tmp_path / "out").as_uri()},
                "TransformResources": {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1}})
        # A CPU type still runs.
        plane.create("training", training_request("cpu", tmp_path))
        assert plane.wait("training", "cpu", timeout=10)["TrainingJobStatus"] == "Completed"
    finally:
        plane.close()
