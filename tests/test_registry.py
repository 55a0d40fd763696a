"""The model registry through boto3's ``sagemaker`` client against a real server: model
package groups, versioned and unversioned packages, approval, lineage to the training job,
and deploying an approved version (CreateModel, then an endpoint that answers)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shipyard.control import ControlPlane
from shipyard.control.registry import SOURCE_MEMBER, Conflict
from shipyard.errors import ValidationError
from shipyard.runtimes import FakeBehaviour
from shipyard.settings import Settings
from tests.support.api import Api, delete_endpoints, serving
from tests.support.files import write_tar_gz
from tests.support.jobs import ACCOUNT, FAKE_IMAGE, ROLE, training_request
from tests.support.planes import fake_plane
from tests.support.workloads import serve_project

ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}"
ROLE_IDENTITY = f"arn:aws:iam::{ACCOUNT}:role/ShipyardExecutionRole"


class Ctx:
    def __init__(self, api: Api, plane: ControlPlane, tmp: Path) -> None:
        self.api, self.plane, self.tmp = api, plane, tmp
        self.sm = api.sm

    def group(self, name: str, **extra: Any) -> str:
        return str(self.sm.create_model_package_group(ModelPackageGroupName=name,
                                                      **extra)["ModelPackageGroupArn"])

    def version(self, group: str, image: str = FAKE_IMAGE, **extra: Any) -> str:
        extra.setdefault("InferenceSpecification", spec(image))
        return str(self.sm.create_model_package(ModelPackageGroupName=group,
                                                **extra)["ModelPackageArn"])

    def raw(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The answer's JSON as sent (boto3 drops members its model lacks)."""
        return self.api.post_target(f"SageMaker.{operation}", json.dumps(body).encode())


def spec(image: str = FAKE_IMAGE, url: str | None = None, **env: str) -> dict[str, Any]:
    container: dict[str, Any] = {"Image": image, "Environment": env}
    if url:
        container["ModelDataUrl"] = url
    return {"Containers": [container], "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
            "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large"],
            "SupportedTransformInstanceTypes": ["ml.m5.large"]}


def error_of(exc: ClientError) -> tuple[str, str]:
    return exc.response["Error"]["Code"], exc.response["Error"]["Message"]


def metrics_behaviour(spec_: Any) -> FakeBehaviour:
    return FakeBehaviour(logs=("loss=0.25",))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    data = tmp_path_factory.mktemp("registry")
    plane, _ = fake_plane(data, metrics_behaviour, api_port=0)
    with serving(plane.settings, plane) as api:
        yield Ctx(api, plane, data)


# -- groups ---------------------------------------------------------------------------------


def test_group_create_describe_list_tags_delete(ctx: Ctx) -> None:
    arn = ctx.group("Churn-Models", ModelPackageGroupDescription="churn, weekly",
                    Tags=[{"Key": "team", "Value": "ml"}])
    assert arn == f"{ARN}:model-package-group/churn-models"
    for name in ("Churn-Models", "churn-models", arn):
        record = ctx.sm.describe_model_package_group(ModelPackageGroupName=name)
        assert record["ModelPackageGroupName"] == "Churn-Models"
    assert record["ModelPackageGroupArn"] == arn
    assert record["ModelPackageGroupDescription"] == "churn, weekly"
    assert record["ModelPackageGroupStatus"] == "Completed"
    assert record["CreatedBy"] == {"IamIdentity": {
        "Arn": ROLE_IDENTITY, "PrincipalId": record["CreatedBy"]["IamIdentity"]["PrincipalId"]}}
    assert record["CreationTime"].timestamp() > time.time() - 60
    # Tags by ARN, as for any resource.
    assert ctx.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    ctx.sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "prod"}])
    ctx.sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    assert ctx.sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "prod"}]

    ctx.sm.delete_model_package_group(ModelPackageGroupName="Churn-Models")
    with pytest.raises(ClientError) as err:
        ctx.sm.describe_model_package_group(ModelPackageGroupName="Churn-Models")
    assert error_of(err.value) == ("ValidationException",
                                   f"ModelPackageGroup {arn} does not exist.")
    with pytest.raises(ClientError) as err:
        ctx.sm.list_tags(ResourceArn=arn)
    assert error_of(err.value)[0] == "ValidationException"
    # The name is free again.
    assert ctx.group("Churn-Models") == arn
    ctx.sm.delete_model_package_group(ModelPackageGroupName=arn)


