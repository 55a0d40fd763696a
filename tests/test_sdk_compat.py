"""The SageMaker Python SDK v2, unchanged, against Shipyard: configuration is all it takes.

The SDK runs exactly as a user runs it (platform-api.md 5): no patching, no pre-built clients;
only the environment and the SDK's own defaults file change (docs/sdk.md):

* ``AWS_ENDPOINT_URL_SAGEMAKER`` / ``_CLOUDWATCH_LOGS`` / ``_STS`` name Shipyard's server and
  ``AWS_ENDPOINT_URL_S3`` an S3-compatible store (moto's server here); botocore >= 1.31 resolves
  these for every client the SDK builds from the ``boto3.Session`` (4.4);
* the credentials are Shipyard's key pair (the S3 store accepts any);
* ``default_bucket=`` and full role ARNs, because ``default_bucket()`` without a name and
  ``expand_role`` call STS/IAM at AWS's hard-coded endpoints (5.10);
* ``SAGEMAKER_ADMIN_CONFIG_OVERRIDE`` / ``SAGEMAKER_USER_CONFIG_OVERRIDE`` point at a defaults
  file with ``TelemetryOptOut: true`` so the SDK sends nothing to AWS's telemetry bucket, and so
  the machine's own SageMaker config files take no part;
* ``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` point at empty files, so the machine's
  ``~/.aws`` cannot redirect anything.

The three SDK runs happen concurrently in one module fixture, each in its own thread with its
own ``sagemaker.Session`` (as three notebooks would): the SDK waits 5 s before it first
describes a job, then tails logs every 10 s and describes the job every 30 s, so a run whose
job is still going at the first look takes about 45 s however short the job. Each thread's
printed output is captured apart, and each test checks its own run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from shipyard.api.server import ApiServer
from shipyard.control import ControlPlane
from shipyard.runtimes import DockerRuntime
from shipyard.settings import Settings
from tests.support import s3server
from tests.support.api import serving
from tests.support.files import tar_gz
from tests.support.images import SESSION_SCOPE
from tests.support.net import unused_port
from tests.support.s3server import S3Server

pytestmark = [pytest.mark.docker, pytest.mark.slow]
s3_server = s3server.s3_server

ROLE = "arn:aws:iam::000000000000:role/x"
REGION = "us-east-1"
#: The SDK's defaults file (sagemaker/config/config_schema.py): no telemetry.
SDK_CONFIG = """\
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""

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
class Outcome:
    """What one SDK run left behind: its object, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


@dataclass
class Runs:
    s3: S3Server
    bucket: str
    names: dict[str, str]
    outcomes: dict[str, Outcome]
    printed: dict[str, str]

    def boto(self) -> Any:
        return self.s3.boto()

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
def shipyard(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
             s3_server: S3Server) -> Iterator[tuple[ApiServer, str]]:
    """Shipyard's API server over a control plane on the real engine, reading and writing
    the same S3 store the SDK uses."""
    data = tmp_path_factory.mktemp("sdk")
    settings = Settings.load({
        "data_dir": str(data / "state"), "stop_grace_seconds": 3, "api_port": 0,
        "s3_endpoint_url": s3_server.url, "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing"}, environ={})
    runtime = DockerRuntime(docker_client, labels={"org.shipyard.scope": SESSION_SCOPE})
    with serving(settings, ControlPlane(settings, runtime)) as api:
        yield api.server, api.url


@pytest.fixture(scope="module")
def sdk_environment(shipyard: tuple[ApiServer, str], s3_server: S3Server,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The user's environment (docs/sdk.md), set for the module and restored after it."""
    server, url = shipyard
    home = tmp_path_factory.mktemp("sdk-home")
    config = home / "sagemaker-config.yaml"
    config.write_text(SDK_CONFIG)
    (home / "aws-config").write_text("")
    (home / "aws-credentials").write_text("")
    access_key, secret_key = server.keys.default
    dead = f"http://127.0.0.1:{unused_port()}"
    env = {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_SAGEMAKER": url,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": url,
        "AWS_ENDPOINT_URL_STS": url,
        "AWS_ENDPOINT_URL_S3": s3_server.url,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        # SDK 2.25x warns once per class that v3 exists; the suite turns warnings into errors.
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        # Tripwires, not part of the user's setup: a client for any service not named above,
        # and any request for a host other than this machine, fails at once on a closed port
        # instead of reaching (or waiting for) AWS.
        "AWS_ENDPOINT_URL": dead,
        "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                     "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_REGION"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
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

    def session(self, bucket: str) -> Any:
        """What a user writes: a plain boto3 session (endpoints and keys come from the
        environment) and the bucket named explicitly."""
        return self.module.Session(boto_session=boto3.Session(region_name=REGION),
                                   default_bucket=bucket)


@pytest.fixture(scope="module")
def sdk(sdk_environment: dict[str, str]) -> Sdk:
    try:
        import sagemaker
        from sagemaker.estimator import Estimator
        from sagemaker.model import Model
        from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor
    except ImportError as exc:
        # The test extra installs it: in CI its absence is a failure, not a skip.
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"the SageMaker Python SDK is required in CI: {exc}")
        pytest.skip(f"the SageMaker Python SDK is not installed: {exc}")
    return Sdk(sagemaker, Estimator, Processor, ProcessingInput, ProcessingOutput, Model)


