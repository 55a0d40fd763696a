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
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shipyard.api.server import read_info
from shipyard.settings import Settings
from tests.support import api as support_api
from tests.support.api import Api, session, training, wait_done
from tests.support.cli import shipyard_env
from tests.support.jobs import ROLE

pytestmark = pytest.mark.docker
api = support_api.docker_api  # a server over real containers, started once for this module


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
    status, body = api.post_target("SageMaker.DescribeTrainingJob", b"{not json")
    assert status == 400 and body["__type"] == "SerializationException"
    status, body = api.post_target("SageMaker.CreateTotallyMadeUpThing", b"{}")
    assert status == 400 and body["__type"] == "UnknownOperationException"
    # AWS leaves the message empty; Shipyard says what it lacks.
    assert body["message"] == ("Shipyard does not implement sagemaker:CreateTotallyMadeUpThing"
                               " (docs/api.md lists what it implements)")
    status, body = api.post_target("Monitoring.GetMetricData", b"{}")
    assert status == 400 and "does not implement Monitoring:GetMetricData" in body["message"]
    wait_done(api, "dup-job")


def test_signatures_are_checked(api: Api) -> None:
    status, body = api.post_target("SageMaker.ListTrainingJobs", b"{}", sign=False)
    assert status == 403 and body["__type"] == "MissingAuthenticationTokenException"
    status, body = api.post_target("SageMaker.ListTrainingJobs", b"{}", secret="wrong" * 8)
    assert status == 403 and body["__type"] == "InvalidSignatureException"
    stranger = session("AKIAUNKNOWNUNKNOWN00", "x" * 40)
    with pytest.raises(ClientError) as err:
        stranger.client("sagemaker", endpoint_url=api.url,
                        config=Config(retries={"max_attempts": 1})).list_training_jobs()
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_sts_get_caller_identity(api: Api) -> None:
    identity = api.sts.get_caller_identity()
    assert identity["Account"] == "000000000000"
    assert identity["Arn"] == (
        f"arn:aws:sts::000000000000:assumed-role/ShipyardExecutionRole/{api.akid}")


def test_tags_round_trip(api: Api, images: dict[str, str], tmp_path: Path) -> None:
    arn = api.sm.create_training_job(**training("tagged", images["seed000"], tmp_path))[
        "TrainingJobArn"]
    api.sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "1"},
                                           {"Key": "b", "Value": "2"}])
    api.sm.delete_tags(ResourceArn=arn, TagKeys=["a"])
    assert api.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]
    wait_done(api, "tagged")


def test_a_create_with_bad_tags_is_refused_in_aws_words(api: Api, images: dict[str, str],
                                                         tmp_path: Path) -> None:
    # The plane checks a create at its door once the tags are taken off; the API checks those.
    request = training("bad-tags", images["seed000"], tmp_path)
    with pytest.raises(ClientError) as err:
        api.sm.create_training_job(**request, Tags=[{"Key": "a!", "Value": "1"}])
    assert err.value.response["Error"]["Message"] == (
        "1 validation error detected: Value 'a!' at 'tags.1.member.key' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        "^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$")
    # botocore would not send a tag without its key: as another client might.
    status, body = api.post_target("SageMaker.CreateTrainingJob", json.dumps(
        {**request, "Tags": [{"Value": "1"}]}).encode())
    assert (status, body["__type"]) == (400, "ValidationException")
    assert body["message"] == ("1 validation error detected: Value null at 'tags.1.member.key' "
                               "failed to satisfy constraint: Member must not be null")
    with pytest.raises(ClientError, match="Requested resource not found"):
        api.sm.describe_training_job(TrainingJobName="bad-tags")


def test_server_restart_while_a_job_runs(tmp_path: Path, images: dict[str, str]) -> None:
    """Kill the server process mid-job; a new server reattaches and finishes the job."""
    env = {**os.environ, **shipyard_env(tmp_path / "state")}
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
            status, _ = api.post_target("SageMaker.CreateHyperParameterTuningJobX", b"{}")
            assert status == 400
    said = [r for r in caplog.records if "CreateHyperParameterTuningJobX" in r.getMessage()]
    assert len(said) == 1
    assert "sagemaker:CreateHyperParameterTuningJobX" in said[0].getMessage()