def test_list_groups_filters_sorts_and_pages(ctx: Ctx) -> None:
    before = time.time()
    names = ["lg-b", "lg-a", "LG-c"]
    for name in names:
        ctx.group(name)
    listed = ctx.sm.list_model_package_groups(NameContains="lg-", MaxResults=100)[
        "ModelPackageGroupSummaryList"]
    # Default order: CreationTime, Ascending (botocore's model); NameContains ignores case.
    assert [g["ModelPackageGroupName"] for g in listed] == names
    assert set(listed[0]) == {"ModelPackageGroupName", "ModelPackageGroupArn", "CreationTime",
                              "ModelPackageGroupStatus"}
    by_name = ctx.sm.list_model_package_groups(NameContains="LG-", SortBy="Name",
                                               SortOrder="Descending")
    assert [g["ModelPackageGroupName"] for g in by_name["ModelPackageGroupSummaryList"]] == [
        "LG-c", "lg-b", "lg-a"]
    pages = ctx.sm.get_paginator("list_model_package_groups").paginate(
        NameContains="lg-", PaginationConfig={"PageSize": 2})
    sizes = [len(page["ModelPackageGroupSummaryList"]) for page in pages]
    assert sizes == [2, 1]
    assert ctx.sm.list_model_package_groups(
        NameContains="lg-", CreationTimeBefore=before - 60)["ModelPackageGroupSummaryList"] == []
    assert len(ctx.sm.list_model_package_groups(
        NameContains="lg-", CreationTimeAfter=before - 1)["ModelPackageGroupSummaryList"]) == 3


def test_duplicate_and_unknown_groups_get_aws_errors(ctx: Ctx) -> None:
    arn = ctx.group("dup-group")
    with pytest.raises(ClientError) as err:
        ctx.group("DUP-group")  # one ARN: one group
    assert error_of(err.value) == ("ValidationException",
                                   f"Model Package Group already exists: {arn}")
    missing = f"{ARN}:model-package-group/no-such-group"
    with pytest.raises(ClientError) as err:
        ctx.sm.describe_model_package_group(ModelPackageGroupName="no-such-group")
    assert error_of(err.value) == ("ValidationException",
                                   f"ModelPackageGroup {missing} does not exist.")
    with pytest.raises(ClientError) as err:
        ctx.version("no-such-group")
    assert error_of(err.value) == ("ValidationException",
                                   f"ModelPackageGroup {missing} does not exist.")
    with pytest.raises(ClientError) as err:
        ctx.sm.delete_model_package_group(ModelPackageGroupName="no-such-group")
    assert error_of(err.value)[0] == "ValidationException"
    # An ARN of another account or region names nothing here.
    with pytest.raises(ClientError) as err:
        ctx.sm.describe_model_package_group(
            ModelPackageGroupName="arn:aws:sagemaker:eu-west-1:123456789012:"
                                  "model-package-group/dup-group")
    assert error_of(err.value)[0] == "ValidationException"
    assert ctx.sm.list_model_packages(ModelPackageGroupName="dup-group")[
        "ModelPackageSummaryList"] == []


def test_a_group_holding_versions_cannot_be_deleted(ctx: Ctx) -> None:
    ctx.group("held")
    first = ctx.version("held")
    with pytest.raises(ClientError) as err:
        ctx.sm.delete_model_package_group(ModelPackageGroupName="held")
    code, message = error_of(err.value)
    assert code == "ConflictException"
    assert "holds 1 model package version" in message
    assert ctx.sm.describe_model_package_group(ModelPackageGroupName="held")[
        "ModelPackageGroupStatus"] == "Completed"
    ctx.sm.delete_model_package(ModelPackageName=first)
    ctx.sm.delete_model_package_group(ModelPackageGroupName="held")