class PerThreadOutput(io.TextIOBase):
    """A stand-in for ``sys.stdout`` that keeps each named thread's writes apart, so runs that
    print concurrently can each be checked for their own lines."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._parts: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def register(self, name: str) -> None:
        with self._lock:
            self._names[threading.get_ident()] = name
            self._parts.setdefault(name, [])

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        with self._lock:
            name = self._names.get(threading.get_ident(), "")
            self._parts.setdefault(name, []).append(text)
        return len(text)

    def text(self, name: str) -> str:
        with self._lock:
            return "".join(self._parts.get(name, []))


def run_all(jobs: dict[str, Callable[[], Any]]) -> tuple[dict[str, Outcome], dict[str, str]]:
    """Run each SDK call in its own thread; return outcomes and what each one printed."""
    outcomes = {name: Outcome() for name in jobs}
    output = PerThreadOutput()

    def run(name: str) -> None:
        output.register(name)
        try:
            outcomes[name].value = jobs[name]()
        except BaseException as exc:  # handed to the test that owns this run
            outcomes[name].error = exc

    # sys.stdout is process-wide: every thread's print() lands in `output`.
    with contextlib.redirect_stdout(output), ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(run, jobs))
    return outcomes, {name: output.text(name) for name in jobs}


@pytest.fixture(scope="module")
def runs(sdk: Sdk, s3_server: S3Server, images: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Data in the S3 store, then the three SDK runs of the module, side by side."""
    bucket = f"sdk-{uuid.uuid4().hex[:12]}"
    s3 = s3_server.boto()
    s3.create_bucket(Bucket=bucket)
    for key, body in {"train/a.csv": "1,2\n", "train/nested/b.csv": "3,4\n",
                      "proc/first/one.txt": "alpha", "proc/first/sub/two.txt": "beta",
                      "proc/second/three.txt": "gamma"}.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    source = tmp_path_factory.mktemp("source")
    (source / "train.py").write_text(TRAIN_PY)
    (source / "helper.txt").write_text("shipped with the code\n")
    s3.put_object(Bucket=bucket, Key="model/model.tar.gz",
                  Body=tar_gz({"model.txt": b"sdk-model"}))
    s3.put_object(Bucket=bucket, Key="tin/rows.csv", Body=b"1,2\n3,4\n")
    suffix = uuid.uuid4().hex[:6]
    names = {"estimator": f"sdk-seed-{suffix}", "framework": f"sdk-framework-{suffix}",
             "processor": f"sdk-processing-{suffix}", "deploy": f"sdk-endpoint-{suffix}"}

    def estimator() -> Any:
        est = sdk.estimator(image_uri=images["seed000"], role=ROLE, instance_count=1,
                        instance_type="ml.m5.large", output_path=f"s3://{bucket}/out",
                        sagemaker_session=sdk.session(bucket))
        est.fit({"training": f"s3://{bucket}/train"}, logs=True, job_name=names["estimator"])
        # Attached here, while the framework run still tails its logs: attach waits for the
        # job (5 s before its first look) even when it has long finished.
        attached = sdk.estimator.attach(names["estimator"],
                                        sagemaker_session=sdk.session(bucket))
        return est, attached

    def framework() -> Any:
        est = sdk.estimator(image_uri=images["toolkit"], role=ROLE, instance_count=1,
                        instance_type="ml.m5.large", output_path=f"s3://{bucket}/fw-out",
                        entry_point="train.py", source_dir=str(source),
                        hyperparameters={"epochs": 2}, sagemaker_session=sdk.session(bucket))
        est.fit(logs=True, job_name=names["framework"])
        return est

    def processor() -> Any:
        proc = sdk.processor(image_uri=images["processing"], role=ROLE, instance_count=1,
                         instance_type="ml.m5.large",
                         entrypoint=["python3", "/opt/program/p.py"],
                         sagemaker_session=sdk.session(bucket))
        proc.run(inputs=[
            sdk.processing_input(source=f"s3://{bucket}/proc/first",
                            destination="/opt/ml/processing/input/first"),
            sdk.processing_input(source=f"s3://{bucket}/proc/second",
                            destination="/opt/ml/processing/input/second"),
        ], outputs=[
            sdk.processing_output(source="/opt/ml/processing/output/report",
                             destination=f"s3://{bucket}/proc-out/report"),
        ], arguments=["--flag", "on"], job_name=names["processor"], logs=True, wait=True)
        return proc

    def deploy() -> Any:
        # Model.deploy -> predict -> transformer -> delete, as a notebook does it; the
        # image is a plain http.server `serve` that echoes the request and its model file.
        model = sdk.model(image_uri=images["plain-serve"], role=ROLE,
                          model_data=f"s3://{bucket}/model/model.tar.gz",
                          predictor_cls=sdk.module.predictor.Predictor,
                          sagemaker_session=sdk.session(bucket))
        predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                 endpoint_name=names["deploy"])
        answer = predictor.predict(b"1,2,3", initial_args={"ContentType": "text/csv"})
        transformer = model.transformer(instance_count=1, instance_type="ml.m5.large",
                                        output_path=f"s3://{bucket}/tout",
                                        strategy="SingleRecord", assemble_with="Line")
        transformer.transform(f"s3://{bucket}/tin", content_type="text/csv",
                              split_type="Line", wait=True, logs=False)
        predictor.delete_model()
        predictor.delete_endpoint()
        return answer, transformer

    outcomes, printed = run_all({"estimator": estimator, "framework": framework,
                                 "processor": processor, "deploy": deploy})
    return Runs(s3_server, bucket, names, outcomes, printed)


