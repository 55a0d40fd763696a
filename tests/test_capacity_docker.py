"""The capacity queue on a real engine: jobs wait their turn behind a server that is killed and
started again, the CLI shows the wait, an endpoint and a transform job wait for capacity, and
queued work is stopped or deleted at once (real containers, a real server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.server import read_info
from shipyard.client import Client
from shipyard.contract.labels import JOB_NAME_LABEL
from shipyard.control import ControlPlane
from shipyard.errors import ShipyardError
from shipyard.settings import Settings
from tests.support.cli import run, shipyard_env
from tests.support.files import model_tarball
from tests.support.jobs import training_request
from tests.support.planes import deploy, docker_plane, remove_endpoints
from tests.support.polling import until

pytestmark = pytest.mark.docker

WAIT_S = 90
#: One ml.m5.large (8 GiB, capped at this) fits at a time.
ONE_AT_A_TIME = {"capacity_memory_mb": "2048"}


def _start(env: dict[str, str], settings: Settings) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "shipyard.api.server"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while (info := read_info(settings)) is None or info.pid != proc.pid:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


def _sleeper(name: str, tmp: Path, image: str, seconds: float) -> dict[str, Any]:
    return training_request(name, tmp, image=image,
                            Environment={"MODE": "sleep", "SLEEP": str(seconds)})


def _waiting(client: Client, name: str) -> str:
    record = client.raw_call("DescribeTrainingJob", TrainingJobName=name)
    return str(record.get("StatusMessage") or "")


def test_jobs_queue_in_order_across_a_server_restart(tmp_path: Path,
                                                     images: dict[str, str]) -> None:
    env = {**os.environ, **shipyard_env(tmp_path / "state", stop_grace_seconds="2",
                                        **ONE_AT_A_TIME)}
    settings = Settings.load(environ=env)
    image = images["behaviours"]
    server = _start(env, settings)
    try:
        client = Client.for_settings(settings)
        client.create_job("training", _sleeper("cq-0", tmp_path, image, 600))
        for name in ("cq-1", "cq-2", "cq-3"):
            client.create_job("training", _sleeper(name, tmp_path, image, 2))
        until("cq-0 trains", lambda: client.describe("training", "cq-0")[
            "SecondaryStatus"] == "Training", WAIT_S)
        until("cq-3 says it waits", lambda: "2 ahead" in _waiting(client, "cq-3"), WAIT_S)
        first = _waiting(client, "cq-1")
        assert first.startswith("Waiting for capacity: needs 2.0 GiB memory and 0.5 CPU")
        assert first.endswith("first in the queue")
        record = client.describe("training", "cq-1")
        assert (record["TrainingJobStatus"], record["SecondaryStatus"]) == ("InProgress",
                                                                            "Starting")
        listed = run(["jobs", "ls", "--kind", "training"], env)
        assert listed.exit_code == 0, listed.output
        rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
        assert "Starting (queued)" in rows["cq-2"] and "Training" in rows["cq-0"]
        described = run(["jobs", "describe", "cq-2"], env)
        assert "Waiting for capacity" in described.stdout
        queue = run(["cluster", "status"], env)
        assert queue.exit_code == 0, queue.output
        rows = [line.split() for line in queue.stdout.splitlines()[2:]]
        assert rows[0][:3] == ["running", "training", "cq-0"]
        assert [(r[0], r[2], r[-1]) for r in rows[1:]] == [
            ("waiting", "cq-1", "(#1)"), ("waiting", "cq-2", "(#2)"), ("waiting", "cq-3", "(#3)")]
        # A queued job stops at once: nothing of it ever ran.
        stopped_at = time.monotonic()
        client.stop("training", "cq-2")
        until("cq-2 stopped", lambda: client.describe("training", "cq-2")[
            "TrainingJobStatus"] == "Stopped", WAIT_S, poll=0.05)
        assert time.monotonic() - stopped_at < 5
        assert "TrainingStartTime" not in client.describe("training", "cq-2")
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    server = _start(env, settings)
    try:
        client = Client.for_settings(settings)
        # The queue kept its order and cq-0 its reservation.
        until("cq-3 waits behind cq-1", lambda: "1 ahead" in _waiting(client, "cq-3"), WAIT_S)
        assert _waiting(client, "cq-1").endswith("first in the queue")
        assert client.describe("training", "cq-0")["SecondaryStatus"] == "Training"
        client.stop("training", "cq-0")
        ends = {n: client.wait("training", n) for n in ("cq-0", "cq-1", "cq-3")}
        assert ends["cq-0"]["TrainingJobStatus"] == "Stopped"
        assert ends["cq-1"]["TrainingJobStatus"] == "Completed"
        assert ends["cq-3"]["TrainingJobStatus"] == "Completed"
        assert ends["cq-3"]["TrainingStartTime"] >= ends["cq-1"]["TrainingEndTime"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


@pytest.fixture
def plane(tmp_path: Path, docker_client: Any, scope_labels: dict[str, str]
          ) -> Iterator[ControlPlane]:
    cp = docker_plane(tmp_path, docker_client, scope_labels, stop_grace_seconds=2,
                      endpoint_startup_timeout_seconds=30, **ONE_AT_A_TIME)
    yield cp
    remove_endpoints(cp, WAIT_S)
    for row in cp.ctx.store.list_jobs("training", statuses=("InProgress",)):
        cp.stop("training", row.name)
    cp.join(WAIT_S)
    cp.close()


def _endpoint_message(plane: ControlPlane, name: str) -> str:
    try:
        return str(plane.describe("endpoint", name).get("StatusMessage") or "")
    except ShipyardError:
        return ""


def test_an_endpoint_and_a_transform_wait_for_capacity(plane: ControlPlane, tmp_path: Path,
                                                       images: dict[str, str]) -> None:
    plane.create("training", _sleeper("holder", tmp_path, images["behaviours"], 600))
    until("holder trains", lambda: plane.describe("training", "holder")[
        "SecondaryStatus"] == "Training", WAIT_S)
    url = model_tarball(tmp_path, "m", {"model.txt": "v1"}).as_uri()
    variants = [{"VariantName": "AllTraffic", "ModelName": "ep-cap-model",
                 "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]
    deploy(plane, "ep-cap", images["plain-serve"], url, variants=variants, wait=False)
    until("the endpoint waits", lambda: "first in the queue" in _endpoint_message(
        plane, "ep-cap"), WAIT_S)
    assert plane.describe("endpoint", "ep-cap")["EndpointStatus"] == "Creating"
    assert plane.ctx.runtime.list({JOB_NAME_LABEL: "ep-cap"}) == []
    # Deleting a queued endpoint is immediate.
    plane.delete("endpoint", "ep-cap")
    until("ep-cap gone", lambda: plane.lookup("endpoint", "ep-cap") is None, 5, poll=0.05)
    plane.create("endpoint", {"EndpointName": "ep-cap", "EndpointConfigName": "ep-cap-config"})
    until("the endpoint waits again", lambda: "Waiting for capacity" in _endpoint_message(
        plane, "ep-cap"), WAIT_S)
    # A transform job queues behind it; stopping it while it waits is immediate too.
    data = tmp_path / "batch"
    data.mkdir()
    (data / "rows.csv").write_text("1,2\n")
    plane.create("transform", {
        "TransformJobName": "tj-cap", "ModelName": "ep-cap-model",
        "TransformInput": {"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": data.as_uri()}}, "ContentType": "text/csv"},
        "TransformOutput": {"S3OutputPath": (tmp_path / "preds").as_uri()},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}})
    until("the transform waits", lambda: "1 ahead" in str(
        plane.describe("transform", "tj-cap").get("StatusMessage")), WAIT_S)
    plane.stop("transform", "tj-cap")
    record = plane.wait("transform", "tj-cap", timeout=10)
    assert record["TransformJobStatus"] == "Stopped"
    assert plane.ctx.runtime.list({JOB_NAME_LABEL: "tj-cap"}) == []
    # Capacity frees: the endpoint starts.
    plane.stop("training", "holder")
    record = plane.wait_endpoint("ep-cap", timeout=WAIT_S)
    assert record["EndpointStatus"] == "InService", record.get("FailureReason")
    assert "StatusMessage" not in record
    assert [(e.kind, e.owner, e.held) for e in plane.ctx.capacity.entries()] == [
        ("endpoint", "ep-cap", True)]
    # Blue/green on a full machine: the new fleet is fitted beside all but the one it
    # replaces, and the old fleet's reservation goes with it.
    plane.create("endpoint-config", {"EndpointConfigName": "ep-cap-v2",
                                     "ProductionVariants": variants})
    plane.update_endpoint({"EndpointName": "ep-cap", "EndpointConfigName": "ep-cap-v2"})
    until("updated", lambda: plane.describe("endpoint", "ep-cap")["EndpointConfigName"]
          == "ep-cap-v2", WAIT_S)
    uid = plane.ctx.store.get_job("endpoint", "ep-cap").runner["uid"]
    until("the old fleet's reservation given back", lambda: [
        (e.owner, e.unit) for e in plane.ctx.capacity.entries()] == [("ep-cap", uid)], WAIT_S)
