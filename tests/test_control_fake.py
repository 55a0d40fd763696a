"""Control-plane state machines over the in-memory FakeRuntime: fast, no engine needed.

The same behaviours run against real containers in test_control_docker.py; here the
runtime's answers are scripted so every branch (stop, MaxRuntime, OOM, a failing host) is
exercised deterministically.
"""

from __future__ import annotations

import signal
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard import kinds
from shipyard.control import CHECKED_AT_DOOR, ControlPlane
from shipyard.errors import (
    DataSourceError,
    ImageNotFound,
    ResourceInUse,
    SerializationError,
    UnsafeArchiveError,
    ValidationError,
)
from shipyard.runtimes import ContainerSpec, FakeBehaviour, FakeRuntime
from tests.support.files import write_tar_gz
from tests.support.jobs import FAKE_IMAGE as IMAGE
from tests.support.jobs import training_request
from tests.support.planes import fake_plane
from tests.support.polling import until


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[ControlPlane, FakeRuntime]]:
    made = fake_plane(tmp_path)
    yield made
    made[0].close()


def test_completed_job_has_sagemaker_record(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, lambda spec: FakeBehaviour(logs=("hello",)))
    arn = plane.create("training", training_request("job-ok", tmp_path))["TrainingJobArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:000000000000:training-job/job-ok"
    record = plane.wait("training", "job-ok", timeout=10)
    assert record["TrainingJobStatus"] == "Completed"
    assert [t["Status"] for t in record["SecondaryStatusTransitions"]] == [
        "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert all("StatusMessage" in t for t in record["SecondaryStatusTransitions"])
    model = tmp_path / "out" / "job-ok" / "output" / "model.tar.gz"
    assert record["ModelArtifacts"]["S3ModelArtifacts"] == model.as_uri()
    with tarfile.open(model) as tar:
        assert tar.getnames() == []
    assert (tmp_path / "out" / "job-ok" / "output" / "output.tar.gz").is_file()
    spec: ContainerSpec = runtime.started[0]
    assert spec.command == ["train"] and spec.entrypoint is None
    assert spec.cpus == 2.0 and spec.memory_bytes == 8 * 1024**3
    assert spec.env["TRAINING_JOB_NAME"] == "job-ok"
    targets = {m.target: m for m in spec.mounts}
    assert targets["/opt/ml/input/data/training"].read_only
    assert targets["/opt/ml/input/data/training"].source == str(tmp_path / "data")
    assert not targets["/opt/ml/model"].read_only
    events = list(plane.follow_logs("training", "job-ok", follow=False))
    assert [e.message for e in events] == ["hello"]


def test_a_copy_made_for_one_host_is_writable_the_users_folder_is_not(
        tmp_path: Path, plane: Any) -> None:
    """As on SageMaker, where a host's channels sit on its own volume (SDK v3's drivers
    chmod and unpack code in them); the user's own folder is never the container's to change."""
    cp, runtime = plane
    data = tmp_path / "data"
    data.mkdir()
    (data / "part-0.csv").write_text("1,2\n")
    request = training_request("job-writable", tmp_path, data=data)
    sharded = dict(request["InputDataConfig"][0])
    sharded["ChannelName"] = "copied"
    sharded["DataSource"] = {"S3DataSource": {
        **sharded["DataSource"]["S3DataSource"], "S3DataDistributionType": "ShardedByS3Key"}}
    request["InputDataConfig"].append(sharded)
    cp.create("training", request)
    assert cp.wait("training", "job-writable", timeout=10)["TrainingJobStatus"] == "Completed"
    targets = {m.target: m for m in runtime.started[0].mounts}
    assert targets["/opt/ml/input/data/training"].read_only
    assert targets["/opt/ml/input/data/training"].source == str(data)
    assert not targets["/opt/ml/input/data/copied"].read_only
    assert targets["/opt/ml/input/data/copied"].source != str(data)


def test_container_arguments_replace_train(tmp_path: Path, plane: Any) -> None:
    cp, runtime = plane
    algo = {"TrainingImage": IMAGE, "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python3", "-m", "mine"], "ContainerArguments": ["--x"]}
    cp.create("training", training_request("job-args", tmp_path, AlgorithmSpecification=algo))
    cp.wait("training", "job-args", timeout=10)
    assert runtime.started[0].entrypoint == ["python3", "-m", "mine"]
    assert runtime.started[0].command == ["--x"]


def test_failure_reason_has_exit_code_and_log_tail(tmp_path: Path) -> None:
    plane, _ = fake_plane(tmp_path, lambda spec: FakeBehaviour(
        exit_code=3, logs=("step 1", "Traceback: boom")))
    plane.create("training", training_request("job-bad", tmp_path))
    record = plane.wait("training", "job-bad", timeout=10)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["SecondaryStatus"] == "Failed"
    assert "exited with code 3" in record["FailureReason"]
    assert record["FailureReason"].endswith("step 1\nTraceback: boom")
    # A failed job keeps output.tar.gz but gets no model.
    assert (tmp_path / "out" / "job-bad" / "output" / "output.tar.gz").is_file()
    assert not (tmp_path / "out" / "job-bad" / "output" / "model.tar.gz").exists()


def test_oom_gets_sagemaker_reason(tmp_path: Path) -> None:
    plane, _ = fake_plane(tmp_path, lambda spec: FakeBehaviour(exit_code=137, oom_killed=True))
    plane.create("training", training_request("job-oom", tmp_path))
    record = plane.wait("training", "job-oom", timeout=10)
    assert record["FailureReason"].startswith("OutOfMemoryError")


def test_stop_sends_sigterm_then_stopped(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, lambda spec: FakeBehaviour(duration=None))
    plane.create("training", training_request("job-stop", tmp_path))
    until("a container started", lambda: runtime.started, 5.0, poll=0.01)
    plane.stop("training", "job-stop")
    assert plane.describe("training", "job-stop")["TrainingJobStatus"] in {"Stopping",
                                                                            "Stopped"}
    record = plane.wait("training", "job-stop", timeout=10)
    assert record["TrainingJobStatus"] == "Stopped"
    assert record["SecondaryStatus"] == "Stopped"
    assert [s for _, s in runtime.signals] == [signal.SIGTERM]
    # Stopped jobs still upload their model, as SageMaker does.
    assert (tmp_path / "out" / "job-stop" / "output" / "model.tar.gz").is_file()
    with pytest.raises(ValidationError, match="status Stopped"):
        plane.stop("training", "job-stop")


def test_stop_kills_after_grace_when_sigterm_ignored(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, lambda spec: FakeBehaviour(duration=None,
                                                                     on_sigterm=None))
    plane.create("training", training_request("job-deaf", tmp_path))
    until("a container started", lambda: runtime.started, 5.0, poll=0.01)
    plane.stop("training", "job-deaf")
    record = plane.wait("training", "job-deaf", timeout=10)
    assert record["TrainingJobStatus"] == "Stopped"
    assert [s for _, s in runtime.signals][:2] == [signal.SIGTERM, signal.SIGKILL]


def test_max_runtime_fails_job(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, lambda spec: FakeBehaviour(duration=None))
    plane.create("training", training_request(
        "job-slow", tmp_path, StoppingCondition={"MaxRuntimeInSeconds": 1}))
    record = plane.wait("training", "job-slow", timeout=10)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert "MaxRuntimeInSeconds" in record["FailureReason"]
    assert runtime.signals[0][1] == signal.SIGTERM


def test_metrics_time_series_and_final_values(tmp_path: Path) -> None:
    lines = tuple(f"epoch={i} loss={1.0 / (i + 1):.4f} acc=0.{i}" for i in range(5))
    plane, _ = fake_plane(tmp_path, lambda spec: FakeBehaviour(logs=lines))
    algo = {"TrainingImage": IMAGE, "TrainingInputMode": "File", "MetricDefinitions": [
        {"Name": "train:loss", "Regex": r"loss=([0-9.]+)"},
        {"Name": "train:acc", "Regex": r"acc=([0-9.]+)"}]}
    plane.create("training", training_request("job-metrics", tmp_path,
                                               AlgorithmSpecification=algo))
    record = plane.wait("training", "job-metrics", timeout=10)
    final = {m["MetricName"]: m["Value"] for m in record["FinalMetricDataList"]}
    assert final == {"train:loss": 0.2, "train:acc": 0.4}
    series = plane.metric_series("training", "job-metrics", "train:loss")
    assert [p["Value"] for p in series] == [1.0, 0.5, 0.3333, 0.25, 0.2]


def test_one_failing_host_stops_the_others(tmp_path: Path) -> None:
    def handler(spec: ContainerSpec) -> FakeBehaviour:
        if spec.hostname == "algo-2":
            return FakeBehaviour(exit_code=2, logs=("host 2 broke",))
        return FakeBehaviour(duration=None)

    plane, runtime = fake_plane(tmp_path, handler)
    plane.create("training", training_request(
        "job-multi", tmp_path, ResourceConfig={"InstanceType": "local", "InstanceCount": 3}))
    record = plane.wait("training", "job-multi", timeout=10)
    assert record["TrainingJobStatus"] == "Failed"
    assert "algo-2" in record["FailureReason"] and "host 2 broke" in record["FailureReason"]
    signalled = {name.rsplit("-", 2)[-2] + "-" + name.rsplit("-", 1)[-1]
                 for name, _ in runtime.signals}
    assert signalled == {"algo-1", "algo-3"}
    assert {s.hostname for s in runtime.started} == {"algo-1", "algo-2", "algo-3"}
    assert len(runtime.networks) == 0  # removed after the job


@pytest.mark.parametrize("isolated", [False, True], ids=["open", "isolated"])
def test_multi_host_network_is_internal_under_isolation(tmp_path: Path,
                                                        isolated: bool) -> None:
    plane, runtime = fake_plane(tmp_path)
    plane.create("training", training_request(
        "job-net", tmp_path, EnableNetworkIsolation=isolated,
        ResourceConfig={"InstanceType": "local", "InstanceCount": 2}))
    plane.wait("training", "job-net", timeout=10)
    assert list(runtime.internal_networks.values()) == [isolated]
    assert {s.network for s in runtime.started} == set(runtime.internal_networks)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"TrainingJobName": "bad_name"}, ValidationError, "regular expression"),
        ({"TrainingJobName": "x" * 64}, ValidationError, "regular expression"),
        ({"HyperParameters": {"lr": 0.1}}, SerializationError,
         "^NUMBER_VALUE can not be converted to a String$"),
        ({"HyperParameters": "lr=0.1"}, SerializationError, "^Expected map or null$"),
        ({"RoleArn": None}, ValidationError, "roleArn"),
        ({"ResourceConfig": {"InstanceType": "ml.huge", "InstanceCount": 1}},
         ValidationError, "instanceType"),
        ({"ResourceConfig": {"InstanceType": "local", "InstanceCount": 0}},
         ValidationError, "instanceCount"),
        ({"AlgorithmSpecification": {"TrainingImage": "missing/image:1",
                                     "TrainingInputMode": "File"}},
         ImageNotFound, "missing/image"),
        ({"AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                     "MetricDefinitions": [{"Name": "m", "Regex": "("}]}},
         ValidationError, "invalid Regex"),
        ({"AlgorithmSpecification": {"TrainingImage": IMAGE}}, ValidationError,
         "Value null at 'algorithmSpecification.trainingInputMode'"),
        ({"AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "Pipe"}},
         ValidationError, "Pipe input mode is not supported"),
        ({"InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"{tempfile.gettempdir()}/shipyard-nonexistent/data"}}}]},
         DataSourceError, "no such file"),
        ({"InputDataConfig": [{"ChannelName": "a b", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "/tmp"}}}]}, ValidationError, "channelName"),
        ({"InputDataConfig": [{"ChannelName": "t", "DataSource": {}}]},
         ValidationError, "S3DataSource"),
        ({"Environment": {"1BAD": "x"}}, ValidationError, "pattern"),
        ({"OutputDataConfig": {"S3OutputPath": "ftp://x"}}, ValidationError,
         r"at 'outputDataConfig.s3OutputPath' .*regular expression pattern"),
        ({"OutputDataConfig": {"S3OutputPath": "https://host/x"}}, ValidationError,
         "must be an s3:// or file:// URI"),
        ({"StoppingCondition": {"MaxRuntimeInSeconds": 0}}, ValidationError, "maxRuntime"),
    ],
    ids=["underscore", "too-long", "hp-not-string", "hp-not-map", "no-role", "bad-instance",
         "zero-instances", "missing-image", "bad-regex", "no-input-mode", "pipe-mode",
         "missing-data", "bad-channel", "no-source", "bad-env-key", "bad-output", "https-output",
         "zero-runtime"],
)
def test_bad_input_is_rejected_before_anything_runs(
    tmp_path: Path, plane: Any, change: dict[str, Any], error: type[Exception], match: str
) -> None:
    cp, runtime = plane
    request = training_request("job-x", tmp_path)
    request.update(change)
    with pytest.raises(error, match=match):
        cp.create("training", request)
    assert runtime.started == []
    assert cp.list_resources("training") == []


