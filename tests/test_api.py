"""The SageMaker-compatible API through real boto3 clients, against a real server on an
ephemeral port, with real containers behind it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from shipyard.api.server import ApiServer, read_info
from shipyard.control import ControlPlane, Settings
from shipyard.runtimes import DockerRuntime
from tests.support.images import SESSION_SCOPE

pytestmark = pytest.mark.docker
ROLE = "arn:aws:iam::000000000000:role/shipyard"


class Api:
    def __init__(self, server: ApiServer, url: str) -> None:
        self.server = server
        self.url = url
        self.akid, self.secret = server.keys.default
        self.session = boto3.session.Session(aws_access_key_id=self.akid,
                                             aws_secret_access_key=self.secret,
                                             region_name="us-east-1")
        config = Config(retries={"max_attempts": 1})
        self.sm = self.session.client("sagemaker", endpoint_url=url, config=config)
        self.logs = self.session.client("logs", endpoint_url=url, config=config)
        self.sts = self.session.client("sts", endpoint_url=url, config=config)

    def raw(self, target: str, body: bytes, *, sign: bool = True,
            secret: str | None = None) -> tuple[int, dict[str, Any]]:
        """A hand-made awsJson1.1 request: bodies botocore itself would refuse to send."""
        request = AWSRequest(method="POST", url=f"{self.url}/", data=body, headers={
            "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
        if sign:
            SigV4Auth(Credentials(self.akid, secret or self.secret), "sagemaker",
                      "us-east-1").add_auth(request)
        prepared = urllib.request.Request(f"{self.url}/", data=body, method="POST",
                                          headers=dict(request.headers.items()))
        try:
            with urllib.request.urlopen(prepared, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("api")
    settings = Settings.load({"data_dir": str(data / "state"), "stop_grace_seconds": 3,
                              "api_port": 0}, environ={})
    runtime = DockerRuntime(docker_client, labels={"org.shipyard.scope": SESSION_SCOPE})
    plane = ControlPlane(settings, runtime)
    server = ApiServer(settings, plane)
    url = server.start_in_thread()
    yield Api(server, url)
    server.stop()
    plane.close()


def training(name: str, image: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    (data / "a.csv").write_text("1\n")
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": data.as_uri()}}}],
        "OutputDataConfig": {"S3OutputPath": (tmp / "out").as_uri()},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                           "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    req.update(extra)
    return req


def wait_done(api: Api, name: str) -> dict[str, Any]:
    api.sm.get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return api.sm.describe_training_job(TrainingJobName=name)


def test_training_job_create_describe_wait(api: Api, images: dict[str, str],
                                           tmp_path: Path) -> None:
    arn = api.sm.create_training_job(**training(
        "Api-Train-1", images["behaviours"], tmp_path,
        AlgorithmSpecification={"TrainingImage": images["behaviours"],
                                "TrainingInputMode": "File",
                                "MetricDefinitions": [{"Name": "loss",
                                                       "Regex": r"loss=(\S+)"}]},
        Environment={"MODE": "metrics"},
        Tags=[{"Key": "team", "Value": "ml"}]))["TrainingJobArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:000000000000:training-job/api-train-1"
    record = wait_done(api, "Api-Train-1")
    assert record["TrainingJobStatus"] == "Completed"
    assert record["TrainingJobName"] == "Api-Train-1"
    assert record["OutputDataConfig"]["KmsKeyId"] == ""
    assert record["ResourceConfig"]["InstanceCount"] == 1
    assert record["CreationTime"].timestamp() > time.time() - 120  # epoch seconds parsed
    assert all(t["StatusMessage"] for t in record["SecondaryStatusTransitions"])
    assert {m["MetricName"]: m["Value"] for m in record["FinalMetricDataList"]} == {
        "loss": 0.25}
    assert api.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]


def test_sdk_style_log_tailing(api: Api, images: dict[str, str], tmp_path: Path) -> None:
    """The SageMaker SDK's loop: streams by prefix, then events until an empty page."""
    api.sm.create_training_job(**training("api-logs", images["behaviours"], tmp_path,
                                          Environment={"MODE": "metrics"}))
    wait_done(api, "api-logs")
    streams = api.logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="api-logs/",
        orderBy="LogStreamName", limit=1)
    assert "nextToken" not in streams
    [stream] = [s["logStreamName"] for s in streams["logStreams"]]
    assert stream.startswith("api-logs/algo-1-")
    messages, token = [], None
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = api.logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamName=stream, startFromHead=True, **kwargs)
        if not page["events"]:
            break
        messages += [e["message"] for e in page["events"]]
        token = page["nextForwardToken"]
    assert messages[0].startswith("mode metrics")
    assert messages[1:5] == [f"epoch {i}: loss={1.0 / (i + 1):.3f} accuracy={0.5 + i / 10:.2f}"
                             for i in range(4)]