# -- versions -------------------------------------------------------------------------------


def test_versions_are_numbered_and_described_whole(ctx: Ctx) -> None:
    ctx.group("Numbered")
    metrics = {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                               "S3Uri": "s3://bucket/stats.json"}}}
    source = {"SourceAlgorithms": [{"AlgorithmName": "xgboost",
                                    "ModelDataUrl": "s3://bucket/model.tar.gz"}]}
    arns = [ctx.version("Numbered", ModelPackageDescription=f"v{i}", ModelMetrics=metrics,
                        SourceAlgorithmSpecification=source, Domain="MACHINE_LEARNING",
                        Task="REGRESSION", SamplePayloadUrl="s3://bucket/sample.csv",
                        MetadataProperties={"CommitId": "abc123", "Repository": "git://r"},
                        CustomerMetadataProperties={"owner": "ana"})
            for i in range(1, 4)]
    assert arns == [f"{ARN}:model-package/numbered/{i}" for i in (1, 2, 3)]
    for name in (arns[1], "Numbered/2", "numbered/02"):
        record = ctx.sm.describe_model_package(ModelPackageName=name)
        assert record["ModelPackageArn"] == arns[1]
    assert record["ModelPackageName"] == "Numbered"
    assert record["ModelPackageGroupName"] == "Numbered"
    assert record["ModelPackageVersion"] == 2
    assert record["ModelPackageDescription"] == "v2"
    assert record["ModelPackageStatus"] == "Completed"
    assert record["ModelPackageStatusDetails"] == {"ValidationStatuses": [],
                                                   "ImageScanStatuses": []}
    assert record["ModelApprovalStatus"] == "PendingManualApproval"
    assert record["CreatedBy"]["IamIdentity"]["Arn"] == ROLE_IDENTITY
    assert record["LastModifiedTime"] == record["CreationTime"]
    assert record["InferenceSpecification"] == spec()
    assert record["ModelMetrics"] == metrics
    assert record["SourceAlgorithmSpecification"] == source
    assert (record["Domain"], record["Task"], record["SamplePayloadUrl"]) == (
        "MACHINE_LEARNING", "REGRESSION", "s3://bucket/sample.csv")
    assert record["MetadataProperties"] == {"CommitId": "abc123", "Repository": "git://r"}
    assert record["CustomerMetadataProperties"] == {"owner": "ana"}
    assert record["CertifyForMarketplace"] is False
    # A deleted newest version's number is not given out again.
    ctx.sm.delete_model_package(ModelPackageName=arns[2])
    assert ctx.version("Numbered").endswith("/numbered/4")
    with pytest.raises(ClientError) as err:
        ctx.sm.describe_model_package(ModelPackageName=arns[2])
    assert error_of(err.value) == ("ValidationException",
                                   f"ModelPackage {arns[2]} does not exist.")


def test_concurrent_creates_get_distinct_consecutive_versions(tmp_path: Path) -> None:
    # Two planes on one data directory stand for two server processes.
    first, _ = fake_plane(tmp_path)
    second = ControlPlane(first.settings, first.ctx.runtime)
    try:
        first.create("model-package-group", {"ModelPackageGroupName": "race"})
        got: list[str] = []
        errors: list[BaseException] = []

        def register(plane: ControlPlane) -> None:
            try:
                for _ in range(5):
                    arn = plane.create("model-package", {
                        "ModelPackageGroupName": "race",
                        "InferenceSpecification": spec()})["ModelPackageArn"]
                    got.append(arn)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=register, args=(p,))
                   for p in (first, second) * 4]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert sorted(int(a.rsplit("/", 1)[1]) for a in got) == list(range(1, 41))
        listed = first.list_resources("model-package", group="race")
        assert [r["ModelPackageVersion"] for r in listed] == list(range(1, 41))
    finally:
        second.close()
        first.close()


