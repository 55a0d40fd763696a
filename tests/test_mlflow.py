"""Jobs forwarded to MLflow (setting ``mlflow_tracking_uri``): a real ``mlflow server`` from
PyPI's mlflow, started by the test on a loopback port, read back with MLflow's own client.
Jobs run on the FakeRuntime. An unreachable or silent tracking server neither fails nor
slows a job."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.control import ControlPlane
from shipyard.control.metrics.mlflow import ARN_TAG, PARENT_TAG, mlflow_key, training_run
from shipyard.runtimes import JOB_NAME_LABEL, FakeBehaviour
from shipyard.runtimes.base import ContainerSpec
from tests.support.jobs import training_request
from tests.support.planes import fake_plane
from tests.support.polling import until
from tests.test_tuning import quadratic, tuning_request

LOSSES = [0.9, 0.5, 0.25, 0.125]
METRICS = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}]
STARTUP_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a free loopback port, its runs in SQLite; its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""})

    def up() -> bool | None:
        if proc.poll() is not None:
            raise AssertionError("mlflow server exited:\n"
                                 + (root / "server.log").read_text(errors="replace")[-2000:])
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                return response.status == 200 or None
        except OSError:
            return None

    try:
        until("mlflow server up", up, timeout=STARTUP_S)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _client(url: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def _run_of(url: str, arn: str, status: str | None = None) -> Any:
    """The run tagged with ``arn`` (in any experiment), once it exists (with ``status``)."""
    client = _client(url)

    def found() -> Any:
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, filter_string=f"tags.`{ARN_TAG}` = '{arn}'")
        if runs and (status is None or runs[0].info.status == status):
            return runs[0]
        return None

    return until(f"the MLflow run of {arn}", found, timeout=30)


def _script(spec: ContainerSpec) -> FakeBehaviour:
    name = spec.labels.get(JOB_NAME_LABEL, "")
    lines = tuple(f"epoch={i} loss={v}" for i, v in enumerate(LOSSES))
    if name.startswith("broken"):
        return FakeBehaviour(exit_code=3, logs=(*lines[:2], "boom"))
    if name.startswith("live"):
        return FakeBehaviour(duration=None, logs=lines)  # runs until stopped
    return FakeBehaviour(logs=lines)


def _training(name: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    return training_request(name, tmp / name, AlgorithmSpecification={
        "TrainingImage": "example/train:1", "TrainingInputMode": "File",
        "MetricDefinitions": METRICS}, HyperParameters={"lr": "0.01", "epochs": "4"}, **extra)


@pytest.fixture
def plane(tmp_path: Path, tracking: str) -> Iterator[ControlPlane]:
    made, _ = fake_plane(tmp_path, _script, mlflow_tracking_uri=tracking)
    yield made
    made.close()


def test_a_training_job_becomes_a_run(plane: ControlPlane, tracking: str,
                                      tmp_path: Path) -> None:
    arn = plane.create("training", _training("fwd-ok", tmp_path, Tags=[
        {"Key": "team", "Value": "ml"}]))["TrainingJobArn"]
    record = plane.wait("training", "fwd-ok", timeout=30)
    assert record["TrainingJobStatus"] == "Completed"
    run = _run_of(tracking, arn, "FINISHED")
    assert run.info.run_name == "fwd-ok"
    assert run.data.params == {"lr": "0.01", "epochs": "4"}
    assert run.data.tags["team"] == "ml"
    assert run.data.tags["sagemaker.training_job_status"] == "Completed"
    artifact = record["ModelArtifacts"]["S3ModelArtifacts"]
    assert run.data.tags["shipyard.model_artifact"] == artifact
    assert run.info.end_time == int(record["TrainingEndTime"] * 1000)
    history = _client(tracking).get_metric_history(run.info.run_id, "train:loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
        enumerate(LOSSES))
    stamps = [p["Timestamp"] for p in plane.metric_series("training", "fwd-ok")]
    assert sorted(m.timestamp for m in history) == [int(s * 1000) for s in stamps]
    experiment = _client(tracking).get_experiment(run.info.experiment_id)
    assert experiment.name == "shipyard"


def test_a_running_job_is_a_running_run_with_its_points_so_far(
        plane: ControlPlane, tracking: str, tmp_path: Path) -> None:
    arn = plane.create("training", _training("live-1", tmp_path))["TrainingJobArn"]
    running = _run_of(tracking, arn, "RUNNING")
    client = _client(tracking)
    until("the points so far", lambda: len(client.get_metric_history(
        running.info.run_id, "train:loss")) == len(LOSSES) or None, timeout=20)
    assert plane.describe("training", "live-1")["TrainingJobStatus"] == "InProgress"
    assert client.get_run(running.info.run_id).data.params == {"lr": "0.01", "epochs": "4"}
    plane.stop("training", "live-1")
    assert plane.wait("training", "live-1", timeout=30)["TrainingJobStatus"] == "Stopped"
    stopped = _run_of(tracking, arn, "KILLED")
    assert stopped.info.run_id == running.info.run_id
    assert len(client.get_metric_history(stopped.info.run_id, "train:loss")) == len(LOSSES)


def test_a_failed_job_is_a_failed_run_in_its_experiment(plane: ControlPlane, tracking: str,
                                                        tmp_path: Path) -> None:
    arn = plane.create("training", _training("broken-1", tmp_path, ExperimentConfig={
        "ExperimentName": "fwd-experiment"}))["TrainingJobArn"]
    assert plane.wait("training", "broken-1", timeout=30)["TrainingJobStatus"] == "Failed"
    run = _run_of(tracking, arn, "FAILED")
    assert "exited with code 3" in run.data.tags["sagemaker.failure_reason"]
    assert _client(tracking).get_experiment(run.info.experiment_id).name == "fwd-experiment"
    assert len(_client(tracking).get_metric_history(run.info.run_id, "train:loss")) == 2


def test_a_tuning_job_is_the_parent_run_of_its_trials(tmp_path: Path, tracking: str) -> None:
    plane, _ = fake_plane(tmp_path, quadratic, mlflow_tracking_uri=tracking)
    try:
        arn = plane.create("tuning", tuning_request("fwd-tune", tmp_path, max_jobs=3,
                                                    parallel=2))["HyperParameterTuningJobArn"]
        record = plane.wait("tuning", "fwd-tune", timeout=60)
        assert record["HyperParameterTuningJobStatus"] == "Completed"
        parent = _run_of(tracking, arn, "FINISHED")
        best = record["BestTrainingJob"]
        assert parent.info.run_name == "fwd-tune"
        assert parent.data.tags["sagemaker.best_training_job"] == best["TrainingJobName"]
        assert parent.data.metrics["best:validation:loss"] == pytest.approx(
            best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
        client = _client(tracking)
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
        trials = {t["TrainingJobName"] for t in plane.tuning_trials("fwd-tune")}
        assert {c.info.run_name for c in children} == trials and len(trials) == 3
        for child in children:
            assert {"x", "layers", "static"} <= set(child.data.params)
    finally:
        plane.close()


class _Silent:
    """A TCP listener that takes connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("where", ["refused", "silent"])
