"""SageMaker's Search through boto3 against a real server: training jobs (hyperparameters,
final metrics, tags, nested properties), model packages and groups, endpoints, tuning jobs
and models (ModelDashboardModel records); every operator, nesting, sub-expressions, sort,
pages, and AWS's refusals."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shipyard.control import ControlPlane
from shipyard.runtimes import FakeBehaviour
from shipyard.runtimes.base import ContainerSpec
from tests.support.api import Api, serving
from tests.support.jobs import FAKE_IMAGE, channel, training_request
from tests.support.planes import fake_plane

JOBS = 12
METRICS = [{"Name": "loss", "Regex": r"loss=(\S+)"}, {"Name": "accuracy", "Regex": r"acc=(\S+)"}]


def behaviour(spec: ContainerSpec) -> FakeBehaviour:
    """loss = 1 / (epochs + 1); accuracy = epochs / 20, except at 0 epochs (never printed);
    a job with ``fail`` set fails."""
    path = Path(spec.root_dir or "") / "input" / "config" / "hyperparameters.json"
    hp = json.loads(path.read_text()) if path.exists() else {}
    if hp.get("fail"):
        return FakeBehaviour(exit_code=1, logs=("broken",))
    epochs = int(hp.get("epochs", 0))
    logs = [f"loss={1 / (epochs + 1):.4f}"]
    if epochs:
        logs.append(f"acc={epochs / 20:.4f}")
    return FakeBehaviour(logs=tuple(logs))


class Ctx:
    def __init__(self, api: Api, plane: ControlPlane, tmp: Path) -> None:
        self.api, self.plane, self.tmp = api, plane, tmp
        self.sm = api.sm

    def names(self, resource: str = "TrainingJob", expression: dict[str, Any] | None = None,
              **request: Any) -> list[str]:
        """Every matching record's name, in the answer's order (all pages)."""
        if expression is not None:
            request["SearchExpression"] = expression
        member = {"TrainingJob": "TrainingJobName", "ModelPackage": "ModelPackageArn",
                  "ModelPackageGroup": "ModelPackageGroupName", "Endpoint": "EndpointName",
                  "HyperParameterTuningJob": "HyperParameterTuningJobName"}[resource]
        found: list[str] = []
        for page in self.sm.get_paginator("search").paginate(Resource=resource, **request):
            found += [result[resource][member] for result in page["Results"]]
        return found

    def error(self, **request: Any) -> tuple[str, str]:
        request.setdefault("Resource", "TrainingJob")
        with pytest.raises(ClientError) as err:
            self.sm.search(**request)
        return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def where(*filters: dict[str, Any], **expression: Any) -> dict[str, Any]:
    return {"Filters": list(filters), **expression} if filters else expression


def f(name: str, op: str | None = None, value: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"Name": name}
    if op is not None:
        found["Operator"] = op
    if value is not None:
        found["Value"] = value
    return found


def job(i: int) -> str:
    return f"st-{i:02d}"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    data = tmp_path_factory.mktemp("search")
    plane, _ = fake_plane(data, behaviour, api_port=0)
    with serving(plane.settings, plane) as api:
        sm = api.sm
        (data / "train").mkdir()
        (data / "train" / "a.csv").write_text("1\n")
        (data / "valid").mkdir()
        (data / "valid" / "b.csv").write_text("1\n")
        for i in range(JOBS):
            channels = [channel((data / "train").as_uri())]
            if i % 3 == 0:
                channels.append(channel((data / "valid").as_uri(), name="validation"))
            tags = [{"Key": "team", "Value": "a" if i % 2 else "b"}]
            if i < 4:
                tags.append({"Key": "owner", "Value": f"user{i}"})
            request = training_request(
                job(i), data, data=data / "train", Tags=tags,
                instance_type="ml.c5.xlarge" if i >= 8 else "ml.m5.large",
                HyperParameters={"epochs": str(i), "lr": f"{i / 10:.1f}",
                                 "optimizer": "adam" if i % 2 else "sgd"},
                InputDataConfig=channels)
            request["AlgorithmSpecification"]["MetricDefinitions"] = METRICS
            sm.create_training_job(**request)
            plane.wait("training", job(i), timeout=30)
        failing = training_request("st-failed", data, HyperParameters={"fail": "1"})
        sm.create_training_job(**failing)
        plane.wait("training", "st-failed", timeout=30)
        yield Ctx(api, plane, data)


# -- operators ------------------------------------------------------------------------------


def test_text_equals_not_equals_contains_and_in(ctx: Ctx) -> None:
    assert ctx.names(expression=where(f("TrainingJobName", "Equals", "st-03"))) == ["st-03"]
    assert ctx.names(expression=where(f("TrainingJobName", value="st-03"))) == ["st-03"]
    completed = ctx.names(expression=where(f("TrainingJobStatus", "Equals", "Completed")),
                          SortBy="TrainingJobName", SortOrder="Ascending")
    assert completed == [job(i) for i in range(JOBS)]
    assert ctx.names(expression=where(f("TrainingJobStatus", "NotEquals", "Completed"))) == [
        "st-failed"]
    assert ctx.names(expression=where(f("TrainingJobName", "Contains", "-1")),
                     SortBy="TrainingJobName", SortOrder="Ascending") == ["st-10", "st-11"]
    assert ctx.names(expression=where(f("TrainingJobStatus", "In", "Failed, Stopped"))) == [
        "st-failed"]
    assert ctx.names(expression=where(f("ResourceConfig.InstanceType", "Equals",
                                        "ml.c5.xlarge")),
                     SortBy="TrainingJobName", SortOrder="Ascending") == [
        job(i) for i in range(8, 12)]


def test_numbers_timestamps_and_booleans(ctx: Ctx) -> None:
    by_name = {"SortBy": "TrainingJobName", "SortOrder": "Ascending"}
    assert ctx.names(expression=where(f("Metrics.loss", "LessThan", "0.1")), **by_name) == [
        "st-10", "st-11"]  # 1/11, 1/12
    assert ctx.names(expression=where(f("Metrics.accuracy", "GreaterThanOrEqualTo", "0.5")),
                     **by_name) == ["st-10", "st-11"]
    assert ctx.names(expression=where(f("Metrics.accuracy", "LessThanOrEqualTo", "0.05")),
                     **by_name) == ["st-01"]  # st-00 has no accuracy at all
    assert len(ctx.names(expression=where(f("ResourceConfig.InstanceCount", "Equals",
                                            "1")))) == JOBS + 1
    # Between st-05's creation and st-06's, as ISO 8601 (UTC) and as epoch seconds.
    created = [ctx.sm.describe_training_job(TrainingJobName=job(i))["CreationTime"]
               for i in (5, 6)]
    between = created[0] + (created[1] - created[0]) / 2
    iso = between.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat()
    assert ctx.names(expression=where(f("CreationTime", "GreaterThanOrEqualTo", iso)),
                     **by_name) == [job(i) for i in range(6, JOBS)] + ["st-failed"]
    assert ctx.names(expression=where(f("CreationTime", "LessThan", str(between.timestamp()))),
                     **by_name) == [job(i) for i in range(6)]
    assert ctx.names(expression=where(f("CreationTime", "LessThan", "2000-01-01T00:00:00"))) == []
    assert len(ctx.names(expression=where(f("EnableManagedSpotTraining", "Equals",
                                            "false")))) == JOBS + 1


def test_hyperparameters_compare_as_numbers_when_the_value_is_one(ctx: Ctx) -> None:
    by_name = {"SortBy": "TrainingJobName", "SortOrder": "Ascending"}
    # A decimal value: decimal comparison ("0.3" < 0.35; "1.1" is not, though "1.1" < "0.35"
    # as text would differ).
    assert ctx.names(expression=where(f("HyperParameters.lr", "LessThan", "0.35")),
                     **by_name) == ["st-00", "st-01", "st-02", "st-03"]
    # An integer value: the hyperparameter read as an integer (1.1 is 1).
    assert ctx.names(expression=where(f("HyperParameters.lr", "Equals", "1")),
                     **by_name) == ["st-10", "st-11"]
    assert ctx.names(expression=where(f("HyperParameters.epochs", "GreaterThan", "9")),
                     **by_name) == ["st-10", "st-11"]
    assert ctx.names(expression=where(f("HyperParameters.optimizer", "Equals", "adam")),
                     **by_name) == [job(i) for i in range(1, JOBS, 2)]
    assert ctx.names(expression=where(f("HyperParameters.epochs", "In", "2,4")),
                     **by_name) == ["st-02", "st-04"]
    assert ctx.error(SearchExpression=where(f("HyperParameters.optimizer", "GreaterThan",
                                              "adam")))[1] == (
        "Operator GreaterThan on the hyperparameter 'HyperParameters.optimizer' needs a "
        "numeric Value, not 'adam'.")


def test_tags_exists_and_not_exists(ctx: Ctx) -> None:
    by_name = {"SortBy": "TrainingJobName", "SortOrder": "Ascending"}
    assert ctx.names(expression=where(f("Tags.owner", "Exists")), **by_name) == [
        "st-00", "st-01", "st-02", "st-03"]
    assert ctx.names(expression=where(f("Tags.owner", "NotExists"), f("Tags.team", "Equals",
                                                                     "a")),
                     **by_name) == [job(i) for i in range(5, JOBS, 2)]
    assert ctx.names(expression=where(f("Tags.owner", "Contains", "user2"))) == ["st-02"]
    assert ctx.names(expression=where(f("FailureReason", "Exists"))) == ["st-failed"]
    assert "st-failed" not in ctx.names(expression=where(f("ModelArtifacts", "NotExists")))
    [result] = ctx.sm.search(Resource="TrainingJob", SearchExpression=where(
        f("TrainingJobName", "Equals", "st-01")))["Results"]
    assert sorted(t["Key"] for t in result["TrainingJob"]["Tags"]) == ["owner", "team"]
    assert result["TrainingJob"]["HyperParameters"]["epochs"] == "1"


def test_nested_property_names_and_nested_filters(ctx: Ctx) -> None:
    by_name = {"SortBy": "TrainingJobName", "SortOrder": "Ascending"}
    with_validation = ["st-00", "st-03", "st-06", "st-09"]
    # A property of a list's items matches when one item does.
    assert ctx.names(expression=where(f("InputDataConfig.ChannelName", "Equals",
                                        "validation")), **by_name) == with_validation
    # NestedFilters: one and the same item satisfies every filter.
    nested = {"NestedFilters": [{"NestedPropertyName": "InputDataConfig", "Filters": [
        f("InputDataConfig.ChannelName", "Equals", "training"),
        f("InputDataConfig.DataSource.S3DataSource.S3Uri", "Contains", "/valid")]}]}
    assert ctx.names(expression=nested) == []
    nested["NestedFilters"][0]["Filters"][0]["Value"] = "validation"
    assert ctx.names(expression=nested, **by_name) == with_validation
    # An item's object property, asked only whether it is there; NotEquals within an item.
    present = {"NestedFilters": [{"NestedPropertyName": "InputDataConfig", "Filters": [
        f("InputDataConfig.DataSource", "Exists"),
        f("InputDataConfig.ChannelName", "NotEquals", "training")]}]}
    assert ctx.names(expression=present, **by_name) == with_validation
    present["NestedFilters"][0]["Filters"][0]["Operator"] = "NotExists"
    assert ctx.names(expression=present) == []
    assert ctx.names(expression=where(f("SecondaryStatusTransitions.Status", "Equals",
                                        "Uploading")), **by_name) == [
        job(i) for i in range(JOBS)]


def test_sub_expressions_join_with_and_or(ctx: Ctx) -> None:
    by_name = {"SortBy": "TrainingJobName", "SortOrder": "Ascending"}
    either = {"Operator": "Or", "SubExpressions": [
        where(f("HyperParameters.epochs", "Equals", "1")),
        where(f("HyperParameters.epochs", "Equals", "10"))]}
    assert ctx.names(expression=either, **by_name) == ["st-01", "st-10"]
    both = {"Filters": [f("Tags.team", "Equals", "b")], "SubExpressions": [either]}
    assert ctx.names(expression=both) == ["st-10"]
    assert ctx.names(expression={"Operator": "Or", "Filters": [
        f("TrainingJobName", "Equals", "st-02"), f("TrainingJobName", "Equals", "st-07")]},
        **by_name) == ["st-02", "st-07"]


# -- order and pages ------------------------------------------------------------------------


def test_sort_orders_and_records_without_the_property_come_last(ctx: Ctx) -> None:
    trained = where(f("TrainingJobStatus", "Equals", "Completed"))
    descending = ctx.names(expression=trained, SortBy="Metrics.accuracy",
                           SortOrder="Descending")
    assert descending == [job(i) for i in range(JOBS - 1, 0, -1)] + ["st-00"]
    ascending = ctx.names(expression=trained, SortBy="Metrics.accuracy", SortOrder="Ascending")
    assert ascending == [job(i) for i in range(1, JOBS)] + ["st-00"]
    assert ctx.names(expression=trained, SortBy="HyperParameters.lr",
                     SortOrder="Ascending") == [job(i) for i in range(JOBS)]
    # The default: LastModifiedTime, Descending.
    assert ctx.names()[0] == "st-failed"


def test_pages_tokens_and_total_hits(ctx: Ctx) -> None:
    request = {"Resource": "TrainingJob", "SortBy": "TrainingJobName",
               "SortOrder": "Ascending"}
    first = ctx.sm.search(MaxResults=5, **request)
    assert [r["TrainingJob"]["TrainingJobName"] for r in first["Results"]] == [
        job(i) for i in range(5)]
    assert first["TotalHits"] == {"Value": JOBS + 1, "Relation": "EqualTo"}
    second = ctx.sm.search(MaxResults=5, NextToken=first["NextToken"], **request)
    assert [r["TrainingJob"]["TrainingJobName"] for r in second["Results"]] == [
        job(i) for i in range(5, 10)]
    last = ctx.sm.search(MaxResults=5, NextToken=second["NextToken"], **request)
    assert len(last["Results"]) == 3 and "NextToken" not in last
    assert len(ctx.sm.search(**request)["Results"]) == 10  # MaxResults' default
    # A token is good for the request that made it only.
    assert ctx.error(Resource="TrainingJob", NextToken=first["NextToken"]) == (
        "ValidationException", "Invalid pagination token")
    assert ctx.error(Resource="TrainingJob", MaxResults=101)[0] == "ValidationException"


# -- refusals -------------------------------------------------------------------------------


def test_names_the_resource_does_not_have_are_refused(ctx: Ctx) -> None:
    code, message = ctx.error(SearchExpression=where(f("NoSuchField", "Equals", "x")))
    assert code == "ValidationException"
    assert message.startswith("Cannot search TrainingJob by 'NoSuchField': a TrainingJob has "
                              "no such property.")
    for name in ("ResourceConfig.NoSuch", "TrainingJobName.Inner", "Metrics", "Tags.",
                 "ModelPackageGroupName"):
        assert ctx.error(SearchExpression=where(f(name, "Exists")))[0] == "ValidationException"
    assert "'Nope'" in ctx.error(SortBy="Nope")[1]
    assert "no such property" in ctx.error(SearchExpression={"NestedFilters": [{
        "NestedPropertyName": "InputDataConfig",
        "Filters": [f("InputDataConfig.Nope", "Equals", "x")]}]})[1]


def test_operators_the_property_cannot_take_are_refused(ctx: Ctx) -> None:
    cases = [
        (where(f("TrainingJobName", "GreaterThan", "a")),
         "Operator GreaterThan is not supported for text properties"),
        (where(f("Metrics.loss", "Contains", "1")),
         "Operator Contains is only supported for text properties"),
        (where(f("Metrics.loss", "Equals", "low")), "Value must be a number"),
        (where(f("CreationTime", "GreaterThan", "yesterday")), "ISO 8601"),
        (where(f("ResourceConfig", "Equals", "x")), "only Exists and NotExists apply"),
        (where(f("TrainingJobName", "Equals")), "with Operator Equals needs a Value"),
        (where(f("TrainingJobName")), "needs an Operator or a Value"),
        (where(f("TrainingJobName", "Contains", "a"), f("TrainingJobStatus", "Contains", "b")),
         "'CONTAINS' operator usage limit of 1 exceeded."),
        ({}, "must hold at least one of Filters, NestedFilters or SubExpressions"),
        ({"SubExpressions": [{"Operator": "And"}]}, "must hold at least one of"),
        ({"NestedFilters": [{"NestedPropertyName": "ResourceConfig",
                             "Filters": [f("ResourceConfig.InstanceCount", "Equals", "1")]}]},
         "is not a list of objects"),
        ({"NestedFilters": [{"NestedPropertyName": "InputDataConfig",
                             "Filters": [f("TrainingJobName", "Equals", "x")]}]},
         "must name a property of it"),
        ({"Operator": "Or", "SubExpressions": [
            where(*[f("TrainingJobName", value=f"{i}-{j}") for j in range(5)])
            for i in range(9)]},
         "at most 50 Filters, NestedFilters and SubExpressions in all; this one holds 54"),
    ]
    for expression, message in cases:
        code, text = ctx.error(SearchExpression=expression)
        assert code == "ValidationException" and message in text, (expression, text)
    assert "Cannot sort TrainingJob results by 'ResourceConfig'" in ctx.error(
        SortBy="ResourceConfig")[1]


# -- other resources ------------------------------------------------------------------------


def test_model_packages_and_groups(ctx: Ctx) -> None:
    sm = ctx.sm
    sm.create_model_package_group(ModelPackageGroupName="search-group",
                                  Tags=[{"Key": "team", "Value": "risk"}])
    sm.create_model_package_group(ModelPackageGroupName="search-other")
    # What the SageMaker SDK's register() asks before creating a group.
    sdk = where(f("ModelPackageGroupName", "Equals", "search-group"))
    assert ctx.names("ModelPackageGroup", sdk) == ["search-group"]
    assert ctx.names("ModelPackageGroup", where(f("Tags.team", "Equals", "risk"))) == [
        "search-group"]
    assert ctx.names("ModelPackageGroup", where(f("ModelPackageGroupName", "Contains",
                                                  "search-")),
                     SortBy="ModelPackageGroupName", SortOrder="Ascending") == [
        "search-group", "search-other"]
    container = {"Image": FAKE_IMAGE, "ModelDataUrl": "s3://bucket/model.tar.gz"}
    arns = [sm.create_model_package(
        ModelPackageGroupName="search-group", CustomerMetadataProperties={"rank": str(i)},
        InferenceSpecification={"Containers": [container], "SupportedContentTypes": ["a/b"],
                                "SupportedResponseMIMETypes": ["a/b"]})["ModelPackageArn"]
        for i in range(3)]
    pending = where(f("ModelPackageGroupName", "Equals", "search-group"),
                    f("ModelApprovalStatus", "Equals", "PendingManualApproval"))
    assert ctx.names("ModelPackage", pending, SortBy="ModelPackageVersion",
                     SortOrder="Ascending") == arns
    # A change is seen by the next search.
    sm.update_model_package(ModelPackageArn=arns[1], ModelApprovalStatus="Approved")
    assert ctx.names("ModelPackage", pending, SortBy="ModelPackageVersion",
                     SortOrder="Ascending") == [arns[0], arns[2]]
    assert ctx.names("ModelPackage", where(
        f("ModelApprovalStatus", "Equals", "Approved"),
        f("InferenceSpecification.Containers.Image", "Equals", FAKE_IMAGE))) == [arns[1]]
    assert ctx.names("ModelPackage", where(
        f("CustomerMetadataProperties.rank", "In", "0,2")), SortBy="ModelPackageVersion",
        SortOrder="Descending") == [arns[2], arns[0]]
    sm.delete_model_package(ModelPackageName=arns[2])
    assert arns[2] not in ctx.names("ModelPackage", where(
        f("ModelPackageGroupName", "Equals", "search-group")))
    assert "'ModelPackageVersions'" in ctx.error(
        Resource="ModelPackage", SearchExpression=where(f("ModelPackageVersions", "Exists")))[1]


def test_endpoints_and_tuning_jobs(ctx: Ctx) -> None:
    sm = ctx.sm
    sm.create_model(ModelName="search-model", PrimaryContainer={"Image": FAKE_IMAGE},
                    ExecutionRoleArn="arn:aws:iam::000000000000:role/shipyard")
    sm.create_endpoint_config(EndpointConfigName="search-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "search-model", "InitialInstanceCount": 1,
        "InstanceType": "local"}])
    sm.create_endpoint(EndpointName="search-ep", EndpointConfigName="search-config",
                       Tags=[{"Key": "team", "Value": "web"}])
    assert ctx.names("Endpoint", where(f("EndpointConfigName", "Equals", "search-config"),
                                       f("Tags.team", "Equals", "web"))) == ["search-ep"]
    assert ctx.names("Endpoint", where(f("ProductionVariants.VariantName", "Equals",
                                         "AllTraffic"))) == ["search-ep"]

    definition = training_request("unused", ctx.tmp)
    del definition["TrainingJobName"]
    definition["AlgorithmSpecification"]["MetricDefinitions"] = METRICS
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="search-tune",
        HyperParameterTuningJobConfig={
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {"IntegerParameterRanges": [
                {"Name": "epochs", "MinValue": "1", "MaxValue": "3"}]}},
        TrainingJobDefinition=definition)
    assert ctx.names("HyperParameterTuningJob", where(
        f("HyperParameterTuningJobConfig.Strategy", "Equals", "Random"),
        f("HyperParameterTuningJobConfig.ResourceLimits.MaxNumberOfTrainingJobs", "Equals",
          "2"))) == ["search-tune"]
    ctx.plane.wait("tuning", "search-tune", timeout=60)
    trials = ctx.names(expression=where(f("TuningJobArn", "Contains", "search-tune")))
    assert len(trials) == 2


def models(ctx: Ctx, expression: dict[str, Any] | None = None, **request: Any) -> list[str]:
    """Every matching model's name, in the answer's order (all pages)."""
    if expression is not None:
        request["SearchExpression"] = expression
    return [result["Model"]["Model"]["ModelName"]
            for page in ctx.sm.get_paginator("search").paginate(Resource="Model", **request)
            for result in page["Results"]]


def test_models_are_searched_as_model_dashboard_records(ctx: Ctx) -> None:
    sm = ctx.sm
    role = "arn:aws:iam::000000000000:role/"
    sm.create_model(ModelName="md-a", ExecutionRoleArn=role + "a",
                    PrimaryContainer={"Image": FAKE_IMAGE, "Environment": {"LEVEL": "1"}},
                    Tags=[{"Key": "team", "Value": "risk"}])
    sm.create_model(ModelName="md-b", ExecutionRoleArn=role + "b",
                    Containers=[{"Image": "other:1"}, {"Image": FAKE_IMAGE}])
    sm.create_model(ModelName="md-c", ExecutionRoleArn=role + "a",
                    PrimaryContainer={"Image": "other:2"}, EnableNetworkIsolation=True,
                    Tags=[{"Key": "team", "Value": "web"}])
    mine = where(f("Model.ModelName", "Contains", "md-"))
    # The default order is Model.CreationTime, newest first.
    assert models(ctx, mine) == ["md-c", "md-b", "md-a"]
    assert models(ctx, mine, SortBy="Model.ModelName", SortOrder="Ascending") == [
        "md-a", "md-b", "md-c"]
    assert models(ctx, mine, SortBy="ModelName", SortOrder="Descending") == [
        "md-c", "md-b", "md-a"]
    # Paths in the record (Model.<member>), and the Model's members named alone.
    cases = [
        (where(f("Model.ModelName", "Equals", "md-a")), ["md-a"]),
        (where(f("ModelName", "In", "md-a, md-c")), ["md-a", "md-c"]),
        (where(f("Model.ExecutionRoleArn", "Equals", role + "a")), ["md-a", "md-c"]),
        (where(f("ExecutionRoleArn", "NotEquals", role + "a")), ["md-b"]),
        (where(f("Model.PrimaryContainer.Image", "Equals", FAKE_IMAGE)), ["md-a"]),
        (where(f("PrimaryContainer.Environment.LEVEL", "Equals", "1")), ["md-a"]),
        (where(f("Containers.Image", "Equals", FAKE_IMAGE)), ["md-b"]),
        (where(f("Model.Containers", "Exists")), ["md-b"]),
        (where(f("EnableNetworkIsolation", "Equals", "true")), ["md-c"]),
        (where(f("Tags.team", "Equals", "risk")), ["md-a"]),
        (where(f("Model.Tags.team", "Exists")), ["md-a", "md-c"]),
        (where(f("Tags.team", "NotExists")), ["md-b"]),
        (where(f("Model.PrimaryContainer.Image", "Equals", "other:2"),
               f("Model.ExecutionRoleArn", "Equals", role + "a"), Operator="Or"),
         ["md-a", "md-c"]),
        (where(NestedFilters=[{"NestedPropertyName": "Model.Containers", "Filters": [
            f("Model.Containers.Image", "Equals", "other:1")]}]), ["md-b"]),
    ]
    for expression, expected in cases:
        found = models(ctx, {"SubExpressions": [mine, expression]},
                       SortBy="Model.ModelName", SortOrder="Ascending")
        assert found == expected, (expression, found)
    created = sm.describe_model(ModelName="md-b")["CreationTime"]
    assert models(ctx, where(f("Model.CreationTime", "GreaterThanOrEqualTo",
                               created.isoformat()), *mine["Filters"]),
                  SortBy="Model.ModelName", SortOrder="Ascending") == ["md-b", "md-c"]

    # The record: DescribeModel's document with its Tags, and the endpoints hosting it.
    page = sm.search(Resource="Model", SearchExpression=mine, MaxResults=2)
    assert page["TotalHits"] == {"Value": 3, "Relation": "EqualTo"} and "NextToken" in page
    rest = sm.search(Resource="Model", SearchExpression=mine, MaxResults=2,
                     NextToken=page["NextToken"])
    assert "NextToken" not in rest
    [last] = rest["Results"]
    described = sm.describe_model(ModelName="md-a")
    del described["ResponseMetadata"]
    assert last["Model"]["Model"] == {**described, "Tags": [{"Key": "team", "Value": "risk"}]}
    assert last["Model"]["Endpoints"] == []
    assert set(last["Model"]) == {"Model", "Endpoints"}

    sm.create_endpoint_config(EndpointConfigName="md-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "md-a", "InitialInstanceCount": 1,
        "InstanceType": "local"}])
    arn = sm.create_endpoint(EndpointName="md-ep", EndpointConfigName="md-config")[
        "EndpointArn"]
    [hosted] = sm.search(Resource="Model", SearchExpression=where(
        f("Endpoints.EndpointName", "Equals", "md-ep")))["Results"]
    assert hosted["Model"]["Model"]["ModelName"] == "md-a"
    [endpoint] = hosted["Model"]["Endpoints"]
    assert endpoint["EndpointName"] == "md-ep" and endpoint["EndpointArn"] == arn
    assert {"CreationTime", "LastModifiedTime", "EndpointStatus"} <= set(endpoint)
    assert models(ctx, where(f("Endpoints", "Exists"), *mine["Filters"])) == ["md-a"]
    assert models(ctx, where(NestedFilters=[{"NestedPropertyName": "Endpoints", "Filters": [
        f("Endpoints.EndpointName", "Contains", "md-")]}])) == ["md-a"]
    # Monitoring schedules and model cards: no record has one here.
    assert models(ctx, where(f("MonitoringSchedules.MonitoringScheduleName", "Exists"))) == []
    ctx.plane.wait("endpoint", "md-ep", timeout=30)
    # The endpoints are read again after any change: a deleted one hosts nothing.
    sm.delete_endpoint(EndpointName="md-ep")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="md-ep",
                                           WaiterConfig={"Delay": 0.2, "MaxAttempts": 150})
    assert models(ctx, where(f("Endpoints", "Exists"), *mine["Filters"])) == []

    sm.delete_model(ModelName="md-c")
    assert models(ctx, mine) == ["md-b", "md-a"]


def test_a_models_last_batch_transform_job(ctx: Ctx) -> None:
    sm = ctx.sm
    sm.create_model(ModelName="md-batch", PrimaryContainer={"Image": FAKE_IMAGE})
    data = ctx.tmp / "md-batch-in"
    data.mkdir()
    (data / "rows.csv").write_text("a\n")
    for name in ("md-batch-1", "md-batch-2"):
        sm.create_transform_job(
            TransformJobName=name, ModelName="md-batch",
            TransformInput={"DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": data.as_uri()}}},
            TransformOutput={"S3OutputPath": (ctx.tmp / f"{name}-out").as_uri()},
            TransformResources={"InstanceType": "local", "InstanceCount": 1},
            Tags=[{"Key": "run", "Value": name}])
        ctx.plane.wait("transform", name, timeout=60)
    [found] = sm.search(Resource="Model", SearchExpression=where(
        f("LastBatchTransformJob.TransformJobName", "Equals", "md-batch-2")))["Results"]
    last = found["Model"]["LastBatchTransformJob"]
    assert found["Model"]["Model"]["ModelName"] == "md-batch"
    assert last["TransformJobName"] == "md-batch-2" and last["ModelName"] == "md-batch"
    assert last["TransformJobStatus"] == sm.describe_transform_job(
        TransformJobName="md-batch-2")["TransformJobStatus"]
    assert last["Tags"] == [{"Key": "run", "Value": "md-batch-2"}]
    assert models(ctx, where(f("LastBatchTransformJob.TransformJobName", "Equals",
                               "md-batch-1"))) == []


def test_model_property_names_and_resources_are_checked(ctx: Ctx) -> None:
    for name in ("Model.NoSuch", "NoSuch", "Model", "Endpoints.NoSuch", "Model.Metrics.x"):
        code, message = ctx.error(Resource="Model",
                                  SearchExpression=where(f(name, "Exists")))
        assert code == "ValidationException", name
        assert f"Cannot search Model by '{name}'" in message
        assert "Model.ModelName" in message
    assert "Cannot sort Model results by 'Model.PrimaryContainer'" in ctx.error(
        Resource="Model", SortBy="Model.PrimaryContainer")[1]
    code, message = ctx.error(Resource="Models")
    assert code == "ValidationException"
    assert "Value 'Models' at 'resource' failed to satisfy constraint" in message
    assert "TrainingJob" in message and "ModelPackage" in message


def test_resources_shipyard_keeps_none_of_answer_no_results(ctx: Ctx) -> None:
    answer = ctx.sm.search(Resource="Experiment", SearchExpression=where(
        f("ExperimentName", "Equals", "x")))
    assert answer["Results"] == [] and "NextToken" not in answer
    assert ctx.error(Resource="Experiment", SearchExpression=where(
        f("NoSuchField", "Equals", "x")))[0] == "ValidationException"


# -- the index ------------------------------------------------------------------------------


def test_the_index_sees_every_change_to_the_records(tmp_path: Path) -> None:
    plane, _ = fake_plane(tmp_path)
    try:
        for name in ("ix-a", "ix-b"):
            plane.create("training", training_request(name, tmp_path))
            plane.wait("training", name, timeout=30)
        every = {"Resource": "TrainingJob", "SortBy": "TrainingJobName",
                 "SortOrder": "Ascending"}

        def names(request: dict[str, Any]) -> list[str]:
            return [r["TrainingJobName"] for r in plane.search(request, 0, 100).records]

        assert names(every) == ["ix-a", "ix-b"]
        status = {**every, "SearchExpression": where(f("TrainingJobStatus", "Equals",
                                                       "InProgress"))}
        assert names(status) == []
        # A record changed without its LastModifiedTime (a supervisor's bookkeeping) while
        # active: re-read every time.
        store = plane.ctx.store

        def reopen(rec: dict[str, Any], runner: dict[str, Any]) -> str:
            rec["TrainingJobStatus"] = "InProgress"
            return "InProgress"

        store.mutate("training", "ix-a", reopen)
        assert names(status) == ["ix-a"]

        def relabel(rec: dict[str, Any], runner: dict[str, Any]) -> None:
            rec["HyperParameters"] = {"note": "changed"}

        store.mutate("training", "ix-a", relabel)
        assert names({**every, "SearchExpression": where(
            f("HyperParameters.note", "Equals", "changed"))}) == ["ix-a"]
        store.delete_job("training", "ix-b")
        assert names(every) == ["ix-a"]
        plane.create("training", training_request("ix-c", tmp_path))
        plane.wait("training", "ix-c", timeout=30)
        assert names(every) == ["ix-a", "ix-c"]
        store.add_tags("arn:aws:sagemaker:us-east-1:000000000000:training-job/ix-c",
                       {"late": "yes"})
        assert names({**every, "SearchExpression": where(f("Tags.late", "Exists"))}) == [
            "ix-c"]
        # A record torn by a fault (start-up sets such rows aside) does not break Search.
        conn = sqlite3.connect(store.path)
        try:
            with conn:
                conn.execute("UPDATE jobs SET record = '{torn' WHERE name = 'ix-a'")
        finally:
            conn.close()
        assert names({**every, "SearchExpression": where(f("RoleArn", "Exists"))}) == ["ix-c"]
    finally:
        plane.close()