def test_unversioned_packages(ctx: Ctx) -> None:
    arn = ctx.sm.create_model_package(
        ModelPackageName="Standalone", InferenceSpecification=spec(),
        ModelApprovalStatus="PendingManualApproval")["ModelPackageArn"]
    assert arn == f"{ARN}:model-package/standalone"
    record = ctx.sm.describe_model_package(ModelPackageName="standalone")
    assert record["ModelPackageName"] == "Standalone"
    assert "ModelPackageGroupName" not in record and "ModelPackageVersion" not in record
    assert "ModelApprovalStatus" not in record  # "does not apply to unversioned models"
    with pytest.raises(ClientError) as err:
        ctx.sm.create_model_package(ModelPackageName="Standalone",
                                    InferenceSpecification=spec())
    assert error_of(err.value) == ("ValidationException",
                                   f"ModelPackage already exists: {arn}")
    with pytest.raises(ClientError) as err:
        ctx.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    code, message = error_of(err.value)
    assert code == "ValidationException" and "unversioned model package" in message
    ctx.group("typed")
    versioned = ctx.version("typed")
    names = {s["ModelPackageArn"] for s in ctx.sm.list_model_packages(
        MaxResults=100)["ModelPackageSummaryList"]}
    assert arn in names and versioned not in names  # Unversioned is the default type
    both = {s["ModelPackageArn"] for s in ctx.sm.list_model_packages(
        ModelPackageType="Both", MaxResults=100)["ModelPackageSummaryList"]}
    assert {arn, versioned} <= both
    only_versions = {s["ModelPackageArn"] for s in ctx.sm.list_model_packages(
        ModelPackageType="Versioned", MaxResults=100)["ModelPackageSummaryList"]}
    assert versioned in only_versions and arn not in only_versions


def test_list_packages_filters_sorts_and_pages(ctx: Ctx) -> None:
    ctx.group("listed-a")
    ctx.group("listed-b")
    a = [ctx.version("listed-a") for _ in range(3)]
    b = ctx.version("listed-b")
    ctx.sm.update_model_package(ModelPackageArn=a[1], ModelApprovalStatus="Approved")

    def arns(**filters: Any) -> list[str]:
        return [s["ModelPackageArn"] for s in ctx.sm.list_model_packages(
            MaxResults=100, **filters)["ModelPackageSummaryList"]]

    assert arns(ModelPackageGroupName="listed-a") == a
    assert arns(ModelPackageGroupName=f"{ARN}:model-package-group/listed-a") == a
    assert arns(ModelPackageGroupName="listed-a", SortOrder="Descending") == a[::-1]
    assert arns(ModelPackageGroupName="listed-a", ModelApprovalStatus="Approved") == [a[1]]
    assert arns(ModelPackageGroupName="listed-a",
                ModelApprovalStatus="PendingManualApproval") == [a[0], a[2]]
    assert arns(ModelPackageType="Versioned", NameContains="LISTED-") == [*a, b]
    assert arns(ModelPackageType="Versioned", NameContains="listed-", SortBy="Name",
                SortOrder="Descending") == [b, *a[::-1]]
    summary = ctx.sm.list_model_packages(ModelPackageGroupName="listed-a")[
        "ModelPackageSummaryList"][0]
    assert set(summary) == {"ModelPackageName", "ModelPackageGroupName", "ModelPackageVersion",
                            "ModelPackageArn", "CreationTime", "ModelPackageStatus",
                            "ModelApprovalStatus", "ModelPackageRegistrationType"}
    pages = list(ctx.sm.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName="listed-a", PaginationConfig={"PageSize": 2}))
    assert [len(p["ModelPackageSummaryList"]) for p in pages] == [2, 1]
    assert "NextToken" not in pages[-1]


# -- approval and updates -------------------------------------------------------------------