def test_estimator_fit_completes_with_model_in_s3(runs: Runs) -> None:
    est, _ = runs.outcomes["estimator"].get()
    name = runs.names["estimator"]
    assert est.latest_training_job.name == name
    key = f"out/{name}/output/model.tar.gz"
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
    assert runs.keys(f"{name}/source/") == [f"{name}/source/sourcedir.tar.gz"]
    assert est.hyperparameters()["sagemaker_submit_directory"] == f'"{code_uri}"'
    assert est.hyperparameters()["sagemaker_program"] == '"train.py"'
    assert est.hyperparameters()["epochs"] == "2"
    assert set(runs.read_tar(f"{name}/source/sourcedir.tar.gz")) == {"train.py", "helper.txt"}
    assert runs.read_tar(f"fw-out/{name}/output/model.tar.gz") == {
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
    assert attached.output_path == f"s3://{runs.bucket}/out"
    assert attached.output_kms_key == ""


def test_model_deploy_predict_transform_and_delete(runs: Runs, shipyard: tuple[ApiServer, str]
                                                   ) -> None:
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
    server, _ = shipyard
    plane = server.plane
    # (Model.transformer() made a model of its own, which the predictor does not delete.)
    assert [r.name for r in plane.ctx.store.list_jobs("model", name_contains="plain-serve")
            ] == [transformer.model_name]
    deadline = time.monotonic() + 60
    while plane.ctx.store.list_jobs("endpoint", name_contains=runs.names["deploy"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
