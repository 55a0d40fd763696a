"""Models, endpoint configs, endpoints and transform jobs through boto3's ``sagemaker`` client,
against a real server on an ephemeral port. Endpoints run on the process runtime (the stdlib
``serve`` program of tests/support/workloads.py), so no container engine is needed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, WaiterError

from shipyard.control import ControlPlane
from shipyard.settings import Settings
from tests.support.api import Api, delete_endpoints, serving, session
from tests.support.jobs import ACCOUNT, ROLE
from tests.support.workloads import serve_project

ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}"


class Ctx:
    def __init__(self, api: Api, plane: ControlPlane, project: Path, tmp: Path) -> None:
        self.api, self.plane, self.project, self.tmp = api, plane, project, tmp
        self.sm = api.sm

    def model(self, name: str, **extra: Any) -> str:
        extra.setdefault("PrimaryContainer", {"Image": str(self.project)})
        return str(self.sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                                        **extra)["ModelArn"])

    def config(self, name: str, model: str, **extra: Any) -> str:
        return str(self.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
            "InstanceType": "local"}], **extra)["EndpointConfigArn"])

    def wait_in_service(self, name: str) -> dict[str, Any]:
        self.sm.get_waiter("endpoint_in_service").wait(
            EndpointName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 300})
        return dict(self.sm.describe_endpoint(EndpointName=name))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    data = tmp_path_factory.mktemp("endpoints")
    settings = Settings.load({"data_dir": str(data / "state"), "api_port": 0,
                              "runtime": "process", "stop_grace_seconds": 2,
                              "endpoint_startup_timeout_seconds": 20}, environ={})
    plane = ControlPlane(settings)
    with serving(settings, plane) as api:
        try:
            yield Ctx(api, plane, serve_project(data / "project"), data)
        finally:
            delete_endpoints(api, plane)


def error_of(exc: ClientError) -> tuple[str, str]:
    return exc.response["Error"]["Code"], exc.response["Error"]["Message"]


# -- models ---------------------------------------------------------------------------------


def test_model_create_describe_delete(ctx: Ctx) -> None:
    arn = ctx.model("Api-Model-1", Tags=[{"Key": "team", "Value": "ml"}])
    assert arn == f"{ARN}:model/api-model-1"
    record = ctx.sm.describe_model(ModelName="Api-Model-1")
    assert record["ModelName"] == "Api-Model-1" and record["ModelArn"] == arn
    assert record["PrimaryContainer"]["Image"] == str(ctx.project)
    assert record["ExecutionRoleArn"] == ROLE
    assert record["CreationTime"].timestamp() > time.time() - 60
    assert ctx.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    ctx.sm.delete_model(ModelName="Api-Model-1")
    with pytest.raises(ClientError) as err:
        ctx.sm.describe_model(ModelName="Api-Model-1")
    assert error_of(err.value) == ("ValidationException", f'Could not find model "{arn}".')
    with pytest.raises(ClientError) as err:
        ctx.sm.delete_model(ModelName="Api-Model-1")
    assert error_of(err.value)[0] == "ValidationException"


def test_duplicate_model_is_the_error_the_sdk_matches(ctx: Ctx) -> None:
    ctx.model("dup-model")
    with pytest.raises(ClientError) as err:
        ctx.model("dup-model")
    code, message = error_of(err.value)
    assert code == "ValidationException"
    assert "Cannot create already existing model" in message


def test_model_request_is_validated_against_the_model(ctx: Ctx) -> None:
    with pytest.raises(ClientError) as err:
        ctx.sm.create_model(ModelName="bad_name", PrimaryContainer={"Image": "x"})
    code, message = error_of(err.value)
    assert code == "ValidationException"
    assert message == ("1 validation error detected: Value 'bad_name' at 'modelName' failed to "
                       "satisfy constraint: Member must satisfy regular expression pattern: "
                       "^[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?")
    # Local model data is Shipyard's widening of ModelDataUrl's s3/https pattern.
    ctx.model("local-data", PrimaryContainer={
        "Image": str(ctx.project), "ModelDataUrl": (ctx.tmp / "m.tar.gz").as_uri()})


def test_list_models_sorts_filters_and_pages(ctx: Ctx) -> None:
    names = [f"lm-{i}" for i in range(5)]
    before = time.time()
    for name in names:
        ctx.model(name)
    listed = ctx.sm.list_models(NameContains="lm-", MaxResults=100)["Models"]
    # ListModels' default order is CreationTime, Descending.
    assert [m["ModelName"] for m in listed] == names[::-1]
    assert set(listed[0]) == {"ModelName", "ModelArn", "CreationTime"}
    by_name = ctx.sm.list_models(NameContains="lm-", SortBy="Name", SortOrder="Ascending")
    assert [m["ModelName"] for m in by_name["Models"]] == names
    pages = ctx.sm.get_paginator("list_models").paginate(
        NameContains="lm-", PaginationConfig={"PageSize": 2})
    assert [m["ModelName"] for page in pages for m in page["Models"]] == names[::-1]
    first = ctx.sm.list_models(NameContains="lm-", MaxResults=2)
    assert "NextToken" in first
    assert "NextToken" not in ctx.sm.list_models(NameContains="lm-", MaxResults=5)
    after = ctx.sm.list_models(NameContains="lm-", CreationTimeAfter=before - 1)["Models"]
    assert len(after) == 5
    assert ctx.sm.list_models(NameContains="lm-", CreationTimeBefore=before - 60)["Models"] == []


# -- endpoint configs -----------------------------------------------------------------------


def test_endpoint_config_create_describe_list_delete(ctx: Ctx) -> None:
    ctx.model("ec-model")
    arn = ctx.config("Ec-Config-1", "ec-model", Tags=[{"Key": "k", "Value": "v"}])
    assert arn == f"{ARN}:endpoint-config/ec-config-1"
    record = ctx.sm.describe_endpoint_config(EndpointConfigName="Ec-Config-1")
    assert record["EndpointConfigName"] == "Ec-Config-1"
    variant = record["ProductionVariants"][0]
    assert (variant["VariantName"], variant["ModelName"], variant["InstanceType"]) == (
        "AllTraffic", "ec-model", "local")
    listed = ctx.sm.list_endpoint_configs(NameContains="Ec-Config")["EndpointConfigs"]
    assert listed == [{"EndpointConfigName": "Ec-Config-1", "EndpointConfigArn": arn,
                       "CreationTime": record["CreationTime"]}]
    assert ctx.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "k", "Value": "v"}]
    ctx.sm.delete_endpoint_config(EndpointConfigName="Ec-Config-1")
    with pytest.raises(ClientError) as err:
        ctx.sm.describe_endpoint_config(EndpointConfigName="Ec-Config-1")
    assert error_of(err.value) == ("ValidationException",
                                   f'Could not find endpoint configuration "{arn}".')


def test_endpoint_config_needs_its_model(ctx: Ctx) -> None:
    with pytest.raises(ClientError) as err:
        ctx.config("orphan-config", "no-such-model")
    code, message = error_of(err.value)
    assert code == "ValidationException" and "Could not find model" in message


def test_endpoint_config_instance_type_enum_is_checked(ctx: Ctx) -> None:
    with pytest.raises(ClientError) as err:
        ctx.sm.create_endpoint_config(EndpointConfigName="bad-type", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.huge"}])
    code, message = error_of(err.value)
    assert code == "ValidationException"
    assert "at 'productionVariants.1.member.instanceType'" in message


# -- endpoints ------------------------------------------------------------------------------


def test_endpoint_lifecycle(ctx: Ctx) -> None:
    ctx.model("life-model")
    ctx.config("life-config-a", "life-model")
    ctx.config("life-config-b", "life-model")
    arn = ctx.sm.create_endpoint(EndpointName="Life-Ep", EndpointConfigName="life-config-a",
                                 Tags=[{"Key": "stage", "Value": "test"}])["EndpointArn"]
    assert arn == f"{ARN}:endpoint/life-ep"
    assert ctx.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "test"}]
    record = ctx.wait_in_service("Life-Ep")
    assert record["EndpointStatus"] == "InService"
    assert record["EndpointConfigName"] == "life-config-a"
    assert record["ProductionVariants"][0]["VariantName"] == "AllTraffic"

    listed = ctx.sm.list_endpoints(StatusEquals="InService", NameContains="Life")["Endpoints"]
    assert [e["EndpointName"] for e in listed] == ["Life-Ep"]
    assert set(listed[0]) == {"EndpointName", "EndpointArn", "CreationTime",
                              "LastModifiedTime", "EndpointStatus"}
    assert ctx.sm.list_endpoints(StatusEquals="Failed", NameContains="Life")["Endpoints"] == []

    with pytest.raises(ClientError) as err:
        ctx.sm.create_endpoint(EndpointName="Life-Ep", EndpointConfigName="life-config-a")
    assert "Cannot create already existing endpoint" in error_of(err.value)[1]

    assert ctx.sm.update_endpoint(EndpointName="Life-Ep",
                                  EndpointConfigName="life-config-b")["EndpointArn"] == arn
    record = ctx.wait_in_service("Life-Ep")
    assert record["EndpointConfigName"] == "life-config-b"
    reply = ctx.api.rt.invoke_endpoint(EndpointName="Life-Ep", Body=b"hi")
    assert reply["InvokedProductionVariant"] == "AllTraffic"

    # Each instance's output: log group /aws/sagemaker/Endpoints/<name>, stream
    # <variant>/<instance id>, as on AWS.
    logs = session(ctx.api.akid, ctx.api.secret).client("logs", endpoint_url=ctx.api.url)
    group = "/aws/sagemaker/Endpoints/Life-Ep"
    deadline = time.monotonic() + 10
    while True:
        streams = [s["logStreamName"] for s in
                   logs.describe_log_streams(logGroupName=group)["logStreams"]]
        events = [e["message"] for name in streams for e in logs.get_log_events(
            logGroupName=group, logStreamName=name, startFromHead=True)["events"]]
        if (len(streams) == 2 and len(events) == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(streams) == 2 and all(s.startswith("AllTraffic/") for s in streams)
    assert all(e.startswith("serve: listening on") for e in events)
    found = logs.filter_log_events(logGroupName=group, filterPattern="listening")["events"]
    assert {e["logStreamName"] for e in found} == set(streams)
    with pytest.raises(ClientError) as err:
        logs.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/nope-ep")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"

    ctx.sm.delete_endpoint(EndpointName="Life-Ep")
    ctx.sm.get_waiter("endpoint_deleted").wait(
        EndpointName="Life-Ep", WaiterConfig={"Delay": 0.1, "MaxAttempts": 300})
    with pytest.raises(ClientError) as err:
        ctx.sm.describe_endpoint(EndpointName="Life-Ep")
    assert error_of(err.value) == ("ValidationException",
                                   f'Could not find endpoint "{arn}".')


def test_endpoint_that_cannot_start_is_failed_with_a_reason(ctx: Ctx) -> None:
    ctx.sm.create_model(ModelName="broken-model", ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": str(ctx.tmp / "no-such-project")})
    ctx.config("broken-config", "broken-model")
    ctx.sm.create_endpoint(EndpointName="broken-ep", EndpointConfigName="broken-config")
    with pytest.raises(WaiterError):  # the waiter's failure acceptor: status Failed
        ctx.wait_in_service("broken-ep")
    record = ctx.sm.describe_endpoint(EndpointName="broken-ep")
    assert record["EndpointStatus"] == "Failed"
    assert "no-such-project" in record["FailureReason"]
    failed = ctx.sm.list_endpoints(StatusEquals="Failed")["Endpoints"]
    assert "broken-ep" in [e["EndpointName"] for e in failed]


def test_missing_endpoint_messages(ctx: Ctx) -> None:
    for call in (lambda: ctx.sm.describe_endpoint(EndpointName="ghost"),
                 lambda: ctx.sm.delete_endpoint(EndpointName="ghost"),
                 lambda: ctx.sm.update_endpoint(EndpointName="ghost",
                                                EndpointConfigName="ghost")):
        with pytest.raises(ClientError) as err:
            call()
        code, message = error_of(err.value)
        assert code == "ValidationException" and "Could not find" in message


# -- transform jobs -------------------------------------------------------------------------


def transform_request(ctx: Ctx, name: str, model: str, lines: list[str]) -> dict[str, Any]:
    data = ctx.tmp / f"{name}-in"
    data.mkdir()
    (data / "rows.csv").write_text("".join(f"{line}\n" for line in lines))
    return {
        "TransformJobName": name, "ModelName": model,
        "TransformInput": {"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": data.as_uri()}},
            "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": (ctx.tmp / f"{name}-out").as_uri(),
                            "AssembleWith": "Line", "Accept": "application/json"},
        "TransformResources": {"InstanceType": "local", "InstanceCount": 1},
        "BatchStrategy": "SingleRecord",
    }


def wait_transform(ctx: Ctx, name: str) -> dict[str, Any]:
    ctx.sm.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    return dict(ctx.sm.describe_transform_job(TransformJobName=name))


def test_transform_job_create_describe_list(ctx: Ctx) -> None:
    ctx.model("tj-model")
    arn = ctx.sm.create_transform_job(**transform_request(ctx, "Tj-1", "tj-model", ["a", "b"]),
                                      Tags=[{"Key": "k", "Value": "v"}])["TransformJobArn"]
    assert arn == f"{ARN}:transform-job/tj-1"
    assert ctx.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "k", "Value": "v"}]
    record = wait_transform(ctx, "Tj-1")
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert record["ModelName"] == "tj-model"
    assert record["TransformInput"]["SplitType"] == "Line"
    output = (ctx.tmp / "Tj-1-out" / "rows.csv.out").read_text().splitlines()
    replies = [json.loads(line) for line in output]
    assert [r["body"] for r in replies] == ["a", "b"]  # one request per record, in order
    assert replies[0]["headers"]["Content-Type"] == "text/csv"
    assert replies[0]["headers"]["Accept"] == "application/json"

    listed = ctx.sm.list_transform_jobs(NameContains="Tj-", StatusEquals="Completed")
    [summary] = listed["TransformJobSummaries"]
    assert summary["TransformJobName"] == "Tj-1" and summary["TransformJobArn"] == arn
    assert summary["TransformJobStatus"] == "Completed"
    assert {"CreationTime", "TransformEndTime", "LastModifiedTime"} <= set(summary)
    assert ctx.sm.list_transform_jobs(NameContains="Tj-",
                                      StatusEquals="Failed")["TransformJobSummaries"] == []

    with pytest.raises(ClientError) as err:  # a finished job cannot be stopped
        ctx.sm.stop_transform_job(TransformJobName="Tj-1")
    code, message = error_of(err.value)
    assert code == "ValidationException" and "status Completed" in message


def test_transform_job_stop(ctx: Ctx) -> None:
    ctx.model("tj-slow-model")
    ctx.sm.create_transform_job(**transform_request(
        ctx, "tj-slow", "tj-slow-model", ["sleep:0.5"] * 40))
    ctx.sm.stop_transform_job(TransformJobName="tj-slow")
    record = wait_transform(ctx, "tj-slow")
    assert record["TransformJobStatus"] == "Stopped"


def test_transform_job_errors(ctx: Ctx) -> None:
    with pytest.raises(ClientError) as err:
        ctx.sm.create_transform_job(**transform_request(ctx, "tj-orphan", "no-model", ["x"]))
    code, message = error_of(err.value)
    assert code == "ValidationException" and "Could not find model" in message
    for call in (lambda: ctx.sm.describe_transform_job(TransformJobName="ghost"),
                 lambda: ctx.sm.stop_transform_job(TransformJobName="ghost")):
        with pytest.raises(ClientError) as err:
            call()
        assert error_of(err.value) == ("ValidationException", "Requested resource not found.")