def test_approval_records_who_and_when(ctx: Ctx) -> None:
    ctx.group("approvals")
    arn = ctx.version("approvals")
    created = ctx.sm.describe_model_package(ModelPackageName=arn)
    time.sleep(0.01)
    assert ctx.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                                       ApprovalDescription="metrics reviewed")[
        "ModelPackageArn"] == arn
    record = ctx.sm.describe_model_package(ModelPackageName=arn)
    assert record["ModelApprovalStatus"] == "Approved"
    assert record["ApprovalDescription"] == "metrics reviewed"
    assert record["LastModifiedTime"] > created["LastModifiedTime"]
    assert record["LastModifiedBy"]["IamIdentity"]["Arn"] == ROLE_IDENTITY
    assert record["CreationTime"] == created["CreationTime"]
    # A decision can be revised: rejected, approved again.
    for status in ("Rejected", "Approved"):
        ctx.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
        assert ctx.sm.describe_model_package(ModelPackageName=arn)[
            "ModelApprovalStatus"] == status
    # Approving a deleted version, or one that never was: AWS's not-found.
    ctx.sm.delete_model_package(ModelPackageName=arn)
    for gone in (arn, f"{ARN}:model-package/approvals/99"):
        with pytest.raises(ClientError) as err:
            ctx.sm.update_model_package(ModelPackageArn=gone, ModelApprovalStatus="Approved")
        assert error_of(err.value) == ("ValidationException",
                                       f"ModelPackage {gone} does not exist.")


def test_updates_change_what_they_name_and_nothing_else(ctx: Ctx) -> None:
    ctx.group("updates")
    arn = ctx.version("updates", CustomerMetadataProperties={"a": "1", "b": "2"})
    before = ctx.sm.describe_model_package(ModelPackageName=arn)
    ctx.sm.update_model_package(
        ModelPackageArn=arn, CustomerMetadataProperties={"c": "3", "a": "10"},
        CustomerMetadataPropertiesToRemove=["b"],
        AdditionalInferenceSpecificationsToAdd=[{"Name": "gpu", **{
            k: v for k, v in spec("example/serve-gpu:1").items()
            if k != "SupportedRealtimeInferenceInstanceTypes"}}],
        ModelCard={"ModelCardContent": "{}", "ModelCardStatus": "Draft"},
        ModelLifeCycle={"Stage": "Staging", "StageStatus": "InProgress"},
        SourceUri="git://repo/model")
    after = ctx.sm.describe_model_package(ModelPackageName=arn)
    assert after["CustomerMetadataProperties"] == {"a": "10", "c": "3"}
    assert [s["Name"] for s in after["AdditionalInferenceSpecifications"]] == ["gpu"]
    assert after["ModelCard"] == {"ModelCardContent": "{}", "ModelCardStatus": "Draft"}
    assert after["ModelLifeCycle"] == {"Stage": "Staging", "StageStatus": "InProgress"}
    assert after["SourceUri"] == "git://repo/model"
    assert after["InferenceSpecification"] == before["InferenceSpecification"]
    assert after["ModelApprovalStatus"] == "PendingManualApproval"

    # A version's contents are fixed: its InferenceSpecification cannot be replaced...
    with pytest.raises(ClientError) as err:
        ctx.sm.update_model_package(ModelPackageArn=arn,
                                    InferenceSpecification=spec("example/other:1"))
    assert "cannot be changed" in error_of(err.value)[1]
    # ...and an update refused for one reason changes nothing, approval included.
    with pytest.raises(ClientError) as err:
        ctx.sm.update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus="Approved",
            AdditionalInferenceSpecificationsToAdd=[{"Name": "gpu", "Containers": [
                {"Image": "example/serve-gpu:2"}]}])
    assert "already has an additional inference specification named 'gpu'" in error_of(
        err.value)[1]
    with pytest.raises(ClientError) as err:
        ctx.sm.update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus="Approved",
            CustomerMetadataProperties={f"k{i}": "v" for i in range(49)})
    assert "the limit is 50" in error_of(err.value)[1]
    unchanged = ctx.sm.describe_model_package(ModelPackageName=arn)
    unchanged.pop("ResponseMetadata"), after.pop("ResponseMetadata")
    assert unchanged == after
    with pytest.raises(ClientError) as err:
        ctx.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Maybe")
    assert error_of(err.value) == (
        "ValidationException",
        "1 validation error detected: Value 'Maybe' at 'modelApprovalStatus' failed to satisfy "
        "constraint: Member must satisfy enum value set: [Approved, Rejected, "
        "PendingManualApproval]")


