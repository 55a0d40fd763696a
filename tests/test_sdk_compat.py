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
own ``sagemaker.Session`` (as three notebook cells in three kernels would): the SDK's log
tailing sleeps 10 s between rounds and describes the job every 30 s, so one run with
``logs=True`` takes about 40 s however quick its job is. Their printed output is captured
together and each test looks for its own job's lines.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from shipyard.api.server import ApiServer
from shipyard.control import ControlPlane, Settings
from shipyard.runtimes import DockerRuntime
from tests.support import s3server
from tests.support.s3server import S3Server

sagemaker = pytest.importorskip("sagemaker")
from sagemaker.estimator import Estimator  # noqa: E402
from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor  # noqa: E402

pytestmark = pytest.mark.docker
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

TRAIN_PY = '''import json, os, sys
from pathlib import Path

hp = json.loads(os.environ["SM_HPS"])
print("framework hyperparameters", json.dumps(hp, sort_keys=True), flush=True)
print("program", sys.argv[0], "args", sys.argv[1:], flush=True)
model_dir = Path(os.environ["SM_MODEL_DIR"])
(model_dir / "weights.json").write_text(json.dumps({"epochs": hp["epochs"]}))
for epoch in range(int(hp["epochs"])):
    print(f"framework epoch {epoch} done", flush=True)
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
    server_url: str
    s3: S3Server
    bucket: str
    settings: Settings
    printed: str = ""
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def boto(self) -> Any:
        return self.s3.boto()

    def keys(self, prefix: str) -> list[str]:
        pages = self.boto().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read_tar(self, key: str) -> dict[str, bytes]:
        body = self.boto().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            return {m.name.lstrip("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def shipyard(tmp_path_factory: pytest.TempPathFactory, docker_client: Any,
             s3_server: S3Server) -> Iterator[tuple[ApiServer, str, Settings]]:
    data = tmp_path_factory.mktemp("sdk")
    settings = Settings.load({
        "data_dir": str(data / "state"), "stop_grace_seconds": 3, "api_port": 0,
        "s3_endpoint_url": s3_server.url, "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing"}, environ={})
    runtime = DockerRuntime(docker_client, labels={"org.shipyard.scope": "shipyard-tests"})
    plane = ControlPlane(settings, runtime)
    server = ApiServer(settings, plane)
    url = server.start_in_thread()
    try:
        yield server, url, settings
    finally:
        server.stop()
        plane.close()


@pytest.fixture(scope="module")
def sdk_environment(shipyard: tuple[ApiServer, str, Settings], s3_server: S3Server,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The user's environment (docs/sdk.md), set for the module and restored after it."""
    server, url, _ = shipyard
    home = tmp_path_factory.mktemp("sdk-home")
    config = home / "sagemaker-config.yaml"
    config.write_text(SDK_CONFIG)
    (home / "aws-config").write_text("")
    (home / "aws-credentials").write_text("")
    access_key, secret_key = server.keys.default
    env = {
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_SAGEMAKER": url,
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
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                     "AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_REGION"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


def new_session(bucket: str) -> Any:
    """What a user writes: a plain boto3 session (endpoints and keys come from the
    environment) and the bucket named explicitly."""
    return sagemaker.Session(boto_session=boto3.Session(region_name=REGION),
                             default_bucket=bucket)


def run_all(jobs: dict[str, Callable[[], Any]]) -> tuple[dict[str, Outcome], str]:
    """Run each SDK call in its own thread; return outcomes and everything they printed."""
    outcomes = {name: Outcome() for name in jobs}

    def run(name: str) -> None:
        try:
            outcomes[name].value = jobs[name]()
        except BaseException as exc:  # noqa: BLE001 - handed to the test that owns it
            outcomes[name].error = exc

    printed = io.StringIO()
    # sys.stdout is process-wide: every thread's print() lands here.
    with contextlib.redirect_stdout(printed), ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(run, jobs))
    return outcomes, printed.getvalue()


@pytest.fixture(scope="module")
def runs(shipyard: tuple[ApiServer, str, Settings], sdk_environment: dict[str, str],
         s3_server: S3Server, images: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Runs:
    _, url, settings = shipyard
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
    suffix = uuid.uuid4().hex[:6]
    names = {"estimator": f"sdk-seed-{suffix}", "framework": f"sdk-framework-{suffix}",
             "processor": f"sdk-processing-{suffix}"}

    def estimator() -> Any:
        est = Estimator(image_uri=images["seed000"], role=ROLE, instance_count=1,
                        instance_type="ml.m5.large", output_path=f"s3://{bucket}/out",
                        sagemaker_session=new_session(bucket))
        est.fit({"training": f"s3://{bucket}/train"}, logs=True, job_name=names["estimator"])
        return est

    def framework() -> Any:
        est = Estimator(image_uri=images["toolkit"], role=ROLE, instance_count=1,
                        instance_type="ml.m5.large", output_path=f"s3://{bucket}/fw-out",
                        entry_point="train.py", source_dir=str(source),
                        hyperparameters={"epochs": 2}, sagemaker_session=new_session(bucket))
        est.fit(logs=True, job_name=names["framework"])
        return est

    def processor() -> Any:
        proc = Processor(image_uri=images["processing"], role=ROLE, instance_count=1,
                         instance_type="ml.m5.large",
                         entrypoint=["python3", "/opt/program/p.py"],
                         sagemaker_session=new_session(bucket))
        proc.run(inputs=[
            ProcessingInput(source=f"s3://{bucket}/proc/first",
                            destination="/opt/ml/processing/input/first"),
            ProcessingInput(source=f"s3://{bucket}/proc/second",
                            destination="/opt/ml/processing/input/second"),
        ], outputs=[
            ProcessingOutput(source="/opt/ml/processing/output/report",
                             destination=f"s3://{bucket}/proc-out/report"),
        ], arguments=["--flag", "on"], job_name=names["processor"], logs=True, wait=True)
        return proc

    outcomes, printed = run_all({"estimator": estimator, "framework": framework,
                                 "processor": processor})
    result = Runs(url, s3_server, bucket, settings, printed, outcomes)
    result.outcomes["names"] = Outcome(names)
    return result


def test_estimator_fit_completes_with_model_in_s3(runs: Runs) -> None:
    print(runs.printed)
    est = runs.outcomes["estimator"].get()
    name = runs.outcomes["names"].value["estimator"]
    assert est.latest_training_job.name == name
    key = f"out/{name}/output/model.tar.gz"
    assert est.model_data == f"s3://{runs.bucket}/{key}"
    assert runs.read_tar(key) == {"model.json": b'{"training_files": 2}'}
    # The SDK printed the job's status line and tailed its (empty) log streams to the end.
    assert f"{name}: Starting - Starting the training job" in runs.printed


def test_framework_estimator_stages_source_dir(runs: Runs) -> None:
    est = runs.outcomes["framework"].get()
    name = runs.outcomes["names"].value["framework"]
    # The generic Estimator uploads source_dir itself (EstimatorBase._stage_user_code_in_s3).
    assert runs.keys(f"{name}/source/") == [f"{name}/source/sourcedir.tar.gz"]
    assert est.hyperparameters()["sagemaker_submit_directory"] == (
        f'"s3://{runs.bucket}/{name}/source/sourcedir.tar.gz"')
    files = runs.read_tar(f"fw-out/{name}/output/model.tar.gz")
    assert files == {"weights.json": b'{"epochs": 2}'}
    assert "framework epoch 1 done" in runs.printed
    assert '"epochs": 2' in runs.printed


def test_processor_run_writes_outputs(runs: Runs) -> None:
    proc = runs.outcomes["processor"].get()
    name = runs.outcomes["names"].value["processor"]
    assert proc.latest_job.job_name == name
    summary = runs.boto().get_object(Bucket=runs.bucket, Key="proc-out/report/summary.txt")
    assert summary["Body"].read().decode().splitlines() == [
        "first/one.txt: alpha", "first/sub/two.txt: beta", "second/three.txt: gamma"]
    assert runs.keys("proc-out/report/") == ["proc-out/report/nested/count.txt",
                                             "proc-out/report/summary.txt"]
    assert f"args ['--flag', 'on'] env {name}" in runs.printed
    described = proc.latest_job.describe()
    assert described["ProcessingJobStatus"] == "Completed"
    assert described["ExitMessage"] == "processed 3 files"


def test_estimator_attach_to_finished_job(runs: Runs) -> None:
    original = runs.outcomes["estimator"].get()
    name = runs.outcomes["names"].value["estimator"]
    attached = Estimator.attach(name, sagemaker_session=new_session(runs.bucket))
    assert attached.latest_training_job.name == name
    assert attached.model_data == original.model_data
    assert attached.image_uri == original.image_uri
    assert attached.role == ROLE
    assert attached.instance_count == 1
    assert attached.instance_type == "ml.m5.large"
    assert attached.output_path == f"s3://{runs.bucket}/out"
