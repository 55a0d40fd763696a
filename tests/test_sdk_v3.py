"""The SageMaker Python SDK v3 (``pip install sagemaker``: sagemaker-core, -train, -serve),
unchanged, against Shipyard: ``shipyard server status``'s environment is all it takes.

v3 cannot share ``.venv`` with v2 (the test extra pins ``sagemaker<3``), so it lives in
``.venv-sdk3`` (``scripts/setup.sh --test``) and runs here as what a user runs: a Python
script per notebook (``tests/sdk_v3/``), each in a process of its own, with no role, no
bucket and no endpoint in code. A script's environment is exactly:

* the variables ``shipyard server status`` prints for a real ``shipyard server`` with its
  embedded S3 store (endpoints, key pair, region, ``SAGEMAKER_USER_CONFIG_OVERRIDE`` naming
  the defaults file the server wrote: default bucket, execution role, no telemetry);
* isolation from this machine: ``HOME`` a fresh folder, ``AWS_CONFIG_FILE`` /
  ``AWS_SHARED_CREDENTIALS_FILE`` empty files, ``AWS_EC2_METADATA_DISABLED``, ``PATH``;
* the network blocked except loopback (``tests.support.offline``): whatever the SDK tries to
  reach off this machine fails at once and is logged, and each run's log must stay empty.

The scripts run side by side (v3 waits 30 s before it first looks at a new endpoint); each
prints one result line (``tests/sdk_v3/_common.py``) that the tests below check, together
with what landed in the store.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support import offline
from tests.support.files import write_tar_gz, write_tree
from tests.support.images import ROOT
from tests.support.user_server import UserServer, user_server

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SDK3_PYTHON = ROOT / ".venv-sdk3" / "bin" / "python"
SCRIPTS = Path(__file__).with_name("sdk_v3")
RESULT = "SDK_V3_RESULT "
#: What the server's defaults file names (shipyard.api.sdk_defaults).
ROLE = "arn:aws:iam::000000000000:role/ShipyardExecutionRole"
BUCKET = "sagemaker-us-east-1-000000000000"
#: One script, start to end (the longest, deploy, takes about 45 s).
RUN_TIMEOUT = 300.0

SOURCE_TRAIN_PY = """import os, sys
from pathlib import Path
print("v3 source args", sys.argv[1:], flush=True)
Path(os.environ["SM_MODEL_DIR"], "model.txt").write_text("trained by v3 " + sys.argv[-1])
"""

PREP_PY = """import pathlib, sys
out = pathlib.Path("/opt/ml/processing/output/result")
(out / "args.txt").write_text(" ".join(sys.argv[1:]))
print("v3 prep args", sys.argv[1:], flush=True)
"""


@dataclass
class Run:
    """One script's run: its exit status, what it printed, and what it tried to reach off
    this machine."""

    name: str
    returncode: int | None
    output: str
    offline_attempts: list[str] = field(default_factory=list)

    @property
    def result(self) -> dict[str, Any]:
        for line in self.output.splitlines():
            if line.startswith(RESULT):
                value: dict[str, Any] = json.loads(line[len(RESULT):])
                return value
        raise AssertionError(f"{self.name} exited {self.returncode} with no result; it printed"
                             f" (last 6,000 characters):\n{self.output[-6000:]}")


Runs = dict[str, Run]


@pytest.fixture(scope="module")
def sdk3() -> Path:
    """The v3 interpreter, with the SDK importable."""
    problem = None
    if not SDK3_PYTHON.exists():
        problem = f"{SDK3_PYTHON} is missing"
    else:
        # The version, not an import: importing sagemaker.serve without a region fails.
        done = subprocess.run(
            [str(SDK3_PYTHON), "-c",
             "import importlib.metadata as m; print(m.version('sagemaker'))"],
            capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or not done.stdout.startswith("3."):
            problem = f"no SDK v3 in .venv-sdk3: {done.stdout.strip()} {done.stderr[-2000:]}"
    if problem is not None:
        # scripts/setup.sh --test installs it: in CI its absence is a failure, not a skip.
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"SDK v3 is required in CI: {problem}")
        pytest.skip(f"{problem} (run scripts/setup.sh --test)")
    return SDK3_PYTHON


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[UserServer]:
    """``shipyard server`` with its store, containers on the real engine in this session's
    scope."""
    with user_server(tmp_path_factory.mktemp("sdk3") / "state",
                     stop_grace_seconds="3") as running:
        yield running


def store(server: UserServer, service: str) -> Any:
    """A boto3 client of the test itself, from the status variables, named explicitly."""
    env = server.env
    endpoint = env["AWS_ENDPOINT_URL_S3" if service == "s3" else "AWS_ENDPOINT_URL_SAGEMAKER"]
    return boto3.client(service, endpoint_url=endpoint, region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def read_tar(server: UserServer, uri: str) -> dict[str, bytes]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = store(server, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return {m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def runs(sdk3: Path, server: UserServer, images: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every script of the module, side by side, each with its own working folder and offline
    log, all against the one server."""
    base = tmp_path_factory.mktemp("sdk3-runs")
    home = base / "home"
    home.mkdir()
    (base / "aws-config").write_text("")
    (base / "aws-credentials").write_text("")
    inputs = base / "inputs"
    source = write_tree(inputs / "source", {"train.py": SOURCE_TRAIN_PY})
    data = write_tree(inputs / "data", {"a.csv": "1,2\n", "nested/b.csv": "3,4\n"})
    model = inputs / "model"
    model.mkdir(parents=True)
    write_tar_gz(model / "model.tar.gz", {"model.txt": b"v3-served"})
    rows = write_tree(inputs / "rows", {"rows.csv": "1,2\n3,4\n"})
    raw = write_tree(inputs / "raw", {"first/one.txt": "alpha", "first/sub/two.txt": "beta",
                                      "second/three.txt": "gamma"})
    prep = write_tree(inputs / "prep", {"prep.py": PREP_PY})
    endpoint = f"v3-endpoint-{uuid.uuid4().hex[:8]}"
    commands = {
        "source": ["train.py", "source", images["toolkit"], str(source)],
        "plain": ["train.py", "plain", images["seed000"], str(data)],
        "deploy": ["deploy.py", images["plain-serve"], str(model), endpoint],
        "transform": ["transform.py", images["plain-serve"], str(model), str(rows)],
        "process": ["process.py", "plain", images["processing"], str(raw)],
        "framework": ["process.py", "framework", images["toolkit"], str(prep)],
    }
    isolation = {
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(base / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(base / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, (script, *args) in commands.items():
            work = base / name
            work.mkdir()
            env = {**server.env, **isolation, **offline.child_env(work / "offline.log")}
            with open(work / "output.txt", "wb") as out:
                started[name] = subprocess.Popen(
                    [str(sdk3), str(SCRIPTS / script), *args], cwd=work, env=env,
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + RUN_TIMEOUT
        for proc in started.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # killed below; its test shows what it printed
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    done = {}
    for name, proc in started.items():
        work = base / name
        log = work / "offline.log"
        done[name] = Run(name, proc.returncode, (work / "output.txt").read_text(errors="replace"),
                         log.read_text().splitlines() if log.exists() else [])
    return done


def test_model_trainer_runs_an_image_with_a_local_channel(runs: Runs, server: UserServer
                                                          ) -> None:
    result = runs["plain"].result
    job = result["job"]
    assert result["status"] == "Completed"
    assert result["role"] == ROLE  # SageMaker.TrainingJob.RoleArn in the defaults file
    assert result["output_path"] == f"s3://{BUCKET}/v3-plain"
    # The SDK uploaded the local folder to the default bucket itself.
    assert result["channels"] == {"training": f"s3://{BUCKET}/v3-plain/{job}/input/training"}
    assert result["model"] == f"s3://{BUCKET}/v3-plain/{job}/output/model.tar.gz"
    # seed000 counts the files of its "training" channel.
    assert read_tar(server, result["model"]) == {"model.json": b'{"training_files": 2}'}
    assert result["secondary"] == ["Starting", "Downloading", "Training", "Uploading",
                                   "Completed"]
    assert "Final Resource Status: [bold]Completed" in runs["plain"].output


def test_model_trainer_source_code_trains_and_shows_logs(runs: Runs, server: UserServer
                                                         ) -> None:
    # ModelTrainer(source_code=...) starts the container with `chmod +x
    # /opt/ml/input/data/sm_drivers/sm_train.sh && ...`: the channel must be the host's own
    # writable copy, as SageMaker's is (staging.private_copies).
    run = runs["source"]
    result = run.result
    job = result["job"]
    assert result["status"] == "Completed"
    assert result["role"] == ROLE
    assert set(result["channels"]) == {"code", "sm_drivers"}
    assert result["channels"]["code"] == f"s3://{BUCKET}/v3-source/{job}/input/code"
    assert result["model"] == f"s3://{BUCKET}/v3-source/{job}/output/model.tar.gz"
    assert read_tar(server, result["model"]) == {"model.txt": b"trained by v3 2"}
    # The job's own lines, shown by train(logs=True): v3's driver passes hyperparameters
    # as arguments.
    assert "v3 source args ['--epochs', '2']" in run.output
    assert "Training Container Execution Completed" in run.output


def test_model_builder_deploys_invokes_and_cleans_up(runs: Runs, server: UserServer,
                                                    images: dict[str, str]) -> None:
    result = runs["deploy"].result
    assert result["model_data"] == f"s3://{BUCKET}/v3-deploy/model.tar.gz"
    assert result["image"] == images["plain-serve"]
    # No role in code or in the file's Serve section: ModelBuilder resolves the caller's
    # role (STS GetCallerIdentity, IAM GetRole) and simulates its permissions.
    assert result["role"] == ROLE
    assert result["status"] == "InService"
    answer = json.loads(result["answer"])
    assert (answer["model"], answer["body"], answer["content_type"], answer["accept"],
            answer["attributes"]) == ("v3-served", "1,2,3", "text/csv", "application/json",
                                      "from=v3")
    assert (result["content_type"], result["custom_attributes"], result["variant"]) == (
        "application/json", "seen=1", "AllTraffic")
    assert result["deleted"] == {"endpoint": True, "endpoint_config": True, "model": True}
    sagemaker = store(server, "sagemaker")
    assert sagemaker.list_endpoints(NameContains=result["endpoint"])["Endpoints"] == []
    assert sagemaker.list_models(NameContains=result["model"])["Models"] == []


def test_transformer_writes_predictions_to_the_default_bucket(runs: Runs, server: UserServer
                                                              ) -> None:
    result = runs["transform"].result
    assert result["status"] == "Completed"
    assert result["input"] == f"s3://{BUCKET}/v3-transform/input"
    assert result["output_path"] == f"s3://{BUCKET}/{result['job']}"
    assert list(result["outputs"]) == ["rows.csv.out"]
    lines = [json.loads(line) for line in result["outputs"]["rows.csv.out"].splitlines()]
    assert [(line["model"], line["body"]) for line in lines] == [("v3-served", "1,2"),
                                                                ("v3-served", "3,4")]
    # Read back by the test too, not only by the SDK.
    key = f"{result['job']}/rows.csv.out"
    body = store(server, "s3").get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    assert body == result["outputs"]["rows.csv.out"]
    # Transformer.delete_model() removed the model ModelBuilder.build() made.
    assert store(server, "sagemaker").list_models(NameContains=result["model"])["Models"] == []


def test_processor_runs_with_local_inputs(runs: Runs) -> None:
    result = runs["process"].result
    job = result["job"]
    assert result["status"] == "Completed"
    assert result["role"] == ROLE  # SageMaker.ProcessingJob.RoleArn in the defaults file
    assert result["exit_message"] == "processed 3 files"
    assert result["inputs"] == {name: f"s3://{BUCKET}/{job}/input/{name}"
                                for name in ("first", "second")}
    assert result["output"] == f"s3://{BUCKET}/{job}/output/report"
    assert result["outputs"] == {
        "summary.txt": "first/one.txt: alpha\nfirst/sub/two.txt: beta\nsecond/three.txt: gamma\n",
        "nested/count.txt": "3"}
    # The image's program (tests/support/workloads.py) printed its arguments.
    assert f"args ['--flag', 'on'] env {job}" in runs["process"].output


def test_framework_processor_runs_packed_code(runs: Runs) -> None:
    # FrameworkProcessor's runproc.sh unpacks sourcedir.tar.gz where its "code" input lies
    # (`cd /opt/ml/processing/input/code && tar -xzf sourcedir.tar.gz`).
    run = runs["framework"]
    result = run.result
    job = result["job"]
    assert result["status"] == "Completed"
    assert result["role"] == ROLE
    assert result["inputs"] == {"code": f"s3://{BUCKET}/{job}/source/",
                                "entrypoint": f"s3://{BUCKET}/{job}/source/runproc.sh"}
    assert result["output"] == f"s3://{BUCKET}/{job}/output/result"
    assert result["outputs"] == {"args.txt": "--rows 3"}
    assert "v3 prep args ['--rows', '3']" in run.output


@pytest.mark.parametrize("name", ["source", "plain", "deploy", "transform", "process",
                                  "framework"])
def test_nothing_reached_past_loopback(runs: Runs, name: str) -> None:
    assert runs[name].offline_attempts == []