def test_an_unreachable_tracking_server_neither_fails_nor_slows_jobs(
        tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture) -> None:
    silent = _Silent() if where == "silent" else None
    url = silent.url if silent is not None else f"http://127.0.0.1:{_free_port()}"
    plane, _ = fake_plane(tmp_path, _script, mlflow_tracking_uri=url)
    caplog.set_level(logging.INFO, logger="shipyard.control.metrics.mlflow")
    try:
        took = []
        for i in range(3):
            started = time.monotonic()
            plane.create("training", _training(f"fwd-{where}-{i}", tmp_path))
            record = plane.wait("training", f"fwd-{where}-{i}", timeout=30)
            took.append(time.monotonic() - started)
            assert record["TrainingJobStatus"] == "Completed"
        assert max(took) < 5, took
        if where == "refused":
            until("a retry logged", lambda: "retrying" in caplog.text or None, timeout=10)
    finally:
        closing = time.monotonic()
        plane.close()
        assert time.monotonic() - closing < 10
        if silent is not None:
            silent.close()
    assert "MLflow forwarding" in caplog.text
    assert "dropped" in caplog.text or "left unforwarded" in caplog.text


def test_training_run_keys_each_host_and_counts_steps() -> None:
    record = {"TrainingJobName": "j", "TrainingJobArn": "arn:aws:sagemaker:r:1:training-job/j",
              "TrainingJobStatus": "Stopped", "CreationTime": 10.0, "TrainingStartTime": 11.0,
              "TrainingEndTime": 20.5, "HyperParameters": {"a": 1},
              "AlgorithmSpecification": {"TrainingImage": "img"},
              "ResourceConfig": {"InstanceType": "ml.m5.large"}}
    series = [("loss", 12.0, 1.0, "algo-1"), ("loss", 12.5, 1.5, "algo-2"),
              ("loss", 13.0, 0.5, "algo-1")]
    data = training_run(record, series, [("team", "ml"), ("mlflow.user", "x")])
    assert (data.status, data.start_ms, data.end_ms) == ("KILLED", 11000, 20500)
    assert data.params == {"a": "1"}
    assert data.tags["team"] == "ml" and "mlflow.user" not in data.tags
    assert [(m["key"], m["step"], m["timestamp"]) for m in data.metrics] == [
        ("loss", 0, 12000), ("loss/algo-2", 0, 12500), ("loss", 1, 13000)]


@pytest.mark.parametrize(("name", "key"), [
    ("validation:loss", "validation:loss"), ("acc (%)", "acc ___"), ("a/../b", "a/b"),
    ("/lead//slash/", "lead/slash"), ("", "_"), ("x" * 300, "x" * 250)],
    ids=["kept", "replaced", "dots", "slashes", "empty", "long"])
def test_keys_are_made_acceptable_to_mlflow(name: str, key: str) -> None:
    assert mlflow_key(name) == key