@pytest.mark.parametrize("operation", sorted(CHECKED_AT_DOOR))
def test_the_door_checks_what_the_api_leaves_to_it(plane: Any, operation: str) -> None:
    # The API does not check these requests against botocore's model: the plane must.
    cp, runtime = plane
    creates = {f"Create{kind.resource}": kind.key for kind in kinds.ALL}
    request = {"Unknown": 1, "Tags": [{"Key": "k", "Value": "v"}]}
    with pytest.raises(ValidationError, match=r"^[0-9] validation errors? detected: Value null "
                       r"at '[a-zA-Z]+' failed to satisfy constraint: Member must not be null"):
        if operation in creates:
            cp.create(creates[operation], request)
        else:
            cp.update_endpoint(request)
    assert runtime.started == []


@pytest.mark.parametrize("kind", [k.key for k in kinds.ALL])
def test_a_request_that_is_no_object_is_refused_at_the_door(plane: Any, kind: str) -> None:
    # Only a Python caller can send one (the API parses JSON objects): a clear error, not a
    # TypeError from deep inside.
    cp, runtime = plane
    with pytest.raises(ValidationError, match="must be a JSON object, not list"):
        cp.create(kind, ["Tags"])
    assert runtime.started == []


def test_unsafe_submit_directory_tarball_is_rejected(tmp_path: Path, plane: Any) -> None:
    cp, runtime = plane
    archive = write_tar_gz(tmp_path / "sourcedir.tar.gz", {"../../etc/evil.py": b"x=1\n"})
    request = training_request("job-tar", tmp_path, HyperParameters={
        "sagemaker_submit_directory": archive.as_uri(), "sagemaker_program": "evil.py"})
    with pytest.raises(UnsafeArchiveError, match="escapes"):
        cp.create("training", request)
    assert runtime.started == [] and cp.list_resources("training") == []


