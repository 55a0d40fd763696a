"""Jobs' instance utilization (CPUUtilization, MemoryUtilization, DiskUtilization) sampled
from the runtime while a job runs, read back with a real boto3 ``cloudwatch`` client: on the
FakeRuntime (exact numbers, training and processing), the process runtime's ``/proc``
reading, and a real Docker training job."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config

from shipyard.runtimes import JOB_NAME_LABEL, FakeBehaviour
from shipyard.runtimes.base import ContainerSpec, ContainerStats
from shipyard.runtimes.process import _tree_usage
from tests.support.api import Api, serving, session
from tests.support.jobs import ACCOUNT, FAKE_IMAGE, training_request
from tests.support.planes import docker_plane, fake_plane
from tests.support.polling import until

GIB = 1 << 30
TRAINING = "/aws/sagemaker/TrainingJobs"
PROCESSING = "/aws/sagemaker/ProcessingJobs"


def _cloudwatch(api: Api) -> Any:
    return session(api.akid, api.secret).client(
        "cloudwatch", endpoint_url=api.url, config=Config(retries={"max_attempts": 1}))


def _points(cw: Any, namespace: str, host: str, name: str, since: float) -> list[dict[str, Any]]:
    answer = cw.get_metric_statistics(
        Namespace=namespace, MetricName=name,
        Dimensions=[{"Name": "Host", "Value": host}],
        StartTime=datetime.fromtimestamp(since - 60, timezone.utc),
        EndTime=datetime.fromtimestamp(time.time() + 60, timezone.utc), Period=1,
        Statistics=["Average", "SampleCount"])
    return sorted(answer["Datapoints"], key=lambda p: p["Timestamp"])


def _busy(spec: ContainerSpec) -> FakeBehaviour:
    if spec.labels.get(JOB_NAME_LABEL, "").startswith("util-"):
        return FakeBehaviour(duration=4.5, stats=ContainerStats(
            cpu_seconds=1.5, memory_bytes=GIB // 4, memory_limit_bytes=GIB))
    return FakeBehaviour()


def test_fake_jobs_publish_their_hosts_utilization(tmp_path: Path) -> None:
    plane, _ = fake_plane(tmp_path, _busy, api_port=0)
    with serving(plane.settings, plane) as api:
        cw = _cloudwatch(api)
        since = time.time()
        api.sm.create_training_job(**training_request("util-train", tmp_path / "t",
                                                      instance_count=2))
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "x.txt").write_text("x")
        api.sm.create_processing_job(
            ProcessingJobName="util-proc", RoleArn=f"arn:aws:iam::{ACCOUNT}:role/shipyard",
            AppSpecification={"ImageUri": FAKE_IMAGE},
            ProcessingResources={"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                   "InstanceCount": 1, "VolumeSizeInGB": 5}},
            ProcessingInputs=[{"InputName": "a", "S3Input": {
                "S3Uri": (tmp_path / "in").as_uri(), "LocalPath": "/opt/ml/processing/input/a",
                "S3DataType": "S3Prefix", "S3InputMode": "File"}}])
        plane.wait("training", "util-train", timeout=30)
        plane.wait("processing", "util-proc", timeout=30)
        for namespace, host in ((TRAINING, "util-train/algo-1"), (TRAINING, "util-train/algo-2"),
                                (PROCESSING, "util-proc/algo-1")):
            cpu = _points(cw, namespace, host, "CPUUtilization", since)
            assert cpu, (namespace, host)
            # 1.5 cores busy: 150 % (100 per core, as AWS counts).
            assert all(p["Average"] == pytest.approx(150, rel=0.1) for p in cpu)
            assert cpu[0]["Unit"] == "Percent"
            memory = _points(cw, namespace, host, "MemoryUtilization", since)
            assert memory and all(p["Average"] == 25 for p in memory)
            disk = _points(cw, namespace, host, "DiskUtilization", since)
            assert disk and all(0 < p["Average"] <= 100 for p in disk)
            assert not _points(cw, namespace, host, "GPUUtilization", since)


def test_process_tree_usage_reads_proc() -> None:
    usage = _tree_usage(os.getpid())
    assert usage is not None
    cpu, rss = usage
    assert cpu > 0 and rss > 10 * (1 << 20)
    assert _tree_usage(2 ** 22 + 12345) is None


@pytest.mark.docker
def test_docker_training_job_shows_cpu_and_memory(
        tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
        images: dict[str, str]) -> None:
    plane = docker_plane(tmp_path, docker_client, scope_labels, stop_grace_seconds=3,
                         api_port=0)
    with serving(plane.settings, plane) as api:
        cw = _cloudwatch(api)
        since = time.time()
        api.sm.create_training_job(**training_request(
            "util-docker", tmp_path, image=images["behaviours"],
            Environment={"MODE": "sleep", "SLEEP": "7"}))
        host = "util-docker/algo-1"
        cpu = until("CPUUtilization points", lambda: _points(
            cw, TRAINING, host, "CPUUtilization", since), timeout=60)
        cores = os.cpu_count() or 1
        assert all(0 <= p["Average"] <= 100 * cores for p in cpu)
        memory = _points(cw, TRAINING, host, "MemoryUtilization", since)
        assert memory and all(0 < p["Average"] < 100 for p in memory)
        plane.wait("training", "util-docker", timeout=60)
        assert api.sm.describe_training_job(
            TrainingJobName="util-docker")["TrainingJobStatus"] == "Completed"