def test_bad_creates_are_refused_and_write_nothing(ctx: Ctx) -> None:
    ctx.group("strict")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ModelPackageName": "x", "ModelPackageGroupName": "strict"},
         "Both ModelPackageName and ModelPackageGroupName are provided"),
        ({}, "Value null at 'modelPackageGroupName'"),
        ({"ModelPackageGroupName": "strict",
          "InferenceSpecification": {"Containers": [{"ModelDataUrl": "s3://b/m.tar.gz"}]}},
         "Value null at 'inferenceSpecification.containers.1.member.image'"),
        ({"ModelPackageGroupName": "strict", "ModelApprovalStatus": "Yes"},
         "at 'modelApprovalStatus' failed to satisfy constraint"),
        ({"ModelPackageGroupName": "strict", "InferenceSpecification": {
            "Containers": [{"Image": FAKE_IMAGE, "Environment": {"BAD-KEY": "x"}}]}},
         "at 'inferenceSpecification.containers.1.member.environment'"),
        ({"ModelPackageGroupName": "strict", "InferenceSpecification": {
            "Containers": [{"Image": FAKE_IMAGE, "Environment": {"OK": "a\x00b"}}]}},
         "Environment value of OK contains a NUL character"),
        ({"ModelPackageName": "with-source", "SourceUri": "s3://b/x"},
         "unversioned model package cannot be created with SourceUri"),
    ]
    for request, message in cases:
        with pytest.raises(ClientError) as err:
            ctx.sm.create_model_package(**request)
        code, text = error_of(err.value)
        assert code == "ValidationException" and message in text, (request, text)
    assert ctx.sm.list_model_packages(ModelPackageGroupName="strict")[
        "ModelPackageSummaryList"] == []
    # Nothing was taken either: the first version is still number 1.
    assert ctx.version("strict").endswith("/strict/1")


def test_a_client_token_makes_a_create_idempotent(ctx: Ctx) -> None:
    ctx.group("tokens")
    first = ctx.version("tokens", ClientToken="token-1")
    assert ctx.version("tokens", ClientToken="token-1") == first
    assert ctx.version("tokens", ClientToken="token-2") != first
    unversioned = ctx.sm.create_model_package(ModelPackageName="tokened", ClientToken="t",
                                              InferenceSpecification=spec())
    again = ctx.sm.create_model_package(ModelPackageName="tokened", ClientToken="t",
                                        InferenceSpecification=spec())
    assert again["ModelPackageArn"] == unversioned["ModelPackageArn"]


# -- lineage --------------------------------------------------------------------------------


def test_the_training_job_that_produced_a_version_is_recorded(ctx: Ctx) -> None:
    ctx.sm.create_training_job(**training_request("lineage-job", ctx.tmp / "lineage"))
    ctx.sm.get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName="lineage-job", WaiterConfig={"Delay": 0.1, "MaxAttempts": 300})
    job = ctx.sm.describe_training_job(TrainingJobName="lineage-job")
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    ctx.group("lineage")
    # Found by its model data (estimator.register() passes the job's archive), file:// or not.
    for url in (artifact, artifact.removeprefix("file://")):
        arn = ctx.version("lineage", InferenceSpecification=spec(url=url))
        record = ctx.sm.describe_model_package(ModelPackageName=arn)
        assert record["MetadataProperties"] == {"GeneratedBy": job["TrainingJobArn"]}
        status, raw = ctx.raw("DescribeModelPackage", {"ModelPackageName": arn})
        assert status == 200 and raw[SOURCE_MEMBER] == job["TrainingJobArn"]
    # Named by the request: GeneratedBy is the caller's, the job still found.
    arn = ctx.version("lineage", MetadataProperties={"GeneratedBy": "my-pipeline"},
                      CustomerMetadataProperties={"TrainingJobName": "lineage-job"})
    status, raw = ctx.raw("DescribeModelPackage", {"ModelPackageName": arn})
    assert raw["MetadataProperties"] == {"GeneratedBy": "my-pipeline"}
    assert raw[SOURCE_MEMBER] == job["TrainingJobArn"]
    arn = ctx.version("lineage", MetadataProperties={"GeneratedBy": job["TrainingJobArn"]})
    assert ctx.raw("DescribeModelPackage", {"ModelPackageName": arn})[1][
        SOURCE_MEMBER] == job["TrainingJobArn"]
    # No match: nothing recorded.
    arn = ctx.version("lineage", InferenceSpecification=spec(url="s3://elsewhere/m.tar.gz"))
    record = ctx.raw("DescribeModelPackage", {"ModelPackageName": arn})[1]
    assert SOURCE_MEMBER not in record and "MetadataProperties" not in record
    # "Which training job produced this version" through Search.
    found = ctx.sm.search(Resource="ModelPackage", SearchExpression={"Filters": [
        {"Name": SOURCE_MEMBER, "Operator": "Equals", "Value": job["TrainingJobArn"]}]})
    assert len(found["Results"]) == 4