def test_stop_and_processing(api: Api, images: dict[str, str], tmp_path: Path) -> None:
    api.sm.create_training_job(**training("api-stop", images["behaviours"], tmp_path,
                                          Environment={"MODE": "sleep"}))
    deadline = time.monotonic() + 30
    while api.sm.describe_training_job(TrainingJobName="api-stop")["SecondaryStatus"] != (
            "Training"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    api.sm.stop_training_job(TrainingJobName="api-stop")
    assert api.sm.describe_training_job(TrainingJobName="api-stop")["TrainingJobStatus"] in (
        "Stopping", "Stopped")
    assert wait_done(api, "api-stop")["TrainingJobStatus"] == "Stopped"
    with pytest.raises(ClientError) as err:
        api.sm.stop_training_job(TrainingJobName="api-stop")
    assert err.value.response["Error"]["Code"] == "ValidationException"

    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "x.txt").write_text("x")
    (tmp_path / "second").mkdir()
    api.sm.create_processing_job(
        ProcessingJobName="api-proc", RoleArn=ROLE,
        AppSpecification={"ImageUri": images["processing"],
                          "ContainerEntrypoint": ["python3", "/opt/program/p.py"]},
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType":
                                               "ml.m5.large", "VolumeSizeInGB": 30}},
        ProcessingInputs=[{"InputName": n, "AppManaged": False, "S3Input": {
            "S3Uri": (tmp_path / n).as_uri(), "LocalPath": f"/opt/ml/processing/input/{n}",
            "S3DataType": "S3Prefix", "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated", "S3CompressionType": "None"}}
            for n in ("first", "second")],
        ProcessingOutputConfig={"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": (tmp_path / "report").as_uri(), "S3UploadMode": "EndOfJob",
            "LocalPath": "/opt/ml/processing/output/report"}}]})
    api.sm.get_waiter("processing_job_completed_or_stopped").wait(
        ProcessingJobName="api-proc", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    record = api.sm.describe_processing_job(ProcessingJobName="api-proc")
    assert record["ProcessingJobStatus"] == "Completed"
    assert record["ExitMessage"] == "processed 1 files"
    summaries = api.sm.list_processing_jobs()["ProcessingJobSummaries"]
    assert [s["ProcessingJobName"] for s in summaries] == ["api-proc"]


def test_waiter_fails_on_failed_job(api: Api, images: dict[str, str], tmp_path: Path) -> None:
    from botocore.exceptions import WaiterError

    api.sm.create_training_job(**training("api-fail", images["behaviours"], tmp_path,
                                          Environment={"MODE": "exit-3"}))
    with pytest.raises(WaiterError, match="Failed"):
        api.sm.get_waiter("training_job_completed_or_stopped").wait(
            TrainingJobName="api-fail", WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def test_list_pagination_sorting_and_filters(api: Api, images: dict[str, str],
                                             tmp_path: Path) -> None:
    names = [f"page-{i}" for i in range(5)]
    for name in names:
        api.sm.create_training_job(**training(name, images["seed000"], tmp_path))
    for name in names:
        wait_done(api, name)
    paginator = api.sm.get_paginator("list_training_jobs")
    pages = list(paginator.paginate(NameContains="page-", SortBy="Name",
                                    SortOrder="Ascending", PaginationConfig={"PageSize": 2}))
    assert [len(p["TrainingJobSummaries"]) for p in pages] == [2, 2, 1]
    assert "NextToken" not in pages[-1]
    assert [s["TrainingJobName"] for p in pages for s in p["TrainingJobSummaries"]] == names
    newest = api.sm.list_training_jobs(NameContains="page-", SortOrder="Descending",
                                       MaxResults=1)["TrainingJobSummaries"]
    assert newest[0]["TrainingJobName"] == "page-4"
    assert api.sm.list_training_jobs(StatusEquals="Stopping")["TrainingJobSummaries"] == []
    with pytest.raises(ClientError, match="Invalid pagination token"):
        api.sm.list_training_jobs(NextToken="garbage")


def test_documented_error_paths(api: Api, images: dict[str, str], tmp_path: Path) -> None:
    def code_and_message(call: Any, **kwargs: Any) -> tuple[str, str]:
        with pytest.raises(ClientError) as err:
            call(**kwargs)
        error = err.value.response["Error"]
        return error["Code"], error["Message"]

    assert code_and_message(api.sm.describe_training_job, TrainingJobName="nope") == (
        "ValidationException", "Requested resource not found.")
    assert code_and_message(api.sm.describe_processing_job, ProcessingJobName="nope") == (
        "ValidationException", "Requested resource not found.")
    code, message = code_and_message(api.sm.create_training_job,
                                     **training("bad_name", images["seed000"], tmp_path))
    assert code == "ValidationException"
    assert message == ("1 validation error detected: Value 'bad_name' at 'trainingJobName' "
                       "failed to satisfy constraint: Member must satisfy regular expression "
                       "pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
    api.sm.create_training_job(**training("dup-job", images["seed000"], tmp_path))
    code, message = code_and_message(api.sm.create_training_job,
                                     **training("dup-job", images["seed000"], tmp_path))
    assert code == "ResourceInUse" and "already exists" in message
    code, message = code_and_message(api.sm.create_training_job,
                                     **training("no-image", "missing/image:1", tmp_path))
    assert code == "ValidationException" and "missing/image:1" in message
    code, _ = code_and_message(api.sm.list_tags,
                               ResourceArn="arn:aws:sagemaker:us-east-1:000000000000:"
                                           "training-job/ghost")
    assert code == "ValidationException"
    status, body = api.raw("SageMaker.DescribeTrainingJob", b"{not json")
    assert status == 400 and body["__type"] == "SerializationException"
    status, body = api.raw("SageMaker.CreateTotallyMadeUpThing", b"{}")
    assert status == 400 and body["__type"] == "UnknownOperationException"
    # AWS leaves the message empty; Shipyard says what it lacks.
    assert body["message"] == ("Shipyard does not implement sagemaker:CreateTotallyMadeUpThing"
                               " (docs/api.md lists what it implements)")
    status, body = api.raw("Monitoring.GetMetricData", b"{}")
    assert status == 400 and "does not implement Monitoring:GetMetricData" in body["message"]
    wait_done(api, "dup-job")


def test_signatures_are_checked(api: Api) -> None:
    status, body = api.raw("SageMaker.ListTrainingJobs", b"{}", sign=False)
    assert status == 403 and body["__type"] == "MissingAuthenticationTokenException"
    status, body = api.raw("SageMaker.ListTrainingJobs", b"{}", secret="wrong" * 8)
    assert status == 403 and body["__type"] == "InvalidSignatureException"
    stranger = boto3.session.Session(aws_access_key_id="AKIAUNKNOWNUNKNOWN00",
                                     aws_secret_access_key="x" * 40, region_name="us-east-1")
    with pytest.raises(ClientError) as err:
        stranger.client("sagemaker", endpoint_url=api.url,
                        config=Config(retries={"max_attempts": 1})).list_training_jobs()
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_sts_get_caller_identity(api: Api) -> None:
    identity = api.sts.get_caller_identity()
    assert identity["Account"] == "000000000000"
    assert identity["Arn"].startswith("arn:aws:iam::000000000000:")


def test_tags_round_trip(api: Api, images: dict[str, str], tmp_path: Path) -> None:
    arn = api.sm.create_training_job(**training("tagged", images["seed000"], tmp_path))[
        "TrainingJobArn"]
    api.sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "1"},
                                           {"Key": "b", "Value": "2"}])
    api.sm.delete_tags(ResourceArn=arn, TagKeys=["a"])
    assert api.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]
    wait_done(api, "tagged")