def test_duplicate_name_is_resource_in_use(tmp_path: Path, plane: Any) -> None:
    cp, _ = plane
    cp.create("training", training_request("job-dup", tmp_path))
    with pytest.raises(ResourceInUse, match="already exists"):
        cp.create("training", training_request("job-dup", tmp_path))


def test_unknown_job_gets_sagemaker_not_found(plane: Any) -> None:
    cp, _ = plane
    with pytest.raises(ValidationError, match="^Requested resource not found.$"):
        cp.describe("training", "nope")
    with pytest.raises(ValidationError, match="^Requested resource not found.$"):
        cp.stop("training", "nope")


def test_list_filters_and_sorting(tmp_path: Path, plane: Any) -> None:
    cp, _ = plane
    for name in ("b-job", "a-job", "c-other"):
        cp.create("training", training_request(name, tmp_path))
        cp.wait("training", name, timeout=10)
    newest_first = [r["TrainingJobName"] for r in cp.list_resources("training")]
    assert newest_first == ["c-other", "a-job", "b-job"]
    by_name = cp.list_resources("training", sort_by="Name", descending=False)
    assert [r["TrainingJobName"] for r in by_name] == ["a-job", "b-job", "c-other"]
    assert [r["TrainingJobName"] for r in cp.list_resources("training", name_contains="job")] == [
        "a-job", "b-job"]
    assert len(cp.list_resources("training", statuses=("Completed",))) == 3
    assert cp.list_resources("training", statuses=("Failed",)) == []