def test_source_uri_naming_a_model_fills_the_inference_specification(ctx: Ctx) -> None:
    model_arn = ctx.sm.create_model(ModelName="Source-Model", ExecutionRoleArn=ROLE,
                                    PrimaryContainer={"Image": FAKE_IMAGE,
                                                      "ModelDataUrl": "s3://b/m.tar.gz",
                                                      "Environment": {"K": "v"}})["ModelArn"]
    ctx.group("sourced")
    arn = ctx.sm.create_model_package(ModelPackageGroupName="sourced",
                                      SourceUri=model_arn)["ModelPackageArn"]
    record = ctx.sm.describe_model_package(ModelPackageName=arn)
    assert record["SourceUri"] == model_arn
    assert record["InferenceSpecification"] == {"Containers": [
        {"Image": FAKE_IMAGE, "ModelDataUrl": "s3://b/m.tar.gz", "Environment": {"K": "v"}}]}


# -- deploying ------------------------------------------------------------------------------


def test_create_model_resolves_a_package_and_needs_approval(ctx: Ctx) -> None:
    ctx.group("deploy")
    arn = ctx.version("deploy", InferenceSpecification=spec(url="s3://b/v1.tar.gz", A="1",
                                                             B="package"))
    with pytest.raises(ClientError) as err:
        ctx.sm.create_model(ModelName="from-pending", ExecutionRoleArn=ROLE,
                            Containers=[{"ModelPackageName": arn}])
    code, message = error_of(err.value)
    assert code == "ValidationException"
    assert message.startswith(f"Model package {arn} is not approved for deployment (its "
                              "ModelApprovalStatus is PendingManualApproval)")
    with pytest.raises(ClientError):
        ctx.sm.describe_model(ModelName="from-pending")
    ctx.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    with pytest.raises(ClientError) as err:
        ctx.sm.create_model(ModelName="from-rejected", ExecutionRoleArn=ROLE,
                            PrimaryContainer={"ModelPackageName": arn})
    assert "ModelApprovalStatus is Rejected" in error_of(err.value)[1]

    ctx.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    # The SDK's ModelPackage.deploy(): Containers=[{ModelPackageName, Environment}].
    ctx.sm.create_model(ModelName="from-approved", ExecutionRoleArn=ROLE,
                        Containers=[{"ModelPackageName": arn, "Environment": {"B": "model"}}])
    [container] = ctx.sm.describe_model(ModelName="from-approved")["Containers"]
    assert container == {"Image": FAKE_IMAGE, "ModelDataUrl": "s3://b/v1.tar.gz",
                         "Environment": {"A": "1", "B": "model"}, "ModelPackageName": arn,
                         "Mode": "SingleModel"}
    ctx.sm.create_model(ModelName="from-name", ExecutionRoleArn=ROLE,
                        PrimaryContainer={"ModelPackageName": "deploy/1"})
    assert ctx.sm.describe_model(ModelName="from-name")["PrimaryContainer"]["Image"] == (
        FAKE_IMAGE)
    # Unversioned packages carry no approval: they deploy as they are.
    ctx.sm.create_model_package(ModelPackageName="deploy-standalone",
                                InferenceSpecification=spec())
    ctx.sm.create_model(ModelName="from-standalone", ExecutionRoleArn=ROLE,
                        Containers=[{"ModelPackageName": "deploy-standalone"}])

    bad: list[tuple[dict[str, Any], str]] = [
        ({"ModelPackageName": arn, "Image": FAKE_IMAGE}, "either Image or ModelPackageName"),
        ({"ModelPackageName": "deploy/7"}, f"ModelPackage {ARN}:model-package/deploy/7 does "
                                           "not exist."),
        ({"ModelPackageName": arn, "InferenceSpecificationName": "gpu"},
         "no additional inference specification named 'gpu'"),
    ]
    for container_, message in bad:
        with pytest.raises(ClientError) as err:
            ctx.sm.create_model(ModelName="bad-from-package", ExecutionRoleArn=ROLE,
                                Containers=[container_])
        assert message in error_of(err.value)[1]
    empty = ctx.sm.create_model_package(ModelPackageGroupName="deploy")["ModelPackageArn"]
    ctx.sm.update_model_package(ModelPackageArn=empty, ModelApprovalStatus="Approved")
    with pytest.raises(ClientError) as err:
        ctx.sm.create_model(ModelName="bad-from-package", ExecutionRoleArn=ROLE,
                            Containers=[{"ModelPackageName": empty}])
    assert "has no InferenceSpecification" in error_of(err.value)[1]