def test_server_restart_while_a_job_runs(tmp_path: Path, images: dict[str, str]) -> None:
    """Kill the server process mid-job; a new server reattaches and finishes the job."""
    env = {**os.environ, "SHIPYARD_DATA_DIR": str(tmp_path / "state"),
           "SHIPYARD_API_PORT": "0", "SHIPYARD_SCOPE": SESSION_SCOPE,
           "SHIPYARD_RUNTIME": "docker"}
    settings = Settings.load(environ=env)

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "shipyard.api.server"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while (info := read_info(settings)) is None or info.pid != proc.pid:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        return proc

    first = start()
    try:
        from shipyard.client import Client

        client = Client.for_settings(settings)
        client.create_job("training", training("survivor", images["behaviours"], tmp_path,
                                               Environment={"MODE": "sleep", "SLEEP": "3"}))
        deadline = time.monotonic() + 30
        while client.describe("training", "survivor")["SecondaryStatus"] != "Training":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = start()
    try:
        client = Client.for_settings(settings)
        record = client.wait("training", "survivor")
        assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
        lines = [line.message for stream in client.log_streams("training", "survivor")
                 for line in client.read_logs("training", stream, None)[0]]
        assert lines.count("mode sleep argv ['train']") == 1
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)


def test_stop_processing_job(api: Api, images: dict[str, str], tmp_path: Path) -> None:
    api.sm.create_processing_job(
        ProcessingJobName="api-proc-stop", RoleArn=ROLE,
        AppSpecification={"ImageUri": images["behaviours"]},
        Environment={"MODE": "sleep"},
        ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType":
                                               "ml.m5.large", "VolumeSizeInGB": 30}})
    deadline = time.monotonic() + 30
    while "ProcessingStartTime" not in api.sm.describe_processing_job(
            ProcessingJobName="api-proc-stop"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    api.sm.stop_processing_job(ProcessingJobName="api-proc-stop")
    api.sm.get_waiter("processing_job_completed_or_stopped").wait(
        ProcessingJobName="api-proc-stop", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    record = api.sm.describe_processing_job(ProcessingJobName="api-proc-stop")
    assert record["ProcessingJobStatus"] == "Stopped"
    pages = list(api.sm.get_paginator("list_processing_jobs").paginate(
        StatusEquals="Stopped", PaginationConfig={"PageSize": 1}))
    assert [s["ProcessingJobName"] for p in pages for s in p["ProcessingJobSummaries"]] == [
        "api-proc-stop"]
    with pytest.raises(ClientError) as err:
        api.sm.stop_processing_job(ProcessingJobName="never-was")
    assert err.value.response["Error"]["Message"] == "Requested resource not found."


def test_an_unimplemented_operation_is_logged_once(api: Api,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shipyard.api.app"):
        for _ in range(3):
            status, _ = api.raw("SageMaker.CreateHyperParameterTuningJobX", b"{}")
            assert status == 400
    said = [r for r in caplog.records if "CreateHyperParameterTuningJobX" in r.getMessage()]
    assert len(said) == 1
    assert "sagemaker:CreateHyperParameterTuningJobX" in said[0].getMessage()
