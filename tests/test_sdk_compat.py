"""The SageMaker Python SDK v2, unchanged, against Shipyard: the status environment is all it
takes.

The SDK runs exactly as a user runs it (platform-api.md 5): no patching, no pre-built clients,
no ``role`` and no ``default_bucket`` in code. A real ``shipyard server`` runs in a process of
its own with its embedded S3 store, and the SDK's environment is what ``eval "$(shipyard
server status)"`` sets (docs/sdk.md): per-service endpoints, the key pair, the region, and
``SAGEMAKER_USER_CONFIG_OVERRIDE`` naming the defaults file the server wrote (default bucket,
execution role, no telemetry). Only isolation from this machine is added:
``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` point at empty files so ``~/.aws`` cannot
redirect anything.

The network is blocked except loopback while the SDK runs (``tests.support.offline``), as for a
user behind a firewall: anything the SDK tried to reach off this machine fails the module.

The SDK runs happen concurrently in one module fixture, each in its own thread with its own
``sagemaker.Session`` (as notebooks would): the SDK waits 5 s before it first describes a job,
then tails logs every 10 s and describes the job every 30 s, so a run whose job is still going
at the first look takes about 45 s however short the job. Each thread's printed output is
captured apart, and each test checks its own run.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support import offline
from tests.support.files import tar_gz
from tests.support.sdk_runs import Outcome, run_all, sdk_user_environment
from tests.support.user_server import UserServer, user_server
from tests.support.workloads import PROCESSING

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: What the server's defaults file names (shipyard.api.sdk_defaults).
ROLE = "arn:aws:iam::000000000000:role/ShipyardExecutionRole"
BUCKET = "sagemaker-us-east-1-000000000000"

TRAIN_PY = '''import json, os, sys, time
from pathlib import Path

hp = json.loads(os.environ["SM_HPS"])
print("framework hyperparameters", json.dumps(hp, sort_keys=True), flush=True)
print("program", sys.argv[0], "args", sys.argv[1:], flush=True)
helper = Path("helper.txt").read_text().strip()  # the script runs in the code folder
for epoch in range(int(hp["epochs"])):
    print(f"framework epoch {epoch} done", flush=True)
    # Still running when the SDK first describes the job (5 s after creating it): the SDK
    # then tails the logs in rounds instead of reading a finished job once.
    time.sleep(4)
model_dir = Path(os.environ["SM_MODEL_DIR"])
(model_dir / "weights.json").write_text(json.dumps({"epochs": hp["epochs"], "helper": helper}))
'''


@dataclass
class Runs:
    env: dict[str, str]
    bucket: str
    names: dict[str, str]
    outcomes: dict[str, Outcome]
    printed: dict[str, str]
    #: What the SDK tried to reach off this machine (refused).
    offline_attempts: list[str]

    def client(self, service: str) -> Any:
        """A boto3 client from the status environment, as the user's own code makes one."""
        return boto3.client(service)

    def boto(self) -> Any:
        return self.client("s3")

    def keys(self, prefix: str) -> list[str]:
        pages = self.boto().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read_tar(self, key: str) -> dict[str, bytes]:
        body = self.boto().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            return {m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[UserServer]:
    """``shipyard server`` with its store, containers on the real engine in this session's
    scope."""
    with user_server(tmp_path_factory.mktemp("sdk") / "state",
                     stop_grace_seconds="3") as running:
        yield running


@pytest.fixture(scope="module")
def sdk_environment(server: UserServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[dict[str, str]]:
    """The user's environment: ``server status``'s variables and nothing else from AWS's
    world, set for the module and restored after it."""
    with sdk_user_environment(server, tmp_path_factory.mktemp("sdk-home")) as env:
        yield env


@dataclass(frozen=True)
class Sdk:
    """The SDK's classes, imported once the environment is in place: importing ``sagemaker``
    reads SAGEMAKER_SUPPRESS_V2_WARNING, so an earlier import would warn."""

    module: Any
    estimator: Any
    processor: Any
    processing_input: Any
    processing_output: Any
    model: Any
    script_processor: Any


@pytest.fixture(scope="module")
def sdk(sdk_environment: dict[str, str]) -> Sdk:
    try:
        import sagemaker
        from sagemaker.estimator import Estimator
        from sagemaker.model import Model
        from sagemaker.processing import (
            ProcessingInput,
            ProcessingOutput,
            Processor,
            ScriptProcessor,
        )
    except ImportError as exc:
        # The test extra installs it: in CI its absence is a failure, not a skip.
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"the SageMaker Python SDK is required in CI: {exc}")
        pytest.skip(f"the SageMaker Python SDK is not installed: {exc}")
    return Sdk(sagemaker, Estimator, Processor, ProcessingInput, ProcessingOutput, Model,
               ScriptProcessor)


@pytest.fixture(scope="module")
def runs(sdk: Sdk, sdk_environment: dict[str, str], images: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Data in the store's default bucket, then the SDK runs of the module, side by side,
    with no role, no bucket and no endpoint in code."""
    s3 = boto3.client("s3")
    for key, body in {"train/a.csv": "1,2\n", "train/nested/b.csv": "3,4\n",
                      "proc/first/one.txt": "alpha", "proc/first/sub/two.txt": "beta",
                      "proc/second/three.txt": "gamma"}.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode())
    source = tmp_path_factory.mktemp("source")
    (source / "train.py").write_text(TRAIN_PY)
    (source / "helper.txt").write_text("shipped with the code\n")
    script = tmp_path_factory.mktemp("script") / "report.py"
    script.write_text(PROCESSING)
    s3.put_object(Bucket=BUCKET, Key="model/model.tar.gz",
                  Body=tar_gz({"model.txt": b"sdk-model"}))
    s3.put_object(Bucket=BUCKET, Key="tin/rows.csv", Body=b"1,2\n3,4\n")
    suffix = uuid.uuid4().hex[:6]
    names = {"estimator": f"sdk-seed-{suffix}", "framework": f"sdk-framework-{suffix}",
             "processor": f"sdk-processing-{suffix}", "deploy": f"sdk-endpoint-{suffix}"}

    def estimator() -> Any:
        est = sdk.estimator(image_uri=images["seed000"], instance_count=1,
                            instance_type="ml.m5.large")
        est.fit({"training": f"s3://{BUCKET}/train"}, logs=True, job_name=names["estimator"])
        # Attached here, while the framework run still tails its logs: attach waits for the
        # job (5 s before its first look) even when it has long finished.
        attached = sdk.estimator.attach(names["estimator"])
        return est, attached

    def framework() -> Any:
        est = sdk.estimator(image_uri=images["toolkit"], instance_count=1,
                            instance_type="ml.m5.large", entry_point="train.py",
                            source_dir=str(source), hyperparameters={"epochs": 2})
        est.fit(logs=True, job_name=names["framework"])
        return est

    def processor() -> Any:
        proc = sdk.script_processor(image_uri=images["processing"], command=["python3"],
                                    instance_count=1, instance_type="ml.m5.large")
        proc.run(code=str(script), inputs=[
            sdk.processing_input(source=f"s3://{BUCKET}/proc/first",
                                 destination="/opt/ml/processing/input/first"),
            sdk.processing_input(source=f"s3://{BUCKET}/proc/second",
                                 destination="/opt/ml/processing/input/second"),
        ], outputs=[
            sdk.processing_output(source="/opt/ml/processing/output/report",
                                  destination=f"s3://{BUCKET}/proc-out/report"),
        ], arguments=["--flag", "on"], job_name=names["processor"], logs=True, wait=True)
        return proc

    def deploy() -> Any:
        # Model.deploy -> predict -> transformer -> delete, as a notebook does it; the
        # image is a plain http.server `serve` that echoes the request and its model file.
        model = sdk.model(image_uri=images["plain-serve"],
                          model_data=f"s3://{BUCKET}/model/model.tar.gz",
                          predictor_cls=sdk.module.predictor.Predictor)
        predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                 endpoint_name=names["deploy"])
        answer = predictor.predict(b"1,2,3", initial_args={"ContentType": "text/csv"})
        transformer = model.transformer(instance_count=1, instance_type="ml.m5.large",
                                        output_path=f"s3://{BUCKET}/tout",
                                        strategy="SingleRecord", assemble_with="Line")
        transformer.transform(f"s3://{BUCKET}/tin", content_type="text/csv",
                              split_type="Line", wait=True, logs=False)
        predictor.delete_model()
        predictor.delete_endpoint()
        return answer, transformer

    with offline.blocked() as guard:
        outcomes, printed = run_all({"estimator": estimator, "framework": framework,
                                     "processor": processor, "deploy": deploy})
    return Runs(sdk_environment, BUCKET, names, outcomes, printed, list(guard.attempts))


def test_nothing_reached_off_this_machine(runs: Runs) -> None:
    assert runs.offline_attempts == []


def test_status_environment_names_the_sdk_defaults(runs: Runs) -> None:
    defaults = json.loads(Path(runs.env["SAGEMAKER_USER_CONFIG_OVERRIDE"]).read_text())
    assert defaults["SageMaker"]["TrainingJob"]["RoleArn"] == ROLE
    assert defaults["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is True
    assert defaults["SageMaker"]["PythonSDK"]["Modules"]["Session"] == {
        "DefaultS3Bucket": BUCKET}


def test_estimator_fit_completes_with_model_in_s3(runs: Runs) -> None:
    est, _ = runs.outcomes["estimator"].get()
    name = runs.names["estimator"]
    assert est.latest_training_job.name == name
    assert est.role == ROLE  # from the defaults file: the code names none
    # No output_path: the SDK puts the model under its default bucket (the defaults file's).
    key = f"{name}/output/model.tar.gz"
    assert est.model_data == f"s3://{runs.bucket}/{key}"
    # seed000 counts the files of its "training" channel: both objects under the prefix.
    assert runs.read_tar(key) == {"model.json": b'{"training_files": 2}'}
    printed = runs.printed["estimator"]
    # The SDK's status lines come from SecondaryStatusTransitions; its closing lines from
    # TrainingTimeInSeconds / BillableTimeInSeconds.
    for line in ("Starting - Starting the training job", "Downloading - Downloading input data",
                 "Completed - Training job completed", "Training seconds:",
                 "Billable seconds:"):
        assert line in printed


def test_framework_style_estimator_stages_source_dir(runs: Runs) -> None:
    est = runs.outcomes["framework"].get()
    name = runs.names["framework"]
    # The generic Estimator uploads source_dir itself (EstimatorBase._stage_user_code_in_s3)
    # to <output bucket>/<job>/source/ and JSON-encodes every hyperparameter.
    code_uri = f"s3://{runs.bucket}/{name}/source/sourcedir.tar.gz"
    assert f"{name}/source/sourcedir.tar.gz" in runs.keys(f"{name}/source/")
    assert est.hyperparameters()["sagemaker_submit_directory"] == f'"{code_uri}"'
    assert est.hyperparameters()["sagemaker_program"] == '"train.py"'
    assert est.hyperparameters()["epochs"] == "2"
    assert set(runs.read_tar(f"{name}/source/sourcedir.tar.gz")) == {"train.py", "helper.txt"}
    assert runs.read_tar(f"{name}/output/model.tar.gz") == {
        "weights.json": b'{"epochs": 2, "helper": "shipped with the code"}'}
    printed = runs.printed["framework"]
    # The toolkit ran the staged script with the decoded hyperparameters, and the SDK's log
    # tailing printed its lines.
    assert 'framework hyperparameters {"epochs": 2}' in printed
    assert "program train.py args ['--epochs', '2']" in printed
    assert "framework epoch 1 done" in printed
    # The job was still running when the SDK first described it, so the SDK tailed its logs
    # in rounds and printed the final status after lines it had already shown.
    assert printed.index("framework epoch 0 done") < printed.index(
        "Completed - Training job completed")


def test_processor_run_writes_outputs(runs: Runs) -> None:
    proc = runs.outcomes["processor"].get()
    name = runs.names["processor"]
    assert proc.latest_job.job_name == name
    summary = runs.boto().get_object(Bucket=runs.bucket, Key="proc-out/report/summary.txt")
    assert summary["Body"].read().decode().splitlines() == [
        "first/one.txt: alpha", "first/sub/two.txt: beta", "second/three.txt: gamma"]
    assert runs.keys("proc-out/report/") == ["proc-out/report/nested/count.txt",
                                             "proc-out/report/summary.txt"]
    assert f"args ['--flag', 'on'] env {name}" in runs.printed["processor"]
    described = proc.latest_job.describe()
    assert described["ProcessingJobStatus"] == "Completed"
    assert described["ExitMessage"] == "processed 3 files"


def test_estimator_attach_to_finished_job(runs: Runs) -> None:
    original, attached = runs.outcomes["estimator"].get()
    name = runs.names["estimator"]
    assert attached.latest_training_job.name == name
    assert attached.model_data == original.model_data
    assert attached.image_uri == original.image_uri
    assert attached.role == ROLE
    assert attached.instance_count == 1
    assert attached.instance_type == "ml.m5.large"
    assert attached.volume_size == 30
    assert attached.max_run == 86400
    assert attached.input_mode == "File"
    assert attached.output_path == f"s3://{runs.bucket}/"
    assert attached.output_kms_key == "alias/aws/s3"  # the defaults file's, see docs/sdk.md


def test_model_deploy_predict_transform_and_delete(runs: Runs) -> None:
    answer, transformer = runs.outcomes["deploy"].get()
    reply = json.loads(answer)
    assert (reply["model"], reply["body"], reply["content_type"]) == (
        "sdk-model", "1,2,3", "text/csv")
    job = transformer.sagemaker_session.describe_transform_job(
        transformer.latest_transform_job.job_name)
    assert job["TransformJobStatus"] == "Completed"
    lines = runs.boto().get_object(Bucket=runs.bucket, Key="tout/rows.csv.out")[
        "Body"].read().decode().splitlines()
    assert [json.loads(line)["body"] for line in lines] == ["1,2", "3,4"]
    # delete_model then delete_endpoint (the SDK's order) left nothing behind.
    sagemaker = runs.client("sagemaker")
    # (Model.transformer() made a model of its own, which the predictor does not delete.)
    models = sagemaker.list_models(NameContains="plain-serve")["Models"]
    assert [m["ModelName"] for m in models] == [transformer.model_name]
    assert sagemaker.describe_model(ModelName=transformer.model_name)[
        "ExecutionRoleArn"] == ROLE
    deadline = time.monotonic() + 60
    while sagemaker.list_endpoints(NameContains=runs.names["deploy"])["Endpoints"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
