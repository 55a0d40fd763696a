"""Training and processing jobs end to end: real images, a real Docker engine, real files.

Every image is built FROM the locally made Debian base image; images that use Shipyard's
toolkit get it installed from a wheel of this checkout.
"""

from __future__ import annotations

import json
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.control import ControlPlane
from shipyard.runtimes import DockerRuntime
from shipyard.settings import Settings
from tests.support import planes, s3server
from tests.support.files import tar_files
from tests.support.jobs import training_request
from tests.support.planes import docker_plane
from tests.support.polling import until, until_final

pytestmark = pytest.mark.docker
s3_server = s3server.s3_server
s3_bucket = s3server.s3_bucket
plane = planes.docker_jobs_plane


@pytest.fixture
def s3_plane(tmp_path: Path, docker_client: Any, scope_labels: dict[str, str],
             s3_server: Any) -> Iterator[ControlPlane]:
    """A control plane whose s3:// locations live on the test's S3-compatible server."""
    cp = docker_plane(tmp_path, docker_client, scope_labels, s3_endpoint_url=s3_server.url,
                      s3_access_key_id="testing", s3_secret_access_key="testing")
    yield cp
    cp.close()


def request(name: str, image: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    rows = {f"part-{i}.csv": f"{i},{i * 2}\n" for i in range(3)}
    return training_request(name, tmp, image=image, files=rows, instance_type="local",
                            max_runtime_s=600, **extra)


def model_files(tmp: Path, name: str) -> dict[str, bytes]:
    return tar_files(tmp / "out" / name / "output" / "model.tar.gz")


def logs_of(plane: ControlPlane, kind: str, name: str) -> list[str]:
    return [e.message for e in plane.follow_logs(kind, name, follow=False)]


def wait_for_log(plane: ControlPlane, kind: str, name: str, text: str, timeout: float = 30
                 ) -> None:
    until(f"{text!r} in the logs of {name}",
          lambda: any(text in line for line in logs_of(plane, kind, name)), timeout, poll=0.05)


def test_seed_000_script_unchanged(plane: ControlPlane, images: dict[str, str],
                                   tmp_path: Path) -> None:
    plane.create("training", request("seed-000", images["seed000"], tmp_path))
    record = plane.wait("training", "seed-000", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert json.loads(model_files(tmp_path, "seed-000")["model.json"]) == {"training_files": 3}
    assert (tmp_path / "out" / "seed-000" / "output" / "output.tar.gz").is_file()


def test_seed_002_style_numpy_with_hard_coded_paths(plane: ControlPlane, images: dict[str, str],
                                                    tmp_path: Path) -> None:
    rng_rows = [f"{i / 10},{(i % 7) / 10},{2 * i / 10 - (i % 7) / 10}\n" for i in range(40)]
    for channel, rows in (("train", rng_rows[:30]), ("val", rng_rows[30:])):
        folder = tmp_path / channel
        folder.mkdir()
        (folder / "data.csv").write_text("".join(rows))
    channels = [{"ChannelName": ch, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": str(tmp_path / ch)}}} for ch in ("train", "val")]
    algo = {"TrainingImage": images["seed002"], "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "train:loss", "Regex": r"train_loss=([0-9.e-]+)"},
                                  {"Name": "validation:loss", "Regex": r"val_loss=([0-9.e-]+)"}]}
    plane.create("training", request(
        "seed-002", images["seed002"], tmp_path, InputDataConfig=channels,
        AlgorithmSpecification=algo,
        HyperParameters={"learning-rate": "0.05", "epochs": "200"}))
    record = plane.wait("training", "seed-002", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    files = model_files(tmp_path, "seed-002")
    assert set(files) == {"final.npy", "meta.json"}
    final = {m["MetricName"]: m["Value"] for m in record["FinalMetricDataList"]}
    assert final["validation:loss"] < 0.1
    series = plane.metric_series("training", "seed-002", "train:loss")
    assert len(series) == 200
    assert series[-1]["Value"] < series[0]["Value"]


def test_failure_file_becomes_failure_reason(plane: ControlPlane, images: dict[str, str],
                                             tmp_path: Path) -> None:
    plane.create("training", request("fails", images["behaviours"], tmp_path,
                                      Environment={"MODE": "failure-file"}))
    record = plane.wait("training", "fails", timeout=60)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"].startswith("ValueError: bad column 'price'\nxxx")
    assert len(record["FailureReason"]) == 1024


def test_exit_code_without_failure_file(plane: ControlPlane, images: dict[str, str],
                                        tmp_path: Path) -> None:
    plane.create("training", request("exit-3", images["behaviours"], tmp_path,
                                      Environment={"MODE": "exit-3"}))
    record = plane.wait("training", "exit-3", timeout=60)
    assert record["TrainingJobStatus"] == "Failed"
    assert "exited with code 3" in record["FailureReason"]
    assert "about to fail" in record["FailureReason"]


def test_toolkit_failure_keeps_user_exit_code_in_reason(
        plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    plane.create("training", request("tk-exit-3", images["toolkit-behaviours"], tmp_path,
                                      Environment={"MODE": "exit-3"}))
    record = plane.wait("training", "tk-exit-3", timeout=60)
    assert record["TrainingJobStatus"] == "Failed"
    assert "3" in record["FailureReason"]
    assert "about to fail" in record["FailureReason"]


def test_oom_killed_container(plane: ControlPlane, images: dict[str, str],
                              tmp_path: Path) -> None:
    # ml.t3.medium = 4 GiB: the script asks for 10 GiB.
    plane.create("training", request(
        "oom", images["behaviours"], tmp_path, Environment={"MODE": "oom"},
        ResourceConfig={"InstanceType": "ml.t3.medium", "InstanceCount": 1}))
    record = plane.wait("training", "oom", timeout=120)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["FailureReason"].startswith("OutOfMemoryError")


def test_aws_instance_type_runs_capped(plane: ControlPlane, images: dict[str, str],
                                       tmp_path: Path) -> None:
    # 96 vCPUs and 384 GiB: an engine refuses such a CPU limit ("Range of CPUs is from 0.01
    # to 2.00"); the job runs with the machine's instead, and says so.
    capacity = plane.ctx.runtime.capacity()
    assert capacity is not None and capacity.cpus < 96
    plane.create("training", request(
        "aws-type", images["seed000"], tmp_path,
        ResourceConfig={"InstanceType": "ml.m5.24xlarge", "InstanceCount": 1}))
    record = plane.wait("training", "aws-type", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert record["ResourceConfig"]["InstanceType"] == "ml.m5.24xlarge"
    [training] = [t for t in record["SecondaryStatusTransitions"] if t["Status"] == "Training"]
    assert "ml.m5.24xlarge has 96 vCPUs" in training["StatusMessage"]
    assert f"capped at this machine's {capacity.cpus:g} vCPUs" in training["StatusMessage"]
    assert json.loads(model_files(tmp_path, "aws-type")["model.json"]) == {"training_files": 3}


def test_stop_reaches_script_through_toolkit_and_keeps_checkpoint(
        plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    plane.create("training", request("stop-ckpt", images["toolkit-behaviours"], tmp_path,
                                      Environment={"MODE": "checkpoint-on-sigterm"}))
    wait_for_log(plane, "training", "stop-ckpt", "ready")
    started = time.monotonic()
    plane.stop("training", "stop-ckpt")
    assert plane.describe("training", "stop-ckpt")["TrainingJobStatus"] == "Stopping"
    record = plane.wait("training", "stop-ckpt", timeout=60)
    assert time.monotonic() - started < 3  # well inside the grace period: it exited itself
    assert record["TrainingJobStatus"] == "Stopped"
    assert [t["Status"] for t in record["SecondaryStatusTransitions"]][-2:] == [
        "Stopping", "Stopped"] or "Uploading" in [
        t["Status"] for t in record["SecondaryStatusTransitions"]]
    assert json.loads(model_files(tmp_path, "stop-ckpt")["checkpoint.json"]) == {
        "saved_on": "SIGTERM"}
    assert "checkpoint saved" in logs_of(plane, "training", "stop-ckpt")


def test_stop_kills_script_that_ignores_sigterm(plane: ControlPlane, images: dict[str, str],
                                                tmp_path: Path) -> None:
    plane.create("training", request("stop-deaf", images["behaviours"], tmp_path,
                                      Environment={"MODE": "ignore-sigterm"}))
    wait_for_log(plane, "training", "stop-deaf", "ready")
    started = time.monotonic()
    plane.stop("training", "stop-deaf")
    record = plane.wait("training", "stop-deaf", timeout=60)
    elapsed = time.monotonic() - started
    assert record["TrainingJobStatus"] == "Stopped"
    assert 3 <= elapsed < 15  # the 3 s grace, then SIGKILL


def test_max_runtime(plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    plane.create("training", request(
        "too-slow", images["behaviours"], tmp_path, Environment={"MODE": "sleep"},
        StoppingCondition={"MaxRuntimeInSeconds": 1}))
    record = plane.wait("training", "too-slow", timeout=60)
    assert record["TrainingJobStatus"] == "Failed"
    assert record["SecondaryStatus"] == "MaxRuntimeExceeded"
    assert "MaxRuntimeInSeconds" in record["FailureReason"]


def test_metrics_from_live_logs(plane: ControlPlane, images: dict[str, str],
                                tmp_path: Path) -> None:
    algo = {"TrainingImage": images["behaviours"], "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "loss", "Regex": r"loss=(\S+)"},
                                  {"Name": "accuracy", "Regex": r"accuracy=(\S+)"}]}
    plane.create("training", request("metrics", images["behaviours"], tmp_path,
                                      AlgorithmSpecification=algo,
                                      Environment={"MODE": "metrics"}))
    record = plane.wait("training", "metrics", timeout=60)
    final = {m["MetricName"]: m["Value"] for m in record["FinalMetricDataList"]}
    assert final == {"loss": 0.25, "accuracy": 0.8}
    assert [p["Value"] for p in plane.metric_series("training", "metrics", "loss")] == [
        1.0, 0.5, 0.333, 0.25]


def test_two_instances_reach_each_other(plane: ControlPlane, images: dict[str, str],
                                        tmp_path: Path) -> None:
    plane.create("training", request(
        "peers", images["behaviours"], tmp_path, Environment={"MODE": "peers"},
        ResourceConfig={"InstanceType": "local", "InstanceCount": 2}))
    record = plane.wait("training", "peers", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    files = model_files(tmp_path, "peers")
    one, two = json.loads(files["algo-1.json"]), json.loads(files["algo-2.json"])
    assert one["message"] == "hello from algo-2"
    assert set(one["addresses"]) == {"algo-1", "algo-2"}
    assert one["addresses"] == two["addresses"]
    assert plane.log_hosts("training", "peers") == ["algo-1", "algo-2"]


def test_network_isolation(plane: ControlPlane, images: dict[str, str], tmp_path: Path) -> None:
    plane.create("training", request("isolated", images["behaviours"], tmp_path,
                                      Environment={"MODE": "network"},
                                      EnableNetworkIsolation=True))
    plane.wait("training", "isolated", timeout=60)
    interfaces = [line for line in logs_of(plane, "training", "isolated")
                  if line.startswith("interfaces")]
    assert interfaces == ["interfaces ['lo']"]


def test_network_isolation_with_peers(plane: ControlPlane, images: dict[str, str],
                                      tmp_path: Path, docker_client: Any) -> None:
    """Isolated hosts still reach each other (SageMaker's rule) on an internal network."""
    plane.create("training", request(
        "isolated-peers", images["behaviours"], tmp_path, Environment={"MODE": "network"},
        EnableNetworkIsolation=True,
        ResourceConfig={"InstanceType": "local", "InstanceCount": 2}))
    wait_for_log(plane, "training", "isolated-peers", "interfaces")
    networks = docker_client.networks.list(
        filters={"label": "org.shipyard.job-name=isolated-peers"})
    assert [n.attrs["Internal"] for n in networks] == [True]
    record = plane.wait("training", "isolated-peers", timeout=60)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    lines = logs_of(plane, "training", "isolated-peers")
    assert sorted(line for line in lines if line.startswith("resolves")) == [
        "resolves algo-1 True", "resolves algo-1 True", "resolves algo-2 True",
        "resolves algo-2 True"]


def test_processing_two_inputs_one_output(plane: ControlPlane, images: dict[str, str],
                                          tmp_path: Path) -> None:
    for name, files in (("first", {"a.txt": "alpha", "sub/b.txt": "beta"}),
                        ("second", {"c.txt": "gamma"})):
        for rel, text in files.items():
            path = tmp_path / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    arn = plane.create("processing", {
        "ProcessingJobName": "proc",
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AppSpecification": {"ImageUri": images["processing"],
                             "ContainerEntrypoint": ["python3", "/opt/program/p.py"],
                             "ContainerArguments": ["--mode", "full"]},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                  "InstanceCount": 1, "VolumeSizeInGB": 5}},
        "ProcessingInputs": [
            {"InputName": n, "S3Input": {"S3Uri": (tmp_path / n).as_uri(),
                                         "LocalPath": f"/opt/ml/processing/input/{n}",
                                         "S3DataType": "S3Prefix", "S3InputMode": "File"}}
            for n in ("first", "second")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": (tmp_path / "report").as_uri(),
            "LocalPath": "/opt/ml/processing/output/report", "S3UploadMode": "EndOfJob"}}]},
    })["ProcessingJobArn"]
    assert arn.endswith("processing-job/proc")
    record = plane.wait("processing", "proc", timeout=60)
    assert record["ProcessingJobStatus"] == "Completed", record.get("FailureReason")
    assert record["ExitMessage"] == "processed 3 files"
    assert (tmp_path / "report" / "summary.txt").read_text().splitlines() == [
        "first/a.txt: alpha", "first/sub/b.txt: beta", "second/c.txt: gamma"]
    assert (tmp_path / "report" / "nested" / "count.txt").read_text() == "3"
    assert "args ['--mode', 'full'] env proc" in logs_of(plane, "processing", "proc")
    assert (tmp_path / "first" / "a.txt").read_text() == "alpha"  # inputs untouched


def test_s3_in_and_out(s3_plane: ControlPlane, s3_server: Any, s3_bucket: str,
                       images: dict[str, str], tmp_path: Path) -> None:
    boto = s3_server.boto()
    for i in range(5):
        boto.put_object(Bucket=s3_bucket, Key=f"datasets/train/part-{i}.csv", Body=b"1,2\n")
    s3_plane.create("training", request(
        "s3-job", images["seed000"], tmp_path,
        InputDataConfig=[{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{s3_bucket}/datasets/train"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{s3_bucket}/output"}))
    record = s3_plane.wait("training", "s3-job", timeout=120)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    key = "output/s3-job/output/model.tar.gz"
    assert record["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{s3_bucket}/{key}"
    local = tmp_path / "model.tar.gz"
    boto.download_file(s3_bucket, key, str(local))
    with tarfile.open(local) as tar:
        assert json.loads(tar.extractfile("model.json").read()) == {"training_files": 5}


def test_missing_s3_data_fails_before_the_container_runs(
        s3_plane: ControlPlane, s3_bucket: str, images: dict[str, str], tmp_path: Path) -> None:
    s3_plane.create("training", request(
        "s3-missing", images["seed000"], tmp_path,
        InputDataConfig=[{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{s3_bucket}/nothing-here/"}}}]))
    record = s3_plane.wait("training", "s3-missing", timeout=60)
    runtime = s3_plane.ctx.runtime
    assert record["TrainingJobStatus"] == "Failed"
    assert "nothing-here" in record["FailureReason"]
    assert "Training" not in [t["Status"] for t in record["SecondaryStatusTransitions"]]
    assert runtime.list({"org.shipyard.job-name": "s3-missing"}) == []


def test_control_plane_restart_while_job_runs(docker_client: Any, scope_labels: dict[str, str],
                                              images: dict[str, str], tmp_path: Path) -> None:
    """The supervisor dies mid-job; a new control plane reattaches and finishes the job."""
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "runtime": "docker"},
                             environ={})
    runtime = DockerRuntime(docker_client, labels=scope_labels)
    first = ControlPlane(settings, runtime, launch="process")
    first.create("training", request("restart-running", images["behaviours"], tmp_path,
                                      Environment={"MODE": "sleep", "SLEEP": "4"}))
    first.create("training", request("restart-exited", images["behaviours"], tmp_path,
                                      Environment={"MODE": "sleep", "SLEEP": "1"}))
    for name in ("restart-running", "restart-exited"):
        wait_for_log(first, "training", name, "mode sleep")
    for proc in first.processes:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first.close()
    # While no supervisor runs, the short job's container exits.
    time.sleep(2)
    second = ControlPlane(settings, runtime, launch="thread")
    assert sorted(n for _, n in second.ctx.store and [
        ("training", "restart-running"), ("training", "restart-exited")]) == [
        "restart-exited", "restart-running"]
    try:
        for name in ("restart-running", "restart-exited"):
            record = second.wait("training", name, timeout=60)
            assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
            assert model_files(tmp_path, name)["done"] == b"sleep"
            lines = logs_of(second, "training", name)
            assert lines.count("mode sleep argv ['train']") == 1  # resumed without repeats
    finally:
        second.close()


SOURCE_ENTRY = '''import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int)
parser.add_argument("--verbose", action="store_true")
args = parser.parse_args()
from helper import describe
with open(os.path.join(os.environ["SM_MODEL_DIR"], "args.json"), "w") as f:
    json.dump({"epochs": args.epochs, "verbose": args.verbose, "describe": describe(),
               "channels": json.loads(os.environ["SM_CHANNELS"])}, f)
'''


def _sourcedir(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    (src / "entry.py").write_text(SOURCE_ENTRY)
    (src / "helper.py").write_text("def describe():\n    return 'from sourcedir'\n")
    archive = tmp / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in src.iterdir():
            tar.add(path, arcname=path.name)
    return archive


def _sdk_hyperparameters(submit_uri: str) -> dict[str, str]:
    # What the SageMaker SDK's framework estimators send: every value JSON-encoded.
    return {"epochs": "3", "verbose": "true", "sagemaker_program": json.dumps("entry.py"),
            "sagemaker_submit_directory": json.dumps(submit_uri),
            "sagemaker_bool_flags": json.dumps("store_true")}


def test_submit_directory_tarball_from_file_uri(plane: ControlPlane, images: dict[str, str],
                                                tmp_path: Path) -> None:
    archive = _sourcedir(tmp_path)
    plane.create("training", request("sourcedir-file", images["toolkit"], tmp_path,
                                      HyperParameters=_sdk_hyperparameters(archive.as_uri())))
    record = plane.wait("training", "sourcedir-file", timeout=60)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert json.loads(model_files(tmp_path, "sourcedir-file")["args.json"]) == {
        "epochs": 3, "verbose": True, "describe": "from sourcedir", "channels": ["training"]}


def test_submit_directory_tarball_from_s3(s3_plane: ControlPlane, s3_server: Any,
                                          s3_bucket: str, images: dict[str, str],
                                          tmp_path: Path) -> None:
    archive = _sourcedir(tmp_path)
    s3_server.boto().upload_file(str(archive), s3_bucket, "code/sourcedir.tar.gz")
    s3_plane.create("training", request(
        "sourcedir-s3", images["toolkit"], tmp_path,
        HyperParameters=_sdk_hyperparameters(f"s3://{s3_bucket}/code/sourcedir.tar.gz")))
    record = s3_plane.wait("training", "sourcedir-s3", timeout=60)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert json.loads(model_files(tmp_path, "sourcedir-s3")["args.json"])["describe"] == (
        "from sourcedir")


# -- a job ends only after its log is complete ---------------------------------------------------

MARKER = "END-OF-LOG final_loss=0.125"


def _python(code: str) -> list[str]:
    """``python3 -c`` running ``code``, escaped onto one line: SageMaker's model allows no line
    break in an entrypoint argument (pattern ``.*``)."""
    return ["python3", "-c", f"exec({code!r})"]


def _chatty(lines: int) -> list[str]:
    """A python3 command printing ``line <i>`` for every i, then the marker."""
    return _python(f"import sys\nw = sys.stdout.write\nfor i in range({lines}):\n"
                   f"    w(f'line {{i}}\\n')\nprint({MARKER!r})\n")


def _describe_until_ended(describe: Any, field: str, timeout: float = 120) -> dict[str, Any]:
    """DescribeXJob polled as a client does, returning the first answer with a final status."""
    return until_final(describe, field, timeout, poll=0.01)


def test_training_completed_only_with_every_log_line_and_metric(
        plane: ControlPlane, base_image: str, tmp_path: Path) -> None:
    lines = 300_000
    algo = {"TrainingImage": base_image, "TrainingInputMode": "File",
            "ContainerEntrypoint": _chatty(lines),
            "MetricDefinitions": [{"Name": "loss", "Regex": r"final_loss=(\S+)"}]}
    plane.create("training", request("chatty", base_image, tmp_path,
                                      AlgorithmSpecification=algo))
    record = _describe_until_ended(lambda: plane.describe("training", "chatty"),
                                   "TrainingJobStatus")
    # Read at once, as the SDK's logs=True does after its last DescribeTrainingJob.
    got = logs_of(plane, "training", "chatty")
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    assert len(got) == lines + 1
    assert got[-1] == MARKER
    assert got[:-1] == [f"line {i}" for i in range(lines)]
    assert record["FinalMetricDataList"][0]["MetricName"] == "loss"
    assert record["FinalMetricDataList"][0]["Value"] == 0.125


def test_processing_completed_only_with_every_log_line(plane: ControlPlane, base_image: str,
                                                       tmp_path: Path) -> None:
    lines = 50_000
    plane.create("processing", {
        "ProcessingJobName": "chatty-proc",
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard",
        "AppSpecification": {"ImageUri": base_image, "ContainerEntrypoint": _chatty(lines)},
        "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.large",
                                                  "InstanceCount": 1, "VolumeSizeInGB": 5}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    })
    record = _describe_until_ended(lambda: plane.describe("processing", "chatty-proc"),
                                   "ProcessingJobStatus")
    got = logs_of(plane, "processing", "chatty-proc")
    assert record["ProcessingJobStatus"] == "Completed", record.get("FailureReason")
    assert got == [f"line {i}" for i in range(lines)] + [MARKER]


def test_resumed_supervisor_completes_only_with_every_log_line(
        docker_client: Any, scope_labels: dict[str, str], base_image: str,
        tmp_path: Path) -> None:
    """The supervisor dies while lines pour in; the next one resumes the log, ends the job
    only once the rest is stored, and repeats nothing."""
    settings = Settings.load({"data_dir": str(tmp_path / "state"), "runtime": "docker"},
                             environ={})
    runtime = DockerRuntime(docker_client, labels=scope_labels)
    first = ControlPlane(settings, runtime, launch="process")
    code = ("import sys, time\nw = sys.stdout.write\nfor i in range(200000):\n"
            "    w(f'line {i}\\n')\n    if i == 1000:\n        sys.stdout.flush()\n"
            "        time.sleep(1)\n"
            f"print({MARKER!r})\n")
    algo = {"TrainingImage": base_image, "TrainingInputMode": "File",
            "ContainerEntrypoint": _python(code)}
    first.create("training", request("chatty-restart", base_image, tmp_path,
                                      AlgorithmSpecification=algo))
    wait_for_log(first, "training", "chatty-restart", "line 1000")
    for proc in first.processes:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first.close()
    second = ControlPlane(settings, runtime, launch="thread")
    try:
        record = _describe_until_ended(lambda: second.describe("training", "chatty-restart"),
                                       "TrainingJobStatus")
        got = logs_of(second, "training", "chatty-restart")
        assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
        assert got == [f"line {i}" for i in range(200000)] + [MARKER]
    finally:
        second.close()