def processing_request(name: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    for folder in ("in1", "in2"):
        (tmp / folder).mkdir(exist_ok=True)
        (tmp / folder / "x.txt").write_text(folder)
    request: dict[str, Any] = {
        "ProcessingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AppSpecification": {"ImageUri": IMAGE, "ContainerEntrypoint": ["python3", "p.py"]},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                  "InstanceCount": 1, "VolumeSizeInGB": 5}},
        "ProcessingInputs": [
            {"InputName": "a", "S3Input": {"S3Uri": str(tmp / "in1"),
                                           "LocalPath": "/opt/ml/processing/input/a",
                                           "S3DataType": "S3Prefix", "S3InputMode": "File"}},
            {"InputName": "b", "S3Input": {"S3Uri": (tmp / "in2").as_uri(),
                                           "LocalPath": "/opt/ml/processing/input/b",
                                           "S3DataType": "S3Prefix", "S3InputMode": "File"}},
        ],
        "ProcessingOutputConfig": {"Outputs": [
            {"OutputName": "result", "S3Output": {"S3Uri": (tmp / "result").as_uri(),
                                                  "LocalPath": "/opt/ml/processing/output",
                                                  "S3UploadMode": "EndOfJob"}}]},
    }
    request.update(extra)
    return request


def test_processing_layout(tmp_path: Path, plane: Any) -> None:
    cp, runtime = plane
    arn = cp.create("processing", processing_request("proc-1", tmp_path))["ProcessingJobArn"]
    assert arn.endswith(":processing-job/proc-1")
    record = cp.wait("processing", "proc-1", timeout=10)
    assert record["ProcessingJobStatus"] == "Completed"
    spec = runtime.started[0]
    assert spec.entrypoint == ["python3", "p.py"] and spec.command is None
    targets = {m.target: m for m in spec.mounts}
    assert targets["/opt/ml/processing/input/a"].source == str(tmp_path / "in1")
    assert targets["/opt/ml/processing/input/b"].read_only
    assert not targets["/opt/ml/processing/output"].read_only
    assert "/opt/ml/config" in targets


@pytest.mark.parametrize(
    ("path", "match"),
    [("/tmp/in", "must begin with /opt/ml/processing/"),
     ("/opt/ml/processing/../x", "must begin"),
     ("/opt/ml/processing/input/b/sub", "overlaps")],
    ids=["outside", "dotdot", "overlap"])
def test_processing_local_paths_checked(tmp_path: Path, plane: Any, path: str,
                                        match: str) -> None:
    cp, runtime = plane
    request = processing_request("proc-bad", tmp_path)
    request["ProcessingInputs"][0]["S3Input"]["LocalPath"] = path
    with pytest.raises(ValidationError, match=match):
        cp.create("processing", request)
    assert runtime.started == []
