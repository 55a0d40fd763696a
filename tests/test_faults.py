"""Faults (issue 10): what an operator and a crash do to a real server, real containers and
real files, and that nothing is lost.

The server is a real subprocess (``python -m shipyard.api.server``), so SIGTERM and SIGKILL
are real; it is driven by real boto3 clients. Each case stops the server in the middle of
something, starts a new one on the same data directory and checks that every resource ends
where SageMaker would leave it. The workloads are one small image (``fault``): ``train``
prints numbered lines then writes a model (or, with ``MODE=process``, a processing report);
``serve`` answers ``/ping`` once ``READY_DELAY`` seconds have passed and sums CSV rows on
``/invocations``, ``DELAY`` seconds per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shipyard.api import dataplane
from shipyard.api.credentials import load_or_create
from shipyard.api.server import healthy, read_info, stop_data_plane
from shipyard.settings import Settings
from tests.support import jobs
from tests.support.api import session
from tests.support.cli import shipyard_env
from tests.support.containers import containers
from tests.support.files import write_tar_gz
from tests.support.images import ROOT, build_image
from tests.support.jobs import ROLE
from tests.support.load import ThreadedLoad
from tests.support.polling import WAIT_S, until, until_final

pytestmark = pytest.mark.docker

SIGNALS = [pytest.param(signal.SIGTERM, id="sigterm"), pytest.param(signal.SIGKILL, id="sigkill")]

TRAIN = r'''#!/usr/bin/env python3
import json, os, pathlib, sys, time
mode = os.environ.get("MODE", "train")
lines = int(os.environ.get("LINES", "10"))
delay = float(os.environ.get("DELAY", "0.3"))
print("start", mode, flush=True)
for i in range(lines):
    print(f"line {i} of {lines}", flush=True)
    time.sleep(delay)
if mode == "process":
    inp = pathlib.Path("/opt/ml/processing/input/data")
    names = sorted(p.name for p in inp.iterdir())
    out = pathlib.Path("/opt/ml/processing/output/result")
    (out / "summary.txt").write_text("\n".join(names) + "\n")
    pathlib.Path("/opt/ml/output/message").write_text(f"processed {len(names)} files")
else:
    files = sum(1 for p in pathlib.Path("/opt/ml/input/data/training").rglob("*") if p.is_file())
    pathlib.Path("/opt/ml/model/model.json").write_text(json.dumps({"files": files}))
    if os.environ.get("MODEL_MB"):
        pathlib.Path("/opt/ml/model/weights.bin").write_bytes(
            os.urandom(int(os.environ["MODEL_MB"]) << 20))
print("done", flush=True)
'''

SERVE = r'''#!/usr/bin/env python3
import json, os, signal, socket, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
BORN = time.monotonic()
READY_DELAY = float(os.environ.get("READY_DELAY", "0"))
DELAY = float(os.environ.get("DELAY", "0"))
try:
    MODEL = open("/opt/ml/model/model.txt").read().strip()
except OSError:
    MODEL = ""
print(f"serve: model {MODEL!r}", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/ping":
            ready = time.monotonic() - BORN >= READY_DELAY
            return self.answer(200 if ready else 503, b"", "text/plain")
        self.answer(404, b"", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        time.sleep(DELAY)
        if self.headers.get("Content-Type") == "text/csv":
            rows = [sum(float(v) for v in line.split(",")) for line in body.split("\n") if line]
            print(f"scored {len(rows)}", flush=True)
            return self.answer(200, "\n".join("%g" % r for r in rows).encode(), "text/csv")
        reply = {"model": MODEL, "host": socket.gethostname(), "body": body}
        self.answer(200, json.dumps(reply).encode(), "application/json")


port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
'''


@pytest.fixture(scope="module")
def image(docker_client: Any, base_image: str) -> str:
    """``train`` and ``serve`` on the PATH, no entrypoint: SageMaker's ``docker run IMAGE
    train|serve``. No toolkit, so the image does not change with the source tree."""
    return build_image(
        docker_client, "fault", {"train": TRAIN, "serve": SERVE},
        "COPY train serve /usr/local/bin/\nRUN chmod 755 /usr/local/bin/train "
        "/usr/local/bin/serve\nENV PYTHONUNBUFFERED=1", with_toolkit=False)


# -- the server process ------------------------------------------------------------------------


class Server:
    """``python -m shipyard.api.server`` on one data directory, started and stopped for real."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")},
                    **shipyard_env(data_dir, stop_grace_seconds="3",
                                   endpoint_startup_timeout_seconds="60"),
                    "PYTHONPATH": str(ROOT / "src")}
        self.settings = Settings.load({"data_dir": str(data_dir)}, environ={})
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> Server:
        assert self.proc is None or self.proc.poll() is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.data_dir / f"server-{self.starts}.log", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shipyard.api.server", "--data-dir", str(self.data_dir)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = read_info(self.settings)
            if info is not None and info.pid == self.proc.pid and healthy(info.url):
                self.url = info.url
                self._clients()
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the server did not start (exit {self.proc.poll()}):\n"
                             + self.log())

    def _clients(self) -> None:
        clients = session(*load_or_create(self.data_dir).default)
        config = Config(retries={"max_attempts": 1}, read_timeout=30)
        self.sm = clients.client("sagemaker", endpoint_url=self.url, config=config)
        self.rt = clients.client("sagemaker-runtime", endpoint_url=self.url, config=config)
        self.logs = clients.client("logs", endpoint_url=self.url, config=config)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.data_dir.glob("server-*.log")))

    def kill(self, signum: int, timeout: float = 30.0) -> float:
        """Send ``signum`` and wait for the process to end; returns how long it took."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signum)
        self.proc.wait(timeout)
        return time.monotonic() - began

    def restart(self, signum: int) -> Server:
        self.kill(signum)
        return self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def server(tmp_path: Path, docker_client: Any, image: str) -> Iterator[Server]:
    srv = Server(tmp_path / "state")
    srv.start()
    try:
        yield srv
    finally:
        if srv.running():
            # Delete what the test left so the server removes its containers before it exits.
            with contextlib.suppress(Exception):
                for ep in srv.sm.list_endpoints()["Endpoints"]:
                    with contextlib.suppress(ClientError):
                        srv.sm.delete_endpoint(EndpointName=ep["EndpointName"])
            with contextlib.suppress(subprocess.TimeoutExpired):
                srv.kill(signal.SIGTERM, timeout=30)
        if srv.running():
            srv.kill(signal.SIGKILL)
        # SIGTERM leaves the data plane serving (for the next server): stop it too.
        stop_data_plane(srv.settings)


# -- helpers -----------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def training_request(name: str, image: str, tmp: Path, data: Path | None = None, *,
                     env: dict[str, str] | None = None, sharded: bool = False
                     ) -> dict[str, Any]:
    request = jobs.training_request(name, tmp, image=image, files={"a.csv": "1\n"}, data=data,
                                    max_runtime_s=120, Environment=env or {})
    if sharded:
        # A sharded channel is copied (hard-linked) file by file: staging takes a while.
        uri = request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
        request["InputDataConfig"] = [jobs.channel(uri, S3DataDistributionType="ShardedByS3Key")]
    return request


def log_messages(srv: Server, group: str, name: str) -> list[str]:
    streams = srv.logs.describe_log_streams(logGroupName=group,
                                            logStreamNamePrefix=f"{name}/")["logStreams"]
    messages = []
    for stream in streams:
        kwargs: dict[str, Any] = {"logGroupName": group,
                                  "logStreamName": stream["logStreamName"],
                                  "startFromHead": True}
        while True:
            page = srv.logs.get_log_events(**kwargs)
            messages += [e["message"] for e in page["events"]]
            if not page["events"] or page["nextForwardToken"] == kwargs.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextForwardToken"]
    return messages


def create_model(srv: Server, name: str, image: str, tmp: Path, text: str,
                 *, ballast_mb: int = 0, **env: str) -> None:
    files = {"model.txt": text.encode()}
    if ballast_mb:
        files["ballast.bin"] = os.urandom(ballast_mb << 20)
    tarball = write_tar_gz(tmp / f"{name}.tar.gz", files, compresslevel=1)
    srv.sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": image, "ModelDataUrl": tarball.as_uri(), "Environment": env})


def create_config(srv: Server, name: str, model: str, count: int = 1) -> None:
    srv.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": count,
        "InstanceType": "ml.m5.large"}])


def deploy(srv: Server, name: str, image: str, tmp: Path, text: str = "v1", *,
           count: int = 1, wait: bool = True, **model_options: Any) -> None:
    create_model(srv, f"{name}-m", image, tmp, text, **model_options)
    create_config(srv, f"{name}-c", f"{name}-m", count)
    srv.sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")
    if wait:
        wait_endpoint(srv, name)


def wait_endpoint(srv: Server, name: str, timeout: float = WAIT_S) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        record = srv.sm.describe_endpoint(EndpointName=name)
        return record if record["EndpointStatus"] not in ("Creating", "Updating",
                                                          "Deleting") else None
    record = dict(until(f"endpoint {name} settled", settled, timeout, poll=0.2))
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    return record


def invoke(srv: Server, name: str, body: str = '{"x": 1}') -> dict[str, Any]:
    response = srv.rt.invoke_endpoint(EndpointName=name, Body=body.encode(),
                                      ContentType="application/json")
    return dict(json.loads(response["Body"].read()))


def endpoint_gone(srv: Server, name: str) -> bool:
    try:
        srv.sm.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ValidationException"
        assert "Could not find endpoint" in exc.response["Error"]["Message"]
        return True
    return False


def answers_lists(srv: Server) -> None:
    """The restarted server answers the List* calls (none of them chokes on a record)."""
    srv.sm.list_training_jobs()
    srv.sm.list_processing_jobs()
    srv.sm.list_transform_jobs()
    srv.sm.list_endpoints()
    srv.sm.list_models()


# -- 1. training job mid-run -------------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS)
def test_training_job_survives_a_server_stop_mid_run(
        server: Server, image: str, tmp_path: Path, docker_client: Any, signum: int) -> None:
    name = unique("ft-train")
    lines = 12
    server.sm.create_training_job(**training_request(
        name, image, tmp_path, env={"LINES": str(lines), "DELAY": "0.4"}))
    until("SecondaryStatus Training", lambda: server.sm.describe_training_job(
        TrainingJobName=name)["SecondaryStatus"] == "Training")
    # Mid-run for real: the container has printed some of its lines, not all.
    until("the container's first lines", lambda: any(
        b"line 2 " in c.logs() for c in containers(docker_client, name, running_only=True)))
    server.restart(signum)

    record = until_final(lambda: server.sm.describe_training_job(TrainingJobName=name),
                         "TrainingJobStatus")
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    model = tmp_path / "out" / name / "output" / "model.tar.gz"
    assert record["ModelArtifacts"]["S3ModelArtifacts"] == model.as_uri()
    with tarfile.open(model) as tar:
        member = tar.extractfile("model.json")
        assert member is not None and json.loads(member.read()) == {"files": 1}
    messages = [m.rstrip("\n") for m in log_messages(server, "/aws/sagemaker/TrainingJobs",
                                                     name)]
    expected = ["start train", *(f"line {i} of {lines}" for i in range(lines)), "done"]
    assert messages == expected
    answers_lists(server)
    assert [j["TrainingJobName"] for j in server.sm.list_training_jobs()[
        "TrainingJobSummaries"]] == [name]
    until("the job's containers removed", lambda: not containers(docker_client, name), 15)


# -- 2. training job while it stages its input -------------------------------------------------


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    for i in range(20_000):
        (folder / f"{i:05d}.csv").write_bytes(b"1\n")
    return folder


@pytest.mark.parametrize("signum", SIGNALS)
def test_training_job_survives_a_server_stop_while_staging(
        server: Server, image: str, tmp_path: Path, docker_client: Any, many_files: Path,
        signum: int) -> None:
    name = unique("ft-stage")
    server.sm.create_training_job(**training_request(
        name, image, tmp_path, many_files, env={"LINES": "1", "DELAY": "0"}, sharded=True))
    until("SecondaryStatus Downloading", lambda: server.sm.describe_training_job(
        TrainingJobName=name)["SecondaryStatus"] in ("Downloading", "Training"), poll=0.01)
    server.kill(signum)
    # The window was hit when the stopped server had not started the container yet.
    staged_only = not containers(docker_client, name)
    server.start()

    record = until_final(lambda: server.sm.describe_training_job(TrainingJobName=name),
                         "TrainingJobStatus")
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    with tarfile.open(tmp_path / "out" / name / "output" / "model.tar.gz") as tar:
        member = tar.extractfile("model.json")
        assert member is not None and json.loads(member.read()) == {"files": 20_000}
    answers_lists(server)
    assert staged_only, "the server stopped after staging had finished (window missed)"


# -- 3. processing job mid-run -----------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS)
def test_processing_job_survives_a_server_stop_mid_run(
        server: Server, image: str, tmp_path: Path, docker_client: Any, signum: int) -> None:
    name = unique("ft-proc")
    data = tmp_path / "in"
    data.mkdir()
    for n in ("a.txt", "b.txt", "c.txt"):
        (data / n).write_text(n)
    server.sm.create_processing_job(
        ProcessingJobName=name, RoleArn=ROLE,
        AppSpecification={"ImageUri": image, "ContainerEntrypoint": ["train"]},
        Environment={"MODE": "process", "LINES": "10", "DELAY": "0.4"},
        ProcessingResources={"ClusterConfig": {"InstanceType": "ml.m5.large",
                                               "InstanceCount": 1, "VolumeSizeInGB": 1}},
        StoppingCondition={"MaxRuntimeInSeconds": 120},
        ProcessingInputs=[{"InputName": "data", "S3Input": {
            "S3Uri": data.as_uri(), "LocalPath": "/opt/ml/processing/input/data",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        ProcessingOutputConfig={"Outputs": [{"OutputName": "result", "S3Output": {
            "S3Uri": (tmp_path / "result").as_uri(),
            "LocalPath": "/opt/ml/processing/output/result", "S3UploadMode": "EndOfJob"}}]})
    until("the container's first lines", lambda: any(
        b"line 2 " in c.logs() for c in containers(docker_client, name, running_only=True)))
    server.restart(signum)

    record = until_final(lambda: server.sm.describe_processing_job(ProcessingJobName=name),
                         "ProcessingJobStatus")
    assert record["ProcessingJobStatus"] == "Completed", record.get("FailureReason")
    assert record["ExitMessage"] == "processed 3 files"
    assert (tmp_path / "result" / "summary.txt").read_text().split() == [
        "a.txt", "b.txt", "c.txt"]
    messages = [m.rstrip("\n") for m in log_messages(
        server, "/aws/sagemaker/ProcessingJobs", name)]
    assert messages == ["start process", *(f"line {i} of 10" for i in range(10)), "done"]
    answers_lists(server)
    until("the job's containers removed", lambda: not containers(docker_client, name), 15)


# -- 4. transform job mid-run ------------------------------------------------------------------


def transform_request(name: str, model: str, data: Path, out: Path) -> dict[str, Any]:
    return {
        "TransformJobName": name, "ModelName": model,
        "BatchStrategy": "SingleRecord", "MaxConcurrentTransforms": 1,
        "TransformInput": {"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": data.as_uri()}},
            "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": out.as_uri(), "AssembleWith": "Line",
                            "Accept": "text/csv"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }


def transform_setup(srv: Server, image: str, tmp: Path, rows: int, delay: str
                    ) -> tuple[str, Path, Path]:
    model = unique("ft-tm")
    create_model(srv, model, image, tmp, "t", DELAY=delay)
    data = tmp / "tin"
    data.mkdir()
    (data / "rows.csv").write_text("".join(f"{i},1\n" for i in range(rows)))
    return model, data, tmp / "tout"


@pytest.mark.parametrize("signum", SIGNALS)
def test_transform_job_survives_a_server_stop_mid_run(
        server: Server, image: str, tmp_path: Path, docker_client: Any, signum: int) -> None:
    name = unique("ft-tf")
    rows = 30
    model, data, out = transform_setup(server, image, tmp_path, rows, "0.1")
    server.sm.create_transform_job(**transform_request(name, model, data, out))
    until("some rows scored", lambda: any(
        c.logs().count(b"scored") >= 3
        for c in containers(docker_client, name, running_only=True)))
    server.restart(signum)

    record = until_final(lambda: server.sm.describe_transform_job(TransformJobName=name),
                         "TransformJobStatus")
    assert record["TransformJobStatus"] == "Completed", record.get("FailureReason")
    assert (out / "rows.csv.out").read_text().split() == [str(i + 1) for i in range(rows)]
    answers_lists(server)
    until("the job's containers removed", lambda: not containers(docker_client, name), 20)


# -- 5. CreateEndpoint in progress -------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS)
def test_endpoint_creating_survives_a_server_stop(
        server: Server, image: str, tmp_path: Path, docker_client: Any, signum: int) -> None:
    name = unique("ft-create")
    # Tens of MB to extract, and a container slow to answer /ping: a wide Creating window.
    deploy(server, name, image, tmp_path, "v1", wait=False, ballast_mb=24, READY_DELAY="3")
    until("a container of the new fleet", lambda: containers(docker_client, name))
    assert server.sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Creating"
    server.restart(signum)

    record = wait_endpoint(server, name)
    variant = record["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == variant["DesiredInstanceCount"] == 1
    assert invoke(server, name)["model"] == "v1"
    answers_lists(server)
    # The fleet the stopped server was starting is gone: one container serves.
    until("one container left", lambda: len(containers(docker_client, name)) == 1, 20)


def test_an_abandoned_fleet_leaves_no_model_copy_behind(
        server: Server, image: str, tmp_path: Path, docker_client: Any) -> None:
    name = unique("ft-leak")
    deploy(server, name, image, tmp_path, "v1", wait=False, ballast_mb=8, READY_DELAY="2")
    until("a container of the new fleet", lambda: containers(docker_client, name))
    server.restart(signal.SIGKILL)
    wait_endpoint(server, name)
    until("one container left", lambda: len(containers(docker_client, name)) == 1, 20)
    folders = list((server.data_dir / "endpoints" / name).iterdir())
    assert len(folders) == 1, folders


@pytest.mark.parametrize("signum", SIGNALS)
def test_endpoint_in_service_answers_at_once_after_a_restart(
        server: Server, image: str, tmp_path: Path, docker_client: Any, signum: int) -> None:
    name = unique("ft-serving")
    deploy(server, name, image, tmp_path, "v1", count=2)
    before = {c.id for c in containers(docker_client, name)}
    server.restart(signum)
    # The new plane reattached the fleet before it listened: no Creating, no new containers.
    assert server.sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    assert invoke(server, name)["model"] == "v1"
    assert {c.id for c in containers(docker_client, name, running_only=True)} == before


# -- 6. UpdateEndpoint in progress -------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS)
def test_endpoint_updating_keeps_its_old_config_after_a_server_stop(
        server: Server, image: str, tmp_path: Path, docker_client: Any, signum: int) -> None:
    name = unique("ft-update")
    deploy(server, name, image, tmp_path, "v1")
    old = {c.id for c in containers(docker_client, name)}
    create_model(server, f"{name}-m2", image, tmp_path, "v2", READY_DELAY="4")
    create_config(server, f"{name}-c2", f"{name}-m2")
    server.sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c2")
    until("a container of the new fleet",
          lambda: {c.id for c in containers(docker_client, name)} - old)
    assert server.sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Updating"
    server.restart(signum)

    record = wait_endpoint(server, name)
    assert record["EndpointConfigName"] == f"{name}-c"
    assert "Call UpdateEndpoint again" in record.get("FailureReason", "")
    assert invoke(server, name)["model"] == "v1"
    answers_lists(server)
    until("only the old fleet left",
          lambda: {c.id for c in containers(docker_client, name)} == old, 20)
    # Called again, the update goes through.
    server.sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c2")
    record = wait_endpoint(server, name)
    assert record["EndpointConfigName"] == f"{name}-c2" and "FailureReason" not in record
    assert invoke(server, name)["model"] == "v2"


# -- 7. DeleteEndpoint just called -------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS)
def test_endpoint_deleting_is_deleted_after_a_server_stop(
        server: Server, image: str, tmp_path: Path, docker_client: Any, signum: int) -> None:
    name = unique("ft-delete")
    deploy(server, name, image, tmp_path, "v1", count=2)
    assert len(containers(docker_client, name)) == 2
    server.sm.delete_endpoint(EndpointName=name)
    server.restart(signum)

    until("the endpoint gone", lambda: endpoint_gone(server, name), 20)
    until("its containers removed", lambda: not containers(docker_client, name), 20)
    answers_lists(server)
    assert server.sm.list_endpoints()["Endpoints"] == []


# -- 8. a container killed from outside --------------------------------------------------------


def test_training_container_killed_fails_the_job_with_its_exit_code(
        server: Server, image: str, tmp_path: Path, docker_client: Any) -> None:
    name = unique("ft-kill-train")
    server.sm.create_training_job(**training_request(
        name, image, tmp_path, env={"LINES": "100", "DELAY": "0.2"}))
    running = until("the container printing", lambda: [
        c for c in containers(docker_client, name, running_only=True) if b"line 1 " in c.logs()])
    running[0].kill()

    record = until_final(lambda: server.sm.describe_training_job(TrainingJobName=name),
                         "TrainingJobStatus", timeout=30)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"].startswith("AlgorithmError")
    assert "137" in record["FailureReason"], record["FailureReason"]
    assert "ModelArtifacts" not in record or not (
        tmp_path / "out" / name / "output" / "model.tar.gz").exists()


def test_training_container_removed_while_no_server_runs_fails_with_an_internal_error(
        server: Server, image: str, tmp_path: Path, docker_client: Any) -> None:
    name = unique("ft-rm-train")
    server.sm.create_training_job(**training_request(
        name, image, tmp_path, env={"LINES": "100", "DELAY": "0.2"}))
    running = until("the container running",
                    lambda: containers(docker_client, name, running_only=True))
    # Removed while no server watches it: the next one finds no container and no exit code.
    server.kill(signal.SIGKILL)
    running[0].remove(force=True)
    server.start()

    record = until_final(lambda: server.sm.describe_training_job(TrainingJobName=name),
                         "TrainingJobStatus", timeout=30)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"].startswith("InternalServerError"), record["FailureReason"]
    assert "disappeared" in record["FailureReason"]


@pytest.mark.parametrize("how", ["kill", "remove"])
def test_endpoint_instance_killed_is_replaced(
        server: Server, image: str, tmp_path: Path, docker_client: Any, how: str) -> None:
    name = unique("ft-kill-ep")
    deploy(server, name, image, tmp_path, "v1", count=2)
    victim = containers(docker_client, name)[0]
    if how == "kill":
        victim.kill()
    else:
        victim.remove(force=True)

    def healed() -> bool:
        record = server.sm.describe_endpoint(EndpointName=name)
        variant = record["ProductionVariants"][0]
        live = [c for c in containers(docker_client, name, running_only=True)
                if c.id != victim.id]
        return (record["EndpointStatus"] == "InService" and len(live) == 2
                and variant["CurrentInstanceCount"] == variant["DesiredInstanceCount"] == 2)

    for _ in range(6):  # traffic keeps flowing while the instance is replaced
        assert invoke(server, name)["model"] == "v1"
    until("the instance replaced", healed, 30, poll=0.25)
    until("the dead container removed", lambda: len(containers(docker_client, name)) == 2, 20)
    hosts = {invoke(server, name)["host"] for _ in range(20)}
    assert len(hosts) == 2


def test_transform_container_killed_ends_the_job_with_a_reason(
        server: Server, image: str, tmp_path: Path, docker_client: Any) -> None:
    name = unique("ft-kill-tf")
    model, data, out = transform_setup(server, image, tmp_path, 40, "0.1")
    server.sm.create_transform_job(**transform_request(name, model, data, out))
    running = until("some rows scored", lambda: [
        c for c in containers(docker_client, name, running_only=True)
        if c.logs().count(b"scored") >= 3])
    running[0].kill()

    record = until_final(lambda: server.sm.describe_transform_job(TransformJobName=name),
                         "TransformJobStatus", timeout=45)
    # SageMaker fails the job when its instance dies; partial objects are never written.
    assert record["TransformJobStatus"] == "Failed", record
    assert record.get("FailureReason")
    assert not (out / "rows.csv.out").exists()
    until("the job's containers removed", lambda: not containers(docker_client, name), 20)


# -- 9. graceful stop right after DeleteEndpoint, and `shipyard server stop` -------------------


def test_graceful_stop_finishes_a_deletion(
        server: Server, image: str, tmp_path: Path, docker_client: Any) -> None:
    name = unique("ft-graceful")
    deploy(server, name, image, tmp_path, "v1", count=2)
    server.sm.delete_endpoint(EndpointName=name)
    took = server.kill(signal.SIGTERM, timeout=25)
    assert took < 20 + 3
    assert containers(docker_client, name, running_only=True) == []
    assert containers(docker_client, name) == []
    server.start()
    assert endpoint_gone(server, name)


def test_cli_server_stop(server: Server) -> None:
    assert server.proc is not None
    env = {**server.env, "SHIPYARD_DATA_DIR": str(server.data_dir)}
    result = subprocess.run([sys.executable, "-m", "shipyard.cli", "server", "stop"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "server stopped" in result.stdout + result.stderr
    assert server.proc.wait(5) is not None
    assert read_info(server.settings) is None
    # The data plane goes with it: nothing listens on the API's port any more.
    assert dataplane.read_info(server.data_dir) is None
    assert not healthy(server.url)


@pytest.mark.parametrize("signum", SIGNALS)
def test_invocations_survive_a_server_restart_under_load(
        server: Server, image: str, tmp_path: Path, signum: int) -> None:
    """InvokeEndpoint does not depend on the control plane: the server stopped (SIGTERM or
    kill -9) and started again while four clients invoke without pause fails none of them."""
    name = unique("ft-dataplane")
    deploy(server, name, image, tmp_path, "v1", count=2)
    with InvocationLoad(server, name) as load:
        until("invocations flowing", lambda: load.ok > 20)
        server.kill(signum)
        # No control plane: InvokeEndpoint goes on, a control-plane call is told to retry.
        served = load.ok
        until("invocations without a control plane", lambda: load.ok > served + 20)
        with pytest.raises(ClientError) as caught:
            server.sm.describe_endpoint(EndpointName=name)
        assert caught.value.response["Error"]["Code"] == "ServiceUnavailable"
        server.start()
        served = load.ok
        until("invocations after the restart", lambda: load.ok > served + 20)
    assert load.failed == []
    assert server.sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"


def test_a_data_plane_without_control_plane_stops_by_itself(tmp_path: Path) -> None:
    srv = Server(tmp_path / "state")
    srv.env["SHIPYARD_DATAPLANE_ORPHAN_SECONDS"] = "1"
    srv.start()
    try:
        info = dataplane.read_info(srv.data_dir)
        assert info is not None
        srv.kill(signal.SIGKILL)
        until("the orphaned data plane to stop",
              lambda: dataplane.read_info(srv.data_dir) is None, timeout=30)
    finally:
        if srv.running():
            srv.kill(signal.SIGKILL)
        stop_data_plane(srv.settings)


def test_blue_green_update_through_the_data_plane_fails_nothing(
        server: Server, image: str, tmp_path: Path, docker_client: Any) -> None:
    """The data plane routes and the control plane retires: the old fleet (slow to answer, so
    requests are in flight at the switch) stops only once the data plane is done with it."""
    name = unique("ft-bluegreen")
    deploy(server, name, image, tmp_path, "v1", DELAY="0.3")
    old = {c.id for c in containers(docker_client, name)}
    create_model(server, f"{name}-m2", image, tmp_path, "v2")
    create_config(server, f"{name}-c2", f"{name}-m2")
    with InvocationLoad(server, name) as load:
        until("answers from v1", lambda: "v1" in load.models)
        server.sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c2")
        wait_endpoint(server, name)
        until("answers from v2", lambda: "v2" in load.models)
        until("the old fleet stopped",
              lambda: not old & {c.id for c in containers(docker_client, name)}, 40)
    assert load.failed == []


def test_a_request_to_an_instance_gone_without_a_word_fails_at_once(
        server: Server, image: str, tmp_path: Path, docker_client: Any) -> None:
    """A machine that is lost never closes its connections. The data plane (a process of its
    own) learns from the control plane's record that the instance died, and fails the
    request it had in flight there then, not when the model's answer would have timed out.
    Here the loss is a container killed while the host drops everything it sends."""
    if os.geteuid() != 0:
        pytest.skip("needs root (iptables)")
    name = unique("ft-silent")
    deploy(server, name, image, tmp_path, "v1", DELAY="45")
    [container] = containers(docker_client, name)
    address = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    rule = ["INPUT", "-s", address, "-j", "DROP"]
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            invoke(server, name)
            outcome["answer"] = True
        except Exception as exc:
            outcome["error"] = repr(exc)[:300]
        outcome["at"] = time.monotonic()

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(2)  # the request is with the model now, which answers in 45 s
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        killed = time.monotonic()
        container.kill()
        caller.join(40)
        assert "error" in outcome, outcome
        assert outcome["at"] - killed < 15, outcome
    finally:
        subprocess.run(["iptables", "-D", *rule], check=False)
        caller.join()


class InvocationLoad(ThreadedLoad):
    """Four threads invoking an endpoint without pause (the server's runtime client, retries
    off) for as long as the ``with`` block runs; what they got is counted."""

    def __init__(self, srv: Server, name: str, threads: int = 4) -> None:
        super().__init__(threads)
        self.ok = 0
        self.failed: list[str] = []
        self.models: set[str] = set()
        self._rt, self._name = srv.rt, name

    def call(self) -> None:
        try:
            answer = self._rt.invoke_endpoint(EndpointName=self._name, Body=b'{"x": 1}',
                                              ContentType="application/json")
            self.models.add(json.loads(answer["Body"].read())["model"])
            self.ok += 1
        except Exception as exc:
            self.failed.append(repr(exc)[:300])