def test_an_approved_version_deploys_to_an_endpoint_that_answers(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path_factory.mktemp("deploy")
    settings = Settings.load({"data_dir": str(data / "state"), "api_port": 0,
                              "runtime": "process", "stop_grace_seconds": 2,
                              "endpoint_startup_timeout_seconds": 20}, environ={})
    project = serve_project(data / "project")
    archive = write_tar_gz(data / "model.tar.gz", {"weights.txt": "42"})
    plane = ControlPlane(settings)
    with serving(settings, plane) as api:
        try:
            sm = api.sm
            sm.create_model_package_group(ModelPackageGroupName="served")
            arn = sm.create_model_package(
                ModelPackageGroupName="served",
                InferenceSpecification=spec(str(project), archive.as_uri(), GREETING="hi"),
            )["ModelPackageArn"]
            sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
            sm.create_model(ModelName="served-model", ExecutionRoleArn=ROLE,
                            Containers=[{"ModelPackageName": arn}])
            sm.create_endpoint_config(EndpointConfigName="served-config", ProductionVariants=[{
                "VariantName": "AllTraffic", "ModelName": "served-model",
                "InitialInstanceCount": 1, "InstanceType": "local"}])
            sm.create_endpoint(EndpointName="served", EndpointConfigName="served-config")
            sm.get_waiter("endpoint_in_service").wait(
                EndpointName="served", WaiterConfig={"Delay": 0.1, "MaxAttempts": 300})
            reply = api.rt.invoke_endpoint(EndpointName="served", Body=b"1,2")
            assert json.loads(reply["Body"].read())["body"] == "1,2"
        finally:
            delete_endpoints(api, plane)


# -- the door, from Python ------------------------------------------------------------------


def test_the_plane_answers_registry_errors_as_shipyard_errors(tmp_path: Path) -> None:
    plane, _ = fake_plane(tmp_path)
    try:
        plane.create("model-package-group", {"ModelPackageGroupName": "py"})
        arn = plane.create("model-package", {"ModelPackageGroupName": "py",
                                              "InferenceSpecification": spec()})[
            "ModelPackageArn"]
        with pytest.raises(Conflict):
            plane.delete("model-package-group", "py")
        assert plane.lookup("model-package", arn) is not None
        assert plane.lookup("model-package", "py/9") is None
        with pytest.raises(ValidationError, match="does not exist"):
            plane.describe("model-package-group", "nope")
        with pytest.raises(ValidationError, match="does not exist"):
            plane.describe("model-package", "not a name")
    finally:
        plane.close()
