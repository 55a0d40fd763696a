"""The SageMaker Python SDK v2's model registry, unchanged, against Shipyard.

As in ``tests/test_sdk_compat.py`` (whose approach and run helpers this module shares): a real
``shipyard server`` in a process of its own with its S3 store, the SDK's environment exactly
what ``shipyard server status`` prints plus isolation from this machine's ``~/.aws``, no role,
no bucket and no endpoint in code, and the network blocked except loopback while the SDK runs.

Two runs go side by side, each in its own thread with its own ``Session``:

* ``estimator``: ``Estimator.fit`` on the seed000 image, then ``estimator.register(...)`` of
  its model (served by the plain-serve image) into a new group: the version names the job.
* ``model``: ``Model(...).register(...)`` of a tarball in the store into another group,
  approval with boto3's ``update_model_package``, then ``ModelPackage(model_package_arn=...)``
  (no role: the defaults file's) ``.deploy(...)``, ``predict`` and delete.

Then boto3 lists the groups (``list_model_package_groups``) and finds the versions.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.support import offline
from tests.support.files import tar_gz
from tests.support.sdk_runs import Outcome, run_all, sdk_user_environment
from tests.support.user_server import UserServer, user_server

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROLE = "arn:aws:iam::000000000000:role/ShipyardExecutionRole"
BUCKET = "sagemaker-us-east-1-000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[UserServer]:
    with user_server(tmp_path_factory.mktemp("sdk-registry") / "state",
                     stop_grace_seconds="3") as running:
        yield running


@pytest.fixture(scope="module")
def sdk_environment(server: UserServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[dict[str, str]]:
    with sdk_user_environment(server, tmp_path_factory.mktemp("sdk-registry-home")) as env:
        yield env


@pytest.fixture(scope="module")
def runs(sdk_environment: dict[str, str], images: dict[str, str]
         ) -> tuple[dict[str, Outcome], dict[str, str], list[str]]:
    sagemaker = pytest.importorskip("sagemaker")
    from sagemaker.estimator import Estimator
    from sagemaker.model import Model, ModelPackage
    from sagemaker.predictor import Predictor

    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="reg/train/a.csv", Body=b"1,2\n")
    s3.put_object(Bucket=BUCKET, Key="reg/model/model.tar.gz",
                  Body=tar_gz({"model.txt": b"registered"}))
    suffix = uuid.uuid4().hex[:6]
    names = {"job": f"sdk-reg-{suffix}", "estimator_group": f"sdk-est-{suffix}",
             "model_group": f"sdk-model-{suffix}", "endpoint": f"sdk-reg-ep-{suffix}"}
    spec = {"content_types": ["text/csv"], "response_types": ["application/json"],
            "inference_instances": ["ml.m5.large"], "transform_instances": ["ml.m5.large"]}

    def estimator() -> Any:
        # register() names its model after base_job_name (None when fit() got a job_name).
        est = Estimator(image_uri=images["seed000"], instance_count=1,
                        instance_type="ml.m5.large", base_job_name="sdk-reg",
                        sagemaker_session=sagemaker.Session())
        est.fit({"training": f"s3://{BUCKET}/reg/train"}, logs=False, job_name=names["job"])
        package = est.register(image_uri=images["plain-serve"],
                               model_package_group_name=names["estimator_group"],
                               description="from the estimator", **spec)
        return est, package

    def model() -> Any:
        session = sagemaker.Session()
        registered = Model(image_uri=images["plain-serve"],
                           model_data=f"s3://{BUCKET}/reg/model/model.tar.gz",
                           sagemaker_session=session).register(
            model_package_group_name=names["model_group"],
            approval_status="PendingManualApproval", **spec)
        arn = registered.model_package_arn
        sm = boto3.client("sagemaker")
        before = sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"]
        sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                                ApprovalDescription="checked by hand")
        package = ModelPackage(role=None, model_package_arn=arn, sagemaker_session=session,
                               predictor_cls=Predictor)
        predictor = package.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                   endpoint_name=names["endpoint"])
        answer = predictor.predict(b"1,2", initial_args={"ContentType": "text/csv"})
        model_name = package.name
        predictor.delete_endpoint()
        package.delete_model()
        return arn, before, answer, model_name

    with offline.blocked() as guard:
        outcomes, printed = run_all({"estimator": estimator, "model": model})
    outcomes["names"] = Outcome(names)
    return outcomes, printed, list(guard.attempts)


def test_nothing_reached_off_this_machine(runs: Any) -> None:
    assert runs[2] == []


def test_estimator_register_keeps_the_training_job(runs: Any, images: dict[str, str]) -> None:
    outcomes = runs[0]
    names = outcomes["names"].get()
    est, package = outcomes["estimator"].get()
    sm = boto3.client("sagemaker")
    arn = package.model_package_arn
    assert arn.endswith(f":model-package/{names['estimator_group']}/1")
    record = sm.describe_model_package(ModelPackageName=arn)
    job_arn = sm.describe_training_job(TrainingJobName=names["job"])["TrainingJobArn"]
    assert record["MetadataProperties"]["GeneratedBy"] == job_arn
    container = record["InferenceSpecification"]["Containers"][0]
    assert (container["Image"], container["ModelDataUrl"]) == (
        images["plain-serve"], est.model_data)
    assert record["InferenceSpecification"]["SupportedContentTypes"] == ["text/csv"]
    assert record["ModelPackageDescription"] == "from the estimator"
    # Search finds the version by the job that produced it (Shipyard's lineage member).
    found = sm.search(Resource="ModelPackage", SearchExpression={"Filters": [{
        "Name": "SourceTrainingJobArn", "Operator": "Equals", "Value": job_arn}]})
    assert [r["ModelPackage"]["ModelPackageArn"] for r in found["Results"]] == [arn]


def test_model_register_approve_deploy_predict_delete(runs: Any) -> None:
    outcomes = runs[0]
    names = outcomes["names"].get()
    arn, before, answer, model_name = outcomes["model"].get()
    assert before == "PendingManualApproval"
    reply = json.loads(answer)
    assert (reply["model"], reply["body"], reply["content_type"]) == (
        "registered", "1,2", "text/csv")
    sm = boto3.client("sagemaker")
    record = sm.describe_model_package(ModelPackageName=arn)
    assert (record["ModelApprovalStatus"], record["ApprovalDescription"]) == (
        "Approved", "checked by hand")
    assert record["LastModifiedBy"]["IamIdentity"]["Arn"].endswith("ShipyardExecutionRole")
    deadline = time.monotonic() + 60
    while sm.list_endpoints(NameContains=names["endpoint"])["Endpoints"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert sm.list_models(NameContains=model_name)["Models"] == []


def test_boto3_lists_the_groups_and_versions(runs: Any) -> None:
    names = runs[0]["names"].get()
    sm = boto3.client("sagemaker")
    groups = [g["ModelPackageGroupName"] for g in sm.get_paginator(
        "list_model_package_groups").paginate().build_full_result()[
            "ModelPackageGroupSummaryList"]]
    assert sorted(groups) == sorted([names["estimator_group"], names["model_group"]])
    approved = sm.list_model_packages(ModelPackageGroupName=names["model_group"],
                                      ModelApprovalStatus="Approved")
    assert [p["ModelPackageVersion"] for p in approved["ModelPackageSummaryList"]] == [1]
